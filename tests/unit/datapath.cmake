# Unit tests of the reconciler and its balancing tables (meshd_lbtables), against
# FakeLbMaps; lb_select_test draws with the kernel's own selection arithmetic
# (bpf/include/mesh_lb.h). No root, no kernel.
add_executable(meshd_lbtables_test
  ${CMAKE_CURRENT_LIST_DIR}/alias_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/maglev_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/lb_select_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/reconciler_test.cc)
target_include_directories(meshd_lbtables_test PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(meshd_lbtables_test PRIVATE meshd_lbtables GTest::gtest_main GTest::gmock)
gtest_discover_tests(meshd_lbtables_test PROPERTIES LABELS unit)
