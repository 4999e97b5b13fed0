// The L7 routing table: HTTPRoute/GRPCRoute resources compiled against the
// desired LB state, then matched against requests. Covers lookup by VIP:port,
// the Gateway API precedence order, header/query/method matching, weighted
// backend splits, redirects and URL rewrites (the spec's tables), header
// edits, mirrors, timeouts and GRPCRoute service/method matching.
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "counting_new.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proxy/routing/route_table.h"
#include "state/desired_state.h"

// Requests below are written with designated initializers naming only what
// differs from the defaults of Req; gcc's -Wextra would flag every one.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace meshd::proxy::routing {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

// Services of the tests: web (the one routed), web-v1/web-v2 (backends with
// endpoints), empty (no endpoints), api (a second routed service, dual-stack).
constexpr char kServices[] = R"(
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v1}
spec:
  clusterIP: 10.96.0.21
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2}
spec:
  clusterIP: 10.96.0.22
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  clusterIP: 10.96.0.23
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  clusterIPs: [10.96.0.30, "fd00::30"]
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v1
  labels: {kubernetes.io/service-name: web-v1}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: [10.244.1.11]
  - addresses: [10.244.1.12]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v2
  labels: {kubernetes.io/service-name: web-v2}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: [10.244.2.11]
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-v1}
spec:
  targetRef: {kind: Service, name: web-v1}
  loadBalancer:
    weights: [{address: 10.244.1.11, weight: 3}, {address: 10.244.1.12, weight: 1}]
)";

std::shared_ptr<const RouteTable> build(const std::string& routes) {
  auto parsed = resources::parseFiles(
      {resources::SourceFile{"services.yaml", kServices}, resources::SourceFile{"r.yaml", routes}});
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return nullptr;
  resources::ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  auto lb = state::computeDesiredState(set);
  EXPECT_TRUE(lb.ok()) << lb.status();
  if (!lb.ok()) return nullptr;
  auto table = RouteTable::build(set, *lb);
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? *table : nullptr;
}

struct Req {
  std::string method = "GET";
  std::string path = "/";
  std::string authority = "web";
  std::vector<std::pair<std::string, std::string>> headers;
};

// "<route name>#<rule index>" of the match, or "404".
std::string route(const ServiceRoutes& svc, const Req& r) {
  std::vector<http1::HeaderField> fields;
  for (const auto& [n, v] : r.headers) fields.push_back({n, v, false});
  const RouteMatch* m = svc.match(Request{r.method, r.path, r.authority, fields});
  if (m == nullptr) return "404";
  const std::string& full = m->rule().route;  // Kind/ns/name
  return absl::StrCat(full.substr(full.rfind('/') + 1), "#", m->rule().index);
}

const ServiceRoutes& web(const RouteTable& t) {
  const ServiceRoutes* s = t.find(ip("10.96.0.10"), 80);
  EXPECT_NE(s, nullptr);
  return *s;
}

// --- lookup -----------------------------------------------------------------

TEST(RouteTable, LookupByVipAndPort) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-http}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{group: "", kind: Service, name: api}, {group: "", kind: Service, name: missing}]
)");
  ASSERT_NE(t, nullptr);
  const ServiceRoutes* w = t->find(ip("10.96.0.10"), 80);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->service(), "default/web:80");
  EXPECT_EQ(t->find(ip("10.96.0.10"), 9000), nullptr);  // the parentRef names port 80 only
  EXPECT_EQ(t->find(ip("10.96.0.10"), 81), nullptr);
  EXPECT_EQ(t->find(ip("10.96.0.21"), 80), nullptr);  // no route: the L4 path serves it
  // Dual stack: both cluster IPs lead to the same routes.
  const ServiceRoutes* a4 = t->find(ip("10.96.0.30"), 80);
  const ServiceRoutes* a6 = t->find(ip("fd00::30"), 80);
  ASSERT_NE(a4, nullptr);
  EXPECT_EQ(a4, a6);
  EXPECT_EQ(t->serviceCount(), 3u);
  // No rules given: the CRD default, one rule matching every path (no backends).
  EXPECT_EQ(route(*w, Req{.path = "/anything"}), "web-http#0");
}

TEST(RouteTable, NoMatchingRuleIs404) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: only}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{matches: [{path: {type: Exact, value: /only}}]}]
)");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(route(web(*t), Req{.path = "/only"}), "only#0");
  EXPECT_EQ(route(web(*t), Req{.path = "/only?x=1"}), "only#0");  // the query is not the path
  EXPECT_EQ(route(web(*t), Req{.path = "/only/"}), "404");
  EXPECT_EQ(route(web(*t), Req{.path = "/other"}), "404");
}

