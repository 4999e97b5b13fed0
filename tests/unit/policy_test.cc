// userspace/policy: Istio's authorization semantics as table tests (ALLOW/DENY, notX fields,
// prefix/suffix/any patterns, empty rules, DENY before ALLOW, L4-only requests), the
// PeerAuthentication resolution, and the GCRA buckets (burst, refill with an injected clock,
// the per-client bound).
#include <string>
#include <thread>
#include <vector>

#include "counting_new.h"
#include "gtest/gtest.h"
#include "policy/authz.h"
#include "policy/rate_limit.h"
#include "resources/resource.h"
#include "resources/resource_set.h"

namespace meshd::policy {
namespace {

using resources::MtlsMode;

std::shared_ptr<const Authorizer> build(const std::string& yaml) {
  auto parsed = resources::parseFiles({resources::SourceFile{"t.yaml", yaml}});
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return nullptr;
  resources::ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  auto a = Authorizer::build(set);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *a : nullptr;
}

constexpr char kWorkloads[] = R"(apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-0, namespace: prod, labels: {app: web, tier: front}}
spec: {serviceAccount: web, addresses: [10.0.0.10], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: db-0, namespace: prod, labels: {app: db}}
spec: {addresses: [10.0.0.20, "fd00::20"], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: other-0, namespace: dev, labels: {app: web}}
spec: {addresses: [10.0.1.10], node: n2}
)";

Request req(std::string_view principal, std::string_view ns, std::string_view method = "GET",
            std::string_view path = "/", std::string_view host = "web") {
  Request r;
  r.principal = principal;
  r.ns = ns;
  r.ip = *IpAddress::parse("10.9.0.1");
  r.port = 8080;
  r.http = true;
  r.method = method;
  r.path = path;
  r.host = host;
  return r;
}

constexpr char kAlice[] = "spiffe://cluster.local/ns/prod/sa/alice";
constexpr char kBob[] = "spiffe://cluster.local/ns/test/sa/bob";

TEST(PatternTest, IstioStringMatching) {
  struct Case {
    const char* pattern;
    const char* value;
    bool want;
  } cases[] = {
      {"abc", "abc", true},        {"abc", "abcd", false},     {"abc*", "abcd", true},
      {"abc*", "abc", true},       {"abc*", "xabc", false},    {"*abc", "xxabc", true},
      {"*abc", "abcx", false},     {"*", "anything", true},    {"*", "", false},
      {"/api/*", "/api/v1", true}, {"/api/*", "/apix", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(matchPattern(c.pattern, c.value), c.want) << c.pattern << " vs " << c.value;
  }
  EXPECT_TRUE(matchPattern("*.EXAMPLE.com", "a.example.COM", true));
  EXPECT_FALSE(matchPattern("*.EXAMPLE.com", "a.example.COM", false));
}

struct AuthzCase {
  const char* name;
  std::string policies;  // YAML appended to kWorkloads
  Request request;
  bool allowed;
  const char* policy;  // deciding policy, "" = none
};

TEST(AuthzTest, IstioSemanticsTable) {
  const char* kDenyAll = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: prod}
spec: {}
)";
  const char* kAllowAllRule = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: prod}
spec:
  rules: [{}]
)";
  const char* kAllowAlice = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-alice, namespace: prod}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/prod/sa/alice"]}}]
    to: [{operation: {methods: ["GET", "HEAD"], paths: ["/api/*", "/health"]}}]
)";
  const char* kDenyBob = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-test-ns, namespace: prod}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["test"]}}]
)";
  const char* kNotFields = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: not-fields, namespace: prod}
spec:
  rules:
  - from: [{source: {notNamespaces: ["test"], notIpBlocks: ["10.9.0.0/24"]}}]
  - to: [{operation: {notPaths: ["/admin*"], notMethods: ["DELETE"]}}]
    from: [{source: {principals: ["*"]}}]
)";
  const char* kHeaderWhen = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: header-when, namespace: prod}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[X-Debug]
      values: ["on", "yes*"]
)";
  const char* kMeshDeny = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: meshd-system}
