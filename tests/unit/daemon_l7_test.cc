// L7Config::onRequest: proxy records (protocol "http/1.1", "http/2", "grpc", "tcp") become
// Istio request metrics with the right request_protocol and grpc_response_status. No
// configuration is applied, so the workload and service labels are "unknown".
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/l7.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "resources/resource.h"
#include "state/desired_state.h"

namespace meshd::daemon {
namespace {

std::string requestLines(L7Config& cfg) {
  std::string out;
  cfg.metrics().render(out);
  std::string lines;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t end = out.find('\n', pos);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(pos, end - pos);
    if (line.rfind("istio_requests_total{", 0) == 0) lines += line + "\n";
    pos = end + 1;
  }
  return lines;
}

TEST(L7ConfigTest, Http2IsHttpAndGrpcCarriesItsStatus) {
  L7Config cfg(nullptr, 1);
  proxy::RequestRecord r;
  r.response_code = 200;
  r.protocol = "http/2";
  cfg.onRequest(r);
  r.protocol = "grpc";
  r.grpc_status = "5";
  cfg.onRequest(r);
  r.protocol = "http/1.1";
  r.grpc_status = "";
  r.response_code = 404;
  r.response_flags = "NR";
  cfg.onRequest(r);
  const std::string lines = requestLines(cfg);
  // http/2 and http/1.1 are both "http" (Istio's request_protocol), without a grpc status.
  EXPECT_NE(lines.find("request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\""),
            std::string::npos)
      << lines;
  EXPECT_NE(
      lines.find("request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"5\""),
      std::string::npos)
      << lines;
  EXPECT_NE(lines.find("request_protocol=\"http\",response_code=\"404\",grpc_response_status=\"\","
                       "response_flags=\"NR\""),
            std::string::npos)
      << lines;
}

// Applies YAML to an L7Config as the model would (resources -> desired state -> willApply).
void applyYaml(L7Config& cfg, const std::string& yaml) {
  auto parsed = resources::parseFiles({resources::SourceFile{"t.yaml", yaml}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  resources::ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  auto desired = state::computeDesiredState(set);
  ASSERT_TRUE(desired.ok()) << desired.status();
  cfg.willApply(set, *desired);
}

constexpr char kTwoEndpoints[] = R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: ["10.244.1.11"]
  - addresses: ["10.244.1.12"]
)";

proxy::RouteDecision routeOne(L7Config& cfg) {
  proxy::RequestInfo req;
  req.orig_dst = *SocketAddress::parse("10.96.0.20:80");
  req.peer = *SocketAddress::parse("10.244.2.11:40000");
  req.method = "GET";
  req.target = "/";
  req.authority = "web";
  proxy::RouteDecision d;
  cfg.route(req, d);
  return d;
}

// Routes `n` requests; each one's endpoint answers in 20 ms if it is 10.244.1.12 (slow),
// else 1 ms, fed back as the proxy would (onTry for the one try, then onRequest). Returns the
// slow endpoint's picks among the last `counted` requests.
int picksOfSlowEndpoint(L7Config& cfg, int n, int counted) {
  const SocketAddress slow = *SocketAddress::parse("10.244.1.12:8080");
  int to_slow = 0;
  for (int i = 0; i < n; ++i) {
    const proxy::RouteDecision d = routeOne(cfg);
    EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kForward) << d.status;
    if (d.kind != proxy::RouteDecision::Kind::kForward) return -1;
    if (i >= n - counted) to_slow += d.upstream == slow;
    proxy::RequestRecord r;
    r.cluster = d.cluster;
    r.upstream = d.upstream;
    r.response_code = 200;
    r.protocol = "http/1.1";
    r.duration_us = d.upstream == slow ? 20'000 : 1'000;
    r.attempts = 1;
    cfg.onTry(d, d.upstream, proxy::resilience::TryOutcome::response(200), r.duration_us);
    cfg.onRequest(r);
  }
  return to_slow;
}

TEST(L7ConfigTest, FaultAbortAnswersWithItsStatusAndFlagFI) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, std::string(kTwoEndpoints) + R"(---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-fault}
spec:
  targetRef: {kind: Service, name: web}
  faultInjection:
    abort: {httpStatus: 418, percentage: 100}
)");
  for (int i = 0; i < 20; ++i) {
    const proxy::RouteDecision d = routeOne(cfg);
    ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kDirectResponse);
    EXPECT_EQ(d.status, 418);
    EXPECT_EQ(d.response_flags, "FI");
  }
  // Half the requests: both outcomes over 400 draws (each missing has probability 2^-400).
  applyYaml(cfg, std::string(kTwoEndpoints) + R"(---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-fault}
spec:
  targetRef: {kind: Service, name: web}
  faultInjection:
    abort: {httpStatus: 503, percentage: 50}
)");
  int aborted = 0, forwarded = 0;
  for (int i = 0; i < 400; ++i) {
    const proxy::RouteDecision d = routeOne(cfg);
    if (d.kind == proxy::RouteDecision::Kind::kDirectResponse) {
      EXPECT_EQ(d.response_flags, "FI");
      ++aborted;
    } else {
      ++forwarded;
    }
  }
  EXPECT_GT(aborted, 100);
  EXPECT_GT(forwarded, 100);
}

