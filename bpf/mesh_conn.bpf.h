/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_conn.bpf.h - reserving and releasing live TCP connections, shared by
 * connect (reserve), sockops and sock_release (release).
 *
 *   connect()  reserve: service live++, backend live++ (atomic add, then
 *              check the limit and undo when over it)        -> COUNTED
 *   release    at TCP_CLOSE (sockops) or close() (sock_release), whichever
 *              comes first; COUNTED makes the second one a no-op
 *
 * Add-then-check is exact under concurrency on every CPU: at most `limit`
 * reservations can stand at once, so no over-admission window exists
 * (unlike check-then-add, and unlike per-worker counters in a proxy).
 */
#ifndef MESH_CONN_BPF_H
#define MESH_CONN_BPF_H

#include "mesh_maps.bpf.h"

/* Adds one to *live unless that exceeds limit (0 = unlimited).
 * Returns 1 when reserved. */
static __always_inline int mesh_reserve_one(__s64 *live, __u32 limit)
{
	__s64 now = __sync_fetch_and_add(live, 1) + 1;

	if (limit && now > (__s64)limit) {
		__sync_fetch_and_add(live, -1);
		return 0;
	}
	return 1;
}

/* Gives back the reservation a socket holds, once. */
static __always_inline void mesh_release(struct mesh_sock_state *st)
{
	__u32 backend_id = st->backend_id, svc_id = st->svc_id;
	struct mesh_backend_state *bs;
	struct mesh_svc_state *ss;

	if (!(st->flags & MESH_SOCK_F_COUNTED))
		return;
	st->flags &= ~MESH_SOCK_F_COUNTED;
	bs = bpf_map_lookup_elem(&mesh_backend_state, &backend_id);
	if (bs)
		__sync_fetch_and_add(&bs->live_conns, -1);
	ss = bpf_map_lookup_elem(&mesh_svc_state, &svc_id);
	if (ss)
		__sync_fetch_and_add(&ss->live_conns, -1);
}

#endif /* MESH_CONN_BPF_H */
