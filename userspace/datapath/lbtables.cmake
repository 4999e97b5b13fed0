# meshd_lbtables: the reconciler (DesiredLbState -> map entries) and the balancing
# tables it computes (Vose alias tables, weighted Maglev). Kernel-free: it reaches
# the maps only through LbMapWriter (map_writer.h), so unit tests link it with a
# fake writer. Included by this folder's CMakeLists.txt.
add_library(meshd_lbtables STATIC
  ${CMAKE_CURRENT_LIST_DIR}/alias.cc
  ${CMAKE_CURRENT_LIST_DIR}/maglev.cc
  ${CMAKE_CURRENT_LIST_DIR}/reconciler.cc)
target_link_libraries(meshd_lbtables
  PUBLIC meshd_common absl::flat_hash_map absl::flat_hash_set absl::synchronization
         absl::status absl::statusor absl::strings absl::span)
