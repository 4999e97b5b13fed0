#include "histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace meshd::loadgen {

namespace {
constexpr uint64_t kSubBuckets = uint64_t{1} << LatencyHistogram::kSubBucketBits;
}  // namespace

size_t LatencyHistogram::bucketIndex(uint64_t v) {
  v = std::min(v, kMaxValueUs);
  if (v < kSubBuckets) return static_cast<size_t>(v);
  // e = position of the top bit (>= kSubBucketBits). Keep the top kSubBucketBits+1 bits:
  // the leading 1 selects the power-of-two range, the rest the sub-bucket within it.
  const int e = std::bit_width(v) - 1;
  const int shift = e - kSubBucketBits;
  const uint64_t mantissa = v >> shift;  // in [kSubBuckets, 2*kSubBuckets)
  return static_cast<size_t>((shift + 1) * kSubBuckets + (mantissa - kSubBuckets));
}

uint64_t LatencyHistogram::bucketHighest(size_t index) {
  if (index < kSubBuckets) return index;
  const uint64_t shift = index / kSubBuckets - 1;
  const uint64_t mantissa = kSubBuckets + index % kSubBuckets;
  return ((mantissa + 1) << shift) - 1;
}

LatencyHistogram::LatencyHistogram() : counts_(bucketIndex(kMaxValueUs) + 1, 0) {}

void LatencyHistogram::record(uint64_t value_us) {
  value_us = std::min(value_us, kMaxValueUs);
  counts_[bucketIndex(value_us)]++;
  count_++;
  sum_ += value_us;
  min_ = std::min(min_, value_us);
  max_ = std::max(max_, value_us);
}

uint64_t LatencyHistogram::valueAtPercentile(double p) const {
  if (count_ == 0) return 0;
  if (p >= 100.0) return max_;
  p = std::max(p, 0.0);
  // Nearest rank: the ceil(p/100 * n)-th smallest value (1-based), at least the first.
  // The epsilon keeps e.g. 99.9% of 1000 at rank 999 despite 0.999 not being exact.
  const uint64_t rank = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::ceil(p * static_cast<double>(count_) / 100.0 - 1e-9)));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); i++) {
    seen += counts_[i];
    if (seen >= rank) return std::min(bucketHighest(i), max_);
  }
  return max_;
}

uint64_t LatencyHistogram::countAtOrAbove(uint64_t value_us) const {
  uint64_t n = 0;
  for (size_t i = bucketIndex(value_us); i < counts_.size(); i++) n += counts_[i];
  return n;
}

}  // namespace meshd::loadgen
