# L7 routing table (HTTPRoute/GRPCRoute): lookup, precedence, matching, weighted splits,
# redirects, rewrites, header edits, GRPCRoute matches.
add_executable(meshd_routing_test ${CMAKE_CURRENT_LIST_DIR}/routing_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_link_libraries(meshd_routing_test PRIVATE meshd_routing meshd_state absl::strings
                                                 GTest::gtest_main GTest::gmock)
gtest_discover_tests(meshd_routing_test PROPERTIES LABELS unit)
target_compile_definitions(meshd_routing_test
  PRIVATE MESHD_LAB_EXAMPLES_DIR="${PROJECT_SOURCE_DIR}/lab/examples"
          MESHD_LAB_L7_YAML="${PROJECT_SOURCE_DIR}/tests/root/lab/l7.yaml")
