/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_abi.h - the one definition of every BPF map key, map value, event
 * and enum that the kernel programs (bpf/<attach point>.bpf.c) and meshd
 * (userspace/datapath) share. Nothing here is mirrored by hand anywhere
 * else: C++ includes this file, and tests/unit/abi_btf_test.cc checks the
 * compiled BPF object's BTF against the sizes and offsets C++ sees.
 *
 * Byte order: every address and port field is NETWORK byte order (as the
 * kernel hands them in struct bpf_sock_addr / bpf_sock_ops). Everything
 * else (ids, counts, weights, flags) is HOST byte order.
 *
 * IPv4 addresses sit in addr[0] with addr[1..3] zero; IPv6 uses all four.
 */
#ifndef MESH_ABI_H
#define MESH_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define MESH_ABI_VERSION 1

/* Address families, same values as AF_INET / AF_INET6 (not available to BPF
 * through vmlinux.h, which has no #defines). */
#define MESH_AF_INET 2
#define MESH_AF_INET6 10

/* IP protocol numbers, as IPPROTO_TCP / IPPROTO_UDP. */
#define MESH_PROTO_TCP 6
#define MESH_PROTO_UDP 17

/* Largest Maglev table a service may ask for (a prime). Bounds the inner
 * array maps of mesh_maglev. */
#define MESH_MAGLEV_MAX_SIZE 131071
#define MESH_MAGLEV_DEFAULT_SIZE 16381

/* Load-balancing algorithm of a service (mesh_svc.algo). */
enum mesh_lb_algo {
	MESH_LB_RANDOM = 0,	     /* uniform over slots, weights ignored */
	MESH_LB_WEIGHTED_RANDOM = 1, /* alias method over slot weights */
	MESH_LB_MAGLEV = 2,	     /* consistent hash of the client (mesh_maglev table) */
	MESH_LB_LEAST_CONN = 3,	     /* power of two (weighted) choices over live conns */
	MESH_LB_P2C_EWMA = 4,	     /* power of two choices over srtt_ewma_us * (live + 1) */
	MESH_LB_ALGO_MAX,
};

/* mesh_svc.flags */
#define MESH_SVC_F_NONE 0
/* TCP connects go to meshd's L7 proxy (mesh_config.redirect_*), not to a
 * backend; without a redirect target of the VIP's family they take the L4
 * path (MESH_STAT_L7_NO_TARGET). UDP ignores it. */
#define MESH_SVC_F_L7 0x1

/* mesh_backend.flags */
#define MESH_BACKEND_F_ACTIVE 0x1 /* entry in use (array slots are never deleted) */

/* mesh_sock_state.flags */
#define MESH_SOCK_F_REWRITTEN 0x1 /* connect rewrote VIP -> backend (or meshd, F_L7) */
#define MESH_SOCK_F_COUNTED                                                                        \
	0x2			    /* holds a reservation in live_conns (backend and service):    \
				     * released once, at TCP_CLOSE or at close() (sock_release) */
#define MESH_SOCK_F_ESTABLISHED 0x4 /* sockops saw ACTIVE_ESTABLISHED for the counted connect */
#define MESH_SOCK_F_SYN_SENT                                                                       \
	0x8 /* sockops saw TCP_CONNECT_CB: a close before ESTABLISHED fails                        \
	     */
/* connect sent an L7 VIP to meshd's listener (set with REWRITTEN, never with
 * COUNTED: no backend, no limits, no outlier signals); sockops publishes
 * mesh_orig_dst at ACTIVE_ESTABLISHED. */
#define MESH_SOCK_F_L7 0x10
/* connect allowed this socket to a local workload whose mesh_authz_dst has
 * MESH_AUTHZ_F_STRICT_PASS: sockops publishes its 4-tuple in
 * mesh_strict_pass at TCP_CONNECT_CB (before the SYN leaves), so the STRICT
 * tc program lets the SYN through (mesh_strict.bpf.c). */
#define MESH_SOCK_F_STRICT_PASS 0x20

/* Frontend: a service VIP:port/proto. Map: mesh_services (HASH). */
struct mesh_svc_key {
	__u32 addr[4]; /* network order */
	__u16 port;    /* network order */
	__u8 proto;    /* MESH_PROTO_* */
	__u8 family;   /* MESH_AF_* */
};

