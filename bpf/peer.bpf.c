/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * peer.bpf.c - cgroup/getpeername4|6 and cgroup/recvmsg4|6: show the app
 * the VIP it asked for, never the backend connect.bpf.c picked.
 *
 * Both hooks may only rewrite; their verdict must be 1 (allow).
 */
#include "mesh_maps.bpf.h"

static __always_inline int mesh_getpeername(struct bpf_sock_addr *ctx, __u8 family)
{
	struct mesh_sock_state *st;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;
	st = bpf_sk_storage_get(&mesh_sock, sk, 0, 0);
	if (!st || !(st->flags & MESH_SOCK_F_REWRITTEN))
		return 1;
	if (mesh_ctx_set_addr(ctx, family, st->family, st->vip))
		return 1;
	ctx->user_port = st->vip_port;
	mesh_count(MESH_STAT_PEERNAME_REWRITTEN);
	return 1;
}

/* ctx->user_ip4, user_ip6 and user_port hold the datagram source here. */
static __always_inline int mesh_recvmsg(struct bpf_sock_addr *ctx, __u8 family)
{
	struct mesh_udp_rev_key key;
	struct mesh_udp_rev *rev;

	__builtin_memset(&key, 0, sizeof(key));
	key.cookie = bpf_get_socket_cookie(ctx);
	key.family = mesh_ctx_addr(ctx, family, key.addr);
	key.port = (__u16)ctx->user_port;
	rev = bpf_map_lookup_elem(&mesh_udp_rev, &key);
	if (!rev || mesh_ctx_set_addr(ctx, family, rev->family, rev->vip))
		return 1;
	ctx->user_port = rev->vip_port;
	mesh_count(MESH_STAT_RECVMSG_REWRITTEN);
	return 1;
}

SEC("cgroup/getpeername4")
int mesh_getpeername4(struct bpf_sock_addr *ctx) { return mesh_getpeername(ctx, MESH_AF_INET); }

SEC("cgroup/getpeername6")
int mesh_getpeername6(struct bpf_sock_addr *ctx) { return mesh_getpeername(ctx, MESH_AF_INET6); }

SEC("cgroup/recvmsg4")
int mesh_recvmsg4(struct bpf_sock_addr *ctx) { return mesh_recvmsg(ctx, MESH_AF_INET); }

SEC("cgroup/recvmsg6")
int mesh_recvmsg6(struct bpf_sock_addr *ctx) { return mesh_recvmsg(ctx, MESH_AF_INET6); }
