#include "proxy/resilience/fault.h"

namespace meshd::proxy::resilience {
namespace {

// Whether 32 random bits fall in the first `per_million` millionths of their range.
bool sampled(uint32_t bits, uint32_t per_million) {
  if (per_million >= state::FaultInjection::kMillion) return true;
  return ((uint64_t{bits} * state::FaultInjection::kMillion) >> 32) < per_million;
}

}  // namespace

FaultDecision FaultInjector::decide(uint64_t random) const {
  FaultDecision d;
  if (fault_->delays() && sampled(static_cast<uint32_t>(random), fault_->delay_per_million)) {
    d.delay_ms = fault_->delay_ms;
  }
  if (fault_->aborts() && sampled(static_cast<uint32_t>(random >> 32), fault_->abort_per_million)) {
    if (fault_->abort_grpc_status >= 0) {
      d.abort_grpc_status = fault_->abort_grpc_status;
    } else {
      d.abort_http_status = fault_->abort_http_status;
    }
  }
  return d;
}

}  // namespace meshd::proxy::resilience
