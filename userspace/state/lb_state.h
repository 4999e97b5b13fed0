// The desired load-balancing state: what the state model computes from the
// applied resources and what the reconciler writes into the BPF maps. Plain
// values; comparing two of them is how the reconciler finds what changed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/net.h"

namespace meshd::state {

enum class Protocol : uint8_t { kTcp = 6, kUdp = 17 };

// Mirrors enum mesh_lb_algo in bpf/include/mesh_abi.h (same numeric values).
enum class LbAlgorithm : uint8_t {
  kRandom = 0,
  kWeightedRandom = 1,
  kMaglev = 2,
  kLeastConnections = 3,
  kLeastLatency = 4,  // p2c-ewma: two candidates, lower SRTT EWMA x (live + 1) wins
};

// Passive outlier detection of a frontend's backends (mesh_svc.eject_*), done
// by the kernel. Defaults are Envoy's and Istio's (5 failures, 30 s, 10%) with
// Envoy's 300 s cap on the ejection time.
struct OutlierDetection {
  static constexpr uint32_t kDefaultConsecutiveFailures = 5;
  static constexpr uint32_t kDefaultBaseEjectionMs = 30'000;
  static constexpr uint32_t kDefaultMaxEjectionMs = 300'000;
  static constexpr uint32_t kDefaultMaxEjectionPercent = 10;

  uint32_t consecutive_failures = kDefaultConsecutiveFailures;  // 0 = detection off
  uint32_t base_ejection_ms = kDefaultBaseEjectionMs;  // x times ejected, at most max_ejection_ms
  uint32_t max_ejection_ms = kDefaultMaxEjectionMs;
  uint32_t max_ejection_percent = kDefaultMaxEjectionPercent;  // 0..100; 0 = eject nothing

  friend bool operator==(const OutlierDetection&, const OutlierDetection&) = default;
};

// A connect-rate token bucket (TCP connects; per_second 0 = unlimited): holds up to
// `burst` tokens and refills `per_second` a second.
struct ConnectRate {
  uint32_t per_second = 0;
  uint32_t burst = 0;

  friend bool operator==(const ConnectRate&, const ConnectRate&) = default;
};

struct Backend {
  IpAddress address;
  uint16_t port = 0;    // host order
  uint32_t weight = 1;  // 1..10000
  std::string node;     // EndpointSlice endpoints[].nodeName, informational
  std::string target;   // e.g. "Pod/default/web-1" from targetRef, informational

  friend bool operator==(const Backend&, const Backend&) = default;
};

// One frontend: a Service's clusterIP:port/protocol and the backends behind it.
struct Frontend {
  std::string ns;         // Service namespace
  std::string service;    // Service name
  std::string port_name;  // Service port name ("" when unnamed)
  IpAddress vip;
  uint16_t port = 0;  // host order
  Protocol protocol = Protocol::kTcp;
  LbAlgorithm algorithm = LbAlgorithm::kWeightedRandom;
  uint32_t maglev_table_size = 0;            // prime; set when algorithm == kMaglev
  uint32_t max_connections = 0;              // live TCP connections via this frontend; 0 = no limit
  uint32_t max_connections_per_backend = 0;  // live TCP connections per backend; 0 = no limit
  ConnectRate connect_rate;                  // whole frontend, node-wide
  ConnectRate client_connect_rate;           // each client workload (cgroup) of the frontend
  // A backend leaving the frontend: its connections are ended at once (true)
  // rather than left to finish (false, the default).
  bool terminate_removed = false;
  // Requests through this frontend need meshd's L7 proxy (an HTTPRoute/GRPCRoute is bound to it):
  // the connect hook sends them to meshd's listener instead of a backend.
  bool l7 = false;
  OutlierDetection outlier;       // TCP only: UDP gives no failure signal
  std::vector<Backend> backends;  // ready endpoints only, sorted by (address, port)

  friend bool operator==(const Frontend&, const Frontend&) = default;
};

// Everything the kernel fast path should know. Frontends sorted by (vip, port, protocol).
struct DesiredLbState {
  std::vector<Frontend> frontends;
  friend bool operator==(const DesiredLbState&, const DesiredLbState&) = default;
};

}  // namespace meshd::state