struct mesh_svc {
	__u32 svc_id;	   /* key into mesh_slots / mesh_maglev / mesh_svc_state */
	__u32 slot_count;  /* backends in slots [0, slot_count) */
	__u32 maglev_size; /* table size when algo == MESH_LB_MAGLEV, else 0 */
	__u8 algo;	   /* enum mesh_lb_algo */
	__u8 flags;	   /* MESH_SVC_F_* */
	__u16 _pad;
	/* TCP connection limits, node-wide and exact (0 = unlimited): live
	 * connections through this service, and live connections on each of its
	 * backends (counted over every service that shares the backend). */
	__u32 max_conns;
	__u32 max_conns_per_backend;
	/* Connect-rate token buckets (TCP connects; 0 = unlimited): for the
	 * whole service, and for each client (cgroup id) of the service. A
	 * bucket holds up to *_burst tokens and refills *_per_sec a second. */
	__u32 rate_per_sec;
	__u32 rate_burst;
	__u32 client_rate_per_sec;
	__u32 client_rate_burst;
	/* Passive outlier detection (eject_consecutive 0 = off): a backend
	 * with eject_consecutive failed connects in a row is ejected for
	 * eject_base_ms x times ejected, at most eject_max_ms, unless
	 * eject_max_percent of the service's backends (at least one) are
	 * ejected already. */
	__u32 eject_consecutive;
	__u32 eject_base_ms;
	__u32 eject_max_ms;
	__u8 eject_max_percent; /* 0..100 */
	__u8 _pad2[3];
};

/* Per-service counters, written only by BPF (atomic adds).
 * Map: mesh_svc_state (ARRAY indexed by svc_id). */
struct mesh_svc_state {
	__s64 live_conns;	   /* TCP connections reserved through this service */
	__u64 refused_service;	   /* refused: max_conns reached */
	__u64 refused_backend;	   /* refused: every backend tried was at its limit */
	__u64 rerouted;		   /* a backend at its limit was skipped for another */
	__u64 refused_rate;	   /* refused: the service's connect-rate bucket was empty */
	__u64 refused_client_rate; /* refused: the client's connect-rate bucket was empty */
	__u64 refused_ejected;	   /* refused: every backend tried was ejected */
	__s64 ejected;		   /* backends ejected now that count against this service */
	__u64 ejections;	   /* ejections made (counted against this service) */
	__u64 ejections_skipped;   /* ejections not made: eject_max_percent reached */
	__u64 rate_tat_ns;	   /* service bucket, GCRA theoretical arrival time
				    * (bpf_ktime_get_ns clock); BPF-private */
	__u64 refused_authz;	   /* refused: L4 authorization denied (mesh_authz_l4) */
};

/* One backend slot of a service. Map: mesh_slots (HASH). */
struct mesh_slot_key {
	__u32 svc_id;
	__u32 slot;
};

/*
 * Vose's alias method: pick slot i uniformly, then keep it when
 * rnd32 < alias_threshold, else take alias_slot. alias_threshold is the
 * kept probability scaled to 2^32 and saturated at 0xffffffff.
 */
struct mesh_slot {
	__u32 backend_id; /* index into mesh_backends / mesh_backend_state */
	__u32 weight;	  /* 1..10000 */
	__u32 alias_threshold;
	__u32 alias_slot;
};

/* Backend address. Map: mesh_backends (ARRAY indexed by backend id). */
struct mesh_backend {
	__u32 addr[4]; /* network order */
	__u16 port;    /* network order */
	__u8 proto;    /* MESH_PROTO_* */
	__u8 family;   /* MESH_AF_* */
	__u32 flags;   /* MESH_BACKEND_F_* */
};

/* Per-backend counters, written only by BPF (atomic adds), read by meshd.
 * Map: mesh_backend_state (ARRAY indexed by backend id). */
struct mesh_backend_state {
	__s64 live_conns;	    /* TCP sockets counted at connect, not yet closed */
	__u64 total_conns;	    /* connects (TCP) / first sends (UDP) steered here */
	__u64 connect_failures;	    /* TCP connects that closed before ESTABLISHED */
	__u32 consecutive_failures; /* failed connects since the last success */
	__u32 times_ejected;	    /* ejections so far (multiplies the ejection time) */
	__u64 ejected_until_ns;	    /* bpf_ktime_get_ns() clock; 0 = not ejected */
	__u32 ejected_svc_id;	    /* service whose ejected count this ejection holds */
	__u32 srtt_ewma_us;	    /* EWMA (1/8) of the kernel's SRTT samples, us; 0 = none */
	__u64 rtt_samples;	    /* SRTT samples folded into srtt_ewma_us */
	__u64 rto_events;	    /* retransmission timeouts on connections to it */
};

/* A (service, backend) pair whose steered TCP connections are to be ended at
 * once (TrafficPolicy draining.terminateConnections). Map: mesh_drain (HASH,
 * value __u8), filled by meshd just before it runs the drain iterator. */
