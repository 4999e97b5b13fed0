/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_rate.bpf.h - connect-rate buckets at connect(), per client workload
 * (the connecting task's cgroup, i.e. the pod) and per service.
 *
 *   client bucket  mesh_rate_client[(cgroup id, svc_id)]  (LRU: idle clients age out)
 *   service bucket mesh_svc_state[svc_id].rate_tat_ns
 *
 * Each bucket is one GCRA arrival time (mesh_lb.h) updated with a
 * compare-and-swap: no lock, and exact under concurrency (a lost race
 * re-reads and re-decides). The client bucket is checked first, so a client
 * refused by its own bucket takes nothing from the service's.
 */
#ifndef MESH_RATE_BPF_H
#define MESH_RATE_BPF_H

#include "mesh_maps.bpf.h"

#include "mesh_lb.h"

/* Compare-and-swap attempts before a connect is refused as over the rate: a
 * retry is needed only when another CPU took a token in between. */
#define MESH_RATE_CAS_TRIES 4

/* Takes one token from the bucket whose arrival time is *tat. Returns 1 when
 * taken. */
static __always_inline int mesh_bucket_take(__u64 *tat, __u32 per_sec, __u32 burst)
{
	__u64 interval = mesh_gcra_interval(per_sec), now = bpf_ktime_get_ns(), old, next;
	int i;

	for (i = 0; i < MESH_RATE_CAS_TRIES; i++) {
		old = *(volatile __u64 *)tat;
		next = mesh_gcra_admit(old, now, interval, burst);
		if (!next)
			return 0;
		if (__sync_val_compare_and_swap(tat, old, next) == old)
			return 1;
	}
	return 0;
}

/* The client's bucket for this service, created full on first use. NULL only
 * if the LRU map cannot hold it (then the client is not rate limited). */
static __always_inline struct mesh_rate_client *mesh_client_bucket(__u32 svc_id)
{
	struct mesh_rate_client_key key = {.cgroup_id = bpf_get_current_cgroup_id(),
					   .svc_id = svc_id};
	struct mesh_rate_client fresh = {}, *b;

	b = bpf_map_lookup_elem(&mesh_rate_client, &key);
	if (b)
		return b;
	bpf_map_update_elem(&mesh_rate_client, &key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&mesh_rate_client, &key);
}

/* TCP connect to svc: 0 when the connect-rate buckets admit it, else the
 * mesh_stat reason to refuse with (counted per service here). */
static __always_inline int mesh_rate_admit(const struct mesh_svc *svc)
{
	__u32 svc_id = svc->svc_id;
	struct mesh_rate_client *cb;
	struct mesh_svc_state *ss;

	if (!svc->client_rate_per_sec && !svc->rate_per_sec)
		return 0;
	ss = bpf_map_lookup_elem(&mesh_svc_state, &svc_id);
	if (!ss)
		return 0;
	if (svc->client_rate_per_sec) {
		cb = mesh_client_bucket(svc_id);
		if (cb && !mesh_bucket_take(&cb->tat_ns, svc->client_rate_per_sec,
					    svc->client_rate_burst)) {
			__sync_fetch_and_add(&ss->refused_client_rate, 1);
			return MESH_STAT_RATE_CLIENT;
		}
	}
	if (svc->rate_per_sec &&
	    !mesh_bucket_take(&ss->rate_tat_ns, svc->rate_per_sec, svc->rate_burst)) {
		__sync_fetch_and_add(&ss->refused_rate, 1);
		return MESH_STAT_RATE_SERVICE;
	}
	return 0;
}

#endif /* MESH_RATE_BPF_H */