// LeastLatency per request: once one endpoint answers 20x slower, peak-EWMA P2C sends it
// a small share (weighted random would give it half).
TEST(L7ConfigTest, LeastLatencyAvoidsTheSlowEndpointPerRequest) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, std::string(kTwoEndpoints) + R"(---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-lb}
spec:
  targetRef: {kind: Service, name: web}
  loadBalancer: {algorithm: LeastLatency}
  retries: {attempts: 1}
)");
  // Of the last 1000 requests (after 1000 to learn), the slow endpoint gets under a quarter.
  const int to_slow = picksOfSlowEndpoint(cfg, 2000, 1000);
  EXPECT_GE(to_slow, 0);
  EXPECT_LT(to_slow, 250);
}

// Without LeastLatency the same feedback changes nothing: weighted random, about half each.
TEST(L7ConfigTest, WeightedRandomIgnoresLatency) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, std::string(kTwoEndpoints) + R"(---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-lb}
spec:
  targetRef: {kind: Service, name: web}
  retries: {attempts: 1}
)");
  const int to_slow = picksOfSlowEndpoint(cfg, 2000, 2000);
  EXPECT_GT(to_slow, 800);  // ~1000; 800 is > 8 standard deviations away
  EXPECT_LT(to_slow, 1200);
}

// --access-log: each record becomes one JSON line with Envoy's protocol names, the record's
// fields mapped to Istio's keys, and grpc_status only for gRPC.
TEST(L7ConfigTest, AccessLogWritesOneLinePerRecord) {
  char dir[] = "/tmp/meshd_l7_access_log.XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/access.log";
  L7Config cfg(nullptr, 1);
  auto log = telemetry::AccessLog::open(path);
  ASSERT_TRUE(log.ok()) << log.status();
  cfg.setAccessLog(std::move(*log));
  proxy::RequestRecord r;
  r.protocol = "http/1.1";
  r.method = "GET";
  r.path = "/a?b=1";
  r.authority = "web:80";
  r.user_agent = "curl/8.0";
  r.request_id = "id-1";
  r.response_code = 200;
  r.request_bytes = 10;
  r.response_bytes = 20;
  r.duration_us = 5'500;
  r.start_unix_us = 1'700'000'000'000'000;
  r.cluster = "default/web:80";
  r.peer = *SocketAddress::parse("[::ffff:10.1.0.3]:5000");
  r.orig_dst = *SocketAddress::parse("10.96.0.10:80");
  r.upstream = *SocketAddress::parse("10.1.0.7:8080");
  r.attempts = 2;
  cfg.onRequest(r);
  r.protocol = "grpc";
  r.grpc_status = "14";
  r.response_flags = "UF";
  cfg.onRequest(r);
  proxy::RequestRecord tcp;
  tcp.protocol = "tcp";
  tcp.peer = *SocketAddress::parse("10.1.0.3:5001");
  cfg.onRequest(tcp);
  cfg.accessLog()->flush();

  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["protocol"], "HTTP/1.1");
  EXPECT_EQ(lines[0]["start_time"], "2023-11-14T22:13:20.000Z");
  EXPECT_EQ(lines[0]["method"], "GET");
  EXPECT_EQ(lines[0]["path"], "/a?b=1");
  EXPECT_EQ(lines[0]["authority"], "web:80");
  EXPECT_EQ(lines[0]["user_agent"], "curl/8.0");
  EXPECT_EQ(lines[0]["request_id"], "id-1");
  EXPECT_EQ(lines[0]["response_code"], 200);
  EXPECT_EQ(lines[0]["response_flags"], "-");
  EXPECT_EQ(lines[0]["bytes_received"], 10);
  EXPECT_EQ(lines[0]["bytes_sent"], 20);
  EXPECT_EQ(lines[0]["duration"], 5);
  EXPECT_EQ(lines[0]["upstream_host"], "10.1.0.7:8080");
  EXPECT_EQ(lines[0]["upstream_cluster"], "default/web:80");
  EXPECT_EQ(lines[0]["downstream_local_address"], "10.96.0.10:80");
  EXPECT_EQ(lines[0]["downstream_remote_address"], "10.1.0.3:5000");
  EXPECT_EQ(lines[0]["attempts"], 2);
  EXPECT_FALSE(lines[0].contains("grpc_status"));
  EXPECT_EQ(lines[1]["protocol"], "HTTP/2");
  EXPECT_EQ(lines[1]["grpc_status"], "14");
  EXPECT_EQ(lines[1]["response_flags"], "UF");
  EXPECT_EQ(lines[2]["protocol"], "tcp");
  EXPECT_TRUE(lines[2]["method"].is_null());
  EXPECT_EQ(lines[2]["downstream_remote_address"], "10.1.0.3:5001");
  // The metrics were recorded too (the log comes after them).
  EXPECT_NE(requestLines(cfg).find("grpc_response_status=\"14\""), std::string::npos);
  cfg.setAccessLog(nullptr);
  ::unlink(path.c_str());
  ::rmdir(dir);
}

