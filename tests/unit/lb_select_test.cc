// The kernel's selection arithmetic (bpf/include/mesh_lb.h), driven exactly as
// bpf/mesh_select.bpf.h drives it, with tables from meshd_lbtables: the sampled
// distributions are what connections to a VIP get. Seeded generators, so every
// run draws the same numbers; tolerances are stated per test.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "datapath/alias.h"
#include "datapath/maglev.h"
#include "gtest/gtest.h"
#include "mesh_lb.h"

namespace meshd::datapath {
namespace {

// mesh_weighted_slot(): uniform slot, then the alias step, with two independent draws.
uint32_t weightedPick(const std::vector<AliasEntry>& t, std::mt19937& rng) {
  const uint32_t slot = mesh_uniform(rng(), static_cast<uint32_t>(t.size()));
  return mesh_alias_pick(slot, rng(), t[slot].threshold, t[slot].alias);
}

// Pearson's chi-square statistic of observed counts against expected shares.
double chiSquare(const std::vector<uint64_t>& observed, const std::vector<double>& share,
                 uint64_t draws) {
  double chi = 0;
  for (size_t i = 0; i < observed.size(); ++i) {
    const double e = share[i] * draws;
    chi += (observed[i] - e) * (observed[i] - e) / e;
  }
  return chi;
}

TEST(LbSelectTest, UniformIndexInRange) {
  EXPECT_EQ(mesh_uniform(0, 7), 0u);
  EXPECT_EQ(mesh_uniform(0xffffffffu, 7), 6u);
  EXPECT_EQ(mesh_uniform(0x80000000u, 2), 1u);
  EXPECT_EQ(mesh_uniform(0x7fffffffu, 2), 0u);
}

// 1:3 over 1e6 picks: shares 25% / 75% within +-0.5% absolute. One standard
// deviation is sqrt(.25*.75/1e6) = 0.043%, so the bound is ~11 sigma wide
// yet would catch any systematic bias of half a percent.
TEST(LbSelectTest, WeightedOneToThree) {
  const uint32_t w[] = {1, 3};
  const auto table = buildAliasTable(w);
  std::mt19937 rng(42);
  constexpr int kDraws = 1000000;
  uint64_t hits[2] = {0, 0};
  for (int i = 0; i < kDraws; ++i) hits[weightedPick(table, rng)]++;
  EXPECT_NEAR(hits[0] / double(kDraws), 0.25, 0.005);
  EXPECT_NEAR(hits[1] / double(kDraws), 0.75, 0.005);
}

// 50 backends with random weights in 1..10000, 1e6 picks: chi-square with 49
// degrees of freedom below 85.35 (the 0.1% critical value). A wrong threshold
// in one bucket of a few hundred ppm would push it far past that.
TEST(LbSelectTest, WeightedManyBackendsChiSquare) {
  std::mt19937 wrng(7);
  std::vector<uint32_t> w(50);
  double total = 0;
  for (auto& x : w) {
    x = 1 + wrng() % 10000;
    total += x;
  }
  const auto table = buildAliasTable(w);
  std::vector<double> share(w.size());
  for (size_t i = 0; i < w.size(); ++i) share[i] = w[i] / total;
  std::mt19937 rng(99);
  constexpr uint64_t kDraws = 1000000;
  std::vector<uint64_t> hits(w.size(), 0);
  for (uint64_t i = 0; i < kDraws; ++i) hits[weightedPick(table, rng)]++;
  EXPECT_LT(chiSquare(hits, share, kDraws), 85.35);
}

// The same check fails for a table built from the wrong weights: the test can fail.
TEST(LbSelectTest, ChiSquareDetectsWrongWeights) {
  std::vector<uint32_t> w(50, 100);
  std::vector<uint32_t> skewed = w;
  skewed[0] = 110;  // 10% more weight on one backend of fifty
  const auto table = buildAliasTable(skewed);
  std::vector<double> share(w.size(), 1.0 / w.size());
  std::mt19937 rng(5);
  constexpr uint64_t kDraws = 1000000;
  std::vector<uint64_t> hits(w.size(), 0);
  for (uint64_t i = 0; i < kDraws; ++i) hits[weightedPick(table, rng)]++;
  EXPECT_GT(chiSquare(hits, share, kDraws), 85.35);
}

// MESH_LB_RANDOM: mesh_uniform over slots, weights ignored. 10 slots, 1e6 picks,
// chi-square (9 dof) below 27.88 (0.1% critical value).
TEST(LbSelectTest, RandomIsUniform) {
  std::mt19937 rng(3);
  constexpr uint64_t kDraws = 1000000;
  std::vector<uint64_t> hits(10, 0);
  for (uint64_t i = 0; i < kDraws; ++i) hits[mesh_uniform(rng(), 10)]++;
  EXPECT_LT(chiSquare(hits, std::vector<double>(10, 0.1), kDraws), 27.88);
}

// Maglev lookups (mesh_maglev_index on a 64-bit client key, here random netns
// cookies) spread clients like the table: weights 1:2:3:4, 2e5 clients, each
// backend's share within +-1% absolute of its weight share; and a client maps to
// the same backend every time.
TEST(LbSelectTest, MaglevLookupFollowsWeights) {
  std::vector<MaglevBackend> backends = {
      {1, "10.0.0.1:80", 1}, {2, "10.0.0.2:80", 2}, {3, "10.0.0.3:80", 3}, {4, "10.0.0.4:80", 4}};
  const uint32_t size = MESH_MAGLEV_DEFAULT_SIZE;
  const auto table = buildMaglevTable(backends, size);
  ASSERT_EQ(table.size(), size);
  std::mt19937_64 rng(11);
  constexpr int kClients = 200000;
  std::vector<uint64_t> hits(5, 0);
  for (int i = 0; i < kClients; ++i) {
    const uint64_t client = rng();
    const uint32_t id = table[mesh_maglev_index(client, size)];
    ASSERT_EQ(id, table[mesh_maglev_index(client, size)]);
    hits[id]++;
  }
  for (uint32_t id = 1; id <= 4; ++id) {
    EXPECT_NEAR(hits[id] / double(kClients), id / 10.0, 0.01) << "backend " << id;
  }
}

// mesh_other_slot (a second p2c candidate distinct from the first): never the
// first slot when n > 1, uniform over the other n-1 (+-1% absolute, 2e5 draws each).
TEST(LbSelectTest, OtherSlotIsUniformOverTheRest) {
  EXPECT_EQ(mesh_other_slot(0, 12345, 1), 0u);
  std::mt19937 rng(29);
  constexpr uint32_t kN = 5;
  constexpr int kDraws = 200000;
  for (uint32_t first = 0; first < kN; ++first) {
    std::vector<int> hits(kN, 0);
    for (int i = 0; i < kDraws; ++i) hits[mesh_other_slot(first, rng(), kN)]++;
    EXPECT_EQ(hits[first], 0);
    for (uint32_t s = 0; s < kN; ++s) {
      if (s == first) continue;
      EXPECT_NEAR(hits[s] / double(kDraws), 1.0 / (kN - 1), 0.01) << s;
    }
  }
}

TEST(LbSelectTest, P2cPrefersLowerCountTiesToA) {
  EXPECT_TRUE(mesh_p2c_prefer_a(0, 1));
  EXPECT_FALSE(mesh_p2c_prefer_a(2, 1));
  EXPECT_TRUE(mesh_p2c_prefer_a(3, 3));
}

// The p2c simulations below draw candidates as MESH_LB_LEAST_CONN in
// bpf/mesh_select.bpf.h does: a weighted pick, then a second weighted pick made
// distinct by mesh_p2c_second.
uint32_t p2cSecond(const std::vector<AliasEntry>& table, uint32_t first, std::mt19937& rng) {
  return mesh_p2c_second(first, weightedPick(table, rng), rng(), table.size());
}

// Two equal-weight backends, live counts 5 and 0: distinct candidates are always
// {busy, idle}, so every new connection goes to the idle one (with independent
// draws the busy one would win a quarter of them).
TEST(LbSelectTest, P2cSendsEveryConnectionToTheIdleOfTwoBackends) {
  const uint32_t w[] = {1, 1};
  const auto table = buildAliasTable(w);
  const int64_t live[] = {5, 0};
  std::mt19937 rng(17);
  constexpr int kDraws = 100000;
  int idle = 0;
  for (int i = 0; i < kDraws; ++i) {
    const uint32_t a = weightedPick(table, rng);
    const uint32_t b = p2cSecond(table, a, rng);
    ASSERT_NE(a, b);
    const uint32_t pick = mesh_p2c_prefer_a(live[a], live[b]) ? a : b;
    idle += pick == 1;
  }
  EXPECT_EQ(idle, kDraws);
}

// A slow backend holds its connections 4x longer. Simulated as a closed system:
// one connect per step, each open connection closes with probability 1/400 per
// step (1/1600 on the slow backend 0). Least-connections by p2c over the live
// counts must give backend 0 clearly fewer new connections than the 25% random
// gives it: below 20% (measured 8%), while random stays at 25% +-1%.
TEST(LbSelectTest, P2cAvoidsSlowBackend) {
  const std::vector<uint32_t> w(4, 1);
  const auto table = buildAliasTable(w);
  auto simulate = [&](bool p2c) {
    std::mt19937 rng(23);
    std::vector<int64_t> live(4, 0);
    std::vector<uint64_t> sent(4, 0);
    constexpr int kSteps = 200000;
    for (int step = 0; step < kSteps; ++step) {
      for (int b = 0; b < 4; ++b) {
        const double p_close = b == 0 ? 1.0 / 1600 : 1.0 / 400;
        if (live[b] > 0) live[b] -= std::binomial_distribution<int64_t>(live[b], p_close)(rng);
      }
      uint32_t pick = weightedPick(table, rng);
      if (p2c) {
        const uint32_t other = p2cSecond(table, pick, rng);
        pick = mesh_p2c_prefer_a(live[pick], live[other]) ? pick : other;
      }
      live[pick]++;
      sent[pick]++;
    }
    return sent[0] / double(kSteps);
  };
  const double random_share = simulate(false);
  const double p2c_share = simulate(true);
  RecordProperty("slow_backend_share_random", absl::StrCat(random_share));
  RecordProperty("slow_backend_share_p2c", absl::StrCat(p2c_share));
  EXPECT_NEAR(random_share, 0.25, 0.01);
  EXPECT_LT(p2c_share, 0.20);
}

// ---- p2c-ewma (MESH_LB_P2C_EWMA) ---------------------------------------------

TEST(LbSelectTest, EwmaFoldsOneEighth) {
  EXPECT_EQ(mesh_ewma_fold(0, 800), 800u) << "first sample taken as is";
  EXPECT_EQ(mesh_ewma_fold(0, 0), 1u) << "0 means no sample: a sample never stores 0";
  EXPECT_EQ(mesh_ewma_fold(800, 1600), 900u);   // + (1600 - 800) / 8
  EXPECT_EQ(mesh_ewma_fold(1600, 800), 1500u);  // - (1600 - 800) / 8
  EXPECT_EQ(mesh_ewma_fold(1, 0), 1u);
  EXPECT_EQ(mesh_ewma_fold(0xffffffffu, 0xffffffffu), 0xffffffffu) << "no overflow";
  // Converges on a steady sample: after 80 folds of 20 ms from 100 us
  // ((7/8)^80 x 19900 < 1) it is within the 8 us dead band (differences below
  // 8 do not move it).
  uint32_t e = 100;
  for (int i = 0; i < 80; ++i) e = mesh_ewma_fold(e, 20000);
  EXPECT_GE(e, 20000u - 8);
  EXPECT_LE(e, 20000u);
}

TEST(LbSelectTest, P2cEwmaScoresLatencyTimesLoad) {
  const uint32_t no_explore = 1;  // rnd % MESH_P2C_EWMA_EXPLORE != 0
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(1000, 0, 2000, 0, no_explore));
  EXPECT_FALSE(mesh_p2c_ewma_prefer_a(2000, 0, 1000, 0, no_explore));
  // 1000 x (3 + 1) = 4000 > 2000 x (0 + 1): the slower idle one wins.
  EXPECT_FALSE(mesh_p2c_ewma_prefer_a(1000, 3, 2000, 0, no_explore));
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(1000, 1, 2000, 0, no_explore)) << "ties go to a";
  // No sample yet: scored with the other's EWMA, i.e. on live counts alone.
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(0, 0, 5000, 1, no_explore));
  EXPECT_FALSE(mesh_p2c_ewma_prefer_a(0, 2, 5000, 1, no_explore));
  EXPECT_FALSE(mesh_p2c_ewma_prefer_a(5000, 2, 0, 1, no_explore));
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(0, 1, 0, 1, no_explore)) << "neither: least-connections";
  EXPECT_FALSE(mesh_p2c_ewma_prefer_a(0, 2, 0, 1, no_explore));
  // Exploration takes a whatever the scores.
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(100000, 50, 1, 0, 0));
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(100000, 50, 1, 0, MESH_P2C_EWMA_EXPLORE * 7));
  // Extreme values neither overflow nor wrap: negative live counts as 0.
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(0xffffffffu, INT64_MAX, 0xffffffffu, INT64_MAX, 1));
  EXPECT_TRUE(mesh_p2c_ewma_prefer_a(1000, -5, 1000, 0, 1));
  EXPECT_EQ(mesh_p2c_ewma_score(0xffffffffu, INT64_MAX),
            0xffffffffull * (static_cast<uint64_t>(MESH_P2C_LIVE_CLAMP) + 1));
}

