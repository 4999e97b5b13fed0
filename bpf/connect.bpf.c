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
 *
 * TCP to a local workload under L4 authorization (mesh_authz_dst): the
 * client's identity (mesh_cg_identity) must be allowed to reach the chosen
 * backend (mesh_authz_l4, else the destination's default) before anything is
 * taken (rate tokens, reservations); a denied connect fails with
 * ECONNREFUSED, counted as refused_authz. A reroute (backend full or ejected)
 * never lands on a backend the client may not reach. An allowed connect to a
 * STRICT workload is marked MESH_SOCK_F_STRICT_PASS (sockops then lets its
 * SYN through mesh_strict.bpf.c).
 *
 * TCP to an L7 service (MESH_SVC_F_L7): no backend is chosen here. The
 * destination becomes meshd's outbound listener (mesh_config.redirect_*),
 * mesh_sock records the VIP with F_L7, and sockops publishes the original
 * destination in mesh_orig_dst once the source port is known
 * (ACTIVE_ESTABLISHED, sockops.bpf.c). Limits, rate buckets, ejection and
 * backend counters do not apply on this hop: meshd picks the backend per
 * request and enforces the service's limits there (docs/design/0003).
 */
#include "mesh_conn.bpf.h"
#include "mesh_outlier.bpf.h"
#include "mesh_rate.bpf.h"
#include "mesh_select.bpf.h"

/* Saves what getpeername and sockops need in the socket's mesh_sock entry
 * (created here). NULL when storage could not be allocated (counted). */
static __always_inline struct mesh_sock_state *mesh_sock_remember(struct bpf_sock_addr *ctx,
								  const struct mesh_svc_key *vip,
								  __u32 svc_id, __u32 backend_id)
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
	st->svc_id = svc_id;
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

/* mesh_authz_backend() result bits. */
#define MESH_AUTHZ_R_DENY 0x1 /* the client may not reach the backend */
#define MESH_AUTHZ_R_PASS 0x2 /* allowed, and the backend has STRICT ports */

/*
 * L4 authorization of the connecting task (its cgroup's identity) towards
 * backend `id`: 0 when the backend is not a local workload under policy (no
 * mesh_authz_dst entry) or is allowed without STRICT, else MESH_AUTHZ_R_*.
 * At most three hash lookups after the backend's: the destination, the
 * client's identity and the rule (the last two only for a governed one).
 * Global (not inlined): verified once, called from the reroute loop too.
 */
__attribute__((noinline)) int mesh_authz_backend(__u32 id)
{
	struct mesh_authz_dst_key dk;
	struct mesh_authz_l4_key rk;
	struct mesh_authz_dst *dst;
	struct mesh_backend *be;
	__u8 verdict, flags, *v;
	__u32 *src;
	__u64 cg;

	be = bpf_map_lookup_elem(&mesh_backends, &id);
	if (!be)
		return 0;
	__builtin_memset(&dk, 0, sizeof(dk));
	dk.addr[0] = be->addr[0];
	dk.addr[1] = be->addr[1];
	dk.addr[2] = be->addr[2];
	dk.addr[3] = be->addr[3];
	dk.family = be->family;
	dst = bpf_map_lookup_elem(&mesh_authz_dst, &dk);
	if (!dst)
		return 0;
	flags = dst->flags;
	verdict = MESH_AUTHZ_ALLOW;
	if (flags & MESH_AUTHZ_F_GOVERNED) {
		cg = bpf_get_current_cgroup_id();
		src = bpf_map_lookup_elem(&mesh_cg_identity, &cg);
		__builtin_memset(&rk, 0, sizeof(rk));
		rk.src_id = src ? *src : 0;
		rk.addr[0] = be->addr[0];
		rk.addr[1] = be->addr[1];
		rk.addr[2] = be->addr[2];
		rk.addr[3] = be->addr[3];
		rk.port = be->port;
		rk.family = be->family;
		v = bpf_map_lookup_elem(&mesh_authz_l4, &rk);
		verdict = v ? *v : dst->default_verdict;
	}
	if (verdict != MESH_AUTHZ_ALLOW)
		return MESH_AUTHZ_R_DENY;
	return (flags & MESH_AUTHZ_F_STRICT_PASS) ? MESH_AUTHZ_R_PASS : 0;
}

/* Refuses a connect L4 authorization denied (ECONNREFUSED), counted for the
 * service and node-wide. */
static __always_inline void mesh_refuse_authz(__u32 svc_id)
{
	struct mesh_svc_state *ss = bpf_map_lookup_elem(&mesh_svc_state, &svc_id);

	if (ss)
		__sync_fetch_and_add(&ss->refused_authz, 1);
	mesh_refuse(MESH_STAT_AUTHZ_DENIED);
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
		if (mesh_authz_backend(id) & MESH_AUTHZ_R_DENY) {
			mesh_count(MESH_STAT_AUTHZ_SKIPPED);
			continue;
		}
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

/* A TCP connect to L7 service svc_id: points it at meshd's listener and marks
 * its mesh_sock F_L7. Returns 1 when redirected, 0 when the connect takes the
 * L4 path instead: no redirect target of the VIP's family (counted as
 * MESH_STAT_L7_NO_TARGET), or no socket storage to remember the VIP in
 * (MESH_STAT_STORAGE_FAILED; meshd could not learn the destination). */
static __always_inline int mesh_l7_redirect(struct bpf_sock_addr *ctx, __u8 family, __u32 svc_id)
{
	struct mesh_sock_state *st;
	struct mesh_config *cfg;
	struct mesh_svc_key vip;
	__u32 target[4] = {};
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&mesh_config, &zero);
	if (!cfg || !cfg->redirect_port)
		goto no_target;
	mesh_svc_key_of(ctx, family, &vip);
	if (vip.family == MESH_AF_INET) {
		target[0] = cfg->redirect_ip4;
	} else {
		target[0] = cfg->redirect_ip6[0];
		target[1] = cfg->redirect_ip6[1];
		target[2] = cfg->redirect_ip6[2];
		target[3] = cfg->redirect_ip6[3];
	}
	if (!(target[0] | target[1] | target[2] | target[3]))
		goto no_target;
	mesh_release_previous(ctx);
	st = mesh_sock_remember(ctx, &vip, svc_id, 0);
	if (!st)
		return 0;
	/* vip.family is the hook's or IPv4 (v4-mapped on an AF_INET6 socket,
	 * written back v4-mapped): the target always fits the hook. */
	if (mesh_ctx_set_addr(ctx, family, vip.family, target)) {
		st->flags = 0;
		return 0;
	}
	ctx->user_port = cfg->redirect_port;
	st->flags |= MESH_SOCK_F_L7;
	mesh_count(MESH_STAT_L7_REDIRECTED);
	return 1;
no_target:
	mesh_count(MESH_STAT_L7_NO_TARGET);
	return 0;
}

/* Global (not inlined) functions, one per hook family (each hook may only
 * touch its own address fields, so the family must be a constant): the
 * verifier checks each once on its own, and the caller sees a scalar result.
 * Inlined, each way of falling back to L4 would be a distinct state for the
 * whole backend selection after it (+50% instructions verified for
 * connect6). */
__attribute__((noinline)) int mesh_l7_redirect4(struct bpf_sock_addr *ctx, __u32 svc_id)
{
	return mesh_l7_redirect(ctx, MESH_AF_INET, svc_id);
}

__attribute__((noinline)) int mesh_l7_redirect6(struct bpf_sock_addr *ctx, __u32 svc_id)
{
	return mesh_l7_redirect(ctx, MESH_AF_INET6, svc_id);
}

static __always_inline int mesh_connect(struct bpf_sock_addr *ctx, __u8 family)
{
	struct mesh_sock_state *st;
	struct mesh_backend *be = NULL;
	int reason;
	struct mesh_svc *svc;
	struct mesh_svc_key vip;
	__u32 backend_id = 0, picked;
	int authz = 0;

	if (ctx->protocol != MESH_PROTO_TCP && ctx->protocol != MESH_PROTO_UDP)
		return MESH_SOCK_ALLOW;
	svc = mesh_lookup_svc(ctx, family, &vip);
	if (!svc)
		return MESH_SOCK_ALLOW;
	if ((svc->flags & MESH_SVC_F_L7) && ctx->protocol == MESH_PROTO_TCP &&
	    (family == MESH_AF_INET ? mesh_l7_redirect4(ctx, svc->svc_id)
				    : mesh_l7_redirect6(ctx, svc->svc_id)))
		return MESH_SOCK_ALLOW;
	if (mesh_pick(ctx, &vip, svc, &be, &backend_id) == MESH_PICK_REFUSE)
		return MESH_SOCK_REJECT;
	if (ctx->protocol == MESH_PROTO_TCP) {
		mesh_release_previous(ctx);
		/* Authorization first: a denied connect takes no rate token
		 * and no reservation. */
		authz = mesh_authz_backend(backend_id);
		if (authz & MESH_AUTHZ_R_DENY) {
			mesh_refuse_authz(svc->svc_id);
			return MESH_SOCK_REJECT;
		}
		picked = backend_id;
		reason = mesh_rate_admit(svc);
		if (!reason)
			reason = mesh_reserve(svc, vip.family, &be, &backend_id);
		if (reason) {
			mesh_refuse(reason);
			return MESH_SOCK_REJECT;
		}
		/* Rerouted: the loop skipped denied backends; only the STRICT
		 * pass of the new one is still to learn. */
		if (backend_id != picked)
			authz = mesh_authz_backend(backend_id) & MESH_AUTHZ_R_PASS;
	}
	mesh_rewrite_dst(ctx, be, family);
	st = mesh_sock_remember(ctx, &vip, svc->svc_id, backend_id);
	if (ctx->protocol == MESH_PROTO_TCP) {
		if (st) {
			st->flags |= MESH_SOCK_F_COUNTED;
			if (authz & MESH_AUTHZ_R_PASS)
				st->flags |= MESH_SOCK_F_STRICT_PASS;
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
	struct mesh_svc *svc;
	struct mesh_svc_key vip;
	__u32 backend_id = 0;

	if (ctx->protocol != MESH_PROTO_UDP)
		return MESH_SOCK_ALLOW;
	svc = mesh_lookup_svc(ctx, family, &vip);
	if (!svc)
		return MESH_SOCK_ALLOW;
	if (mesh_pick(ctx, &vip, svc, &be, &backend_id) == MESH_PICK_REFUSE)
		return MESH_SOCK_REJECT;
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
