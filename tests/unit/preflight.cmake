# Host preflight checks: /proc/mounts parsing (cgroup2 and bpffs mounts) and
# --cgroup resolution against temp dirs. No root, no kernel changes.
add_executable(meshd_preflight_test ${CMAKE_CURRENT_LIST_DIR}/preflight_test.cc)
target_link_libraries(meshd_preflight_test PRIVATE meshd_datapath GTest::gtest_main GTest::gmock)
gtest_discover_tests(meshd_preflight_test PROPERTIES LABELS unit)
