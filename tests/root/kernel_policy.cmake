# Root test of the daemon's kernel policy wiring: the real meshd in a node namespace
# programs STRICT on a pod's veth and the L4 authorization maps from applied Workloads,
# PeerAuthentication and AuthorizationPolicy.
add_executable(meshd_root_kernel_policy_test ${CMAKE_CURRENT_LIST_DIR}/kernel_policy_test.cc)
target_link_libraries(meshd_root_kernel_policy_test PRIVATE meshd_root_fixture meshd_datapath
                      nlohmann_json::nlohmann_json absl::strings GTest::gtest_main)
target_compile_definitions(meshd_root_kernel_policy_test PRIVATE
  MESHD_BIN="$<TARGET_FILE:meshd>" MESHCTL_BIN="$<TARGET_FILE:meshctl>")
add_dependencies(meshd_root_kernel_policy_test meshd meshctl)
gtest_discover_tests(meshd_root_kernel_policy_test PROPERTIES LABELS root RUN_SERIAL TRUE
                     TIMEOUT 120 DISCOVERY_MODE PRE_TEST)
