/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_select.bpf.h - service lookup, backend selection and destination
 * rewrite shared by the connect and sendmsg hooks (connect.bpf.c).
 * The arithmetic itself is in mesh_lb.h so userspace tests the same code.
 */
#ifndef MESH_SELECT_BPF_H
#define MESH_SELECT_BPF_H

/* mesh_maps.bpf.h first: it brings vmlinux.h, which mesh_abi.h must follow. */
#include "mesh_maps.bpf.h"

#include "mesh_lb.h"

/* errno values are #defines, which vmlinux.h cannot carry. */
#define MESH_ECONNREFUSED 111

/* Verdicts of the cgroup sock_addr hooks. */
#define MESH_SOCK_ALLOW 1
#define MESH_SOCK_REJECT 0

enum mesh_pick_result {
	MESH_PICK_OK = 0, /* *backend and *backend_id are set */
	MESH_PICK_REFUSE, /* a VIP we cannot serve: refuse, stat counted */
};

/* Service key of the address the app asked for. ctx->user_port holds the port
 * in network order in its low 16 bits. */
static __always_inline void mesh_svc_key_of(struct bpf_sock_addr *ctx, __u8 family,
					    struct mesh_svc_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = mesh_ctx_addr(ctx, family, key->addr);
	key->proto = ctx->protocol;
	key->port = (__u16)ctx->user_port;
}

/* Weighted draw (alias method): uniform slot, then keep it or take its alias.
 * Returns the slot entry (its number in *slot_out) or NULL when the slot map
 * has a hole. */
static __always_inline struct mesh_slot *mesh_weighted_slot(__u32 svc_id, __u32 slot_count,
							    __u32 *slot_out)
{
	struct mesh_slot_key sk = {.svc_id = svc_id};
	struct mesh_slot *slot;
	__u32 pick;

	sk.slot = mesh_uniform(bpf_get_prandom_u32(), slot_count);
	slot = bpf_map_lookup_elem(&mesh_slots, &sk);
	if (!slot)
		return NULL;
	pick = mesh_alias_pick(sk.slot, bpf_get_prandom_u32(), slot->alias_threshold,
			       slot->alias_slot);
	*slot_out = pick;
	if (pick == sk.slot)
		return slot;
	sk.slot = pick;
	return bpf_map_lookup_elem(&mesh_slots, &sk);
}

/* Power of two choices between backends a and b (LeastConnections or
 * p2c-ewma). A candidate that is ejected loses to one that is not, so the
 * comparison does not favour an ejected backend for its empty live count
 * (connect would then have to reroute at random). */
static __always_inline __u32 mesh_p2c_choose(__u8 algo, __u32 a, __u32 b)
{
	struct mesh_backend_state *sa = bpf_map_lookup_elem(&mesh_backend_state, &a);
	struct mesh_backend_state *sb = bpf_map_lookup_elem(&mesh_backend_state, &b);
	__u64 now;
	int ea, eb;

	if (!sa || !sb)
		return a;
	now = bpf_ktime_get_ns();
	ea = mesh_is_ejected(sa->ejected_until_ns, now);
	eb = mesh_is_ejected(sb->ejected_until_ns, now);
	if (ea != eb)
		return ea ? b : a;
	if (algo == MESH_LB_P2C_EWMA)
		return mesh_p2c_ewma_prefer_a(sa->srtt_ewma_us, sa->live_conns, sb->srtt_ewma_us,
					      sb->live_conns, bpf_get_prandom_u32())
			   ? a
			   : b;
	return mesh_p2c_prefer_a(sa->live_conns, sb->live_conns) ? a : b;
}

/* Picks the backend id of a service by its algorithm. Returns 0 and sets *id,
 * or a mesh_stat to count as the reason for refusing. */
static __always_inline int mesh_pick_backend_id(struct bpf_sock_addr *ctx,
						const struct mesh_svc *svc, __u32 *id)
{
	struct mesh_slot_key sk = {.svc_id = svc->svc_id};
	struct mesh_slot *a, *b;
	__u32 slot_a = 0, slot_b = 0;
	__u32 *entry;
	void *table;
	__u32 idx;

	switch (svc->algo) {
	case MESH_LB_RANDOM:
		sk.slot = mesh_uniform(bpf_get_prandom_u32(), svc->slot_count);
		a = bpf_map_lookup_elem(&mesh_slots, &sk);
		if (!a)
			return MESH_STAT_BACKEND_MISSING;
		*id = a->backend_id;
		return 0;
	case MESH_LB_LEAST_CONN:
	case MESH_LB_P2C_EWMA:
		a = mesh_weighted_slot(svc->svc_id, svc->slot_count, &slot_a);
		b = mesh_weighted_slot(svc->svc_id, svc->slot_count, &slot_b);
		/* Two distinct candidates, else with two backends the busier
		 * one would win a quarter of the draws. */
		sk.slot = mesh_p2c_second(slot_a, slot_b, bpf_get_prandom_u32(), svc->slot_count);
		if (b && sk.slot != slot_b)
			b = bpf_map_lookup_elem(&mesh_slots, &sk);
		if (!a || !b)
			return MESH_STAT_BACKEND_MISSING;
		*id = mesh_p2c_choose(svc->algo, a->backend_id, b->backend_id);
		return 0;
	case MESH_LB_MAGLEV:
		/* The client key is the netns cookie: one per pod network
		 * namespace, so per pod address and stable for the pod's life
		 * (the source address is not known yet at connect()). */
		table = bpf_map_lookup_elem(&mesh_maglev, &sk.svc_id);
		if (!table || svc->maglev_size == 0)
			return MESH_STAT_MAGLEV_MISSING;
		idx = mesh_maglev_index(bpf_get_netns_cookie(ctx), svc->maglev_size);
		entry = bpf_map_lookup_elem(table, &idx);
		if (!entry)
			return MESH_STAT_MAGLEV_MISSING;
		*id = *entry;
		return 0;
	case MESH_LB_WEIGHTED_RANDOM:
	default:
		a = mesh_weighted_slot(svc->svc_id, svc->slot_count, &slot_a);
		if (!a)
			return MESH_STAT_BACKEND_MISSING;
		*id = a->backend_id;
		return 0;
	}
}

