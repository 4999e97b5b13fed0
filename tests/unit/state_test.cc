// The state model against a fake LbStateSink and a real store in a temporary
// directory: desired-state computation, all-or-nothing apply/remove, and the
// one updater thread.
#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "state/desired_state.h"
#include "state/model.h"
#include "state/updater.h"

namespace meshd::state {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

// Records every state it is given; fails the next `fail_next` applies.
class FakeSink : public LbStateSink {
 public:
  absl::Status apply(const DesiredLbState& desired) override {
    applied.push_back(desired);
    if (fail_next > 0) {
      --fail_next;
      return absl::ResourceExhaustedError("mesh_services is full (fake)");
    }
    return absl::OkStatus();
  }
  std::vector<DesiredLbState> applied;
  int fail_next = 0;
};

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<resources::Resource> parse(const std::string& yaml,
                                       const std::string& name = "t.yaml") {
  auto parsed = resources::parseFiles({resources::SourceFile{name, yaml}});
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : std::vector<resources::Resource>{};
}

ResourceSet setOf(const std::vector<resources::Resource>& rs) {
  ResourceSet set;
  for (const auto& r : rs) set.upsert(r);
  return set;
}

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

std::string service(const std::string& name, const std::string& ip, int port,
                    const std::string& extra_port = "") {
  return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name +
         "}\nspec:\n  clusterIP: " + ip +
         "\n  ports:\n    - {name: http, port: " + std::to_string(port) + ", targetPort: 8080}\n" +
         extra_port;
}

std::string slice(const std::string& name, const std::string& svc,
                  const std::vector<std::string>& addrs) {
  std::string out =
      "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " + name +
      "\n  labels: {kubernetes.io/service-name: " + svc + "}\naddressType: IPv4\nendpoints:\n";
  for (const auto& a : addrs) out += "  - addresses: [" + a + "]\n";
  return out;
}

// ---------------------------------------------------------------------------
// computeDesiredState

TEST(DesiredState, MergesSlicesSkipsNotReadyMapsNamedPortsAndWeights) {
  auto rs = parse(readFile(std::string(MESHD_TESTDATA_DIR) + "/web.yaml"));
  ASSERT_THAT(rs, SizeIs(4));
  auto desired = computeDesiredState(setOf(rs));
  ASSERT_TRUE(desired.ok()) << desired.status();
  ASSERT_THAT(desired->frontends, SizeIs(2));

  const Frontend& http = desired->frontends[0];
  EXPECT_EQ(http.vip, ip("10.96.0.10"));
  EXPECT_EQ(http.port, 80);
  EXPECT_EQ(http.port_name, "http");
  EXPECT_EQ(http.ns, "shop");
  EXPECT_EQ(http.service, "web");
  EXPECT_EQ(http.algorithm, LbAlgorithm::kWeightedRandom);
  // Two slices merged; 10.1.1.3 is not ready; the slice port named "http" gives 8080.
  ASSERT_THAT(http.backends, SizeIs(2));
  EXPECT_EQ(http.backends[0].address, ip("10.1.1.2"));
  EXPECT_EQ(http.backends[0].port, 8080);
  EXPECT_EQ(http.backends[0].weight, 1u);
  EXPECT_EQ(http.backends[0].node, "node1");
  EXPECT_EQ(http.backends[0].target, "Pod/shop/web-1");
  EXPECT_EQ(http.backends[1].address, ip("10.1.2.2"));
  EXPECT_EQ(http.backends[1].weight, 3u);

  // No slice port is named "metrics": the numeric targetPort is used.
  const Frontend& metrics = desired->frontends[1];
  EXPECT_EQ(metrics.port, 9090);
  ASSERT_THAT(metrics.backends, SizeIs(2));
  EXPECT_EQ(metrics.backends[0].port, 9091);
  EXPECT_EQ(metrics.backends[1].port, 9091);
}

TEST(DesiredState, NamedTargetPortResolvesThroughSlicePortName) {
  std::string yaml =
      "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n"
      "  clusterIP: 10.96.0.20\n"
      "  ports:\n"
      "    - {name: web, port: 80, targetPort: http-alt}\n"
      "    - {name: grpc, port: 90, targetPort: grpc-port}\n"
      "---\n" +
      slice("api-a", "api", {"10.1.0.1"}) + "ports:\n  - {name: http-alt, port: 8081}\n";
  auto desired = computeDesiredState(setOf(parse(yaml)));
  ASSERT_TRUE(desired.ok()) << desired.status();
  ASSERT_THAT(desired->frontends, SizeIs(2));
  ASSERT_THAT(desired->frontends[0].backends, SizeIs(1));
  EXPECT_EQ(desired->frontends[0].backends[0].port, 8081);
  // A named targetPort no slice port resolves gives no backends (nothing to guess).
  EXPECT_EQ(desired->frontends[1].port, 90);
  EXPECT_THAT(desired->frontends[1].backends, SizeIs(0));
}

TEST(DesiredState, PolicyAlgorithmOrderDedupFamiliesAndHeadless) {
  std::string yaml =
      service("b", "10.96.0.2", 80) + "---\n" + service("a", "10.96.0.9", 80) + "---\n" +
      // Same backend in two slices of "a": listed once.
      slice("a-1", "a", {"10.1.0.9", "10.1.0.3"}) + "---\n" + slice("a-2", "a", {"10.1.0.3"}) +
      "---\n"
      "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: a-v6\n"
      "  labels: {kubernetes.io/service-name: a}\naddressType: IPv6\n"
      "endpoints: [{addresses: [\"fd00::3\"]}]\n"
      "---\n"
      "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: a}\n"
      "spec:\n  targetRef: {kind: Service, name: a}\n"
      "  loadBalancer: {algorithm: Maglev, maglev: {tableSize: 65537}}\n"
      "---\n"
      "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: b}\n"
      "spec:\n  targetRef: {kind: Service, name: b}\n"
      "  loadBalancer: {algorithm: LeastConnections}\n"
      "  connectionLimits: {maxConnections: 100, maxConnectionsPerBackend: 10,\n"
      "    connectRate: {perSecond: 50}, connectRatePerClient: {perSecond: 5, burst: 2}}\n"
      "  draining: {terminateConnections: true}\n"
      "---\n"
      "apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None}\n";
  auto desired = computeDesiredState(setOf(parse(yaml)));
  ASSERT_TRUE(desired.ok()) << desired.status();
  ASSERT_THAT(desired->frontends, SizeIs(2));     // the headless service has none
  EXPECT_EQ(desired->frontends[0].service, "b");  // 10.96.0.2 sorts before 10.96.0.9
  EXPECT_EQ(desired->frontends[0].algorithm, LbAlgorithm::kLeastConnections);
  EXPECT_EQ(desired->frontends[0].maglev_table_size, 0u);
  EXPECT_EQ(desired->frontends[0].max_connections, 100u);
  EXPECT_EQ(desired->frontends[0].max_connections_per_backend, 10u);
  EXPECT_EQ(desired->frontends[0].connect_rate, (ConnectRate{50, 50})) << "burst defaults to rate";
  EXPECT_EQ(desired->frontends[0].client_connect_rate, (ConnectRate{5, 2}));
  EXPECT_TRUE(desired->frontends[0].terminate_removed);
  EXPECT_FALSE(desired->frontends[1].terminate_removed) << "default: drain";
  const Frontend& a = desired->frontends[1];
  EXPECT_EQ(a.max_connections, 0u) << "no connectionLimits: unlimited";
  EXPECT_EQ(a.max_connections_per_backend, 0u);
  EXPECT_EQ(a.connect_rate, ConnectRate{}) << "no connectRate: unlimited";
  EXPECT_EQ(a.algorithm, LbAlgorithm::kMaglev);
  EXPECT_EQ(a.maglev_table_size, 65537u);
  ASSERT_THAT(a.backends, SizeIs(2));  // IPv6 slice ignored for an IPv4 VIP
  EXPECT_EQ(a.backends[0].address, ip("10.1.0.3"));
  EXPECT_EQ(a.backends[1].address, ip("10.1.0.9"));

  // Deterministic: the same set computes the same state.
  auto again = computeDesiredState(setOf(parse(yaml)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *desired);
}

// spec.outlierDetection reaches the frontend; absent means the defaults
// (5 failures, 30 s, 300 s, 10%), enabled: false turns detection off, and an
// unset maxEjectionTime is 300 s or baseEjectionTime, whichever is larger.
TEST(DesiredState, OutlierDetectionDefaultsAndPolicy) {
  auto policy = [](const std::string& svc, const std::string& od) {
    return "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: " + svc +
           "}\nspec:\n  targetRef: {kind: Service, name: " + svc + "}\n" + od;
  };
  std::string yaml =
      service("a", "10.96.0.1", 80) + "---\n" + service("b", "10.96.0.2", 80) + "---\n" +
      service("c", "10.96.0.3", 80) + "---\n" + service("d", "10.96.0.4", 80) + "---\n" +
      policy("b",
             "  loadBalancer: {algorithm: LeastLatency}\n"
             "  outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 2s,\n"
             "                     maxEjectionTime: 1m30s, maxEjectionPercent: 25}\n") +
      "---\n" + policy("c", "  outlierDetection: {enabled: false, maxEjectionPercent: 0}\n") +
      "---\n" + policy("d", "  outlierDetection: {baseEjectionTime: 10m}\n");
  auto desired = computeDesiredState(setOf(parse(yaml)));
  ASSERT_TRUE(desired.ok()) << desired.status();
  ASSERT_THAT(desired->frontends, SizeIs(4));
  const state::OutlierDetection& a = desired->frontends[0].outlier;
  EXPECT_EQ(a.consecutive_failures, 5u) << "no policy: defaults";
  EXPECT_EQ(a.base_ejection_ms, 30'000u);
  EXPECT_EQ(a.max_ejection_ms, 300'000u);
  EXPECT_EQ(a.max_ejection_percent, 10u);
  EXPECT_EQ(desired->frontends[1].algorithm, LbAlgorithm::kLeastLatency);
  EXPECT_EQ(desired->frontends[1].outlier, (state::OutlierDetection{3, 2'000, 90'000, 25}));
  EXPECT_EQ(desired->frontends[2].outlier.consecutive_failures, 0u) << "enabled: false";
  EXPECT_EQ(desired->frontends[2].outlier.max_ejection_percent, 0u);
  EXPECT_EQ(desired->frontends[3].outlier, (state::OutlierDetection{5, 600'000, 600'000, 10}));
}

// Routes mark the frontends they bind as needing the L7 proxy: parentRef port
// unset = every port of the Service, port or sectionName = that port only; a
// route whose Service is missing, or a Service no route names, stays L4.
TEST(DesiredState, RoutesMarkBoundFrontendsL7) {
  auto rs = parse(R"(
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}, {name: admin, port: 9000}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80}, {name: grpc, port: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec:
  clusterIP: 10.96.0.12
  ports: [{port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-all}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-http}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}, {group: "", kind: Service, name: gone}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api-grpc}
spec:
  parentRefs: [{group: "", kind: Service, name: api, sectionName: grpc}]
)");
  auto d = computeDesiredState(setOf(rs));
  ASSERT_TRUE(d.ok()) << d.status();
  std::map<std::string, bool> l7;
  for (const Frontend& f : d->frontends) {
    l7[absl::StrCat(f.service, ":", f.port, "/", resources::protocolName(f.protocol))] = f.l7;
  }
  EXPECT_TRUE(l7.at("web:80/TCP"));
  EXPECT_TRUE(l7.at("web:9000/TCP"));
  EXPECT_FALSE(l7.at("web:53/UDP"));  // HTTP routing never applies to UDP
  EXPECT_TRUE(l7.at("api:80/TCP"));
  EXPECT_TRUE(l7.at("api:9090/TCP"));
  EXPECT_FALSE(l7.at("plain:80/TCP"));
  EXPECT_EQ(l7.size(), 6u);

  // Without the GRPCRoute, api:9090 is back on the L4 path.
  ResourceSet set = setOf(rs);
  ASSERT_TRUE(set.erase(resources::ResourceKey{"GRPCRoute", "default", "api-grpc"}));
  auto d2 = computeDesiredState(set);
  ASSERT_TRUE(d2.ok()) << d2.status();
  for (const Frontend& f : d2->frontends) {
    if (f.service == "api") {
      EXPECT_EQ(f.l7, f.port == 80) << f.port;
    }
  }
}

// A TrafficPolicy with a request-level field makes its Service's TCP frontends L7 (only the
// proxy can apply it) and carries the settings to every frontend; L4-only fields do not.
TEST(DesiredState, RequestLevelPolicyMarksL7AndCarriesTheSettings) {
  auto policy = [](const std::string& svc, const std::string& body) {
    return "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: " + svc +
           "}\nspec:\n  targetRef: {kind: Service, name: " + svc + "}\n" + body;
  };
  std::string yaml =
      service("a", "10.96.0.1", 80, "    - {name: dns, port: 53, protocol: UDP}\n") + "---\n" +
      service("b", "10.96.0.2", 80) + "---\n" + service("c", "10.96.0.3", 80) + "---\n" +
      service("d", "10.96.0.4", 80) + "---\n" + service("e", "10.96.0.5", 80) + "---\n" +
      policy("a",
             "  retries: {attempts: 4, retryOn: [5xx]}\n"
             "  outlierDetection: {baseEjectionTime: 2s, maxEjectionPercent: 50}\n") +
      "---\n" +
      policy("b",
             "  loadBalancer: {algorithm: LeastLatency}\n"
             "  connectionLimits: {maxConnections: 10}\n"
             "  outlierDetection: {consecutiveFailures: 3, consecutive5xxErrors: 0}\n") +
      "---\n" + policy("c", "  outlierDetection: {consecutiveGatewayErrors: 2}\n") + "---\n" +
      policy("d", "  faultInjection: {abort: {httpStatus: 503, percentage: 1}}\n") + "---\n" +
      policy("e", "  requestLimits: {maxRequests: 7}\n");
  auto d = computeDesiredState(setOf(parse(yaml)));
  ASSERT_TRUE(d.ok()) << d.status();
  std::map<std::string, const Frontend*> by;
  for (const Frontend& f : d->frontends) {
    by[absl::StrCat(f.service, ":", f.port, "/", resources::protocolName(f.protocol))] = &f;
  }
  ASSERT_EQ(by.size(), 6u);
  const Frontend& a = *by.at("a:80/TCP");
  EXPECT_TRUE(a.l7);
  EXPECT_EQ(a.request.retries.attempts, 4u);
  EXPECT_EQ(a.request.retries.retry_on, state::kRetryOn5xx);
  // The L7 detector gets the policy's ejection timing and cap.
  EXPECT_EQ(a.request.outlier.consecutive_5xx, 5u);
  EXPECT_EQ(a.request.outlier.base_ejection_ms, 2'000u);
  EXPECT_EQ(a.request.outlier.max_ejection_ms, 300'000u);
  EXPECT_EQ(a.request.outlier.max_ejection_percent, 50u);
  EXPECT_FALSE(by.at("a:53/UDP")->l7) << "UDP never goes through the proxy";
  const Frontend& b = *by.at("b:80/TCP");
  EXPECT_FALSE(b.l7) << "LeastLatency, connection limits and connect-failure detection are L4";
  EXPECT_TRUE(b.request.peak_ewma);
  EXPECT_EQ(b.request.outlier.consecutive_5xx, 0u);
  EXPECT_TRUE(by.at("c:80/TCP")->l7);
  EXPECT_EQ(by.at("c:80/TCP")->request.outlier.consecutive_gateway_errors, 2u);
  EXPECT_TRUE(by.at("d:80/TCP")->l7);
  EXPECT_EQ(by.at("d:80/TCP")->request.fault.abort_per_million, 10'000u);
  EXPECT_TRUE(by.at("e:80/TCP")->l7);
  EXPECT_EQ(by.at("e:80/TCP")->request.limits.max_requests, 7u);
  EXPECT_EQ(by.at("e:80/TCP")->request.limits.max_pending_requests, 1024u);
}

TEST(DesiredState, WithMtlsFrontendsWithATunneledBackendGoThroughMeshd) {
  // web's backends: 10.244.2.11 (a Workload on n2, which has a Node address) and 10.244.1.12
  // (a Workload on this node, n1). local-only's backend is on n1; far's is on n3 (no Node).
  const std::string yaml = service("web", "10.96.0.1", 80) + "---\n" +
                           slice("web-1", "web", {"10.244.2.11", "10.244.1.12"}) + "---\n" +
                           service("local-only", "10.96.0.2", 80) + "---\n" +
                           slice("local-1", "local-only", {"10.244.1.12"}) + "---\n" +
                           service("far", "10.96.0.3", 80) + "---\n" +
                           slice("far-1", "far", {"10.244.3.11"}) + R"(---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-n2}
spec: {addresses: [10.244.2.11], node: n2}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-n1}
spec: {addresses: [10.244.1.12], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: far-n3}
spec: {addresses: [10.244.3.11], node: n3}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 10.99.0.2}]}
)";
  const ResourceSet set = setOf(parse(yaml));
  auto l7Of = [](const DesiredLbState& d, const char* vip) {
    for (const Frontend& f : d.frontends) {
      if (f.vip == ip(vip)) return f.l7;
    }
    ADD_FAILURE() << "no frontend " << vip;
    return false;
  };
  auto off = computeDesiredState(set);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(l7Of(*off, "10.96.0.1")) << "mTLS off: the kernel fast path as before";
  auto on = computeDesiredState(set, MeshSettings{.mtls = true, .node_name = "n1"});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(l7Of(*on, "10.96.0.1")) << "a backend on n2: through meshd and the tunnel";
  EXPECT_FALSE(l7Of(*on, "10.96.0.2")) << "only local backends: kernel fast path";
  EXPECT_FALSE(l7Of(*on, "10.96.0.3")) << "n3 has no Node address: no tunnel to it";
  // On n2 itself, web's n2 backend is local but its n1 backend is not (n1 has no Node): L4.
  auto on_n2 = computeDesiredState(set, MeshSettings{.mtls = true, .node_name = "n2"});
  ASSERT_TRUE(on_n2.ok());
  EXPECT_FALSE(l7Of(*on_n2, "10.96.0.1"));
}

