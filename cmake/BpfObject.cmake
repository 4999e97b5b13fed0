# BPF build in the libbpf-bootstrap manner:
#   clang -target bpf (one object per source) -> bpftool gen object (static link)
#   -> bpftool gen skeleton -> an INTERFACE target the datapath links.
find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

set(MESHD_VMLINUX_H ${CMAKE_BINARY_DIR}/bpf/vmlinux/vmlinux.h)
add_custom_command(
  OUTPUT ${MESHD_VMLINUX_H}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/bpf/vmlinux
  # No ';' inside (CMake would split the command there): `! echo` fails the step.
  COMMAND sh -c "test -r /sys/kernel/btf/vmlinux || ! echo 'no kernel BTF at /sys/kernel/btf/vmlinux: meshd needs a kernel built with CONFIG_DEBUG_INFO_BTF=y' >&2"
  COMMAND sh -c "${BPFTOOL} btf dump file /sys/kernel/btf/vmlinux format c > ${MESHD_VMLINUX_H}"
  COMMENT "Generating vmlinux.h from kernel BTF"
  VERBATIM)
# A custom command's rule is only emitted for targets of its own directory:
# this target gives vmlinux.h a rule the per-directory BPF commands can use.
add_custom_target(meshd_vmlinux_h DEPENDS ${MESHD_VMLINUX_H})

# meshd_bpf_object(NAME <name> SOURCES a.bpf.c b.bpf.c HEADERS ...)
# Produces ${name}.bpf.o and ${name}.skel.h, and INTERFACE target ${name}_skel.
function(meshd_bpf_object)
  cmake_parse_arguments(ARG "" "NAME" "SOURCES;HEADERS" ${ARGN})
  set(outdir ${CMAKE_CURRENT_BINARY_DIR})
  set(objs)
  execute_process(COMMAND uname -m OUTPUT_VARIABLE arch OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(arch STREQUAL "x86_64")
    set(target_arch x86)
  elseif(arch STREQUAL "aarch64")
    set(target_arch arm64)
  else()
    set(target_arch ${arch})
  endif()
  foreach(src ${ARG_SOURCES})
    get_filename_component(stem ${src} NAME_WE)
    set(obj ${outdir}/${stem}.tmp.o)
    add_custom_command(
      OUTPUT ${obj}
      COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_${target_arch}
              -Wall -Werror
              -I${CMAKE_BINARY_DIR}/bpf/vmlinux -I${CMAKE_CURRENT_SOURCE_DIR}/include
              -I${CMAKE_CURRENT_SOURCE_DIR}
              -c ${CMAKE_CURRENT_SOURCE_DIR}/${src} -o ${obj}
      DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${src} ${ARG_HEADERS} ${MESHD_VMLINUX_H}
      COMMENT "BPF ${src}")
    list(APPEND objs ${obj})
  endforeach()
  set(linked ${outdir}/${ARG_NAME}.bpf.o)
  set(skel ${outdir}/${ARG_NAME}.skel.h)
  add_custom_command(
    OUTPUT ${linked}
    COMMAND ${BPFTOOL} gen object ${linked} ${objs}
    DEPENDS ${objs}
    COMMENT "BPF link ${ARG_NAME}.bpf.o")
  add_custom_command(
    OUTPUT ${skel}
    COMMAND sh -c "${BPFTOOL} gen skeleton ${linked} name ${ARG_NAME} > ${skel}"
    DEPENDS ${linked}
    COMMENT "BPF skeleton ${ARG_NAME}.skel.h"
    VERBATIM)
  add_custom_target(${ARG_NAME}_skel_gen DEPENDS ${skel} ${linked})
  add_library(${ARG_NAME}_skel INTERFACE)
  add_dependencies(${ARG_NAME}_skel ${ARG_NAME}_skel_gen)
  target_include_directories(${ARG_NAME}_skel INTERFACE ${outdir} ${CMAKE_CURRENT_SOURCE_DIR}/include)
  set_property(GLOBAL PROPERTY ${ARG_NAME}_BPF_OBJECT ${linked})
endfunction()