/* Counts the reason and makes the hook's connect()/sendmsg() fail with
 * ECONNREFUSED (bpf_set_retval, 5.18+: the app sees what a closed port gives,
 * rather than EPERM). */
static __always_inline void mesh_refuse(int reason)
{
	mesh_count(reason);
	bpf_set_retval(-MESH_ECONNREFUSED);
}

/* The service the destination of the hook is, or NULL (not a VIP). *vip
 * receives its key either way. */
static __always_inline struct mesh_svc *mesh_lookup_svc(struct bpf_sock_addr *ctx, __u8 family,
							struct mesh_svc_key *vip)
{
	mesh_svc_key_of(ctx, family, vip);
	return bpf_map_lookup_elem(&mesh_services, vip);
}

/*
 * For the service `svc` (mesh_lookup_svc), picks an active backend of the
 * right family. On MESH_PICK_REFUSE the reason was counted and the hook's
 * return value set to ECONNREFUSED (bpf_set_retval, 5.18+: the app sees
 * ECONNREFUSED, as from a closed port, rather than EPERM).
 */
static __always_inline enum mesh_pick_result
mesh_pick(struct bpf_sock_addr *ctx, const struct mesh_svc_key *vip, struct mesh_svc *svc,
	  struct mesh_backend **backend, __u32 *backend_id)
{
	int reason;

	if (svc->slot_count == 0) {
		reason = MESH_STAT_NO_BACKEND;
		goto refuse;
	}
	reason = mesh_pick_backend_id(ctx, svc, backend_id);
	if (reason)
		goto refuse;
	*backend = bpf_map_lookup_elem(&mesh_backends, backend_id);
	if (!*backend || !((*backend)->flags & MESH_BACKEND_F_ACTIVE)) {
		reason = MESH_STAT_BACKEND_MISSING;
		goto refuse;
	}
	/* vip->family, not the hook's: a v4-mapped VIP on an AF_INET6 socket
	 * is served by IPv4 backends (written back v4-mapped). */
	if ((*backend)->family != vip->family) {
		reason = MESH_STAT_FAMILY_MISMATCH;
		goto refuse;
	}
	return MESH_PICK_OK;
refuse:
	mesh_refuse(reason);
	return MESH_PICK_REFUSE;
}

/* Points the socket at the backend. be->family equals the VIP's (mesh_pick,
 * mesh_reserve), so an AF_INET hook always gets an IPv4 backend. */
static __always_inline void mesh_rewrite_dst(struct bpf_sock_addr *ctx,
					     const struct mesh_backend *be, __u8 family)
{
	mesh_ctx_set_addr(ctx, family, be->family, be->addr);
	ctx->user_port = be->port;
}

/* Records (socket, backend) -> VIP so recvmsg can show the VIP as the source.
 * Returns 1 when the entry is new (first datagram of this socket to it). */
static __always_inline int mesh_udp_rev_record(struct bpf_sock_addr *ctx,
					       const struct mesh_backend *be,
					       const struct mesh_svc_key *vip)
{
	struct mesh_udp_rev_key key;
	struct mesh_udp_rev val;
	int fresh;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memset(&val, 0, sizeof(val));
	key.cookie = bpf_get_socket_cookie(ctx);
	key.addr[0] = be->addr[0];
	key.addr[1] = be->addr[1];
	key.addr[2] = be->addr[2];
	key.addr[3] = be->addr[3];
	key.port = be->port;
	key.family = be->family;
	val.vip[0] = vip->addr[0];
	val.vip[1] = vip->addr[1];
	val.vip[2] = vip->addr[2];
	val.vip[3] = vip->addr[3];
	val.vip_port = vip->port;
	val.family = vip->family;
	fresh = bpf_map_lookup_elem(&mesh_udp_rev, &key) == NULL;
	bpf_map_update_elem(&mesh_udp_rev, &key, &val, BPF_ANY);
	return fresh;
}

static __always_inline void mesh_backend_add_total(__u32 backend_id)
{
	struct mesh_backend_state *st = bpf_map_lookup_elem(&mesh_backend_state, &backend_id);

	if (st)
		__sync_fetch_and_add(&st->total_conns, 1);
}

#endif /* MESH_SELECT_BPF_H */