// --- Request-level resilience: what route() hands the core, retarget(), onTry().

constexpr char kThreeEndpoints[] = R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: ["10.244.1.11"]
  - addresses: ["10.244.1.12"]
  - addresses: ["10.244.1.13"]
)";

// A route-less Service made L7 by its TrafficPolicy (`spec` is the policy's spec body).
std::string webWithPolicy(const std::string& spec, const char* base = kThreeEndpoints) {
  return std::string(base) + R"(---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-policy}
spec:
  targetRef: {kind: Service, name: web}
)" + spec;
}

// Records every ejection the daemon asks of the kernel.
class FakeEjector : public datapath::BackendEjector {
 public:
  struct Call {
    SocketAddress frontend, backend;
    uint32_t ms;
  };
  absl::StatusOr<datapath::EjectResult> eject(const SocketAddress& frontend,
                                              const SocketAddress& backend, uint32_t ms) override {
    calls.push_back({frontend, backend, ms});
    return datapath::EjectResult::kEjected;
  }
  std::vector<Call> calls;
};

TEST(L7ResilienceTest, RouteSetsTheClustersBreakerAndTheServicesRetries) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, webWithPolicy(R"(  retries: {attempts: 3, perTryTimeout: 2s}
  requestLimits: {maxRequests: 7}
)"));
  const proxy::RouteDecision d = routeOne(cfg);
  ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(d.cluster, "default/web:80");
  ASSERT_NE(d.retries, nullptr);
  EXPECT_EQ(d.retries->attempts, 3u);
  EXPECT_EQ(d.retries->per_try_timeout_ms, 2000u);
  ASSERT_NE(d.breaker, nullptr);
  EXPECT_NE(d.cluster_ctx, nullptr);
  EXPECT_EQ(d.fault_delay_ms, 0u);
  // The breaker has the policy's thresholds: 7 active requests, the 8th refused.
  std::vector<proxy::resilience::Guard> held;
  for (int i = 0; i < 7; ++i) {
    held.push_back(d.breaker->tryAcquireRequest());
    EXPECT_TRUE(held.back());
  }
  EXPECT_FALSE(d.breaker->tryAcquireRequest());
  // Every request of the cluster gets the same (node-wide) breaker.
  EXPECT_EQ(routeOne(cfg).breaker, d.breaker);

  // attempts 0: no retry policy at all.
  applyYaml(cfg, webWithPolicy("  retries: {attempts: 0}\n"));
  const proxy::RouteDecision none = routeOne(cfg);
  EXPECT_EQ(none.retries, nullptr);
  EXPECT_NE(none.breaker, nullptr);
}

