// Retry decisions and back-off of one request (retries in a TrafficPolicy; Envoy's
// RetryPolicy and Istio's VirtualService retries). Pure functions of the policy, the outcome
// of the try and a random number: no state, no clock, no allocation.
#pragma once

#include <cstdint>

#include "state/lb_state.h"

namespace meshd::proxy::resilience {

// gRPC status codes the retry conditions name (grpc/doc/statuscodes.md).
inline constexpr int32_t kGrpcCancelled = 1;
inline constexpr int32_t kGrpcDeadlineExceeded = 4;
inline constexpr int32_t kGrpcResourceExhausted = 8;
inline constexpr int32_t kGrpcInternal = 13;
inline constexpr int32_t kGrpcUnavailable = 14;

// How one try of a request ended.
struct TryOutcome {
  enum class Kind : uint8_t {
    kConnectFailure,  // no upstream connection (refused, failed, connect timeout): nothing sent
    kRefusedStream,   // HTTP/2 REFUSED_STREAM, or a GOAWAY below the stream: not processed
    kReset,           // reset or EOF before a complete response head
    kPerTryTimeout,   // perTryTimeout expired before the response head
    kResponse,        // a response head: http_status, and grpc_status when it carried one
  };
  Kind kind = Kind::kResponse;
  uint16_t http_status = 0;  // kResponse
  // kResponse of a gRPC request: grpc-status of the head (a trailers-only response); -1 when
  // the head carried none (a streamed response's status comes in trailers, too late to retry).
  int32_t grpc_status = -1;
  // Whether the whole request can be sent again: the proxy still holds every byte of it (the
  // head is regenerated; the body must not have been streamed past what the proxy keeps).
  bool replayable = true;

  static TryOutcome connectFailure() { return {Kind::kConnectFailure, 0, -1, true}; }
  static TryOutcome refusedStream() { return {Kind::kRefusedStream, 0, -1, true}; }
  static TryOutcome reset(bool replayable = true) { return {Kind::kReset, 0, -1, replayable}; }
  static TryOutcome perTryTimeout(bool replayable = true) {
    return {Kind::kPerTryTimeout, 0, -1, replayable};
  }
  static TryOutcome response(uint16_t status, int32_t grpc = -1, bool replayable = true) {
    return {Kind::kResponse, status, grpc, replayable};
  }
};

class RetryPolicy {
 public:
  explicit RetryPolicy(const state::RetrySettings& settings) : settings_(&settings) {}

  // Whether the outcome is one the policy's retryOn conditions retry (ignoring attempts):
  //   connect failure   connect-failure, reset, 5xx, gateway-error
  //   refused stream    refused-stream, reset, 5xx, gateway-error
  //   reset, per-try timeout                    reset, 5xx, gateway-error
  //   502 / 503 / 504   5xx, gateway-error;  any other 5xx: 5xx
  //   any status        retriable-status-codes when it is listed
  //   grpc-status 1/4/8/13/14  cancelled / deadline-exceeded / resource-exhausted /
  //                            internal / unavailable
  // (Envoy counts every reset, connect failures included, as a "5xx" and a gateway error,
  // since it would answer one; so do we.)
  bool retriable(const TryOutcome& outcome) const;

  // Whether to try again after try number `attempt` (1 = the first try) ended with
  // `outcome`: the outcome is retriable, it is replayable (connect failures and refused
  // streams always are: nothing reached the upstream application), and fewer than `attempts`
  // retries were made (attempt <= attempts). Any method is retried, as Envoy does (see
  // "Resilience (as built)": idempotency). The caller still needs the retry budget/breaker
  // (CircuitBreaker::tryAcquireRetry) and must not have sent any of the response yet.
  bool shouldRetry(const TryOutcome& outcome, uint32_t attempt) const;

  // The back-off before retry number `retry` (1 = the first retry), in ms: Envoy's fully
  // jittered exponential back-off, uniform in [0, min((2^retry - 1) x baseInterval,
  // maxInterval)) — 0-24 ms, 0-74 ms, 0-174 ms... with the defaults, at most 250 ms.
  // `random` is any uniformly random 64-bit value. 0 when the bound is 0.
  uint32_t backoffMs(uint32_t retry, uint64_t random) const;

  // The ceiling backoffMs draws below for `retry`.
  uint64_t backoffCeilingMs(uint32_t retry) const;

  const state::RetrySettings& settings() const { return *settings_; }

 private:
  const state::RetrySettings* settings_;  // the policy of the pinned snapshot
};

}  // namespace meshd::proxy::resilience