struct mesh_drain_key {
	__u32 svc_id;
	__u32 backend_id;
};

/* Per-client connect-rate bucket. Map: mesh_rate_client (LRU_HASH): idle
 * clients age out. */
struct mesh_rate_client_key {
	__u64 cgroup_id; /* bpf_get_current_cgroup_id() of the connecting task */
	__u32 svc_id;
	__u32 _pad;
};

struct mesh_rate_client {
	__u64 tat_ns; /* GCRA theoretical arrival time (bpf_ktime_get_ns clock) */
};

/* Per-socket state. Map: mesh_sock (SK_STORAGE), created at connect. */
struct mesh_sock_state {
	__u32 vip[4];	/* network order: what the app asked for */
	__u16 vip_port; /* network order */
	__u8 family;	/* MESH_AF_* of the VIP */
	__u8 flags;	/* MESH_SOCK_F_* */
	__u32 svc_id;
	__u32 backend_id; /* 0 for MESH_SOCK_F_L7 sockets (no backend chosen) */
};

/*
 * Original destination of a connection the connect hook sent to meshd's L7
 * listener (MESH_SVC_F_L7). Map: mesh_orig_dst (LRU_HASH), written by sockops
 * at the client's ACTIVE_ESTABLISHED, read and deleted by meshd on accept().
 * The key is the client socket's own address and port, which is the peer
 * address meshd's accepted socket sees (pods are not NATed on the way to
 * their node). v4-mapped IPv6 (::ffff:a.b.c.d) is folded into IPv4, so a
 * dual-stack listener and an AF_INET6 client agree with plain IPv4 ones.
 */
struct mesh_orig_dst_key {
	__u32 addr[4]; /* network order: the client's local address */
	__u16 port;    /* network order: the client's local port */
	__u8 family;   /* MESH_AF_* */
	__u8 _pad;
};

struct mesh_orig_dst {
	__u32 vip[4];	/* network order: what the app connect()ed to */
	__u16 vip_port; /* network order */
	__u8 family;	/* MESH_AF_* of the VIP (v4-mapped folded to IPv4) */
	__u8 _pad;
	__u32 svc_id; /* mesh_svc.svc_id at connect time */
};

/* UDP reverse translation for recvmsg. Map: mesh_udp_rev (LRU_HASH). */
struct mesh_udp_rev_key {
	__u64 cookie;  /* bpf_get_socket_cookie() of the client socket */
	__u32 addr[4]; /* backend address, network order */
	__u16 port;    /* backend port, network order */
	__u8 family;
	__u8 _pad;
	__u32 _pad2;
};

struct mesh_udp_rev {
	__u32 vip[4];	/* network order */
	__u16 vip_port; /* network order */
	__u8 family;
	__u8 _pad;
};

/* mesh_config.flags */
#define MESH_CONFIG_F_SOCKMAP 0x1 /* sockops adds local socket pairs to mesh_sockhash */

/* Runtime switches, written by meshd (switchable while programs run).
 * Map: mesh_config (ARRAY, one entry at key 0).
 *
 * redirect_*: meshd's L7 listener as pods reach it (the node address and
 * the outbound port, 15001 by default). Connects to a MESH_SVC_F_L7 service
 * go there. redirect_port 0 turns the redirect off; an address of all zeros
 * means no target of that family. Either way such a service then takes the
 * L4 path (MESH_STAT_L7_NO_TARGET). */
struct mesh_config {
	__u32 flags;	     /* MESH_CONFIG_F_* */
	__u16 redirect_port; /* network order; 0 = redirect off */
	__u16 _pad;
	__u32 redirect_ip4;    /* network order; 0 = no IPv4 target */
	__u32 redirect_ip6[4]; /* network order; :: = no IPv6 target */
};

/*
 * A TCP socket by its own view of its connection. Map: mesh_sockhash
 * (SOCKHASH) and mesh_sockmap_pending (LRU_HASH). The peer of a socket on
 * this node is found by the reversed key (local <-> remote). v4-mapped IPv6
 * (::ffff:a.b.c.d) is folded into IPv4, so an AF_INET6 client and an
 * AF_INET server of one connection still produce mirror-image keys.
 */
struct mesh_sock_key {
	__u32 local[4];	   /* network order */
	__u32 remote[4];   /* network order */
	__u16 local_port;  /* network order */
	__u16 remote_port; /* network order */
	__u8 family;	   /* MESH_AF_* */
	__u8 _pad[3];
};

