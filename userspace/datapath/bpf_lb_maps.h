// LbMapWriter over the real kernel maps (the mesh object's mesh_services,
// mesh_slots, mesh_backends, mesh_backend_state, mesh_maglev, mesh_stats).
// Writes go in batches (BPF_MAP_UPDATE_BATCH / BPF_MAP_DELETE_BATCH). The map
// fds are borrowed from the Datapath that owns them and must outlive this.
#pragma once

#include <cstdint>

#include "datapath/map_writer.h"

namespace meshd::datapath {

// File descriptors and sizes of the maps BpfLbMaps writes.
struct LbMapFds {
  int services = -1;
  int slots = -1;
  int backends = -1;
  int backend_state = -1;
  int maglev = -1;       // HASH_OF_MAPS: svc_id -> inner ARRAY of backend ids
  int stats = -1;        // PERCPU_ARRAY indexed by enum mesh_stat
  int svc_state = -1;    // ARRAY svc_id -> mesh_svc_state
  int forget_prog = -1;  // mesh_backend_forget (BPF_PROG_TYPE_SYSCALL), run by deleteBackends
  uint32_t max_services = 0;
  uint32_t max_slots = 0;
  uint32_t max_backends = 0;
};

class BpfLbMaps : public LbMapWriter {
 public:
  explicit BpfLbMaps(const LbMapFds& fds) : fds_(fds) {}

  absl::StatusOr<LbMapContents> readAll() override;
  absl::Status updateBackends(absl::Span<const std::pair<uint32_t, mesh_backend>> batch) override;
  // Zeroes the mesh_backends entries, then runs mesh_backend_forget for each
  // id (see LbMapWriter::deleteBackends).
  absl::Status deleteBackends(absl::Span<const uint32_t> ids) override;
  absl::Status updateServices(absl::Span<const std::pair<mesh_svc_key, mesh_svc>> batch) override;
  absl::Status deleteServices(absl::Span<const mesh_svc_key> keys) override;
  absl::Status updateSlots(absl::Span<const std::pair<mesh_slot_key, mesh_slot>> batch) override;
  absl::Status deleteSlots(absl::Span<const mesh_slot_key> keys) override;
  // Builds a new inner ARRAY of table.size() entries (1..MESH_MAGLEV_MAX_SIZE,
  // else InvalidArgument), fills it, then swaps it into mesh_maglev with one
  // update: a connect sees the old table or the new one, never a mix. Write the
  // table before a mesh_svc whose maglev_size grows, or connects in between are
  // refused (MESH_STAT_MAGLEV_MISSING).
  absl::Status setMaglevTable(uint32_t svc_id, absl::Span<const uint32_t> table) override;
  absl::Status deleteMaglevTable(uint32_t svc_id) override;
  absl::StatusOr<mesh_backend_state> readBackendState(uint32_t backend_id) override;
  absl::StatusOr<mesh_svc_state> readServiceState(uint32_t svc_id) override;
  absl::Status resetBackendStates(absl::Span<const uint32_t> ids) override;
  absl::Status resetServiceStates(absl::Span<const uint32_t> ids) override;
  absl::StatusOr<std::vector<uint64_t>> readStats() override;
  uint32_t maxBackends() const override { return fds_.max_backends; }
  uint32_t maxServices() const override { return fds_.max_services; }
  uint32_t maxSlots() const override { return fds_.max_slots; }

  // Reads one Maglev table back (empty when the service has none).
  absl::StatusOr<std::vector<uint32_t>> readMaglevTable(uint32_t svc_id);

 private:
  absl::Status forgetBackend(uint32_t id);

  LbMapFds fds_;
};

}  // namespace meshd::datapath
