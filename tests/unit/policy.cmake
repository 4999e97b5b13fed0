# Authorization (Istio's AuthorizationPolicy / PeerAuthentication semantics) and the
# lock-free request rate-limit buckets (userspace/policy).
add_executable(meshd_policy_test ${CMAKE_CURRENT_LIST_DIR}/policy_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/policy_resources_test.cc ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_link_libraries(meshd_policy_test PRIVATE meshd_policy meshd_state GTest::gtest_main GTest::gmock)
gtest_discover_tests(meshd_policy_test PROPERTIES LABELS unit)