// Istio's default retry policy applies to every HTTP route without retries: 2 retries on
// connect-failure, refused-stream, unavailable, cancelled and retriable-status-codes [503].
TEST(L7ResilienceTest, RoutesWithoutRetriesGetIstiosDefaultPolicy) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, std::string(kThreeEndpoints) + R"(---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
)");
  const proxy::RouteDecision d = routeOne(cfg);
  ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
  ASSERT_NE(d.retries, nullptr);
  EXPECT_EQ(*d.retries, state::RetrySettings{});
  EXPECT_EQ(d.retries->attempts, 2u);
  EXPECT_EQ(d.retries->retry_on, state::kRetryOnConnectFailure | state::kRetryOnRefusedStream |
                                     state::kRetryOnUnavailable | state::kRetryOnCancelled |
                                     state::kRetryOnRetriableStatusCodes);
  EXPECT_EQ(d.retries->retriable_status_codes, std::vector<uint16_t>{503});
  EXPECT_NE(d.breaker, nullptr);  // the backend's default limits (1024)
}

TEST(L7ResilienceTest, FaultDelaySetsTheDelayAndKeepsTheAbort) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, webWithPolicy(R"(  faultInjection:
    delay: {fixedDelay: 50ms, percentage: 100}
)"));
  proxy::RouteDecision d = routeOne(cfg);
  EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(d.fault_delay_ms, 50u);
  EXPECT_TRUE(d.upstream.valid());
  // Delay and abort: the delay is set and the abort is the direct response (FI; the core
  // waits first and adds DI).
  applyYaml(cfg, webWithPolicy(R"(  faultInjection:
    delay: {fixedDelay: 50ms, percentage: 100}
    abort: {httpStatus: 503, percentage: 100}
)"));
  d = routeOne(cfg);
  EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kDirectResponse);
  EXPECT_EQ(d.status, 503);
  EXPECT_EQ(d.response_flags, "FI");
  EXPECT_EQ(d.fault_delay_ms, 50u);
}

// Feeds `n` 503 responses from `endpoint` as the core would after each try.
void fail503(L7Config& cfg, const proxy::RouteDecision& d, const SocketAddress& endpoint, int n) {
  for (int i = 0; i < n; ++i) {
    cfg.onTry(d, endpoint, proxy::resilience::TryOutcome::response(503), 1000);
  }
}

TEST(L7ResilienceTest, OnTryEjectsAfterConsecutive5xxIntoTheKernelAndRouteSkipsIt) {
  L7Config cfg(nullptr, 1);
  auto ejector = std::make_shared<FakeEjector>();
  cfg.setEjector(ejector);
  applyYaml(
      cfg,
      webWithPolicy(
          R"(  outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 40s, maxEjectionPercent: 50}
)"));
  const proxy::RouteDecision d = routeOne(cfg);
  const SocketAddress bad = *SocketAddress::parse("10.244.1.12:8080");
  fail503(cfg, d, bad, 2);
  cfg.onTry(d, bad, proxy::resilience::TryOutcome::response(200), 1000);  // ends the run
  fail503(cfg, d, bad, 2);
  EXPECT_TRUE(ejector->calls.empty());
  fail503(cfg, d, bad, 1);  // the third in a row
  ASSERT_EQ(ejector->calls.size(), 1u);
  EXPECT_EQ(ejector->calls[0].frontend, *SocketAddress::parse("10.96.0.20:80"));
  EXPECT_EQ(ejector->calls[0].backend, bad);
  EXPECT_EQ(ejector->calls[0].ms, 40'000u);
  // The proxy skips it from now on (300 picks; each would hit it a third of the time).
  for (int i = 0; i < 300; ++i) EXPECT_NE(routeOne(cfg).upstream, bad);
  // Counted in the cluster's stats and metrics.
  const std::vector<L7Config::ClusterStats> stats = cfg.clusterStats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].cluster, "default/web:80");
  EXPECT_EQ(stats[0].ejections, 1u);
  EXPECT_EQ(stats[0].ejected, 1u);
  EXPECT_EQ(cfg.kernelEjections()[size_t(datapath::EjectResult::kEjected)], 1u);
  // A gateway error that is not a response (connect failure) counts as a 5xx too; a second
  // endpoint would exceed the cap (50% of 3 = 1): skipped, nothing asked of the kernel.
  const SocketAddress other = *SocketAddress::parse("10.244.1.11:8080");
  for (int i = 0; i < 3; ++i) {
    cfg.onTry(d, other, proxy::resilience::TryOutcome::connectFailure(), 1000);
  }
  EXPECT_EQ(ejector->calls.size(), 1u);
  EXPECT_EQ(cfg.clusterStats()[0].ejections_skipped, 1u);
}

