#include "proxy/resilience/outlier.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"

namespace meshd::proxy::resilience {

L7Result classifyStatus(uint16_t http_status) {
  if (http_status >= 502 && http_status <= 504) return L7Result::kGatewayError;
  if (http_status >= 500 && http_status <= 599) return L7Result::k5xx;
  return L7Result::kSuccess;
}

L7Result classify(const TryOutcome& outcome) {
  if (outcome.kind != TryOutcome::Kind::kResponse) return L7Result::kGatewayError;
  if (outcome.grpc_status > 0) return classifyStatus(httpStatusFromGrpc(outcome.grpc_status));
  return classifyStatus(outcome.http_status);
}

uint16_t httpStatusFromGrpc(int32_t grpc_status) {
  switch (grpc_status) {
    case 0:  // OK
      return 200;
    case 1:  // CANCELLED
      return 499;
    case 3:   // INVALID_ARGUMENT
    case 9:   // FAILED_PRECONDITION
    case 11:  // OUT_OF_RANGE
      return 400;
    case 4:  // DEADLINE_EXCEEDED
      return 504;
    case 5:  // NOT_FOUND
      return 404;
    case 6:   // ALREADY_EXISTS
    case 10:  // ABORTED
      return 409;
    case 7:  // PERMISSION_DENIED
      return 403;
    case 8:  // RESOURCE_EXHAUSTED
      return 429;
    case 12:  // UNIMPLEMENTED
      return 501;
    case 14:  // UNAVAILABLE
      return 503;
    case 16:  // UNAUTHENTICATED
      return 401;
    default:  // UNKNOWN, INTERNAL, DATA_LOSS, anything else
      return 500;
  }
}

uint32_t L7Outlier::ejectionMs(uint32_t base_ms, uint32_t max_ms, uint32_t times) {
  const uint64_t ms = uint64_t{base_ms} * std::max<uint32_t>(times, 1);
  return static_cast<uint32_t>(max_ms != 0 && ms > max_ms ? max_ms : ms);
}

uint32_t L7Outlier::ejectionCap(uint32_t percent, size_t endpoints) {
  if (percent == 0) return 0;
  const uint64_t cap = uint64_t{std::min<uint32_t>(percent, 100)} * endpoints / 100;
  return cap < 1 ? 1 : static_cast<uint32_t>(cap);
}

L7Outlier::L7Outlier(const state::L7OutlierSettings& settings,
                     absl::Span<const SocketAddress> endpoints)
    : settings_(settings),
      n_(endpoints.size()),
      cap_(ejectionCap(settings.max_ejection_percent, endpoints.size())),
      addresses_(new SocketAddress[endpoints.size()]),
      states_(new EndpointState[endpoints.size()]) {
  std::copy(endpoints.begin(), endpoints.end(), addresses_.get());
}

L7Outlier::L7Outlier(const L7Outlier& previous, const state::L7OutlierSettings& settings,
                     absl::Span<const SocketAddress> endpoints)
    : L7Outlier(settings, endpoints) {
  absl::flat_hash_map<SocketAddress, size_t> old;
  for (size_t i = 0; i < previous.n_; ++i) old.emplace(previous.addresses_[i], i);
  uint32_t ejected = 0;
  for (size_t i = 0; i < n_; ++i) {
    auto it = old.find(addresses_[i]);
    if (it == old.end()) continue;
    const EndpointState& from = previous.states_[it->second];
    EndpointState& to = states_[i];
    to.run_5xx.store(from.run_5xx.load());
    to.run_gateway.store(from.run_gateway.load());
    to.times.store(from.times.load());
    uint64_t until = from.ejected_until_ms.load();
    if (until == kClaimed) until = 0;  // not published by a live thread: drop
    to.ejected_until_ms.store(until);
    if (until != 0) ++ejected;
  }
  ejected_.store(ejected);
  // The cluster's counters continue (they are exported as Prometheus counters).
  ejections_.store(previous.ejections_.load());
  skipped_.store(previous.skipped_.load());
}

bool L7Outlier::expire(EndpointState& s, uint64_t until, uint64_t now_ms) {
  if (until == 0 || until == kClaimed || until > now_ms) return false;
  if (!s.ejected_until_ms.compare_exchange_strong(until, 0, std::memory_order_acq_rel)) {
    return false;  // another thread ended (or renewed) it
  }
  ejected_.fetch_sub(1, std::memory_order_acq_rel);
  return true;
}

bool L7Outlier::ejected(size_t i, uint64_t now_ms) {
  EndpointState& s = states_[i];
  const uint64_t until = s.ejected_until_ms.load(std::memory_order_acquire);
  if (until == 0) return false;
  if (until == kClaimed || until > now_ms) return true;
  expire(s, until, now_ms);
  return false;
}

size_t L7Outlier::sweep(uint64_t now_ms) {
  size_t ended = 0;
  for (size_t i = 0; i < n_; ++i) {
    EndpointState& s = states_[i];
    if (expire(s, s.ejected_until_ms.load(std::memory_order_acquire), now_ms)) ++ended;
  }
  return ended;
}

bool L7Outlier::countOne() {
  uint32_t cur = ejected_.load(std::memory_order_relaxed);
  do {
    if (cur >= cap_) return false;
  } while (!ejected_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel,
                                           std::memory_order_relaxed));
  return true;
}

