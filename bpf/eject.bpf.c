/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * eject.bpf.c - a BPF_PROG_TYPE_SYSCALL program meshd runs (BPF_PROG_TEST_RUN,
 * attached nowhere) when its L7 outlier detection ejects an endpoint
 * (consecutive 5xx / gateway errors seen by the proxy): the backend is
 * ejected in mesh_backend_state with the same claim, cap and atomics as
 * sockops' connect-failure ejections (mesh_outlier_eject_for), so connect()
 * skips it too and both detectors share one ejection state and one cap. A
 * map update from userspace could not do this race-free against sockops.
 *
 * The backend is found by address among the service's slots (the kernel's
 * own view at this moment, so no id meshd holds can be stale).
 */
#include "mesh_outlier.bpf.h"

/* Bound on the slots searched for the backend (bpf_loop: checked once by
 * the verifier; MESH_MAX_SLOTS_PER_SVC-sized services are rare). */
#define MESH_EJECT_FIND_MAX 65536

struct mesh_eject_find {
	__u32 svc_id;
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u32 backend_id; /* found; 0 = none */
};

static long mesh_eject_find_slot(__u32 i, void *data)
{
	struct mesh_eject_find *f = data;
	struct mesh_slot_key sk = {.svc_id = f->svc_id, .slot = i};
	const struct mesh_backend *be;
	struct mesh_slot *slot;
	__u32 id;

	slot = bpf_map_lookup_elem(&mesh_slots, &sk);
	if (!slot)
		return 0;
	id = slot->backend_id;
	be = bpf_map_lookup_elem(&mesh_backends, &id);
	if (!be || be->proto != MESH_PROTO_TCP || be->family != f->family || be->port != f->port ||
	    be->addr[0] != f->addr[0] || be->addr[1] != f->addr[1] || be->addr[2] != f->addr[2] ||
	    be->addr[3] != f->addr[3])
		return 0;
	f->backend_id = id;
	return 1; /* found: stop */
}

SEC("syscall")
int mesh_backend_eject(struct mesh_backend_eject_ctx *ctx)
{
	struct mesh_eject_find f = {};
	struct mesh_backend_state *bs;
	struct mesh_svc_key key = {};
	const struct mesh_svc *svc;
	__u32 n;

	key.addr[0] = ctx->svc.addr[0];
	key.addr[1] = ctx->svc.addr[1];
	key.addr[2] = ctx->svc.addr[2];
	key.addr[3] = ctx->svc.addr[3];
	key.port = ctx->svc.port;
	key.proto = ctx->svc.proto;
	key.family = ctx->svc.family;
	svc = bpf_map_lookup_elem(&mesh_services, &key);
	if (!svc)
		return MESH_EJECT_NO_SERVICE;
	f.svc_id = svc->svc_id;
	f.addr[0] = ctx->addr[0];
	f.addr[1] = ctx->addr[1];
	f.addr[2] = ctx->addr[2];
	f.addr[3] = ctx->addr[3];
	f.port = ctx->port;
	f.family = ctx->family;
	n = svc->slot_count < MESH_EJECT_FIND_MAX ? svc->slot_count : MESH_EJECT_FIND_MAX;
	bpf_loop(n, mesh_eject_find_slot, &f, 0);
	if (f.backend_id == 0)
		return MESH_EJECT_NO_BACKEND;
	bs = bpf_map_lookup_elem(&mesh_backend_state, &f.backend_id);
	if (!bs)
		return MESH_EJECT_NO_BACKEND;
	return mesh_outlier_eject_for(bs, svc, bpf_ktime_get_ns(),
				      (__u64)ctx->duration_ms * 1000000ULL);
}