spec:
  action: DENY
  selector: {matchLabels: {app: web}}
  rules:
  - to: [{operation: {paths: ["*.php"]}}]
)";
  const char* kHosts = R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: hosts, namespace: prod}
spec:
  rules:
  - to: [{operation: {hosts: ["*.example.com"], ports: ["8080"]}}]
)";
  Request bad_ip = req(kAlice, "prod");
  bad_ip.ip = *IpAddress::parse("10.9.0.7");
  Request other_ip = req(kAlice, "prod");
  other_ip.ip = *IpAddress::parse("10.8.0.7");
  Request hdr = req("", "");
  static const proxy::http1::HeaderField kDebug[] = {{"x-debug", "yes-please", false}};
  hdr.headers = kDebug;
  Request wrong_port = req("", "", "GET", "/", "a.example.com");
  wrong_port.port = 9090;
  const AuthzCase cases[] = {
      {"no policy allows", "", req("", ""), true, ""},
      {"spec {} denies all", kDenyAll, req(kAlice, "prod"), false, ""},
      {"rules [{}] allows all", kAllowAllRule, req("", ""), true, "prod/allow-all"},
      {"allow matches", kAllowAlice, req(kAlice, "prod", "GET", "/api/v1?x=1"), true,
       "prod/allow-alice"},
      {"allow: path suffix of query ignored", kAllowAlice,
       req(kAlice, "prod", "GET", "/health?/api/x"), true, "prod/allow-alice"},
      {"allow: wrong method", kAllowAlice, req(kAlice, "prod", "POST", "/api/v1"), false, ""},
      {"allow: wrong principal", kAllowAlice, req(kBob, "test", "GET", "/api/v1"), false, ""},
      {"allow: unauthenticated", kAllowAlice, req("", "", "GET", "/api/v1"), false, ""},
      {"deny before allow", std::string(kAllowAllRule) + "---\n" + kDenyBob, req(kBob, "test"),
       false, "prod/deny-test-ns"},
      {"deny does not match: allow decides", std::string(kAllowAllRule) + "---\n" + kDenyBob,
       req(kAlice, "prod"), true, "prod/allow-all"},
      {"notNamespaces/notIpBlocks pass", kNotFields, other_ip, true, "prod/not-fields"},
      {"notIpBlocks excluded, second rule needs principal", kNotFields, bad_ip, true,
       "prod/not-fields"},
      {"both rules fail", kNotFields,
       [] {
         Request r = req("", "test", "DELETE");
         return r;
       }(),
       false, ""},
      {"notPaths excludes", kNotFields,
       [] {
         Request r = req(kBob, "test", "GET", "/admin/x");
         return r;
       }(),
       false, ""},
      {"header condition prefix", kHeaderWhen, hdr, false, "prod/header-when"},
      {"header absent: deny does not match", kHeaderWhen, req("", ""), true, ""},
      {"root namespace policy applies to every namespace", kMeshDeny,
       req("", "", "GET", "/index.php"), false, "meshd-system/mesh-deny"},
      {"hosts case-insensitive, port stripped", kHosts,
       req("", "", "GET", "/", "A.Example.COM:8080"), true, "prod/hosts"},
      {"hosts ok but port wrong", kHosts, wrong_port, false, ""},
  };
  for (const AuthzCase& c : cases) {
    auto a = build(std::string(kWorkloads) + (c.policies.empty() ? "" : "---\n") + c.policies);
    ASSERT_NE(a, nullptr) << c.name;
    const Workload* web = a->workloadByAddress(*IpAddress::parse("10.0.0.10"));
    ASSERT_NE(web, nullptr);
    const Decision d = evaluate(*web, c.request);
    EXPECT_EQ(d.allowed, c.allowed) << c.name;
    EXPECT_EQ(d.policy ? *d.policy : "", c.policy) << c.name;
  }
}

