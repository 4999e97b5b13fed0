#include "datapath/bpf_lb_maps.h"

#include <bpf/bpf.h>
#include <unistd.h>

#include <cstring>
#include <numeric>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "datapath/map_ops.h"

namespace meshd::datapath {
namespace {

template <typename K, typename V>
absl::Status updatePairs(int fd, absl::string_view map, absl::Span<const std::pair<K, V>> batch) {
  if (batch.empty()) return absl::OkStatus();
  std::vector<K> keys;
  std::vector<V> values;
  keys.reserve(batch.size());
  values.reserve(batch.size());
  for (const auto& [k, v] : batch) {
    keys.push_back(k);
    values.push_back(v);
  }
  return mapops::updateBatch(fd, map, keys.data(), values.data(), batch.size());
}

template <typename V>
std::vector<std::pair<uint32_t, V>> zeroed(absl::Span<const uint32_t> ids) {
  std::vector<std::pair<uint32_t, V>> out;
  out.reserve(ids.size());
  for (uint32_t id : ids) out.emplace_back(id, V{});
  return out;
}

template <typename K, typename V>
std::vector<std::pair<K, V>> decode(const mapops::RawEntries& raw) {
  std::vector<std::pair<K, V>> out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    std::pair<K, V> e;
    std::memcpy(&e.first, raw.key(i), sizeof(K));
    std::memcpy(&e.second, raw.value(i), sizeof(V));
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> readInnerTable(uint32_t inner_id, uint32_t svc_id) {
  ScopedFd inner(bpf_map_get_fd_by_id(inner_id));
  if (inner.get() < 0) {
    return errnoError(
        errno, absl::StrCat("opening Maglev table (map id ", inner_id, ") of service ", svc_id));
  }
  ASSIGN_OR_RETURN(mapops::RawEntries raw, mapops::readEntries(inner.get(), "mesh_maglev inner"));
  std::vector<uint32_t> table(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    uint32_t idx;
    std::memcpy(&idx, raw.key(i), 4);
    if (idx < table.size()) std::memcpy(&table[idx], raw.value(i), 4);
  }
  return table;
}

}  // namespace

absl::StatusOr<LbMapContents> BpfLbMaps::readAll() {
  LbMapContents out;
  ASSIGN_OR_RETURN(auto services, mapops::readEntries(fds_.services, "mesh_services"));
  out.services = decode<mesh_svc_key, mesh_svc>(services);
  ASSIGN_OR_RETURN(auto slots, mapops::readEntries(fds_.slots, "mesh_slots"));
  out.slots = decode<mesh_slot_key, mesh_slot>(slots);
  ASSIGN_OR_RETURN(auto backends, mapops::readEntries(fds_.backends, "mesh_backends"));
  for (auto& [id, be] : decode<uint32_t, mesh_backend>(backends)) {
    if (be.flags & MESH_BACKEND_F_ACTIVE) out.backends.emplace_back(id, be);
  }
  // Looking up an outer map-of-maps from userspace yields the inner map's id.
  ASSIGN_OR_RETURN(auto maglev, mapops::readEntries(fds_.maglev, "mesh_maglev"));
  for (auto& [svc_id, inner_id] : decode<uint32_t, uint32_t>(maglev)) {
    ASSIGN_OR_RETURN(out.maglev[svc_id], readInnerTable(inner_id, svc_id));
  }
  return out;
}

absl::Status BpfLbMaps::updateBackends(absl::Span<const std::pair<uint32_t, mesh_backend>> batch) {
  for (const auto& [id, be] : batch) {
    if (id >= fds_.max_backends) {
      return absl::ResourceExhaustedError(
          absl::StrCat("backend id ", id, " does not fit map mesh_backends (max_entries ",
                       fds_.max_backends, "): raise max_backends"));
    }
  }
  return updatePairs(fds_.backends, "mesh_backends", batch);
}

absl::Status BpfLbMaps::deleteBackends(absl::Span<const uint32_t> ids) {
  std::vector<uint32_t> in_range;
  for (uint32_t id : ids) {
    if (id < fds_.max_backends) in_range.push_back(id);  // others cannot exist
  }
  auto backends = zeroed<mesh_backend>(in_range);
  RETURN_IF_ERROR((updatePairs<uint32_t, mesh_backend>(fds_.backends, "mesh_backends", backends)));
  // mesh_backend_state is reset by the kernel, not overwritten: see
  // LbMapWriter::deleteBackends.
  for (uint32_t id : in_range) RETURN_IF_ERROR(forgetBackend(id));
  return absl::OkStatus();
}

absl::Status BpfLbMaps::forgetBackend(uint32_t id) {
  if (fds_.forget_prog < 0) return absl::OkStatus();
  mesh_backend_forget_ctx ctx{id};
  // A return of 1: another CPU is between deciding to eject it and writing the
  // time, a few instructions. Retry briefly; give up quietly after that (the
  // id keeps that one ejection, which ends by itself).
  for (int attempt = 0; attempt < 100; ++attempt) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
    if (bpf_prog_test_run_opts(fds_.forget_prog, &opts) != 0) {
      return errnoError(errno, absl::StrCat("resetting the state of backend id ", id,
                                            " (running mesh_backend_forget)"));
    }
    if (opts.retval == 0) break;
    std::this_thread::yield();
  }
  return absl::OkStatus();
}

absl::Status BpfLbMaps::updateServices(absl::Span<const std::pair<mesh_svc_key, mesh_svc>> batch) {
  return updatePairs(fds_.services, "mesh_services", batch);
}

absl::Status BpfLbMaps::deleteServices(absl::Span<const mesh_svc_key> keys) {
  return mapops::deleteBatch(fds_.services, "mesh_services", keys.data(), sizeof(mesh_svc_key),
                             keys.size());
}

absl::Status BpfLbMaps::updateSlots(absl::Span<const std::pair<mesh_slot_key, mesh_slot>> batch) {
  return updatePairs(fds_.slots, "mesh_slots", batch);
}

absl::Status BpfLbMaps::deleteSlots(absl::Span<const mesh_slot_key> keys) {
  return mapops::deleteBatch(fds_.slots, "mesh_slots", keys.data(), sizeof(mesh_slot_key),
                             keys.size());
}

absl::Status BpfLbMaps::setMaglevTable(uint32_t svc_id, absl::Span<const uint32_t> table) {
  if (table.empty() || table.size() > MESH_MAGLEV_MAX_SIZE) {
    return absl::InvalidArgumentError(absl::StrCat("Maglev table of service ", svc_id, " has ",
                                                   table.size(), " entries; it must have 1..",
                                                   MESH_MAGLEV_MAX_SIZE));
  }
  // BPF_F_INNER_MAP must match the template in mesh_maps.bpf.h; it is what
  // lets inner arrays of different sizes share the outer map.
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_INNER_MAP);
  ScopedFd inner(bpf_map_create(BPF_MAP_TYPE_ARRAY, "mesh_maglev_in", sizeof(uint32_t),
                                sizeof(uint32_t), table.size(), &opts));
  if (inner.get() < 0) {
    return errnoError(errno, absl::StrCat("creating a Maglev table of ", table.size(),
                                          " entries for service ", svc_id));
  }
  std::vector<uint32_t> keys(table.size());
  std::iota(keys.begin(), keys.end(), 0);
  RETURN_IF_ERROR(mapops::updateBatch(inner.get(), "mesh_maglev inner", keys.data(), table.data(),
                                      table.size()));
  uint32_t inner_fd = inner.get();
  if (bpf_map_update_elem(fds_.maglev, &svc_id, &inner_fd, BPF_ANY) != 0) {
    int err = errno;
    if (err == E2BIG || err == ENOSPC) {
      return absl::ResourceExhaustedError(absl::StrCat("map mesh_maglev is full (max_entries ",
                                                       fds_.max_services, "): raise max_services"));
    }
    return errnoError(err, absl::StrCat("installing the Maglev table of service ", svc_id,
                                        " in map mesh_maglev"));
  }
  return absl::OkStatus();  // the outer map holds the inner map now; our fd closes
}

