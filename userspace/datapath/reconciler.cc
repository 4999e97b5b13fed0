#include "datapath/reconciler.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"
#include "datapath/alias.h"

namespace meshd::datapath {
namespace {

constexpr uint32_t kMaxWeight = 10000;
// Beyond this, adoption does not turn gaps in the ids it finds into free ids:
// ids meshd hands out are dense, so only a corrupted map gets here, and walking
// billions of gaps would stall the restart.
constexpr uint32_t kMaxAdoptedGapId = 1u << 24;

bool sameSvc(const mesh_svc& a, const mesh_svc& b) {
  return a.svc_id == b.svc_id && a.slot_count == b.slot_count && a.maglev_size == b.maglev_size &&
         a.algo == b.algo && a.flags == b.flags && a.max_conns == b.max_conns &&
         a.max_conns_per_backend == b.max_conns_per_backend &&
         a.eject_consecutive == b.eject_consecutive && a.eject_base_ms == b.eject_base_ms &&
         a.eject_max_ms == b.eject_max_ms && a.eject_max_percent == b.eject_max_percent;
}

bool sameSlot(const mesh_slot& a, const mesh_slot& b) {
  return a.backend_id == b.backend_id && a.weight == b.weight &&
         a.alias_threshold == b.alias_threshold && a.alias_slot == b.alias_slot;
}

bool validFamily(int family) { return family == AF_INET || family == AF_INET6; }

const char* protoName(uint8_t proto) {
  switch (proto) {
    case MESH_PROTO_TCP:
      return "tcp";
    case MESH_PROTO_UDP:
      return "udp";
    default:
      return "?";
  }
}

// "10.0.0.1:80" or "[fd00::1]:80": also the Maglev key of a backend, so it must
// not change between versions (it decides every Maglev table).
std::string endpointText(const IpAddress& address, uint16_t port) {
  return address.isV4() ? absl::StrCat(address.toString(), ":", port)
                        : absl::StrCat("[", address.toString(), "]:", port);
}

std::string frontendName(const state::Frontend& fe) {
  std::string name = absl::StrCat(fe.ns, "/", fe.service);
  if (!fe.port_name.empty()) absl::StrAppend(&name, " port ", fe.port_name);
  absl::StrAppend(&name, " (", endpointText(fe.vip, fe.port), "/",
                  protoName(static_cast<uint8_t>(fe.protocol)), ")");
  return name;
}

absl::Status withContext(const absl::Status& status, absl::string_view what) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(what, ": ", status.message()));
}

mesh_svc_key toSvcKey(const IpAddress& vip, uint16_t port, uint8_t proto) {
  mesh_svc_key key{};
  vip.toAbi(key.addr);
  key.port = htons(port);
  key.proto = proto;
  key.family = static_cast<__u8>(vip.family);
  return key;
}

mesh_backend toBackend(const IpAddress& address, uint16_t port, uint8_t proto) {
  mesh_backend b{};
  address.toAbi(b.addr);
  b.port = htons(port);
  b.proto = proto;
  b.family = static_cast<__u8>(address.family);
  b.flags = MESH_BACKEND_F_ACTIVE;
  return b;
}

uint32_t maglevSize(const state::Frontend& fe) {
  return fe.maglev_table_size != 0 ? fe.maglev_table_size : MESH_MAGLEV_DEFAULT_SIZE;
}