TEST(DesiredState, RequestPolicyDefaultsWithoutAPolicy) {
  auto d = computeDesiredState(setOf(parse(service("a", "10.96.0.1", 80))));
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_THAT(d->frontends, SizeIs(1));
  EXPECT_FALSE(d->frontends[0].l7);
  EXPECT_EQ(d->frontends[0].request, state::RequestPolicy{});
  const state::RequestPolicy& p = d->frontends[0].request;
  EXPECT_EQ(p.limits.max_pending_requests, 1024u);
  EXPECT_EQ(p.limits.max_requests, 1024u);
  EXPECT_EQ(p.limits.max_retries, 3u);
  EXPECT_FALSE(p.limits.retry_budget);
  EXPECT_EQ(p.retries.attempts, 2u);
  EXPECT_EQ(p.retries.retriable_status_codes, std::vector<uint16_t>{503});
  EXPECT_EQ(p.retries.base_interval_ms, 25u);
  EXPECT_EQ(p.retries.max_interval_ms, 250u);
  EXPECT_EQ(p.outlier.consecutive_5xx, 5u);
  EXPECT_EQ(p.outlier.consecutive_gateway_errors, 0u);
  EXPECT_FALSE(p.fault.delays());
  EXPECT_FALSE(p.fault.aborts());
  EXPECT_FALSE(p.peak_ewma);
}

