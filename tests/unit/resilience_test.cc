// meshd_resilience: the decisions the L7 proxy makes per request, checked without I/O and
// without a clock (times are passed in; randomness comes from seeded generators, so every
// run sees the same draws).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <queue>
#include <random>
#include <thread>
#include <vector>

#include "counting_new.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proxy/resilience/breaker.h"
#include "proxy/resilience/fault.h"
#include "proxy/resilience/outlier.h"
#include "proxy/resilience/peak_ewma.h"
#include "proxy/resilience/registry.h"
#include "proxy/resilience/retry.h"

namespace meshd::proxy::resilience {
namespace {

using Kind = TryOutcome::Kind;

// --- RetryPolicy ----------------------------------------------------------------------------

struct RetryCase {
  std::string name;
  uint32_t retry_on;
  std::vector<uint16_t> codes;
  TryOutcome outcome;
  bool retriable;
};

class RetryTableTest : public ::testing::TestWithParam<RetryCase> {};

TEST_P(RetryTableTest, Retriable) {
  const RetryCase& c = GetParam();
  state::RetrySettings s;
  s.retry_on = c.retry_on;
  s.retriable_status_codes = c.codes;
  EXPECT_EQ(RetryPolicy(s).retriable(c.outcome), c.retriable);
}

constexpr uint32_t kGrpcAll = state::kRetryOnCancelled | state::kRetryOnDeadlineExceeded |
                              state::kRetryOnResourceExhausted | state::kRetryOnInternal |
                              state::kRetryOnUnavailable;

INSTANTIATE_TEST_SUITE_P(
    Resilience, RetryTableTest,
    ::testing::Values(
        // connect-failure: only failed connects.
        RetryCase{"ConnectFailureOnConnectFailure",
                  state::kRetryOnConnectFailure,
                  {},
                  TryOutcome::connectFailure(),
                  true},
        RetryCase{"ConnectFailureNotOnReset",
                  state::kRetryOnConnectFailure,
                  {},
                  TryOutcome::reset(),
                  false},
        RetryCase{"ConnectFailureNotOn503",
                  state::kRetryOnConnectFailure,
                  {},
                  TryOutcome::response(503),
                  false},
        // refused-stream.
        RetryCase{
            "RefusedStream", state::kRetryOnRefusedStream, {}, TryOutcome::refusedStream(), true},
        RetryCase{"RefusedStreamNotConnectFailure",
                  state::kRetryOnRefusedStream,
                  {},
                  TryOutcome::connectFailure(),
                  false},
        // reset: every failure before the head.
        RetryCase{"ResetOnReset", state::kRetryOnReset, {}, TryOutcome::reset(), true},
        RetryCase{
            "ResetOnPerTryTimeout", state::kRetryOnReset, {}, TryOutcome::perTryTimeout(), true},
        RetryCase{
            "ResetOnConnectFailure", state::kRetryOnReset, {}, TryOutcome::connectFailure(), true},
        RetryCase{"ResetNotOn500", state::kRetryOnReset, {}, TryOutcome::response(500), false},
        // 5xx: every 5xx and every reset.
        RetryCase{"5xxOn500", state::kRetryOn5xx, {}, TryOutcome::response(500), true},
        RetryCase{"5xxOn599", state::kRetryOn5xx, {}, TryOutcome::response(599), true},
        RetryCase{"5xxNotOn499", state::kRetryOn5xx, {}, TryOutcome::response(499), false},
        RetryCase{"5xxNotOn200", state::kRetryOn5xx, {}, TryOutcome::response(200), false},
        RetryCase{"5xxOnReset", state::kRetryOn5xx, {}, TryOutcome::reset(), true},
        RetryCase{
            "5xxOnConnectFailure", state::kRetryOn5xx, {}, TryOutcome::connectFailure(), true},
        RetryCase{"5xxOnPerTryTimeout", state::kRetryOn5xx, {}, TryOutcome::perTryTimeout(), true},
        // gateway-error: 502-504 only (and resets).
        RetryCase{"GatewayOn502", state::kRetryOnGatewayError, {}, TryOutcome::response(502), true},
        RetryCase{"GatewayOn503", state::kRetryOnGatewayError, {}, TryOutcome::response(503), true},
        RetryCase{"GatewayOn504", state::kRetryOnGatewayError, {}, TryOutcome::response(504), true},
        RetryCase{
            "GatewayNotOn500", state::kRetryOnGatewayError, {}, TryOutcome::response(500), false},
        RetryCase{
            "GatewayNotOn505", state::kRetryOnGatewayError, {}, TryOutcome::response(505), false},
        RetryCase{"GatewayOnReset", state::kRetryOnGatewayError, {}, TryOutcome::reset(), true},
        // retriable-status-codes: exactly the listed codes (also non-5xx ones).
        RetryCase{"StatusCodesListed409",
                  state::kRetryOnRetriableStatusCodes,
                  {409, 503},
                  TryOutcome::response(409),
                  true},
        RetryCase{"StatusCodesListed503",
                  state::kRetryOnRetriableStatusCodes,
                  {409, 503},
                  TryOutcome::response(503),
                  true},
        RetryCase{"StatusCodesNotListed502",
                  state::kRetryOnRetriableStatusCodes,
                  {409, 503},
                  TryOutcome::response(502),
                  false},
        RetryCase{"StatusCodesWithoutTheBit",
                  state::kRetryOn5xx,
                  {409},
                  TryOutcome::response(409),
                  false},
        RetryCase{"StatusCodesNotOnReset",
                  state::kRetryOnRetriableStatusCodes,
                  {503},
                  TryOutcome::reset(),
                  false},
        // gRPC conditions read grpc-status of the head.
        RetryCase{
            "GrpcUnavailable", state::kRetryOnUnavailable, {}, TryOutcome::response(200, 14), true},
        RetryCase{
            "GrpcCancelled", state::kRetryOnCancelled, {}, TryOutcome::response(200, 1), true},
        RetryCase{"GrpcDeadline",
                  state::kRetryOnDeadlineExceeded,
                  {},
                  TryOutcome::response(200, 4),
                  true},
        RetryCase{"GrpcResourceExhausted",
                  state::kRetryOnResourceExhausted,
                  {},
                  TryOutcome::response(200, 8),
                  true},
        RetryCase{"GrpcInternal", state::kRetryOnInternal, {}, TryOutcome::response(200, 13), true},
        RetryCase{"GrpcUnavailableNotCancelled",
                  state::kRetryOnUnavailable,
                  {},
                  TryOutcome::response(200, 1),
                  false},
        RetryCase{"GrpcOkNever", kGrpcAll, {}, TryOutcome::response(200, 0), false},
        RetryCase{"GrpcUnknownNever", kGrpcAll, {}, TryOutcome::response(200, 2), false},
        RetryCase{"GrpcNoStatusNever", kGrpcAll, {}, TryOutcome::response(200), false},
        RetryCase{"GrpcBitsIgnoreHttpStatus", kGrpcAll, {}, TryOutcome::response(503), false},
        // Istio's default policy.
        RetryCase{"DefaultOnConnectFailure",
                  state::RetrySettings::kDefaultRetryOn,
                  {503},
                  TryOutcome::connectFailure(),
                  true},
        RetryCase{"DefaultOn503",
                  state::RetrySettings::kDefaultRetryOn,
                  {503},
                  TryOutcome::response(503),
                  true},
        RetryCase{"DefaultNotOn502",
                  state::RetrySettings::kDefaultRetryOn,
                  {503},
                  TryOutcome::response(502),
                  false},
        RetryCase{"DefaultNotOnReset",
                  state::RetrySettings::kDefaultRetryOn,
                  {503},
                  TryOutcome::reset(),
                  false},
        RetryCase{"NothingNever", 0, {}, TryOutcome::connectFailure(), false}),
    [](const ::testing::TestParamInfo<RetryCase>& info) { return info.param.name; });

TEST(RetryPolicy, AttemptsBoundTheRetries) {
  state::RetrySettings s;  // attempts 2
  RetryPolicy p(s);
  const TryOutcome f = TryOutcome::connectFailure();
  EXPECT_FALSE(p.shouldRetry(f, 0));  // no try has ended
  EXPECT_TRUE(p.shouldRetry(f, 1));   // first try failed: retry 1
  EXPECT_TRUE(p.shouldRetry(f, 2));   // retry 1 failed: retry 2
  EXPECT_FALSE(p.shouldRetry(f, 3));  // 1 + 2 tries made
  s.attempts = 0;
  EXPECT_FALSE(p.shouldRetry(f, 1));
  // A non-retriable outcome is never retried, whatever the attempts.
  s.attempts = 5;
  EXPECT_FALSE(p.shouldRetry(TryOutcome::response(200), 1));
}

TEST(RetryPolicy, OnlyReplayableRequestsAfterTheRequestWasSent) {
  state::RetrySettings s;
  s.retry_on = state::kRetryOn5xx | state::kRetryOnConnectFailure | state::kRetryOnRefusedStream;
  RetryPolicy p(s);
  EXPECT_TRUE(p.shouldRetry(TryOutcome::reset(true), 1));
  EXPECT_FALSE(p.shouldRetry(TryOutcome::reset(false), 1));
  EXPECT_FALSE(p.shouldRetry(TryOutcome::perTryTimeout(false), 1));
  EXPECT_FALSE(p.shouldRetry(TryOutcome::response(503, -1, false), 1));
  // Nothing reached the upstream application: always replayable.
  TryOutcome cf = TryOutcome::connectFailure();
  cf.replayable = false;
  EXPECT_TRUE(p.shouldRetry(cf, 1));
  TryOutcome rs = TryOutcome::refusedStream();
  rs.replayable = false;
  EXPECT_TRUE(p.shouldRetry(rs, 1));
}

TEST(RetryPolicy, BackoffIsFullJitterUnderTheExponentialCeiling) {
  state::RetrySettings s;  // base 25 ms, max 250 ms
  RetryPolicy p(s);
  // Envoy's ceilings: (2^n - 1) x 25, capped at 250.
  EXPECT_EQ(p.backoffCeilingMs(0), 0u);
  EXPECT_EQ(p.backoffCeilingMs(1), 25u);
  EXPECT_EQ(p.backoffCeilingMs(2), 75u);
  EXPECT_EQ(p.backoffCeilingMs(3), 175u);
  EXPECT_EQ(p.backoffCeilingMs(4), 250u);
  EXPECT_EQ(p.backoffCeilingMs(64), 250u);
  EXPECT_EQ(p.backoffCeilingMs(UINT32_MAX), 250u);  // no overflow
  std::mt19937_64 rng(42);
  for (uint32_t n = 1; n <= 8; ++n) {
    const uint64_t bound = std::min<uint64_t>(s.max_interval_ms, uint64_t{25} << n);
    const uint64_t ceiling = p.backoffCeilingMs(n);
    uint32_t lo = UINT32_MAX, hi = 0;
    double sum = 0;
    constexpr int kDraws = 10000;
    for (int i = 0; i < kDraws; ++i) {
      const uint32_t ms = p.backoffMs(n, rng());
      ASSERT_LE(ms, bound) << "retry " << n;
      ASSERT_LT(ms, ceiling) << "retry " << n;
      lo = std::min(lo, ms);
      hi = std::max(hi, ms);
      sum += ms;
    }
    // Full jitter: the whole range is used, and the mean is half the ceiling.
    EXPECT_EQ(lo, 0u) << "retry " << n;
    EXPECT_EQ(hi, ceiling - 1) << "retry " << n;
    EXPECT_NEAR(sum / kDraws, (ceiling - 1) / 2.0, ceiling * 0.03) << "retry " << n;
  }
  // Extremes of the random value stay in range.
  EXPECT_EQ(p.backoffMs(3, 0), 0u);
  EXPECT_EQ(p.backoffMs(3, UINT64_MAX), 174u);
  s.base_interval_ms = 0;
  EXPECT_EQ(p.backoffMs(3, UINT64_MAX), 0u);
}

// --- RetryBudget and CircuitBreaker ---------------------------------------------------------

TEST(RetryBudget, AllowsTheLargerOfTheMinimumAndThePercentage) {
  EXPECT_EQ(RetryBudget::allowed(20, 3, 0), 3u);
  EXPECT_EQ(RetryBudget::allowed(20, 3, 10), 3u);  // 2 < 3
  EXPECT_EQ(RetryBudget::allowed(20, 3, 19), 3u);  // 3.8 -> 3
  EXPECT_EQ(RetryBudget::allowed(20, 3, 20), 4u);
  EXPECT_EQ(RetryBudget::allowed(20, 3, 100), 20u);
  EXPECT_EQ(RetryBudget::allowed(20, 3, 1000), 200u);
  EXPECT_EQ(RetryBudget::allowed(0, 0, 1000), 0u);
  EXPECT_EQ(RetryBudget::allowed(100, 0, 7), 7u);
  EXPECT_EQ(RetryBudget::allowed(150, 0, 7), 7u);  // clamped at 100%
}

TEST(RetryBudget, WithNActiveRequestsOnlyThatManyRetriesAtOnce) {
  for (uint64_t active : {0u, 10u, 50u, 100u, 1000u}) {
    RetryBudget budget;  // 20%, minimum 3
    const uint64_t limit = std::max<uint64_t>(3, active / 5);
    std::vector<Guard> held;
    for (uint64_t i = 0; i < limit; ++i) {
      held.push_back(budget.tryAcquireRetry(active));
      ASSERT_TRUE(held.back()) << "active " << active << " retry " << i;
    }
    EXPECT_FALSE(budget.tryAcquireRetry(active)) << "active " << active;
    EXPECT_EQ(budget.activeRetries(), limit);
    held.pop_back();  // one retry ends: room for one more
    EXPECT_TRUE(budget.tryAcquireRetry(active));
    held.clear();
    EXPECT_EQ(budget.activeRetries(), 0u);
  }
}

TEST(RetryBudget, TwoThreadsNeverExceedTheBudgetAndLoseNoUpdate) {
  constexpr uint64_t kActive = 10000;  // 20% -> 2000 retries at once
  RetryBudget budget;
  // Phase 1: both threads acquire without releasing; together they get exactly the budget.
  std::vector<Guard> held[2];
  {
    std::thread t([&] {
      for (int i = 0; i < 5000; ++i) {
        if (Guard g = budget.tryAcquireRetry(kActive)) held[0].push_back(std::move(g));
      }
    });
    for (int i = 0; i < 5000; ++i) {
      if (Guard g = budget.tryAcquireRetry(kActive)) held[1].push_back(std::move(g));
    }
    t.join();
  }
  EXPECT_EQ(held[0].size() + held[1].size(), 2000u);
  EXPECT_EQ(budget.activeRetries(), 2000u);
  held[0].clear();
  held[1].clear();
  EXPECT_EQ(budget.activeRetries(), 0u);
  // Phase 2: acquire/release churn with 10 active requests (budget 3); an observer count of
  // holders never goes above 3, and the counter returns to 0.
  std::atomic<int> holders{0};
  std::atomic<int> max_holders{0};
  std::atomic<uint64_t> granted{0};
  auto churn = [&] {
    for (int i = 0; i < 200000; ++i) {
      Guard g = budget.tryAcquireRetry(10);
      if (!g) continue;
      granted.fetch_add(1);
      const int h = holders.fetch_add(1) + 1;
      int m = max_holders.load();
      while (h > m && !max_holders.compare_exchange_weak(m, h)) {
      }
      holders.fetch_sub(1);
    }
  };
  std::thread t1(churn), t2(churn);
  t1.join();
  t2.join();
  EXPECT_LE(max_holders.load(), 3);
  EXPECT_GT(granted.load(), 0u);
  EXPECT_EQ(budget.activeRetries(), 0u);
}

TEST(CircuitBreaker, ThresholdsAndGuardRelease) {
  state::RequestLimits limits;
  limits.max_pending_requests = 1;
  limits.max_requests = 2;
  limits.max_retries = 1;
  CircuitBreaker b(limits);

  Guard p1 = b.tryAcquirePending();
  EXPECT_TRUE(p1);
  EXPECT_FALSE(b.tryAcquirePending());
  Guard r1 = b.tryAcquireRequest();
  Guard r2 = b.tryAcquireRequest();
  EXPECT_TRUE(r1);
  EXPECT_TRUE(r2);
  EXPECT_FALSE(b.tryAcquireRequest());
  Guard x1 = b.tryAcquireRetry();
  EXPECT_TRUE(x1);
  EXPECT_FALSE(b.tryAcquireRetry());
  CircuitBreaker::Counts c = b.counts();
  EXPECT_EQ(c.pending, 1u);
  EXPECT_EQ(c.active, 2u);
  EXPECT_EQ(c.retries, 1u);
  EXPECT_EQ(c.pending_overflow, 1u);
  EXPECT_EQ(c.request_overflow, 1u);
  EXPECT_EQ(c.retry_overflow, 1u);

  // Release by scope, by release() (idempotent) and by move-assignment.
  { Guard moved = std::move(r1); }
  EXPECT_FALSE(r1);
  EXPECT_EQ(b.counts().active, 1u);
  p1.release();
  p1.release();
  EXPECT_EQ(b.counts().pending, 0u);
  Guard r3 = b.tryAcquireRequest();
  ASSERT_TRUE(r3);
  r2 = std::move(r3);  // releases r2's unit, takes r3's
  EXPECT_EQ(b.counts().active, 1u);
  x1 = Guard();
  EXPECT_EQ(b.counts().retries, 0u);
  EXPECT_TRUE(b.tryAcquireRetry());  // a temporary: released at once
  EXPECT_EQ(b.counts().retries, 0u);

  // A lowered threshold refuses until enough is released; raising admits again.
  limits.max_requests = 1;
  b.configure(limits);
  EXPECT_FALSE(b.tryAcquireRequest());
  r2.release();
  Guard r4 = b.tryAcquireRequest();
  EXPECT_TRUE(r4);
  EXPECT_FALSE(b.tryAcquireRequest());
}

TEST(CircuitBreaker, RetryBudgetReplacesMaxRetries) {
  state::RequestLimits limits;  // maxRetries 3
  limits.retry_budget = true;   // 20%, minimum 3
  CircuitBreaker b(limits);
  std::vector<Guard> requests;
  for (int i = 0; i < 90; ++i) requests.push_back(b.tryAcquireRequest());
  std::vector<Guard> pending;
  for (int i = 0; i < 10; ++i) pending.push_back(b.tryAcquirePending());
  // 100 active + pending -> 20 retries (not maxRetries' 3).
  std::vector<Guard> retries;
  for (Guard g = b.tryAcquireRetry(); g; g = b.tryAcquireRetry()) retries.push_back(std::move(g));
  EXPECT_EQ(retries.size(), 20u);
  EXPECT_EQ(b.counts().retries, 20u);
  requests.clear();
  pending.clear();
  retries.clear();
  // Idle: the minimum.
  for (Guard g = b.tryAcquireRetry(); g; g = b.tryAcquireRetry()) retries.push_back(std::move(g));
  EXPECT_EQ(retries.size(), 3u);
}

TEST(CircuitBreaker, AcquiringAndReleasingAllocatesNothing) {
  CircuitBreaker b;
  testing::startCountingAllocations();
  for (int i = 0; i < 1000; ++i) {
    Guard p = b.tryAcquirePending();
    Guard r = b.tryAcquireRequest();
    p.release();
    Guard x = b.tryAcquireRetry();
  }
  EXPECT_EQ(testing::stopCountingAllocations(), 0u);
  EXPECT_EQ(b.counts().active, 0u);
}

// --- Peak EWMA and P2C ----------------------------------------------------------------------

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000 * kMs;
constexpr uint64_t kTau = PeakEwma::kDefaultDecayNs;

TEST(PeakEwma, PeaksReplaceLowerSamplesBlendAndTheAverageDecays) {
  PeakEwma e;
  EXPECT_FALSE(e.sampled());
  EXPECT_EQ(e.cost(0, kTau), 0.0);  // unknown and idle: try it
  e.start();
  EXPECT_GE(e.cost(0, kTau), PeakEwma::kPenalty);  // unknown and busy: avoid piling on
  e.finish(10 * kMs, 1 * kSec, kTau);
  EXPECT_EQ(e.pending(), 0u);
  EXPECT_DOUBLE_EQ(e.ewmaNs(1 * kSec, kTau), 10.0 * kMs);
  // A peak replaces the average at once.
  e.observe(100 * kMs, 1 * kSec, kTau);
  EXPECT_DOUBLE_EQ(e.ewmaNs(1 * kSec, kTau), 100.0 * kMs);
  // A lower sample one tau later: w = e^-1 of the (decayed) average stays.
  e.observe(10 * kMs, 1 * kSec + kTau, kTau);
  const double w = std::exp(-1.0);
  EXPECT_NEAR(e.ewmaNs(1 * kSec + kTau, kTau), 100.0 * kMs * w + 10.0 * kMs * (1 - w), 1.0);
  // Without samples the average decays towards zero (Finagle's decay on read).
  const double now = e.ewmaNs(1 * kSec + kTau, kTau);
  EXPECT_NEAR(e.ewmaNs(1 * kSec + 2 * kTau, kTau), now * w, 1.0);
  // Cost scales with the requests in flight.
  e.start();
  e.start();
  EXPECT_NEAR(e.cost(1 * kSec + kTau, kTau), now * 3, 1.0);
}

// A discrete-event simulation: one request per millisecond, each endpoint answering after its
// (current) latency; the balancer sees starts and finishes as a worker would.
class Simulation {
 public:
  explicit Simulation(std::vector<uint64_t> latency_ns) : latency_(std::move(latency_ns)), rng_(7) {
    std::vector<SocketAddress> eps;
    for (size_t i = 0; i < latency_.size(); ++i) {
      SocketAddress a;
      a.ip = *IpAddress::parse("10.0.0." + std::to_string(i + 1));
      a.port = 8080;
      eps.push_back(a);
    }
    balancer_.update(eps);
  }