// --- precedence ---------------------------------------------------------------

constexpr char kPrecedenceRoutes[] = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-routes, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {type: Exact, value: /exact}}]                                  # 0
    - matches: [{path: {type: PathPrefix, value: /api}}]                               # 1
    - matches: [{path: {type: PathPrefix, value: /api/v2/}}]                           # 2
    - matches: [{path: {value: /api}, method: POST}]                                   # 3
    - matches: [{path: {value: /api}, headers: [{name: x-canary, value: "true"}]}]     # 4
    - matches:                                                                         # 5
        - path: {value: /api}
          headers:
            - {name: x-canary, value: "true"}
            - {name: x-user, type: RegularExpression, value: "alice|bob"}
    - matches: [{path: {value: /api}, queryParams: [{name: debug, value: "1"}]}]       # 6
    - matches: [{path: {value: /api}, method: POST, headers: [{name: x-canary, value: "true"}]}]
    - matches: [{path: {type: RegularExpression, value: "/users/[0-9]+"}}]             # 8
    - matches: [{path: {type: PathPrefix, value: /users}}]                             # 9
    - matches: [{path: {type: PathPrefix, value: /}}]                                  # 10
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-older, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{matches: [{path: {type: PathPrefix, value: /api}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: c-hosts}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  hostnames: [shop.example.com, "*.example.com"]
  rules: [{}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h-wild, creationTimestamp: "2020-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  hostnames: ["*.example.com"]
  rules: [{matches: [{path: {type: Exact, value: /exact}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: zz-late}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{matches: [{path: {value: /dup}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: aa-early}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{matches: [{path: {value: /dup}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: f-rules}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {type: Exact, value: /same}}]
    - matches: [{path: {type: Exact, value: /same}}]
)";

struct PrecedenceCase {
  std::string name;
  Req req;
  std::string expected;
};

class PrecedenceTest : public ::testing::TestWithParam<PrecedenceCase> {
 protected:
  static void SetUpTestSuite() { table_ = build(kPrecedenceRoutes); }
  static void TearDownTestSuite() { table_.reset(); }
  static std::shared_ptr<const RouteTable> table_;
};
std::shared_ptr<const RouteTable> PrecedenceTest::table_;

TEST_P(PrecedenceTest, PicksTheGatewayApiWinner) {
  ASSERT_NE(table_, nullptr);
  const PrecedenceCase& c = GetParam();
  EXPECT_EQ(route(web(*table_), c.req), c.expected);
}

using H = std::vector<std::pair<std::string, std::string>>;

INSTANTIATE_TEST_SUITE_P(
    Routing, PrecedenceTest,
    ::testing::Values(
        PrecedenceCase{"ExactPath", {.path = "/exact"}, "a-routes#0"},
        PrecedenceCase{"ExactIsNotPrefix", {.path = "/exact/sub"}, "a-routes#10"},
        PrecedenceCase{"LongestPrefix", {.path = "/api/v2/x"}, "a-routes#2"},
        PrecedenceCase{"PrefixTrailingSlashIgnored", {.path = "/api/v2"}, "a-routes#2"},
        PrecedenceCase{"PrefixIsElementWise", {.path = "/api/v2x"}, "b-older#0"},
        PrecedenceCase{"PrefixNotSubstring", {.path = "/apix"}, "a-routes#10"},
        PrecedenceCase{"OldestRouteWinsTie", {.path = "/api/x"}, "b-older#0"},
        PrecedenceCase{"MethodBeatsNoMethod", {.method = "POST", .path = "/api/x"}, "a-routes#3"},
        PrecedenceCase{"MethodAndHeaderBeatMethod",
                       {.method = "POST", .path = "/api/x", .headers = H{{"x-canary", "true"}}},
                       "a-routes#7"},
        PrecedenceCase{"MethodBeatsHeaders",
                       {.method = "POST",
                        .path = "/api/x",
                        .headers = H{{"x-canary", "true"}, {"x-user", "alice"}}},
                       "a-routes#7"},
        PrecedenceCase{
            "HeaderMatch", {.path = "/api/x", .headers = H{{"x-canary", "true"}}}, "a-routes#4"},
        PrecedenceCase{"MoreHeadersWin",
                       {.path = "/api/x", .headers = H{{"x-canary", "true"}, {"x-user", "bob"}}},
                       "a-routes#5"},
        PrecedenceCase{"HeaderRegexIsFullMatch",
                       {.path = "/api/x", .headers = H{{"x-canary", "true"}, {"x-user", "bobby"}}},
                       "a-routes#4"},
        PrecedenceCase{"HeaderNameCaseInsensitive",
                       {.path = "/api/x", .headers = H{{"X-Canary", "true"}}},
                       "a-routes#4"},
        PrecedenceCase{"HeaderValueCaseSensitive",
                       {.path = "/api/x", .headers = H{{"x-canary", "TRUE"}}},
                       "b-older#0"},
        PrecedenceCase{"AnyRepeatedHeaderLineMatches",
                       {.path = "/api/x", .headers = H{{"x-canary", "no"}, {"x-canary", "true"}}},
                       "a-routes#4"},
        PrecedenceCase{"QueryMatch", {.path = "/api/x?a=b&debug=1"}, "a-routes#6"},
        PrecedenceCase{"QueryValueMismatch", {.path = "/api/x?debug=2"}, "b-older#0"},
        PrecedenceCase{"QueryFirstValueCounts", {.path = "/api/x?debug=2&debug=1"}, "b-older#0"},
        PrecedenceCase{"QueryNameIsExact", {.path = "/api/x?Debug=1"}, "b-older#0"},
        PrecedenceCase{"HeadersBeatQuery",
                       {.path = "/api/x?debug=1", .headers = H{{"x-canary", "true"}}},
                       "a-routes#4"},
        PrecedenceCase{"RegexBeatsPrefix", {.path = "/users/42"}, "a-routes#8"},
        PrecedenceCase{"RegexIsFullMatch", {.path = "/users/42/x"}, "a-routes#9"},
        PrecedenceCase{"AlphabeticalWithoutTimestamps", {.path = "/dup"}, "aa-early#0"},
        PrecedenceCase{"FirstRuleWithinRoute", {.path = "/same"}, "f-rules#0"},
        PrecedenceCase{
            "ExactHostnameFirst", {.path = "/exact", .authority = "shop.example.com"}, "c-hosts#0"},
        PrecedenceCase{"WildcardHostnamePortIgnored",
                       {.path = "/api", .authority = "foo.example.com:8080"},
                       "c-hosts#0"},
        PrecedenceCase{
            "SameWildcardThenPath", {.path = "/exact", .authority = "a.example.com"}, "h-wild#0"},
        PrecedenceCase{
            "WildcardNeedsALabel", {.path = "/api/x", .authority = "example.com"}, "b-older#0"},
        PrecedenceCase{"HostnameCaseInsensitive",
                       {.path = "/", .authority = "SHOP.Example.COM"},
                       "c-hosts#0"}),
    [](const ::testing::TestParamInfo<PrecedenceCase>& i) { return i.param.name; });

// --- backends ---------------------------------------------------------------------

constexpr char kCanary[] = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {value: /split}}]
      backendRefs:
        - {name: web-v1, port: 80, weight: 90}
        - {name: web-v2, port: 80, weight: 10}
        - {name: empty, port: 80, weight: 0}
    - matches: [{path: {value: /zero}}]
      backendRefs: [{name: web-v1, port: 80, weight: 0}]
    - matches: [{path: {value: /none}}]
    - matches: [{path: {value: /missing}}]
      backendRefs: [{name: nosuch, port: 80}, {name: web-v1, port: 81}]
    - matches: [{path: {value: /empty}}]
      backendRefs: [{name: empty, port: 80}]
)";

const Rule& ruleFor(const RouteTable& t, const std::string& path) {
  const RouteMatch* m = web(t).match(Request{"GET", path, "web", {}});
  EXPECT_NE(m, nullptr) << path;
  return m->rule();
}

TEST(RouteTable, WeightedSplitFollowsWeights) {
  auto t = build(kCanary);
  ASSERT_NE(t, nullptr);
  const Rule& rule = ruleFor(*t, "/split");
  ASSERT_THAT(rule.backends, SizeIs(3));
  std::mt19937_64 rng(42);  // deterministic draws
  std::map<std::string, int> hits;
  constexpr int kDraws = 10000;
  for (int i = 0; i < kDraws; ++i) {
    const Cluster* c = pickBackend(rule, rng());
    ASSERT_NE(c, nullptr);
    ++hits[c->name];
  }
  // 90/10: binomial sd = sqrt(10000 * .9 * .1) = 30; allow 5 sd.
  EXPECT_NEAR(hits["default/web-v1:80"], 9000, 150);
  EXPECT_NEAR(hits["default/web-v2:80"], 1000, 150);
  EXPECT_EQ(hits.count("default/empty:80"), 0u);  // weight 0 is never picked
  // Exact boundaries: draws 0..89 -> v1, 90..99 -> v2.
  EXPECT_EQ(pickBackend(rule, 0)->name, "default/web-v1:80");
  EXPECT_EQ(pickBackend(rule, 89)->name, "default/web-v1:80");
  EXPECT_EQ(pickBackend(rule, 90)->name, "default/web-v2:80");
  EXPECT_EQ(pickBackend(rule, 99)->name, "default/web-v2:80");
  EXPECT_EQ(pickBackend(rule, 100)->name, "default/web-v1:80");
}

TEST(RouteTable, AllWeightsZeroOrNoBackendsIs500) {
  auto t = build(kCanary);
  ASSERT_NE(t, nullptr);
  for (uint64_t r : {0ull, 1ull, 12345ull}) {
    EXPECT_EQ(pickBackend(ruleFor(*t, "/zero"), r), nullptr);
    EXPECT_EQ(pickBackend(ruleFor(*t, "/none"), r), nullptr);
  }
}

TEST(RouteTable, ClustersResolveToEndpointsOr500Or503) {
  auto t = build(kCanary);
  ASSERT_NE(t, nullptr);
  const Cluster* v1 = t->cluster("default/web-v1:80");
  ASSERT_NE(v1, nullptr);
  EXPECT_TRUE(v1->resolved);
  ASSERT_THAT(v1->endpoints, SizeIs(2));
  EXPECT_EQ(v1->endpoints[0].address.toString(), "10.244.1.11");
  EXPECT_EQ(v1->endpoints[0].port, 8080);  // the target port
  EXPECT_EQ(v1->endpoints[0].weight, 3u);  // from the TrafficPolicy
  // Weighted random endpoint pick: 3:1.
  std::mt19937_64 rng(7);
  int first = 0;
  for (int i = 0; i < 4000; ++i) first += v1->pickEndpoint(rng()) == &v1->endpoints[0];
  EXPECT_NEAR(first, 3000, 150);

  // A missing Service, or a port the Service does not have: unresolved -> 500.
  const Rule& missing = ruleFor(*t, "/missing");
  ASSERT_THAT(missing.backends, SizeIs(2));
  for (const BackendRef& b : missing.backends) {
    EXPECT_FALSE(b.cluster->resolved) << b.cluster->name;
    EXPECT_EQ(b.cluster->pickEndpoint(1), nullptr);
    EXPECT_EQ(b.cluster->unavailableStatus(), 500);
  }
  EXPECT_EQ(missing.backends[0].cluster->name, "default/nosuch:80");
  // A Service without ready endpoints: resolved, no endpoint -> 503.
  const Cluster* empty = pickBackend(ruleFor(*t, "/empty"), 0);
  ASSERT_NE(empty, nullptr);
  EXPECT_TRUE(empty->resolved);
  EXPECT_EQ(empty->pickEndpoint(0), nullptr);
  EXPECT_EQ(empty->unavailableStatus(), 503);
}

// --- filters ------------------------------------------------------------------------

// Request policies: a cluster carries its backend Service's (DestinationRule-like: limits,
// outlier detection, balancing), a ServiceRoutes the called Service's (retries, faults); an
// L7 frontend without routes still has its own cluster.
TEST(RouteTable, RequestPoliciesReachClustersAndServices) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
    - backendRefs: [{name: web-v2, port: 80}, {name: missing, port: 80}]
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web}
spec:
  targetRef: {kind: Service, name: web}
  retries: {attempts: 5}
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web-v2}
spec:
  targetRef: {kind: Service, name: web-v2}
  requestLimits: {maxRequests: 9}
  loadBalancer: {algorithm: LeastLatency}
)");
  ASSERT_NE(t, nullptr);
  const ServiceRoutes& svc = web(*t);
  EXPECT_EQ(svc.requestPolicy().retries.attempts, 5u);
  const Cluster* v2 = t->cluster("default/web-v2:80");
  ASSERT_NE(v2, nullptr);
  ASSERT_NE(v2->request_policy, nullptr);
  EXPECT_EQ(v2->request_policy->limits.max_requests, 9u);
  EXPECT_TRUE(v2->request_policy->peak_ewma);
  EXPECT_EQ(v2->request_policy->retries.attempts, 2u) << "web-v2's own retries: defaults";
  const Cluster* missing = t->cluster("default/missing:80");
  ASSERT_NE(missing, nullptr);
  EXPECT_EQ(missing->request_policy, nullptr);  // unresolved: 500, nothing to apply
  // web-v2 is L7 by its request-level policy but has no route: find() is null (no routes)
  // and serviceCluster() is where its requests go.
  EXPECT_EQ(t->find(ip("10.96.0.22"), 80), nullptr);
  EXPECT_EQ(t->serviceCluster(ip("10.96.0.22"), 80), v2);
  // web:80 is L7 by its route; its own cluster has its policy. web-v1 is not L7.
  const Cluster* self = t->serviceCluster(ip("10.96.0.10"), 80);
  ASSERT_NE(self, nullptr);
  EXPECT_EQ(self->name, "default/web:80");
  EXPECT_EQ(self->request_policy->retries.attempts, 5u);
  EXPECT_EQ(t->serviceCluster(ip("10.96.0.21"), 80), nullptr);
}