absl::Status BpfLbMaps::deleteMaglevTable(uint32_t svc_id) {
  if (bpf_map_delete_elem(fds_.maglev, &svc_id) != 0 && errno != ENOENT) {
    return errnoError(errno, absl::StrCat("deleting the Maglev table of service ", svc_id));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> BpfLbMaps::readMaglevTable(uint32_t svc_id) {
  uint32_t inner_id = 0;
  if (bpf_map_lookup_elem(fds_.maglev, &svc_id, &inner_id) != 0) {
    if (errno == ENOENT) return std::vector<uint32_t>{};
    return errnoError(errno, absl::StrCat("looking up the Maglev table of service ", svc_id));
  }
  return readInnerTable(inner_id, svc_id);
}

absl::StatusOr<mesh_backend_state> BpfLbMaps::readBackendState(uint32_t backend_id) {
  mesh_backend_state st{};
  if (bpf_map_lookup_elem(fds_.backend_state, &backend_id, &st) != 0) {
    return errnoError(errno, absl::StrCat("reading mesh_backend_state[", backend_id,
                                          "] (max_entries ", fds_.max_backends, ")"));
  }
  return st;
}

absl::StatusOr<mesh_svc_state> BpfLbMaps::readServiceState(uint32_t svc_id) {
  mesh_svc_state st{};
  if (bpf_map_lookup_elem(fds_.svc_state, &svc_id, &st) != 0) {
    return errnoError(errno, absl::StrCat("reading mesh_svc_state[", svc_id, "] (max_entries ",
                                          fds_.max_services, ")"));
  }
  return st;
}

// Zeroes the entries of ids (those below max_entries; others cannot exist).
template <typename V>
absl::Status resetEntries(int fd, absl::string_view map, absl::Span<const uint32_t> ids,
                          uint32_t max_entries) {
  std::vector<uint32_t> in_range;
  for (uint32_t id : ids) {
    if (id < max_entries) in_range.push_back(id);
  }
  auto zero = zeroed<V>(in_range);
  return updatePairs<uint32_t, V>(fd, map, zero);
}

absl::Status BpfLbMaps::resetBackendStates(absl::Span<const uint32_t> ids) {
  return resetEntries<mesh_backend_state>(fds_.backend_state, "mesh_backend_state", ids,
                                          fds_.max_backends);
}

absl::Status BpfLbMaps::resetServiceStates(absl::Span<const uint32_t> ids) {
  return resetEntries<mesh_svc_state>(fds_.svc_state, "mesh_svc_state", ids, fds_.max_services);
}

absl::StatusOr<std::vector<uint64_t>> BpfLbMaps::readStats() {
  ASSIGN_OR_RETURN(auto raw, mapops::readEntries(fds_.stats, "mesh_stats"));
  std::vector<uint64_t> out(MESH_STAT_MAX, 0);
  size_t ncpus = raw.value_size / sizeof(uint64_t);
  for (size_t i = 0; i < raw.size(); ++i) {
    uint32_t idx;
    std::memcpy(&idx, raw.key(i), 4);
    if (idx >= out.size()) continue;
    const uint8_t* v = static_cast<const uint8_t*>(raw.value(i));
    for (size_t c = 0; c < ncpus; ++c) {
      uint64_t x;
      std::memcpy(&x, v + c * 8, 8);
      out[idx] += x;
    }
  }
  return out;
}

}  // namespace meshd::datapath
