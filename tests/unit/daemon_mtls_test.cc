// The mTLS wiring of the daemon (docs/design/0004-identity-mtls.md, "Wiring into meshd"):
//  - the router's tunnel decision (RouteDecision::via) from Workloads, Nodes and
//    PeerAuthentication, without a network (a fake credential provider);
//  - the tunnel server's inbound authorization (L7Config::authorizeTunnel);
//  - the node agent against a real meshd-ca CaServer on 127.0.0.1 with the test PKI;
//  - a loopback end to end: a Proxy whose connector (MeshTunnel) carries a connection through
//    two tunnel ends to an echo upstream.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "ca/service.h"
#include "daemon/identity_agent.h"
#include "daemon/l7.h"
#include "daemon/mesh_tunnel.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "identity/spiffe.h"
#include "resources/resource.h"
#include "resources/resource_set.h"
#include "state/desired_state.h"
#include "tunnel_test_util.h"

namespace meshd::daemon {
namespace {

using ::testing::HasSubstr;

const std::string kDir = MESHD_TEST_CERTS_DIR;
std::string certPath(const std::string& name) { return kDir + "/" + name; }

std::shared_ptr<const identity::TrustBundle> testBundle() {
  auto b = identity::TrustBundle::fromFile(certPath("bundle.pem"));
  EXPECT_TRUE(b.ok()) << b.status();
  return std::make_shared<const identity::TrustBundle>(std::move(*b));
}

// Credentials without a CA: tests decide which identities have a certificate.
class FakeCredentials final : public CredentialProvider {
 public:
  std::shared_ptr<const WorkloadCredential> credential(std::string_view ns,
                                                       std::string_view sa) override {
    auto& slot = slots_[{std::string(ns), std::string(sa)}];
    if (slot == nullptr) {
      slot = std::make_shared<WorkloadCredential>();
      slot->ns = ns;
      slot->service_account = sa;
      slot->spiffe_id = resources::spiffeId("cluster.local", ns, sa);
    }
    return slot;
  }
  void retain(const std::set<std::pair<std::string, std::string>>& ids) override { retained = ids; }
  void makeReady(const std::string& ns, const std::string& sa) {
    auto& slot = slots_.at({ns, sa});
    slot->identity = std::make_shared<tunnel::Identity>(slot->spiffe_id, nullptr);
    slot->ready.store(true);
  }
  std::set<std::pair<std::string, std::string>> retained;

 private:
  std::map<std::pair<std::string, std::string>, std::shared_ptr<WorkloadCredential>> slots_;
};

void applyYaml(L7Config& cfg, const std::string& yaml) {
  auto parsed = resources::parseFiles({resources::SourceFile{"t.yaml", yaml}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  resources::ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  auto desired = state::computeDesiredState(set);
  ASSERT_TRUE(desired.ok()) << desired.status();
  cfg.willApply(set, *desired);
}

// Service web (10.96.0.20:80 -> :8080) with one endpoint, Workload web-0 on `node`; clients
// alice and bob on this node (n1); Nodes n1 (self) and n2 with InternalIPs; n3 has none.
std::string scenario(const std::string& node, const std::string& extra = "") {
  return R"(apiVersion: v1
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
kind: Workload
metadata: {name: web-0, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.244.1.11], node: )" +
         node + R"(}
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
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status:
  addresses:
  - {type: Hostname, address: n2}
  - {type: InternalIP, address: 192.168.0.2}
---
apiVersion: v1
kind: Node
metadata: {name: n3}
status: {addresses: [{type: Hostname, address: n3}]}
)" + extra;
}

std::string peerAuth(const std::string& mode) {
  return "---\napiVersion: meshd.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: "
         "web}\nspec:\n  selector: {matchLabels: {app: web}}\n  mtls: {mode: " +
         mode + "}\n";
}

proxy::RouteDecision routeFrom(L7Config& cfg, const char* peer) {
  proxy::RequestInfo req;
  req.orig_dst = *SocketAddress::parse("10.96.0.20:80");
  req.peer = *SocketAddress::parse(peer);
  req.method = "GET";
  req.target = "/";
  req.authority = "web";
  proxy::RouteDecision d;
  cfg.route(req, d);
  return d;
}

constexpr char kAlice[] = "10.244.2.11:40000";
constexpr char kBob[] = "10.244.2.12:40000";
constexpr char kStranger[] = "10.244.9.9:40000";

class MtlsRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_.setNodeName("n1");
    cfg_.setMtls({&creds_, &vias_, 15008});
  }
  void apply(const std::string& yaml) {
    applyYaml(cfg_, yaml);
    // Both local clients' identities were asked for (and are kept).
    EXPECT_TRUE(creds_.retained.contains({"team", "alice"}));
    EXPECT_TRUE(creds_.retained.contains({"team", "bob"}));
  }
  FakeCredentials creds_;
  ViaTable vias_{testBundle(), "cluster.local"};
  L7Config cfg_{nullptr, 1};
};

