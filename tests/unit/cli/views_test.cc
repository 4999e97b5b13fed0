// api/views.cc (what meshd returns for `meshctl get backends` and `meshctl
// explain`) and cli/render.cc (how meshctl prints it) for outlier detection
// and p2c-ewma: a fixed clock, kernel counters set by hand.
#include "api/views.h"

#include "cli/render.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mesh_lb.h"

namespace meshd::api {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kSecond = 1'000'000'000;
// CLOCK_MONOTONIC 1000 s; CLOCK_REALTIME 2023-11-14T22:13:20Z.
const ViewClock kClock{1000 * kSecond, int64_t{1'700'000'000} * int64_t{kSecond}};

datapath::Reconciler::BackendView backend(const char* addr, uint32_t id) {
  datapath::Reconciler::BackendView b{};
  b.id = id;
  b.address = *IpAddress::parse(addr);
  b.port = 8080;
  b.weight = 1;
  return b;
}

// web: three backends: .1 healthy with an SRTT, .2 ejected for 12.5 s more
// after 5 failures, .3 ejected but its time is over (connect() clears it at
// the next pick, so it counts as back).
FrontendViews webViews() {
  datapath::Reconciler::FrontendView fv;
  fv.frontend.ns = "default";
  fv.frontend.service = "web";
  fv.frontend.vip = *IpAddress::parse("10.96.0.10");
  fv.frontend.port = 80;
  fv.frontend.algorithm = state::LbAlgorithm::kLeastLatency;
  fv.frontend.outlier = state::OutlierDetection{5, 30'000, 300'000, 50};
  fv.svc_id = 4;
  fv.counters.ejected = 1;
  fv.counters.ejections = 3;
  fv.counters.ejections_skipped = 2;
  fv.counters.refused_ejected = 7;
  fv.counters.refused_authz = 4;
  auto a = backend("10.0.0.1", 1);
  a.counters.live_conns = 2;
  a.counters.srtt_ewma_us = 20'400;
  a.counters.rtt_samples = 90;
  auto b = backend("10.0.0.2", 2);
  b.counters.consecutive_failures = 5;
  b.counters.connect_failures = 11;
  b.counters.times_ejected = 2;
  b.counters.ejected_until_ns = kClock.monotonic_ns + 12'500'000'000;
  b.counters.ejected_svc_id = 4;
  auto c = backend("10.0.0.3", 3);
  c.counters.ejected_until_ns = kClock.monotonic_ns - 1;
  c.counters.srtt_ewma_us = 850;
  fv.backends = {a, b, c};
  return {fv};
}

TEST(ViewsTest, BackendsShowFailuresEjectionAndSrtt) {
  nlohmann::ordered_json rows = backendsView(webViews(), "default", "web", kClock);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["ejected"], false);
  EXPECT_TRUE(rows[0]["ejectedFor"].is_null());
  EXPECT_EQ(rows[0]["srtt"], "20.4ms");
  EXPECT_EQ(rows[0]["srttEwmaUs"], 20'400);
  EXPECT_EQ(rows[0]["rttSamples"], 90);
  EXPECT_EQ(rows[1]["consecutiveFailures"], 5);
  EXPECT_EQ(rows[1]["ejected"], true);
  EXPECT_EQ(rows[1]["ejectedFor"], "12.5s");
  EXPECT_EQ(rows[1]["ejectedUntil"], "2023-11-14T22:13:32.500Z");
  EXPECT_EQ(rows[1]["ejectedUntilNs"], kClock.monotonic_ns + 12'500'000'000);
  EXPECT_EQ(rows[1]["timesEjected"], 2);
  EXPECT_TRUE(rows[1]["srtt"].is_null()) << "no sample yet";
  EXPECT_EQ(rows[2]["ejected"], false) << "ejection time over";
  EXPECT_EQ(rows[2]["srtt"], "850us");

  const std::string table = cli::renderView("backends", cli::Json::parse(rows.dump()));
  EXPECT_THAT(table, HasSubstr("FAILED   CONSEC-FAIL   EJECTED-FOR   SRTT"));
  EXPECT_THAT(table, HasSubstr("10.0.0.2:8080   1        0      <none>   0       11       5"
                               "             12.5s         <none>"));
}

TEST(ViewsTest, ExplainSaysWhyAndRendersEjections) {
  nlohmann::ordered_json rows = explainView(webViews(), "default", "web", {}, kClock);
  ASSERT_EQ(rows.size(), 1u);
  const auto& e = rows[0];
  EXPECT_EQ(e["algorithm"], "LeastLatency");
  EXPECT_EQ(e["outlierDetection"]["consecutiveFailures"], 5);
  EXPECT_EQ(e["outlierDetection"]["baseEjectionTime"], "30s");
  EXPECT_EQ(e["outlierDetection"]["maxEjectionTime"], "5m");
  EXPECT_EQ(e["ejectedNow"], 1);
  EXPECT_EQ(e["ejectionsSkipped"], 2);
  EXPECT_EQ(e["refusedAllEjected"], 7);
  EXPECT_EQ(e["refusedByAuthz"], 4);
  EXPECT_EQ(e["verdict"], "admitting: 1 of 3 backends (1 ejected) are skipped for ones with room");

  const std::string text = cli::renderExplain(cli::Json::parse(rows.dump()));
  EXPECT_THAT(text,
              HasSubstr("  outliers:    eject after 5 failed connects in a row for 30s x "
                        "times ejected (at most 5m), up to 50% of backends (at least one)\n"));
  EXPECT_THAT(text, HasSubstr("  ejections:   1 ejected now, 3 made, 2 not made at "
                              "maxEjectionPercent; refused with every backend tried ejected: 7\n"));
  EXPECT_THAT(text, HasSubstr("    10.0.0.2:8080  live 0/none  connect failures 11  EJECTED (12.5s "
                              "left)  failures in a row 5\n"));
  EXPECT_THAT(text, HasSubstr("    10.0.0.1:8080  live 2/none  connect failures 0  srtt 20.4ms\n"));
  EXPECT_THAT(text, HasSubstr("  authorization: 4 connects refused by AuthorizationPolicy in the "
                              "kernel (same-node clients, L4 rules)\n"));
}

// The L7 proxy's request-level state of the Service port (its breaker, L7 ejections) joins
// the frontend's explanation; other clusters' state does not.
TEST(ViewsTest, ExplainShowsTheL7RequestLevelState) {
  L7ClusterViews l7 = {{"default/other:80", 9, 9, 9, 9, 9, 9, 9, 9, 9},
                       {"default/web:80", 2, 5, 1, 3, 4, 6, 1, 7, 8}};
  nlohmann::ordered_json rows = explainView(webViews(), "default", "web", {}, kClock, l7);
  ASSERT_EQ(rows.size(), 1u);
  const auto& r = rows[0]["requestLevel"];
  EXPECT_EQ(r["cluster"], "default/web:80");
  EXPECT_EQ(r["activeRequests"], 5);
  EXPECT_EQ(r["pendingOverflow"], 3);
  EXPECT_EQ(r["l7Ejections"], 7);
  const std::string text = cli::renderExplain(cli::Json::parse(rows.dump()));
  EXPECT_THAT(text, HasSubstr("  requests:    5 active, 2 pending, 1 retries in flight (L7 proxy, "
                              "node-wide); refused 503 UO: 3 at maxPendingRequests, 4 at "
                              "maxRequests; retries not made: 6\n"));
  EXPECT_THAT(text, HasSubstr("  L7 outliers: 1 ejected now, 7 made, 8 not made at "
                              "maxEjectionPercent (consecutive 5xx / gateway errors)\n"));
  // Without L7 state: no such lines.
  rows = explainView(webViews(), "default", "web", {}, kClock);
  EXPECT_FALSE(rows[0].contains("requestLevel"));
  EXPECT_THAT(cli::renderExplain(cli::Json::parse(rows.dump())),
              ::testing::Not(HasSubstr("requests:")));
}

TEST(ViewsTest, ExplainWhenEveryBackendIsEjected) {
  FrontendViews views = webViews();
  views[0].backends.erase(views[0].backends.begin());
  views[0].backends[1].counters.ejected_until_ns = kClock.monotonic_ns + 90 * kSecond;
  nlohmann::ordered_json rows = explainView(views, "", "web", {}, kClock);
  EXPECT_EQ(rows[0]["verdict"],
            "refusing: every backend is ejected by outlier detection (5 failed connects in a "
            "row); the first returns in 12.5s; connect() fails with ECONNREFUSED");

  views[0].frontend.outlier.consecutive_failures = 0;
  rows = explainView(views, "", "web", {}, kClock);
  EXPECT_THAT(cli::renderExplain(cli::Json::parse(rows.dump())),
              HasSubstr("  outliers:    detection off\n"));
  EXPECT_EQ(rows[0]["outlierDetection"]["enabled"], false);
}

TEST(ViewsTest, ClaimedEjectionShowsAsEjecting) {
  FrontendViews views = webViews();
  views[0].backends[0].counters.ejected_until_ns = MESH_EJECT_CLAIMED;
  nlohmann::ordered_json rows = backendsView(views, "", "", kClock);
  EXPECT_EQ(rows[0]["ejected"], true);
  EXPECT_EQ(rows[0]["ejectedFor"], "ejecting");
  EXPECT_TRUE(rows[0]["ejectedUntil"].is_null());
}

TEST(ViewsTest, PoliciesShowOutlierDetection) {
  auto parsed = resources::parseFiles({resources::SourceFile{"p.yaml", R"(
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web}
spec:
  targetRef: {kind: Service, name: web}
  outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 1500ms}
)"}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto rows = policiesView(*parsed, "", "");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0]["outlierDetection"].dump(),
            R"({"enabled":true,"consecutiveFailures":3,"baseEjectionTime":"1s500ms",)"
            R"("maxEjectionTime":"5m","maxEjectionPercent":10})");
}

TEST(ViewsTest, PoliciesShowTheRequestPolicy) {
  auto parsed = resources::parseFiles({resources::SourceFile{"p.yaml", R"(
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web}
spec:
  targetRef: {kind: Service, name: web}
  requestLimits: {maxRequests: 50, retryBudget: {percent: 25}}
  retries: {attempts: 3, perTryTimeout: 1500ms, retryOn: "5xx,409"}
  faultInjection: {delay: {fixedDelay: 2s, percentage: 12.5}, abort: {grpcStatus: UNAVAILABLE}}
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: api}
spec:
  targetRef: {kind: Service, name: api}
)"}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto rows = policiesView(*parsed, "", "");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ(
      (*rows)[0]["requestPolicy"].dump(),
      R"({"l7":true,"requestLimits":{"maxPendingRequests":1024,"maxRequests":50,"maxRetries":3,)"
      R"("retryBudget":{"percent":25,"minRetryConcurrency":3}},"retries":{"attempts":3,)"
      R"("perTryTimeout":"1s500ms","retryOn":["5xx","retriable-status-codes"],)"
      R"("retriableStatusCodes":[409],"backoff":{"baseInterval":"25ms","maxInterval":"250ms"}},)"
      R"("outlierDetection":{"consecutive5xxErrors":5,"consecutiveGatewayErrors":0},)"
      R"("faultInjection":{"delay":{"fixedDelay":"2s","percentage":12.5},)"
      R"("abort":{"grpcStatus":"UNAVAILABLE","percentage":100.0}},"leastLatencyPerRequest":false})");
  // Defaults, and not L7 by itself.
  EXPECT_EQ((*rows)[1]["requestPolicy"]["l7"], false);
  EXPECT_TRUE((*rows)[1]["requestPolicy"]["faultInjection"].is_null());
  EXPECT_TRUE((*rows)[1]["requestPolicy"]["requestLimits"]["retryBudget"].is_null());
  EXPECT_EQ((*rows)[1]["requestPolicy"]["retries"]["retriableStatusCodes"].dump(), "[503]");
}

}  // namespace
}  // namespace meshd::api
