#include "state/desired_state.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace meshd::state {
namespace {

using resources::EndpointSliceSpec;
using resources::ServicePort;

// The backend port an EndpointSlice gives for a Service port; 0 = none.
uint16_t backendPort(const EndpointSliceSpec& slice, const ServicePort& sp) {
  for (const auto& p : slice.ports) {
    if (p.name == sp.name && p.protocol == sp.protocol) return p.port;
  }
  if (!sp.target_port_name.empty()) {
    for (const auto& p : slice.ports) {
      if (p.name == sp.target_port_name && p.protocol == sp.protocol) return p.port;
    }
  }
  return sp.target_port.value_or(0);
}

}  // namespace

absl::StatusOr<DesiredLbState> computeDesiredState(const ResourceSet& set,
                                                   const MeshSettings& mesh) {
  using NsName = std::pair<std::string, std::string>;

  // With mTLS: addresses of Workloads on other nodes the tunnel can reach (their Node has an
  // InternalIP); a frontend with such a backend goes through meshd.
  absl::flat_hash_set<IpAddress> tunneled;
  if (mesh.mtls) {
    absl::flat_hash_set<std::string> reachable_nodes;
    for (const auto* r : set.list(resources::kKindNode)) {
      ASSIGN_OR_RETURN(resources::NodeSpec spec, resources::nodeSpec(*r));
      if (spec.internal_ip.has_value()) reachable_nodes.insert(r->key.name);
    }
    for (const auto* r : set.list(resources::kKindWorkload)) {
      ASSIGN_OR_RETURN(resources::WorkloadSpec spec, resources::workloadSpec(*r));
      if (spec.node == mesh.node_name || !reachable_nodes.contains(spec.node)) continue;
      for (const IpAddress& a : spec.addresses) tunneled.insert(a);
    }
  }

  std::map<NsName, std::vector<EndpointSliceSpec>> slices;  // (ns, service) -> slices, key order
  for (const auto* r : set.list(resources::kKindEndpointSlice)) {
    ASSIGN_OR_RETURN(EndpointSliceSpec spec, resources::endpointSliceSpec(*r));
    std::string service = spec.service_name;
    slices[{r->key.ns, std::move(service)}].push_back(std::move(spec));
  }
  std::map<NsName, std::pair<const resources::Resource*, resources::TrafficPolicySpec>> policies;
  for (const auto* r : set.list(resources::kKindTrafficPolicy)) {
    ASSIGN_OR_RETURN(resources::TrafficPolicySpec spec, resources::trafficPolicySpec(*r));
    NsName target{r->key.ns, spec.target_service};
    auto [it, inserted] = policies.try_emplace(target, r, std::move(spec));
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("Service ", target.first, "/", target.second, " is targeted by both ",
                       it->second.first->key.toString(), " and ", r->key.toString(),
                       ": at most one TrafficPolicy per Service"));
    }
  }

  // (ns, service) -> the RateLimitPolicy's kernel connect rates (validateSet refused a
  // second policy and a TrafficPolicy setting the same rate).
  std::map<NsName, resources::RateLimitPolicySpec> rate_limits;
  for (const auto* r : set.list(resources::kKindRateLimitPolicy)) {
    ASSIGN_OR_RETURN(resources::RateLimitPolicySpec spec, resources::rateLimitPolicySpec(*r));
    NsName target{r->key.ns, spec.target_service};
    rate_limits.try_emplace(std::move(target), std::move(spec));
  }

  // (ns, service) -> parentRefs of the routes bound to it (HTTPRoute and GRPCRoute).
  std::map<NsName, std::vector<resources::RouteParentRef>> route_parents;
  for (const auto* r : set.list(resources::kKindHttpRoute)) {
    ASSIGN_OR_RETURN(resources::HttpRouteSpec spec, resources::httpRouteSpec(*r));
    for (auto& p : spec.parent_refs) route_parents[{r->key.ns, p.name}].push_back(std::move(p));
  }
  for (const auto* r : set.list(resources::kKindGrpcRoute)) {
    ASSIGN_OR_RETURN(resources::GrpcRouteSpec spec, resources::grpcRouteSpec(*r));
    for (auto& p : spec.parent_refs) route_parents[{r->key.ns, p.name}].push_back(std::move(p));
  }

  DesiredLbState out;
  for (const auto* r : set.list(resources::kKindService)) {
    ASSIGN_OR_RETURN(resources::ServiceSpec spec, resources::serviceSpec(*r));
    const NsName id{r->key.ns, r->key.name};
    const resources::TrafficPolicySpec* policy = nullptr;
    if (auto it = policies.find(id); it != policies.end()) policy = &it->second.second;
    absl::flat_hash_map<IpAddress, uint32_t> weights;
    if (policy) {
      for (const auto& [ip, w] : policy->weights) weights[ip] = w;
    }
    const resources::RateLimitPolicySpec* rate_limit = nullptr;
    if (auto it = rate_limits.find(id); it != rate_limits.end()) rate_limit = &it->second;
    const std::vector<EndpointSliceSpec>* svc_slices = nullptr;
    if (auto it = slices.find(id); it != slices.end()) svc_slices = &it->second;
    const std::vector<resources::RouteParentRef>* parents = nullptr;
    if (auto it = route_parents.find(id); it != route_parents.end()) parents = &it->second;

    for (const IpAddress& vip : spec.cluster_ips) {
      for (const ServicePort& sp : spec.ports) {
        Frontend f;
        f.ns = r->key.ns;
        f.service = r->key.name;
        f.port_name = sp.name;
        f.vip = vip;
        f.port = sp.port;
        f.protocol = sp.protocol;
        if (policy) {
          f.algorithm = policy->algorithm;
          f.maglev_table_size = policy->maglev_table_size;
          f.max_connections = policy->max_connections;
          f.max_connections_per_backend = policy->max_connections_per_backend;
          f.connect_rate = policy->connect_rate;
          f.client_connect_rate = policy->client_connect_rate;
          f.terminate_removed = policy->terminate_removed;
          f.outlier = policy->outlier;
          f.request = policy->request;
          // A request-level setting can only be applied by the L7 proxy.
          f.l7 = policy->request_level && sp.protocol == Protocol::kTcp;
        }
        if (rate_limit) {
          // Kernel connect-rate buckets: the same fields TrafficPolicy's connectionLimits set.
          if (rate_limit->connect_rate.per_second != 0) f.connect_rate = rate_limit->connect_rate;
          if (rate_limit->client_connect_rate.per_second != 0) {
            f.client_connect_rate = rate_limit->client_connect_rate;
          }
          // Request limits are applied by the L7 proxy.
          const bool requests = rate_limit->requests.set() || rate_limit->per_client.set() ||
                                !rate_limit->routes.empty();
          f.l7 = f.l7 || (requests && sp.protocol == Protocol::kTcp);
        }
        // HTTP routing is for TCP ports; a route bound to a UDP port changes nothing.
        if (parents && sp.protocol == Protocol::kTcp) {
          for (const auto& p : *parents) f.l7 = f.l7 || p.binds(r->key.name, sp.port, sp.name);
        }
        if (svc_slices) {
          for (const auto& slice : *svc_slices) {
            if (slice.address_type != vip.family) continue;
            uint16_t port = backendPort(slice, sp);
            if (port == 0) continue;
            for (const auto& ep : slice.endpoints) {
              if (!ep.ready) continue;
              for (const IpAddress& addr : ep.addresses) {
                Backend b;
                b.address = addr;
                b.port = port;
                auto w = weights.find(addr);
                b.weight = w == weights.end() ? 1 : w->second;
                b.node = ep.node_name;
                b.target = ep.target_ref;
                if (sp.protocol == Protocol::kTcp && tunneled.contains(addr)) f.l7 = true;
                f.backends.push_back(std::move(b));
              }
            }
          }
        }
        // Stable: among duplicates the first slice (in key order) wins.
        std::stable_sort(f.backends.begin(), f.backends.end(),
                         [](const Backend& a, const Backend& b) {
                           return std::tie(a.address, a.port) < std::tie(b.address, b.port);
                         });
        f.backends.erase(std::unique(f.backends.begin(), f.backends.end(),
                                     [](const Backend& a, const Backend& b) {
                                       return a.address == b.address && a.port == b.port;
                                     }),
                         f.backends.end());
        out.frontends.push_back(std::move(f));
      }
    }
  }
  auto frontendKey = [](const Frontend& f) { return std::tie(f.vip, f.port, f.protocol); };
  std::sort(out.frontends.begin(), out.frontends.end(),
            [&](const Frontend& a, const Frontend& b) { return frontendKey(a) < frontendKey(b); });
  for (size_t i = 1; i < out.frontends.size(); ++i) {
    const Frontend& a = out.frontends[i - 1];
    const Frontend& b = out.frontends[i];
    if (frontendKey(a) == frontendKey(b)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Services ", a.ns, "/", a.service, " and ", b.ns, "/", b.service, " both use ",
          a.vip.toString(), " port ", a.port, "/", resources::protocolName(a.protocol)));
    }
  }
  return out;
}

}  // namespace meshd::state