TEST_F(MtlsRouterTest, RemoteEndpointFromACredentialedSourceGoesThroughTheTunnel) {
  apply(scenario("n2"));
  creds_.makeReady("team", "alice");
  const proxy::RouteDecision d = routeFrom(cfg_, kAlice);
  ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(d.upstream.toString(), "10.244.1.11:8080");
  ASSERT_NE(d.via, 0u);
  const ViaEntry* e = vias_.find(d.via);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->node, "n2");
  EXPECT_EQ(e->peer.toString(), "192.168.0.2:15008");
  EXPECT_EQ(e->source->spiffe_id, "spiffe://cluster.local/ns/team/sa/alice");
  // A dual-stack listener's mapped peer is the same source.
  EXPECT_EQ(routeFrom(cfg_, "[::ffff:10.244.2.11]:40000").via, d.via);
  // Ids are stable across config swaps (pooled connections stay keyed correctly).
  apply(scenario("n2"));
  EXPECT_EQ(routeFrom(cfg_, kAlice).via, d.via);
  // bob has no certificate yet: plaintext (PERMISSIVE by default).
  const proxy::RouteDecision b = routeFrom(cfg_, kBob);
  EXPECT_EQ(b.kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(b.via, 0u);
  // A peer that is no local Workload: plaintext.
  EXPECT_EQ(routeFrom(cfg_, kStranger).via, 0u);
  // Once bob's certificate arrives, his requests take the tunnel as bob (another via).
  creds_.makeReady("team", "bob");
  const proxy::RouteDecision b2 = routeFrom(cfg_, kBob);
  ASSERT_NE(b2.via, 0u);
  EXPECT_NE(b2.via, d.via);
  EXPECT_EQ(vias_.find(b2.via)->source->spiffe_id, "spiffe://cluster.local/ns/team/sa/bob");
}

TEST_F(MtlsRouterTest, LocalEndpointsNodesWithoutAddressAndDisableGoDirect) {
  apply(scenario("n1"));  // same node
  creds_.makeReady("team", "alice");
  EXPECT_EQ(routeFrom(cfg_, kAlice).via, 0u);
  apply(scenario("n3"));  // a Node without InternalIP
  EXPECT_EQ(routeFrom(cfg_, kAlice).via, 0u);
  apply(scenario("n4"));  // no Node at all
  EXPECT_EQ(routeFrom(cfg_, kAlice).via, 0u);
  apply(scenario("n2", peerAuth("DISABLE")));
  const proxy::RouteDecision d = routeFrom(cfg_, kAlice);
  EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(d.via, 0u);
  apply(scenario("n2", peerAuth("PERMISSIVE")));
  EXPECT_NE(routeFrom(cfg_, kAlice).via, 0u);
}

