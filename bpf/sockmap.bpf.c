/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sockmap.bpf.c - sk_msg verdict on mesh_sockhash: a message sent on a
 * socket whose peer is a local socket in the map goes straight onto the
 * peer's receive queue (BPF_F_INGRESS), skipping TCP/IP, netfilter and the
 * veth pair. Which sockets are in the map: mesh_sockmap.bpf.h.
 *
 * Ordering: the receiver reads its spliced queue before its TCP receive
 * queue, so a spliced message must never overtake bytes the same sender put
 * into TCP. A socket that has sent even one byte through TCP (its peer was
 * not in the map yet, or was closed) therefore keeps the normal path for
 * the rest of its life: bytes_sent == 0 and write_seq == snd_nxt say no
 * byte was ever transmitted or queued. FIN and RST always take TCP; they
 * come after every spliced byte, which sits on the peer's queue already
 * when send() returns.
 *
 * O(1) per message: one hash lookup (the redirect), no allocation; counters
 * are per-CPU.
 */
#include "mesh_sockmap.bpf.h"

/* The key under which the peer of the sending socket is in mesh_sockhash.
 * sk_msg_md: local_port is host order, remote_port holds the network-order
 * port in its upper 16 bits (as in bpf_sock_ops). */
static __always_inline void mesh_peer_key_of_msg(struct sk_msg_md *msg, struct mesh_sock_key *peer)
{
	__builtin_memset(peer, 0, sizeof(*peer));
	if (msg->family == MESH_AF_INET) {
		peer->local[0] = msg->remote_ip4;
		peer->remote[0] = msg->local_ip4;
	} else {
		peer->local[0] = msg->remote_ip6[0];
		peer->local[1] = msg->remote_ip6[1];
		peer->local[2] = msg->remote_ip6[2];
		peer->local[3] = msg->remote_ip6[3];
		peer->remote[0] = msg->local_ip6[0];
		peer->remote[1] = msg->local_ip6[1];
		peer->remote[2] = msg->local_ip6[2];
		peer->remote[3] = msg->local_ip6[3];
	}
	peer->family = msg->family;
	peer->local_port = (__u16)(msg->remote_port >> 16);
	peer->remote_port = bpf_htons((__u16)msg->local_port);
	mesh_sock_key_fold(peer);
}

SEC("sk_msg")
int mesh_sk_msg(struct sk_msg_md *msg)
{
	struct mesh_sock_key peer;
	struct bpf_sock *sk = msg->sk;
	struct tcp_sock *tp;
	__u32 size = msg->size;

	if (!mesh_sockmap_supported || !sk)
		return SK_PASS;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || tp->bytes_sent || tp->write_seq != tp->snd_nxt) {
		mesh_count(MESH_STAT_SOCKMAP_NO_PEER);
		return SK_PASS;
	}
	mesh_peer_key_of_msg(msg, &peer);
	/* SK_DROP from the helper means no such peer (or it is closing): the
	 * message then takes the normal path, never the drop verdict. */
	if (bpf_msg_redirect_hash(msg, &mesh_sockhash, &peer, BPF_F_INGRESS) != SK_PASS) {
		mesh_count(MESH_STAT_SOCKMAP_NO_PEER);
		return SK_PASS;
	}
	mesh_count(MESH_STAT_SOCKMAP_REDIRECTED);
	mesh_count_add(MESH_STAT_SOCKMAP_BYTES, size);
	return SK_PASS;
}
