/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * release.bpf.c - cgroup/sock_release: close() of a socket that still holds
 * a live-connection reservation gives it back. This covers what sockops
 * cannot see: a connect() that failed locally before any SYN (no TCP state
 * change follows), and connections the application is done with while TCP
 * still finishes the FIN handshake. The reservation is released once
 * (mesh_conn.bpf.h), whichever of this and TCP_CLOSE comes first.
 */
#include "mesh_conn.bpf.h"

SEC("cgroup/sock_release")
int mesh_sock_release(struct bpf_sock *sk)
{
	struct mesh_sock_state *st;

	if (sk->protocol != MESH_PROTO_TCP)
		return 1;
	st = bpf_sk_storage_get(&mesh_sock, sk, 0, 0);
	if (!st || !(st->flags & MESH_SOCK_F_COUNTED))
		return 1;
	mesh_count(MESH_STAT_RELEASED_AT_CLOSE);
	mesh_release(st);
	return 1;
}
