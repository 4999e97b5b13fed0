# HTTP/1.1 parser of the L7 proxy: table tests (valid, rejections, smuggling, responses),
# split-equivalence of every case, and the no-allocation-per-request check.
add_executable(meshd_http1_test ${CMAKE_CURRENT_LIST_DIR}/http1_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/http1_writer_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_link_libraries(meshd_http1_test PRIVATE meshd_http1 absl::strings GTest::gtest_main)
gtest_discover_tests(meshd_http1_test PROPERTIES LABELS unit)