TEST(DesiredState, MaglevDefaultsTableSize) {
  std::string yaml = service("a", "10.96.0.9", 80) +
                     "---\napiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\n"
                     "metadata: {name: a}\nspec:\n  targetRef: {kind: Service, name: a}\n"
                     "  loadBalancer: {algorithm: Maglev}\n";
  auto desired = computeDesiredState(setOf(parse(yaml)));
  ASSERT_TRUE(desired.ok()) << desired.status();
  EXPECT_EQ(desired->frontends[0].maglev_table_size, 16381u);
}

// ---------------------------------------------------------------------------
// Model

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshd-model-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = store::Store::open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    model_ = std::make_unique<Model>(store_.get(), sink_);
    ASSERT_TRUE(model_->load().ok());
    sink_.applied.clear();
  }
  void TearDown() override {
    model_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string storeFile() const { return readFile(dir_ + "/resources.json"); }

  std::string dir_;
  FakeSink sink_;
  store::StorePtr store_;
  std::unique_ptr<Model> model_;
};

TEST_F(ModelTest, ApplyCreatesThenUnchangedThenConfigured) {
  auto batch = parse(service("a", "10.96.0.1", 80) + "---\n" + slice("a-1", "a", {"10.1.0.1"}));
  auto res = model_->apply(batch, false);
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_THAT(*res, SizeIs(2));
  EXPECT_EQ((*res)[0].key.toString(), "Service/default/a");
  EXPECT_EQ((*res)[0].action, "created");
  EXPECT_EQ((*res)[1].action, "created");
  ASSERT_THAT(sink_.applied, SizeIs(1));
  ASSERT_THAT(sink_.applied[0].frontends, SizeIs(1));
  EXPECT_THAT(sink_.applied[0].frontends[0].backends, SizeIs(1));
  EXPECT_EQ(model_->desired(), sink_.applied[0]);
  EXPECT_EQ(model_->resources().size(), 2u);
  EXPECT_THAT(storeFile(), HasSubstr("\"a-1\""));

  res = model_->apply(batch, false);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ((*res)[0].action, "unchanged");
  EXPECT_THAT(sink_.applied, SizeIs(1));  // nothing new to program

  auto changed = parse(slice("a-1", "a", {"10.1.0.1", "10.1.0.2"}));
  res = model_->apply(changed, false);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ((*res)[0].action, "configured");
  ASSERT_THAT(sink_.applied, SizeIs(2));
  EXPECT_THAT(sink_.applied[1].frontends[0].backends, SizeIs(2));
}

