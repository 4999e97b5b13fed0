// FakeLbMaps: an in-memory LbMapWriter for unit tests. It behaves like the
// kernel maps where the reconciler can tell (hash maps fill up, array ids are
// bounded, deleting an absent key succeeds, a failing batch may have applied a
// prefix), records every call, can fail a chosen call, and can check after every
// write that what a concurrent connect() would see is consistent.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "datapath/map_writer.h"
#include "mesh_abi.h"

namespace meshd::datapath::testing {

class FakeLbMaps : public LbMapWriter {
 public:
  enum class Op {
    kUpdateBackends,
    kDeleteBackends,
    kUpdateServices,
    kDeleteServices,
    kUpdateSlots,
    kDeleteSlots,
    kSetMaglev,
    kDeleteMaglev,
  };
  static const char* opName(Op op) {
    switch (op) {
      case Op::kUpdateBackends:
        return "updateBackends";
      case Op::kDeleteBackends:
        return "deleteBackends";
      case Op::kUpdateServices:
        return "updateServices";
      case Op::kDeleteServices:
        return "deleteServices";
      case Op::kUpdateSlots:
        return "updateSlots";
      case Op::kDeleteSlots:
        return "deleteSlots";
      case Op::kSetMaglev:
        return "setMaglevTable";
      case Op::kDeleteMaglev:
        return "deleteMaglevTable";
    }
    return "?";
  }

  // mesh_svc_key has no padding (4*4 + 2 + 1 + 1), so bytes compare as the key.
  static_assert(sizeof(mesh_svc_key) == 20);
  struct SvcKeyLess {
    bool operator()(const mesh_svc_key& a, const mesh_svc_key& b) const {
      return std::memcmp(&a, &b, sizeof(a)) < 0;
    }
  };
  struct SlotKeyLess {
    bool operator()(const mesh_slot_key& a, const mesh_slot_key& b) const {
      return a.svc_id != b.svc_id ? a.svc_id < b.svc_id : a.slot < b.slot;
    }
  };

  FakeLbMaps(uint32_t max_backends = 4096, uint32_t max_services = 1024, uint32_t max_slots = 8192)
      : max_backends_(max_backends), max_services_(max_services), max_slots_(max_slots) {}

  // --- failure injection -------------------------------------------------
  // The (skip_calls + 1)-th next call of `op` applies the first `applied_entries`
  // entries of its batch, then returns `status`. One-shot.
  void failOn(Op op, absl::Status status, size_t applied_entries = 0, int skip_calls = 0) {
    fail_ = Failure{op, std::move(status), applied_entries, skip_calls};
  }

  // --- consistency checking ----------------------------------------------
  // When on, after every entry of every write call checks what a connect() racing
  // with the update would see (see checkConsistency) and records violations.
  void setCheckConsistency(bool on) { check_ = on; }
  const std::vector<std::string>& violations() const { return violations_; }

  // Empty when every service's slots [0, slot_count) exist and point at active
  // backends of the service's protocol, their alias slots exist and point at active
  // backends, and every Maglev service with backends has a table of at least
  // maglev_size entries, all active backend ids.
  std::vector<std::string> checkConsistency() const {
    std::vector<std::string> out;
    for (const auto& [key, svc] : services_) {
      for (uint32_t i = 0; i < svc.slot_count; ++i) {
        auto slot = slots_.find(mesh_slot_key{svc.svc_id, i});
        if (slot == slots_.end()) {
          out.push_back(absl::StrCat("svc ", svc.svc_id, ": slot ", i, " missing"));
          continue;
        }
        auto b = backends_.find(slot->second.backend_id);
        if (b == backends_.end()) {
          out.push_back(absl::StrCat("svc ", svc.svc_id, ": slot ", i, " -> inactive backend ",
                                     slot->second.backend_id));
        } else if (b->second.proto != key.proto) {
          out.push_back(absl::StrCat("svc ", svc.svc_id, ": slot ", i, " protocol mismatch"));
        }
        // The kernel follows alias_slot without checking slot_count: the target
        // must exist and point at an active backend.
        auto alias = slots_.find(mesh_slot_key{svc.svc_id, slot->second.alias_slot});
        if (alias == slots_.end() || !backends_.contains(alias->second.backend_id)) {
          out.push_back(absl::StrCat("svc ", svc.svc_id, ": slot ", i, " aliases to ",
                                     slot->second.alias_slot, ", which is missing or inactive"));
        }
      }
      if (svc.algo == MESH_LB_MAGLEV && svc.slot_count > 0) {
        auto table = maglev_.find(svc.svc_id);
        // The kernel looks up index < maglev_size in the table.
        if (table == maglev_.end() || table->second.size() < svc.maglev_size) {
          out.push_back(absl::StrCat("svc ", svc.svc_id, ": Maglev table missing or smaller than ",
                                     svc.maglev_size));
          continue;
        }
        for (uint32_t id : table->second) {
          if (!backends_.contains(id)) {
            out.push_back(absl::StrCat("svc ", svc.svc_id, ": Maglev entry -> inactive ", id));
            break;
          }
        }
      }
    }
    return out;
  }

