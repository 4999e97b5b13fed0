# The L7 redirect's userspace halves: --redirect-address parsing and
# validation, and the mesh_orig_dst key OrigDstTable looks up (v4-mapped
# folding). No root, no kernel.
add_executable(meshd_redirect_test ${CMAKE_CURRENT_LIST_DIR}/redirect_test.cc)
target_link_libraries(meshd_redirect_test PRIVATE meshd_datapath GTest::gtest_main)
gtest_discover_tests(meshd_redirect_test PROPERTIES LABELS unit)
