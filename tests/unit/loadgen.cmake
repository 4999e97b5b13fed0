# bench/loadgen: the latency histogram against exact percentiles, the HTTP/1.1 response
# parser (table test), and the open-loop generator against an in-test HTTP server on
# 127.0.0.1:0 (delayed responses, a stalled server, reconnects). Plus the gRPC benchmark
# tool (python3-grpcio) run for 1 s against its own server.
add_executable(meshd_loadgen_test ${CMAKE_CURRENT_LIST_DIR}/loadgen_test.cc)
target_link_libraries(meshd_loadgen_test PRIVATE meshd_loadgen GTest::gtest_main Threads::Threads)
gtest_discover_tests(meshd_loadgen_test PROPERTIES LABELS unit)

add_test(NAME loadgen_grpc_bench
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/bench/loadgen/grpc_bench_test.py
                 ${PROJECT_SOURCE_DIR}/bench/loadgen/grpc_bench.py)
set_tests_properties(loadgen_grpc_bench PROPERTIES LABELS unit TIMEOUT 60)
