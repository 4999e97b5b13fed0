/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * strict.bpf.c - PeerAuthentication STRICT in the kernel: tcx egress on the
 * host side of a workload's veth (packets on their way into the pod).
 *
 *   TCP SYN (no ACK) to (dst, dport)
 *     skb->mark has every bit of mesh_strict_mark   -> pass (sent by meshd)
 *     no mesh_strict entry for (dst, dport) / (dst, 0) -> pass
 *     4-tuple in mesh_strict_pass                   -> pass (authorized same-node connect)
 *     else                                          -> drop, counted per entry and node-wide
 *   first fragment of a fragmented TCP packet: judged like a SYN
 *   anything else (not TCP, not a SYN, non-first fragment) -> pass
 *
 * Only connection openings are judged: a connection exists only if its SYN
 * got through, and replies to the pod's own outbound connections (SYN-ACK,
 * data to an ephemeral port) are never mistaken for plaintext to a STRICT
 * port, which matters for the port-0 (whole address) entries. Connections
 * that were established before a port became STRICT are not cut.
 *
 * The mark cannot be forged by a pod: the kernel clears skb->mark when a
 * packet crosses network namespaces (veth, skb_scrub_packet), so only
 * sockets in the node's namespace (meshd's, with SO_MARK) reach this hook
 * with it. For the same reason a pod's connect cannot carry it here, hence
 * mesh_strict_pass for the connects the connect hook authorized.
 *
 * Fragments: Linux never fragments a SYN it sends. The first fragment of a
 * fragmented TCP packet (offset 0, more fragments) is judged as if it were
 * a SYN, by its ports alone (they are in it: offsets are multiples of 8
 * bytes): the flags byte may sit in a later fragment, so a split SYN would
 * otherwise slip through. Non-first fragments pass: without their first
 * fragment they cannot be reassembled, and Linux discards overlapping
 * fragments, so a later one cannot rewrite the ports. IPv6: up to
 * MESH_STRICT_V6_EXT extension headers are walked; a longer chain is dropped
 * (counted as strict_unparsed: such a packet cannot be shown not to be a
 * SYN).
 */
#include "mesh_maps.bpf.h"

#define MESH_ETH_HLEN 14
#define MESH_ETH_P_IP 0x0800
#define MESH_ETH_P_IPV6 0x86DD
#define MESH_IPPROTO_HOPOPTS 0
#define MESH_IPPROTO_ROUTING 43
#define MESH_IPPROTO_FRAGMENT 44
#define MESH_IPPROTO_AH 51
#define MESH_IPPROTO_DSTOPTS 60
#define MESH_TCP_FLAG_SYN 0x02
#define MESH_TCP_FLAG_ACK 0x10

/* IPv6 extension headers walked before giving up (fail closed). */
#define MESH_STRICT_V6_EXT 6

/* tcx verdicts (enum tcx_action_base): NEXT lets the next program of the
 * chain (another CNI's) decide, DROP ends it. */
#define MESH_TCX_NEXT -1
#define MESH_TCX_DROP 2

/* Where the TCP header starts, or 0 when the packet is not (the first
 * fragment of) TCP. -1: an IPv6 header chain too long to walk. Fills the
 * addresses and family of *flow (the client's view: local = source); *first_frag
 * is set for the first fragment of a fragmented packet. */
static __always_inline int mesh_strict_l4(struct __sk_buff *skb, struct mesh_sock_key *flow,
					  int *first_frag)
{
	__u32 off = MESH_ETH_HLEN;
	__u8 next, hdr[8];
	int i;

	if (skb->protocol == bpf_htons(MESH_ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return 0;
		if (ip.protocol != MESH_PROTO_TCP || (ip.frag_off & bpf_htons(0x1fff)))
			return 0;
		*first_frag = (ip.frag_off & bpf_htons(0x2000)) != 0; /* MF */
		flow->family = MESH_AF_INET;
		flow->local[0] = ip.saddr;
		flow->remote[0] = ip.daddr;
		return off + ip.ihl * 4;
	}
	if (skb->protocol != bpf_htons(MESH_ETH_P_IPV6))
		return 0;
	{
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
			return 0;
		flow->family = MESH_AF_INET6;
		__builtin_memcpy(flow->local, &ip6.saddr, 16);
		__builtin_memcpy(flow->remote, &ip6.daddr, 16);
		next = ip6.nexthdr;
		off += sizeof(ip6);
	}
	for (i = 0; i < MESH_STRICT_V6_EXT; i++) {
		if (next == MESH_PROTO_TCP)
			return off;
		if (next != MESH_IPPROTO_HOPOPTS && next != MESH_IPPROTO_ROUTING &&
		    next != MESH_IPPROTO_DSTOPTS && next != MESH_IPPROTO_FRAGMENT &&
		    next != MESH_IPPROTO_AH)
			return 0; /* UDP, ICMPv6, no next header, ...: not TCP */
		if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)))
			return 0;
		if (next == MESH_IPPROTO_FRAGMENT) {
			/* Offset in 8-byte units, upper 13 bits of bytes 2-3. */
			if (((hdr[2] << 8) | hdr[3]) & 0xfff8)
				return 0;
			*first_frag = hdr[3] & 1; /* M */
			off += 8;
		} else if (next == MESH_IPPROTO_AH) {
			off += (hdr[1] + 2) * 4;
		} else {
			off += (hdr[1] + 1) * 8;
		}
		next = hdr[0];
	}
	return next == MESH_PROTO_TCP ? (int)off : -1;
}

SEC("tc")
int mesh_strict_egress(struct __sk_buff *skb)
{
	struct mesh_strict_key key;
	struct mesh_sock_key flow;
	__u8 ports[4], flags;
	int off, first_frag = 0;
	__u64 *drops;

	if ((skb->mark & mesh_strict_mark) == mesh_strict_mark)
		return MESH_TCX_NEXT;
	__builtin_memset(&flow, 0, sizeof(flow));
	off = mesh_strict_l4(skb, &flow, &first_frag);
	if (off == 0)
		return MESH_TCX_NEXT;
	if (off < 0) {
		mesh_count(MESH_STAT_STRICT_UNPARSED);
		return MESH_TCX_DROP;
	}
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return MESH_TCX_NEXT;
	if (!first_frag) {
		if (bpf_skb_load_bytes(skb, off + 13, &flags, 1))
			return MESH_TCX_NEXT; /* truncated: the stack drops it */
		if ((flags & (MESH_TCP_FLAG_SYN | MESH_TCP_FLAG_ACK)) != MESH_TCP_FLAG_SYN)
			return MESH_TCX_NEXT;
	}

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.addr, flow.remote, sizeof(key.addr));
	key.family = flow.family;
	__builtin_memcpy(&key.port, &ports[2], 2);
	drops = bpf_map_lookup_elem(&mesh_strict, &key);
	if (!drops) {
		key.port = 0;
		drops = bpf_map_lookup_elem(&mesh_strict, &key);
		if (!drops)
			return MESH_TCX_NEXT;
	}
	__builtin_memcpy(&flow.local_port, &ports[0], 2);
	__builtin_memcpy(&flow.remote_port, &ports[2], 2);
	if (bpf_map_lookup_elem(&mesh_strict_pass, &flow)) {
		mesh_count(MESH_STAT_STRICT_FAST_PASS);
		return MESH_TCX_NEXT;
	}
	(*drops)++;
	mesh_count(MESH_STAT_STRICT_DROPPED);
	return MESH_TCX_DROP;
}
