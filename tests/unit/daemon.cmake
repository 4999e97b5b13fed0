# The daemon's L7 glue (userspace/daemon/l7.cc) without a kernel: what proxy records
# become in Istio's request metrics and in the JSON access log.
add_executable(meshd_daemon_l7_test ${CMAKE_CURRENT_LIST_DIR}/daemon_l7_test.cc)
target_link_libraries(meshd_daemon_l7_test PRIVATE meshd_daemon GTest::gtest_main
  nlohmann_json::nlohmann_json)
gtest_discover_tests(meshd_daemon_l7_test PROPERTIES LABELS unit)

# The kernel policy (STRICT entries, identities, L4 authorization rules) the daemon computes
# from the applied resources for its node: pure, no kernel.
add_executable(meshd_kernel_policy_test ${CMAKE_CURRENT_LIST_DIR}/kernel_policy_test.cc)
target_link_libraries(meshd_kernel_policy_test PRIVATE meshd_daemon GTest::gtest_main)
gtest_discover_tests(meshd_kernel_policy_test PROPERTIES LABELS unit)
