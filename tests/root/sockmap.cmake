# Root tests of the sockmap fast path: two pods on one node, bytes spliced by
# sk_msg, checksummed transfers, half-close, reset and echo with and without it.
add_executable(meshd_root_sockmap_test ${CMAKE_CURRENT_LIST_DIR}/sockmap_test.cc)
target_link_libraries(meshd_root_sockmap_test PRIVATE meshd_root_fixture meshd_datapath
                      meshd_lbtables GTest::gtest_main)
gtest_discover_tests(meshd_root_sockmap_test PROPERTIES LABELS root RUN_SERIAL TRUE
                     DISCOVERY_MODE PRE_TEST)