TEST(RouteTable, HeaderEditsSetAddRemoveAndPerBackend) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: edits}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Env, value: prod}]
            add: [{name: x-trace, value: "a,b"}]
            remove: [x-secret]
        - type: ResponseHeaderModifier
          responseHeaderModifier: {remove: [server]}
      backendRefs:
        - name: web-v1
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-env, value: canary}]}
)");
  ASSERT_NE(t, nullptr);
  const Rule& rule = ruleFor(*t, "/");
  ASSERT_THAT(rule.request_headers.set, SizeIs(1));
  EXPECT_EQ(rule.request_headers.set[0].name, "x-env");  // lowercased
  EXPECT_EQ(rule.response_headers.remove, std::vector<std::string>{"server"});

  const std::vector<http1::HeaderField> in = {{"Host", "web", false},
                                              {"X-Env", "dev", false},
                                              {"x-trace", "z", false},
                                              {"X-Secret", "s", false},
                                              {"accept", "*/*", false}};
  std::vector<http1::HeaderField> out;
  out.reserve(16);
  rule.request_headers.apply(in, out);
  std::vector<std::string> got;
  for (const auto& f : out) got.push_back(std::string(f.name) + ": " + std::string(f.value));
  EXPECT_EQ(got, (std::vector<std::string>{"Host: web", "x-trace: z", "accept: */*", "x-env: prod",
                                           "x-trace: a,b"}));

  // The backendRef's own set of x-env replaces the rule's for that backend.
  ASSERT_THAT(rule.backends, SizeIs(1));
  const HeaderEdits& b = rule.backends[0].request_headers;
  ASSERT_THAT(b.set, SizeIs(1));
  EXPECT_EQ(b.set[0].value, "canary");
  EXPECT_THAT(b.add, SizeIs(1));
  EXPECT_THAT(b.remove, SizeIs(1));
}