TEST(AuthzTest, SelectorAndNamespaceScope) {
  auto a = build(std::string(kWorkloads) + R"(---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-only, namespace: prod}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{}]
)");
  ASSERT_NE(a, nullptr);
  const Workload* web = a->workload("prod", "web-0");
  const Workload* db = a->workload("prod", "db-0");
  const Workload* dev_web = a->workload("dev", "other-0");
  ASSERT_TRUE(web && db && dev_web);
  EXPECT_FALSE(evaluate(*web, req("", "")).allowed);
  EXPECT_TRUE(evaluate(*db, req("", "")).allowed);       // label mismatch
  EXPECT_TRUE(evaluate(*dev_web, req("", "")).allowed);  // other namespace
  EXPECT_EQ(a->workloadByAddress(*IpAddress::parse("fd00::20")), db);
  EXPECT_EQ(web->principal, "spiffe://cluster.local/ns/prod/sa/web");
  EXPECT_EQ(db->principal, "spiffe://cluster.local/ns/prod/sa/default");
}

TEST(AuthzTest, L4OnlyRequestsFailClosed) {
  // ALLOW with an HTTP field: does not match an L4 request (denied); without: matches.
  auto a = build(std::string(kWorkloads) + R"(---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: prod}
spec:
  rules:
  - to: [{operation: {methods: ["GET"]}}]
)");
  ASSERT_NE(a, nullptr);
  Request l4 = req(kAlice, "prod");
  l4.http = false;
  const Workload* web = a->workload("prod", "web-0");
  EXPECT_FALSE(evaluate(*web, l4).allowed);
  EXPECT_TRUE(evaluate(*web, req(kAlice, "prod")).allowed);

  // DENY with an HTTP field and a source: HTTP part ignored, the source still counts.
  auto b = build(std::string(kWorkloads) + R"(---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: prod}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: ["test"]}}]
    to: [{operation: {methods: ["POST"]}}]
    when: [{key: "request.headers[x-a]", values: ["1"]}]
)");
  ASSERT_NE(b, nullptr);
  web = b->workload("prod", "web-0");
  Request from_test = req(kBob, "test");
  from_test.http = false;
  EXPECT_FALSE(evaluate(*web, from_test).allowed);  // fail closed
  Request from_prod = req(kAlice, "prod");
  from_prod.http = false;
  EXPECT_TRUE(evaluate(*web, from_prod).allowed);          // source does not match
  EXPECT_TRUE(evaluate(*web, req(kBob, "test")).allowed);  // HTTP: GET, header absent
}

TEST(AuthzTest, WhenKeys) {
  auto a = build(std::string(kWorkloads) + R"(---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: when, namespace: prod}
spec:
  rules:
  - when:
    - {key: source.ip, values: ["10.9.0.0/16"], notValues: ["10.9.0.1"]}
    - {key: destination.port, values: ["8080"]}
    - {key: source.principal, notValues: ["*/sa/bob"]}
    - {key: source.namespace, values: ["prod", "test"]}
)");
  ASSERT_NE(a, nullptr);
  const Workload* web = a->workload("prod", "web-0");
  Request r = req(kAlice, "prod");
  EXPECT_FALSE(evaluate(*web, r).allowed);  // 10.9.0.1 excluded
  r.ip = *IpAddress::parse("10.9.3.3");
  EXPECT_TRUE(evaluate(*web, r).allowed);
  r.port = 80;
  EXPECT_FALSE(evaluate(*web, r).allowed);
  r.port = 8080;
  r.principal = kBob;
  r.ns = "test";
  EXPECT_FALSE(evaluate(*web, r).allowed);
}

