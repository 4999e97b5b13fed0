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
 * TCP: the connect-rate buckets admit it (mesh_rate.bpf.h), then the
 * connection is reserved here, within the service's and backend's limits
 * (mesh_conn.bpf.h) and never on an ejected backend (mesh_outlier.bpf.h),
 * and released at TCP_CLOSE (sockops.bpf.c) or at close() (release.bpf.c),
 * whichever comes first.
 */
#include "mesh_conn.bpf.h"
#include "mesh_outlier.bpf.h"
#include "mesh_rate.bpf.h"
#include "mesh_select.bpf.h"

/* Saves what getpeername and sockops need in the socket's mesh_sock entry
 * (created here). NULL when storage could not be allocated (counted). */
static __always_inline struct mesh_sock_state *mesh_sock_remember(struct bpf_sock_addr *ctx,
								  const struct mesh_svc_key *vip,
								  const struct mesh_svc *svc,
								  __u32 backend_id)
{
	struct mesh_sock_state *st;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return NULL;
	st = bpf_sk_storage_get(&mesh_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		mesh_count(MESH_STAT_STORAGE_FAILED);
		return NULL;
	}
	st->vip[0] = vip->addr[0];
	st->vip[1] = vip->addr[1];
	st->vip[2] = vip->addr[2];
	st->vip[3] = vip->addr[3];
	st->vip_port = vip->port;
	st->family = vip->family;
	st->svc_id = svc->svc_id;
	st->backend_id = backend_id;
	st->flags = MESH_SOCK_F_REWRITTEN;
	return st;
}

/* A socket connect()ed again after a failed attempt still holds the first
 * attempt's reservation when the failure happened before the SYN left. */
static __always_inline void mesh_release_previous(struct bpf_sock_addr *ctx)
{
	struct mesh_sock_state *st;

	if (!ctx->sk)
		return;
	st = bpf_sk_storage_get(&mesh_sock, ctx->sk, 0, 0);
	if (st)
		mesh_release(st);
}

/* Bound on the backends tried when the picked one is at its limit or ejected:
 * the verifier needs a constant, and a service whose first MESH_LIMIT_SCAN
 * slots (from a random start) are all full or ejected is treated as such. */
#define MESH_LIMIT_SCAN 64

/* Why a backend cannot take a connection (mesh_reserve_backend). Bit values:
 * mesh_reserve accumulates FULL with `|`, not a branch, so the verifier sees
 * one state per loop iteration rather than one per path taken. */
enum mesh_skip {
	MESH_SKIP_NONE = 0,    /* reserved */
	MESH_SKIP_FULL = 1,    /* at max_conns_per_backend */
	MESH_SKIP_EJECTED = 2, /* ejected by outlier detection (mesh_outlier.bpf.h) */
};

/* Reserves a live connection on backend `id` unless it is ejected or full
 * (limit: max_conns_per_backend). Returns an enum mesh_skip.
 *
 * A global (not inlined, not static) function: the verifier checks it once
 * on its own, with scalar arguments. Inlined into the reroute loop of
 * mesh_reserve, its branches (expiry compare-and-swap, limit undo) would be
 * explored per iteration: 20x the instructions, near the 1M verifier limit
 * for connect6. */
__attribute__((noinline)) int mesh_reserve_backend(__u32 id, __u32 limit, __u64 now)
{
	struct mesh_backend_state *bs = bpf_map_lookup_elem(&mesh_backend_state, &id);

	if (!bs)
		return MESH_SKIP_FULL;
	if (mesh_outlier_ejected(bs, now))
		return MESH_SKIP_EJECTED;
	if (!mesh_reserve_one(&bs->live_conns, limit))
		return MESH_SKIP_FULL;
	return MESH_SKIP_NONE;
}

/*
 * TCP: reserve a live connection on the service and on a backend, within
 * their limits, never on an ejected backend. The picked backend first; when
 * it is full or ejected, the next slots from a random start (another eligible
 * backend, "rerouted"). Returns 0 with *be / *backend_id set to the backend
 * that holds the reservation, or the mesh_stat reason to refuse with:
 * _LIMIT_BACKEND when any backend tried was full, _ALL_EJECTED when every one
 * tried was ejected.
 */
