# Root tests of STRICT mTLS in the kernel (tcx egress program on a workload's
# veth) and L4 authorization at connect(): pod and node network namespaces,
# client cgroups with identities, real drops and refusals counted in the maps.
add_executable(meshd_root_strict_test ${CMAKE_CURRENT_LIST_DIR}/strict_test.cc)
target_link_libraries(meshd_root_strict_test PRIVATE meshd_root_fixture meshd_datapath
                      GTest::gtest_main)
gtest_discover_tests(meshd_root_strict_test PROPERTIES LABELS root RUN_SERIAL TRUE TIMEOUT 120
                     DISCOVERY_MODE PRE_TEST)