TEST_F(MtlsRouterTest, StrictDestinationWithoutSourceCertificateIs503Mtls) {
  apply(scenario("n2", peerAuth("STRICT")));
  creds_.makeReady("team", "alice");
  EXPECT_NE(routeFrom(cfg_, kAlice).via, 0u);
  for (const char* peer : {kBob, kStranger}) {
    const proxy::RouteDecision d = routeFrom(cfg_, peer);
    EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kDirectResponse) << peer;
    EXPECT_EQ(d.status, 503) << peer;
    EXPECT_EQ(d.response_flags, "MTLS") << peer;
    EXPECT_THAT(std::string(d.body), HasSubstr("requires mTLS")) << peer;
    EXPECT_EQ(d.via, 0u);
    EXPECT_NE(d.pin, nullptr);
  }
  EXPECT_EQ(cfg_.strictNoCredential(), 2u);
  std::string metrics;
  cfg_.renderPolicyMetrics(metrics);
  EXPECT_THAT(metrics, HasSubstr("meshd_mtls_refused_total{reason=\"no_source_certificate\"} 2"));
  // The opaque relay: the same decision.
  SocketAddress upstream;
  std::string_view cluster;
  uint64_t via = 7;
  EXPECT_TRUE(cfg_.routeConnectionFrom(*SocketAddress::parse("10.96.0.20:80"),
                                       *SocketAddress::parse(kAlice), upstream, cluster, via));
  EXPECT_NE(via, 0u);
  EXPECT_EQ(vias_.find(via)->node, "n2");
  // Bob has no certificate: the connection is kept (its HTTP requests get 503 MTLS from
  // route()), but its via is one the connector refuses, so an opaque relay never goes out in
  // plaintext. Counted per request by route(), not per connection.
  EXPECT_TRUE(cfg_.routeConnectionFrom(*SocketAddress::parse("10.96.0.20:80"),
                                       *SocketAddress::parse(kBob), upstream, cluster, via));
  EXPECT_EQ(via, kViaStrictRefused);
  EXPECT_EQ(vias_.find(via), nullptr);
  EXPECT_EQ(cfg_.strictNoCredential(), 2u);
}

TEST_F(MtlsRouterTest, WithoutMtlsSettingsNothingChanges) {
  L7Config plain(nullptr, 1);
  plain.setNodeName("n1");
  applyYaml(plain, scenario("n2", peerAuth("STRICT")));
  const proxy::RouteDecision d = routeFrom(plain, kBob);
  EXPECT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
  EXPECT_EQ(d.via, 0u);
}

TEST_F(MtlsRouterTest, TunnelInboundIsAuthorizedForLocalWorkloadsOnly) {
  // web-0 is local here; only alice may call it.
  apply(scenario("n1", R"(---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-callers}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/team/sa/alice"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: http-only}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/team/sa/bob"]}}]
    to: [{operation: {methods: ["GET"]}}]
)"));
  const SocketAddress web = *SocketAddress::parse("10.244.1.11:8080");
  using V = L7Config::TunnelVerdict;
  EXPECT_EQ(cfg_.authorizeTunnel("spiffe://cluster.local/ns/team/sa/alice", web), V::kAllow);
  EXPECT_EQ(cfg_.authorizeTunnel("spiffe://cluster.local/ns/team/sa/alice",
                                 *SocketAddress::parse("10.244.1.11:9090")),
            V::kDenied);
  // bob's only rule needs HTTP attributes: fails closed on the L4 tunnel.
  EXPECT_EQ(cfg_.authorizeTunnel("spiffe://cluster.local/ns/team/sa/bob", web), V::kDenied);
  EXPECT_EQ(cfg_.authorizeTunnel("", web), V::kDenied);
  // Not a local workload (another node's, or no Workload at all).
  EXPECT_EQ(cfg_.authorizeTunnel("spiffe://cluster.local/ns/team/sa/alice",
                                 *SocketAddress::parse("10.244.7.7:8080")),
            V::kNotLocal);
  apply(scenario("n2"));
  EXPECT_EQ(cfg_.authorizeTunnel("spiffe://cluster.local/ns/team/sa/alice", web), V::kNotLocal);
}

