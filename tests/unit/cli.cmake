# meshctl: file collection, rendering, exit codes of the real binary, and
# meshctl against meshd's real gRPC API on a temporary unix socket (the
# daemon side faked behind api::MeshdControl).
add_executable(cli_test
  ${CMAKE_CURRENT_LIST_DIR}/cli/files_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/cli/render_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/cli/views_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/cli/meshctl_test.cc)
target_link_libraries(cli_test PRIVATE meshctl_lib meshd_api GTest::gtest_main GTest::gmock)
target_compile_definitions(cli_test PRIVATE MESHCTL_PATH="$<TARGET_FILE:meshctl>")
add_dependencies(cli_test meshctl)
gtest_discover_tests(cli_test PROPERTIES LABELS unit)