/* Context of the mesh_backend_forget program (BPF_PROG_TYPE_SYSCALL, run by
 * meshd with BPF_PROG_TEST_RUN when it frees a backend id). */
struct mesh_backend_forget_ctx {
	__u32 backend_id;
};

/* Context of the mesh_backend_eject program (BPF_PROG_TYPE_SYSCALL, run by
 * meshd with BPF_PROG_TEST_RUN when its L7 outlier detection ejects an
 * endpoint): eject the backend addr:port (TCP) of the service `svc` for
 * duration_ms, exactly as sockops' mesh_outlier_eject does (same claim, same
 * cap on the service's ejected count). The program returns an enum
 * mesh_eject_result. */
struct mesh_backend_eject_ctx {
	struct mesh_svc_key svc; /* the Service frontend (VIP, port, TCP) */
	__u32 addr[4];		 /* backend address, network order */
	__u16 port;		 /* backend port, network order */
	__u8 family;		 /* MESH_AF_* */
	__u8 _pad;
	__u32 duration_ms;
};

enum mesh_eject_result {
	MESH_EJECT_DONE = 0,   /* ejected now */
	MESH_EJECT_ALREADY,    /* ejected already (or being ejected on another CPU) */
	MESH_EJECT_SKIPPED,    /* not ejected: the service is at eject_max_percent */
	MESH_EJECT_NO_SERVICE, /* no such service (or no state for it) */
	MESH_EJECT_NO_BACKEND, /* the address is not a backend of the service */
};

/* ---- STRICT mTLS and L4 authorization (docs/design/0004-identity-mtls.md) ----
 *
 * STRICT: mesh_strict.bpf.c runs at tcx egress of the host side of a
 * workload's veth (packets towards the pod). A TCP SYN (SYN without ACK) to
 * an (address, port) in mesh_strict, or to an address whose port-0 entry is
 * there, is dropped unless its skb->mark holds every bit of the STRICT mark
 * (meshd's own sockets set it with SO_MARK; marks are scrubbed when a packet
 * crosses network namespaces, so a pod cannot forge it) or its 4-tuple is in
 * mesh_strict_pass (a same-node connect the connect hook authorized).
 *
 * MESH_STRICT_MARK_DEFAULT: bit 12. Not used by kube-proxy (0x4000 masquerade,
 * 0x8000 drop), Calico (0xffff0000 by default), Cilium (0x0f00 magic, upper 16
 * bits identity), AWS VPC CNI (0x80), Istio (0x539 = 1337, bits 0,3,4,5,8,10)
 * nor Flannel (0x4000/0x8000). Configurable (DatapathConfig.strict_mark). */
#define MESH_STRICT_MARK_DEFAULT 0x00001000U

/* Map: mesh_strict (PERCPU_HASH): key -> __u64 SYNs dropped for this entry. */
struct mesh_strict_key {
	__u32 addr[4]; /* network order: a local workload's address */
	__u16 port;    /* network order; 0 = every TCP port of addr */
	__u8 family;   /* MESH_AF_* */
	__u8 _pad;
};

/* L4 authorization at connect() for same-node pairs (connect.bpf.c). */
enum mesh_authz_verdict {
	MESH_AUTHZ_DENY = 0,
	MESH_AUTHZ_ALLOW = 1,
};

/* mesh_authz_dst.flags */
/* Authorization policy applies: mesh_authz_l4[(client identity, addr, port)],
 * else default_verdict. Without it the destination is allowed. */
#define MESH_AUTHZ_F_GOVERNED 0x1
/* The workload has STRICT ports: an allowed connect gets a STRICT pass
 * (MESH_SOCK_F_STRICT_PASS). Every local STRICT workload that is a backend of
 * a service needs an entry with this flag, governed or not. */
#define MESH_AUTHZ_F_STRICT_PASS 0x2

/* Map: mesh_authz_dst (HASH), local workload address -> policy. */
struct mesh_authz_dst_key {
	__u32 addr[4]; /* network order */
	__u8 family;   /* MESH_AF_* */
	__u8 _pad[3];
};

struct mesh_authz_dst {
	__u8 flags;	      /* MESH_AUTHZ_F_* */
	__u8 default_verdict; /* enum mesh_authz_verdict: no mesh_authz_l4 entry */
	__u16 _pad;
};

/* Map: mesh_authz_l4 (HASH) -> __u8 enum mesh_authz_verdict. The client's
 * identity is mesh_cg_identity[cgroup id] (HASH, __u64 -> __u32), 0 when its
 * cgroup has none. */