TEST_F(MtlsRouterTest, RetargetRecomputesTheViaForTheNewEndpointsNode) {
  // web: 10.244.1.11 (web-0 on n2), 10.244.1.12 (web-1 on n1, local), 10.244.1.13 (web-2 on
  // n5); a TrafficPolicy gives the cluster request-level state (retarget works).
  const std::string base = R"(apiVersion: v1
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
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web}
spec:
  targetRef: {kind: Service, name: web}
  outlierDetection: {consecutive5xxErrors: 5}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-0, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.244.1.11], node: n2}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-1, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.244.1.12], node: n1}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-2, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.244.1.13], node: n5}
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
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: n5}
status: {addresses: [{type: InternalIP, address: 192.168.0.5}]}
)";
  apply(base);
  creds_.makeReady("team", "alice");
  const SocketAddress web0 = *SocketAddress::parse("10.244.1.11:8080");
  const SocketAddress web1 = *SocketAddress::parse("10.244.1.12:8080");
  auto nodeOf = [&](uint64_t via) -> std::string {
    if (via == 0) return "direct";
    const ViaEntry* e = vias_.find(via);
    return e == nullptr ? "?" : e->node;
  };
  auto expected = [&](const SocketAddress& ep) -> std::string {
    if (ep == web0) return "n2";
    if (ep == web1) return "direct";
    return "n5";
  };
  std::set<std::string> retried_to;
  int from_remote = 0;
  for (int i = 0; i < 300; ++i) {
    proxy::RouteDecision d = routeFrom(cfg_, kAlice);
    ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kForward);
    ASSERT_NE(d.cluster_ctx, nullptr);
    EXPECT_EQ(nodeOf(d.via), expected(d.upstream)) << d.upstream.toString();
    if (d.via != 0) ++from_remote;
    const SocketAddress failed = d.upstream;
    ASSERT_TRUE(cfg_.retarget(d, failed));
    EXPECT_NE(d.upstream, failed);
    EXPECT_EQ(nodeOf(d.via), expected(d.upstream)) << "retry to " << d.upstream.toString();
    EXPECT_EQ(d.via == 0 ? std::string() : vias_.find(d.via)->source->spiffe_id,
              d.via == 0 ? std::string() : "spiffe://cluster.local/ns/team/sa/alice");
    retried_to.insert(nodeOf(d.via));
  }
  EXPECT_GT(from_remote, 0);
  // Retries went to either remote node (a via of the same source) and to the local web-1
  // (direct); each retry picks one of two endpoints evenly, so missing one is ~2^-100.
  EXPECT_EQ(retried_to, (std::set<std::string>{"direct", "n2", "n5"}));

  // bob has no certificate and web is STRICT: a first try to the local web-1 goes direct;
  // its retry would reach a remote endpoint in plaintext (dropped there): not made.
  apply(base + peerAuth("STRICT"));
  const uint64_t refused_before = cfg_.strictNoCredential();
  int local_first = 0;
  for (int i = 0; i < 300 && local_first < 20; ++i) {
    proxy::RouteDecision d = routeFrom(cfg_, kBob);
    if (d.kind != proxy::RouteDecision::Kind::kForward) {
      EXPECT_EQ(d.response_flags, "MTLS");  // a remote first pick: 503 at once
      continue;
    }
    ASSERT_EQ(d.upstream, web1);
    EXPECT_EQ(d.via, 0u);
    ++local_first;
    EXPECT_FALSE(cfg_.retarget(d, web1));
  }
  EXPECT_EQ(local_first, 20);
  EXPECT_GE(cfg_.strictNoCredential(), refused_before + 20);
}

