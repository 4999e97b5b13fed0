// The kernel boundary of the reconciler: typed reads and batched writes of
// meshd's load-balancing maps. BpfLbMaps (bpf_lb_maps.h) talks to the real
// kernel; tests/unit use FakeLbMaps (tests/unit/fake_lb_maps.h).
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "mesh_abi.h"

namespace meshd::datapath {

// Everything meshd owns in the maps, as read back at start (adoption).
struct LbMapContents {
  std::vector<std::pair<mesh_svc_key, mesh_svc>> services;
  std::vector<std::pair<mesh_slot_key, mesh_slot>> slots;
  // Only entries with MESH_BACKEND_F_ACTIVE set.
  std::vector<std::pair<uint32_t, mesh_backend>> backends;
  std::map<uint32_t, std::vector<uint32_t>> maglev;  // svc_id -> table of backend ids
};

class LbMapWriter {
 public:
  virtual ~LbMapWriter() = default;

  // Reads every entry of mesh_services, mesh_slots, mesh_backends (active ones)
  // and mesh_maglev. Fails with the map name and errno on a kernel error.
  virtual absl::StatusOr<LbMapContents> readAll() = 0;

  // Each write call is one batch. Deleting a key that is absent is success.
  // Fails with ResourceExhausted when a map is full (naming the map and its size).
  virtual absl::Status updateBackends(
      absl::Span<const std::pair<uint32_t, mesh_backend>> batch) = 0;
  // Marks array entries inactive (zeroes them) and has the kernel reset their
  // mesh_backend_state except live_conns (mesh_backend_forget, atomically: an
  // ejection still held ends and its service's ejected count is given back;
  // failures, SRTT and the other counters start from 0 for the next backend
  // given the id). live_conns is left alone: connections still open to a
  // removed backend decrement it when they close, so zeroing it would drive
  // the count negative. The reconciler reuses an id only once its live count
  // is 0 (draining), and zeroes whatever is left then (resetBackendStates).
  virtual absl::Status deleteBackends(absl::Span<const uint32_t> ids) = 0;
  virtual absl::Status updateServices(
      absl::Span<const std::pair<mesh_svc_key, mesh_svc>> batch) = 0;
  virtual absl::Status deleteServices(absl::Span<const mesh_svc_key> keys) = 0;
  virtual absl::Status updateSlots(absl::Span<const std::pair<mesh_slot_key, mesh_slot>> batch) = 0;
  virtual absl::Status deleteSlots(absl::Span<const mesh_slot_key> keys) = 0;
  // Replaces the whole Maglev table of a service (creates the inner map if needed).
  virtual absl::Status setMaglevTable(uint32_t svc_id, absl::Span<const uint32_t> table) = 0;
  virtual absl::Status deleteMaglevTable(uint32_t svc_id) = 0;

  // Live counters the kernel keeps per backend (mesh_backend_state).
  virtual absl::StatusOr<mesh_backend_state> readBackendState(uint32_t backend_id) = 0;
  // Live connections and refusals the kernel keeps per service (mesh_svc_state).
  virtual absl::StatusOr<mesh_svc_state> readServiceState(uint32_t svc_id) = 0;
  // Zeroes the kernel state of ids about to be reused (no connection counts on
  // them any more): counters, ejection and RTT history of the previous owner.
  virtual absl::Status resetBackendStates(absl::Span<const uint32_t> ids) = 0;
  virtual absl::Status resetServiceStates(absl::Span<const uint32_t> ids) = 0;
  // mesh_stats summed over CPUs, indexed by enum mesh_stat.
  virtual absl::StatusOr<std::vector<uint64_t>> readStats() = 0;

  // Capacities (max_entries) so the reconciler can refuse an apply that cannot fit.
  virtual uint32_t maxBackends() const = 0;
  virtual uint32_t maxServices() const = 0;
  virtual uint32_t maxSlots() const = 0;
};

}  // namespace meshd::datapath
