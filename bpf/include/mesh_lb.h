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

#endif /* MESH_LB_H */
