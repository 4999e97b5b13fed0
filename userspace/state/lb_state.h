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

// --- Request-level policy (TrafficPolicy requestLimits, retries, faultInjection and the L7
// fields of outlierDetection): what meshd's L7 proxy applies per request to the Service. The
// mechanisms are in userspace/proxy/resilience/; docs/design/0003-l7-proxy.md, "Resilience (as
// built)". Defaults are Envoy's and Istio's.

// Which outcomes of a try are retried (retries.retryOn). Bits; names as in Envoy's
// x-envoy-retry-on / x-envoy-retry-grpc-on and Istio's retryOn.
enum RetryOn : uint32_t {
  kRetryOnConnectFailure = 1u << 0,        // connect-failure: connect refused/failed/timed out
  kRetryOnRefusedStream = 1u << 1,         // refused-stream: HTTP/2 REFUSED_STREAM
  kRetryOnReset = 1u << 2,                 // reset: reset/EOF/per-try timeout before the head
  kRetryOn5xx = 1u << 3,                   // 5xx: any 5xx, and everything `reset` covers
  kRetryOnGatewayError = 1u << 4,          // gateway-error: 502, 503, 504 (and per-try timeout)
  kRetryOnRetriableStatusCodes = 1u << 5,  // retriable-status-codes: retriableStatusCodes
  kRetryOnCancelled = 1u << 6,             // gRPC CANCELLED (1)
  kRetryOnDeadlineExceeded = 1u << 7,      // gRPC DEADLINE_EXCEEDED (4)
  kRetryOnResourceExhausted = 1u << 8,     // gRPC RESOURCE_EXHAUSTED (8)
  kRetryOnInternal = 1u << 9,              // gRPC INTERNAL (13)
  kRetryOnUnavailable = 1u << 10,          // gRPC UNAVAILABLE (14)
};

// retries: Istio's VirtualService retries, Envoy's RetryPolicy.
struct RetrySettings {
  // Istio's default policy (applied by Istio to every route without retries): 2 retries on
  // connect-failure, refused-stream, unavailable, cancelled and retriable-status-codes [503].
  static constexpr uint32_t kDefaultAttempts = 2;
  static constexpr uint32_t kDefaultRetryOn = kRetryOnConnectFailure | kRetryOnRefusedStream |
                                              kRetryOnUnavailable | kRetryOnCancelled |
                                              kRetryOnRetriableStatusCodes;
  static constexpr uint16_t kDefaultRetriableStatus = 503;
  // Envoy's retry back-off: base 25 ms, max 10 x base.
  static constexpr uint32_t kDefaultBaseIntervalMs = 25;
  static constexpr uint32_t kMaxIntervalFactor = 10;

  uint32_t attempts = kDefaultAttempts;  // retries after the first try; 0 = no retry
  uint32_t per_try_timeout_ms = 0;       // 0 = none: only the route timeout bounds the tries
  uint32_t retry_on = kDefaultRetryOn;   // RetryOn bits
  std::vector<uint16_t> retriable_status_codes{kDefaultRetriableStatus};  // sorted, unique
  uint32_t base_interval_ms = kDefaultBaseIntervalMs;
  uint32_t max_interval_ms = kDefaultBaseIntervalMs * kMaxIntervalFactor;

  friend bool operator==(const RetrySettings&, const RetrySettings&) = default;
};

// requestLimits: Envoy's circuit-breaker thresholds per cluster (node-wide in meshd).
struct RequestLimits {
  static constexpr uint32_t kDefaultMaxPendingRequests = 1024;
  static constexpr uint32_t kDefaultMaxRequests = 1024;
  static constexpr uint32_t kDefaultMaxRetries = 3;
  static constexpr uint32_t kDefaultBudgetPercent = 20;
  static constexpr uint32_t kDefaultMinRetryConcurrency = 3;