TEST_F(ModelTest, BatchWithOneBadDocumentChangesNothing) {
  ASSERT_TRUE(model_->apply(parse(service("a", "10.96.0.1", 80)), false).ok());
  const std::string before = storeFile();
  const uint64_t generation = model_->generation();
  sink_.applied.clear();

  auto batch = parse(service("b", "10.96.0.2", 80) + "---\n" + slice("b-1", "b", {"10.1.0.1"}));
  ASSERT_THAT(batch, SizeIs(2));
  batch[1].object["endpoints"][0]["addresses"][0] = "10.1.0.300";  // invalid after parsing
  auto res = model_->apply(batch, false);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(res.status().message()),
              HasSubstr("t.yaml:16:17: EndpointSlice/default/b-1: endpoints[0].addresses[0]: "
                        "\"10.1.0.300\" is not an IPv4 or IPv6 address"));
  EXPECT_THAT(sink_.applied, SizeIs(0));
  EXPECT_EQ(storeFile(), before);
  EXPECT_EQ(model_->resources().size(), 1u);
  EXPECT_EQ(model_->generation(), generation);
}

TEST_F(ModelTest, ConflictWithExistingServiceIsRejected) {
  ASSERT_TRUE(model_->apply(parse(service("a", "10.96.0.1", 80), "a.yaml"), false).ok());
  const std::string before = storeFile();
  sink_.applied.clear();
  auto res = model_->apply(parse(service("b", "10.96.0.1", 80), "b.yaml"), false);
  ASSERT_FALSE(res.ok());
  EXPECT_THAT(std::string(res.status().message()),
              HasSubstr("b.yaml:7:26: Service/default/b: spec.ports[0].port: 10.96.0.1:80/TCP is "
                        "also used by Service/default/a (a.yaml:7:26)"));
  EXPECT_THAT(sink_.applied, SizeIs(0));
  EXPECT_EQ(storeFile(), before);
  EXPECT_FALSE(model_->resources().contains({"Service", "default", "b"}));
}

