# HTTP/2 codec of the L7 proxy (userspace/proxy/http2): sessions back to back in memory
# (ServerSession vs a raw nghttp2 client, ClientSession vs a raw nghttp2 server, and the
# two against each other), flood protections with hand-made frames, gRPC helper tables.
add_executable(meshd_http2_test ${CMAKE_CURRENT_LIST_DIR}/http2_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_link_libraries(meshd_http2_test PRIVATE meshd_http2 PkgConfig::NGHTTP2 absl::strings
  GTest::gtest_main)
gtest_discover_tests(meshd_http2_test PROPERTIES LABELS unit)