  uint32_t max_pending_requests = kDefaultMaxPendingRequests;
  uint32_t max_requests = kDefaultMaxRequests;
  uint32_t max_retries = kDefaultMaxRetries;  // concurrent retries; ignored with a retry budget
  // requestLimits.retryBudget given: concurrent retries are limited to
  // max(min_retry_concurrency, budget_percent % of active + pending requests) instead of
  // max_retries (Envoy: a retry budget overrides max_retries).
  bool retry_budget = false;
  uint32_t budget_percent = kDefaultBudgetPercent;  // 0..100
  uint32_t min_retry_concurrency = kDefaultMinRetryConcurrency;

  friend bool operator==(const RequestLimits&, const RequestLimits&) = default;
};

// The L7 signals of outlierDetection. An ejection they cause is written into the same kernel
// state as the connect-failure ones (mesh_backend_state), with the Frontend's OutlierDetection
// timing and cap (copied here so the proxy needs nothing else).
struct L7OutlierSettings {
  // Istio's defaults: consecutive5xxErrors 5; consecutiveGatewayErrors 0 (off).
  static constexpr uint32_t kDefaultConsecutive5xx = 5;

  uint32_t consecutive_5xx = kDefaultConsecutive5xx;  // 0 = off
  uint32_t consecutive_gateway_errors = 0;            // 502/503/504 in a row; 0 = off
  uint32_t base_ejection_ms = OutlierDetection::kDefaultBaseEjectionMs;
  uint32_t max_ejection_ms = OutlierDetection::kDefaultMaxEjectionMs;
  uint32_t max_ejection_percent = OutlierDetection::kDefaultMaxEjectionPercent;

  friend bool operator==(const L7OutlierSettings&, const L7OutlierSettings&) = default;
};

// faultInjection: Istio's HTTPFaultInjection. Percentages are kept in parts per million
// (Istio's percentage is a double; 0.0001% resolution).
struct FaultInjection {
  static constexpr uint32_t kMillion = 1'000'000;

  uint32_t delay_ms = 0;           // 0 = no delay fault
  uint32_t delay_per_million = 0;  // share of requests delayed
  uint16_t abort_http_status = 0;  // 200..599; 0 = none
  int32_t abort_grpc_status = -1;  // 0..16; -1 = none (then abort_http_status applies)
  uint32_t abort_per_million = 0;  // share of requests aborted

  bool delays() const { return delay_ms != 0 && delay_per_million != 0; }
  bool aborts() const {
    return (abort_http_status != 0 || abort_grpc_status >= 0) && abort_per_million != 0;
  }
  friend bool operator==(const FaultInjection&, const FaultInjection&) = default;
};

struct RequestPolicy {
  RequestLimits limits;
  RetrySettings retries;
  L7OutlierSettings outlier;
  FaultInjection fault;
  // loadBalancer.algorithm LeastLatency: per request, peak-EWMA P2C (else weighted random).
  bool peak_ewma = false;

  friend bool operator==(const RequestPolicy&, const RequestPolicy&) = default;
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
  // Requests through this frontend need meshd's L7 proxy (an HTTPRoute/GRPCRoute is bound to
  // it, or its TrafficPolicy sets a request-level field): the connect hook sends them to meshd's
  // listener instead of a backend.
  bool l7 = false;
  OutlierDetection outlier;  // TCP only: UDP gives no failure signal
  // What the L7 proxy applies per request (defaults without a TrafficPolicy). Meaningful for
  // TCP frontends; the kernel ignores it.
  RequestPolicy request;
  std::vector<Backend> backends;  // ready endpoints only, sorted by (address, port)

  friend bool operator==(const Frontend&, const Frontend&) = default;
};

// Everything the kernel fast path should know. Frontends sorted by (vip, port, protocol).
struct DesiredLbState {
  std::vector<Frontend> frontends;
  friend bool operator==(const DesiredLbState&, const DesiredLbState&) = default;
};

}  // namespace meshd::state
