/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * forget.bpf.c - a BPF_PROG_TYPE_SYSCALL program meshd runs (BPF_PROG_TEST_RUN,
 * attached nowhere) when it frees a backend id: resets the id's outlier state
 * and counters with the same atomics the datapath uses, which a map update
 * from userspace could not (it would overwrite concurrent adds), and gives
 * back the service's ejected count an ejection of the removed backend still
 * holds (no connect will ever reach it to end the ejection lazily).
 */
#include "mesh_outlier.bpf.h"

SEC("syscall")
int mesh_backend_forget(struct mesh_backend_forget_ctx *ctx)
{
	__u32 id = ctx->backend_id;
	struct mesh_backend_state *bs = bpf_map_lookup_elem(&mesh_backend_state, &id);

	if (!bs)
		return 0;
	return mesh_outlier_forget(bs);
}
