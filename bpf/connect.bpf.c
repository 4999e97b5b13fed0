/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * connect.bpf.c - cgroup/connect4|6 and cgroup/sendmsg4|6: steer a
 * connect() or an unconnected UDP sendto() of a service VIP to one of its
 * backends, chosen by the service's algorithm.
 *
 *   connect(VIP:port) --> mesh_services --> slot/maglev --> mesh_backends
 *        |                                                      |
 *        +-- rewrite user_ip/user_port <------------------------+
 *        +-- mesh_sock (VIP, backend, REWRITTEN)   for getpeername, sockops
 *        +-- mesh_udp_rev (UDP only)               for recvmsg
 *
 * TCP live/total counts are kept by sockops (sockops.bpf.c) once the SYN is
 * really sent, so a connect that fails before that is not counted.
 */
#include "mesh_select.bpf.h"

/* Saves what getpeername and sockops need. A socket already counted by
 * sockops keeps its state: its backend must be the one decremented at close. */
static __always_inline void mesh_sock_remember(struct bpf_sock_addr *ctx,
					       const struct mesh_svc_key *vip,
					       const struct mesh_svc *svc, __u32 backend_id)
{
	struct mesh_sock_state *st;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&mesh_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		mesh_count(MESH_STAT_STORAGE_FAILED);
		return;
	}
	if (st->flags & MESH_SOCK_F_COUNTED)
		return;
	st->vip[0] = vip->addr[0];
	st->vip[1] = vip->addr[1];
	st->vip[2] = vip->addr[2];
	st->vip[3] = vip->addr[3];
	st->vip_port = vip->port;
	st->family = vip->family;
	st->svc_id = svc->svc_id;
	st->backend_id = backend_id;
	st->flags = MESH_SOCK_F_REWRITTEN;
}

static __always_inline int mesh_connect(struct bpf_sock_addr *ctx, __u8 family)
{
	struct mesh_backend *be = NULL;
	struct mesh_svc *svc = NULL;
	struct mesh_svc_key vip;
	__u32 backend_id = 0;

	if (ctx->protocol != MESH_PROTO_TCP && ctx->protocol != MESH_PROTO_UDP)
		return MESH_SOCK_ALLOW;
	switch (mesh_pick(ctx, family, &vip, &svc, &be, &backend_id)) {
	case MESH_PICK_NOT_VIP:
		return MESH_SOCK_ALLOW;
	case MESH_PICK_REFUSE:
		return MESH_SOCK_REJECT;
	default:
		break;
	}
	mesh_rewrite_dst(ctx, be);
	mesh_sock_remember(ctx, &vip, svc, backend_id);
	if (ctx->protocol == MESH_PROTO_UDP) {
		mesh_udp_rev_record(ctx, be, &vip);
		mesh_backend_add_total(backend_id);
	}
	mesh_count(MESH_STAT_CONNECT_REWRITTEN);
	return MESH_SOCK_ALLOW;
}

/* Unconnected UDP: each datagram to the VIP is steered on its own. */
static __always_inline int mesh_sendmsg(struct bpf_sock_addr *ctx, __u8 family)
{
	struct mesh_backend *be = NULL;
	struct mesh_svc *svc = NULL;
	struct mesh_svc_key vip;
	__u32 backend_id = 0;

	if (ctx->protocol != MESH_PROTO_UDP)
		return MESH_SOCK_ALLOW;
	switch (mesh_pick(ctx, family, &vip, &svc, &be, &backend_id)) {
	case MESH_PICK_NOT_VIP:
		return MESH_SOCK_ALLOW;
	case MESH_PICK_REFUSE:
		return MESH_SOCK_REJECT;
	default:
		break;
	}
	mesh_rewrite_dst(ctx, be);
	if (mesh_udp_rev_record(ctx, be, &vip))
		mesh_backend_add_total(backend_id);
	mesh_count(MESH_STAT_SENDMSG_REWRITTEN);
	return MESH_SOCK_ALLOW;
}

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx) { return mesh_connect(ctx, MESH_AF_INET); }

SEC("cgroup/connect6")
int mesh_connect6(struct bpf_sock_addr *ctx) { return mesh_connect(ctx, MESH_AF_INET6); }

SEC("cgroup/sendmsg4")
int mesh_sendmsg4(struct bpf_sock_addr *ctx) { return mesh_sendmsg(ctx, MESH_AF_INET); }

SEC("cgroup/sendmsg6")
int mesh_sendmsg6(struct bpf_sock_addr *ctx) { return mesh_sendmsg(ctx, MESH_AF_INET6); }
