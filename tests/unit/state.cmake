# State model: desired-state computation, Model::apply/remove atomicity, Updater.
add_executable(meshd_state_test state_test.cc)
target_link_libraries(meshd_state_test PRIVATE meshd_state GTest::gtest_main GTest::gmock)
target_compile_definitions(meshd_state_test
  PRIVATE MESHD_TESTDATA_DIR="${CMAKE_CURRENT_SOURCE_DIR}/testdata/resources")
gtest_discover_tests(meshd_state_test PROPERTIES LABELS unit)
