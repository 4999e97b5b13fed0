/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * mesh_lb.h - pure backend-selection arithmetic, shared by the BPF programs
 * and the C++ unit tests (tests/unit/lb_select_test.cc) so that the
 * distributions tested in userspace are the ones the kernel runs. No map
 * access and no helpers here: callers pass what they looked up.
 */
#ifndef MESH_LB_H
#define MESH_LB_H

#include "mesh_abi.h"

#ifdef __cplusplus
#define MESH_LB_INLINE inline
#else
#define MESH_LB_INLINE static __always_inline
#endif

/* Vose's alias method, second step: slot was drawn uniformly from
 * [0, slot_count); rnd is an independent uniform 32-bit number. */
MESH_LB_INLINE __u32 mesh_alias_pick(__u32 slot, __u32 rnd, __u32 alias_threshold, __u32 alias_slot)
{
	return rnd < alias_threshold ? slot : alias_slot;
}

/* Uniform index in [0, n) from a 32-bit random number (Lemire's multiply-shift:
 * no division, bias below 2^-32 * n). n must be > 0. */
MESH_LB_INLINE __u32 mesh_uniform(__u32 rnd, __u32 n)
{
	return (__u32)(((__u64)rnd * (__u64)n) >> 32);
}

/* Second candidate for power of two choices: uniform over the n-1 slots
 * other than `first`, so the two candidates always differ when n > 1 (with
 * replacement, two backends would pick the busier one a quarter of the time). */
MESH_LB_INLINE __u32 mesh_other_slot(__u32 first, __u32 rnd, __u32 n)
{
	if (n < 2)
		return first;
	return (first + 1 + mesh_uniform(rnd, n - 1)) % n;
}

/* Second candidate of power of two choices: the independent weighted draw
 * `second`, unless it repeats `first`, then a uniform draw among the others. */
MESH_LB_INLINE __u32 mesh_p2c_second(__u32 first, __u32 second, __u32 rnd, __u32 n)
{
	return second == first ? mesh_other_slot(first, rnd, n) : second;
}

/* splitmix64 finalizer: the hash Maglev uses on the client key. */
MESH_LB_INLINE __u64 mesh_hash64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* Maglev lookup position for a client key in a table of `size` entries. */
MESH_LB_INLINE __u32 mesh_maglev_index(__u64 client_key, __u32 size)
{
	return (__u32)(mesh_hash64(client_key) % size);
}

/* Power of two choices for least-connections: returns 1 when candidate a
 * should be taken over b. Candidates are drawn by weight (alias method), so
 * the comparison is on raw live counts; ties go to a. */
MESH_LB_INLINE int mesh_p2c_prefer_a(__s64 live_a, __s64 live_b) { return live_a <= live_b; }

/*
 * Connect-rate bucket as GCRA (the token bucket kept as one virtual time, so
 * one compare-and-swap updates it): a bucket of `burst` tokens refilling one
 * every interval_ns admits a connect at `now` when its theoretical arrival
 * time, advanced by one interval, is at most `burst` intervals ahead of now.
 * Returns the new arrival time to store, or 0 to refuse (state unchanged).
 * `now` is bpf_ktime_get_ns(), never 0 after boot.
 */
MESH_LB_INLINE __u64 mesh_gcra_admit(__u64 tat, __u64 now, __u64 interval_ns, __u32 burst)
{
	__u64 next = (tat > now ? tat : now) + interval_ns;

	return next - now > interval_ns * burst ? 0 : next;
}

/* Nanoseconds between two tokens of a bucket refilling per_sec a second (> 0). */
MESH_LB_INLINE __u64 mesh_gcra_interval(__u32 per_sec) { return 1000000000ULL / per_sec; }

/* ---- p2c-ewma (MESH_LB_P2C_EWMA) ------------------------------------------ */

/* Picks out of MESH_P2C_EWMA_EXPLORE that take the first (weighted) candidate
 * whatever its score: a backend that lost every comparison would get no
 * connection, hence no RTT sample, and its EWMA would stay stale forever. One
 * in 32 keeps every backend measured at a cost of 3% of picks ignoring
 * latency. */