TEST_F(MtlsRouterTest, TheLabsMtlsYamlSendsClientToWebThroughTheTunnel) {
  auto yaml = identity::readFile(MESHD_LAB_MTLS_YAML);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  cfg_.setNodeName("lab-n1");  // the lab's node names are <lab id>-nN
  applyYaml(cfg_, *yaml);
  EXPECT_TRUE(creds_.retained.contains({"default", "client"}));
  creds_.makeReady("default", "client");
  proxy::RequestInfo req;
  req.orig_dst = *SocketAddress::parse("10.96.0.40:80");
  req.peer = *SocketAddress::parse("10.244.1.11:40000");  // n1-p1
  req.method = "GET";
  req.target = "/";
  req.authority = "web-mtls";
  proxy::RouteDecision d;
  cfg_.route(req, d);
  ASSERT_EQ(d.kind, proxy::RouteDecision::Kind::kForward) << d.status;
  EXPECT_EQ(d.upstream.toString(), "10.244.2.11:8080");
  ASSERT_NE(d.via, 0u);
  EXPECT_EQ(vias_.find(d.via)->peer.toString(), "10.99.0.2:15008");
}

TEST(MtlsVerifiers, NodeVerifierWantsTheExpectedNodeAndWorkloadVerifierAWorkload) {
  auto bundle = testBundle();
  auto leafOf = [](const std::string& name) {
    auto chain = identity::loadCertChainFile(certPath(name + ".chain.pem"));
    EXPECT_TRUE(chain.ok()) << chain.status();
    return std::move(*chain);
  };
  identity::CertChain n1 = leafOf("node-n1");
  identity::CertChain web = leafOf("client");
  auto stackOf = [](identity::CertChain& c) {
    STACK_OF(X509)* s = sk_X509_new_null();
    for (size_t i = 1; i < c.size(); ++i) sk_X509_push(s, c[i].get());
    return s;
  };
  STACK_OF(X509)* s1 = stackOf(n1);
  STACK_OF(X509)* sw = stackOf(web);
  EXPECT_TRUE(nodeVerifier(bundle, "cluster.local", "n1")(n1[0].get(), s1).ok());
  absl::Status wrong = nodeVerifier(bundle, "cluster.local", "n2")(n1[0].get(), s1);
  EXPECT_THAT(std::string(wrong.message()), HasSubstr("wrong_peer"));
  EXPECT_FALSE(nodeVerifier(bundle, "cluster.local", "n1")(web[0].get(), sw).ok());
  EXPECT_FALSE(nodeVerifier(bundle, "other.domain", "n1")(n1[0].get(), s1).ok());
  EXPECT_TRUE(workloadVerifier(bundle, "cluster.local")(web[0].get(), sw).ok());
  absl::Status node_as_client = workloadVerifier(bundle, "cluster.local")(n1[0].get(), s1);
  EXPECT_THAT(std::string(node_as_client.message()), HasSubstr("not_workload"));
  // A resumed session (chain = null: a ticket carries the leaf only) is judged by the leaf's
  // identity; the chain-building check must not run (without the intermediate it could not
  // chain the leaf to the bundle and refused every resumption: the lab saw 503s).
  EXPECT_TRUE(nodeVerifier(bundle, "cluster.local", "n1")(n1[0].get(), nullptr).ok());
  EXPECT_FALSE(nodeVerifier(bundle, "cluster.local", "n2")(n1[0].get(), nullptr).ok());
  EXPECT_TRUE(workloadVerifier(bundle, "cluster.local")(web[0].get(), nullptr).ok());
  EXPECT_FALSE(workloadVerifier(bundle, "cluster.local")(n1[0].get(), nullptr).ok());
  identity::CertChain wrong_td = leafOf("wrong-td");
  absl::Status other_td = workloadVerifier(bundle, "cluster.local")(wrong_td[0].get(), nullptr);
  EXPECT_THAT(std::string(other_td.message()), HasSubstr("wrong_trust_domain"));
  identity::CertChain no_id = leafOf("no-spiffe");
  EXPECT_FALSE(workloadVerifier(bundle, "cluster.local")(no_id[0].get(), nullptr).ok());
  sk_X509_free(s1);
  sk_X509_free(sw);
}

// --- The node agent against a real meshd-ca ---------------------------------------------

