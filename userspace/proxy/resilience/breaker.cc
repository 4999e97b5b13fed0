#include "proxy/resilience/breaker.h"

#include <algorithm>

namespace meshd::proxy::resilience {
namespace {

// Adds one to `counter` unless it is at `limit` already. Compare-and-swap: concurrent callers
// never overshoot the limit, and a refusal never touches the counter (unlike add-then-undo,
// which can make a concurrent caller see a transient excess and be refused wrongly).
bool tryIncrement(std::atomic<uint64_t>& counter, uint64_t limit) {
  uint64_t cur = counter.load(std::memory_order_relaxed);
  do {
    if (cur >= limit) return false;
  } while (!counter.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
  return true;
}

}  // namespace

uint64_t RetryBudget::allowed(uint32_t percent, uint32_t min_retry_concurrency,
                              uint64_t active_requests) {
  const uint64_t share = active_requests * std::min<uint32_t>(percent, 100) / 100;
  return std::max<uint64_t>(min_retry_concurrency, share);
}

Guard RetryBudget::tryAcquireRetry(uint64_t active_requests) {
  const uint64_t limit = allowed(percent_.load(std::memory_order_relaxed),
                                 min_.load(std::memory_order_relaxed), active_requests);
  return tryIncrement(retries_, limit) ? Guard(&retries_) : Guard();
}

void CircuitBreaker::configure(const state::RequestLimits& limits) {
  max_pending_.store(limits.max_pending_requests, std::memory_order_relaxed);
  max_requests_.store(limits.max_requests, std::memory_order_relaxed);
  max_retries_.store(limits.max_retries, std::memory_order_relaxed);
  budget_.configure(limits.budget_percent, limits.min_retry_concurrency);
  use_budget_.store(limits.retry_budget, std::memory_order_relaxed);
}

Guard CircuitBreaker::tryAcquirePending() {
  if (tryIncrement(pending_, max_pending_.load(std::memory_order_relaxed))) return Guard(&pending_);
  pending_overflow_.fetch_add(1, std::memory_order_relaxed);
  return Guard();
}

Guard CircuitBreaker::tryAcquireRequest() {
  if (tryIncrement(active_, max_requests_.load(std::memory_order_relaxed))) return Guard(&active_);
  request_overflow_.fetch_add(1, std::memory_order_relaxed);
  return Guard();
}

Guard CircuitBreaker::tryAcquireRetry() {
  Guard g;
  if (use_budget_.load(std::memory_order_relaxed)) {
    g = budget_.tryAcquireRetry(active_.load(std::memory_order_relaxed) +
                                pending_.load(std::memory_order_relaxed));
  } else if (tryIncrement(retries_, max_retries_.load(std::memory_order_relaxed))) {
    g = Guard(&retries_);
  }
  if (!g) retry_overflow_.fetch_add(1, std::memory_order_relaxed);
  return g;
}

CircuitBreaker::Counts CircuitBreaker::counts() const {
  Counts c;
  c.pending = pending_.load(std::memory_order_relaxed);
  c.active = active_.load(std::memory_order_relaxed);
  c.retries = retries_.load(std::memory_order_relaxed) + budget_.activeRetries();
  c.pending_overflow = pending_overflow_.load(std::memory_order_relaxed);
  c.request_overflow = request_overflow_.load(std::memory_order_relaxed);
  c.retry_overflow = retry_overflow_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace meshd::proxy::resilience
