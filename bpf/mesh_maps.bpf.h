/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_maps.bpf.h - every map of the mesh object, declared once.
 *
 * maps.bpf.c defines MESH_MAPS_DEFINE before including this file and so owns
 * the definitions; every other *.bpf.c sees the same text prefixed with
 * `extern`, and `bpftool gen object` links them into one map each.
 *
 * max_entries written here are placeholders: meshd sets every size with
 * bpf_map__set_max_entries() from DatapathConfig before load
 * (userspace/datapath/datapath.cc). Keys and values come from mesh_abi.h.
 */
#ifndef MESH_MAPS_BPF_H
#define MESH_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mesh_abi.h"

#ifdef MESH_MAPS_DEFINE
#define MESH_MAP
#else
#define MESH_MAP extern
#endif

/* Service frontends (VIP:port/proto). Written by meshd (reconciler),
 * sized by DatapathConfig.max_services. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_svc_key);
	__type(value, struct mesh_svc);
} mesh_services SEC(".maps");

/* (svc_id, slot) -> backend + alias-method entry. Written by meshd,
 * sized by DatapathConfig.max_slots (sum of backends over services). */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct mesh_slot_key);
	__type(value, struct mesh_slot);
} mesh_slots SEC(".maps");

/* Backend addresses by backend id. Written by meshd, sized by
 * DatapathConfig.max_backends. Array slots never go away: inactive entries
 * have MESH_BACKEND_F_ACTIVE clear. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct mesh_backend);
} mesh_backends SEC(".maps");

/* Live counters per backend id. Written only by BPF with atomic adds (exact
 * node-wide; connect reserves, sockops/sock_release release). Never zeroed by
 * meshd. Same size as mesh_backends. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct mesh_backend_state);
} mesh_backend_state SEC(".maps");

/* Live connections and refusals per service id. Written only by BPF with
 * atomic adds; sized by DatapathConfig.max_services (ids are < that). */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct mesh_svc_state);
} mesh_svc_state SEC(".maps");

/* Maglev lookup tables: svc_id -> inner ARRAY of backend ids. meshd creates
 * one inner map per service with that service's (prime) table size;
 * BPF_F_INNER_MAP lets inner arrays of different max_entries share this
 * outer map. Sized by DatapathConfig.max_services. */
struct mesh_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__array(values, struct mesh_maglev_inner);
} mesh_maglev SEC(".maps");

/* Per-socket state created at connect()/sendmsg() of a VIP. Written by BPF
 * only; lives and dies with the socket (no size). */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mesh_sock_state);
} mesh_sock SEC(".maps");

/* UDP reverse translation (client socket, backend) -> VIP for recvmsg.
 * Written by BPF at connect/sendmsg; LRU so stale flows age out. Sized by
 * DatapathConfig.max_udp_flows. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_udp_rev_key);
	__type(value, struct mesh_udp_rev);
} mesh_udp_rev SEC(".maps");

/* Per-(client cgroup, service) connect-rate buckets. Written by BPF at
 * connect (compare-and-swap); LRU so idle clients age out. Sized by
 * DatapathConfig.max_rate_clients. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_rate_client_key);
	__type(value, struct mesh_rate_client);
} mesh_rate_client SEC(".maps");

/* (svc_id, backend_id) pairs whose connections drain.bpf.c destroys. Written
 * by meshd around one iterator run; empty otherwise. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct mesh_drain_key);
	__type(value, __u8);
} mesh_drain SEC(".maps");

/* Runtime switches (struct mesh_config at key 0). Written by meshd at start
 * and whenever a switch changes; read by sockops. Fixed size 1. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_config);
} mesh_config SEC(".maps");

/* Local TCP sockets whose bytes sk_msg may splice to their peer
 * (mesh_sockmap.bpf.h). Written by sockops at ESTABLISHED (and by meshd's
 * start-up probe, which removes its own entries); the kernel removes a socket
 * when it is close()d or reaches TCP_CLOSE (RST, timeout). The value is the
 * socket (a cookie when read from userspace). mesh_sk_msg is attached to it.
 * Sized by DatapathConfig.max_sockmap_sockets (two per spliced connection). */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_sock_key);
	__type(value, __u64);
} mesh_sockhash SEC(".maps");

/* Steered client sockets waiting for their server to be established:
 * key = the client's own mesh_sock_key. Written by sockops at
 * ACTIVE_ESTABLISHED, consumed (deleted) at the server's
 * PASSIVE_ESTABLISHED; entries of clients whose server is not on this node
 * age out (LRU). Same size as mesh_sockhash. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_sock_key);
	__type(value, __u32);
} mesh_sockmap_pending SEC(".maps");

/* Original destinations of connections sent to meshd's L7 listener:
 * client (addr, port) -> VIP:port (struct mesh_orig_dst_key in mesh_abi.h).
 * Written by sockops at the client's ACTIVE_ESTABLISHED, taken (looked up
 * and deleted) by meshd when it accepts the connection. Entries of
 * connections meshd never accepts age out (LRU). Sized by
 * DatapathConfig.max_orig_dst (connections established but not yet
 * accepted; an evicted entry is a lookup miss: meshd closes that one). */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_orig_dst_key);
	__type(value, struct mesh_orig_dst);
} mesh_orig_dst SEC(".maps");

