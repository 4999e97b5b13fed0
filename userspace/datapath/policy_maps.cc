#include "datapath/policy_maps.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstring>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "datapath/map_ops.h"

namespace meshd::datapath {
namespace {

constexpr char kStrict[] = "mesh_strict";
constexpr char kIdentity[] = "mesh_cg_identity";
constexpr char kDst[] = "mesh_authz_dst";
constexpr char kL4[] = "mesh_authz_l4";

// Keys and values as bytes, so the four maps share one diff.
using Bytes = std::string;
using Entries = std::map<Bytes, Bytes>;

template <typename T>
Bytes bytesOf(const T& v) {
  return Bytes(reinterpret_cast<const char*>(&v), sizeof(v));
}

uint8_t abiFamily(const IpAddress& a) { return a.isV4() ? MESH_AF_INET : MESH_AF_INET6; }

absl::Status checkAddr(const IpAddress& a, absl::string_view what) {
  if (a.family != AF_INET && a.family != AF_INET6) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the address is not set"));
  }
  return absl::OkStatus();
}

absl::Status checkVerdict(AuthzVerdict v, absl::string_view what) {
  if (v != AuthzVerdict::kAllow && v != AuthzVerdict::kDeny) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": verdict ", static_cast<int>(v), " is neither allow nor deny"));
  }
  return absl::OkStatus();
}

std::string strictText(const StrictEntry& e) {
  return absl::StrCat("STRICT entry ", e.addr.toString(), " port ", e.port);
}

std::string ruleText(uint32_t src_id, const IpAddress& a, uint16_t port) {
  return absl::StrCat("authorization rule (identity ", src_id, ", ", a.toString(), " port ", port,
                      ")");
}

mesh_authz_dst dstValueOf(const AuthzDst& d) {
  mesh_authz_dst v{};
  v.flags =
      (d.governed ? MESH_AUTHZ_F_GOVERNED : 0) | (d.strict_pass ? MESH_AUTHZ_F_STRICT_PASS : 0);
  v.default_verdict = static_cast<uint8_t>(d.default_verdict);
  return v;
}

// Adds key -> value to *out; the same key with another value is an error.
absl::Status addUnique(Entries* out, Bytes key, Bytes value, const std::string& what) {
  auto [it, fresh] = out->emplace(std::move(key), value);
  if (!fresh && it->second != value) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is given twice with different values"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Entries> readKeys(int fd, absl::string_view map, bool with_values) {
  ASSIGN_OR_RETURN(mapops::RawEntries raw, mapops::readEntries(fd, map));
  Entries out;
  for (size_t i = 0; i < raw.size(); ++i) {
    Bytes key(static_cast<const char*>(raw.key(i)), raw.key_size);
    out[key] = with_values ? Bytes(static_cast<const char*>(raw.value(i)), raw.value_size) : "";
  }
  return out;
}

// Writes every entry of `desired` that `current` lacks or holds with another
// value (values of `value_size` bytes each).
absl::Status upsert(int fd, absl::string_view map, const Entries& desired, const Entries& current,
                    size_t value_size, bool keys_only) {
  std::vector<uint8_t> keys, values;
  uint32_t n = 0;
  for (const auto& [k, v] : desired) {
    auto it = current.find(k);
    if (it != current.end() && (keys_only || it->second == v)) continue;
    keys.insert(keys.end(), k.begin(), k.end());
    if (keys_only) {
      values.resize(values.size() + value_size, 0);
    } else {
      values.insert(values.end(), v.begin(), v.end());
    }
    ++n;
  }
  return mapops::updateBatch(fd, map, keys.data(), values.data(), n);
}

absl::Status removeStale(int fd, absl::string_view map, const Entries& desired,
                         const Entries& current, uint32_t key_size) {
  std::vector<uint8_t> keys;
  uint32_t n = 0;
  for (const auto& [k, v] : current) {
    if (desired.count(k)) continue;
    keys.insert(keys.end(), k.begin(), k.end());
    ++n;
  }
  return mapops::deleteBatch(fd, map, keys.data(), key_size, n);
}

// Per-CPU values are 8 bytes per possible CPU.
size_t perCpuValueSize() {
  int n = libbpf_num_possible_cpus();
  return static_cast<size_t>(n > 0 ? n : 1) * sizeof(uint64_t);
}