TEST(L7ResilienceTest, RetargetAvoidsTheFailedAndEjectedEndpoints) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg,
            webWithPolicy(R"(  outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 100}
)"));
  const SocketAddress a = *SocketAddress::parse("10.244.1.11:8080");
  const SocketAddress b = *SocketAddress::parse("10.244.1.12:8080");
  const SocketAddress c = *SocketAddress::parse("10.244.1.13:8080");
  proxy::RouteDecision d = routeOne(cfg);
  // Never the failed one; both others are used.
  std::map<std::string, int> seen;
  for (int i = 0; i < 300; ++i) {
    proxy::RouteDecision r = routeOne(cfg);
    const SocketAddress failed = r.upstream;
    ASSERT_TRUE(cfg.retarget(r, failed));
    EXPECT_NE(r.upstream, failed);
    ++seen[r.upstream.toString()];
  }
  EXPECT_EQ(seen.size(), 3u);
  // b ejected: a retry after a failed a always goes to c; the first pick is never b.
  fail503(cfg, d, b, 1);
  for (int i = 0; i < 200; ++i) {
    proxy::RouteDecision r = routeOne(cfg);
    EXPECT_NE(r.upstream, b);
    r.upstream = a;
    ASSERT_TRUE(cfg.retarget(r, a));
    EXPECT_EQ(r.upstream, c);
  }
  // Every endpoint but the failed one ejected: panic — another one anyway, never the failed.
  fail503(cfg, d, c, 1);
  for (int i = 0; i < 50; ++i) {
    proxy::RouteDecision r = d;
    ASSERT_TRUE(cfg.retarget(r, a));
    EXPECT_NE(r.upstream, a);
  }
  // All ejected: route() still forwards (panic), to one of them.
  fail503(cfg, d, a, 1);
  const proxy::RouteDecision p = routeOne(cfg);
  EXPECT_EQ(p.kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_TRUE(p.upstream == a || p.upstream == b || p.upstream == c);
  // A decision without cluster state (direct response, or a non-L7 frontend): no retarget.
  proxy::RouteDecision bare;
  EXPECT_FALSE(cfg.retarget(bare, a));
}

// One endpoint: a retry goes to it again (nothing else to try).
TEST(L7ResilienceTest, RetargetWithOneEndpointRetriesIt) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, std::string(R"(apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: ["10.244.1.11"]
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-policy}
spec:
  targetRef: {kind: Service, name: web}
  retries: {attempts: 2}
)"));
  proxy::RouteDecision d = routeOne(cfg);
  const SocketAddress only = d.upstream;
  ASSERT_TRUE(cfg.retarget(d, only));
  EXPECT_EQ(d.upstream, only);
}

// A config swap keeps the cluster's breaker (same object, counts in flight kept, new
// thresholds) and its L7 outlier state.
TEST(L7ResilienceTest, BreakerAndEjectionsSurviveAConfigSwap) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, webWithPolicy(R"(  requestLimits: {maxRequests: 2}
  outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 50}
)"));
  const proxy::RouteDecision d1 = routeOne(cfg);
  ASSERT_NE(d1.breaker, nullptr);
  proxy::resilience::Guard g = d1.breaker->tryAcquireRequest();
  ASSERT_TRUE(g);
  const SocketAddress bad = *SocketAddress::parse("10.244.1.12:8080");
  fail503(cfg, d1, bad, 1);
  // New limits and one more endpoint (the outlier detector is rebuilt, state kept by address).
  applyYaml(
      cfg,
      webWithPolicy(R"(  requestLimits: {maxRequests: 1}
  outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 50}
)",
                    (std::string(kThreeEndpoints) + "  - addresses: [\"10.244.1.14\"]\n").c_str()));
  const proxy::RouteDecision d2 = routeOne(cfg);
  EXPECT_EQ(d2.breaker, d1.breaker);
  EXPECT_EQ(d2.breaker->counts().active, 1u);
  EXPECT_FALSE(d2.breaker->tryAcquireRequest()) << "maxRequests 1, one in flight";
  g.release();
  EXPECT_TRUE(d2.breaker->tryAcquireRequest());
  const std::vector<L7Config::ClusterStats> stats = cfg.clusterStats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].ejected, 1u);
  EXPECT_EQ(stats[0].ejections, 1u);
  for (int i = 0; i < 200; ++i) EXPECT_NE(routeOne(cfg).upstream, bad);
}

