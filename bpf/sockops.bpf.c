/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sockops.bpf.c - connection state for sockets connect.bpf.c steered (and
 * reserved a live connection for, mesh_conn.bpf.h).
 *
 *   TCP_CONNECT_CB (SYN about to leave)  SYN_SENT; ask for STATE_CB, RTO_CB
 *                                        and RTT_CB
 *   ACTIVE_ESTABLISHED_CB                ESTABLISHED; the backend's failure
 *                                        run ends (mesh_outlier.bpf.h)
 *   RTT_CB (once per round trip)         SRTT into the backend's EWMA
 *   RTO_CB                               rto_events++; an RTO storm is a
 *                                        failure of the backend
 *   STATE_CB, new state TCP_CLOSE        release the reservation (if close()
 *                                        has not already); connect_failures++
 *                                        and a failure of the backend if the
 *                                        SYN left but it never ESTABLISHED
 *
 * Sockets sent to meshd's L7 listener (MESH_SOCK_F_L7) hold no reservation
 * and feed no backend signal; for them only:
 *
 *   ACTIVE_ESTABLISHED_CB                mesh_orig_dst[own addr, own port] =
 *                                        VIP:port (meshd takes it on accept)
 *
 *   PASSIVE_ESTABLISHED_CB (any socket)  sockmap: join mesh_sockhash when the
 *                                        client is steered and local
 *                                        (mesh_sockmap.bpf.h)
 *
 * Every path out of a connection ends in tcp_set_state(TCP_CLOSE) (FIN,
 * RST, connect failure, the owning process killed: the kernel closes its
 * sockets) or in close() (release.bpf.c), so a reservation cannot leak.
 */
#include "mesh_conn.bpf.h"
#include "mesh_outlier.bpf.h"
#include "mesh_sockmap.bpf.h"

static __always_inline void mesh_conn_closed(struct mesh_sock_state *st)
{
	__u32 id = st->backend_id;
	struct mesh_backend_state *bs;

	if ((st->flags & MESH_SOCK_F_SYN_SENT) && !(st->flags & MESH_SOCK_F_ESTABLISHED)) {
		bs = bpf_map_lookup_elem(&mesh_backend_state, &id);
		if (bs)
			__sync_fetch_and_add(&bs->connect_failures, 1);
		mesh_count(MESH_STAT_SOCK_CONNECT_FAILED);
		mesh_outlier_failure(st);
	}
	st->flags &= ~(MESH_SOCK_F_SYN_SENT | MESH_SOCK_F_ESTABLISHED);
	if (st->flags & MESH_SOCK_F_COUNTED)
		mesh_count(MESH_STAT_SOCK_CLOSED);
	mesh_release(st);
}

/*
 * Publishes the original destination of a socket connect.bpf.c sent to
 * meshd's listener, keyed by the socket's own address and port: the peer
 * address of meshd's accepted socket. The source port is only known now.
 *
 * Ordering: this runs while the client processes the SYN-ACK, before it
 * sends the ACK that completes the connection on meshd's side, so the entry
 * exists before accept() can return it (the argument of the sockmap pending
 * map, mesh_sockmap.bpf.h). BPF_ANY: a reused 4-tuple whose earlier entry
 * was never taken gets the newer destination.
 */
static __always_inline void mesh_orig_dst_record(struct bpf_sock_ops *skops,
						 const struct mesh_sock_state *st)
{
	struct mesh_orig_dst_key key;
	struct mesh_orig_dst val;
	struct mesh_sock_key own;

	if (mesh_sock_key_of_ops(skops, &own)) {
		mesh_count(MESH_STAT_ORIG_DST_FAILED);
		return;
	}
	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memset(&val, 0, sizeof(val));
	key.addr[0] = own.local[0];
	key.addr[1] = own.local[1];
	key.addr[2] = own.local[2];
	key.addr[3] = own.local[3];
	key.port = own.local_port;
	key.family = own.family;
	val.vip[0] = st->vip[0];
	val.vip[1] = st->vip[1];
	val.vip[2] = st->vip[2];
	val.vip[3] = st->vip[3];
	val.vip_port = st->vip_port;
	val.family = st->family;
	val.svc_id = st->svc_id;
	if (bpf_map_update_elem(&mesh_orig_dst, &key, &val, BPF_ANY)) {
		mesh_count(MESH_STAT_ORIG_DST_FAILED);
		return;
	}
	mesh_count(MESH_STAT_ORIG_DST_RECORDED);
}