TEST_F(ModelTest, DuplicateKeysInBatchAreRejected) {
  auto a = parse(service("a", "10.96.0.1", 80), "one.yaml");
  auto b = parse(service("a", "10.96.0.2", 80), "two.yaml");
  a.push_back(b[0]);
  auto res = model_->apply(a, false);
  ASSERT_FALSE(res.ok());
  EXPECT_THAT(std::string(res.status().message()),
              HasSubstr("two.yaml:3:18: Service/default/a: metadata.name: duplicate: "
                        "Service/default/a is also defined at one.yaml:3:18"));
  EXPECT_TRUE(model_->resources().empty());
}

TEST_F(ModelTest, DryRunReportsButChangesNothing) {
  auto res = model_->apply(parse(service("a", "10.96.0.1", 80)), true);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ((*res)[0].action, "created");
  EXPECT_THAT(sink_.applied, SizeIs(0));
  EXPECT_TRUE(model_->resources().empty());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/resources.json"));
}

TEST_F(ModelTest, FailingSinkLeavesModelAndStoreUnchanged) {
  ASSERT_TRUE(model_->apply(parse(service("a", "10.96.0.1", 80)), false).ok());
  const DesiredLbState previous = model_->desired();
  const std::string before = storeFile();
  sink_.applied.clear();
  sink_.fail_next = 1;
  auto res = model_->apply(parse(service("b", "10.96.0.2", 80)), false);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), absl::StatusCode::kResourceExhausted);
  // The new state was tried, then the previous one restored.
  ASSERT_THAT(sink_.applied, SizeIs(2));
  EXPECT_THAT(sink_.applied[0].frontends, SizeIs(2));
  EXPECT_EQ(sink_.applied[1], previous);
  EXPECT_EQ(model_->desired(), previous);
  EXPECT_EQ(model_->resources().size(), 1u);
  EXPECT_EQ(storeFile(), before);
}