// Three equal-weight backends, one 20x slower, no connection held (live 0):
// drawn as MESH_LB_P2C_EWMA in bpf/mesh_select.bpf.h, the slow one wins only
// through exploration, when it is the first candidate: 1/3 x 1/32 = 1.04%.
// Over 300k picks the binomial sd is 0.018 points; +-0.2 is 11 sd.
TEST(LbSelectTest, P2cEwmaSendsFewConnectionsToASlowBackend) {
  const std::vector<uint32_t> w(3, 1);
  const auto table = buildAliasTable(w);
  const uint32_t ewma[] = {21000, 1000, 1000};
  std::mt19937 rng(5);
  constexpr int kDraws = 300000;
  int slow = 0;
  for (int i = 0; i < kDraws; ++i) {
    const uint32_t a = weightedPick(table, rng);
    const uint32_t b = p2cSecond(table, a, rng);
    slow += (mesh_p2c_ewma_prefer_a(ewma[a], 0, ewma[b], 0, rng()) ? a : b) == 0;
  }
  EXPECT_NEAR(100.0 * slow / kDraws, 100.0 / 3 / MESH_P2C_EWMA_EXPLORE, 0.2);
}

// ---- outlier detection arithmetic ------------------------------------------

TEST(LbSelectTest, EjectCapIsAPercentOfSlotsButAtLeastOne) {
  struct Case {
    uint32_t percent, slots, cap;
  };
  const Case cases[] = {
      {10, 3, 1},  // floor(0.3) -> at least one
      {10, 10, 1},
      {10, 19, 1},
      {10, 20, 2},
      {25, 4, 1},
      {50, 4, 2},
      {100, 4, 4},
      {0, 100, 0},  // 0%: nothing is ever ejected
      {100, 0, 1},  // no slots: the cap is moot (nothing to connect to)
      {255, 4, 4},  // clamped to 100
      {100, 0xffffffffu, 0xffffffffu},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(mesh_eject_cap(c.percent, c.slots), c.cap) << c.percent << "% of " << c.slots;
  }
}

