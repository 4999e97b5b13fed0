# The CA service (userspace/ca) over real gRPC + mTLS on 127.0.0.1 with the test PKI, and
# the --workloads placement file.
add_executable(meshd_ca_test ${CMAKE_CURRENT_LIST_DIR}/ca/ca_service_test.cc)
target_link_libraries(meshd_ca_test PRIVATE meshd_ca GTest::gtest_main GTest::gmock)
target_compile_definitions(meshd_ca_test PRIVATE MESHD_TEST_CERTS_DIR="${MESHD_TEST_CERTS_DIR}")
add_dependencies(meshd_ca_test test_certs)
gtest_discover_tests(meshd_ca_test PROPERTIES LABELS unit)
