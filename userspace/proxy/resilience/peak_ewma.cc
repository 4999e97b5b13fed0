#include "proxy/resilience/peak_ewma.h"

#include <algorithm>
#include <cmath>

namespace meshd::proxy::resilience {
namespace {

// exp(-elapsed / decay): the weight the old average keeps after `elapsed`.
double keep(uint64_t stamp_ns, uint64_t now_ns, uint64_t decay_ns) {
  if (now_ns <= stamp_ns || decay_ns == 0) return now_ns <= stamp_ns ? 1.0 : 0.0;
  return std::exp(-static_cast<double>(now_ns - stamp_ns) / static_cast<double>(decay_ns));
}

// The index whose weight interval holds `x` (< total weight).
size_t byWeight(absl::Span<const uint64_t> cumulative, uint64_t x) {
  return static_cast<size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), x) -
                             cumulative.begin());
}

// Uniform in [0, n) from 32 random bits.
uint64_t below(uint64_t n, uint32_t bits) { return (n * bits) >> 32; }

}  // namespace

double PeakEwma::ewmaNs(uint64_t now_ns, uint64_t decay_ns) const {
  return ewma_ns_ * keep(stamp_ns_, now_ns, decay_ns);
}

double PeakEwma::cost(uint64_t now_ns, uint64_t decay_ns) const {
  if (!sampled_) return pending_ == 0 ? 0.0 : kPenalty + pending_;
  return ewmaNs(now_ns, decay_ns) * (pending_ + 1);
}

void PeakEwma::observe(uint64_t rtt_ns, uint64_t now_ns, uint64_t decay_ns) {
  const double rtt = static_cast<double>(rtt_ns);
  const double current = ewmaNs(now_ns, decay_ns);
  if (!sampled_ || rtt > current) {
    ewma_ns_ = rtt;  // a peak replaces the average at once
  } else {
    const double w = keep(stamp_ns_, now_ns, decay_ns);
    ewma_ns_ = ewma_ns_ * w + rtt * (1.0 - w);
  }
  stamp_ns_ = std::max(stamp_ns_, now_ns);
  sampled_ = true;
}

size_t pickP2C(absl::Span<const PeakEwma> endpoints, absl::Span<const uint64_t> cumulative,
               uint64_t random, uint64_t now_ns, uint64_t decay_ns) {
  const size_t n = endpoints.size();
  if (n == 0) return kNoEndpoint;
  if (n == 1) return 0;
  const uint32_t r1 = static_cast<uint32_t>(random);
  const uint32_t r2 = static_cast<uint32_t>(random >> 32);
  size_t a, b;
  if (cumulative.size() == n && cumulative.back() > 0) {
    // First by weight; the second by weight among the others: draw below total - w(a) and
    // step over a's interval.
    const uint64_t total = cumulative.back();
    a = byWeight(cumulative, below(total, r1));
    const uint64_t a_lo = a == 0 ? 0 : cumulative[a - 1];
    const uint64_t a_w = cumulative[a] - a_lo;
    if (a_w == total) return a;  // every other endpoint weighs 0
    uint64_t x = below(total - a_w, r2);
    if (x >= a_lo) x += a_w;
    b = byWeight(cumulative, x);
  } else {
    a = below(n, r1);
    b = below(n - 1, r2);
    if (b >= a) ++b;
  }
  return endpoints[b].cost(now_ns, decay_ns) < endpoints[a].cost(now_ns, decay_ns) ? b : a;
}

void PeakEwmaBalancer::update(absl::Span<const SocketAddress> endpoints) {
  std::vector<PeakEwma> next(endpoints.size());
  absl::flat_hash_map<SocketAddress, size_t> index;
  index.reserve(endpoints.size());
  for (size_t i = 0; i < endpoints.size(); ++i) {
    index.emplace(endpoints[i], i);
    if (auto it = index_.find(endpoints[i]); it != index_.end()) next[i] = state_[it->second];
  }
  state_ = std::move(next);
  index_ = std::move(index);
  ++generation_;
}

size_t PeakEwmaBalancer::indexOf(const SocketAddress& endpoint) const {
  auto it = index_.find(endpoint);
  return it == index_.end() ? kNoEndpoint : it->second;
}

}  // namespace meshd::proxy::resilience