std::string location(const RouteTable& t, const std::string& path, uint16_t listener_port = 80,
                     const std::string& authority = "web") {
  const RouteMatch* m = web(t).match(Request{"GET", path, authority, {}});
  EXPECT_NE(m, nullptr);
  if (m == nullptr || !m->rule().redirect) return "<no redirect>";
  std::string out;
  m->rule().redirect->appendLocation(Request{"GET", path, authority, {}}, "http", listener_port,
                                     out);
  return absl::StrCat(m->rule().redirect->status_code, " ", out);
}

TEST(RouteTable, RedirectLocation) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redirects}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {value: /https}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
    - matches: [{path: {value: /host}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]
    - matches: [{path: {value: /port}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 8443}}]
    - matches: [{path: {value: /http80}}]
      filters: [{type: RequestRedirect, requestRedirect: {port: 80}}]
    - matches: [{path: {value: /full}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 308}
    - matches: [{path: {value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
)");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(location(*t, "/https/a?x=1"), "302 https://web/https/a?x=1");  // 443 left out
  EXPECT_EQ(location(*t, "/host", 80, "web:80"), "301 http://example.org/host");
  // No scheme and no port: the listener (Service) port, shown unless it is 80.
  EXPECT_EQ(location(*t, "/host", 8080, "web:8080"), "301 http://example.org:8080/host");
  EXPECT_EQ(location(*t, "/port/p"), "302 https://web:8443/port/p");
  EXPECT_EQ(location(*t, "/http80", 9000), "302 http://web/http80");
  EXPECT_EQ(location(*t, "/full/x?q=1"), "308 http://web/new?q=1");
  EXPECT_EQ(location(*t, "/old/a/b?q"), "302 http://web/v2/a/b?q");
  EXPECT_EQ(location(*t, "/old"), "302 http://web/v2");
  const RouteMatch* m = web(*t).match(Request{"GET", "/https", "web", {}});
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(pickBackend(m->rule(), 0), nullptr);  // a redirect rule has no backends
}

// The ReplacePrefixMatch table of the Gateway API (HTTPPathModifier).
struct RewriteCase {
  std::string request, prefix, replace, expected;
};

TEST(RouteTable, UrlRewriteReplacePrefixMatchSpecTable) {
  const RewriteCase cases[] = {
      {"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
      {"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
      {"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
      {"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
      {"/foo", "/foo", "/xyz", "/xyz"},
      {"/foo/", "/foo", "/xyz", "/xyz/"},
      {"/foo/bar", "/foo", "", "/bar"},
      {"/foo/", "/foo", "", "/"},
      {"/foo", "/foo", "", "/"},
      {"/foo/", "/foo", "/", "/"},
      {"/foo", "/foo", "/", "/"},
      {"/foo/bar?a=1", "/foo", "/x", "/x/bar?a=1"},
      {"/a/b", "/", "/x", "/x/a/b"},
  };
  for (const RewriteCase& c : cases) {
    auto t = build(absl::StrCat(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rw}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {type: PathPrefix, value: ")",
                                c.prefix, R"("}}]
      filters:
        - type: URLRewrite
          urlRewrite:
            hostname: internal.web
            path: {type: ReplacePrefixMatch, replacePrefixMatch: ")",
                                c.replace, R"("}
      backendRefs: [{name: web-v1, port: 80}]
)"));
    ASSERT_NE(t, nullptr);
    const RouteMatch* m = web(*t).match(Request{"GET", c.request, "web", {}});
    ASSERT_NE(m, nullptr) << c.request;
    ASSERT_TRUE(m->rule().rewrite.has_value());
    EXPECT_EQ(m->rule().rewrite->hostname, "internal.web");
    std::string out;
    m->rule().rewrite->path->apply(c.request, out);
    EXPECT_EQ(out, c.expected) << c.request << " prefix " << c.prefix << " -> " << c.replace;
  }
}

TEST(RouteTable, UrlRewriteFullPathMirrorAndTimeouts) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: misc}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {type: Exact, value: /a}}]
      filters:
        - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /b}}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: web-v2, port: 80}, fraction: {numerator: 1, denominator: 4}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: empty, port: 80}, percent: 0}
      backendRefs: [{name: web-v1, port: 80}]
      timeouts: {request: 2m, backendRequest: 1m500ms}
)");
  ASSERT_NE(t, nullptr);
  const Rule& rule = ruleFor(*t, "/a");
  std::string out;
  rule.rewrite->path->apply("/a?x=1", out);
  EXPECT_EQ(out, "/b?x=1");
  ASSERT_THAT(rule.mirrors, SizeIs(2));
  EXPECT_EQ(rule.mirrors[0].cluster->name, "default/web-v2:80");
  int sampled = 0;
  for (uint64_t r = 0; r < 400; ++r) sampled += rule.mirrors[0].sampled(r);
  EXPECT_EQ(sampled, 100);
  for (uint64_t r = 0; r < 100; ++r) EXPECT_FALSE(rule.mirrors[1].sampled(r));
  EXPECT_EQ(rule.request_timeout_ms, 120000u);
  EXPECT_EQ(rule.backend_request_timeout_ms, 60500u);
}

