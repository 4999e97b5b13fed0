# The proxy core end to end on 127.0.0.1: HTTP/1.1 connection behaviour, detection, opaque
# relay, errors and flags, timeouts, and the request-smuggling table (what the upstream
# actually received).
add_executable(meshd_proxy_core_test ${CMAKE_CURRENT_LIST_DIR}/proxy_core_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/proxy_smuggling_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/proxy_record_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/proxy_retry_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/proxy_test_util.cc
  ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_link_libraries(meshd_proxy_core_test PRIVATE meshd_proxy_core GTest::gtest_main)
gtest_discover_tests(meshd_proxy_core_test PROPERTIES LABELS unit)

# HTTP/2 and gRPC through the proxy core (h2c client → proxy → h2c upstream on 127.0.0.1).
add_executable(meshd_proxy_h2_test ${CMAKE_CURRENT_LIST_DIR}/proxy_h2_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/proxy_test_util.cc ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_link_libraries(meshd_proxy_h2_test PRIVATE meshd_proxy_core GTest::gtest_main)
gtest_discover_tests(meshd_proxy_h2_test PROPERTIES LABELS unit)
