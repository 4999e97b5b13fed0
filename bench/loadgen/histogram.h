// A log-linear latency histogram in the manner of HdrHistogram: values (microseconds)
// below 2^kSubBucketBits are counted exactly; above, each power-of-two range is split
// into 2^kSubBucketBits equal sub-buckets, so any recorded value is known to within a
// relative error of 2^-kSubBucketBits (0.4%). Fixed memory (~40 KiB), O(1) record.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace meshd::loadgen {

class LatencyHistogram {
 public:
  // 256 linear sub-buckets per power of two: 0.39% worst-case relative error.
  static constexpr int kSubBucketBits = 8;
  // Highest trackable value: 60 s. Larger values are clamped to it (and still counted).
  static constexpr uint64_t kMaxValueUs = 60'000'000;

  LatencyHistogram();

  // Records one value in microseconds.
  void record(uint64_t value_us);

  // Returns the value at percentile p (0 < p <= 100) by nearest rank: the smallest
  // recorded value v such that at least p% of values are <= v, reported as the highest
  // value of v's bucket (never below the true value, at most 0.39% above). Returns 0 when
  // empty. p=100 returns the exact maximum.
  uint64_t valueAtPercentile(double p) const;

  // Number of recorded values >= value_us (counted by bucket: exact for values below
  // 2^kSubBucketBits, within bucket precision above).
  uint64_t countAtOrAbove(uint64_t value_us) const;

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }

  // Bucket index for a (clamped) value, and the highest value that maps to a bucket.
  // Exposed for tests.
  static size_t bucketIndex(uint64_t value_us);
  static uint64_t bucketHighest(size_t index);

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace meshd::loadgen