/* A STRICT pass for this connect's SYN (MESH_SOCK_F_STRICT_PASS): its
 * 4-tuple into mesh_strict_pass before the SYN leaves (TCP_CONNECT_CB), out
 * again once established or closed. The tc program sees the SYN with the
 * client's address as source, which is the key's `local`. */
static __always_inline void mesh_strict_pass_add(struct bpf_sock_ops *skops)
{
	struct mesh_sock_key key;
	__u8 one = 1;

	if (mesh_sock_key_of_ops(skops, &key) ||
	    bpf_map_update_elem(&mesh_strict_pass, &key, &one, BPF_ANY))
		mesh_count(MESH_STAT_STRICT_PASS_FAILED);
}

static __always_inline void mesh_strict_pass_del(struct bpf_sock_ops *skops,
						 struct mesh_sock_state *st)
{
	struct mesh_sock_key key;

	if (!(st->flags & MESH_SOCK_F_STRICT_PASS))
		return;
	st->flags &= ~MESH_SOCK_F_STRICT_PASS;
	if (!mesh_sock_key_of_ops(skops, &key))
		bpf_map_delete_elem(&mesh_strict_pass, &key);
}

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *skops)
{
	struct mesh_sock_state *st;
	struct bpf_sock *sk;
	__u32 op = skops->op;
	__u32 srtt8;

	if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		mesh_sockmap_passive(skops);
		return 1;
	}
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB && op != BPF_SOCK_OPS_RTT_CB && op != BPF_SOCK_OPS_RTO_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	st = bpf_sk_storage_get(&mesh_sock, sk, 0, 0);
	if (!st || !(st->flags & MESH_SOCK_F_REWRITTEN))
		return 1;
	if (st->flags & MESH_SOCK_F_L7) {
		if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
			mesh_orig_dst_record(skops, st);
			mesh_sockmap_active(skops);
		}
		return 1;
	}

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		st->flags |= MESH_SOCK_F_SYN_SENT;
		st->flags &= ~MESH_SOCK_F_ESTABLISHED;
		if (st->flags & MESH_SOCK_F_STRICT_PASS)
			mesh_strict_pass_add(skops);
		/* RTT_CB from the start: the SYN-ACK is the first RTT sample,
		 * and for short connections often the only one. */
		bpf_sock_ops_cb_flags_set(
		    skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
			       BPF_SOCK_OPS_RTO_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		if ((st->flags & MESH_SOCK_F_SYN_SENT) && !(st->flags & MESH_SOCK_F_ESTABLISHED)) {
			st->flags |= MESH_SOCK_F_ESTABLISHED;
			mesh_count(MESH_STAT_SOCK_ESTABLISHED);
			mesh_outlier_success(st);
		}
		mesh_strict_pass_del(skops, st);
		mesh_sockmap_active(skops);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		/* The kernel calls this before it stores the new SRTT (8 x us):
		 * args[1] has the updated value (6.10+); skops->srtt_us is the
		 * previous one (0 before the first sample), used on older
		 * kernels, where args are 0. */
		srtt8 = skops->args[1];
		/* Separate loads: clang would otherwise select between the two
		 * field addresses, and the verifier rejects a computed ctx
		 * offset. */
		barrier_var(srtt8);
		if (!srtt8)
			srtt8 = skops->srtt_us;
		mesh_outlier_rtt(st, srtt8 >> 3);
		break;
	case BPF_SOCK_OPS_RTO_CB:
		mesh_outlier_rto(st, skops->args[0]);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		/* args[0] is the old state, args[1] the new one. */
		if (skops->args[1] == TCP_CLOSE) {
			mesh_strict_pass_del(skops, st);
			mesh_conn_closed(st);
		}
		break;
	}
	return 1;
}