TEST(PeerAuthenticationTest, WorkloadOverNamespaceOverMeshAndPorts) {
  const std::string pas = R"(---
apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: meshd-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: ns, namespace: dev}
spec: {mtls: {mode: UNSET}}
---
apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: ns, namespace: prod}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: web, namespace: prod}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls:
    "8080": {mode: DISABLE}
    "9090": {mode: UNSET}
)";
  auto a = build(std::string(kWorkloads) + pas);
  ASSERT_NE(a, nullptr);
  const Workload* web = a->workload("prod", "web-0");
  const Workload* db = a->workload("prod", "db-0");
  const Workload* dev = a->workload("dev", "other-0");
  // web: workload policy UNSET -> namespace PERMISSIVE; port 8080 DISABLE; 9090 inherits.
  EXPECT_EQ(effectiveMtlsMode(*web, 80), MtlsMode::kPermissive);
  EXPECT_EQ(effectiveMtlsMode(*web, 8080), MtlsMode::kDisable);
  EXPECT_EQ(effectiveMtlsMode(*web, 9090), MtlsMode::kPermissive);
  EXPECT_EQ(effectiveMtlsMode(*db, 8080), MtlsMode::kPermissive);
  EXPECT_EQ(effectiveMtlsMode(*dev, 80), MtlsMode::kStrict);  // UNSET inherits the mesh
  auto none = build(kWorkloads);
  EXPECT_EQ(effectiveMtlsMode(*none->workload("prod", "web-0"), 80), MtlsMode::kPermissive);
}

resources::RequestRate rate(uint32_t per_unit, uint32_t burst,
                            resources::RateUnit unit = resources::RateUnit::kSecond) {
  resources::RequestRate r;
  r.requests_per_unit = per_unit;
  r.burst = burst;
  r.unit = unit;
  return r;
}

constexpr uint64_t kSec = 1'000'000'000;

TEST(TokenBucketTest, BurstThenRefill) {
  TokenBucket b(rate(10, 5));  // a token every 100 ms, 5 at once
  const uint64_t t0 = 1000 * kSec;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.tryAcquire(t0).allowed) << i;
  Acquire a = b.tryAcquire(t0);
  EXPECT_FALSE(a.allowed);
  EXPECT_EQ(a.wait_ns, kSec / 10);
  EXPECT_EQ(a.retryAfterSeconds(), 1u);
  EXPECT_FALSE(b.tryAcquire(t0 + kSec / 10 - 1).allowed);
  EXPECT_TRUE(b.tryAcquire(t0 + kSec / 10).allowed);
  EXPECT_FALSE(b.tryAcquire(t0 + kSec / 10).allowed);
  // Idle a long time: full again, never more than the burst.
  const uint64_t t1 = t0 + 3600 * kSec;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.tryAcquire(t1).allowed);
  EXPECT_FALSE(b.tryAcquire(t1).allowed);
}

TEST(TokenBucketTest, RetryAfterRoundsUpWholeSeconds) {
  TokenBucket b(rate(2, 1, resources::RateUnit::kMinute));  // a token every 30 s
  EXPECT_TRUE(b.tryAcquire(kSec).allowed);
  Acquire a = b.tryAcquire(kSec + kSec / 2);
  EXPECT_FALSE(a.allowed);
  EXPECT_EQ(a.wait_ns, 29 * kSec + kSec / 2);
  EXPECT_EQ(a.retryAfterSeconds(), 30u);
  EXPECT_EQ((Acquire{false, 1}.retryAfterSeconds()), 1u);
}

TEST(TokenBucketTest, ConcurrentWorkersNeverExceedBurst) {
  TokenBucket b(rate(1, 1000, resources::RateUnit::kHour));
  std::atomic<int> allowed{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) allowed += b.tryAcquire(kSec).allowed ? 1 : 0;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(allowed.load(), 1000);
}

