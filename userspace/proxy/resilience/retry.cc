#include "proxy/resilience/retry.h"

#include <algorithm>

namespace meshd::proxy::resilience {
namespace {

constexpr uint32_t kResetClass =
    state::kRetryOnReset | state::kRetryOn5xx | state::kRetryOnGatewayError;

bool isGatewayError(uint16_t status) { return status >= 502 && status <= 504; }

uint32_t grpcBit(int32_t code) {
  switch (code) {
    case kGrpcCancelled:
      return state::kRetryOnCancelled;
    case kGrpcDeadlineExceeded:
      return state::kRetryOnDeadlineExceeded;
    case kGrpcResourceExhausted:
      return state::kRetryOnResourceExhausted;
    case kGrpcInternal:
      return state::kRetryOnInternal;
    case kGrpcUnavailable:
      return state::kRetryOnUnavailable;
    default:
      return 0;
  }
}

}  // namespace

bool RetryPolicy::retriable(const TryOutcome& outcome) const {
  const uint32_t on = settings_->retry_on;
  switch (outcome.kind) {
    case TryOutcome::Kind::kConnectFailure:
      return (on & (state::kRetryOnConnectFailure | kResetClass)) != 0;
    case TryOutcome::Kind::kRefusedStream:
      return (on & (state::kRetryOnRefusedStream | kResetClass)) != 0;
    case TryOutcome::Kind::kReset:
    case TryOutcome::Kind::kPerTryTimeout:
      return (on & kResetClass) != 0;
    case TryOutcome::Kind::kResponse:
      break;
  }
  const uint16_t status = outcome.http_status;
  if ((on & state::kRetryOn5xx) != 0 && status >= 500 && status <= 599) return true;
  if ((on & state::kRetryOnGatewayError) != 0 && isGatewayError(status)) return true;
  if ((on & state::kRetryOnRetriableStatusCodes) != 0) {
    const auto& codes = settings_->retriable_status_codes;  // sorted
    if (std::binary_search(codes.begin(), codes.end(), status)) return true;
  }
  return outcome.grpc_status > 0 && (on & grpcBit(outcome.grpc_status)) != 0;
}

bool RetryPolicy::shouldRetry(const TryOutcome& outcome, uint32_t attempt) const {
  if (attempt == 0 || attempt > settings_->attempts) return false;
  const bool nothing_sent = outcome.kind == TryOutcome::Kind::kConnectFailure ||
                            outcome.kind == TryOutcome::Kind::kRefusedStream;
  if (!nothing_sent && !outcome.replayable) return false;
  return retriable(outcome);
}

uint64_t RetryPolicy::backoffCeilingMs(uint32_t retry) const {
  const uint64_t base = settings_->base_interval_ms;
  const uint64_t max = settings_->max_interval_ms;
  if (retry == 0) return 0;
  // (2^retry - 1) x base, saturating: beyond 2^32 the cap has long been reached.
  const uint32_t shift = std::min<uint32_t>(retry, 32);
  const uint64_t multiplier = (uint64_t{1} << shift) - 1;
  const uint64_t ceiling = base != 0 && multiplier > max / base ? max : multiplier * base;
  return std::min(ceiling, max);
}

uint32_t RetryPolicy::backoffMs(uint32_t retry, uint64_t random) const {
  const uint64_t ceiling = backoffCeilingMs(retry);
  if (ceiling == 0) return 0;
  // Uniform in [0, ceiling) by multiply-shift (no modulo bias).
  return static_cast<uint32_t>((static_cast<unsigned __int128>(random) * ceiling) >> 64);
}

}  // namespace meshd::proxy::resilience
