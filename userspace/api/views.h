// What `meshctl get` shows, as JSON: the translation from meshd's internal
// state (the reconciler's view of the maps, the applied resources) to the
// documents the Get RPC returns. Pure functions; no locking, no I/O.
//
// Every view is a JSON array of flat objects whose keys cli/render.cc knows.
// `ns` and `name` filter ("" = all); for backends `name` is the service name.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "datapath/reconciler.h"
#include "nlohmann/json.hpp"
#include "resources/resource.h"

namespace meshd::api {

using FrontendViews = std::vector<datapath::Reconciler::FrontendView>;

// The two clocks views need to show kernel times: mesh_backend_state's
// ejected_until_ns is on the bpf_ktime_get_ns() clock (CLOCK_MONOTONIC).
struct ViewClock {
  uint64_t monotonic_ns = 0;  // CLOCK_MONOTONIC now
  int64_t realtime_ns = 0;    // CLOCK_REALTIME now (Unix time)
  static ViewClock now();
};

// "10.0.0.1:80", "[fd00::1]:80"
std::string hostPort(const IpAddress& address, uint16_t port);

// One entry per frontend (Service VIP:port/protocol):
// namespace, name, portName, vip, port, protocol, algorithm, maglevTableSize, backends (count),
// svcId.
nlohmann::ordered_json servicesView(const FrontendViews& frontends, std::string_view ns,
                                    std::string_view name);

// One entry per (frontend, backend): namespace, service, frontend ("vip:port/TCP"),
// backend ("addr:port"), weight, liveConnections, limit, totalConnections,
// connectFailures, consecutiveFailures, ejected (bool), ejectedFor (time left as
// text, null when not ejected), ejectedUntil (RFC 3339 UTC or null),
// ejectedUntilNs (raw, CLOCK_MONOTONIC; 0 = not ejected), timesEjected, srtt
// (EWMA as text, null before the first sample), srttEwmaUs, rttSamples,
// rtoEvents, node, target, backendId.
nlohmann::ordered_json backendsView(const FrontendViews& frontends, std::string_view ns,
                                    std::string_view name, const ViewClock& clock);

// Request-level resilience of one cluster (a backend Service port) of the L7 proxy: its
// node-wide circuit breaker and L7 outlier detection (daemon::L7Config::clusterStats).
struct L7ClusterView {
  std::string cluster;  // "ns/svc:port"
  uint64_t pending = 0, active = 0, retries = 0;
  uint64_t pending_overflow = 0, request_overflow = 0, retry_overflow = 0;
  uint32_t ejected = 0;
  uint64_t ejections = 0, ejections_skipped = 0;
};
using L7ClusterViews = std::vector<L7ClusterView>;

// `meshctl explain SERVICE`: per frontend, whether new connections are admitted
// and, if not, why: limits, live counts, refusals by reason (service limit,
// backend limits, every backend ejected), reroutes, outlier detection settings
// and ejections (made, skipped at maxEjectionPercent, ejected now), each
// backend's live count against its limit and its ejection, and a one-line
// verdict. `node_stats` is mesh_stats as dumped (name -> count); its node-wide
// refusal and ejection reasons are attached to every entry.
//
// `l7`: the L7 proxy's request-level state per cluster; a TCP frontend whose Service port has
// one gets `requestLevel` (pendingRequests, activeRequests, activeRetries, pendingOverflow,
// requestOverflow, retryOverflow, l7EjectedNow, l7Ejections, l7EjectionsSkipped).
nlohmann::ordered_json explainView(const FrontendViews& frontends, std::string_view ns,
                                   std::string_view name, const nlohmann::ordered_json& node_stats,
                                   const ViewClock& clock, const L7ClusterViews& l7 = {});

// TrafficPolicies: namespace, name, target, algorithm, maglevTableSize,
// weights ("address=weight"), outlierDetection (enabled, consecutiveFailures,
// baseEjectionTime, maxEjectionTime, maxEjectionPercent). Resources of other
// kinds are skipped.
absl::StatusOr<nlohmann::ordered_json> policiesView(const std::vector<resources::Resource>& all,
                                                    std::string_view ns, std::string_view name);

// EndpointSlices: namespace, name, service, addressType, ports ("name:port/TCP"),
// endpoints (addresses), ready ("ready/total").
absl::StatusOr<nlohmann::ordered_json> endpointSlicesView(
    const std::vector<resources::Resource>& all, std::string_view ns, std::string_view name);

// Every applied resource: kind, namespace, name, source (file:line), object.
nlohmann::ordered_json resourcesView(const std::vector<resources::Resource>& all,
                                     std::string_view ns, std::string_view name);

}  // namespace meshd::api
