// Request rate limits (RateLimitPolicy, docs/resources.md): node-wide token buckets shared
// by every proxy worker, lock-free.
//
// A bucket is GCRA (the generic cell rate algorithm, as bpf/mesh_rate.bpf.h does in the
// kernel): one atomic "theoretical arrival time" (TAT, nanoseconds of the monotonic clock)
// and one compare-and-swap per admitted request. With T = unit / requestsPerUnit, a request
// at `now` is admitted when max(TAT, now) + T - now <= burst * T, and then TAT moves to
// max(TAT, now) + T; a refused request changes nothing and learns how long until a token
// (max(TAT, now) + T - burst * T - now). A bucket idle long enough (TAT <= now) is full.
//
// Per-client buckets live in a fixed, open-addressed table per policy (or route) keyed by a
// 64-bit hash of the client identity (its SPIFFE ID, else its address): at most `capacity`
// clients (default kDefaultClientCapacity) hold a bucket; a lookup probes kProbe slots. A
// slot whose bucket is full again (TAT <= now) may be taken over by another client (a full
// bucket is the same as a fresh one). When all probed slots are busy — more than `capacity`
// clients active within one refill — the newcomer shares one overflow bucket (same rate)
// with every other such client: limiting stays on, and memory stays bounded.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "resources/resource.h"

namespace meshd::policy {

struct Acquire {
  bool allowed = true;
  uint64_t wait_ns = 0;  // refused: until the next token
  // Retry-After: whole seconds, rounded up, at least 1.
  uint32_t retryAfterSeconds() const;
};

class TokenBucket {
 public:
  TokenBucket() = default;  // unlimited until configured
  explicit TokenBucket(const resources::RequestRate& rate) { configure(rate); }
  // Not thread-safe: before the bucket is shared.
  void configure(const resources::RequestRate& rate);
  bool limited() const { return interval_ns_ != 0; }
  Acquire tryAcquire(uint64_t now_ns);
  // Starts full (as after a long idle time).
  void reset() { tat_.store(0, std::memory_order_relaxed); }
  // For the client table: whether the bucket is full at `now`.
  bool idle(uint64_t now_ns) const { return tat_.load(std::memory_order_relaxed) <= now_ns; }

 private:
  uint64_t interval_ns_ = 0;   // T; 0 = unlimited
  uint64_t tolerance_ns_ = 0;  // burst * T
  std::atomic<uint64_t> tat_{0};
};

inline constexpr size_t kDefaultClientCapacity = 4096;

class ClientBuckets {
 public:
  static constexpr size_t kProbe = 16;
  // capacity: rounded up to a power of two (at least kProbe).
  ClientBuckets(const resources::RequestRate& rate, size_t capacity = kDefaultClientCapacity);
  Acquire tryAcquire(std::string_view client, uint64_t now_ns);
  size_t capacity() const { return mask_ + 1; }
  // Requests that went to the overflow bucket (the table was full).
  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    std::atomic<uint64_t> key{0};  // 0 = free
    TokenBucket bucket;
  };
  std::unique_ptr<Slot[]> slots_;
  size_t mask_ = 0;
  TokenBucket overflow_;
  std::atomic<uint64_t> overflowed_{0};
};

// The buckets of one RateLimitPolicy (one Service), node-wide.
class RateLimiter {
 public:
  enum class Scope : uint8_t { kNone, kService, kClient };
  struct Result {
    Acquire acquire;
    Scope scope = Scope::kNone;  // the bucket that refused (kNone when allowed)
  };
  RateLimiter(std::string name, resources::RateLimitPolicySpec spec,
              size_t client_capacity = kDefaultClientCapacity);

  // One request: the first spec.routes entry that matches (http_route: the matched route's
  // name; path: the request path) replaces the top-level buckets. The shared bucket is
  // tried first, then the client's; a refusal by the client bucket does not give back the
  // shared token (as two stacked Envoy local rate limits would not).
  Result tryAcquire(std::string_view http_route, std::string_view path, std::string_view client,
                    uint64_t now_ns);

  const std::string& name() const { return name_; }  // "ns/name"
  const resources::RateLimitPolicySpec& spec() const { return spec_; }

 private:
  struct Level {
    TokenBucket shared;
    std::unique_ptr<ClientBuckets> per_client;  // null = no per-client limit
  };
  std::string name_;
  resources::RateLimitPolicySpec spec_;
  Level top_;
  std::vector<std::unique_ptr<Level>> routes_;  // parallel to spec_.routes
};

// CLOCK_MONOTONIC in nanoseconds.
uint64_t monotonicNowNs();

}  // namespace meshd::policy
