# The sockmap mode flag and the status line `meshctl status` prints. No root, no kernel.
add_executable(meshd_sockmap_test ${CMAKE_CURRENT_LIST_DIR}/sockmap_test.cc)
target_link_libraries(meshd_sockmap_test PRIVATE meshd_datapath GTest::gtest_main)
gtest_discover_tests(meshd_sockmap_test PROPERTIES LABELS unit)
