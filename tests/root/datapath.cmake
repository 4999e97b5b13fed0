# Root tests of the kernel datapath (real programs, netns, cgroup v2).
add_library(meshd_root_fixture STATIC ${CMAKE_CURRENT_LIST_DIR}/fixture.cc)
target_include_directories(meshd_root_fixture PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(meshd_root_fixture PUBLIC meshd_datapath meshd_common GTest::gtest
                      absl::status absl::statusor absl::strings)

add_executable(meshd_root_datapath_test ${CMAKE_CURRENT_LIST_DIR}/datapath_test.cc)
target_link_libraries(meshd_root_datapath_test PRIVATE meshd_root_fixture meshd_datapath
                      GTest::gtest_main)
# Root tests share bpffs, cgroup2 and `ip netns`; run them one at a time.
gtest_discover_tests(meshd_root_datapath_test PROPERTIES LABELS root RUN_SERIAL TRUE
                     DISCOVERY_MODE PRE_TEST)
