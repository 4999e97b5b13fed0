// The reconciler: turns the state model's DesiredLbState into entries of the
// load-balancing maps (mesh_backends, mesh_slots, mesh_services, mesh_maglev),
// writing only what differs from what is already there, in batches, in an order
// that keeps every concurrent connect() consistent.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/net.h"
#include "datapath/maglev.h"
#include "datapath/map_writer.h"
#include "mesh_abi.h"
#include "state/lb_state.h"
#include "state/lb_state_sink.h"

namespace meshd::datapath {

// Not copyable. All methods are thread-safe (one internal lock); apply() is meant
// to be called by the state model's one updater, describe()/stats() by the API.
class Reconciler : public state::LbStateSink {
 public:
  explicit Reconciler(LbMapWriter& maps);
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // Reads the maps (maps.readAll()) and rebuilds backend/service ids and the
  // "current" picture from them, so that a restarted meshd adopts pinned state:
  // re-applying the same desired state afterwards writes nothing. Entries nothing
  // refers to (slots or Maglev tables of unknown services, duplicate backends) are
  // remembered and deleted by the next apply(). Fails with readAll()'s error, and
  // then leaves the previous picture in place.
  absl::Status adopt();

  // Diffs `desired` against the current picture and writes only the difference,
  // one batch per kind (one call per Maglev table), in this order: new backends;
  // new/changed slots (new indices first); new or growing Maglev tables; new/changed
  // service entries (slot_count, maglev_size); shrinking Maglev tables; then
  // deletions of services, surplus slots, Maglev tables and unused backends. A
  // connect() racing with the apply, even inside a batch, always finds the slots,
  // alias targets, table entries and backends its service entry points at.
  // Returns InvalidArgument (bad address, duplicate frontend, weight out of
  // 1..10000, Maglev size not a prime in [backends, MESH_MAGLEV_MAX_SIZE],
  // outlier detection percent over 100 or ejection times out of order) or
  // ResourceExhausted (the result, counting old and new entries that coexist
  // during the update, exceeds a map's capacity) before writing anything.
  // On a write error returns it, prefixed with what was being written; the maps
  // then hold a mix, and the next apply() (typically of the old state) first
  // re-reads them (adopt()) and so repairs whatever was half written.
  absl::Status apply(const state::DesiredLbState& desired) override;

  struct BackendView {
    uint32_t id;
    IpAddress address;
    uint16_t port;  // host order
    uint32_t weight;
    mesh_backend_state counters;  // live, from mesh_backend_state
    std::string node;             // "" after adoption, until the next apply
    std::string target;           // ditto
  };
  struct FrontendView {
    // The last applied frontend; after adoption (before the next apply) only what
    // the maps hold: vip, port, protocol, algorithm, Maglev size, backends.
    state::Frontend frontend;
    uint32_t svc_id;
    std::vector<BackendView> backends;  // in slot order
    mesh_svc_state counters;            // live, from mesh_svc_state
  };
  // Current state with live counters (one maps.readBackendState() per backend),
  // frontends sorted by (vip, port, protocol). Fails with the first read error.
  absl::StatusOr<std::vector<FrontendView>> describe();

  struct Stats {
    uint64_t applies;      // successful apply() calls
    uint64_t last_writes;  // entries written + deleted by the last successful apply
                           // (a Maglev table set or deleted counts as one)
    double last_seconds;   // wall time of the last successful apply
  };
  Stats stats() const;

  // Backend and service ids waiting for their live connections to close
  // before they may be reused (see draining_backend_ids_).
  size_t drainingBackends() const;
  // (svc_id, backend_id) pairs that applies since the last call took out of a
  // frontend with terminate_removed set: their open connections are to be
  // ended (Datapath::terminateConnections). Clears the list.
  std::vector<mesh_drain_key> takeTerminations();
  size_t drainingServices() const;

