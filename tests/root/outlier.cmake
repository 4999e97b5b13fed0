# Root tests of passive outlier detection and p2c-ewma (LeastLatency): backends
# in their own network namespaces that refuse, black-hole SYNs, stall, or sit
# behind a delayed link; ejections and choices read back from the real maps.
add_executable(meshd_root_outlier_test ${CMAKE_CURRENT_LIST_DIR}/outlier_test.cc)
target_link_libraries(meshd_root_outlier_test PRIVATE meshd_root_fixture meshd_datapath
                      GTest::gtest_main)
gtest_discover_tests(meshd_root_outlier_test PROPERTIES LABELS root RUN_SERIAL TRUE TIMEOUT 120
                     DISCOVERY_MODE PRE_TEST)
