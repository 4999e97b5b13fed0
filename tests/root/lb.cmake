# Root tests of load balancing end to end: reconciler -> real maps -> connect().
add_executable(meshd_root_lb_test ${CMAKE_CURRENT_LIST_DIR}/lb_test.cc)
target_link_libraries(meshd_root_lb_test PRIVATE meshd_root_fixture meshd_datapath meshd_lbtables
                      GTest::gtest_main)
gtest_discover_tests(meshd_root_lb_test PROPERTIES LABELS root RUN_SERIAL TRUE
                     DISCOVERY_MODE PRE_TEST)
