#include "api/views.h"

#include <arpa/inet.h>

#include "absl/strings/str_cat.h"

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
}

}  // namespace

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
                                   std::string_view name,
                                   const nlohmann::ordered_json& node_stats) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  nlohmann::ordered_json node = nlohmann::ordered_json::object();
  for (const char* reason :
       {"no_backend", "backend_missing", "family_mismatch", "maglev_missing", "limit_service",
        "limit_backend", "limit_rerouted", "rate_service", "rate_client"}) {
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
    nlohmann::ordered_json backends = nlohmann::ordered_json::array();
    size_t full = 0;
    for (const auto& b : fv.backends) {
      const bool at_limit = f.max_connections_per_backend != 0 &&
                            b.counters.live_conns >= int64_t{f.max_connections_per_backend};
      full += at_limit;
      backends.push_back({{"backend", hostPort(b.address, b.port)},
                          {"liveConnections", b.counters.live_conns},
                          {"limit", limitJson(f.max_connections_per_backend)},
                          {"atLimit", at_limit},
                          {"connectFailures", b.counters.connect_failures}});
    }
    row["backends"] = std::move(backends);
    std::string verdict;
    if (fv.backends.empty()) {
      verdict = "refusing: the service has no ready backend (connect() fails with ECONNREFUSED)";
    } else if (f.protocol != state::Protocol::kTcp) {
      verdict = "admitting: connection limits apply to TCP only";
    } else if (f.max_connections != 0 && fv.counters.live_conns >= int64_t{f.max_connections}) {
      verdict = absl::StrCat("refusing: at maxConnections (", fv.counters.live_conns, "/",
                             f.max_connections, "); connect() fails with ECONNREFUSED");
    } else if (full == fv.backends.size()) {
      verdict = absl::StrCat("refusing: every backend is at maxConnectionsPerBackend (",
                             f.max_connections_per_backend, "); connect() fails with ECONNREFUSED");
    } else if (full > 0) {
      verdict = absl::StrCat("admitting: ", full, " of ", fv.backends.size(),
                             " backends are full and skipped for ones with room");
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
                                    std::string_view name) {
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
