# The daemon's L7 glue (userspace/daemon/l7.cc) without a kernel: what proxy records
# become in Istio's request metrics and in the JSON access log.
add_executable(meshd_daemon_l7_test ${CMAKE_CURRENT_LIST_DIR}/daemon_l7_test.cc)
target_link_libraries(meshd_daemon_l7_test PRIVATE meshd_daemon GTest::gtest_main
  nlohmann_json::nlohmann_json)
gtest_discover_tests(meshd_daemon_l7_test PROPERTIES LABELS unit)

# The daemon's mTLS wiring (docs/design/0004-identity-mtls.md, "Wiring into meshd"): the
# router's tunnel decision, the tunnel's inbound authorization, the node agent against a real
# meshd-ca on 127.0.0.1, and a loopback proxy -> tunnel -> tunnel -> echo run.
add_executable(meshd_daemon_mtls_test ${CMAKE_CURRENT_LIST_DIR}/daemon_mtls_test.cc)
target_link_libraries(meshd_daemon_mtls_test PRIVATE meshd_daemon meshd_ca GTest::gtest_main
  GTest::gmock)
target_compile_definitions(meshd_daemon_mtls_test PRIVATE
  MESHD_TEST_CERTS_DIR="${MESHD_TEST_CERTS_DIR}"
  MESHD_LAB_MTLS_YAML="${PROJECT_SOURCE_DIR}/tests/root/lab/mtls.yaml")
add_dependencies(meshd_daemon_mtls_test test_certs)
gtest_discover_tests(meshd_daemon_mtls_test PROPERTIES LABELS unit)
# The kernel policy (STRICT entries, identities, L4 authorization rules) the daemon computes
# from the applied resources for its node: pure, no kernel.
add_executable(meshd_kernel_policy_test ${CMAKE_CURRENT_LIST_DIR}/kernel_policy_test.cc)
target_link_libraries(meshd_kernel_policy_test PRIVATE meshd_daemon GTest::gtest_main)
gtest_discover_tests(meshd_kernel_policy_test PROPERTIES LABELS unit)
