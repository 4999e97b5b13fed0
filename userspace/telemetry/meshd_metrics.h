// meshd's own metrics, rendered from a plain snapshot the daemon fills in
// (so this file knows nothing of the reconciler or the kernel).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "telemetry/http_server.h"

namespace meshd::telemetry {

struct BackendSample {
  std::string ns;
  std::string service;
  std::string backend;  // "address:port" ("[v6]:port")
  uint32_t backend_id = 0;
  int64_t live_connections = 0;
  uint64_t connections_total = 0;
  uint64_t connect_failures_total = 0;
  uint32_t consecutive_failures = 0;  // failed connects since the last success
  bool ejected = false;               // ejected by outlier detection now
  double srtt_seconds = 0;            // EWMA of the kernel's smoothed RTT; 0 = no sample
};

// The kernel's per-service counters (mesh_svc_state) of one frontend.
struct ServiceSample {
  std::string ns;
  std::string service;
  std::string frontend;  // "vip:port/PROTO"
  int64_t live_connections = 0;
  uint64_t refused_max_connections = 0;
  uint64_t refused_backend_limits = 0;
  uint64_t refused_connect_rate = 0;
  uint64_t refused_client_connect_rate = 0;
  uint64_t refused_all_ejected = 0;
  uint64_t rerouted = 0;
  int64_t ejected_backends = 0;
  uint64_t ejections = 0;
  uint64_t ejections_skipped = 0;
  uint64_t refused_authz = 0;  // L4 authorization denied the connect
};

// One STRICT (address, port) entry of a local workload (mesh_strict).
struct StrictSample {
  std::string address;  // "10.1.0.5" or "fd00::5"
  uint16_t port = 0;    // 0 = every port of the address
  uint64_t syn_dropped = 0;
};

struct MeshdMetrics {
  std::string version;
  bool ready = false;
  uint64_t frontends = 0;
  uint64_t backends = 0;
  uint64_t reconcile_ok = 0;
  uint64_t reconcile_error = 0;
  double reconcile_seconds = 0;  // duration of the last reconcile
  // mesh_stats summed over CPUs, by reason name (datapath::statName()).
  std::vector<std::pair<std::string, uint64_t>> bpf_events;
  std::vector<BackendSample> backend_samples;
  std::vector<ServiceSample> service_samples;
  uint64_t draining_backends = 0;  // ids waiting for their connections to close
  uint64_t draining_services = 0;
  std::vector<StrictSample> strict_samples;
};

// The /metrics body. The same backend (same ids and labels) listed under two
// frontends of one service is counted once.
std::string renderMetrics(const MeshdMetrics& m);

// Routes /healthz, /readyz and /metrics. `ready` says whether meshd is ready
// (its error message is the 503 body); `metrics` renders the /metrics body.
HttpHandler makeAdminHandler(std::function<absl::Status()> ready,
                             std::function<std::string()> metrics);

}  // namespace meshd::telemetry
