# L7 routing table (HTTPRoute/GRPCRoute): lookup, precedence, matching, weighted splits,
# redirects, rewrites, header edits, GRPCRoute matches.
add_executable(meshd_routing_test ${CMAKE_CURRENT_LIST_DIR}/routing_test.cc)
target_link_libraries(meshd_routing_test PRIVATE meshd_routing meshd_state absl::strings
                                                 GTest::gtest_main GTest::gmock)
gtest_discover_tests(meshd_routing_test PROPERTIES LABELS unit)
