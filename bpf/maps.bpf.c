/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* maps.bpf.c - the one definition of every map (see mesh_maps.bpf.h). */
#define MESH_MAPS_DEFINE
#include "mesh_maps.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Never called. Its signature keeps enum mesh_stat and enum mesh_lb_algo in
 * the object's BTF (inlined code leaves no trace of them) so that
 * tests/unit/abi_btf_test.cc can check their values. libbpf loads only the
 * subprograms a program calls, so this costs nothing at load. */
__noinline int mesh_abi_enums(enum mesh_stat stat, enum mesh_lb_algo algo) { return stat + algo; }