constexpr char kPlacement[] = R"(
- {name: alice, namespace: team, serviceAccount: alice, node: n1}
- {name: server-1, namespace: default, serviceAccount: server, node: n2}
)";

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    identity::CaOptions o;
    o.trust_domain = "cluster.local";
    o.root_cert_file = certPath("bundle.pem");
    o.key_file = certPath("intermediate.key");
    o.cert_chain_file = certPath("intermediate.crt");
    auto ca = identity::CertificateAuthority::create(o);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    auto placement = ca::StaticWorkloadPlacement::fromYaml(kPlacement, "placement.yaml");
    ASSERT_TRUE(placement.ok()) << placement.status();
    placement_ = std::make_unique<ca::StaticWorkloadPlacement>(std::move(*placement));
    ca::CaServerOptions so;
    so.listen = "127.0.0.1:0";
    auto server = ca::CaServer::start(so, *ca_, *placement_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    if (server_) server_->shutdown();
  }
  IdentityAgentOptions options(const std::string& node = "n1") {
    IdentityAgentOptions o;
    o.ca_address = "127.0.0.1:" + std::to_string(server_->port());
    o.node_cert = certPath("node-" + node + ".chain.pem");
    o.node_key = certPath("node-" + node + ".key");
    o.trust_bundle = certPath("bundle.pem");
    o.node_name = node;
    o.min_backoff = absl::Milliseconds(20);
    o.max_backoff = absl::Milliseconds(100);
    return o;
  }
  // Waits (generously; only against a hang) until `done` holds.
  template <typename F>
  // Only a bound against hangs. 60 s: on a test PKI made less than the CA's backdate ago the
  // renewal of a 60 s certificate comes after up to ~36 s (notBefore is then the issuer's).
  static bool eventually(F done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  identity::CertificateAuthorityPtr ca_;
  std::unique_ptr<ca::StaticWorkloadPlacement> placement_;
  ca::CaServerPtr server_;
};

TEST_F(AgentTest, GetsRotatesAndRefusesByPlacement) {
  IdentityAgentOptions o = options();
  o.requested_ttl = absl::Seconds(60);
  o.min_renew_interval = absl::Milliseconds(200);  // renewAt is past (backdated notBefore)
  auto agent = IdentityAgent::start(o);
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_EQ((*agent)->nodeIdentity()->name(), "spiffe://cluster.local/meshd/node/n1");

  std::shared_ptr<const WorkloadCredential> alice = (*agent)->credential("team", "alice");
  ASSERT_TRUE(eventually([&] { return alice->ready.load(); }));
  std::shared_ptr<const tunnel::Credentials> first = alice->identity->current();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->uri(), "spiffe://cluster.local/ns/team/sa/alice");
  EXPECT_EQ(alice->identity->name(), "spiffe://cluster.local/ns/team/sa/alice");
  // The leaf lives the requested 60 s from its issue, plus the CA's backdate, which never
  // reaches before the issuer's own notBefore (a test PKI made minutes ago cuts it short).
  const absl::Time not_after = identity::notAfter(first->leaf());
  auto issuer = identity::loadCertChainFile(certPath("intermediate.crt"));
  ASSERT_TRUE(issuer.ok()) << issuer.status();
  const absl::Time expected_not_before =
      std::max(not_after - absl::Seconds(60) - identity::kClockSkewBackdate,
               identity::notBefore((*issuer)[0].get()));
  EXPECT_EQ(identity::notBefore(first->leaf()), expected_not_before);
  // Renewal: the identity rotates to a new certificate (new key), the slot stays the same.
  ASSERT_TRUE(eventually([&] { return alice->identity->current() != first; }));
  EXPECT_NE(alice->identity->current()->leaf(), first->leaf());
  EXPECT_EQ((*agent)->credential("team", "alice"), alice);

  // default/server is placed on n2: the CA refuses, the agent retries with backoff.
  std::shared_ptr<const WorkloadCredential> server = (*agent)->credential("default", "server");
  ASSERT_TRUE(eventually([&] { return (*agent)->stats().failures >= 3; }));
  EXPECT_FALSE(server->ready.load());
  EXPECT_EQ(server_->service().refused(ca::Refusal::kNotOnNode) >= 3, true);
  // No longer retained: no more attempts.
  (*agent)->retain({{"team", "alice"}});
  const IdentityAgentStats st = (*agent)->stats();
  EXPECT_EQ(st.identities, 1u);
  EXPECT_EQ(st.ready, 1u);
  (*agent)->stop();
}

