# The daemon's L7 glue (userspace/daemon/l7.cc) without a kernel: what proxy records
# become in Istio's request metrics and in the JSON access log.
add_executable(meshd_daemon_l7_test ${CMAKE_CURRENT_LIST_DIR}/daemon_l7_test.cc)
target_link_libraries(meshd_daemon_l7_test PRIVATE meshd_daemon GTest::gtest_main
  nlohmann_json::nlohmann_json)
gtest_discover_tests(meshd_daemon_l7_test PROPERTIES LABELS unit)
