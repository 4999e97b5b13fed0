#include "resources/resource_set.h"

#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace meshd::resources {

void ResourceSet::upsert(Resource r) {
  ResourceKey key = r.key;
  map_.insert_or_assign(std::move(key), std::move(r));
}

bool ResourceSet::erase(const ResourceKey& key) { return map_.erase(key) > 0; }

const Resource* ResourceSet::find(const ResourceKey& key) const {
  auto it = map_.find(key);
  return it == map_.end() ? nullptr : &it->second;
}

std::vector<const Resource*> ResourceSet::list(std::string_view kind) const {
  std::vector<const Resource*> out;
  // Keys order by kind first, so one kind is one contiguous range.
  for (auto it = map_.lower_bound(ResourceKey{std::string(kind), "", ""});
       it != map_.end() && it->first.kind == kind; ++it) {
    out.push_back(&it->second);
  }
  return out;
}

std::vector<const Resource*> ResourceSet::list(std::string_view kind, std::string_view ns) const {
  std::vector<const Resource*> out;
  for (auto it = map_.lower_bound(ResourceKey{std::string(kind), std::string(ns), ""});
       it != map_.end() && it->first.kind == kind && it->first.ns == ns; ++it) {
    out.push_back(&it->second);
  }
  return out;
}

std::vector<Resource> ResourceSet::toVector() const {
  std::vector<Resource> out;
  out.reserve(map_.size());
  for (const auto& [k, r] : map_) out.push_back(r);
  return out;
}

bool operator==(const ResourceSet& a, const ResourceSet& b) {
  if (a.map_.size() != b.map_.size()) return false;
  for (auto ia = a.map_.begin(), ib = b.map_.begin(); ia != a.map_.end(); ++ia, ++ib) {
    if (!(ia->first == ib->first) || ia->second.object != ib->second.object) return false;
  }
  return true;
}

namespace {

// Of two conflicting resources, the one to report against: the one with
// positions (just parsed) if only one has them, else the later one.
std::pair<const Resource*, const Resource*> reportOrder(const Resource* first,
                                                        const Resource* second) {
  if (first->positions && !second->positions) return {first, second};
  return {second, first};
}

std::string where(const Resource& r, std::string_view path) {
  std::string loc = locate(r, path);
  return loc.empty() ? r.key.toString() : absl::StrCat(r.key.toString(), " (", loc, ")");
}

}  // namespace