bool L7Outlier::eject(size_t i, uint64_t now_ms, EjectionSink& sink) {
  EndpointState& s = states_[i];
  uint64_t expected = 0;
  if (!s.ejected_until_ms.compare_exchange_strong(expected, kClaimed, std::memory_order_acq_rel)) {
    return false;  // ejected already, or another thread is ejecting it
  }
  // Count it against the cap with a compare-and-swap: exact under concurrency, and the count
  // never shows more than the cap (the kernel's add-then-undo briefly does).
  bool counted = countOne();
  // At the cap: ejections that ended without anyone noticing free room first.
  if (!counted && cap_ != 0 && sweep(now_ms) != 0) counted = countOne();
  if (!counted) {
    s.ejected_until_ms.store(0, std::memory_order_release);
    skipped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const uint32_t times = s.times.fetch_add(1, std::memory_order_acq_rel) + 1;
  const uint32_t ms = ejectionMs(settings_.base_ejection_ms, settings_.max_ejection_ms, times);
  s.run_5xx.store(0, std::memory_order_relaxed);
  s.run_gateway.store(0, std::memory_order_relaxed);
  s.ejected_until_ms.store(now_ms + ms, std::memory_order_release);
  ejections_.fetch_add(1, std::memory_order_relaxed);
  sink.eject(addresses_[i].ip, addresses_[i].port, ms);
  return true;
}

bool L7Outlier::record(size_t i, L7Result result, uint64_t now_ms, EjectionSink& sink) {
  EndpointState& s = states_[i];
  if (ejected(i, now_ms)) return false;  // results of requests sent before the ejection
  if (result == L7Result::kSuccess) {
    // Write only when needed: every success would otherwise dirty the line for all workers.
    if (s.run_5xx.load(std::memory_order_relaxed) != 0)
      s.run_5xx.store(0, std::memory_order_relaxed);
    if (s.run_gateway.load(std::memory_order_relaxed) != 0) {
      s.run_gateway.store(0, std::memory_order_relaxed);
    }
    return false;
  }
  const uint32_t run_5xx = s.run_5xx.fetch_add(1, std::memory_order_acq_rel) + 1;
  uint32_t run_gateway = 0;
  if (result == L7Result::kGatewayError) {
    run_gateway = s.run_gateway.fetch_add(1, std::memory_order_acq_rel) + 1;
  } else if (s.run_gateway.load(std::memory_order_relaxed) != 0) {
    s.run_gateway.store(0, std::memory_order_relaxed);
  }
  const bool trip_5xx = settings_.consecutive_5xx != 0 && run_5xx >= settings_.consecutive_5xx;
  const bool trip_gateway = settings_.consecutive_gateway_errors != 0 &&
                            run_gateway >= settings_.consecutive_gateway_errors;
  if (!trip_5xx && !trip_gateway) return false;
  return eject(i, now_ms, sink);
}

}  // namespace meshd::proxy::resilience
