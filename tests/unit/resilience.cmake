# Request-level resilience (meshd_resilience): retry decisions and back-off, retry budget and
# circuit breakers (also from two threads), peak-EWMA P2C in a seeded simulation, L7 outlier
# ejection decisions, fault-injection shares, the per-cluster registry across swaps; no
# allocation per request.
add_executable(meshd_resilience_test ${CMAKE_CURRENT_LIST_DIR}/resilience_test.cc
                                     ${CMAKE_CURRENT_LIST_DIR}/counting_new.cc)
target_link_libraries(meshd_resilience_test PRIVATE meshd_resilience Threads::Threads
                                                    GTest::gtest_main GTest::gmock)
gtest_discover_tests(meshd_resilience_test PROPERTIES LABELS unit)
