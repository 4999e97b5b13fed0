// L7 outlier detection: consecutive 5xx / gateway errors per endpoint of a cluster, seen by
// the proxy, turned into "eject this backend" decisions that are published into the kernel's
// ejection state (mesh_backend_state.ejected_until_ns / times_ejected, bpf/mesh_outlier.bpf.h)
// through an EjectionSink — so the connect-time path and the proxy skip the same backends.
//
// Node-wide per cluster: every worker records into one L7Outlier (atomics, no lock, nothing
// allocated per request). The rules mirror the kernel's for connect failures:
//  - a 5xx response adds one to the endpoint's 5xx run; a 502/503/504 also to its gateway run;
//    a connect failure, reset or timeout before the response head counts as a gateway error
//    (as Envoy does when local-origin errors are not split: the client gets a 503/504);
//  - any other response (1xx-4xx) ends both runs; a non-gateway 5xx ends the gateway run;
//  - a run reaching its threshold (consecutive5xxErrors, consecutiveGatewayErrors; 0 = off)
//    ejects the endpoint for baseEjectionTime x times ejected, at most maxEjectionTime, unless
//    that would eject more than the cap: floor(maxEjectionPercent x endpoints / 100), at least
//    one (0% ejects nothing) — counted as skipped; the runs restart after an ejection;
//  - an ejection ends lazily: the first record()/ejected()/sweep() at or after its end.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/types/span.h"
#include "common/net.h"
#include "proxy/resilience/retry.h"
#include "state/lb_state.h"

namespace meshd::proxy::resilience {

// Where ejections go. The daemon implements it over the kernel's mesh_backend_state (ejected
// until now + ms, times_ejected + 1, the service's ejected count); tests record the calls.
// Called on a worker thread, must be thread-safe and must not block.
class EjectionSink {
 public:
  virtual ~EjectionSink() = default;
  // Eject the backend address:port (port in host order) for `ms` milliseconds.
  virtual void eject(const IpAddress& address, uint16_t port, uint32_t ms) = 0;
};

// What one exchange with an endpoint tells outlier detection.
enum class L7Result : uint8_t {
  kSuccess,       // a response that is not 5xx
  k5xx,           // a 5xx other than 502/503/504
  kGatewayError,  // 502/503/504, or no response head (connect failure, reset, timeout)
};

// The result class of an HTTP status (gRPC: map grpc-status first with httpStatusFromGrpc).
L7Result classifyStatus(uint16_t http_status);
// The result class of a try's outcome.
L7Result classify(const TryOutcome& outcome);
// Envoy's mapping of a gRPC status to an HTTP status (UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
// INTERNAL/UNKNOWN/DATA_LOSS 500, UNIMPLEMENTED 501, RESOURCE_EXHAUSTED 429, ...; OK 200).
uint16_t httpStatusFromGrpc(int32_t grpc_status);

class L7Outlier {
 public:
  // Every endpoint starts with no runs and no ejection.
  L7Outlier(const state::L7OutlierSettings& settings, absl::Span<const SocketAddress> endpoints);
  // For a new endpoint list (config swap): endpoints also in `previous` keep their runs,
  // ejection and times ejected (matched by address); the ejected count is recomputed and the
  // ejections()/ejectionsSkipped() counters continue from previous's. Workers
  // may still record into `previous` (they are on the old snapshot): what they record during
  // or after the copy is not carried over, and an ejection being made at that moment is
  // published to the sink but not known here (at most a few results per swap).
  L7Outlier(const L7Outlier& previous, const state::L7OutlierSettings& settings,
            absl::Span<const SocketAddress> endpoints);
  L7Outlier(const L7Outlier&) = delete;
  L7Outlier& operator=(const L7Outlier&) = delete;

  // Records one result of endpoint `i` at `now_ms` (any monotonic millisecond clock). Returns
  // true when this call ejected the endpoint (and called sink.eject once).
  bool record(size_t i, L7Result result, uint64_t now_ms, EjectionSink& sink);
  // Whether endpoint `i` is ejected at `now_ms` (ends an expired ejection).
  bool ejected(size_t i, uint64_t now_ms);
  // Ends every expired ejection; returns how many.
  size_t sweep(uint64_t now_ms);

  size_t size() const { return n_; }
  uint32_t ejectedCount() const { return ejected_.load(std::memory_order_relaxed); }
  // The most endpoints ejected at once (the maxEjectionPercent cap).
  uint32_t cap() const { return cap_; }
  uint64_t ejections() const { return ejections_.load(std::memory_order_relaxed); }
  uint64_t ejectionsSkipped() const { return skipped_.load(std::memory_order_relaxed); }
  uint32_t timesEjected(size_t i) const { return states_[i].times.load(std::memory_order_relaxed); }
  uint32_t consecutive5xx(size_t i) const {
    return states_[i].run_5xx.load(std::memory_order_relaxed);
  }
  uint32_t consecutiveGateway(size_t i) const {
    return states_[i].run_gateway.load(std::memory_order_relaxed);
  }

  // base x times, at most max (the kernel's mesh_eject_duration_ns, in ms).
  static uint32_t ejectionMs(uint32_t base_ms, uint32_t max_ms, uint32_t times);
  // floor(percent x endpoints / 100), at least 1; 0 when percent is 0 (mesh_eject_cap).
  static uint32_t ejectionCap(uint32_t percent, size_t endpoints);

 private:
  // ejected_until while one thread is ejecting the endpoint: counts as ejected.
  static constexpr uint64_t kClaimed = UINT64_MAX;

  struct alignas(64) EndpointState {
    std::atomic<uint32_t> run_5xx{0};
    std::atomic<uint32_t> run_gateway{0};
    std::atomic<uint32_t> times{0};
    std::atomic<uint64_t> ejected_until_ms{0};  // 0 = not ejected
  };

  bool expire(EndpointState& s, uint64_t until, uint64_t now_ms);
  bool eject(size_t i, uint64_t now_ms, EjectionSink& sink);
  bool countOne();

  state::L7OutlierSettings settings_;
  size_t n_;
  uint32_t cap_;
  std::unique_ptr<SocketAddress[]> addresses_;
  std::unique_ptr<EndpointState[]> states_;
  std::atomic<uint32_t> ejected_{0};
  std::atomic<uint64_t> ejections_{0};
  std::atomic<uint64_t> skipped_{0};
};

}  // namespace meshd::proxy::resilience