struct mesh_authz_l4_key {
	__u32 src_id;  /* identity id of the connecting workload; 0 = unknown */
	__u32 addr[4]; /* network order: the backend's address */
	__u16 port;    /* network order: the backend's port */
	__u8 family;   /* MESH_AF_* */
	__u8 _pad;
};

/* Counters by reason. Map: mesh_stats (PERCPU_ARRAY indexed by enum). */
enum mesh_stat {
	MESH_STAT_CONNECT_REWRITTEN = 0, /* connect to a VIP rewritten to a backend */
	MESH_STAT_NO_BACKEND,		 /* VIP known, no backend: refused (ECONNREFUSED) */
	MESH_STAT_BACKEND_MISSING,	 /* slot pointed at an inactive backend */
	MESH_STAT_SENDMSG_REWRITTEN,	 /* UDP sendmsg to a VIP rewritten */
	MESH_STAT_RECVMSG_REWRITTEN,	 /* UDP recvmsg source restored to the VIP */
	MESH_STAT_PEERNAME_REWRITTEN,	 /* getpeername answered with the VIP */
	MESH_STAT_SOCK_ESTABLISHED,	 /* sockops: counted connection established */
	MESH_STAT_SOCK_CLOSED,		 /* sockops: counted connection closed */
	MESH_STAT_SOCK_CONNECT_FAILED,	 /* sockops: closed before ESTABLISHED */
	MESH_STAT_STORAGE_FAILED,	 /* bpf_sk_storage_get could not allocate */
	MESH_STAT_FAMILY_MISMATCH,	 /* backend family differs from the hook's: refused */
	MESH_STAT_MAGLEV_MISSING,	 /* Maglev service without a (full) table: refused */
	MESH_STAT_LIMIT_SERVICE,	 /* service at max_conns: refused (ECONNREFUSED) */
	MESH_STAT_LIMIT_BACKEND,	 /* every backend tried at its limit: refused */
	MESH_STAT_LIMIT_REROUTED,	 /* a backend at its limit was skipped for another */
	MESH_STAT_RELEASED_AT_CLOSE,	 /* reservation released by close() before TCP_CLOSE */
	MESH_STAT_RATE_SERVICE,		 /* service connect-rate bucket empty: refused */
	MESH_STAT_RATE_CLIENT,		 /* client connect-rate bucket empty: refused */
	MESH_STAT_ALL_EJECTED,		 /* every backend tried ejected: refused */
	MESH_STAT_EJECTED_SKIPPED,	 /* an ejected backend was skipped for another */
	MESH_STAT_EJECTION,		 /* a backend was ejected */
	MESH_STAT_EJECTION_OVER_PERCENT, /* an ejection was not made: eject_max_percent */
	MESH_STAT_EJECTION_EXPIRED,	 /* an ejected backend returned */
	MESH_STAT_RTO,			 /* retransmission timeout on a counted connection */
	MESH_STAT_SOCKMAP_ADDED,	 /* a local socket joined mesh_sockhash */
	MESH_STAT_SOCKMAP_REDIRECTED,	 /* sk_msg: a message spliced to the local peer */
	MESH_STAT_SOCKMAP_BYTES,	 /* sk_msg: bytes spliced to the local peer */
	MESH_STAT_SOCKMAP_NO_PEER,	 /* sk_msg: normal path (no local peer, or ordering) */
	MESH_STAT_DRAIN_DESTROYED,	 /* socket of a removed backend destroyed (hard cut) */
	MESH_STAT_L7_REDIRECTED,	 /* connect to an L7 VIP sent to meshd's listener */
	MESH_STAT_L7_NO_TARGET,		 /* L7 VIP, no redirect target of its family: L4 path */
	MESH_STAT_ORIG_DST_RECORDED,	 /* sockops: mesh_orig_dst written at ESTABLISHED */
	MESH_STAT_ORIG_DST_FAILED,	 /* sockops: mesh_orig_dst could not be written */
	MESH_STAT_AUTHZ_DENIED,		 /* L4 authorization denied: refused (ECONNREFUSED) */
	MESH_STAT_AUTHZ_SKIPPED,      /* a backend the client may not reach was not rerouted to */
	MESH_STAT_STRICT_DROPPED,     /* tc: plaintext SYN to a STRICT port dropped */
	MESH_STAT_STRICT_UNPARSED,    /* tc: IPv6 header chain too long to read: dropped */
	MESH_STAT_STRICT_FAST_PASS,   /* tc: SYN of an authorized same-node connect passed */
	MESH_STAT_STRICT_PASS_FAILED, /* sockops: mesh_strict_pass could not be written */
	MESH_STAT_MAX,
};

#endif /* MESH_ABI_H */
