// Latency-aware balancing per request: Finagle's peak-EWMA with power of two choices
// (loadBalancer.algorithm LeastLatency on the L7 path).
//
// Each endpoint keeps a moving average of its response times that is peak-sensitive: a
// sample above the average replaces it at once, a sample below is folded in with weight
// 1 - exp(-elapsed / decay). Between samples the average decays towards 0 with the same time
// constant (Finagle decays it on every read), so an endpoint that stopped getting requests
// because it was slow becomes cheap again and is probed: if it recovered, it keeps its share.
//
//   cost = ewma x (pending + 1)
//   no sample yet: 0 when idle, else kPenalty + pending (probe it once, do not pile on)
//
// P2C draws two distinct endpoints (by weight, as the kernel's LeastLatency does) and picks
// the cheaper. State is per worker (no atomics, nothing shared): each worker balances its
// own requests, as Envoy's per-worker load balancers do, and the pending counts are that
// worker's in-flight requests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "common/net.h"

namespace meshd::proxy::resilience {

class PeakEwma {
 public:
  // Finagle's default decay time constant.
  static constexpr uint64_t kDefaultDecayNs = 10'000'000'000;
  // Cost of an endpoint with requests in flight and no sample yet (Finagle: MaxValue / 2).
  static constexpr double kPenalty = 1e300;

  // The average response time at `now_ns`, in ns (decayed since the last sample).
  double ewmaNs(uint64_t now_ns, uint64_t decay_ns) const;
  // What one more request here costs at `now_ns` (see the file comment).
  double cost(uint64_t now_ns, uint64_t decay_ns) const;

  // A request was sent here.
  void start() { ++pending_; }
  // That request ended (response, failure or timeout) after `rtt_ns`, at `now_ns`.
  void finish(uint64_t rtt_ns, uint64_t now_ns, uint64_t decay_ns) {
    if (pending_ > 0) --pending_;
    observe(rtt_ns, now_ns, decay_ns);
  }
  // That request was never sent (picked, then refused or abandoned): no sample.
  void cancel() {
    if (pending_ > 0) --pending_;
  }
  // Folds one response time in (peak-sensitive).
  void observe(uint64_t rtt_ns, uint64_t now_ns, uint64_t decay_ns);

  uint32_t pending() const { return pending_; }
  bool sampled() const { return sampled_; }

 private:
  double ewma_ns_ = 0;
  uint64_t stamp_ns_ = 0;
  uint32_t pending_ = 0;
  bool sampled_ = false;
};

inline constexpr size_t kNoEndpoint = std::numeric_limits<size_t>::max();

// P2C over `endpoints`: two distinct candidates drawn by weight when `cumulative` (the
// running sum of the weights, as routing::Cluster::cumulative) is given, else uniformly;
// the one with the lower cost wins (ties: the first drawn). One endpoint: 0. None:
// kNoEndpoint. `random` is any uniformly random 64-bit value (its two halves draw the two
// candidates). Allocates nothing.
size_t pickP2C(absl::Span<const PeakEwma> endpoints, absl::Span<const uint64_t> cumulative,
               uint64_t random, uint64_t now_ns, uint64_t decay_ns = PeakEwma::kDefaultDecayNs);

// One worker's peak-EWMA state for one cluster, indexed like the cluster's endpoint list.
// Config swaps keep the state of endpoints by address: update() with the new list moves each
// kept endpoint's average and pending count to its new index; new endpoints start fresh. (An
// endpoint's latency is a property of the endpoint, not of the snapshot; losing it on every
// reconcile would send a burst to a slow endpoint each time.)
class PeakEwmaBalancer {
 public:
  explicit PeakEwmaBalancer(uint64_t decay_ns = PeakEwma::kDefaultDecayNs) : decay_ns_(decay_ns) {}

  // Sets the endpoint list (the worker, when it sees a new snapshot). Allocates; not per
  // request.
  void update(absl::Span<const SocketAddress> endpoints);

  size_t size() const { return state_.size(); }
  uint64_t generation() const { return generation_; }
  // pickP2C over this list.
  size_t pick(absl::Span<const uint64_t> cumulative, uint64_t random, uint64_t now_ns) const {
    return pickP2C(state_, cumulative, random, now_ns, decay_ns_);
  }
  void onStart(size_t i) { state_[i].start(); }
  void onFinish(size_t i, uint64_t rtt_ns, uint64_t now_ns) {
    state_[i].finish(rtt_ns, now_ns, decay_ns_);
  }
  // A request picked for endpoint `i` that was never sent (onStart without onFinish).
  void onCancel(size_t i) { state_[i].cancel(); }
  // The index of an endpoint in the current list, kNoEndpoint when absent: for a request that
  // started before an update() (its generation differs) and finishes after it.
  size_t indexOf(const SocketAddress& endpoint) const;
  const PeakEwma& endpoint(size_t i) const { return state_[i]; }

 private:
  uint64_t decay_ns_;
  uint64_t generation_ = 0;
  std::vector<PeakEwma> state_;
  absl::flat_hash_map<SocketAddress, size_t> index_;
};

}  // namespace meshd::proxy::resilience
