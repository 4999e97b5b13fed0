/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * drain.bpf.c - the hard cut for removed backends: a TCP socket iterator
 * that destroys (bpf_sock_destroy, Linux 6.5+: the socket is aborted, the
 * application gets ECONNRESET, the peer an RST) every connection connect.bpf.c
 * steered to a (service, backend) pair listed in mesh_drain.
 *
 * meshd runs it on demand, once per network namespace of the meshed cgroup
 * (a TCP iterator walks the namespace of the process that opens it). Aborting
 * moves the socket to TCP_CLOSE, so sockops releases its reservation as for
 * any other close. When the kernel lacks bpf_sock_destroy, meshd does not
 * load this program (the rest of the object does not depend on it).
 */
#include "mesh_maps.bpf.h"

extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

SEC("iter/tcp")
int mesh_drain_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct mesh_drain_key key = {};
	struct mesh_sock_state *st;
	struct tcp_sock *tp;

	/* Reading a field also gives the object the full struct sock_common in
	 * BTF, which libbpf needs to match bpf_sock_destroy's kernel prototype
	 * (a forward declaration does not match). */
	if (!skc || (skc->skc_family != MESH_AF_INET && skc->skc_family != MESH_AF_INET6))
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* request and time-wait sockets have no storage */
	st = bpf_sk_storage_get(&mesh_sock, tp, 0, 0);
	/* F_L7 sockets are connected to meshd, not to a backend. */
	if (!st || !(st->flags & MESH_SOCK_F_REWRITTEN) || (st->flags & MESH_SOCK_F_L7))
		return 0;
	key.svc_id = st->svc_id;
	key.backend_id = st->backend_id;
	if (!bpf_map_lookup_elem(&mesh_drain, &key))
		return 0;
	if (bpf_sock_destroy(skc) == 0)
		mesh_count(MESH_STAT_DRAIN_DESTROYED);
	return 0;
}
