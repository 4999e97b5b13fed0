# Root test of the real meshd and meshctl binaries: apply, kill -9, restart
# adoption, SIGTERM, --remove-pins, rejected applies.
add_executable(meshd_root_daemon_test ${CMAKE_CURRENT_LIST_DIR}/daemon_test.cc)
target_link_libraries(meshd_root_daemon_test PRIVATE meshd_root_fixture PkgConfig::LIBBPF
                      nlohmann_json::nlohmann_json absl::strings GTest::gtest_main)
target_compile_definitions(meshd_root_daemon_test PRIVATE
  MESHD_BIN="$<TARGET_FILE:meshd>" MESHCTL_BIN="$<TARGET_FILE:meshctl>"
  MESHD_CA_BIN="$<TARGET_FILE:meshd-ca>" MESHD_TEST_CERTS_DIR="${MESHD_TEST_CERTS_DIR}")
add_dependencies(meshd_root_daemon_test meshd meshctl meshd-ca test_certs)
gtest_discover_tests(meshd_root_daemon_test PROPERTIES LABELS root RUN_SERIAL TRUE
                     DISCOVERY_MODE PRE_TEST)