#define MESH_P2C_EWMA_EXPLORE 32

/* Live counts are clamped to this before scoring: ewma (< 2^32) x (live + 1)
 * then fits in 64 bits. */
#define MESH_P2C_LIVE_CLAMP (1LL << 30)

/* Folds one SRTT sample (us) into a backend's EWMA with weight 1/8, the way
 * the kernel smooths its own SRTT. 0 means "no sample yet": the first sample
 * is taken as is. Never returns 0 for a sample (0 us is stored as 1). */
MESH_LB_INLINE __u32 mesh_ewma_fold(__u32 ewma, __u32 sample_us)
{
	if (sample_us == 0)
		sample_us = 1;
	if (ewma == 0)
		return sample_us;
	if (sample_us >= ewma)
		return ewma + (sample_us - ewma) / 8;
	ewma -= (ewma - sample_us) / 8;
	return ewma ? ewma : 1;
}

/* Score of a p2c-ewma candidate: its latency times its load. */
MESH_LB_INLINE __u64 mesh_p2c_ewma_score(__u32 ewma_us, __s64 live)
{
	if (live < 0)
		live = 0;
	if (live > MESH_P2C_LIVE_CLAMP)
		live = MESH_P2C_LIVE_CLAMP;
	return (__u64)ewma_us * (__u64)(live + 1);
}

/* Power of two choices over ewma x (live + 1): returns 1 when candidate a
 * should be taken over b. A candidate without an RTT sample yet (ewma 0) is
 * scored with the other's EWMA, so it competes on live connections alone
 * (neither attracting everything as "0 us" nor being starved); with no sample
 * on either side this is least-connections. `rnd` decides exploration (see
 * MESH_P2C_EWMA_EXPLORE). Ties go to a. */
MESH_LB_INLINE int mesh_p2c_ewma_prefer_a(__u32 ewma_a, __s64 live_a, __u32 ewma_b, __s64 live_b,
					  __u32 rnd)
{
	if (rnd % MESH_P2C_EWMA_EXPLORE == 0)
		return 1;
	if (ewma_a == 0)
		ewma_a = ewma_b;
	if (ewma_b == 0)
		ewma_b = ewma_a;
	if (ewma_a == 0)
		ewma_a = ewma_b = 1;
	return mesh_p2c_ewma_score(ewma_a, live_a) <= mesh_p2c_ewma_score(ewma_b, live_b);
}

/* ---- passive outlier detection ------------------------------------------- */

/* Backends of a service that may be ejected at once: max_percent of
 * slot_count rounded down, but at least one when max_percent > 0 (Envoy's
 * rule). max_percent 0 ejects nothing (failures are still counted, and each
 * ejection that would have happened counts as skipped). */
MESH_LB_INLINE __u32 mesh_eject_cap(__u32 max_percent, __u32 slot_count)
{
	__u64 cap;

	if (max_percent == 0)
		return 0;
	if (max_percent > 100)
		max_percent = 100;
	cap = (__u64)max_percent * slot_count / 100;
	return cap < 1 ? 1 : (__u32)cap;
}

/* How long the times_ejected-th ejection lasts, in ns: base x times_ejected,
 * at most max_ms (0 = no cap). times_ejected counts this ejection (>= 1). */
MESH_LB_INLINE __u64 mesh_eject_duration_ns(__u32 base_ms, __u32 max_ms, __u32 times_ejected)
{
	__u64 ms = (__u64)base_ms * (times_ejected ? times_ejected : 1);

	if (max_ms && ms > max_ms)
		ms = max_ms;
	return ms * 1000000ULL;
}

/* ejected_until_ns while a CPU is in the middle of ejecting a backend: it
 * counts as ejected and never expires (see mesh_outlier.bpf.h). */
#define MESH_EJECT_CLAIMED 0xffffffffffffffffULL

/* Whether a backend with this ejected_until_ns is out of service at `now`
 * (bpf_ktime_get_ns clock). 0 = not ejected. */
MESH_LB_INLINE int mesh_is_ejected(__u64 ejected_until_ns, __u64 now)
{
	return ejected_until_ns != 0 && now < ejected_until_ns;
}

#endif /* MESH_LB_H */
