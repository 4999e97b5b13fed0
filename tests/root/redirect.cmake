# Root tests of the L7 redirect: connects to L7 VIPs land on a listener in the
# node's namespace with the original destination in mesh_orig_dst (IPv4, IPv6,
# v4-mapped, fallback to L4, 200 concurrent connects, adoption on restart).
add_executable(meshd_root_redirect_test ${CMAKE_CURRENT_LIST_DIR}/redirect_test.cc)
target_link_libraries(meshd_root_redirect_test PRIVATE meshd_root_fixture meshd_datapath
                      meshd_lbtables GTest::gtest_main)
gtest_discover_tests(meshd_root_redirect_test PROPERTIES LABELS root RUN_SERIAL TRUE
                     DISCOVERY_MODE PRE_TEST)