TEST(ClientBucketsTest, PerClientAndBound) {
  ClientBuckets c(rate(1, 2, resources::RateUnit::kHour), 16);
  EXPECT_EQ(c.capacity(), 16u);
  const uint64_t t = 10 * kSec;
  EXPECT_TRUE(c.tryAcquire("a", t).allowed);
  EXPECT_TRUE(c.tryAcquire("a", t).allowed);
  EXPECT_FALSE(c.tryAcquire("a", t).allowed);
  EXPECT_TRUE(c.tryAcquire("b", t).allowed);  // its own bucket
  // Fill the table with busy clients (each spent a token: not idle).
  for (int i = 0; i < 64; ++i) (void)c.tryAcquire("client-" + std::to_string(i), t);
  EXPECT_GT(c.overflowed(), 0u);
  // Past the bound new clients share the overflow bucket: 2 tokens among all of them.
  int ok = 0;
  for (int i = 100; i < 200; ++i) ok += c.tryAcquire("new-" + std::to_string(i), t).allowed;
  EXPECT_LE(ok, 2 + 0);
  // An hour later every bucket is full again: slots are reclaimed, nobody overflows.
  const uint64_t before = c.overflowed();
  EXPECT_TRUE(c.tryAcquire("late", t + 7200 * kSec).allowed);
  EXPECT_EQ(c.overflowed(), before);
}

TEST(RateLimiterTest, RoutesReplaceTopLevelAndClientsAreSeparate) {
  resources::RateLimitPolicySpec spec;
  spec.requests = rate(100, 100);
  spec.per_client = rate(1, 1, resources::RateUnit::kMinute);
  resources::RateLimitRoute api;
  api.path_prefix = "/api";
  api.requests = rate(1, 1, resources::RateUnit::kMinute);
  spec.routes.push_back(api);
  RateLimiter rl("prod/rl", spec);
  const uint64_t t = kSec;
  EXPECT_TRUE(rl.tryAcquire("", "/", "alice", t).acquire.allowed);
  auto r = rl.tryAcquire("", "/", "alice", t);
  EXPECT_FALSE(r.acquire.allowed);
  EXPECT_EQ(r.scope, RateLimiter::Scope::kClient);
  EXPECT_TRUE(rl.tryAcquire("", "/", "bob", t).acquire.allowed);
  // /api: its own shared bucket, no per-client one.
  EXPECT_TRUE(rl.tryAcquire("", "/api/x", "alice", t).acquire.allowed);
  r = rl.tryAcquire("", "/api/y", "bob", t);
  EXPECT_FALSE(r.acquire.allowed);
  EXPECT_EQ(r.scope, RateLimiter::Scope::kService);
  EXPECT_EQ(r.acquire.retryAfterSeconds(), 60u);
}

TEST(PolicyAllocationTest, EvaluateAndTryAcquireDoNotAllocate) {
  auto a = build(std::string(kWorkloads) + R"(---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: prod}
spec:
  action: DENY
  rules:
  - to: [{operation: {notPaths: ["/api/*"], hosts: ["*.example.com"]}}]
    when: [{key: "request.headers[x-user]", values: ["mallory*"]}]
---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: prod}
spec:
  rules:
  - from: [{source: {principals: ["*/sa/alice"], ipBlocks: ["10.9.0.0/16"]}}]
    to: [{operation: {methods: ["GET"], ports: ["8080"]}}]
)");
  ASSERT_NE(a, nullptr);
  const Workload* web = a->workload("prod", "web-0");
  static const proxy::http1::HeaderField kHeaders[] = {{"X-User", "alice", false}};
  Request r = req(kAlice, "prod", "GET", "/api/v1?q=1", "web.example.com:8080");
  r.headers = kHeaders;
  resources::RateLimitPolicySpec spec;
  spec.requests = rate(1000, 1000);
  spec.per_client = rate(10, 10);
  RateLimiter rl("prod/rl", spec);
  (void)rl.tryAcquire("", "/", "warm", kSec);
  testing::startCountingAllocations();
  int allowed = 0;
  for (int i = 0; i < 100; ++i) {
    allowed += evaluate(*web, r).allowed ? 1 : 0;
    allowed += rl.tryAcquire("", "/api", kAlice, kSec + i).acquire.allowed ? 1 : 0;
  }
  EXPECT_EQ(testing::stopCountingAllocations(), 0u);
  EXPECT_EQ(allowed, 100 + 10);
}

}  // namespace
}  // namespace meshd::policy