// Records the states it is told of, as (resource count, frontend count) pairs.
class RecordingObserver : public ConfigObserver {
 public:
  void willApply(const ResourceSet& resources, const DesiredLbState& desired) override {
    seen.emplace_back(resources.size(), desired.frontends.size());
  }
  std::vector<std::pair<size_t, size_t>> seen;
};

TEST_F(ModelTest, ObserverSeesEachNewStateBeforeTheSinkAndTheOldOneAfterAFailure) {
  RecordingObserver observer;
  model_->setObserver(&observer);
  ASSERT_TRUE(model_->apply(parse(service("a", "10.96.0.1", 80)), false).ok());
  ASSERT_THAT(observer.seen, SizeIs(1));
  EXPECT_EQ(observer.seen[0], std::make_pair(size_t{1}, size_t{1}));
  // Unchanged: nothing to tell.
  ASSERT_TRUE(model_->apply(parse(service("a", "10.96.0.1", 80)), false).ok());
  EXPECT_THAT(observer.seen, SizeIs(1));
  // Dry run: nothing either.
  ASSERT_TRUE(model_->apply(parse(service("b", "10.96.0.2", 80)), true).ok());
  EXPECT_THAT(observer.seen, SizeIs(1));
  // A failing sink: the candidate, then the state that stays.
  sink_.fail_next = 1;
  ASSERT_FALSE(model_->apply(parse(service("b", "10.96.0.2", 80)), false).ok());
  ASSERT_THAT(observer.seen, SizeIs(3));
  EXPECT_EQ(observer.seen[1], std::make_pair(size_t{2}, size_t{2}));
  EXPECT_EQ(observer.seen[2], std::make_pair(size_t{1}, size_t{1}));
  // Removal.
  ASSERT_TRUE(model_->remove({{"Service", "default", "a"}}).ok());
  ASSERT_THAT(observer.seen, SizeIs(4));
  EXPECT_EQ(observer.seen[3], std::make_pair(size_t{0}, size_t{0}));
}