TEST_F(AgentTest, StartRefusesAnotherNodesCredentialAndMissingFlags) {
  IdentityAgentOptions o = options("n2");
  o.node_name = "n1";
  auto agent = IdentityAgent::start(o);
  ASSERT_FALSE(agent.ok());
  EXPECT_THAT(std::string(agent.status().message()),
              HasSubstr("is not this node's credential (expected "
                        "spiffe://cluster.local/meshd/node/n1)"));
  o = options();
  o.trust_bundle = certPath("no-such-bundle.pem");
  agent = IdentityAgent::start(o);
  ASSERT_FALSE(agent.ok());
  EXPECT_THAT(std::string(agent.status().message()), HasSubstr("--trust-bundle"));
  o = options();
  o.node_key.clear();
  agent = IdentityAgent::start(o);
  ASSERT_FALSE(agent.ok());
  EXPECT_THAT(std::string(agent.status().message()), HasSubstr("--node-key is required"));
}

// --- Loopback: proxy -> tunnel client -> tunnel server -> upstream ----------------------

// Every connection goes to `upstream` by way of `via` (set per test step).
class ViaRouter final : public proxy::Router {
 public:
  void route(const proxy::RequestInfo&, proxy::RouteDecision& out) override {
    out.upstream = upstream;
    out.cluster = "test";
    out.via = via.load();
  }
  bool routeConnection(const SocketAddress&, SocketAddress& up,
                       std::string_view& cluster) override {
    up = upstream;
    cluster = "test";
    return true;
  }
  bool routeConnectionFrom(const SocketAddress& orig, const SocketAddress&, SocketAddress& up,
                           std::string_view& cluster, uint64_t& v) override {
    v = via.load();
    return routeConnection(orig, up, cluster);
  }
  SocketAddress upstream;
  std::atomic<uint64_t> via{0};
};

class FixedDst final : public proxy::OriginalDst {
 public:
  std::optional<SocketAddress> lookup(int, const SocketAddress&) override {
    return *SocketAddress::parse("10.96.0.10:80");
  }
};

// Connects to 127.0.0.1:port, sends `payload`, half-closes and reads until EOF (bounded).
std::string exchange(uint16_t port, const std::string& payload) {
  ScopedFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0)
    return "connect failed";
  timeval tv{20, 0};  // only against a hang
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  tunnel::testing::writeAll(fd.get(), payload.data(), payload.size());
  shutdown(fd.get(), SHUT_WR);
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::shared_ptr<tunnel::Identity> fileIdentity(const std::string& name) {
  auto creds =
      tunnel::Credentials::fromFiles(certPath(name + ".chain.pem"), certPath(name + ".key"));
  EXPECT_TRUE(creds.ok()) << creds.status();
  return std::make_shared<tunnel::Identity>((*creds)->uri(), *creds);
}

