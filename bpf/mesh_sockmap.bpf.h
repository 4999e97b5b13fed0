/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_sockmap.bpf.h - the sockmap fast path: which sockets sockops puts in
 * mesh_sockhash, and the keys sockops and sk_msg (sockmap.bpf.c) agree on.
 *
 *   client (pod A)                               server (pod B, same node)
 *   connect(VIP) -> rewritten to backend (connect.bpf.c, mesh_sock REWRITTEN)
 *   SYN-ACK: ACTIVE_ESTABLISHED
 *     sockhash[own key] = client                 ACK: PASSIVE_ESTABLISHED
 *     pending[own key]  = 1  ------------------>   pending[reversed key]? yes:
 *                                                   delete it,
 *                                                   sockhash[own key] = server
 *   send(): sk_msg -> sockhash[reversed key] = server -> its receive queue
 *
 * Who gets in, and why:
 * - the active side only when connect.bpf.c steered it (a meshed client of a
 *   service) and its backend is not a loopback address (loopback 4-tuples
 *   repeat across network namespaces; pod addresses do not);
 * - the passive side only when its own client registered in
 *   mesh_sockmap_pending, i.e. a steered client on this node. Servers of
 *   remote clients and of unmeshed clients never enter the map, so their
 *   bytes keep the plain TCP path at no cost.
 * A steered client whose backend is on another node is in mesh_sockhash but
 * never finds a peer: its messages pay one failed lookup (SOCKMAP_NO_PEER).
 *
 * The ACTIVE_ESTABLISHED of the client always runs before the server's
 * PASSIVE_ESTABLISHED (the server is established by the ACK the client sends
 * after it), so the pending entry is there in time. Insertions use
 * BPF_NOEXIST: an equal key in the map (a duplicate 4-tuple in another
 * namespace) is never replaced, the newcomer just is not spliced.
 *
 * All of it is off unless meshd set MESH_CONFIG_F_SOCKMAP in mesh_config
 * (sockmap mode off, or its start-up probe failed).
 */
#ifndef MESH_SOCKMAP_BPF_H
#define MESH_SOCKMAP_BPF_H

#include "mesh_maps.bpf.h"

static __always_inline void mesh_count_add(enum mesh_stat stat, __u64 n)
{
	__u32 key = stat;
	__u64 *v = bpf_map_lookup_elem(&mesh_stats, &key);

	if (v)
		*v += n;
}

static __always_inline int mesh_sockmap_enabled(void)
{
	struct mesh_config *cfg;
	__u32 zero = 0;

	if (!mesh_sockmap_supported)
		return 0;
	cfg = bpf_map_lookup_elem(&mesh_config, &zero);
	return cfg && (cfg->flags & MESH_CONFIG_F_SOCKMAP);
}

/* Folds ::ffff:a.b.c.d pairs into IPv4. Both ends of one connection are
 * folded alike, so the keys of its two sockets stay mirror images. */
static __always_inline void mesh_sock_key_fold(struct mesh_sock_key *key)
{
	if (key->family != MESH_AF_INET6)
		return;
	if (key->local[0] || key->local[1] || key->local[2] != MESH_V4_MAPPED_WORD2)
		return;
	if (key->remote[0] || key->remote[1] || key->remote[2] != MESH_V4_MAPPED_WORD2)
		return;
	key->local[0] = key->local[3];
	key->remote[0] = key->remote[3];
	key->local[1] = key->local[2] = key->local[3] = 0;
	key->remote[1] = key->remote[2] = key->remote[3] = 0;
	key->family = MESH_AF_INET;
}

/* The socket's own key. bpf_sock_ops: local_port is host order, remote_port
 * holds the network-order port in its upper 16 bits. Returns -1 when the
 * socket is neither IPv4 nor IPv6. */
static __always_inline int mesh_sock_key_of_ops(struct bpf_sock_ops *skops,
						struct mesh_sock_key *key)
{
	__u32 local0, remote0;

