# Telemetry: the Prometheus exposition writer, meshd's metric set, readiness, the JSON
# access log (formatter and writer; nlohmann::json reads its lines back),
# and the HTTP server on a real loopback socket (port 0).
add_executable(telemetry_test
  ${CMAKE_CURRENT_LIST_DIR}/telemetry/exposition_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/telemetry/http_server_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/telemetry/request_metrics_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/telemetry/access_log_test.cc)
target_link_libraries(telemetry_test PRIVATE meshd_telemetry GTest::gtest_main GTest::gmock
  nlohmann_json::nlohmann_json)
gtest_discover_tests(telemetry_test PROPERTIES LABELS unit)
