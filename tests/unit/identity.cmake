# Identities (userspace/identity): the SPIFFE ID parser (table tests, no allocation) and
# X.509-SVID loading and verification against every certificate of the test PKI.
add_executable(meshd_identity_test
  ${CMAKE_CURRENT_LIST_DIR}/identity/spiffe_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/identity/x509_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/identity/ca_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_include_directories(meshd_identity_test PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(meshd_identity_test PRIVATE meshd_identity GTest::gtest_main GTest::gmock)
target_compile_definitions(meshd_identity_test PRIVATE MESHD_TEST_CERTS_DIR="${MESHD_TEST_CERTS_DIR}")
add_dependencies(meshd_identity_test test_certs)
gtest_discover_tests(meshd_identity_test PROPERTIES LABELS unit)
