// L7Config::onRequest: proxy records (protocol "http/1.1", "http/2", "grpc", "tcp") become
// Istio request metrics with the right request_protocol and grpc_response_status. No
// configuration is applied, so the workload and service labels are "unknown".
#include <unistd.h>

#include <fstream>
#include <string>
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

}  // namespace
}  // namespace meshd::daemon