/* STRICT (address, port) entries of local workloads (port 0: every port),
 * value = SYNs dropped for the entry, per CPU. Written by meshd (presence is
 * the switch: meshd inserts with NOEXIST and never rewrites a value, so the
 * counters survive re-applies); read by mesh_strict.bpf.c. Sized by
 * DatapathConfig.max_strict. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mesh_strict_key);
	__type(value, __u64);
} mesh_strict SEC(".maps");

/* 4-tuples (client's view: local = client, remote = server) of connects the
 * connect hook authorized to a STRICT local workload. Written by sockops at
 * TCP_CONNECT_CB (before the SYN), deleted at ESTABLISHED or TCP_CLOSE; LRU
 * so that nothing leaks. Read by mesh_strict.bpf.c for unmarked SYNs. Sized
 * by DatapathConfig.max_strict_pass (connects in SYN_SENT at once). */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mesh_sock_key);
	__type(value, __u8);
} mesh_strict_pass SEC(".maps");

/* Local workloads' cgroup ids -> identity id (the L4 authorization's source).
 * Written by meshd; sized by DatapathConfig.max_identities. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} mesh_cg_identity SEC(".maps");

/* Local workload addresses under L4 authorization or STRICT. Written by
 * meshd; sized by DatapathConfig.max_authz_dsts. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct mesh_authz_dst_key);
	__type(value, struct mesh_authz_dst);
} mesh_authz_dst SEC(".maps");

/* (client identity, backend address, port) -> enum mesh_authz_verdict.
 * Written by meshd; sized by DatapathConfig.max_authz_rules. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_authz_l4_key);
	__type(value, __u8);
} mesh_authz_l4 SEC(".maps");

/* Set by meshd before load: the bits of skb->mark that say "sent by meshd"
 * (DatapathConfig.strict_mark, never 0). */
#ifdef MESH_MAPS_DEFINE
const volatile __u32 mesh_strict_mark = MESH_STRICT_MARK_DEFAULT;
#else
extern const volatile __u32 mesh_strict_mark;
#endif

/* Set by meshd before load: 0 when the kernel has no SOCKHASH/SK_MSG
 * support. Then mesh_sockhash is created as a plain hash that nothing uses,
 * and the verifier drops the sockmap code as dead (the value is known at
 * load: .rodata is frozen). */
#ifdef MESH_MAPS_DEFINE
const volatile __u8 mesh_sockmap_supported = 1;
#else
extern const volatile __u8 mesh_sockmap_supported;
#endif

/* Counters by reason (enum mesh_stat), per CPU. Written by BPF, summed by
 * meshd. Fixed size MESH_STAT_MAX. */
MESH_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mesh_stats SEC(".maps");

/* ::ffff:0:0/96 in network order: an AF_INET6 socket dialing an IPv4
 * address (dual-stack clients such as gRPC's C-core do this) uses
 * ::ffff:a.b.c.d. The hooks fold it into IPv4 so that IPv4 services and
 * backends serve such sockets too. */
#define MESH_V4_MAPPED_WORD2 bpf_htonl(0x0000ffff)

/* Reads the hook's address (user_ip4 or user_ip6) into addr[4], folding
 * v4-mapped IPv6 into IPv4. Returns the address family (MESH_AF_*).
 * hook_family must be a constant: each hook may only touch its own fields. */
static __always_inline __u8 mesh_ctx_addr(struct bpf_sock_addr *ctx, __u8 hook_family,
					  __u32 addr[4])
{
	if (hook_family == MESH_AF_INET) {
		addr[0] = ctx->user_ip4;
		addr[1] = addr[2] = addr[3] = 0;
		return MESH_AF_INET;
	}
	addr[0] = ctx->user_ip6[0];
	addr[1] = ctx->user_ip6[1];
	addr[2] = ctx->user_ip6[2];
	addr[3] = ctx->user_ip6[3];
	if (addr[0] == 0 && addr[1] == 0 && addr[2] == MESH_V4_MAPPED_WORD2) {
		addr[0] = addr[3];
		addr[1] = addr[2] = addr[3] = 0;
		return MESH_AF_INET;
	}
	return MESH_AF_INET6;
}

/* Writes an address of addr_family into the hook's address fields; an IPv4
 * address goes into an AF_INET6 socket as ::ffff:a.b.c.d. Returns 0, or -1
 * when an IPv6 address cannot be expressed in an AF_INET hook. */
static __always_inline int mesh_ctx_set_addr(struct bpf_sock_addr *ctx, __u8 hook_family,
					     __u8 addr_family, const __u32 addr[4])
{
	if (hook_family == MESH_AF_INET) {
		if (addr_family != MESH_AF_INET)
			return -1;
		ctx->user_ip4 = addr[0];
		return 0;
	}
	if (addr_family == MESH_AF_INET) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = MESH_V4_MAPPED_WORD2;
		ctx->user_ip6[3] = addr[0];
		return 0;
	}
	ctx->user_ip6[0] = addr[0];
	ctx->user_ip6[1] = addr[1];
	ctx->user_ip6[2] = addr[2];
	ctx->user_ip6[3] = addr[3];
	return 0;
}

static __always_inline void mesh_count(enum mesh_stat stat)
{
	__u32 key = stat;
	__u64 *v = bpf_map_lookup_elem(&mesh_stats, &key);

	if (v)
		(*v)++;
}

#endif /* MESH_MAPS_BPF_H */
