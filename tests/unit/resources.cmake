# Resources: YAML parsing with positions, validation, typed views, set checks.
add_executable(meshd_resources_test resources_test.cc)
target_link_libraries(meshd_resources_test PRIVATE meshd_resources yaml-cpp GTest::gtest_main GTest::gmock)
target_compile_definitions(meshd_resources_test
  PRIVATE MESHD_TESTDATA_DIR="${CMAKE_CURRENT_SOURCE_DIR}/testdata/resources")
gtest_discover_tests(meshd_resources_test PROPERTIES LABELS unit)
