# Lab tools (tools/): the HTTP request framing table test and mesh-echo/mesh-client driven
# in-process over loopback (port 0, no root).
add_executable(tools_test
  ${CMAKE_CURRENT_LIST_DIR}/tools/http_request_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/tools/endpoint_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/tools/echo_probe_test.cc)
target_link_libraries(tools_test PRIVATE meshd_tools GTest::gtest_main Threads::Threads)
gtest_discover_tests(tools_test PROPERTIES LABELS unit)
