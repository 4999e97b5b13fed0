// L7Config::onRequest: proxy records (protocol "http/1.1", "http/2", "grpc", "tcp") become
// Istio request metrics with the right request_protocol and grpc_response_status. No
// configuration is applied, so the workload and service labels are "unknown".
#include <string>

#include "daemon/l7.h"
#include "gtest/gtest.h"
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
// else 1 ms, fed back as the proxy would (onRequest). Returns the slow endpoint's picks
// among the last `counted` requests.
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

}  // namespace
}  // namespace meshd::daemon