  // --- what was called ----------------------------------------------------
  struct OpCount {
    uint64_t calls = 0;
    uint64_t entries = 0;  // entries in the batches (a Maglev table counts as 1)
  };
  const OpCount& count(Op op) const { return counts_[static_cast<int>(op)]; }
  uint64_t totalCalls() const {
    uint64_t n = 0;
    for (const OpCount& c : counts_) n += c.calls;
    return n;
  }
  // Entries written plus deleted, as Reconciler::Stats::last_writes counts them.
  uint64_t totalEntries() const {
    uint64_t n = 0;
    for (const OpCount& c : counts_) n += c.entries;
    return n;
  }
  const std::vector<Op>& log() const { return log_; }
  void resetCounts() {
    for (OpCount& c : counts_) c = OpCount{};
    log_.clear();
  }

  // --- contents -----------------------------------------------------------
  const std::map<mesh_svc_key, mesh_svc, SvcKeyLess>& services() const { return services_; }
  const std::map<mesh_slot_key, mesh_slot, SlotKeyLess>& slots() const { return slots_; }
  const std::map<uint32_t, mesh_backend>& backends() const { return backends_; }
  const std::map<uint32_t, std::vector<uint32_t>>& maglev() const { return maglev_; }
  std::optional<mesh_svc> service(const mesh_svc_key& key) const {
    auto it = services_.find(key);
    return it == services_.end() ? std::nullopt : std::optional<mesh_svc>(it->second);
  }
  void setBackendState(uint32_t id, const mesh_backend_state& st) { counters_[id] = st; }
  void setServiceState(uint32_t id, const mesh_svc_state& st) { svc_counters_[id] = st; }
  // Writes straight into the maps, bypassing counts and checks (to fake leftovers).
  void rawSetService(const mesh_svc_key& k, const mesh_svc& v) { services_[k] = v; }
  void rawSetSlot(const mesh_slot_key& k, const mesh_slot& v) { slots_[k] = v; }
  void rawSetBackend(uint32_t id, const mesh_backend& v) { backends_[id] = v; }
  void rawSetMaglev(uint32_t svc_id, std::vector<uint32_t> t) { maglev_[svc_id] = std::move(t); }

  // --- LbMapWriter ----------------------------------------------------------
  absl::StatusOr<LbMapContents> readAll() override {
    LbMapContents c;
    c.services.assign(services_.begin(), services_.end());
    c.slots.assign(slots_.begin(), slots_.end());
    c.backends.assign(backends_.begin(), backends_.end());
    c.maglev = maglev_;
    return c;
  }

