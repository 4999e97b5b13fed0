# ABI test: the compiled BPF object's BTF against the C++ view of mesh_abi.h.
get_property(meshd_mesh_bpf_object GLOBAL PROPERTY mesh_BPF_OBJECT)
add_executable(meshd_abi_btf_test ${CMAKE_CURRENT_LIST_DIR}/abi_btf_test.cc)
target_link_libraries(meshd_abi_btf_test PRIVATE meshd_common PkgConfig::LIBBPF GTest::gtest_main)
target_include_directories(meshd_abi_btf_test PRIVATE ${PROJECT_SOURCE_DIR}/bpf/include)
target_compile_definitions(meshd_abi_btf_test PRIVATE MESH_BPF_OBJECT="${meshd_mesh_bpf_object}")
add_dependencies(meshd_abi_btf_test mesh_skel_gen)
gtest_discover_tests(meshd_abi_btf_test PROPERTIES LABELS unit)