TEST(L7ResilienceTest, MetricsShowBreakerCountsAndEjections) {
  L7Config cfg(nullptr, 1);
  cfg.setEjector(std::make_shared<FakeEjector>());
  applyYaml(cfg, webWithPolicy(R"(  requestLimits: {maxPendingRequests: 1, maxRequests: 1}
  outlierDetection: {consecutive5xxErrors: 1}
)"));
  const proxy::RouteDecision d = routeOne(cfg);
  proxy::resilience::Guard p = d.breaker->tryAcquirePending();
  proxy::resilience::Guard a = d.breaker->tryAcquireRequest();
  EXPECT_FALSE(d.breaker->tryAcquirePending());
  EXPECT_FALSE(d.breaker->tryAcquireRequest());
  EXPECT_FALSE(d.breaker->tryAcquireRequest());
  fail503(cfg, d, d.upstream, 1);
  std::string out;
  cfg.renderResilienceMetrics(out);
  for (const char* line : {
           "meshd_l7_upstream_rq_pending_active{cluster=\"default/web:80\"} 1\n",
           "meshd_l7_upstream_rq_active{cluster=\"default/web:80\"} 1\n",
           "meshd_l7_upstream_rq_retries_active{cluster=\"default/web:80\"} 0\n",
           "meshd_l7_upstream_rq_pending_overflow_total{cluster=\"default/web:80\"} 1\n",
           "meshd_l7_upstream_rq_overflow_total{cluster=\"default/web:80\"} 2\n",
           "meshd_l7_upstream_rq_retry_overflow_total{cluster=\"default/web:80\"} 0\n",
           "meshd_l7_outlier_ejected_endpoints{cluster=\"default/web:80\"} 1\n",
           "meshd_l7_outlier_ejections_total{cluster=\"default/web:80\",result=\"ejected\"} 1\n",
           "meshd_l7_outlier_ejections_total{cluster=\"default/web:80\",result=\"skipped_max_"
           "percent\"} 0\n",
           "meshd_l7_kernel_ejections_total{result=\"ejected\"} 1\n",
           "meshd_l7_kernel_ejections_total{result=\"error\"} 0\n",
           "# TYPE meshd_l7_upstream_rq_pending_overflow_total counter\n",
           "# TYPE meshd_l7_upstream_rq_active gauge\n",
       }) {
    EXPECT_NE(out.find(line), std::string::npos) << line << "\nin:\n" << out;
  }
}

// A request whose endpoint was picked but that never left (breaker overflow: the core calls
// Router::onCancel) gives its LeastLatency pick back, so the endpoint does not look busy forever.
// On a thread of its own: the balancers are per thread and keyed by cluster name, and other tests
// here route "default/web:80" without finishing their requests.
void unsentRequestGivesItsPeakEwmaPickBack() {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, webWithPolicy(R"(  loadBalancer: {algorithm: LeastLatency}
  retries: {attempts: 1}
)",
                               kTwoEndpoints));
  // Both endpoints sampled (1 ms each, one after the other).
  for (int i = 0; i < 20; ++i) {
    const proxy::RouteDecision d = routeOne(cfg);
    cfg.onTry(d, d.upstream, proxy::resilience::TryOutcome::response(200), 1000);
    proxy::RequestRecord r;
    r.cluster = d.cluster;
    r.upstream = d.upstream;
    r.protocol = "http/1.1";
    r.attempts = 1;
    cfg.onRequest(r);
  }
  // Then requests refused before sending (503 UO, attempts 0). With each pick given back the
  // costs do not change, so P2C keeps choosing the same (cheaper) endpoint; if the picks
  // stayed pending, that endpoint would look busier after each one and lose every other pick.
  const SocketAddress first = *SocketAddress::parse("10.244.1.11:8080");
  int to_first = 0;
  for (int i = 0; i < 200; ++i) {
    const proxy::RouteDecision d = routeOne(cfg);
    to_first += d.upstream == first;
    cfg.onCancel(d, d.upstream);  // what the core calls for a pick no try carried
    proxy::RequestRecord r;
    r.cluster = d.cluster;
    r.upstream = d.upstream;
    r.protocol = "http/1.1";
    r.response_code = 503;
    r.response_flags = "UO";
    r.attempts = 0;
    cfg.onRequest(r);
  }
  EXPECT_TRUE(to_first == 0 || to_first == 200) << to_first;
}