static __always_inline int mesh_reserve(const struct mesh_svc *svc, __u8 family,
					struct mesh_backend **be, __u32 *backend_id)
{
	__u32 svc_id = svc->svc_id, start, i, id;
	struct mesh_slot_key sk = {.svc_id = svc->svc_id};
	__u64 now = bpf_ktime_get_ns();
	int skip, first;
	struct mesh_svc_state *ss;
	struct mesh_backend *cand;
	struct mesh_slot *slot;
	int full;

	ss = bpf_map_lookup_elem(&mesh_svc_state, &svc_id);
	if (!ss)
		return MESH_STAT_BACKEND_MISSING;
	if (!mesh_reserve_one(&ss->live_conns, svc->max_conns)) {
		__sync_fetch_and_add(&ss->refused_service, 1);
		return MESH_STAT_LIMIT_SERVICE;
	}
	first = mesh_reserve_backend(*backend_id, svc->max_conns_per_backend, now);
	if (first == MESH_SKIP_NONE)
		return 0;
	full = first & MESH_SKIP_FULL;

	start = mesh_uniform(bpf_get_prandom_u32(), svc->slot_count);
	for (i = 0; i < MESH_LIMIT_SCAN && i < svc->slot_count; i++) {
		sk.slot = start + i;
		if (sk.slot >= svc->slot_count)
			sk.slot -= svc->slot_count;
		slot = bpf_map_lookup_elem(&mesh_slots, &sk);
		if (!slot || slot->backend_id == *backend_id)
			continue;
		id = slot->backend_id;
		cand = bpf_map_lookup_elem(&mesh_backends, &id);
		if (!cand || !(cand->flags & MESH_BACKEND_F_ACTIVE) || cand->family != family)
			continue;
		skip = mesh_reserve_backend(id, svc->max_conns_per_backend, now);
		full |= skip & MESH_SKIP_FULL;
		if (skip != MESH_SKIP_NONE)
			continue;
		*be = cand;
		*backend_id = id;
		if (first == MESH_SKIP_EJECTED) {
			mesh_count(MESH_STAT_EJECTED_SKIPPED);
		} else {
			__sync_fetch_and_add(&ss->rerouted, 1);
			mesh_count(MESH_STAT_LIMIT_REROUTED);
		}
		return 0;
	}
	__sync_fetch_and_add(&ss->live_conns, -1);
	if (full) {
		__sync_fetch_and_add(&ss->refused_backend, 1);
		return MESH_STAT_LIMIT_BACKEND;
	}
	__sync_fetch_and_add(&ss->refused_ejected, 1);
	return MESH_STAT_ALL_EJECTED;
}

static __always_inline int mesh_connect(struct bpf_sock_addr *ctx, __u8 family)
{
	struct mesh_sock_state *st;
	struct mesh_backend *be = NULL;
	int reason;
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
	if (ctx->protocol == MESH_PROTO_TCP) {
		mesh_release_previous(ctx);
		reason = mesh_rate_admit(svc);
		if (!reason)
			reason = mesh_reserve(svc, vip.family, &be, &backend_id);
		if (reason) {
			mesh_refuse(reason);
			return MESH_SOCK_REJECT;
		}
	}
	mesh_rewrite_dst(ctx, be, family);
	st = mesh_sock_remember(ctx, &vip, svc, backend_id);
	if (ctx->protocol == MESH_PROTO_TCP) {
		if (st) {
			st->flags |= MESH_SOCK_F_COUNTED;
		} else {
			/* Nowhere to remember the reservation: give it back
			 * now rather than leak it (the connection goes
			 * uncounted, and MESH_STAT_STORAGE_FAILED says so). */
			struct mesh_sock_state tmp = {.svc_id = svc->svc_id,
						      .backend_id = backend_id,
						      .flags = MESH_SOCK_F_COUNTED};
			mesh_release(&tmp);
		}
	} else {
		mesh_udp_rev_record(ctx, be, &vip);
	}
	mesh_backend_add_total(backend_id);
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
	mesh_rewrite_dst(ctx, be, family);
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
