# Embedded store: round trip, atomic save, corrupt files, locking.
add_executable(meshd_store_test store_test.cc)
target_link_libraries(meshd_store_test PRIVATE meshd_store GTest::gtest_main GTest::gmock)
gtest_discover_tests(meshd_store_test PROPERTIES LABELS unit)
