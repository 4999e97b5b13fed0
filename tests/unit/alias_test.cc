// Vose alias tables: structure and exact bucket probabilities. The sampled
// distributions (the kernel's draw) are in lb_select_test.cc.
#include "datapath/alias.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace meshd::datapath {
namespace {

constexpr double kTwo32 = 4294967296.0;

// Probability that the kernel's two-step draw lands on each bucket: bucket j is
// drawn with 1/n, kept with threshold/2^32 (the draw is uniform over [0, 2^32)),
// otherwise it goes to its alias.
std::vector<double> exactShares(const std::vector<AliasEntry>& table) {
  const double n = static_cast<double>(table.size());
  std::vector<double> p(table.size(), 0.0);
  for (size_t j = 0; j < table.size(); ++j) {
    const double keep = table[j].threshold / kTwo32;
    p[j] += keep / n;
    p[table[j].alias] += (1.0 - keep) / n;
  }
  return p;
}

TEST(AliasTest, EmptyWeightsGiveEmptyTable) { EXPECT_TRUE(buildAliasTable({}).empty()); }

TEST(AliasTest, SingleBackendAlwaysKeepsItself) {
  const uint32_t w[] = {7};
  auto t = buildAliasTable(w);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].threshold, 0xffffffffu);
  EXPECT_EQ(t[0].alias, 0u);
}

TEST(AliasTest, EqualWeightsAreAllFullBuckets) {
  const std::vector<uint32_t> w(17, 42);
  auto t = buildAliasTable(w);
  ASSERT_EQ(t.size(), w.size());
  for (uint32_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].threshold, 0xffffffffu) << i;
    EXPECT_EQ(t[i].alias, i) << i;
  }
}

TEST(AliasTest, OneToThreeThresholds) {
  const uint32_t w[] = {1, 3};
  auto t = buildAliasTable(w);
  ASSERT_EQ(t.size(), 2u);
  // Bucket 0 holds 1/2 of a bucket's worth of backend 0 (0.25 * 2) and gives the
  // rest to backend 1; bucket 1 is full.
  EXPECT_EQ(t[0].threshold, 0x80000000u);
  EXPECT_EQ(t[0].alias, 1u);
  EXPECT_EQ(t[1].threshold, 0xffffffffu);
  EXPECT_EQ(t[1].alias, 1u);
}

// For random weight vectors, every bucket's probability equals its weight share
// to within 1e-9 (the construction is exact up to one 2^-32 truncation per bucket).
TEST(AliasTest, ExactSharesMatchWeights) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 200; ++round) {
    const size_t n = 1 + rng() % 300;
    std::vector<uint32_t> w(n);
    double total = 0;
    for (auto& x : w) {
      x = 1 + rng() % 10000;
      total += x;
    }
    auto t = buildAliasTable(w);
    ASSERT_EQ(t.size(), n);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_LT(t[i].alias, n);
      if (t[i].alias == i) {
        EXPECT_EQ(t[i].threshold, 0xffffffffu) << "a bucket aliasing to itself must be full";
      }
    }
    auto p = exactShares(t);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_NEAR(p[i], w[i] / total, 1e-9) << "n=" << n << " i=" << i;
    }
  }
}

TEST(AliasTest, ZeroWeightNeverPickedAndAllZeroIsUniform) {
  const uint32_t w[] = {0, 5, 5};
  auto p = exactShares(buildAliasTable(w));
  EXPECT_NEAR(p[0], 0.0, 1e-9);
  EXPECT_NEAR(p[1], 0.5, 1e-9);
  const uint32_t z[] = {0, 0, 0, 0};
  for (double share : exactShares(buildAliasTable(z))) EXPECT_NEAR(share, 0.25, 1e-9);
}

TEST(AliasTest, ExtremeWeightsStayExact) {
  std::vector<uint32_t> w(1000, 1);
  w[500] = 10000;
  auto p = exactShares(buildAliasTable(w));
  const double total = 999 + 10000;
  EXPECT_NEAR(p[500], 10000 / total, 1e-9);
  EXPECT_NEAR(p[0], 1 / total, 1e-9);
  // Weights as large as uint32 allows do not overflow the arithmetic.
  const uint32_t big[] = {0xffffffffu, 1, 0xffffffffu};
  auto pb = exactShares(buildAliasTable(big));
  EXPECT_NEAR(pb[1], 1.0 / (2.0 * 0xffffffffu + 1), 1e-9);
  EXPECT_NEAR(pb[0], 0.5, 1e-9);
}

TEST(AliasTest, Deterministic) {
  const uint32_t w[] = {3, 1, 4, 1, 5, 9, 2, 6};
  EXPECT_EQ(buildAliasTable(w), buildAliasTable(w));
}

}  // namespace
}  // namespace meshd::datapath