  absl::Status updateBackends(absl::Span<const std::pair<uint32_t, mesh_backend>> batch) override {
    return batchOp(Op::kUpdateBackends, batch, [&](const auto& e) -> absl::Status {
      if (e.first >= max_backends_) {
        return absl::InvalidArgumentError(
            absl::StrCat("mesh_backends: id ", e.first, " out of range ", max_backends_));
      }
      backends_[e.first] = e.second;
      return absl::OkStatus();
    });
  }
  absl::Status deleteBackends(absl::Span<const uint32_t> ids) override {
    return batchOp(Op::kDeleteBackends, ids, [&](uint32_t id) {
      backends_.erase(id);  // counters kept, as the kernel map writer does
      return absl::OkStatus();
    });
  }
  absl::Status updateServices(absl::Span<const std::pair<mesh_svc_key, mesh_svc>> batch) override {
    return batchOp(Op::kUpdateServices, batch, [&](const auto& e) -> absl::Status {
      if (!services_.contains(e.first) && services_.size() >= max_services_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("mesh_services is full (", max_services_, " entries)"));
      }
      services_[e.first] = e.second;
      return absl::OkStatus();
    });
  }
  absl::Status deleteServices(absl::Span<const mesh_svc_key> keys) override {
    return batchOp(Op::kDeleteServices, keys, [&](const mesh_svc_key& k) {
      services_.erase(k);
      return absl::OkStatus();
    });
  }
  absl::Status updateSlots(absl::Span<const std::pair<mesh_slot_key, mesh_slot>> batch) override {
    return batchOp(Op::kUpdateSlots, batch, [&](const auto& e) -> absl::Status {
      if (!slots_.contains(e.first) && slots_.size() >= max_slots_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("mesh_slots is full (", max_slots_, " entries)"));
      }
      slots_[e.first] = e.second;
      return absl::OkStatus();
    });
  }
  absl::Status deleteSlots(absl::Span<const mesh_slot_key> keys) override {
    return batchOp(Op::kDeleteSlots, keys, [&](const mesh_slot_key& k) {
      slots_.erase(k);
      return absl::OkStatus();
    });
  }
  absl::Status setMaglevTable(uint32_t svc_id, absl::Span<const uint32_t> table) override {
    const uint32_t one[] = {svc_id};
    return batchOp(Op::kSetMaglev, absl::Span<const uint32_t>(one), [&](uint32_t) -> absl::Status {
      if (table.empty() || table.size() > MESH_MAGLEV_MAX_SIZE) {
        return absl::InvalidArgumentError(absl::StrCat("bad Maglev table size ", table.size()));
      }
      if (!maglev_.contains(svc_id) && maglev_.size() >= max_services_) {
        return absl::ResourceExhaustedError("mesh_maglev is full");
      }
      maglev_[svc_id].assign(table.begin(), table.end());
      return absl::OkStatus();
    });
  }
  absl::Status deleteMaglevTable(uint32_t svc_id) override {
    const uint32_t one[] = {svc_id};
    return batchOp(Op::kDeleteMaglev, absl::Span<const uint32_t>(one), [&](uint32_t id) {
      maglev_.erase(id);
      return absl::OkStatus();
    });
  }

  absl::StatusOr<mesh_backend_state> readBackendState(uint32_t backend_id) override {
    if (backend_id >= max_backends_) {
      return absl::InvalidArgumentError(absl::StrCat("backend id ", backend_id, " out of range"));
    }
    auto it = counters_.find(backend_id);
    return it == counters_.end() ? mesh_backend_state{} : it->second;
  }
  absl::StatusOr<mesh_svc_state> readServiceState(uint32_t svc_id) override {
    if (svc_id >= max_services_) {
      return absl::InvalidArgumentError(absl::StrCat("svc id ", svc_id, " out of range"));
    }
    auto it = svc_counters_.find(svc_id);
    return it == svc_counters_.end() ? mesh_svc_state{} : it->second;
  }
  absl::Status resetBackendStates(absl::Span<const uint32_t> ids) override {
    for (uint32_t id : ids) {
      counters_.erase(id);
      reset_backend_states_.push_back(id);
    }
    return absl::OkStatus();
  }
  absl::Status resetServiceStates(absl::Span<const uint32_t> ids) override {
    for (uint32_t id : ids) {
      svc_counters_.erase(id);
      reset_service_states_.push_back(id);
    }
    return absl::OkStatus();
  }
  // Ids whose state resetBackendStates / resetServiceStates zeroed, in order.
  const std::vector<uint32_t>& resetBackendStateIds() const { return reset_backend_states_; }
  const std::vector<uint32_t>& resetServiceStateIds() const { return reset_service_states_; }
  absl::StatusOr<std::vector<uint64_t>> readStats() override {
    return std::vector<uint64_t>(MESH_STAT_MAX, 0);
  }

  uint32_t maxBackends() const override { return max_backends_; }
  uint32_t maxServices() const override { return max_services_; }
  uint32_t maxSlots() const override { return max_slots_; }

 private:
  struct Failure {
    Op op;
    absl::Status status;
    size_t applied_entries;
    int skip_calls;
  };

  template <typename T, typename F>
  absl::Status batchOp(Op op, absl::Span<const T> batch, F each) {
    OpCount& c = counts_[static_cast<int>(op)];
    c.calls++;
    log_.push_back(op);
    size_t limit = batch.size();
    std::optional<absl::Status> injected;
    if (fail_.has_value() && fail_->op == op && fail_->skip_calls-- == 0) {
      limit = std::min(limit, fail_->applied_entries);
      injected = std::move(fail_->status);
      fail_.reset();
    }
    absl::Status status = absl::OkStatus();
    size_t done = 0;
    // Kernel batch operations apply entry by entry, and a connect() may run
    // between any two: check after every entry, not just after the batch.
    for (; done < limit; ++done) {
      status = each(batch[done]);
      if (!status.ok()) break;
      if (check_) {
        for (std::string& v : checkConsistency()) {
          violations_.push_back(absl::StrCat("after entry ", done, " of ", opName(op), ": ", v));
        }
      }
    }
    c.entries += done;
    if (!status.ok()) return status;
    if (injected.has_value()) return *injected;
    return absl::OkStatus();
  }

  uint32_t max_backends_;
  uint32_t max_services_;
  uint32_t max_slots_;
  std::map<mesh_svc_key, mesh_svc, SvcKeyLess> services_;
  std::map<mesh_slot_key, mesh_slot, SlotKeyLess> slots_;
  std::map<uint32_t, mesh_backend> backends_;
  std::map<uint32_t, std::vector<uint32_t>> maglev_;
  std::map<uint32_t, mesh_backend_state> counters_;
  std::map<uint32_t, mesh_svc_state> svc_counters_;
  std::vector<uint32_t> reset_backend_states_;
  std::vector<uint32_t> reset_service_states_;
  std::optional<Failure> fail_;
  bool check_ = false;
  std::vector<std::string> violations_;
  OpCount counts_[8];
  std::vector<Op> log_;
};

}  // namespace meshd::datapath::testing
