#include "api/views.h"

#include <arpa/inet.h>
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "mesh_lb.h"

namespace meshd::api {
namespace {

bool matches(std::string_view filter, std::string_view value) {
  return filter.empty() || filter == value;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string protocolText(state::Protocol p) { return upper(resources::protocolName(p)); }

// A connection limit as JSON: null when unlimited (0 in the maps).
nlohmann::ordered_json limitJson(uint32_t limit) {
  return limit == 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(limit);
}

// A connect-rate bucket as JSON: null when unlimited.
nlohmann::ordered_json rateJson(const state::ConnectRate& r) {
  if (r.per_second == 0) return nullptr;
  return {{"perSecond", r.per_second}, {"burst", r.burst}};
}

// The connection-limit fields of a frontend (limits: null = unlimited) and the
// kernel's per-service counters, as services and explain show them.
void addLimits(const datapath::Reconciler::FrontendView& fv, nlohmann::ordered_json& row) {
  row["maxConnections"] = limitJson(fv.frontend.max_connections);
  row["maxConnectionsPerBackend"] = limitJson(fv.frontend.max_connections_per_backend);
  row["liveConnections"] = fv.counters.live_conns;
  row["refusedAtServiceLimit"] = fv.counters.refused_service;
  row["refusedAtBackendLimits"] = fv.counters.refused_backend;
  row["reroutedFromFullBackends"] = fv.counters.rerouted;
  row["connectRate"] = rateJson(fv.frontend.connect_rate);
  row["connectRatePerClient"] = rateJson(fv.frontend.client_connect_rate);
  row["refusedByConnectRate"] = fv.counters.refused_rate;
  row["refusedByClientConnectRate"] = fv.counters.refused_client_rate;
  row["refusedByAuthz"] = fv.counters.refused_authz;  // L4 authorization (same-node pairs)
}

// A backend's ejection as the kernel sees it at clock.monotonic_ns: an
// ejection whose time has passed is over (connect() clears it lazily).
struct Ejection {
  bool ejected = false;
  bool claimed = false;  // a CPU is between deciding and writing the time
  uint64_t left_ns = 0;
};

Ejection ejectionOf(const mesh_backend_state& c, const ViewClock& clock) {
  Ejection e;
  e.ejected = mesh_is_ejected(c.ejected_until_ns, clock.monotonic_ns) != 0;
  e.claimed = c.ejected_until_ns == MESH_EJECT_CLAIMED;
  if (e.ejected && !e.claimed) e.left_ns = c.ejected_until_ns - clock.monotonic_ns;
  return e;
}

// "850ms", "12.3s", "4m05s": a time span at the precision an operator reads.
std::string spanText(uint64_t ns) {
  const uint64_t ms = ns / 1'000'000;
  if (ms < 1000) return absl::StrCat(ms, "ms");
  if (ms < 60'000) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1fs", static_cast<double>(ms) / 1000);
    return buf;
  }
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%" PRIu64 "m%02" PRIu64 "s", ms / 60'000, ms / 1000 % 60);
  return buf;
}

// An SRTT EWMA in microseconds as "85us", "1.25ms", "20.4ms", "312ms".
std::string srttText(uint32_t us) {
  if (us < 1000) return absl::StrCat(us, "us");
  char buf[32];
  const double ms = us / 1000.0;
  std::snprintf(buf, sizeof(buf), ms < 10 ? "%.2fms" : ms < 100 ? "%.1fms" : "%.0fms", ms);
  return buf;
}

// Unix time in ns as RFC 3339 UTC with milliseconds.
std::string rfc3339(int64_t unix_ns) {
  const time_t secs = static_cast<time_t>(unix_ns / 1'000'000'000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(unix_ns / 1'000'000 % 1000));
  return buf;
}

// The outlier-detection and latency fields of one backend (get backends, explain).
void addOutlier(const datapath::Reconciler::BackendView& b, const ViewClock& clock,
                nlohmann::ordered_json& row) {
  const Ejection e = ejectionOf(b.counters, clock);
  row["consecutiveFailures"] = b.counters.consecutive_failures;
  row["ejected"] = e.ejected;
  row["ejectedFor"] = !e.ejected  ? nlohmann::ordered_json(nullptr)
                      : e.claimed ? nlohmann::ordered_json("ejecting")
                                  : nlohmann::ordered_json(spanText(e.left_ns));
  row["ejectedUntil"] =
      e.ejected && !e.claimed
          ? nlohmann::ordered_json(rfc3339(clock.realtime_ns + static_cast<int64_t>(e.left_ns)))
          : nlohmann::ordered_json(nullptr);
  row["ejectedUntilNs"] = b.counters.ejected_until_ns;
  row["timesEjected"] = b.counters.times_ejected;
  row["srtt"] = b.counters.srtt_ewma_us == 0
                    ? nlohmann::ordered_json(nullptr)
                    : nlohmann::ordered_json(srttText(b.counters.srtt_ewma_us));
  row["srttEwmaUs"] = b.counters.srtt_ewma_us;
  row["rttSamples"] = b.counters.rtt_samples;
  row["rtoEvents"] = b.counters.rto_events;
}

// spec.outlierDetection as applied, in the TrafficPolicy's own terms.
nlohmann::ordered_json outlierJson(const state::OutlierDetection& od) {
  return {{"enabled", od.consecutive_failures != 0},
          {"consecutiveFailures", od.consecutive_failures},
          {"baseEjectionTime", resources::formatDurationMs(od.base_ejection_ms)},
          {"maxEjectionTime", resources::formatDurationMs(od.max_ejection_ms)},
          {"maxEjectionPercent", od.max_ejection_percent}};
}

// A share in parts per million as the percentage users wrote (12.5).
double percentOf(uint32_t per_million) { return per_million / 10'000.0; }

// The request-level settings the L7 proxy applies (TrafficPolicy requestLimits, retries,
// faultInjection, the L7 outlier signals), defaults included; `l7` says whether they make
// the Service go through the proxy.
nlohmann::ordered_json requestPolicyJson(const state::RequestPolicy& p, bool l7) {
  nlohmann::ordered_json limits = {{"maxPendingRequests", p.limits.max_pending_requests},
                                   {"maxRequests", p.limits.max_requests},
                                   {"maxRetries", p.limits.max_retries}};
  limits["retryBudget"] =
      p.limits.retry_budget
          ? nlohmann::ordered_json{{"percent", p.limits.budget_percent},
                                   {"minRetryConcurrency", p.limits.min_retry_concurrency}}
          : nlohmann::ordered_json(nullptr);
  nlohmann::ordered_json retry_on = nlohmann::ordered_json::array();
  for (absl::string_view c :
       absl::StrSplit(resources::retryOnNames(p.retries.retry_on), ',', absl::SkipEmpty())) {
    retry_on.push_back(std::string(c));
  }
  nlohmann::ordered_json retries = {
      {"attempts", p.retries.attempts},
      {"perTryTimeout",
       p.retries.per_try_timeout_ms == 0
           ? nlohmann::ordered_json(nullptr)
           : nlohmann::ordered_json(resources::formatDurationMs(p.retries.per_try_timeout_ms))},
      {"retryOn", std::move(retry_on)},
      {"retriableStatusCodes", p.retries.retriable_status_codes},
      {"backoff",
       {{"baseInterval", resources::formatDurationMs(p.retries.base_interval_ms)},
        {"maxInterval", resources::formatDurationMs(p.retries.max_interval_ms)}}}};
  nlohmann::ordered_json fault = nlohmann::ordered_json::object();
  if (p.fault.delay_ms != 0) {
    fault["delay"] = {{"fixedDelay", resources::formatDurationMs(p.fault.delay_ms)},
                      {"percentage", percentOf(p.fault.delay_per_million)}};
  }
  if (p.fault.abort_grpc_status >= 0) {
    fault["abort"] = {
        {"grpcStatus", std::string(resources::grpcCodeName(p.fault.abort_grpc_status))},
        {"percentage", percentOf(p.fault.abort_per_million)}};
  } else if (p.fault.abort_http_status != 0) {
    fault["abort"] = {{"httpStatus", p.fault.abort_http_status},
                      {"percentage", percentOf(p.fault.abort_per_million)}};
  }
  return {{"l7", l7},
          {"requestLimits", std::move(limits)},
          {"retries", std::move(retries)},
          {"outlierDetection",
           {{"consecutive5xxErrors", p.outlier.consecutive_5xx},
            {"consecutiveGatewayErrors", p.outlier.consecutive_gateway_errors}}},
          {"faultInjection", fault.empty() ? nlohmann::ordered_json(nullptr) : std::move(fault)},
          {"leastLatencyPerRequest", p.peak_ewma}};
}

}  // namespace

ViewClock ViewClock::now() {
  timespec mono{};
  timespec real{};
  clock_gettime(CLOCK_MONOTONIC, &mono);
  clock_gettime(CLOCK_REALTIME, &real);
  return ViewClock{static_cast<uint64_t>(mono.tv_sec) * 1'000'000'000 + mono.tv_nsec,
                   static_cast<int64_t>(real.tv_sec) * 1'000'000'000 + real.tv_nsec};
}

std::string hostPort(const IpAddress& address, uint16_t port) {
  if (address.isV4()) return absl::StrCat(address.toString(), ":", port);
  return absl::StrCat("[", address.toString(), "]:", port);
}

nlohmann::ordered_json servicesView(const FrontendViews& frontends, std::string_view ns,
                                    std::string_view name) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& fv : frontends) {
    const state::Frontend& f = fv.frontend;
    if (!matches(ns, f.ns) || !matches(name, f.service)) continue;
    nlohmann::ordered_json row;
    row["namespace"] = f.ns;
    row["name"] = f.service;
    row["portName"] = f.port_name;
    row["vip"] = f.vip.toString();
    row["port"] = f.port;
    row["protocol"] = protocolText(f.protocol);
    row["algorithm"] = std::string(resources::algorithmName(f.algorithm));
    row["maglevTableSize"] = f.maglev_table_size;
    row["backends"] = fv.backends.size();
    addLimits(fv, row);
    row["svcId"] = fv.svc_id;
    out.push_back(std::move(row));
  }
  return out;
}

nlohmann::ordered_json explainView(const FrontendViews& frontends, std::string_view ns,
                                   std::string_view name, const nlohmann::ordered_json& node_stats,
                                   const ViewClock& clock, const L7ClusterViews& l7) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  nlohmann::ordered_json node = nlohmann::ordered_json::object();
  for (const char* reason :
       {"no_backend", "backend_missing", "family_mismatch", "maglev_missing", "limit_service",
        "limit_backend", "limit_rerouted", "all_ejected", "ejected_skipped", "ejection",
        "ejection_over_percent", "ejection_expired", "rto", "rate_service", "rate_client",
        "authz_denied", "strict_dropped"}) {
    if (node_stats.is_object() && node_stats.contains(reason)) node[reason] = node_stats[reason];
  }
  for (const auto& fv : frontends) {
    const state::Frontend& f = fv.frontend;
    if (!matches(ns, f.ns) || !matches(name, f.service)) continue;
    nlohmann::ordered_json row;
    row["namespace"] = f.ns;
    row["service"] = f.service;
    row["frontend"] = absl::StrCat(hostPort(f.vip, f.port), "/", protocolText(f.protocol));
    row["algorithm"] = std::string(resources::algorithmName(f.algorithm));
    addLimits(fv, row);
    row["outlierDetection"] = outlierJson(f.outlier);
    row["ejectedNow"] = fv.counters.ejected;
    row["ejections"] = fv.counters.ejections;
    row["ejectionsSkipped"] = fv.counters.ejections_skipped;
    row["refusedAllEjected"] = fv.counters.refused_ejected;
    row["refusedByAuthz"] = fv.counters.refused_authz;
    if (f.protocol == state::Protocol::kTcp) {
      const std::string cluster = absl::StrCat(f.ns, "/", f.service, ":", f.port);
      for (const L7ClusterView& c : l7) {
        if (c.cluster != cluster) continue;
        row["requestLevel"] = {{"cluster", c.cluster},
                               {"pendingRequests", c.pending},
                               {"activeRequests", c.active},
                               {"activeRetries", c.retries},
                               {"pendingOverflow", c.pending_overflow},
                               {"requestOverflow", c.request_overflow},
                               {"retryOverflow", c.retry_overflow},
                               {"l7EjectedNow", c.ejected},
                               {"l7Ejections", c.ejections},
                               {"l7EjectionsSkipped", c.ejections_skipped}};
        break;
      }
    }
    nlohmann::ordered_json backends = nlohmann::ordered_json::array();
    size_t full = 0;
    size_t ejected = 0;
    size_t unusable = 0;
    uint64_t first_return_ns = UINT64_MAX;
    for (const auto& b : fv.backends) {
      const bool at_limit = f.max_connections_per_backend != 0 &&
                            b.counters.live_conns >= int64_t{f.max_connections_per_backend};
      const Ejection e = ejectionOf(b.counters, clock);
      full += at_limit;
      ejected += e.ejected;
      unusable += at_limit || e.ejected;
      if (e.ejected && !e.claimed) first_return_ns = std::min(first_return_ns, e.left_ns);
      nlohmann::ordered_json br = {{"backend", hostPort(b.address, b.port)},
                                   {"liveConnections", b.counters.live_conns},
                                   {"limit", limitJson(f.max_connections_per_backend)},
                                   {"atLimit", at_limit},
                                   {"connectFailures", b.counters.connect_failures}};
      addOutlier(b, clock, br);
      backends.push_back(std::move(br));
    }
    row["backends"] = std::move(backends);
    const std::string refuse = "; connect() fails with ECONNREFUSED";
    std::string verdict;
    if (fv.backends.empty()) {
      verdict = "refusing: the service has no ready backend (connect() fails with ECONNREFUSED)";
    } else if (f.protocol != state::Protocol::kTcp) {
      verdict = "admitting: connection limits and outlier detection apply to TCP only";
    } else if (f.max_connections != 0 && fv.counters.live_conns >= int64_t{f.max_connections}) {
      verdict = absl::StrCat("refusing: at maxConnections (", fv.counters.live_conns, "/",
                             f.max_connections, ")", refuse);
    } else if (ejected == fv.backends.size()) {
      verdict = absl::StrCat("refusing: every backend is ejected by outlier detection (",
                             f.outlier.consecutive_failures, " failed connects in a row)",
                             first_return_ns != UINT64_MAX ? absl::StrCat("; the first returns in ",
                                                                          spanText(first_return_ns))
                                                           : "",
                             refuse);
    } else if (full == fv.backends.size()) {
      verdict = absl::StrCat("refusing: every backend is at maxConnectionsPerBackend (",
                             f.max_connections_per_backend, ")", refuse);
    } else if (unusable == fv.backends.size()) {
      verdict = absl::StrCat("refusing: ", full, " backends are at maxConnectionsPerBackend and ",
                             ejected, " are ejected by outlier detection", refuse);
    } else if (unusable > 0) {
      std::string why;
      if (full > 0) absl::StrAppend(&why, full, " full");
      if (ejected > 0) absl::StrAppend(&why, why.empty() ? "" : ", ", ejected, " ejected");
      verdict = absl::StrCat("admitting: ", unusable, " of ", fv.backends.size(), " backends (",
                             why, ") are skipped for ones with room");
    } else {
      verdict = "admitting";
    }
    row["verdict"] = verdict;
    row["nodeWideRefusals"] = node;
    out.push_back(std::move(row));
  }
  return out;
}

nlohmann::ordered_json backendsView(const FrontendViews& frontends, std::string_view ns,
                                    std::string_view name, const ViewClock& clock) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& fv : frontends) {
    const state::Frontend& f = fv.frontend;
    if (!matches(ns, f.ns) || !matches(name, f.service)) continue;
    const std::string frontend =
        absl::StrCat(hostPort(f.vip, f.port), "/", protocolText(f.protocol));
    for (const auto& b : fv.backends) {
      nlohmann::ordered_json row;
      row["namespace"] = f.ns;
      row["service"] = f.service;
      row["frontend"] = frontend;
      row["backend"] = hostPort(b.address, b.port);
      row["weight"] = b.weight;
      row["liveConnections"] = b.counters.live_conns;
      row["limit"] = limitJson(f.max_connections_per_backend);
      row["totalConnections"] = b.counters.total_conns;
      row["connectFailures"] = b.counters.connect_failures;
      addOutlier(b, clock, row);
      row["node"] = b.node;
      row["target"] = b.target;
      row["backendId"] = b.id;
      out.push_back(std::move(row));
    }
  }
  return out;
}

