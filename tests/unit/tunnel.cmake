# The node-to-node mTLS tunnel (userspace/tunnel, issue 6): loopback only, real OpenSSL and
# nghttp2, the test PKI (test_certs).
add_executable(meshd_tunnel_test ${CMAKE_CURRENT_LIST_DIR}/tunnel_test.cc)
add_dependencies(meshd_tunnel_test test_certs)
target_compile_definitions(meshd_tunnel_test PRIVATE MESHD_TEST_CERTS_DIR="${MESHD_TEST_CERTS_DIR}")
target_link_libraries(meshd_tunnel_test PRIVATE meshd_tunnel GTest::gtest_main)
gtest_discover_tests(meshd_tunnel_test PROPERTIES LABELS unit DISCOVERY_TIMEOUT 30)