  // Sends `n` requests; returns how many went to each endpoint.
  std::vector<uint64_t> run(uint64_t n) {
    std::vector<uint64_t> picks(latency_.size());
    for (uint64_t i = 0; i < n; ++i) {
      now_ += kMs;
      while (!done_.empty() && done_.top().first <= now_) {
        auto [at, ep] = done_.top();
        done_.pop();
        balancer_.onFinish(ep, latency_[ep], at);
      }
      const size_t ep = balancer_.pick({}, rng_(), now_);
      ++picks[ep];
      balancer_.onStart(ep);
      done_.push({now_ + latency_[ep], ep});
    }
    return picks;
  }
  void setLatency(size_t ep, uint64_t ns) { latency_[ep] = ns; }
  PeakEwmaBalancer& balancer() { return balancer_; }

 private:
  using Event = std::pair<uint64_t, size_t>;  // finish time, endpoint
  std::vector<uint64_t> latency_;
  std::mt19937_64 rng_;
  PeakEwmaBalancer balancer_;
  uint64_t now_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> done_;
};

TEST(PeakEwma, SlowEndpointLosesItsShareAndWinsItBackAfterRecovering) {
  // Two endpoints (a fair share is 50%), one 10x slower.
  Simulation sim({10 * kMs, 100 * kMs});
  std::vector<uint64_t> picks = sim.run(10000);
  const double slow_share = static_cast<double>(picks[1]) / 10000;
  EXPECT_LT(slow_share, 0.20);
  EXPECT_GT(picks[1], 0u);  // still probed
  // It recovers: within a few decay times (simulated) its share returns towards half.
  sim.setLatency(1, 10 * kMs);
  sim.run(60000);
  picks = sim.run(10000);
  const double recovered_share = static_cast<double>(picks[1]) / 10000;
  EXPECT_GT(recovered_share, 0.35);
  EXPECT_LT(recovered_share, 0.65);
}

TEST(PeakEwma, ManyEndpointsOneSlow) {
  // Five endpoints, fair share 20%; the slow one gets far less.
  Simulation sim({10 * kMs, 10 * kMs, 100 * kMs, 10 * kMs, 10 * kMs});
  std::vector<uint64_t> picks = sim.run(10000);
  EXPECT_LT(picks[2], 10000u * 5 / 100);
  for (size_t i : {0u, 1u, 3u, 4u}) EXPECT_GT(picks[i], 10000u * 15 / 100) << i;
}

TEST(PeakEwma, P2CDrawsTwoDistinctCandidatesByWeight) {
  std::mt19937_64 rng(1);
  std::vector<PeakEwma> eps(2);
  // One busy unknown endpoint (penalty) and one idle: distinct candidates, so the idle one
  // always wins.
  eps[0].start();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(pickP2C(eps, {}, rng(), 0), 1u);
  // Equal costs: the first candidate wins, so picks follow the weights (1:3).
  std::vector<PeakEwma> equal(2);
  const std::vector<uint64_t> cumulative{1, 4};
  int second = 0;
  for (int i = 0; i < 10000; ++i) second += pickP2C(equal, cumulative, rng(), 0) == 1;
  EXPECT_NEAR(second / 10000.0, 0.75, 0.03);
  // Weighted: with the heavier endpoint busy and unknown, the lighter one still wins every
  // time (the second candidate is never the first again).
  equal[1].start();
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(pickP2C(equal, cumulative, rng(), 0), 0u);
  // Edge cases.
  EXPECT_EQ(pickP2C({}, {}, rng(), 0), kNoEndpoint);
  EXPECT_EQ(pickP2C(absl::MakeConstSpan(eps.data(), 1), {}, rng(), 0), 0u);
  const std::vector<uint64_t> only_first{5, 5};  // the second weighs 0
  EXPECT_EQ(pickP2C(equal, only_first, UINT64_MAX, 0), 0u);
}

TEST(PeakEwma, StateSurvivesAConfigSwapByAddress) {
  auto addr = [](const char* ip) {
    SocketAddress a;
    a.ip = *IpAddress::parse(ip);
    a.port = 80;
    return a;
  };
  PeakEwmaBalancer b;
  std::vector<SocketAddress> v1{addr("10.0.0.1"), addr("10.0.0.2")};
  b.update(v1);
  const uint64_t gen = b.generation();
  b.onStart(1);
  b.onFinish(1, 50 * kMs, 1 * kSec);
  b.onStart(1);  // still in flight
  // New list: 10.0.0.2 moves to index 0, 10.0.0.1 is gone, 10.0.0.3 is new.
  std::vector<SocketAddress> v2{addr("10.0.0.2"), addr("10.0.0.3")};
  b.update(v2);
  EXPECT_NE(b.generation(), gen);
  EXPECT_EQ(b.indexOf(addr("10.0.0.2")), 0u);
  EXPECT_EQ(b.indexOf(addr("10.0.0.1")), kNoEndpoint);
  EXPECT_DOUBLE_EQ(b.endpoint(0).ewmaNs(1 * kSec, kTau), 50.0 * kMs);
  EXPECT_EQ(b.endpoint(0).pending(), 1u);
  EXPECT_FALSE(b.endpoint(1).sampled());
  EXPECT_EQ(b.endpoint(1).pending(), 0u);
}

TEST(PeakEwma, PickingAllocatesNothing) {
  Simulation sim({10 * kMs, 20 * kMs, 30 * kMs});
  sim.run(100);
  std::vector<uint64_t> cumulative{1, 2, 3};
  uint64_t sum = 0;
  testing::startCountingAllocations();
  for (uint64_t i = 0; i < 1000; ++i) {
    const size_t ep = sim.balancer().pick(cumulative, i * 0x9e3779b97f4a7c15ull, 200 * kMs);
    sim.balancer().onStart(ep);
    sim.balancer().onFinish(ep, 10 * kMs, 200 * kMs + i);
    sum += ep;
  }
  EXPECT_EQ(testing::stopCountingAllocations(), 0u);
  EXPECT_GT(sum, 0u);
}

// --- L7 outlier detection -------------------------------------------------------------------

struct RecordingSink : EjectionSink {
  struct Call {
    std::string address;
    uint16_t port;
    uint32_t ms;
  };
  std::vector<Call> calls;
  void eject(const IpAddress& address, uint16_t port, uint32_t ms) override {
    calls.push_back({address.toString(), port, ms});
  }
};

std::vector<SocketAddress> endpoints(size_t n) {
  std::vector<SocketAddress> out;
  for (size_t i = 0; i < n; ++i) {
    SocketAddress a;
    a.ip = *IpAddress::parse("10.1.0." + std::to_string(i + 1));
    a.port = 9000;
    out.push_back(a);
  }
  return out;
}

TEST(L7Outlier, FiveConsecutive5xxEject) {
  state::L7OutlierSettings s;  // 5 x 5xx; 30 s base, 300 s max, 10%
  const auto eps = endpoints(10);
  L7Outlier o(s, eps);
  RecordingSink sink;
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(o.record(3, L7Result::k5xx, 1000, sink));
  EXPECT_EQ(o.consecutive5xx(3), 4u);
  EXPECT_TRUE(o.record(3, L7Result::k5xx, 1000, sink));
  ASSERT_EQ(sink.calls.size(), 1u);
  EXPECT_EQ(sink.calls[0].address, "10.1.0.4");
  EXPECT_EQ(sink.calls[0].port, 9000);
  EXPECT_EQ(sink.calls[0].ms, 30'000u);
  EXPECT_TRUE(o.ejected(3, 1000));
  EXPECT_TRUE(o.ejected(3, 30'999));
  EXPECT_EQ(o.ejectedCount(), 1u);
  EXPECT_EQ(o.consecutive5xx(3), 0u);  // the run restarts
  // Results of requests still in flight while ejected change nothing.
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(o.record(3, L7Result::k5xx, 2000, sink));
  EXPECT_EQ(sink.calls.size(), 1u);
  // The ejection ends at its time.
  EXPECT_FALSE(o.ejected(3, 31'000));
  EXPECT_EQ(o.ejectedCount(), 0u);
}

TEST(L7Outlier, ASuccessInBetweenResetsTheRun) {
  state::L7OutlierSettings s;
  L7Outlier o(s, endpoints(2));
  RecordingSink sink;
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 4; ++i) o.record(0, L7Result::k5xx, 1, sink);
    o.record(0, L7Result::kSuccess, 1, sink);
    EXPECT_EQ(o.consecutive5xx(0), 0u);
  }
  EXPECT_TRUE(sink.calls.empty());
  EXPECT_FALSE(o.ejected(0, 1));
}

TEST(L7Outlier, GatewayErrorsHaveTheirOwnRun) {
  state::L7OutlierSettings s;
  s.consecutive_5xx = 0;  // off
  s.consecutive_gateway_errors = 3;
  L7Outlier o(s, endpoints(1));
  RecordingSink sink;
  // A 500 ends the gateway run.
  o.record(0, L7Result::kGatewayError, 1, sink);
  o.record(0, L7Result::kGatewayError, 1, sink);
  o.record(0, L7Result::k5xx, 1, sink);
  EXPECT_EQ(o.consecutiveGateway(0), 0u);
  o.record(0, L7Result::kGatewayError, 1, sink);
  o.record(0, L7Result::kGatewayError, 1, sink);
  EXPECT_TRUE(sink.calls.empty());
  EXPECT_TRUE(o.record(0, L7Result::kGatewayError, 1, sink));
  EXPECT_EQ(sink.calls.size(), 1u);  // one endpoint, 10%: the cap is still one
  // Gateway errors also count as 5xx.
  state::L7OutlierSettings only5xx;
  L7Outlier o2(only5xx, endpoints(1));
  for (int i = 0; i < 5; ++i) o2.record(0, L7Result::kGatewayError, 1, sink);
  EXPECT_TRUE(o2.ejected(0, 1));
}

TEST(L7Outlier, Classification) {
  EXPECT_EQ(classifyStatus(200), L7Result::kSuccess);
  EXPECT_EQ(classifyStatus(404), L7Result::kSuccess);
  EXPECT_EQ(classifyStatus(429), L7Result::kSuccess);
  EXPECT_EQ(classifyStatus(500), L7Result::k5xx);
  EXPECT_EQ(classifyStatus(501), L7Result::k5xx);
  EXPECT_EQ(classifyStatus(502), L7Result::kGatewayError);
  EXPECT_EQ(classifyStatus(503), L7Result::kGatewayError);
  EXPECT_EQ(classifyStatus(504), L7Result::kGatewayError);
  EXPECT_EQ(classifyStatus(505), L7Result::k5xx);
  EXPECT_EQ(classify(TryOutcome::connectFailure()), L7Result::kGatewayError);
  EXPECT_EQ(classify(TryOutcome::reset()), L7Result::kGatewayError);
  EXPECT_EQ(classify(TryOutcome::perTryTimeout()), L7Result::kGatewayError);
  EXPECT_EQ(classify(TryOutcome::response(200, 14)), L7Result::kGatewayError);  // UNAVAILABLE
  EXPECT_EQ(classify(TryOutcome::response(200, 13)), L7Result::k5xx);           // INTERNAL
  EXPECT_EQ(classify(TryOutcome::response(200, 5)), L7Result::kSuccess);        // NOT_FOUND
  EXPECT_EQ(classify(TryOutcome::response(200, 0)), L7Result::kSuccess);
  EXPECT_EQ(httpStatusFromGrpc(4), 504);
  EXPECT_EQ(httpStatusFromGrpc(8), 429);
  EXPECT_EQ(httpStatusFromGrpc(12), 501);
  EXPECT_EQ(httpStatusFromGrpc(99), 500);
}

TEST(L7Outlier, PercentCapHolds) {
  state::L7OutlierSettings s;  // 10%
  L7Outlier o(s, endpoints(20));
  EXPECT_EQ(o.cap(), 2u);
  RecordingSink sink;
  for (size_t ep = 0; ep < 20; ++ep) {
    for (int i = 0; i < 5; ++i) o.record(ep, L7Result::k5xx, 100, sink);
  }
  EXPECT_EQ(sink.calls.size(), 2u);
  EXPECT_EQ(o.ejectedCount(), 2u);
  EXPECT_EQ(o.ejectionsSkipped(), 18u);
  // A skipped endpoint keeps failing: the next failure tries again, and succeeds once the
  // ejections have ended (found by the attempt itself: nobody else looked; both ended at
  // the same time, so one ejection is left).
  EXPECT_FALSE(o.record(5, L7Result::k5xx, 100, sink));
  EXPECT_EQ(o.ejectionsSkipped(), 19u);
  EXPECT_TRUE(o.record(5, L7Result::k5xx, 100 + 30'000, sink));
  EXPECT_EQ(o.ejectedCount(), 1u);
  EXPECT_TRUE(o.ejected(5, 100 + 30'000));
  EXPECT_FALSE(o.ejected(0, 100 + 30'000));
  // 0% ejects nothing but counts what would have been ejected.
  s.max_ejection_percent = 0;
  L7Outlier none(s, endpoints(3));
  for (int i = 0; i < 5; ++i) none.record(0, L7Result::k5xx, 1, sink);
  EXPECT_EQ(none.ejectedCount(), 0u);
  EXPECT_EQ(none.ejectionsSkipped(), 1u);
  // At least one: a single-endpoint cluster can lose its only endpoint.
  EXPECT_EQ(L7Outlier::ejectionCap(10, 1), 1u);
  EXPECT_EQ(L7Outlier::ejectionCap(10, 19), 1u);
  EXPECT_EQ(L7Outlier::ejectionCap(50, 5), 2u);
  EXPECT_EQ(L7Outlier::ejectionCap(100, 5), 5u);
  EXPECT_EQ(L7Outlier::ejectionCap(0, 100), 0u);
}

TEST(L7Outlier, EjectionTimeGrowsWithTimesEjectedUpToTheMaximum) {
  EXPECT_EQ(L7Outlier::ejectionMs(30'000, 300'000, 1), 30'000u);
  EXPECT_EQ(L7Outlier::ejectionMs(30'000, 300'000, 3), 90'000u);
  EXPECT_EQ(L7Outlier::ejectionMs(30'000, 300'000, 11), 300'000u);
  EXPECT_EQ(L7Outlier::ejectionMs(30'000, 300'000, UINT32_MAX), 300'000u);
  state::L7OutlierSettings s;
  s.consecutive_5xx = 1;
  s.base_ejection_ms = 1000;
  s.max_ejection_ms = 3500;
  L7Outlier o(s, endpoints(1));
  RecordingSink sink;
  uint64_t now = 0;
  for (int round = 1; round <= 5; ++round) {
    ASSERT_TRUE(o.record(0, L7Result::k5xx, now, sink)) << round;
    EXPECT_EQ(o.timesEjected(0), static_cast<uint32_t>(round));
    now += sink.calls.back().ms;  // it comes back exactly then
  }
  std::vector<uint32_t> ms;
  for (const auto& c : sink.calls) ms.push_back(c.ms);
  EXPECT_THAT(ms, ::testing::ElementsAre(1000, 2000, 3000, 3500, 3500));
}

TEST(L7Outlier, ASwapKeepsStateByAddress) {
  state::L7OutlierSettings s;
  const auto eps = endpoints(3);
  L7Outlier a(s, eps);
  RecordingSink sink;
  for (int i = 0; i < 5; ++i) a.record(1, L7Result::k5xx, 10, sink);  // ejected
  for (int i = 0; i < 2; ++i) a.record(2, L7Result::k5xx, 10, sink);
  const std::vector<SocketAddress> next{eps[2], eps[1], endpoints(4)[3]};
  L7Outlier b(a, s, next);
  EXPECT_EQ(b.consecutive5xx(0), 2u);
  EXPECT_TRUE(b.ejected(1, 10));
  EXPECT_EQ(b.timesEjected(1), 1u);
  EXPECT_EQ(b.ejectedCount(), 1u);
  EXPECT_FALSE(b.ejected(2, 10));
  EXPECT_EQ(b.consecutive5xx(2), 0u);
}

TEST(L7Outlier, ConcurrentRecordersRespectTheCapAndEjectOnce) {
  state::L7OutlierSettings s;
  s.max_ejection_percent = 30;  // 3 of 10
  L7Outlier o(s, endpoints(10));
  struct CountingSink : EjectionSink {
    std::atomic<int> calls{0};
    void eject(const IpAddress&, uint16_t, uint32_t) override { calls.fetch_add(1); }
  } sink;
  std::atomic<int> ejected_by_record{0};
  std::atomic<uint32_t> max_seen{0};
  auto worker = [&](int seed) {
    std::mt19937 rng(seed);
    for (int i = 0; i < 100000; ++i) {
      const size_t ep = rng() % 10;
      if (o.record(ep, rng() % 4 == 0 ? L7Result::kSuccess : L7Result::k5xx, 1, sink)) {
        ejected_by_record.fetch_add(1);
      }
      uint32_t seen = o.ejectedCount();
      uint32_t m = max_seen.load();
      while (seen > m && !max_seen.compare_exchange_weak(m, seen)) {
      }
    }
  };
  std::thread t1(worker, 1), t2(worker, 2);
  t1.join();
  t2.join();
  EXPECT_LE(max_seen.load(), 3u);
  EXPECT_EQ(o.ejectedCount(), 3u);  // time never advances: the first three stay ejected
  EXPECT_EQ(sink.calls.load(), 3);
  EXPECT_EQ(ejected_by_record.load(), 3);
}

// --- ClusterRegistry ------------------------------------------------------------------------

TEST(ClusterRegistry, BreakerSurvivesSwapsAndOutlierFollowsTheEndpoints) {
  ClusterRegistry reg;
  state::RequestPolicy policy;
  policy.limits.max_requests = 2;
  const auto eps = endpoints(3);
  ClusterStatePtr a = reg.attach("default/web:80", policy, eps);
  Guard held = a->breaker->tryAcquireRequest();  // an exchange on snapshot A
  RecordingSink sink;
  for (int i = 0; i < 3; ++i) a->outlier->record(2, L7Result::k5xx, 1, sink);

  // Same endpoints and settings, new limits: the same objects, reconfigured.
  policy.limits.max_requests = 1;
  ClusterStatePtr b = reg.attach("default/web:80", policy, eps);
  EXPECT_EQ(b->breaker, a->breaker);
  EXPECT_EQ(b->outlier, a->outlier);
  EXPECT_FALSE(b->breaker->tryAcquireRequest()) << "A's request still counts against 1";
  held.release();
  EXPECT_TRUE(b->breaker->tryAcquireRequest());

  // New endpoint list: the same breaker, a new detector carrying the state by address.
  const std::vector<SocketAddress> next{eps[2], eps[0]};
  ClusterStatePtr c = reg.attach("default/web:80", policy, next);
  EXPECT_EQ(c->breaker, a->breaker);
  EXPECT_NE(c->outlier, a->outlier);
  ASSERT_EQ(c->outlier->size(), 2u);
  EXPECT_EQ(c->outlier->consecutive5xx(0), 3u);
  EXPECT_EQ(a->outlier->size(), 3u) << "snapshot A's detector is left as it was";

  // New outlier settings alone also make a new detector.
  policy.outlier.consecutive_5xx = 4;
  ClusterStatePtr d = reg.attach("default/web:80", policy, next);
  EXPECT_NE(d->outlier, c->outlier);
  EXPECT_TRUE(d->outlier->record(0, L7Result::k5xx, 1, sink)) << "3 + 1 reaches the new 4";

  // Clusters are independent; retain() forgets the ones a snapshot no longer has.
  ClusterStatePtr other = reg.attach("default/api:80", policy, eps);
  EXPECT_NE(other->breaker, a->breaker);
  EXPECT_EQ(reg.size(), 2u);
  reg.retain({"default/api:80"});
  EXPECT_EQ(reg.size(), 1u);
  ClusterStatePtr fresh = reg.attach("default/web:80", policy, eps);
  EXPECT_NE(fresh->breaker, a->breaker);
  EXPECT_EQ(fresh->breaker->counts().active, 0u);
}

// --- Fault injection ------------------------------------------------------------------------

TEST(FaultInjector, SharesWithinToleranceOver10000Draws) {
  state::FaultInjection f;
  f.delay_ms = 250;
  f.delay_per_million = 100'000;  // 10%
  f.abort_http_status = 503;
  f.abort_per_million = 250'000;  // 25%
  FaultInjector inj(f);
  std::mt19937_64 rng(3);
  int delayed = 0, aborted = 0, both = 0;
  constexpr int kDraws = 10000;
  for (int i = 0; i < kDraws; ++i) {
    const FaultDecision d = inj.decide(rng());
    if (d.delayed()) {
      ++delayed;
      EXPECT_EQ(d.delay_ms, 250u);
    }
    if (d.aborted()) {
      ++aborted;
      EXPECT_EQ(d.abort_http_status, 503);
      EXPECT_EQ(d.abort_grpc_status, -1);
    }
    both += d.delayed() && d.aborted();
  }
  // Binomial standard deviations: 30, 43 and 16; allow 5 of them.
  EXPECT_NEAR(delayed, 1000, 150);
  EXPECT_NEAR(aborted, 2500, 215);
  EXPECT_NEAR(both, 250, 80);  // independent draws
}

TEST(FaultInjector, AllNoneAndGrpc) {
  state::FaultInjection f;
  FaultInjector none(f);
  EXPECT_FALSE(none.active());
  EXPECT_FALSE(none.decide(0).delayed());
  EXPECT_FALSE(none.decide(0).aborted());
  f.abort_grpc_status = 14;
  f.abort_per_million = state::FaultInjection::kMillion;
  FaultInjector all(f);
  EXPECT_TRUE(all.active());
  std::mt19937_64 rng(5);
  for (int i = 0; i < 1000; ++i) {
    const FaultDecision d = all.decide(rng());
    ASSERT_TRUE(d.aborted());
    EXPECT_EQ(d.abort_grpc_status, 14);
    EXPECT_EQ(d.abort_http_status, 0);
    EXPECT_FALSE(d.delayed());
  }
  EXPECT_TRUE(all.decide(UINT64_MAX).aborted());
  // 0.0001% (one per million) is not rounded to zero or to everything.
  f.abort_per_million = 1;
  int hits = 0;
  for (int i = 0; i < 10000; ++i) hits += all.decide(rng()).aborted();
  EXPECT_LT(hits, 5);
  EXPECT_TRUE(all.decide(0).aborted());  // the lowest draw is inside the share
}

}  // namespace
}  // namespace meshd::proxy::resilience