 private:
  // A backend is a unique (address, port, protocol), shared by all frontends using it.
  struct BackendKey {
    IpAddress address;
    uint16_t port = 0;  // host order
    uint8_t proto = 0;  // MESH_PROTO_*
    friend bool operator==(const BackendKey&, const BackendKey&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const BackendKey& k) {
      return H::combine(std::move(h), k.address, k.port, k.proto);
    }
  };
  struct BackendRec {
    uint32_t id = 0;
    uint32_t refs = 0;  // slots of current frontends that use it
  };
  struct FrontendKey {
    IpAddress vip;
    uint16_t port = 0;  // host order
    uint8_t proto = 0;  // MESH_PROTO_*
    friend bool operator==(const FrontendKey&, const FrontendKey&) = default;
    friend auto operator<=>(const FrontendKey&, const FrontendKey&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const FrontendKey& k) {
      return H::combine(std::move(h), k.vip, k.port, k.proto);
    }
  };
  // What the maps hold for one frontend.
  struct ServiceRec {
    mesh_svc svc{};
    // Index = slot number; backend_id 0 marks an index with no entry in mesh_slots.
    std::vector<mesh_slot> slots;
    // Table in mesh_maglev, if any (shared: an unchanged table is not copied per apply).
    std::shared_ptr<const std::vector<uint32_t>> maglev;
    // What built `maglev` (empty after adoption: the table is then rebuilt and compared).
    std::vector<MaglevBackend> maglev_inputs;
    // The desired frontend this was written from; nullopt after adoption.
    std::optional<state::Frontend> frontend;
    uint64_t seen = 0;  // apply generation that last wanted it
  };

  // Ids from 1 (0 = invalid), lowest free first, so they stay dense.
  class IdAllocator {
   public:
    // The `count` ids that take() would hand out next (ascending), without taking them.
    std::vector<uint32_t> peek(size_t count) const;
    void take(const std::vector<uint32_t>& ids);
    void release(uint32_t id);
    // Rebuilds from the ids in use (adoption): gaps below the largest become free.
    void reset(const std::set<uint32_t>& used);

   private:
    std::set<uint32_t> free_;
    uint32_t next_ = 1;
  };

  struct Plan;

  absl::Status adoptLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status applyLocked(const state::DesiredLbState& desired) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status buildPlan(const state::DesiredLbState& desired, Plan& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status writePlan(Plan& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ids for `count` new entries, lowest first, skipping ids whose kernel state
  // still counts live connections (freed while connections to it linger): those
  // go to *draining. Ids whose state holds a previous owner's counters go to
  // *reset as well.
  template <typename State>
  absl::StatusOr<std::vector<uint32_t>> freshIds(
      const IdAllocator& alloc, size_t count,
      const std::function<absl::StatusOr<State>(uint32_t)>& read, std::vector<uint32_t>* draining,
      std::vector<uint32_t>* reset) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives draining ids whose live count reached 0 back to their allocator.
  absl::Status releaseDrained() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void commitPlan(Plan& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  LbMapWriter& maps_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<BackendKey, BackendRec> backends_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, BackendKey> backend_keys_ ABSL_GUARDED_BY(mu_);  // id -> key
  absl::flat_hash_map<FrontendKey, ServiceRec> services_ ABSL_GUARDED_BY(mu_);
  IdAllocator backend_ids_ ABSL_GUARDED_BY(mu_);
  IdAllocator svc_ids_ ABSL_GUARDED_BY(mu_);
  uint64_t slot_entries_ ABSL_GUARDED_BY(mu_) = 0;  // entries in mesh_slots, orphans included
  // Found by adopt(), referenced by nothing: deleted by the next apply().
  std::vector<mesh_svc_key> orphan_services_ ABSL_GUARDED_BY(mu_);
  std::vector<mesh_slot_key> orphan_slots_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> orphan_maglev_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> orphan_backends_ ABSL_GUARDED_BY(mu_);
  // Ids taken out of use while connections counted on them were still open:
  // not reused until the kernel's live count for them is 0, so a new backend or
  // service never inherits a predecessor's connections (limits stay exact).
  std::set<uint32_t> draining_backend_ids_ ABSL_GUARDED_BY(mu_);
  std::set<uint32_t> draining_svc_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<mesh_drain_key> pending_terminations_ ABSL_GUARDED_BY(mu_);
  // Set when a write failed part-way: the picture may not match the maps.
  bool needs_resync_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  Stats stats_ ABSL_GUARDED_BY(mu_){};
};

}  // namespace meshd::datapath