absl::Status updateOne(int fd, absl::string_view map, const void* key, const void* value,
                       const std::string& what) {
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0) {
    if (errno == E2BIG || errno == ENOSPC) {
      return absl::ResourceExhaustedError(
          absl::StrCat("map ", map, " is full writing ", what,
                       ": raise its size in the datapath config and restart meshd with its pins "
                       "reset"));
    }
    return errnoError(errno, absl::StrCat("writing ", what, " into map ", map));
  }
  return absl::OkStatus();
}

absl::Status deleteOne(int fd, absl::string_view map, const void* key, const std::string& what) {
  if (bpf_map_delete_elem(fd, key) != 0 && errno != ENOENT) {
    return errnoError(errno, absl::StrCat("deleting ", what, " from map ", map));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<mesh_strict_key> strictKeyOf(const StrictEntry& e) {
  RETURN_IF_ERROR(checkAddr(e.addr, strictText(e)));
  mesh_strict_key k{};
  e.addr.toAbi(k.addr);
  k.port = htons(e.port);
  k.family = abiFamily(e.addr);
  return k;
}

absl::StatusOr<mesh_authz_dst_key> authzDstKeyOf(const IpAddress& addr) {
  RETURN_IF_ERROR(checkAddr(addr, "authorization destination"));
  mesh_authz_dst_key k{};
  addr.toAbi(k.addr);
  k.family = abiFamily(addr);
  return k;
}

absl::StatusOr<mesh_authz_l4_key> authzRuleKeyOf(uint32_t src_id, const IpAddress& addr,
                                                 uint16_t port) {
  RETURN_IF_ERROR(checkAddr(addr, ruleText(src_id, addr, port)));
  mesh_authz_l4_key k{};
  k.src_id = src_id;
  addr.toAbi(k.addr);
  k.port = htons(port);
  k.family = abiFamily(addr);
  return k;
}

absl::Status PolicyMaps::replaceAll(const KernelPolicy& desired) {
  Entries strict, ids, dsts, rules;
  for (const StrictEntry& e : desired.strict) {
    ASSIGN_OR_RETURN(mesh_strict_key k, strictKeyOf(e));
    strict[bytesOf(k)] = "";
  }
  for (const auto& [cg, id] : desired.identities) {
    if (id == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("identity of cgroup id ", cg, " is 0 (reserved for \"no identity\")"));
    }
    RETURN_IF_ERROR(
        addUnique(&ids, bytesOf(cg), bytesOf(id), absl::StrCat("identity of cgroup id ", cg)));
  }
  for (const AuthzDst& d : desired.dsts) {
    ASSIGN_OR_RETURN(mesh_authz_dst_key k, authzDstKeyOf(d.addr));
    RETURN_IF_ERROR(checkVerdict(d.default_verdict,
                                 absl::StrCat("authorization destination ", d.addr.toString())));
    RETURN_IF_ERROR(addUnique(&dsts, bytesOf(k), bytesOf(dstValueOf(d)),
                              absl::StrCat("authorization destination ", d.addr.toString())));
  }
  for (const AuthzRule& r : desired.rules) {
    ASSIGN_OR_RETURN(mesh_authz_l4_key k, authzRuleKeyOf(r.src_id, r.addr, r.port));
    RETURN_IF_ERROR(checkVerdict(r.verdict, ruleText(r.src_id, r.addr, r.port)));
    const uint8_t v = static_cast<uint8_t>(r.verdict);
    RETURN_IF_ERROR(addUnique(&rules, bytesOf(k), bytesOf(v), ruleText(r.src_id, r.addr, r.port)));
  }

  ASSIGN_OR_RETURN(Entries cur_strict, readKeys(fds_.strict, kStrict, false));
  ASSIGN_OR_RETURN(Entries cur_ids, readKeys(fds_.cg_identity, kIdentity, true));
  ASSIGN_OR_RETURN(Entries cur_dsts, readKeys(fds_.authz_dst, kDst, true));
  ASSIGN_OR_RETURN(Entries cur_rules, readKeys(fds_.authz_l4, kL4, true));

  RETURN_IF_ERROR(upsert(fds_.cg_identity, kIdentity, ids, cur_ids, sizeof(uint32_t), false));
  RETURN_IF_ERROR(upsert(fds_.authz_l4, kL4, rules, cur_rules, sizeof(uint8_t), false));
  RETURN_IF_ERROR(upsert(fds_.authz_dst, kDst, dsts, cur_dsts, sizeof(mesh_authz_dst), false));
  RETURN_IF_ERROR(upsert(fds_.strict, kStrict, strict, cur_strict, perCpuValueSize(), true));
  RETURN_IF_ERROR(removeStale(fds_.authz_dst, kDst, dsts, cur_dsts, sizeof(mesh_authz_dst_key)));
  RETURN_IF_ERROR(removeStale(fds_.authz_l4, kL4, rules, cur_rules, sizeof(mesh_authz_l4_key)));
  RETURN_IF_ERROR(removeStale(fds_.cg_identity, kIdentity, ids, cur_ids, sizeof(uint64_t)));
  return removeStale(fds_.strict, kStrict, strict, cur_strict, sizeof(mesh_strict_key));
}

absl::Status PolicyMaps::setStrict(const StrictEntry& entry, bool on) {
  ASSIGN_OR_RETURN(mesh_strict_key k, strictKeyOf(entry));
  if (!on) return deleteOne(fds_.strict, kStrict, &k, strictText(entry));
  std::vector<uint8_t> zeros(perCpuValueSize(), 0);
  if (bpf_map_update_elem(fds_.strict, &k, zeros.data(), BPF_NOEXIST) != 0 && errno != EEXIST) {
    return errnoError(errno, absl::StrCat("writing ", strictText(entry), " into map ", kStrict));
  }
  return absl::OkStatus();
}

absl::Status PolicyMaps::setWorkloadIdentity(uint64_t cgroup_id, uint32_t id) {
  const std::string what = absl::StrCat("identity of cgroup id ", cgroup_id);
  if (id == 0) return deleteOne(fds_.cg_identity, kIdentity, &cgroup_id, what);
  return updateOne(fds_.cg_identity, kIdentity, &cgroup_id, &id, what);
}

absl::Status PolicyMaps::setAuthzDst(const AuthzDst& dst) {
  ASSIGN_OR_RETURN(mesh_authz_dst_key k, authzDstKeyOf(dst.addr));
  const std::string what = absl::StrCat("authorization destination ", dst.addr.toString());
  RETURN_IF_ERROR(checkVerdict(dst.default_verdict, what));
  const mesh_authz_dst v = dstValueOf(dst);
  return updateOne(fds_.authz_dst, kDst, &k, &v, what);
}

absl::Status PolicyMaps::removeAuthzDst(const IpAddress& addr) {
  ASSIGN_OR_RETURN(mesh_authz_dst_key k, authzDstKeyOf(addr));
  return deleteOne(fds_.authz_dst, kDst, &k,
                   absl::StrCat("authorization destination ", addr.toString()));
}

absl::Status PolicyMaps::setAuthzRule(const AuthzRule& rule) {
  ASSIGN_OR_RETURN(mesh_authz_l4_key k, authzRuleKeyOf(rule.src_id, rule.addr, rule.port));
  const std::string what = ruleText(rule.src_id, rule.addr, rule.port);
  RETURN_IF_ERROR(checkVerdict(rule.verdict, what));
  const uint8_t v = static_cast<uint8_t>(rule.verdict);
  return updateOne(fds_.authz_l4, kL4, &k, &v, what);
}

absl::Status PolicyMaps::removeAuthzRule(uint32_t src_id, const IpAddress& addr, uint16_t port) {
  ASSIGN_OR_RETURN(mesh_authz_l4_key k, authzRuleKeyOf(src_id, addr, port));
  return deleteOne(fds_.authz_l4, kL4, &k, ruleText(src_id, addr, port));
}

absl::StatusOr<KernelPolicy> PolicyMaps::read() const {
  KernelPolicy out;
  auto family = [](uint8_t f) { return f == MESH_AF_INET6 ? AF_INET6 : AF_INET; };
  ASSIGN_OR_RETURN(mapops::RawEntries strict, mapops::readEntries(fds_.strict, kStrict));
  for (size_t i = 0; i < strict.size(); ++i) {
    mesh_strict_key k;
    std::memcpy(&k, strict.key(i), sizeof(k));
    out.strict.push_back({IpAddress::fromAbi(family(k.family), k.addr), ntohs(k.port)});
  }
  ASSIGN_OR_RETURN(mapops::RawEntries ids, mapops::readEntries(fds_.cg_identity, kIdentity));
  for (size_t i = 0; i < ids.size(); ++i) {
    uint64_t cg;
    uint32_t id;
    std::memcpy(&cg, ids.key(i), sizeof(cg));
    std::memcpy(&id, ids.value(i), sizeof(id));
    out.identities.emplace_back(cg, id);
  }
  ASSIGN_OR_RETURN(mapops::RawEntries dsts, mapops::readEntries(fds_.authz_dst, kDst));
  for (size_t i = 0; i < dsts.size(); ++i) {
    mesh_authz_dst_key k;
    mesh_authz_dst v;
    std::memcpy(&k, dsts.key(i), sizeof(k));
    std::memcpy(&v, dsts.value(i), sizeof(v));
    out.dsts.push_back(
        {IpAddress::fromAbi(family(k.family), k.addr), (v.flags & MESH_AUTHZ_F_GOVERNED) != 0,
         static_cast<AuthzVerdict>(v.default_verdict), (v.flags & MESH_AUTHZ_F_STRICT_PASS) != 0});
  }
  ASSIGN_OR_RETURN(mapops::RawEntries rules, mapops::readEntries(fds_.authz_l4, kL4));
  for (size_t i = 0; i < rules.size(); ++i) {
    mesh_authz_l4_key k;
    uint8_t v;
    std::memcpy(&k, rules.key(i), sizeof(k));
    std::memcpy(&v, rules.value(i), sizeof(v));
    out.rules.push_back({k.src_id, IpAddress::fromAbi(family(k.family), k.addr), ntohs(k.port),
                         static_cast<AuthzVerdict>(v)});
  }
  return out;
}

absl::StatusOr<PolicyCounters> PolicyMaps::counters() const {
  PolicyCounters out;
  ASSIGN_OR_RETURN(mapops::RawEntries strict, mapops::readEntries(fds_.strict, kStrict));
  const size_t ncpu = strict.value_size / sizeof(uint64_t);
  for (size_t i = 0; i < strict.size(); ++i) {
    mesh_strict_key k;
    std::memcpy(&k, strict.key(i), sizeof(k));
    StrictCounter c;
    c.entry = {IpAddress::fromAbi(k.family == MESH_AF_INET6 ? AF_INET6 : AF_INET, k.addr),
               ntohs(k.port)};
    for (size_t cpu = 0; cpu < ncpu; ++cpu) {
      uint64_t v;
      std::memcpy(&v, static_cast<const uint8_t*>(strict.value(i)) + cpu * sizeof(uint64_t),
                  sizeof(v));
      c.syn_dropped += v;
    }
    out.strict.push_back(c);
  }
  const size_t cpus = perCpuValueSize() / sizeof(uint64_t);
  auto stat = [&](uint32_t key) -> absl::StatusOr<uint64_t> {
    std::vector<uint64_t> per(cpus, 0);
    if (bpf_map_lookup_elem(fds_.stats, &key, per.data()) != 0) {
      return errnoError(errno, absl::StrCat("reading mesh_stats[", key, "]"));
    }
    uint64_t sum = 0;
    for (uint64_t v : per) sum += v;
    return sum;
  };
  ASSIGN_OR_RETURN(out.strict_dropped, stat(MESH_STAT_STRICT_DROPPED));
  ASSIGN_OR_RETURN(out.strict_unparsed, stat(MESH_STAT_STRICT_UNPARSED));
  ASSIGN_OR_RETURN(out.strict_fast_pass, stat(MESH_STAT_STRICT_FAST_PASS));
  ASSIGN_OR_RETURN(out.strict_pass_failed, stat(MESH_STAT_STRICT_PASS_FAILED));
  ASSIGN_OR_RETURN(out.authz_denied, stat(MESH_STAT_AUTHZ_DENIED));
  ASSIGN_OR_RETURN(out.authz_skipped, stat(MESH_STAT_AUTHZ_SKIPPED));
  return out;
}

}  // namespace meshd::datapath