// --- GRPCRoute --------------------------------------------------------------------

TEST(RouteTable, GrpcRouteServiceAndMethodMatches) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]          # 0
      backendRefs: [{name: web-v2, port: 80}]
    - matches: [{method: {service: helloworld.Greeter}}]                            # 1
      backendRefs: [{name: web-v1, port: 80}]
    - matches: [{method: {method: Check}}]                                          # 2
    - matches: [{method: {type: RegularExpression, service: "grpc\\.health\\..*", method: "W.*"}}]
    - matches: [{method: {service: helloworld.Greeter}, headers: [{name: x-canary, value: "1"}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
)");
  ASSERT_NE(t, nullptr);
  const H grpc = {{"content-type", "application/grpc"}};
  auto g = [&](const std::string& path, H extra = {}) {
    H h = grpc;
    h.insert(h.end(), extra.begin(), extra.end());
    return route(web(*t), Req{.method = "POST", .path = path, .headers = h});
  };
  EXPECT_EQ(g("/helloworld.Greeter/SayHello"), "g#0");  // service + method beats service
  EXPECT_EQ(g("/helloworld.Greeter/SayBye"), "g#1");
  EXPECT_EQ(g("/helloworld.Greeter/SayBye", {{"x-canary", "1"}}), "g#4");  // + headers
  EXPECT_EQ(g("/grpc.health.v1.Health/Check"), "g#2");                     // method only
  EXPECT_EQ(g("/grpc.health.v1.Health/Watch"), "g#3");                     // regex
  EXPECT_EQ(g("/other.Svc/Watch"), "h#0");  // no gRPC rule: the HTTPRoute catch-all
  // Not gRPC (no application/grpc content type, or not POST): HTTP routes only.
  EXPECT_EQ(route(web(*t), Req{.method = "POST", .path = "/helloworld.Greeter/SayHello"}), "h#0");
  EXPECT_EQ(
      route(web(*t), Req{.method = "GET", .path = "/helloworld.Greeter/SayHello", .headers = grpc}),
      "h#0");
  EXPECT_EQ(route(web(*t), Req{.method = "POST",
                               .path = "/helloworld.Greeter/SayHello",
                               .headers = {{"Content-Type", "application/grpc+proto"}}}),
            "g#0");
  EXPECT_EQ(route(web(*t), Req{.method = "POST",
                               .path = "/helloworld.Greeter/SayHello",
                               .headers = {{"content-type", "application/grpc-web"}}}),
            "h#0");
  std::vector<http1::HeaderField> fields = {{"content-type", "application/grpc", false}};
  const RouteMatch* m =
      web(*t).match(Request{"POST", "/helloworld.Greeter/SayHello", "web", fields});
  ASSERT_NE(m, nullptr);
  EXPECT_TRUE(m->rule().grpc);
  EXPECT_EQ(m->rule().route, "GRPCRoute/default/g");
  const Cluster* c = pickBackend(m->rule(), 0);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->name, "default/web-v2:80");
}