TEST_F(ModelTest, FailingStoreRestoresSinkAndLeavesModelUnchanged) {
  ASSERT_TRUE(model_->apply(parse(service("a", "10.96.0.1", 80)), false).ok());
  const DesiredLbState previous = model_->desired();
  const std::string before = storeFile();
  sink_.applied.clear();
  // A directory where the store writes its temporary file: the save fails.
  std::filesystem::create_directory(dir_ + "/resources.json.tmp");
  auto res = model_->apply(parse(service("b", "10.96.0.2", 80)), false);
  ASSERT_FALSE(res.ok());
  EXPECT_THAT(std::string(res.status().message()), HasSubstr("could not save to the store"));
  ASSERT_THAT(sink_.applied, SizeIs(2));
  EXPECT_EQ(sink_.applied[1], previous);
  EXPECT_EQ(model_->desired(), previous);
  EXPECT_FALSE(model_->resources().contains({"Service", "default", "b"}));
  EXPECT_EQ(storeFile(), before);
}

TEST_F(ModelTest, RemoveIsAllOrNothing) {
  ASSERT_TRUE(
      model_
          ->apply(parse(service("a", "10.96.0.1", 80) + "---\n" + service("b", "10.96.0.2", 80)),
                  false)
          .ok());
  sink_.applied.clear();
  auto res = model_->remove({{"Service", "default", "a"}, {"Service", "default", "zz"}});
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(res.status().message()), HasSubstr("Service/default/zz"));
  EXPECT_EQ(model_->resources().size(), 2u);
  EXPECT_THAT(sink_.applied, SizeIs(0));

  res = model_->remove({{"Service", "default", "a"}, {"Service", "default", "a"}});
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_THAT(*res, SizeIs(1));
  EXPECT_EQ(model_->resources().size(), 1u);
  ASSERT_THAT(sink_.applied, SizeIs(1));
  ASSERT_THAT(sink_.applied[0].frontends, SizeIs(1));
  EXPECT_EQ(sink_.applied[0].frontends[0].service, "b");
  EXPECT_THAT(storeFile(), ::testing::Not(HasSubstr("10.96.0.1")));
}