TEST(MtlsLoopbackTest, ProxyConnectionGoesThroughTheTunnelAsTheSourceWorkload) {
  tunnel::testing::EchoServer echo;
  auto bundle = testBundle();
  auto tunnel_bundle = tunnel::TrustBundle::fromFile(certPath("bundle.pem"));
  ASSERT_TRUE(tunnel_bundle.ok()) << tunnel_bundle.status();

  // Node n2's meshd: presents its node credential; the hook records the peer and decides.
  std::mutex mu;
  std::vector<std::string> peers, dsts;
  std::atomic<bool> allow{true};
  MeshTunnelOptions so;
  so.listen = *SocketAddress::parse("127.0.0.1:0");
  so.server_identity = fileIdentity("node-n2");
  so.bundle = bundle;
  so.tunnel_bundle = *tunnel_bundle;
  so.trust_domain = "cluster.local";
  so.hook = [&](const tunnel::InboundRequest& r) {
    std::lock_guard<std::mutex> lock(mu);
    peers.push_back(r.peer_identity);
    dsts.push_back(r.dst.toString());
    return allow.load() ? tunnel::InboundDecision::allowWithMark(0)
                        : tunnel::InboundDecision::deny(403, "RBAC: access denied");
  };
  ViaTable server_vias(bundle, "cluster.local");
  auto n2 = MeshTunnel::start(so, server_vias);
  ASSERT_TRUE(n2.ok()) << n2.status();

  // Node n1's meshd: the client workload's credential, vias to n2 (and to a wrong "n3").
  ViaTable vias(bundle, "cluster.local");
  auto cred = std::make_shared<WorkloadCredential>();
  cred->spiffe_id = "spiffe://cluster.local/ns/default/sa/client";
  cred->identity = fileIdentity("client");
  cred->ready.store(true);
  const uint64_t to_n2 = vias.idFor(cred, "n2", (*n2)->listening());
  const uint64_t to_n3 = vias.idFor(cred, "n3", (*n2)->listening());  // n2 answers instead
  MeshTunnelOptions co = so;
  co.server_identity = fileIdentity("node-n1");
  co.hook = [](const tunnel::InboundRequest&) { return tunnel::InboundDecision::deny(403, "no"); };
  auto n1 = MeshTunnel::start(co, vias);
  ASSERT_TRUE(n1.ok()) << n1.status();

  ViaRouter router;
  router.upstream = *SocketAddress::parse("127.0.0.1:" + std::to_string(echo.port()));
  FixedDst dst;
  proxy::ProxyOptions po;
  po.listen = *SocketAddress::parse("127.0.0.1:0");
  po.workers = 1;
  po.connector = n1->get();
  auto proxy = proxy::Proxy::start(po, router, dst, nullptr);
  ASSERT_TRUE(proxy.ok()) << proxy.status();

  // First, a via whose expected node (n3) is not the peer's (n2 answers): our verifier refuses
  // the handshake, nothing reaches n2's hook. (Pooled connections are keyed by (source, peer
  // address): this has to be the first connection to that address.)
  router.via = to_n3;
  EXPECT_EQ(exchange((*proxy)->port(), "\x01wrong node"), "");
  EXPECT_GE((*n1)->clientCounters().failed(tunnel::HandshakeFailure::kVerifierRefused), 1u);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(peers.empty());
  }
  router.via = to_n2;
  const uint64_t client_streams = (*n1)->clientCounters().streams_opened.load();

  const std::string payload =
      std::string("\x01opaque bytes through the tunnel\n") + std::string(100 * 1024, 'x');
  EXPECT_EQ(exchange((*proxy)->port(), payload), payload);
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(peers.size(), 1u);
    EXPECT_EQ(peers[0], "spiffe://cluster.local/ns/default/sa/client");
    EXPECT_EQ(dsts[0], router.upstream.toString());
  }
  EXPECT_EQ((*n1)->clientCounters().streams_opened.load(), client_streams + 1);
  EXPECT_EQ((*n2)->serverCounters().streams_opened.load(), 1u);
  EXPECT_GE((*n2)->serverCounters().bytes_from_tunnel.load(), payload.size());

  // Denied by the peer's hook: the connection ends without a byte of the upstream's.
  allow = false;
  EXPECT_EQ(exchange((*proxy)->port(),
                     "\x01"
                     "denied"),
            "");
  EXPECT_EQ((*n2)->serverCounters().streams_refused.load(), 1u);

  // An unknown via: the connector refuses at once.
  router.via = 999;
  EXPECT_EQ(exchange((*proxy)->port(), "\x01unknown via"), "");
  std::string metrics;
  (*n1)->renderMetrics(metrics);
  EXPECT_THAT(metrics, HasSubstr("meshd_tunnel_open_refused_total 1"));
  (*proxy)->stop();
  (*n1)->stop();
  (*n2)->stop();
}

}  // namespace
}  // namespace meshd::daemon