TEST(RouteTable, DescribeShowsPrecedenceOrder) {
  auto t = build(kPrecedenceRoutes);
  ASSERT_NE(t, nullptr);
  auto entries = web(*t).entries();
  ASSERT_FALSE(entries.empty());
  // Hostname-specific entries first, the catch-all of a-routes last among a-routes.
  EXPECT_THAT(entries.front().describe(), HasSubstr("host=shop.example.com"));
  EXPECT_THAT(entries.back().describe(), HasSubstr("path=PathPrefix:/"));
}

// lab/examples-l7/web-canary.yaml (with lab/examples/web.yaml) as the lab applies it: web:80
// becomes an L7 frontend, plain requests split 90/10 between web-v1 and web-v2.
TEST(RouteTable, LabCanaryExample) {
  auto read = [](const std::string& name) {
    std::ifstream in(std::string(MESHD_LAB_EXAMPLES_DIR) + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return resources::SourceFile{name, ss.str()};
  };
  auto parsed = resources::parseFiles({read("web.yaml"), read("../examples-l7/web-canary.yaml")});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  resources::ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  auto lb = state::computeDesiredState(set);
  ASSERT_TRUE(lb.ok()) << lb.status();
  for (const state::Frontend& f : lb->frontends) EXPECT_EQ(f.l7, f.service == "web") << f.service;
  auto t = RouteTable::build(set, *lb);
  ASSERT_TRUE(t.ok()) << t.status();
  const ServiceRoutes* web = (*t)->find(ip("10.96.0.10"), 80);
  ASSERT_NE(web, nullptr);
  const RouteMatch* plain = web->match(Request{"GET", "/", "web", {}});
  ASSERT_NE(plain, nullptr);
  ASSERT_THAT(plain->rule().backends, SizeIs(2));
  EXPECT_EQ(plain->rule().backends[0].weight, 90u);
  EXPECT_EQ(plain->rule().request_timeout_ms, 10000u);
  std::mt19937_64 rng(1);
  int v1 = 0;
  for (int i = 0; i < 10000; ++i)
    v1 += pickBackend(plain->rule(), rng())->name == "default/web-v1:80";
  EXPECT_NEAR(v1, 9000, 150);
  const Cluster* c = pickBackend(plain->rule(), 0);
  ASSERT_THAT(c->endpoints, SizeIs(2));
  EXPECT_EQ(c->endpoints[0].address.toString(), "10.244.1.11");
  EXPECT_EQ(c->endpoints[0].port, 8080);
  std::vector<http1::HeaderField> canary = {{"x-canary", "always", false}};
  const RouteMatch* forced = web->match(Request{"GET", "/x", "web", canary});
  ASSERT_NE(forced, nullptr);
  EXPECT_EQ(pickBackend(forced->rule(), 0)->name, "default/web-v2:80");
}

// tests/root/lab/l7.yaml (the lab_l7 end-to-end test) is valid as a whole, and its
// resilience Services carry the request policies the test relies on: a typo there would
// otherwise show only as a failed lab run.
TEST(RouteTable, LabL7ResourcesAndPolicies) {
  std::ifstream in(MESHD_LAB_L7_YAML);
  std::stringstream ss;
  ss << in.rdbuf();
  ASSERT_FALSE(ss.str().empty()) << MESHD_LAB_L7_YAML;
  auto parsed = resources::parseFiles({resources::SourceFile{"l7.yaml", ss.str()}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  resources::ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  auto lb = state::computeDesiredState(set);
  ASSERT_TRUE(lb.ok()) << lb.status();
  auto t = RouteTable::build(set, *lb);
  ASSERT_TRUE(t.ok()) << t.status();
  auto frontend = [&](std::string_view name) -> const state::Frontend& {
    for (const state::Frontend& f : lb->frontends) {
      if (f.service == name) return f;
    }
    ADD_FAILURE() << "no frontend " << name;
    return lb->frontends.front();
  };
  for (std::string_view s :
       {"retry-l7", "allbad-l7", "slow-l7", "outlier-l7", "delay-l7", "budget-l7"}) {
    EXPECT_TRUE(frontend(s).l7) << s;
  }
  EXPECT_EQ(frontend("retry-l7").request.retries.attempts, 2u);
  EXPECT_EQ(frontend("retry-l7").request.outlier.consecutive_5xx, 0u);
  EXPECT_EQ(frontend("allbad-l7").request.retries.base_interval_ms, 10u);
  EXPECT_EQ(frontend("slow-l7").request.limits.max_requests, 1u);
  EXPECT_EQ(frontend("outlier-l7").request.retries.attempts, 0u);
  EXPECT_EQ(frontend("outlier-l7").request.outlier.consecutive_5xx, 3u);
  EXPECT_EQ(frontend("outlier-l7").request.outlier.base_ejection_ms, 60'000u);
  EXPECT_EQ(frontend("delay-l7").request.fault.delay_ms, 300u);
  EXPECT_TRUE(frontend("budget-l7").request.limits.retry_budget);
  EXPECT_EQ(frontend("budget-l7").request.limits.budget_percent, 0u);
  EXPECT_EQ(frontend("budget-l7").request.limits.min_retry_concurrency, 1u);
  EXPECT_EQ(frontend("delay-l7").request.fault.delay_per_million, 1'000'000u);
  const Cluster* outlier = (*t)->serviceCluster(ip("10.96.0.34"), 80);
  ASSERT_NE(outlier, nullptr);
  EXPECT_THAT(outlier->endpoints, SizeIs(2));
}

// The per-request path allocates nothing: lookup, match (headers, query, regex),
// backend and endpoint picks, mirror sampling, and the filters writing into buffers
// that already have room. The positive control shows the counter sees allocations.
TEST(RouteTable, PerRequestPathAllocatesNothing) {
  auto t = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hot}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches:
        - path: {type: RegularExpression, value: "/api/[a-z]+"}
          headers: [{name: x-user, type: RegularExpression, value: "a.*"}]
          queryParams: [{name: v, value: "2"}]
      filters:
        - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}]}}
        - type: URLRewrite
          urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /internal}}
        - {type: RequestMirror, requestMirror: {backendRef: {name: web-v2, port: 80}, percent: 5}}
      backendRefs: [{name: web-v1, port: 80, weight: 3}, {name: web-v2, port: 80}]
    - matches: [{path: {value: /old}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org}}]
)");
  ASSERT_NE(t, nullptr);
  const std::vector<http1::HeaderField> headers = {
      {"host", "web", false}, {"x-user", "alice", false}, {"accept", "*/*", false}};
  std::vector<http1::HeaderField> edited;
  edited.reserve(16);
  std::string buf;
  buf.reserve(256);
  size_t picked = 0;

  meshd::testing::startCountingAllocations();
  for (uint64_t i = 0; i < 100; ++i) {
    const ServiceRoutes* s = t->find(ip("10.96.0.10"), 80);
    const RouteMatch* m = s->match(Request{"GET", "/api/items?v=2", "web:80", headers});
    if (m == nullptr) break;
    const Cluster* c = pickBackend(m->rule(), i * 7919);
    const Endpoint* e = c->pickEndpoint(i * 104729);
    picked += e != nullptr;
    picked += m->rule().mirrors[0].sampled(i);
    edited.clear();
    m->rule().request_headers.apply(headers, edited);
    buf.clear();
    m->rule().rewrite->path->apply("/api/items?v=2", buf);
    const RouteMatch* r = s->match(Request{"GET", "/old/x", "web", headers});
    buf.clear();
    r->rule().redirect->appendLocation(Request{"GET", "/old/x", "web", headers}, "http", 80, buf);
  }
  const size_t allocations = meshd::testing::stopCountingAllocations();
  EXPECT_EQ(allocations, 0u);
  EXPECT_GE(picked, 100u);
  EXPECT_EQ(buf, "https://example.org/old/x");

  meshd::testing::startCountingAllocations();
  std::string grown;
  t->find(ip("10.96.0.10"), 80)
      ->match(Request{"GET", "/old/x", "web", headers})
      ->rule()
      .redirect->appendLocation(Request{"GET", "/old/x", "web", headers}, "http", 80, grown);
  EXPECT_GT(meshd::testing::stopCountingAllocations(), 0u);
}

}  // namespace
}  // namespace meshd::proxy::routing