absl::Status validate(const state::Frontend& fe) {
  if (!validFamily(fe.vip.family)) {
    return absl::InvalidArgumentError(
        absl::StrCat("service ", fe.ns, "/", fe.service, ": VIP address is not set"));
  }
  if (fe.protocol != state::Protocol::kTcp && fe.protocol != state::Protocol::kUdp) {
    return absl::InvalidArgumentError(
        absl::StrCat(frontendName(fe), ": protocol must be TCP or UDP"));
  }
  if (static_cast<uint32_t>(fe.algorithm) >= MESH_LB_ALGO_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        frontendName(fe), ": unknown load-balancing algorithm ", static_cast<int>(fe.algorithm)));
  }
  if (fe.algorithm == state::LbAlgorithm::kMaglev) {
    const uint32_t size = maglevSize(fe);
    if (!isPrime(size) || size > MESH_MAGLEV_MAX_SIZE || size < fe.backends.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          frontendName(fe), ": Maglev table size ", size, " must be a prime no larger than ",
          MESH_MAGLEV_MAX_SIZE, " and at least the number of backends (", fe.backends.size(), "); ",
          MESH_MAGLEV_DEFAULT_SIZE, " is the default"));
    }
  }
  const state::OutlierDetection& od = fe.outlier;
  if (od.max_ejection_percent > 100 ||
      (od.consecutive_failures != 0 &&
       (od.base_ejection_ms == 0 || od.max_ejection_ms < od.base_ejection_ms))) {
    return absl::InvalidArgumentError(absl::StrCat(
        frontendName(fe), ": outlier detection needs maxEjectionPercent in 0..100 (got ",
        od.max_ejection_percent, ") and 0 < baseEjectionTime <= maxEjectionTime (got ",
        od.base_ejection_ms, " ms and ", od.max_ejection_ms, " ms)"));
  }
  for (const state::Backend& be : fe.backends) {
    if (!validFamily(be.address.family)) {
      return absl::InvalidArgumentError(
          absl::StrCat(frontendName(fe), ": a backend (", be.target, ") has no address"));
    }
    if (be.weight < 1 || be.weight > kMaxWeight) {
      return absl::InvalidArgumentError(
          absl::StrCat(frontendName(fe), ": backend ", endpointText(be.address, be.port),
                       " has weight ", be.weight, ", outside 1..", kMaxWeight));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------
// IdAllocator

std::vector<uint32_t> Reconciler::IdAllocator::peek(size_t count) const {
  std::vector<uint32_t> ids;
  ids.reserve(count);
  for (auto it = free_.begin(); it != free_.end() && ids.size() < count; ++it) ids.push_back(*it);
  for (uint32_t id = next_; ids.size() < count; ++id) ids.push_back(id);
  return ids;
}

void Reconciler::IdAllocator::take(const std::vector<uint32_t>& ids) {
  for (uint32_t id : ids) {
    free_.erase(id);
    next_ = std::max(next_, id + 1);
  }
}

void Reconciler::IdAllocator::release(uint32_t id) {
  if (id != 0 && id < next_) free_.insert(id);
}

void Reconciler::IdAllocator::reset(const std::set<uint32_t>& used) {
  free_.clear();
  next_ = used.empty() ? 1 : *used.rbegin() + 1;
  for (uint32_t id = 1; id < next_ && id < kMaxAdoptedGapId; ++id) {
    if (!used.contains(id)) free_.insert(id);
  }
}

// ---------------------------------------------------------------------------
// Plan: everything one apply() writes, and the picture after it succeeds.

struct Reconciler::Plan {
  // Writes, in the order they are made.
  std::vector<std::pair<uint32_t, mesh_backend>> put_backends;
  std::vector<std::pair<mesh_slot_key, mesh_slot>> put_slots;
  std::vector<size_t> set_maglev;  // indices into `updated`
  std::vector<std::pair<mesh_svc_key, mesh_svc>> put_services;
  std::vector<size_t> set_maglev_late;  // shrinking tables, after the service entries
  std::vector<mesh_svc_key> del_services;
  std::vector<mesh_slot_key> del_slots;
  std::vector<uint32_t> del_maglev;
  std::vector<uint32_t> del_backends;

  // The picture after success.
  std::vector<std::pair<FrontendKey, ServiceRec>> updated;  // new or replaced records
  std::vector<std::string> updated_names;                   // for error messages
  std::vector<FrontendKey> removed;
  absl::flat_hash_map<BackendKey, uint32_t> want;  // desired backend -> uses
  std::vector<std::pair<BackendKey, uint32_t>> new_backends;
  std::vector<uint32_t> new_backend_ids;
  std::vector<uint32_t> new_svc_ids;
  std::vector<uint32_t> freed_backend_ids;
  std::vector<uint32_t> freed_svc_ids;
  // Skipped by this apply's allocation (live connections on them): drained later.
  std::vector<uint32_t> draining_backend_ids;
  std::vector<uint32_t> draining_svc_ids;
  // New ids whose kernel state still holds a previous owner's counters.
  std::vector<uint32_t> reset_backend_states;
  std::vector<uint32_t> reset_svc_states;
  // (service, backend) pairs whose connections are to be ended at once.
  std::vector<mesh_drain_key> terminate;
  uint64_t new_slot_keys = 0;
};

// ---------------------------------------------------------------------------

Reconciler::Reconciler(LbMapWriter& maps) : maps_(maps) {}

absl::Status Reconciler::adopt() {
  absl::MutexLock lock(&mu_);
  return adoptLocked();
}

absl::Status Reconciler::adoptLocked() {
  ASSIGN_OR_RETURN(LbMapContents contents, maps_.readAll());

  backends_.clear();
  backend_keys_.clear();
  services_.clear();
  orphan_services_.clear();
  orphan_slots_.clear();
  orphan_maglev_.clear();
  orphan_backends_.clear();
  slot_entries_ = 0;

  std::set<uint32_t> used_backend_ids;
  for (const auto& [id, b] : contents.backends) {
    if (id == 0) continue;  // never written by meshd; the kernel treats 0 as invalid
    used_backend_ids.insert(id);
    BackendKey key{IpAddress::fromAbi(b.family, b.addr), ntohs(b.port), b.proto};
    if (!validFamily(b.family) || !backends_.emplace(key, BackendRec{id, 0}).second) {
      orphan_backends_.push_back(id);  // a duplicate (or garbage): drop it
      continue;
    }
    backend_keys_.emplace(id, key);
  }

  std::set<uint32_t> used_svc_ids;
  absl::flat_hash_map<uint32_t, FrontendKey> by_svc_id;
  for (const auto& [k, svc] : contents.services) {
    FrontendKey key{IpAddress::fromAbi(k.family, k.addr), ntohs(k.port), k.proto};
    if (!validFamily(k.family) || svc.svc_id == 0 || !by_svc_id.emplace(svc.svc_id, key).second) {
      orphan_services_.push_back(k);
      continue;
    }
    used_svc_ids.insert(svc.svc_id);
    services_[key].svc = svc;
  }

  const uint64_t max_slots = maps_.maxSlots();
  for (const auto& [k, slot] : contents.slots) {
    ++slot_entries_;
    auto it = by_svc_id.find(k.svc_id);
    if (it == by_svc_id.end() || slot.backend_id == 0 || k.slot >= max_slots) {
      orphan_slots_.push_back(k);
      used_svc_ids.insert(k.svc_id);
      continue;
    }
    ServiceRec& rec = services_[it->second];
    if (rec.slots.size() <= k.slot) rec.slots.resize(k.slot + 1, mesh_slot{});
    rec.slots[k.slot] = slot;
    auto b = backend_keys_.find(slot.backend_id);
    if (b != backend_keys_.end()) ++backends_[b->second].refs;
  }

  for (auto& [svc_id, table] : contents.maglev) {
    auto it = by_svc_id.find(svc_id);
    if (it == by_svc_id.end()) {
      orphan_maglev_.push_back(svc_id);
      used_svc_ids.insert(svc_id);
      continue;
    }
    services_[it->second].maglev = std::make_shared<const std::vector<uint32_t>>(std::move(table));
  }

  backend_ids_.reset(used_backend_ids);
  svc_ids_.reset(used_svc_ids);
  needs_resync_ = false;
  return absl::OkStatus();
}

absl::Status Reconciler::apply(const state::DesiredLbState& desired) {
  absl::MutexLock lock(&mu_);
  return applyLocked(desired);
}

absl::Status Reconciler::applyLocked(const state::DesiredLbState& desired) {
  const auto start = std::chrono::steady_clock::now();
  if (needs_resync_) {
    RETURN_IF_ERROR(
        withContext(adoptLocked(), "re-reading the maps after an earlier failed update"));
  }
  RETURN_IF_ERROR(releaseDrained());
  Plan plan;
  RETURN_IF_ERROR(buildPlan(desired, plan));
  absl::Status written = writePlan(plan);
  if (!written.ok()) {
    // Some batches (or part of one) reached the kernel: only the maps know what.
    needs_resync_ = true;
    return written;
  }
  const uint64_t writes = plan.put_backends.size() + plan.put_slots.size() +
                          plan.set_maglev.size() + plan.set_maglev_late.size() +
                          plan.put_services.size() + plan.del_services.size() +
                          plan.del_slots.size() + plan.del_maglev.size() + plan.del_backends.size();
  commitPlan(plan);
  stats_.applies++;
  stats_.last_writes = writes;
  stats_.last_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return absl::OkStatus();
}

absl::Status Reconciler::buildPlan(const state::DesiredLbState& desired, Plan& plan) {
  const uint64_t generation = ++generation_;

  // 1. Validate everything and count what is wanted, before deciding anything.
  absl::flat_hash_set<FrontendKey> frontend_keys;
  frontend_keys.reserve(desired.frontends.size());
  size_t new_frontends = 0;
  for (const state::Frontend& fe : desired.frontends) {
    RETURN_IF_ERROR(validate(fe));
    const uint8_t proto = static_cast<uint8_t>(fe.protocol);
    FrontendKey key{fe.vip, fe.port, proto};
    if (!frontend_keys.insert(key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(frontendName(fe),
                       ": another service already uses this VIP, port and "
                       "protocol; each frontend must be unique"));
    }
    if (!services_.contains(key)) ++new_frontends;
    for (const state::Backend& be : fe.backends) {
      ++plan.want[BackendKey{be.address, be.port, proto}];
    }
  }

  // 2. Ids for new backends and services. Ids freed by this apply are not reused
  // by it: their old entries are deleted only at the end.
  absl::flat_hash_map<BackendKey, uint32_t> new_backend_index;
  for (const state::Frontend& fe : desired.frontends) {
    const uint8_t proto = static_cast<uint8_t>(fe.protocol);
    for (const state::Backend& be : fe.backends) {
      BackendKey key{be.address, be.port, proto};
      if (backends_.contains(key) || new_backend_index.contains(key)) continue;
      new_backend_index.emplace(key, plan.new_backends.size());
      plan.new_backends.emplace_back(key, 0);
    }
  }
  ASSIGN_OR_RETURN(plan.new_backend_ids,
                   freshIds<mesh_backend_state>(
                       backend_ids_, plan.new_backends.size(),
                       [this](uint32_t id) { return maps_.readBackendState(id); },
                       &plan.draining_backend_ids, &plan.reset_backend_states));
  if (!plan.new_backend_ids.empty() && plan.new_backend_ids.back() >= maps_.maxBackends()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "mesh_backends has room for ids 1..", maps_.maxBackends() - 1, " but this update needs ",
        backends_.size() + plan.new_backends.size(), " backends at once (", backends_.size(),
        " present, ", plan.new_backends.size(),
        " new): raise the backend map size in meshd's datapath config or apply fewer backends"));
  }
  for (size_t i = 0; i < plan.new_backends.size(); ++i) {
    const uint32_t id = plan.new_backend_ids[i];
    const BackendKey& key = plan.new_backends[i].first;
    plan.new_backends[i].second = id;
    new_backend_index[key] = id;
    plan.put_backends.emplace_back(id, toBackend(key.address, key.port, key.proto));
  }
  auto backendId = [&](const BackendKey& key) {
    auto it = backends_.find(key);
    return it != backends_.end() ? it->second.id : new_backend_index.at(key);
  };
  ASSIGN_OR_RETURN(plan.new_svc_ids, freshIds<mesh_svc_state>(
                                         svc_ids_, new_frontends,
                                         [this](uint32_t id) { return maps_.readServiceState(id); },
                                         &plan.draining_svc_ids, &plan.reset_svc_states));
  size_t next_new_svc = 0;

  // 3. Per frontend: the entries it should have, against what the maps hold.
  // Slots at indices that have no entry yet go first in the batch, rewrites of
  // existing ones after: a rewritten slot may alias to a new index (the kernel
  // follows alias_slot without checking slot_count), and batches are applied
  // entry by entry, so the new entry must exist before anything points at it.
  std::vector<std::pair<mesh_slot_key, mesh_slot>> rewritten_slots;
  uint64_t new_tables = 0;
  for (const state::Frontend& fe : desired.frontends) {
    const uint8_t proto = static_cast<uint8_t>(fe.protocol);
    const FrontendKey key{fe.vip, fe.port, proto};
    auto it = services_.find(key);
    ServiceRec* cur = it == services_.end() ? nullptr : &it->second;
    if (cur != nullptr) {
      cur->seen = generation;
      // Same frontend as last applied: its backend ids are unchanged (each of its
      // backends is still wanted), hence so are all its entries.
      if (cur->frontend.has_value() && *cur->frontend == fe) continue;
    }

    ServiceRec next;
    const uint32_t svc_id = cur != nullptr ? cur->svc.svc_id : plan.new_svc_ids[next_new_svc++];
    const uint32_t n = static_cast<uint32_t>(fe.backends.size());
    const bool maglev = fe.algorithm == state::LbAlgorithm::kMaglev;

    std::vector<uint32_t> weights(n);
    std::vector<uint32_t> ids(n);
    for (uint32_t i = 0; i < n; ++i) {
      weights[i] = fe.backends[i].weight;
      ids[i] = backendId(BackendKey{fe.backends[i].address, fe.backends[i].port, proto});
    }
    if (cur != nullptr && fe.terminate_removed) {
      const absl::flat_hash_set<uint32_t> kept(ids.begin(), ids.end());
      for (const mesh_slot& old : cur->slots) {
        if (old.backend_id != 0 && !kept.contains(old.backend_id)) {
          plan.terminate.push_back({svc_id, old.backend_id});
        }
      }
    }
    const std::vector<AliasEntry> alias = buildAliasTable(weights);
    next.slots.resize(n);
    for (uint32_t i = 0; i < n; ++i) {
      next.slots[i] = mesh_slot{ids[i], weights[i], alias[i].threshold, alias[i].alias};
    }
    next.svc = mesh_svc{};
    next.svc.svc_id = svc_id;
    next.svc.slot_count = n;
    next.svc.maglev_size = maglev ? maglevSize(fe) : 0;
    next.svc.algo = static_cast<__u8>(fe.algorithm);
    // UDP frontends ignore it in the kernel; set it anyway so the map shows the model.
    next.svc.flags = fe.l7 ? MESH_SVC_F_L7 : MESH_SVC_F_NONE;
    next.svc.max_conns = fe.max_connections;
    next.svc.max_conns_per_backend = fe.max_connections_per_backend;
    next.svc.rate_per_sec = fe.connect_rate.per_second;
    next.svc.rate_burst = fe.connect_rate.burst;
    next.svc.client_rate_per_sec = fe.client_connect_rate.per_second;
    next.svc.client_rate_burst = fe.client_connect_rate.burst;
    next.svc.eject_consecutive = fe.outlier.consecutive_failures;
    next.svc.eject_base_ms = fe.outlier.base_ejection_ms;
    next.svc.eject_max_ms = fe.outlier.max_ejection_ms;
    next.svc.eject_max_percent = static_cast<__u8>(fe.outlier.max_ejection_percent);
    next.frontend = fe;
    next.seen = generation;

    // Maglev table: rebuilt only when its inputs changed, written only when it differs.
    // A Maglev frontend without backends needs no table: the kernel refuses on
    // slot_count 0 before it looks for one.
    bool write_table = false;
    if (maglev && n > 0) {
      next.maglev_inputs.reserve(n);
      for (uint32_t i = 0; i < n; ++i) {
        next.maglev_inputs.push_back(MaglevBackend{
            ids[i], endpointText(fe.backends[i].address, fe.backends[i].port), weights[i]});
      }
      const uint32_t size = next.svc.maglev_size;
      if (cur != nullptr && cur->maglev != nullptr && cur->maglev->size() == size &&
          cur->maglev_inputs == next.maglev_inputs) {
        next.maglev = cur->maglev;
      } else {
        auto table = std::make_shared<const std::vector<uint32_t>>(
            buildMaglevTable(next.maglev_inputs, size));
        if (cur != nullptr && cur->maglev != nullptr && *cur->maglev == *table) {
          next.maglev = cur->maglev;
        } else {
          next.maglev = std::move(table);
          write_table = true;
          if (cur == nullptr || cur->maglev == nullptr) ++new_tables;
        }
      }
    } else if (cur != nullptr && cur->maglev != nullptr) {
      plan.del_maglev.push_back(svc_id);
    }

    const size_t cur_slots = cur != nullptr ? cur->slots.size() : 0;
    for (uint32_t i = 0; i < n; ++i) {
      const bool present = i < cur_slots && cur->slots[i].backend_id != 0;
      if (present && sameSlot(cur->slots[i], next.slots[i])) continue;
      (present ? rewritten_slots : plan.put_slots)
          .emplace_back(mesh_slot_key{svc_id, i}, next.slots[i]);
      if (!present) ++plan.new_slot_keys;
    }
    for (size_t i = n; i < cur_slots; ++i) {
      if (cur->slots[i].backend_id != 0) {
        plan.del_slots.push_back(mesh_slot_key{svc_id, static_cast<uint32_t>(i)});
      }
    }
    if (cur == nullptr || !sameSvc(cur->svc, next.svc)) {
      plan.put_services.emplace_back(toSvcKey(fe.vip, fe.port, proto), next.svc);
    }
    if (write_table) {
      // The kernel indexes the table with mesh_maglev_index(.., svc.maglev_size):
      // a table that grows is set before the service entry gets the new size, one
      // that shrinks after it, so the size in the entry never exceeds the table's.
      const bool shrinks =
          cur != nullptr && cur->maglev != nullptr && next.maglev->size() < cur->maglev->size();
      (shrinks ? plan.set_maglev_late : plan.set_maglev).push_back(plan.updated.size());
    }
    plan.updated_names.push_back(frontendName(fe));
    plan.updated.emplace_back(key, std::move(next));
  }

  plan.put_slots.insert(plan.put_slots.end(), rewritten_slots.begin(), rewritten_slots.end());

  // 4. Frontends no longer wanted: the service entry, then its slots and table.
  size_t present_tables = 0;
  for (const auto& [key, rec] : services_) {
    if (rec.maglev != nullptr) ++present_tables;
    if (rec.seen == generation) continue;
    plan.removed.push_back(key);
    plan.del_services.push_back(toSvcKey(key.vip, key.port, key.proto));
    for (size_t i = 0; i < rec.slots.size(); ++i) {
      if (rec.slots[i].backend_id != 0) {
        plan.del_slots.push_back(mesh_slot_key{rec.svc.svc_id, static_cast<uint32_t>(i)});
      }
    }
    if (rec.maglev != nullptr) plan.del_maglev.push_back(rec.svc.svc_id);
    plan.freed_svc_ids.push_back(rec.svc.svc_id);
    if (rec.frontend.has_value() && rec.frontend->terminate_removed) {
      for (const mesh_slot& old : rec.slots) {
        if (old.backend_id != 0) plan.terminate.push_back({rec.svc.svc_id, old.backend_id});
      }
    }
  }

  // 5. Leftovers adoption found (see adopt()). A leftover service entry whose key
  // is written again by this apply is overwritten, not deleted.
  if (!orphan_services_.empty()) {
    absl::flat_hash_set<FrontendKey> written;
    for (const auto& [key, rec] : plan.updated) written.insert(key);
    for (const mesh_svc_key& k : orphan_services_) {
      FrontendKey key{IpAddress::fromAbi(k.family, k.addr), ntohs(k.port), k.proto};
      if (!written.contains(key)) plan.del_services.push_back(k);
    }
  }
  // Ids of leftover slots and tables are free afterwards, unless a service owns
  // them (a leftover slot can also be a bad entry of a live service).
  absl::flat_hash_set<uint32_t> owned_svc_ids;
  if (!orphan_slots_.empty() || !orphan_maglev_.empty()) {
    for (const auto& [key, rec] : services_) owned_svc_ids.insert(rec.svc.svc_id);
  }
  absl::flat_hash_set<std::pair<uint32_t, uint32_t>> written_slots;
  if (!orphan_slots_.empty()) {
    for (const auto& [k, slot] : plan.put_slots) written_slots.emplace(k.svc_id, k.slot);
  }
  for (const mesh_slot_key& k : orphan_slots_) {
    if (written_slots.contains(std::make_pair(k.svc_id, k.slot))) {
      // A bad entry of a live service that this apply overwrites: not new after all.
      --plan.new_slot_keys;
      continue;
    }
    plan.del_slots.push_back(k);
    if (!owned_svc_ids.contains(k.svc_id)) plan.freed_svc_ids.push_back(k.svc_id);
  }
  for (uint32_t svc_id : orphan_maglev_) {
    plan.del_maglev.push_back(svc_id);
    if (!owned_svc_ids.contains(svc_id)) plan.freed_svc_ids.push_back(svc_id);
  }
  for (uint32_t id : orphan_backends_) {
    plan.del_backends.push_back(id);
    plan.freed_backend_ids.push_back(id);
  }

  // 6. Backends no frontend uses any more.
  for (const auto& [key, rec] : backends_) {
    if (plan.want.contains(key)) continue;
    plan.del_backends.push_back(rec.id);
    plan.freed_backend_ids.push_back(rec.id);
  }

  // 7. Capacity, at the peak of the update: new entries are written before old
  // ones are deleted.
  const uint64_t peak_services = services_.size() + orphan_services_.size() + new_frontends;
  if (peak_services > maps_.maxServices()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "mesh_services holds ", maps_.maxServices(), " entries but this update needs ",
        peak_services, " at once (", services_.size() + orphan_services_.size(), " present, ",
        new_frontends,
        " new): raise the service map size in meshd's datapath config or apply fewer services"));
  }
  const uint64_t peak_tables = present_tables + orphan_maglev_.size() + new_tables;
  if (peak_tables > maps_.maxServices()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "mesh_maglev holds ", maps_.maxServices(), " tables but this update needs ", peak_tables,
        " at once: raise the service map size in meshd's datapath "
        "config or use Maglev for fewer services"));
  }
  const uint64_t peak_slots = slot_entries_ + plan.new_slot_keys;
  if (peak_slots > maps_.maxSlots()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "mesh_slots holds ", maps_.maxSlots(), " entries but this update needs ", peak_slots,
        " at once (", slot_entries_, " present, ", plan.new_slot_keys,
        " new): raise the slot map size in meshd's datapath config or apply fewer backends"));
  }
  return absl::OkStatus();
}