absl::Status validateSet(const ResourceSet& set) {
  std::vector<std::string> errors;

  // clusterIP:port/protocol -> (Service, path of its port)
  using Vip = std::tuple<IpAddress, uint16_t, state::Protocol>;
  absl::flat_hash_map<Vip, std::pair<const Resource*, std::string>> vips;
  for (const Resource* svc : set.list(kKindService)) {
    auto spec = serviceSpec(*svc);
    if (!spec.ok()) {
      errors.push_back(std::string(spec.status().message()));
      continue;
    }
    for (const IpAddress& ip : spec->cluster_ips) {
      for (size_t i = 0; i < spec->ports.size(); ++i) {
        const ServicePort& p = spec->ports[i];
        std::string path = absl::StrCat("spec.ports[", i, "].port");
        auto [it, inserted] = vips.try_emplace(Vip{ip, p.port, p.protocol}, svc, path);
        if (inserted || it->second.first == svc) continue;
        auto [report, other] = reportOrder(it->second.first, svc);
        const std::string& report_path = report == svc ? path : it->second.second;
        const std::string& other_path = report == svc ? it->second.second : path;
        std::string vip = ip.isV4() ? absl::StrCat(ip.toString(), ":", p.port)
                                    : absl::StrCat("[", ip.toString(), "]:", p.port);
        errors.push_back(formatError(
            *report, report_path,
            absl::StrCat(vip, "/", protocolName(p.protocol), " is also used by ",
                         where(*other, other_path),
                         ": two Services cannot share a cluster IP, port and protocol")));
      }
    }
  }

  // (namespace, service) -> TrafficPolicy
  absl::flat_hash_map<std::pair<std::string, std::string>, const Resource*> policies;
  for (const Resource* pol : set.list(kKindTrafficPolicy)) {
    auto spec = trafficPolicySpec(*pol);
    if (!spec.ok()) {
      errors.push_back(std::string(spec.status().message()));
      continue;
    }
    auto [it, inserted] = policies.try_emplace({pol->key.ns, spec->target_service}, pol);
    if (inserted) continue;
    auto [report, other] = reportOrder(it->second, pol);
    errors.push_back(
        formatError(*report, "spec.targetRef.name",
                    absl::StrCat("Service ", pol->key.ns, "/", spec->target_service,
                                 " is also targeted by ", where(*other, "spec.targetRef.name"),
                                 ": at most one TrafficPolicy per Service")));
  }

  // (namespace, service) -> RateLimitPolicy; connect-rate conflicts with the TrafficPolicy.
  absl::flat_hash_map<std::pair<std::string, std::string>, const Resource*> rate_policies;
  for (const Resource* pol : set.list(kKindRateLimitPolicy)) {
    auto spec = rateLimitPolicySpec(*pol);
    if (!spec.ok()) {
      errors.push_back(std::string(spec.status().message()));
      continue;
    }
    const std::pair<std::string, std::string> target{pol->key.ns, spec->target_service};
    auto [it, inserted] = rate_policies.try_emplace(target, pol);
    if (!inserted) {
      auto [report, other] = reportOrder(it->second, pol);
      errors.push_back(
          formatError(*report, "spec.targetRef.name",
                      absl::StrCat("Service ", pol->key.ns, "/", spec->target_service,
                                   " is also targeted by ", where(*other, "spec.targetRef.name"),
                                   ": at most one RateLimitPolicy per Service")));
      continue;
    }
    auto tp = policies.find(target);
    if (tp == policies.end()) continue;
    auto tspec = trafficPolicySpec(*tp->second);
    if (!tspec.ok()) continue;
    struct Pair {
      bool rl, tp;
      const char* rl_path;
      const char* tp_path;
    };
    for (const Pair& p :
         {Pair{spec->connect_rate.per_second != 0, tspec->connect_rate.per_second != 0,
               "spec.connections.connectRate", "spec.connectionLimits.connectRate"},
          Pair{spec->client_connect_rate.per_second != 0,
               tspec->client_connect_rate.per_second != 0, "spec.connections.connectRatePerClient",
               "spec.connectionLimits.connectRatePerClient"}}) {
      if (!p.rl || !p.tp) continue;
      const bool report_rl = pol->positions || !tp->second->positions;
      const Resource& report = report_rl ? *pol : *tp->second;
      const Resource& other = report_rl ? *tp->second : *pol;
      errors.push_back(formatError(
          report, report_rl ? p.rl_path : p.tp_path,
          absl::StrCat("Service ", pol->key.ns, "/", spec->target_service,
                       " gets a connect rate from both ", pol->key.toString(), " and ",
                       where(other, report_rl ? p.tp_path : p.rl_path),
                       ": both program the same kernel bucket; set it in one of them")));
    }
  }

  // address -> (Workload, path)
  absl::flat_hash_map<IpAddress, std::pair<const Resource*, std::string>> addresses;
  for (const Resource* w : set.list(kKindWorkload)) {
    auto spec = workloadSpec(*w);
    if (!spec.ok()) {
      errors.push_back(std::string(spec.status().message()));
      continue;
    }
    for (size_t i = 0; i < spec->addresses.size(); ++i) {
      std::string path = absl::StrCat("spec.addresses[", i, "]");
      auto [it, inserted] = addresses.try_emplace(spec->addresses[i], w, path);
      if (inserted || it->second.first == w) continue;
      auto [report, other] = reportOrder(it->second.first, w);
      const std::string& report_path = report == w ? path : it->second.second;
      const std::string& other_path = report == w ? it->second.second : path;
      errors.push_back(formatError(
          *report, report_path,
          absl::StrCat(spec->addresses[i].toString(), " is also an address of ",
                       where(*other, other_path), ": two Workloads cannot share an address")));
    }
  }

  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
}

}  // namespace meshd::resources