TEST(L7ResilienceTest, UnsentRequestGivesItsPeakEwmaPickBack) {
  std::thread t(unsentRequestGivesItsPeakEwmaPickBack);
  t.join();
}

// --- Authorization and rate limits (AuthorizationPolicy, RateLimitPolicy) -------------------

// The Service's two endpoints as Workloads (app: web) and three clients: alice and bob on
// this node, eve on another node.
constexpr char kWorkloads[] = R"(---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-0, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.244.1.11], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-1, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.244.1.12], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: alice, namespace: team}
spec: {serviceAccount: alice, addresses: [10.244.2.11], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: bob, namespace: team}
spec: {serviceAccount: bob, addresses: [10.244.2.12], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: eve, namespace: team}
spec: {serviceAccount: alice, addresses: [10.244.3.11], node: n2}
)";

constexpr char kAllowAlice[] = R"(---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-callers}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/team/sa/alice"]}}]
---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
)";

proxy::RouteDecision routeFrom(L7Config& cfg, const char* peer, std::string_view target = "/") {
  proxy::RequestInfo req;
  req.orig_dst = *SocketAddress::parse("10.96.0.20:80");
  req.peer = *SocketAddress::parse(peer);
  req.method = "GET";
  req.target = target;
  req.authority = "web";
  proxy::RouteDecision d;
  cfg.route(req, d);
  return d;
}

// Lines of one metric family from renderPolicyMetrics.
std::string policyLines(L7Config& cfg, const std::string& family) {
  std::string out;
  cfg.renderPolicyMetrics(out);
  std::string lines;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t end = out.find('\n', pos);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(pos, end - pos);
    if (line.rfind(family + "{", 0) == 0) lines += line + "\n";
    pos = end + 1;
  }
  return lines;
}

void expectRbac(const proxy::RouteDecision& d) {
  EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kDirectResponse);
  EXPECT_EQ(d.status, 403);
  EXPECT_EQ(d.body, "RBAC: access denied");
  EXPECT_EQ(d.response_flags, "RBAC");
  EXPECT_EQ(d.breaker, nullptr);
  EXPECT_EQ(d.cluster_ctx, nullptr);
  EXPECT_NE(d.pin, nullptr);
}

TEST(L7PolicyTest, AuthorizationPolicyAllowsAliceAndDeniesOthersWith403Rbac) {
  L7Config cfg(nullptr, 1);
  cfg.setNodeName("n1");
  applyYaml(cfg, std::string(kTwoEndpoints) + kWorkloads + kAllowAlice);
  for (int i = 0; i < 10; ++i) {
    const proxy::RouteDecision d = routeFrom(cfg, "10.244.2.11:40000");  // alice
    EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
    EXPECT_EQ(d.upstream.port, 8080);
  }
  // IPv4-mapped peer of a dual-stack listener: still alice.
  EXPECT_EQ(routeFrom(cfg, "[::ffff:10.244.2.11]:40000").kind,
            proxy::RouteDecision::Kind::kForward);
  expectRbac(routeFrom(cfg, "10.244.2.12:40000"));  // bob: no ALLOW matches
  expectRbac(routeFrom(cfg, "10.244.9.9:40000"));   // unknown peer: unauthenticated
  expectRbac(routeFrom(cfg, "10.244.3.11:40000"));  // alice's identity, but another node
  expectRbac(routeFrom(cfg, "10.244.2.11:40000", "/admin/users"));  // DENY first
  const std::string lines = policyLines(cfg, "meshd_authz_denied_total");
  EXPECT_NE(lines.find("meshd_authz_denied_total{policy=\"\",reason=\"no_allow_match\"} 3"),
            std::string::npos)
      << lines;
  EXPECT_NE(
      lines.find("meshd_authz_denied_total{policy=\"default/no-admin\",reason=\"deny_policy\"} 1"),
      std::string::npos)
      << lines;

  // Without the policies everyone gets through.
  applyYaml(cfg, std::string(kTwoEndpoints) + kWorkloads);
  EXPECT_EQ(routeFrom(cfg, "10.244.9.9:40000").kind, proxy::RouteDecision::Kind::kForward);
}

