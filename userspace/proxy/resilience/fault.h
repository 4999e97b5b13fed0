// Fault injection (faultInjection in a TrafficPolicy; Istio's HTTPFaultInjection): per
// request, a fixed delay before forwarding and/or an abort answered by the proxy, each for a
// share of requests. Stateless: one decision from one random number, nothing allocated.
//
// The proxy applies a decision as Envoy's fault filter does: the delay first (response flag
// DI), then the abort (flag FI) — an HTTP response with the status, or for a gRPC request a
// trailers-only response (HTTP 200) with the grpc-status; an abort never reaches the upstream.
#pragma once

#include <cstdint>

#include "state/lb_state.h"

namespace meshd::proxy::resilience {

struct FaultDecision {
  uint32_t delay_ms = 0;           // 0 = no delay
  uint16_t abort_http_status = 0;  // 0 = none
  int32_t abort_grpc_status = -1;  // -1 = none

  bool delayed() const { return delay_ms != 0; }
  bool aborted() const { return abort_http_status != 0 || abort_grpc_status >= 0; }
};

class FaultInjector {
 public:
  explicit FaultInjector(const state::FaultInjection& fault) : fault_(&fault) {}

  // The faults for one request. `random` is any uniformly random 64-bit value: its low half
  // decides the delay, its high half the abort (independent draws, as in Istio, where each
  // fault has its own percentage).
  FaultDecision decide(uint64_t random) const;

  bool active() const { return fault_->delays() || fault_->aborts(); }

 private:
  const state::FaultInjection* fault_;  // the policy of the pinned snapshot
};

}  // namespace meshd::proxy::resilience
