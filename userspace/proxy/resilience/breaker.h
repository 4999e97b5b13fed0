// Request-level circuit breakers and the retry budget of one cluster (a backend Service
// port), node-wide: every worker of the proxy shares one CircuitBreaker per cluster. Lock-free
// (compare-and-swap on atomic counters), nothing allocated per request.
//
// Envoy's thresholds: pending requests (waiting for an upstream connection), active requests,
// and active retries — the last either a fixed maximum (maxRetries) or, with retryBudget, a
// share of the active requests (Envoy's retry budget, Finagle's RetryBudget).
//
// When a threshold is reached the proxy answers at once without contacting the upstream:
// HTTP 503 with response flag UO (Envoy's upstream overflow); for a gRPC request a
// trailers-only response with grpc-status UNAVAILABLE (14) — Envoy's local replies for gRPC map
// 503 to UNAVAILABLE, which gRPC clients may retry. A refused retry is not an error of its
// own: the try's original outcome goes to the client.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "state/lb_state.h"

namespace meshd::proxy::resilience {

inline constexpr uint16_t kOverflowHttpStatus = 503;
inline constexpr std::string_view kOverflowFlag = "UO";
inline constexpr int32_t kOverflowGrpcStatus = 14;  // UNAVAILABLE

// Releases one unit of a counter it holds when destroyed (or release()d). Movable; empty
// (false) when the acquisition was refused. Must not outlive the CircuitBreaker/RetryBudget
// it came from (the proxy keeps the config snapshot that owns them pinned for the exchange).
class Guard {
 public:
  Guard() = default;
  explicit Guard(std::atomic<uint64_t>* counter) : counter_(counter) {}
  Guard(Guard&& other) noexcept : counter_(other.counter_) { other.counter_ = nullptr; }
  Guard& operator=(Guard&& other) noexcept {
    if (this != &other) {
      release();
      counter_ = other.counter_;
      other.counter_ = nullptr;
    }
    return *this;
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  ~Guard() { release(); }

  explicit operator bool() const { return counter_ != nullptr; }
  // Gives the unit back now (idempotent).
  void release() {
    if (counter_ != nullptr) counter_->fetch_sub(1, std::memory_order_acq_rel);
    counter_ = nullptr;
  }

 private:
  std::atomic<uint64_t>* counter_ = nullptr;
};

// Concurrent retries allowed while active_retries < max(min_retry_concurrency,
// percent % of the active requests). The active request count is the caller's (the breaker
// passes active + pending requests, as Envoy does).
class RetryBudget {
 public:
  explicit RetryBudget(
      uint32_t percent = state::RequestLimits::kDefaultBudgetPercent,
      uint32_t min_retry_concurrency = state::RequestLimits::kDefaultMinRetryConcurrency)
      : percent_(percent), min_(min_retry_concurrency) {}

  // max(min_retry_concurrency, floor(percent x active_requests / 100)).
  static uint64_t allowed(uint32_t percent, uint32_t min_retry_concurrency,
                          uint64_t active_requests);

  // One more retry in flight, if the budget allows it with `active_requests` requests active.
  // Empty guard when refused.
  Guard tryAcquireRetry(uint64_t active_requests);
  uint64_t activeRetries() const { return retries_.load(std::memory_order_relaxed); }

  // New settings (any thread); retries already in flight stay counted.
  void configure(uint32_t percent, uint32_t min_retry_concurrency) {
    percent_.store(percent, std::memory_order_relaxed);
    min_.store(min_retry_concurrency, std::memory_order_relaxed);
  }

 private:
  std::atomic<uint32_t> percent_;
  std::atomic<uint32_t> min_;
  std::atomic<uint64_t> retries_{0};
};

class CircuitBreaker {
 public:
  explicit CircuitBreaker(const state::RequestLimits& limits = {}) { configure(limits); }
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  // New thresholds (any thread, e.g. on a config swap); counts in flight are kept, so a
  // lowered threshold refuses until enough guards are released.
  void configure(const state::RequestLimits& limits);

  // A request waiting for an upstream connection (the pool had none idle): pending <
  // maxPendingRequests. Release when it gets a connection or gives up.
  Guard tryAcquirePending();
  // A request in flight to the upstream (from the first byte sent until the exchange ends):
  // active < maxRequests.
  Guard tryAcquireRequest();
  // A retry (held from the decision to retry until that try ends): with a retry budget,
  // max(minRetryConcurrency, percent % of active + pending requests); else active retries <
  // maxRetries.
  Guard tryAcquireRetry();

  struct Counts {
    uint64_t pending = 0, active = 0, retries = 0;
    // Refusals so far (Envoy's upstream_rq_pending_overflow, upstream_rq_retry_overflow...).
    uint64_t pending_overflow = 0, request_overflow = 0, retry_overflow = 0;
  };
  Counts counts() const;

 private:
  std::atomic<uint64_t> pending_{0};
  std::atomic<uint64_t> active_{0};
  std::atomic<uint64_t> retries_{0};  // fixed-maximum mode
  RetryBudget budget_;
  std::atomic<uint32_t> max_pending_{0};
  std::atomic<uint32_t> max_requests_{0};
  std::atomic<uint32_t> max_retries_{0};
  std::atomic<bool> use_budget_{false};
  std::atomic<uint64_t> pending_overflow_{0};
  std::atomic<uint64_t> request_overflow_{0};
  std::atomic<uint64_t> retry_overflow_{0};
};

}  // namespace meshd::proxy::resilience
