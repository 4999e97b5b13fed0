#include "policy/rate_limit.h"

#include <time.h>

#include <bit>
#include <limits>

#include "absl/hash/hash.h"

namespace meshd::policy {

uint32_t Acquire::retryAfterSeconds() const {
  const uint64_t s = (wait_ns + 999'999'999) / 1'000'000'000;
  if (s < 1) return 1;
  return s > std::numeric_limits<uint32_t>::max() ? std::numeric_limits<uint32_t>::max()
                                                  : static_cast<uint32_t>(s);
}

void TokenBucket::configure(const resources::RequestRate& rate) {
  tat_.store(0, std::memory_order_relaxed);
  if (!rate.set()) {
    interval_ns_ = 0;
    tolerance_ns_ = 0;
    return;
  }
  interval_ns_ = std::max<uint64_t>(1, rate.unitNs() / rate.requests_per_unit);
  const uint64_t burst = std::max<uint32_t>(1, rate.burst);
  // Saturate: 1e9 burst x an hour's interval would overflow; 2^62 ns is 146 years.
  constexpr uint64_t kMax = uint64_t{1} << 62;
  tolerance_ns_ = burst > kMax / interval_ns_ ? kMax : burst * interval_ns_;
}

Acquire TokenBucket::tryAcquire(uint64_t now_ns) {
  if (interval_ns_ == 0) return {};
  uint64_t tat = tat_.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t next = std::max(tat, now_ns) + interval_ns_;
    if (next - now_ns > tolerance_ns_) {
      return Acquire{false, next - now_ns - tolerance_ns_};
    }
    if (tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) return {};
  }
}

ClientBuckets::ClientBuckets(const resources::RequestRate& rate, size_t capacity) {
  const size_t n = std::bit_ceil(std::max(capacity, kProbe));
  slots_ = std::make_unique<Slot[]>(n);
  mask_ = n - 1;
  for (size_t i = 0; i < n; ++i) slots_[i].bucket.configure(rate);
  overflow_.configure(rate);
}

Acquire ClientBuckets::tryAcquire(std::string_view client, uint64_t now_ns) {
  uint64_t key = absl::HashOf(client);
  if (key == 0) key = 1;
  const size_t start = key & mask_;
  Slot* reusable = nullptr;
  for (size_t k = 0; k < kProbe; ++k) {
    Slot& s = slots_[(start + k) & mask_];
    uint64_t cur = s.key.load(std::memory_order_acquire);
    if (cur == key) return s.bucket.tryAcquire(now_ns);
    if (cur == 0) {
      if (s.key.compare_exchange_strong(cur, key, std::memory_order_acq_rel)) {
        return s.bucket.tryAcquire(now_ns);
      }
      if (cur == key) return s.bucket.tryAcquire(now_ns);  // another worker took it for us
      continue;
    }
    if (reusable == nullptr && s.bucket.idle(now_ns)) reusable = &s;
  }
  if (reusable != nullptr) {
    // A full bucket equals a fresh one: take the slot over. (A request of the old client
    // racing with this may spend one token of the new client's: harmless.)
    uint64_t cur = reusable->key.load(std::memory_order_acquire);
    if (cur == key || reusable->key.compare_exchange_strong(cur, key, std::memory_order_acq_rel)) {
      return reusable->bucket.tryAcquire(now_ns);
    }
  }
  overflowed_.fetch_add(1, std::memory_order_relaxed);
  return overflow_.tryAcquire(now_ns);
}

RateLimiter::RateLimiter(std::string name, resources::RateLimitPolicySpec spec,
                         size_t client_capacity)
    : name_(std::move(name)), spec_(std::move(spec)) {
  auto setUp = [&](Level& l, const resources::RequestRate& shared,
                   const resources::RequestRate& per_client) {
    l.shared.configure(shared);
    if (per_client.set())
      l.per_client = std::make_unique<ClientBuckets>(per_client, client_capacity);
  };
  setUp(top_, spec_.requests, spec_.per_client);
  for (const auto& r : spec_.routes) {
    auto l = std::make_unique<Level>();
    setUp(*l, r.requests, r.per_client);
    routes_.push_back(std::move(l));
  }
}

RateLimiter::Result RateLimiter::tryAcquire(std::string_view http_route, std::string_view path,
                                            std::string_view client, uint64_t now_ns) {
  Level* level = &top_;
  for (size_t i = 0; i < spec_.routes.size(); ++i) {
    const resources::RateLimitRoute& r = spec_.routes[i];
    if (!r.http_route.empty() && r.http_route != http_route) continue;
    if (!r.path_prefix.empty() && !path.starts_with(r.path_prefix)) continue;
    level = routes_[i].get();
    break;
  }
  Result out;
  out.acquire = level->shared.tryAcquire(now_ns);
  if (!out.acquire.allowed) {
    out.scope = Scope::kService;
    return out;
  }
  if (level->per_client != nullptr) {
    out.acquire = level->per_client->tryAcquire(client, now_ns);
    if (!out.acquire.allowed) out.scope = Scope::kClient;
  }
  return out;
}

uint64_t monotonicNowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ULL + uint64_t(ts.tv_nsec);
}

}  // namespace meshd::policy
