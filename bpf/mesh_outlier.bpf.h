/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_outlier.bpf.h - passive outlier detection and the RTT EWMA of
 * p2c-ewma, per backend id (mesh_backend_state), shared by connect (skip
 * and expire ejected backends) and sockops (count failures, eject, sample
 * RTT). The arithmetic is in mesh_lb.h.
 *
 *   sockops                                   mesh_backend_state[id]
 *   connect closed before ESTABLISHED  --+
 *   (SYN timeout, RST in SYN_SENT)       +-> consecutive_failures++ --> at
 *   RTO storm on an established conn   --+   svc.eject_consecutive: eject
 *   ACTIVE_ESTABLISHED                   ---> consecutive_failures = 0
 *   RTT_CB (the connection's SRTT)       ---> srtt_ewma_us (EWMA 1/8)
 *
 *   connect()  ejected_until_ns > now: skipped like a full backend;
 *              0 < ejected_until_ns <= now: expired, cleared here (lazily)
 *
 * Ejection state machine of ejected_until_ns (every transition is a
 * compare-and-swap, so concurrent CPUs agree on who did what):
 *
 *   0 --claim--> MESH_EJECT_CLAIMED --(count fits the cap)--> now + duration
 *                        |                                          |
 *                        +--(service at eject_max_percent)--> 0     |
 *   0 <---------------- expire (first connect at or after it) ------+
 *
 * The ejection counts against the service of the connection that failed
 * last (ejected_svc_id); that service's mesh_svc_state.ejected is adjusted
 * with add-then-check (as mesh_reserve_one), so no more than its cap are
 * ever ejected at once, on any number of CPUs.
 */
#ifndef MESH_OUTLIER_BPF_H
#define MESH_OUTLIER_BPF_H

#include "mesh_maps.bpf.h"

#include "mesh_lb.h"

/* RTO_CB fires once per retransmission timeout with args[0] = retransmits
 * of the same data so far (reset by any ACK progress). The third timeout in
 * a row on an established connection is an "RTO storm": one failure, counted
 * once per stall. */
#define MESH_RTO_STORM 3

/* Whether the backend with state `bs` is ejected now. An ejection whose time
 * has passed is cleared here (compare-and-swap: one CPU wins, and only the
 * winner gives the service its count back and counts the return). */
static __always_inline int mesh_outlier_ejected(struct mesh_backend_state *bs, __u64 now)
{
	__u64 until = bs->ejected_until_ns;
	struct mesh_svc_state *ss;
	__u32 svc_id;

	if (until == 0)
		return 0;
	if (mesh_is_ejected(until, now))
		return 1;
	/* Read the holder before the swap: once ejected_until_ns is 0 a new
	 * ejection may rewrite ejected_svc_id. */
	svc_id = bs->ejected_svc_id;
	if (__sync_val_compare_and_swap(&bs->ejected_until_ns, until, 0) != until)
		return mesh_is_ejected(bs->ejected_until_ns, now);
	bs->consecutive_failures = 0;
	ss = bpf_map_lookup_elem(&mesh_svc_state, &svc_id);
	if (ss)
		__sync_fetch_and_add(&ss->ejected, -1);
	mesh_count(MESH_STAT_EJECTION_EXPIRED);
	return 0;
}

/* The service a steered socket went through, if its entry still has the same
 * id (the service may have been replaced since connect). */
static __always_inline struct mesh_svc *mesh_outlier_svc(const struct mesh_sock_state *st)
{
	struct mesh_svc_key key;
	struct mesh_svc *svc;

	__builtin_memset(&key, 0, sizeof(key));
	key.addr[0] = st->vip[0];
	key.addr[1] = st->vip[1];
	key.addr[2] = st->vip[2];
	key.addr[3] = st->vip[3];
	key.port = st->vip_port;
	key.proto = MESH_PROTO_TCP;
	key.family = st->family;
	svc = bpf_map_lookup_elem(&mesh_services, &key);
	if (!svc || svc->svc_id != st->svc_id)
		return NULL;
	return svc;
}

/* Bound on the slots mesh_outlier_expire_svc() looks at (as connect's
 * reroute scan). */
#define MESH_EXPIRE_SCAN 64

struct mesh_expire_scan {
	__u32 svc_id;
	__u32 cleared;
	__u64 now;
};

/* bpf_loop callback: slot i of the service. */
static long mesh_outlier_expire_slot(__u32 i, void *data)
{
	struct mesh_expire_scan *scan = data;
	struct mesh_slot_key sk = {.svc_id = scan->svc_id, .slot = i};
	struct mesh_backend_state *bs;
	struct mesh_slot *slot;
	__u32 id;

	slot = bpf_map_lookup_elem(&mesh_slots, &sk);
	if (!slot)
		return 0;
	id = slot->backend_id;
	bs = bpf_map_lookup_elem(&mesh_backend_state, &id);
	if (!bs || bs->ejected_until_ns == 0 || mesh_is_ejected(bs->ejected_until_ns, scan->now))
		return 0;
	if (!mesh_outlier_ejected(bs, scan->now))
		scan->cleared++;
	return 0;
}

/* Clears the ejections of `svc`'s backends whose time has passed and that no
 * connect has cleared yet (an idle service). Returns how many it cleared.
 * bpf_loop (5.17+): the verifier checks the body once, where an unrolled or
 * bounded loop in sockops, inlined at each failure site, exceeds its budget. */
static __always_inline __u32 mesh_outlier_expire_svc(const struct mesh_svc *svc, __u64 now)
{
	struct mesh_expire_scan scan = {.svc_id = svc->svc_id, .now = now};
	__u32 n = svc->slot_count < MESH_EXPIRE_SCAN ? svc->slot_count : MESH_EXPIRE_SCAN;

	bpf_loop(n, mesh_outlier_expire_slot, &scan, 0);
	return scan.cleared;
}

/* Adds one to the service's ejected count unless that exceeds cap.
 * Returns 1 when counted. */
static __always_inline int mesh_outlier_count_one(struct mesh_svc_state *ss, __u32 cap)
{
	if (__sync_fetch_and_add(&ss->ejected, 1) + 1 > (__s64)cap) {
		__sync_fetch_and_add(&ss->ejected, -1);
		return 0;
	}
	return 1;
}

/* Ejects the backend on behalf of `svc` unless it is ejected already or the
 * service is at its cap (counted as skipped). At the cap, ejections of the
 * service that ended without a connect noticing are cleared first. The
 * ejection lasts duration_ns, or with 0 the service's time for the backend's
 * next ejection (eject_base_ms x times ejected, at most eject_max_ms).
 * Returns an enum mesh_eject_result. */
static __always_inline int mesh_outlier_eject_for(struct mesh_backend_state *bs,
						  const struct mesh_svc *svc, __u64 now,
						  __u64 duration_ns)
{
	__u32 svc_id = svc->svc_id, cap, times;
	struct mesh_svc_state *ss;

	if (__sync_val_compare_and_swap(&bs->ejected_until_ns, 0, MESH_EJECT_CLAIMED) != 0)
		return MESH_EJECT_ALREADY; /* or being ejected by another CPU */
	ss = bpf_map_lookup_elem(&mesh_svc_state, &svc_id);
	if (!ss) {
		__sync_val_compare_and_swap(&bs->ejected_until_ns, MESH_EJECT_CLAIMED, 0);
		return MESH_EJECT_NO_SERVICE;
	}
	cap = mesh_eject_cap(svc->eject_max_percent, svc->slot_count);
	if (!mesh_outlier_count_one(ss, cap) &&
	    !(cap && mesh_outlier_expire_svc(svc, now) && mesh_outlier_count_one(ss, cap))) {
		__sync_val_compare_and_swap(&bs->ejected_until_ns, MESH_EJECT_CLAIMED, 0);
		__sync_fetch_and_add(&ss->ejections_skipped, 1);
		mesh_count(MESH_STAT_EJECTION_OVER_PERCENT);
		return MESH_EJECT_SKIPPED;
	}
	/* Only the CPU holding the claim writes these. */
	bs->ejected_svc_id = svc_id;
	times = bs->times_ejected + 1;
	bs->times_ejected = times;
	if (duration_ns == 0)
		duration_ns = mesh_eject_duration_ns(svc->eject_base_ms, svc->eject_max_ms, times);
	/* A full barrier: ejected_svc_id is visible before the time is. */
	__sync_val_compare_and_swap(&bs->ejected_until_ns, MESH_EJECT_CLAIMED, now + duration_ns);
	__sync_fetch_and_add(&ss->ejections, 1);
	mesh_count(MESH_STAT_EJECTION);
	return MESH_EJECT_DONE;
}

/* sockops' ejection: the service's time (mesh_outlier_eject_for). */
static __always_inline void mesh_outlier_eject(struct mesh_backend_state *bs,
					       const struct mesh_svc *svc, __u64 now)
{
	mesh_outlier_eject_for(bs, svc, now, 0);
}

/* One failure of a connection to st's backend: a connect that closed before
 * ESTABLISHED, or an RTO storm. Ejects at the service's threshold. */
static __always_inline void mesh_outlier_failure(const struct mesh_sock_state *st)
{
	__u32 id = st->backend_id, failures;
	struct mesh_backend_state *bs;
	const struct mesh_svc *svc;

	bs = bpf_map_lookup_elem(&mesh_backend_state, &id);
	if (!bs)
		return;
	/* A 32-bit fetch-add needs alu32 (-mcpu=v3), so add, then read: two
	 * CPUs failing at once may both see the sum, which only means both try
	 * the (compare-and-swap guarded) ejection. */
	__sync_fetch_and_add(&bs->consecutive_failures, 1);
	failures = bs->consecutive_failures;
	svc = mesh_outlier_svc(st);
	if (!svc || svc->eject_consecutive == 0 || failures < svc->eject_consecutive)
		return;
	mesh_outlier_eject(bs, svc, bpf_ktime_get_ns());
}

/* A connect to st's backend reached ESTABLISHED: the failure run ends. */
static __always_inline void mesh_outlier_success(const struct mesh_sock_state *st)
{
	__u32 id = st->backend_id;
	struct mesh_backend_state *bs = bpf_map_lookup_elem(&mesh_backend_state, &id);

	/* Only write when needed: every connect would otherwise dirty the
	 * backend's cache line on every CPU. */
	if (bs && bs->consecutive_failures != 0)
		bs->consecutive_failures = 0;
}

/* RTT_CB: folds the connection's SRTT into the backend's EWMA. Lock-free: two
 * CPUs folding at once may lose one sample, which only delays the average. */
static __always_inline void mesh_outlier_rtt(const struct mesh_sock_state *st, __u32 srtt_us)
{
	__u32 id = st->backend_id;
	struct mesh_backend_state *bs = bpf_map_lookup_elem(&mesh_backend_state, &id);

	if (!bs || srtt_us == 0) /* 0: no estimate yet (pre-6.10 first sample) */
		return;
	bs->srtt_ewma_us = mesh_ewma_fold(bs->srtt_ewma_us, srtt_us);
	__sync_fetch_and_add(&bs->rtt_samples, 1);
}

/* RTO_CB: counts the timeout; the MESH_RTO_STORM-th in a row on an
 * established connection is a failure. `retransmits` is args[0], the
 * timeouts before this one without progress. */
static __always_inline void mesh_outlier_rto(const struct mesh_sock_state *st, __u32 retransmits)
{
	__u32 id = st->backend_id;
	struct mesh_backend_state *bs = bpf_map_lookup_elem(&mesh_backend_state, &id);

	if (bs)
		__sync_fetch_and_add(&bs->rto_events, 1);
	mesh_count(MESH_STAT_RTO);
	/* SYN retransmits are not a storm: that connect fails or succeeds
	 * as a whole (counted at close or ESTABLISHED). */
	if ((st->flags & MESH_SOCK_F_ESTABLISHED) && retransmits + 1 == MESH_RTO_STORM)
		mesh_outlier_failure(st);
}

/* Resets the outlier state and counters of a backend id that meshd freed
 * (mesh_backend_forget, forget.bpf.c), so that a new backend given the id
 * starts clean: an ejection still held is ended and its service's count given
 * back. live_conns is left alone (connections still open to the removed
 * backend decrement it when they close). Returns 0, or 1 when another CPU is
 * in the middle of ejecting it (meshd retries). */
static __always_inline int mesh_outlier_forget(struct mesh_backend_state *bs)
{
	__u64 until = bs->ejected_until_ns;
	struct mesh_svc_state *ss;
	__u32 svc_id;

	if (until == MESH_EJECT_CLAIMED)
		return 1;
	if (until != 0) {
		svc_id = bs->ejected_svc_id;
		if (__sync_val_compare_and_swap(&bs->ejected_until_ns, until, 0) != until)
			return 1;
		ss = bpf_map_lookup_elem(&mesh_svc_state, &svc_id);
		if (ss)
			__sync_fetch_and_add(&ss->ejected, -1);
	}
	bs->consecutive_failures = 0;
	bs->times_ejected = 0;
	bs->ejected_svc_id = 0;
	bs->srtt_ewma_us = 0;
	__sync_lock_test_and_set(&bs->rtt_samples, 0);
	__sync_lock_test_and_set(&bs->rto_events, 0);
	__sync_lock_test_and_set(&bs->total_conns, 0);
	__sync_lock_test_and_set(&bs->connect_failures, 0);
	return 0;
}

#endif /* MESH_OUTLIER_BPF_H */