TEST(LbSelectTest, EjectDurationGrowsWithTimesEjectedUpToTheCap) {
  EXPECT_EQ(mesh_eject_duration_ns(30000, 300000, 1), 30'000'000'000ull);
  EXPECT_EQ(mesh_eject_duration_ns(30000, 300000, 2), 60'000'000'000ull);
  EXPECT_EQ(mesh_eject_duration_ns(30000, 300000, 10), 300'000'000'000ull);
  EXPECT_EQ(mesh_eject_duration_ns(30000, 300000, 11), 300'000'000'000ull);
  EXPECT_EQ(mesh_eject_duration_ns(30000, 300000, 0xffffffffu), 300'000'000'000ull);
  EXPECT_EQ(mesh_eject_duration_ns(30000, 0, 3), 90'000'000'000ull) << "max 0: no cap";
  EXPECT_EQ(mesh_eject_duration_ns(2000, 300000, 0), 2'000'000'000ull) << "0 counts as 1";
  EXPECT_TRUE(mesh_is_ejected(100, 99));
  EXPECT_FALSE(mesh_is_ejected(100, 100)) << "returns at ejected_until";
  EXPECT_FALSE(mesh_is_ejected(0, 5));
  EXPECT_TRUE(mesh_is_ejected(MESH_EJECT_CLAIMED, UINT64_MAX - 1)) << "being ejected";
}

}  // namespace
// GCRA connect-rate bucket (mesh_gcra_admit), driven as mesh_rate.bpf.h does:
// one stored arrival time, 0 = refused and nothing stored.
struct Bucket {
  uint64_t tat = 0;
  uint32_t per_sec, burst;
  bool take(uint64_t now) {
    uint64_t next = mesh_gcra_admit(tat, now, mesh_gcra_interval(per_sec), burst);
    if (next == 0) return false;
    tat = next;
    return true;
  }
};

TEST(LbSelectTest, GcraAdmitsTheBurstAtOnceThenNothing) {
  Bucket b{0, 10, 5};
  const uint64_t t0 = 1'000'000'000'000;
  int admitted = 0;
  for (int i = 0; i < 20; ++i) admitted += b.take(t0);
  EXPECT_EQ(admitted, 5) << "a full bucket holds `burst` tokens";
  EXPECT_FALSE(b.take(t0 + 99'000'000)) << "refills one token per 100 ms, not sooner";
  EXPECT_TRUE(b.take(t0 + 100'000'000));
  EXPECT_FALSE(b.take(t0 + 100'000'000));
}

TEST(LbSelectTest, GcraLongRunRateIsPerSecond) {
  // Attempts every 1 ms for 10 s against 37/s with burst 4: 4 + 37 * 10 admitted,
  // give or take the token that is refilling at the end.
  Bucket b{0, 37, 4};
  const uint64_t t0 = 5'000'000'000;
  int admitted = 0;
  for (uint64_t ms = 0; ms < 10'000; ++ms) admitted += b.take(t0 + ms * 1'000'000);
  EXPECT_GE(admitted, 4 + 370 - 1);
  EXPECT_LE(admitted, 4 + 370 + 1);
}

TEST(LbSelectTest, GcraRefusalLeavesTheBucketUnchanged) {
  Bucket b{0, 1, 1};
  ASSERT_TRUE(b.take(7'000'000'000));
  const uint64_t tat = b.tat;
  EXPECT_FALSE(b.take(7'500'000'000));
  EXPECT_EQ(b.tat, tat) << "a refused connect takes no token";
  EXPECT_TRUE(b.take(8'000'000'000));
}

TEST(LbSelectTest, GcraIdleBucketRefillsOnlyToBurst) {
  Bucket b{0, 1000, 3};
  ASSERT_TRUE(b.take(1'000'000'000));
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += b.take(3'600'000'000'000);  // an hour idle
  EXPECT_EQ(admitted, 3);
}

}  // namespace meshd::datapath