template <typename State>
absl::StatusOr<std::vector<uint32_t>> Reconciler::freshIds(
    const IdAllocator& alloc, size_t count,
    const std::function<absl::StatusOr<State>(uint32_t)>& read, std::vector<uint32_t>* draining,
    std::vector<uint32_t>* reset) {
  static const State kZero{};
  std::vector<uint32_t> ids;
  ids.reserve(count);
  absl::flat_hash_set<uint32_t> checked;
  while (ids.size() < count) {
    for (uint32_t id : alloc.peek(count + draining->size())) {
      if (ids.size() == count) break;
      if (!checked.insert(id).second) continue;
      // An id past the map's end has no state; the capacity check reports it.
      absl::StatusOr<State> st = read(id);
      if (!st.ok()) {
        ids.push_back(id);
        continue;
      }
      if (st->live_conns > 0) {
        draining->push_back(id);
        continue;
      }
      if (std::memcmp(&*st, &kZero, sizeof(State)) != 0) reset->push_back(id);
      ids.push_back(id);
    }
  }
  return ids;
}

absl::Status Reconciler::releaseDrained() {
  auto release = [](std::set<uint32_t>& draining, IdAllocator& alloc, auto read) -> absl::Status {
    for (auto it = draining.begin(); it != draining.end();) {
      ASSIGN_OR_RETURN(auto st, read(*it));
      if (st.live_conns > 0) {
        ++it;
        continue;
      }
      alloc.release(*it);
      it = draining.erase(it);
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(release(draining_backend_ids_, backend_ids_,
                          [this](uint32_t id) { return maps_.readBackendState(id); }));
  return release(draining_svc_ids_, svc_ids_,
                 [this](uint32_t id) { return maps_.readServiceState(id); });
}

std::vector<mesh_drain_key> Reconciler::takeTerminations() {
  absl::MutexLock lock(&mu_);
  return std::exchange(pending_terminations_, {});
}

size_t Reconciler::drainingBackends() const {
  absl::MutexLock lock(&mu_);
  return draining_backend_ids_.size();
}

size_t Reconciler::drainingServices() const {
  absl::MutexLock lock(&mu_);
  return draining_svc_ids_.size();
}

absl::Status Reconciler::writePlan(Plan& plan) {
  if (!plan.reset_backend_states.empty()) {
    RETURN_IF_ERROR(
        withContext(maps_.resetBackendStates(plan.reset_backend_states),
                    absl::StrCat("resetting the kernel state of ", plan.reset_backend_states.size(),
                                 " reused backend ids")));
  }
  if (!plan.reset_svc_states.empty()) {
    RETURN_IF_ERROR(withContext(maps_.resetServiceStates(plan.reset_svc_states),
                                absl::StrCat("resetting the kernel state of ",
                                             plan.reset_svc_states.size(), " reused service ids")));
  }
  if (!plan.put_backends.empty()) {
    RETURN_IF_ERROR(withContext(
        maps_.updateBackends(plan.put_backends),
        absl::StrCat("adding ", plan.put_backends.size(), " backends to mesh_backends")));
  }
  if (!plan.put_slots.empty()) {
    RETURN_IF_ERROR(withContext(
        maps_.updateSlots(plan.put_slots),
        absl::StrCat("writing ", plan.put_slots.size(), " backend slots into mesh_slots")));
  }
  auto setTables = [&](const std::vector<size_t>& indices) -> absl::Status {
    for (size_t index : indices) {
      const ServiceRec& rec = plan.updated[index].second;
      RETURN_IF_ERROR(withContext(maps_.setMaglevTable(rec.svc.svc_id, *rec.maglev),
                                  absl::StrCat("setting the Maglev table (", rec.maglev->size(),
                                               " entries) of ", plan.updated_names[index])));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(setTables(plan.set_maglev));
  if (!plan.put_services.empty()) {
    RETURN_IF_ERROR(withContext(
        maps_.updateServices(plan.put_services),
        absl::StrCat("writing ", plan.put_services.size(), " service entries into mesh_services")));
  }
  RETURN_IF_ERROR(setTables(plan.set_maglev_late));
  if (!plan.del_services.empty()) {
    RETURN_IF_ERROR(withContext(maps_.deleteServices(plan.del_services),
                                absl::StrCat("deleting ", plan.del_services.size(),
                                             " service entries from mesh_services")));
  }
  if (!plan.del_slots.empty()) {
    RETURN_IF_ERROR(withContext(
        maps_.deleteSlots(plan.del_slots),
        absl::StrCat("deleting ", plan.del_slots.size(), " backend slots from mesh_slots")));
  }
  for (uint32_t svc_id : plan.del_maglev) {
    RETURN_IF_ERROR(withContext(maps_.deleteMaglevTable(svc_id),
                                absl::StrCat("deleting the Maglev table of service id ", svc_id)));
  }
  if (!plan.del_backends.empty()) {
    RETURN_IF_ERROR(withContext(
        maps_.deleteBackends(plan.del_backends),
        absl::StrCat("deleting ", plan.del_backends.size(), " backends from mesh_backends")));
  }
  return absl::OkStatus();
}

void Reconciler::commitPlan(Plan& plan) {
  slot_entries_ = slot_entries_ + plan.new_slot_keys - plan.del_slots.size();
  for (const FrontendKey& key : plan.removed) services_.erase(key);
  for (auto& [key, rec] : plan.updated) services_.insert_or_assign(key, std::move(rec));

  for (const auto& [key, id] : plan.new_backends) {
    backends_.emplace(key, BackendRec{id, 0});
    backend_keys_.emplace(id, key);
  }
  backend_ids_.take(plan.new_backend_ids);
  backend_ids_.take(plan.draining_backend_ids);
  draining_backend_ids_.insert(plan.draining_backend_ids.begin(), plan.draining_backend_ids.end());
  for (uint32_t id : plan.freed_backend_ids) {
    auto it = backend_keys_.find(id);
    if (it != backend_keys_.end()) {
      backends_.erase(it->second);
      backend_keys_.erase(it);
    }
    backend_ids_.release(id);
  }
  for (const auto& [key, uses] : plan.want) backends_[key].refs = uses;

  pending_terminations_.insert(pending_terminations_.end(), plan.terminate.begin(),
                               plan.terminate.end());
  svc_ids_.take(plan.new_svc_ids);
  svc_ids_.take(plan.draining_svc_ids);
  draining_svc_ids_.insert(plan.draining_svc_ids.begin(), plan.draining_svc_ids.end());
  for (uint32_t id : plan.freed_svc_ids) svc_ids_.release(id);

  orphan_services_.clear();
  orphan_slots_.clear();
  orphan_maglev_.clear();
  orphan_backends_.clear();
}

absl::StatusOr<std::vector<Reconciler::FrontendView>> Reconciler::describe() {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<FrontendKey, const ServiceRec*>> sorted;
  sorted.reserve(services_.size());
  for (const auto& [key, rec] : services_) sorted.emplace_back(key, &rec);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });

  std::vector<FrontendView> views;
  views.reserve(sorted.size());
  for (const auto& [key, rec] : sorted) {
    FrontendView view;
    view.svc_id = rec->svc.svc_id;
    if (rec->frontend.has_value()) {
      view.frontend = *rec->frontend;
    } else {
      view.frontend.vip = key.vip;
      view.frontend.port = key.port;
      view.frontend.protocol = static_cast<state::Protocol>(key.proto);
      view.frontend.algorithm = static_cast<state::LbAlgorithm>(rec->svc.algo);
      view.frontend.maglev_table_size = rec->svc.maglev_size;
      view.frontend.max_connections = rec->svc.max_conns;
      view.frontend.max_connections_per_backend = rec->svc.max_conns_per_backend;
      view.frontend.connect_rate = {rec->svc.rate_per_sec, rec->svc.rate_burst};
      view.frontend.client_connect_rate = {rec->svc.client_rate_per_sec,
                                           rec->svc.client_rate_burst};
      view.frontend.outlier.consecutive_failures = rec->svc.eject_consecutive;
      view.frontend.outlier.base_ejection_ms = rec->svc.eject_base_ms;
      view.frontend.outlier.max_ejection_ms = rec->svc.eject_max_ms;
      view.frontend.outlier.max_ejection_percent = rec->svc.eject_max_percent;
      view.frontend.l7 = (rec->svc.flags & MESH_SVC_F_L7) != 0;
    }
    ASSIGN_OR_RETURN(view.counters, maps_.readServiceState(rec->svc.svc_id));
    const uint32_t n = std::min<size_t>(rec->svc.slot_count, rec->slots.size());
    for (uint32_t i = 0; i < n; ++i) {
      const mesh_slot& slot = rec->slots[i];
      auto bk = backend_keys_.find(slot.backend_id);
      if (slot.backend_id == 0 || bk == backend_keys_.end()) continue;
      BackendView b{};
      b.id = slot.backend_id;
      b.address = bk->second.address;
      b.port = bk->second.port;
      b.weight = slot.weight;
      ASSIGN_OR_RETURN(b.counters, maps_.readBackendState(slot.backend_id));
      if (rec->frontend.has_value() && i < rec->frontend->backends.size()) {
        b.node = rec->frontend->backends[i].node;
        b.target = rec->frontend->backends[i].target;
      } else {
        view.frontend.backends.push_back(state::Backend{b.address, b.port, b.weight, "", ""});
      }
      view.backends.push_back(std::move(b));
    }
    views.push_back(std::move(view));
  }
  return views;
}

Reconciler::Stats Reconciler::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace meshd::datapath