absl::StatusOr<nlohmann::ordered_json> policiesView(const std::vector<resources::Resource>& all,
                                                    std::string_view ns, std::string_view name) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& r : all) {
    if (r.key.kind != resources::kKindTrafficPolicy) continue;
    if (!matches(ns, r.key.ns) || !matches(name, r.key.name)) continue;
    auto spec = resources::trafficPolicySpec(r);
    if (!spec.ok()) return spec.status();
    nlohmann::ordered_json row;
    row["namespace"] = r.key.ns;
    row["name"] = r.key.name;
    row["target"] = absl::StrCat("Service/", spec->target_service);
    row["algorithm"] = std::string(resources::algorithmName(spec->algorithm));
    row["maglevTableSize"] = spec->maglev_table_size;
    nlohmann::ordered_json weights = nlohmann::ordered_json::array();
    for (const auto& [address, weight] : spec->weights) {
      weights.push_back(absl::StrCat(address.toString(), "=", weight));
    }
    row["weights"] = std::move(weights);
    row["outlierDetection"] = outlierJson(spec->outlier);
    row["requestPolicy"] = requestPolicyJson(spec->request, spec->request_level);
    out.push_back(std::move(row));
  }
  return out;
}

absl::StatusOr<nlohmann::ordered_json> endpointSlicesView(
    const std::vector<resources::Resource>& all, std::string_view ns, std::string_view name) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& r : all) {
    if (r.key.kind != resources::kKindEndpointSlice) continue;
    if (!matches(ns, r.key.ns) || !matches(name, r.key.name)) continue;
    auto spec = resources::endpointSliceSpec(r);
    if (!spec.ok()) return spec.status();
    nlohmann::ordered_json row;
    row["namespace"] = r.key.ns;
    row["name"] = r.key.name;
    row["service"] = spec->service_name;
    row["addressType"] = spec->address_type == AF_INET6 ? "IPv6" : "IPv4";
    nlohmann::ordered_json ports = nlohmann::ordered_json::array();
    for (const auto& p : spec->ports) {
      ports.push_back(
          absl::StrCat(p.name.empty() ? "" : p.name + ":", p.port, "/", protocolText(p.protocol)));
    }
    row["ports"] = std::move(ports);
    nlohmann::ordered_json endpoints = nlohmann::ordered_json::array();
    size_t total = 0;
    size_t ready = 0;
    for (const auto& e : spec->endpoints) {
      for (const auto& a : e.addresses) {
        endpoints.push_back(a.toString());
        ++total;
        if (e.ready) ++ready;
      }
    }
    row["endpoints"] = std::move(endpoints);
    row["ready"] = absl::StrCat(ready, "/", total);
    out.push_back(std::move(row));
  }
  return out;
}

nlohmann::ordered_json resourcesView(const std::vector<resources::Resource>& all,
                                     std::string_view ns, std::string_view name) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& r : all) {
    if (!matches(ns, r.key.ns) || !matches(name, r.key.name)) continue;
    nlohmann::ordered_json row;
    row["kind"] = r.key.kind;
    row["namespace"] = r.key.ns;
    row["name"] = r.key.name;
    row["source"] =
        r.source.empty() ? "" : (r.line > 0 ? absl::StrCat(r.source, ":", r.line) : r.source);
    row["object"] = r.object;
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace meshd::api