TEST_F(ModelTest, LoadRestoresFromStoreAfterRestart) {
  ASSERT_TRUE(
      model_
          ->apply(parse(service("a", "10.96.0.1", 80) + "---\n" + slice("a-1", "a", {"10.1.0.1"})),
                  false)
          .ok());
  const DesiredLbState desired = model_->desired();
  model_.reset();
  store_.reset();  // releases the lock, as a stopped meshd does

  auto store = store::Store::open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  FakeSink sink;
  Model restarted(store->get(), sink);
  ASSERT_TRUE(restarted.load().ok());
  EXPECT_EQ(restarted.resources().size(), 2u);
  EXPECT_EQ(restarted.desired(), desired);
  ASSERT_THAT(sink.applied, SizeIs(1));
  EXPECT_EQ(sink.applied[0], desired);
  // Stored resources still say where they were applied from.
  EXPECT_EQ(restarted.resources().find({"Service", "default", "a"})->source, "t.yaml");
}

TEST(ModelNoStore, WorksWithoutPersistence) {
  FakeSink sink;
  Model model(nullptr, sink);
  ASSERT_TRUE(model.load().ok());
  ASSERT_THAT(sink.applied, SizeIs(1));
  EXPECT_TRUE(sink.applied[0].frontends.empty());
  ASSERT_TRUE(model.apply(parse(service("a", "10.96.0.1", 80)), false).ok());
  EXPECT_THAT(model.desired().frontends, SizeIs(1));
}

// ---------------------------------------------------------------------------
// Updater

TEST(Updater, RunsEverythingInOrderOnOneThread) {
  Updater updater;
  std::vector<int> order;
  std::set<std::thread::id> threads;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(updater
                    .post([&, i] {
                      order.push_back(i);
                      threads.insert(std::this_thread::get_id());
                    })
                    .ok());
  }
  // run() returns after everything queued before it.
  absl::StatusOr<size_t> n = updater.run([&]() -> absl::StatusOr<size_t> {
    threads.insert(std::this_thread::get_id());
    return order.size();
  });
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
  ASSERT_THAT(threads, SizeIs(1));
  EXPECT_NE(*threads.begin(), std::this_thread::get_id());
}

TEST(Updater, ConcurrentCallersAreSerialized) {
  Updater updater;
  int counter = 0;  // touched only on the updater thread
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        absl::Status st = updater.run([&] {
          if (inside.fetch_add(1) != 0) overlapped = true;
          ++counter;
          inside.fetch_sub(1);
          return absl::OkStatus();
        });
        EXPECT_TRUE(st.ok());
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_FALSE(overlapped);
  auto total = updater.run([&]() -> absl::StatusOr<int> { return counter; });
  EXPECT_EQ(*total, 800);
}

TEST(Updater, RunInsideTheUpdaterRunsInline) {
  Updater updater;
  absl::Status st = updater.run([&] { return updater.run([] { return absl::OkStatus(); }); });
  EXPECT_TRUE(st.ok());
}

TEST(Updater, StopDrainsQueueThenRefuses) {
  Updater updater;
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(updater.post([&] { ++ran; }).ok());
  updater.stop();
  EXPECT_EQ(ran.load(), 10);
  EXPECT_EQ(updater.post([] {}).code(), absl::StatusCode::kUnavailable);
  absl::Status st = updater.run([] { return absl::OkStatus(); });
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  updater.stop();  // idempotent
}

}  // namespace
}  // namespace meshd::state