	__builtin_memset(key, 0, sizeof(*key));
	/* barrier_var: without it clang may sink the IPv4 and IPv6 loads of
	 * word 0 into one load from a selected ctx address, which the verifier
	 * rejects ("dereference of modified ctx ptr"). */
	if (skops->family == MESH_AF_INET) {
		local0 = skops->local_ip4;
		remote0 = skops->remote_ip4;
		barrier_var(local0);
		barrier_var(remote0);
		key->local[0] = local0;
		key->remote[0] = remote0;
	} else if (skops->family == MESH_AF_INET6) {
		local0 = skops->local_ip6[0];
		remote0 = skops->remote_ip6[0];
		barrier_var(local0);
		barrier_var(remote0);
		key->local[0] = local0;
		key->local[1] = skops->local_ip6[1];
		key->local[2] = skops->local_ip6[2];
		key->local[3] = skops->local_ip6[3];
		key->remote[0] = remote0;
		key->remote[1] = skops->remote_ip6[1];
		key->remote[2] = skops->remote_ip6[2];
		key->remote[3] = skops->remote_ip6[3];
	} else {
		return -1;
	}
	key->family = skops->family;
	key->local_port = bpf_htons((__u16)skops->local_port);
	key->remote_port = (__u16)(skops->remote_port >> 16);
	mesh_sock_key_fold(key);
	return 0;
}

static __always_inline void mesh_sock_key_reverse(const struct mesh_sock_key *in,
						  struct mesh_sock_key *out)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->local[0] = in->remote[0];
	out->local[1] = in->remote[1];
	out->local[2] = in->remote[2];
	out->local[3] = in->remote[3];
	out->remote[0] = in->local[0];
	out->remote[1] = in->local[1];
	out->remote[2] = in->local[2];
	out->remote[3] = in->local[3];
	out->local_port = in->remote_port;
	out->remote_port = in->local_port;
	out->family = in->family;
}

/* 127.0.0.0/8 or ::1 (network order). */
static __always_inline int mesh_sock_key_remote_loopback(const struct mesh_sock_key *key)
{
	if (key->family == MESH_AF_INET)
		return (bpf_ntohl(key->remote[0]) >> 24) == 127;
	return !key->remote[0] && !key->remote[1] && !key->remote[2] &&
	       key->remote[3] == bpf_htonl(1);
}

/* ACTIVE_ESTABLISHED of a socket connect.bpf.c steered. */
static __always_inline void mesh_sockmap_active(struct bpf_sock_ops *skops)
{
	struct mesh_sock_key key;
	__u32 one = 1;

	if (!mesh_sockmap_supported || !mesh_sockmap_enabled())
		return;
	if (mesh_sock_key_of_ops(skops, &key) || mesh_sock_key_remote_loopback(&key))
		return;
	/* Bytes already sent through TCP (a TCP Fast Open SYN) could be
	 * overtaken by spliced ones: leave such a connection alone. */
	if (skops->data_segs_out)
		return;
	if (bpf_sock_hash_update(skops, &mesh_sockhash, &key, BPF_NOEXIST))
		return;
	mesh_count(MESH_STAT_SOCKMAP_ADDED);
	bpf_map_update_elem(&mesh_sockmap_pending, &key, &one, BPF_ANY);
}

/* PASSIVE_ESTABLISHED of any socket in the subtree: joins only when its
 * client is a steered socket on this node (see the top of this file). */
static __always_inline void mesh_sockmap_passive(struct bpf_sock_ops *skops)
{
	struct mesh_sock_key key, client;

	if (!mesh_sockmap_supported || !mesh_sockmap_enabled())
		return;
	if (mesh_sock_key_of_ops(skops, &key))
		return;
	mesh_sock_key_reverse(&key, &client);
	if (!bpf_map_lookup_elem(&mesh_sockmap_pending, &client))
		return;
	bpf_map_delete_elem(&mesh_sockmap_pending, &client);
	if (bpf_sock_hash_update(skops, &mesh_sockhash, &key, BPF_NOEXIST))
		return;
	mesh_count(MESH_STAT_SOCKMAP_ADDED);
}

#endif /* MESH_SOCKMAP_BPF_H */