TEST(L7PolicyTest, RoutedRequestsAreAuthorizedToo) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, std::string(kTwoEndpoints) + kWorkloads + kAllowAlice + R"(---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route}
spec:
  parentRefs: [{kind: Service, group: "", name: web, port: 80}]
  rules:
  - backendRefs: [{name: web, port: 80}]
)");
  EXPECT_EQ(routeFrom(cfg, "10.244.2.11:40000").kind, proxy::RouteDecision::Kind::kForward);
  expectRbac(routeFrom(cfg, "10.244.2.12:40000"));
}

TEST(L7PolicyTest, RateLimitPolicyAnswers429WithRetryAfterPerClient) {
  L7Config cfg(nullptr, 1);
  cfg.setNodeName("n1");
  const std::string limits = R"(---
apiVersion: meshd.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: web-limits}
spec:
  targetRef: {kind: Service, name: web}
  perClient: {requestsPerUnit: 2, unit: minute}
  routes:
  - match: {pathPrefix: /expensive}
    requests: {requestsPerUnit: 1, unit: hour}
)";
  applyYaml(cfg, std::string(kTwoEndpoints) + kWorkloads + limits);
  EXPECT_EQ(routeFrom(cfg, "10.244.2.11:1").kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(routeFrom(cfg, "10.244.2.11:2").kind, proxy::RouteDecision::Kind::kForward);
  proxy::RouteDecision d = routeFrom(cfg, "10.244.2.11:3");  // alice's third in a minute
  ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kDirectResponse);
  EXPECT_EQ(d.status, 429);
  EXPECT_EQ(d.response_flags, "RL");
  // A token every 30 s: the wait is just under 30 s, rounded up to whole seconds.
  EXPECT_TRUE(d.retry_after == "30" || d.retry_after == "29") << d.retry_after;
  EXPECT_EQ(d.breaker, nullptr);
  // Bob has his own bucket; an unknown peer is keyed by its address.
  EXPECT_EQ(routeFrom(cfg, "10.244.2.12:1").kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(routeFrom(cfg, "10.244.9.9:1").kind, proxy::RouteDecision::Kind::kForward);
  // The route's shared bucket: one an hour for everybody.
  EXPECT_EQ(routeFrom(cfg, "10.244.2.12:1", "/expensive/q").kind,
            proxy::RouteDecision::Kind::kForward);
  d = routeFrom(cfg, "10.244.9.9:1", "/expensive/r");
  ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kDirectResponse);
  EXPECT_EQ(d.status, 429);
  const int seconds = std::stoi(std::string(d.retry_after));
  EXPECT_GE(seconds, 3599);
  EXPECT_LE(seconds, 3600);

  // The same policy applied again keeps its buckets: alice is still limited.
  applyYaml(cfg, std::string(kTwoEndpoints) + kWorkloads + limits);
  EXPECT_EQ(routeFrom(cfg, "10.244.2.11:4").status, 429);
  const std::string lines = policyLines(cfg, "meshd_ratelimited_total");
  EXPECT_NE(
      lines.find("meshd_ratelimited_total{policy=\"default/web-limits\",bucket=\"client\"} 2"),
      std::string::npos)
      << lines;
  EXPECT_NE(
      lines.find("meshd_ratelimited_total{policy=\"default/web-limits\",bucket=\"service\"} 1"),
      std::string::npos)
      << lines;
}

// The longest wait (one request an hour) is whole seconds from the process-wide table, valid
// after the snapshot that answered is gone.
TEST(L7PolicyTest, HourLongRetryAfterOutlivesTheSnapshot) {
  L7Config cfg(nullptr, 1);
  applyYaml(cfg, std::string(kTwoEndpoints) + R"(---
apiVersion: meshd.io/v1alpha1
kind: RateLimitPolicy
metadata: {name: web-limits}
spec:
  targetRef: {kind: Service, name: web}
  requests: {requestsPerUnit: 1, unit: hour, burst: 1}
)");
  EXPECT_EQ(routeOne(cfg).kind, proxy::RouteDecision::Kind::kForward);
  proxy::RouteDecision d = routeOne(cfg);
  ASSERT_EQ(d.status, 429);
  d.pin.reset();
  applyYaml(cfg, std::string(kTwoEndpoints));
  const int seconds = std::stoi(std::string(d.retry_after));
  EXPECT_GE(seconds, 3599);
  EXPECT_LE(seconds, 3600);
}

}  // namespace
}  // namespace meshd::daemon
