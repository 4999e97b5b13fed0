// The identity and policy kinds (Workload, PeerAuthentication, AuthorizationPolicy,
// RateLimitPolicy): strict validation with file:line:col, typed views with defaults, set
// checks, and the RateLimitPolicy's kernel connect rates in the desired state.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "resources/resource.h"
#include "resources/resource_set.h"
#include "state/desired_state.h"
#include "state/model.h"

namespace meshd::resources {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::vector<Resource>> parse(const std::string& yaml) {
  return parseFiles({SourceFile{"f.yaml", yaml}});
}

std::string errorsOf(const std::string& yaml) {
  auto parsed = parse(yaml);
  if (parsed.ok()) return "accepted";
  return std::string(parsed.status().message());
}

struct Bad {
  std::string name, yaml, expected;
};

const char kWl[] = "apiVersion: meshd.io/v1alpha1\nkind: Workload\nmetadata: {name: w}\nspec:\n";
const char kPa[] =
    "apiVersion: meshd.io/v1alpha1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n";
const char kAp[] =
    "apiVersion: meshd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n";
const char kRl[] =
    "apiVersion: meshd.io/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: r}\nspec:\n"
    "  targetRef: {kind: Service, name: web}\n";

TEST(PolicyResources, RejectedWithFileLineAndField) {
  const Bad cases[] = {
      {"workload no address", std::string(kWl) + "  node: n1\n  addresses: []\n",
       "f.yaml:6:14: Workload/default/w: spec.addresses: must list at least one address"},
      {"workload bad address", std::string(kWl) + "  node: n1\n  addresses: [10.0.0.300]\n",
       "f.yaml:6:15: Workload/default/w: spec.addresses[0]:"},
      {"workload missing node", std::string(kWl) + "  addresses: [10.0.0.1]\n",
       "f.yaml:5:3: Workload/default/w: spec.node: required field is missing"},
      {"workload unknown field",
       std::string(kWl) + "  node: n1\n  addresses: [10.0.0.1]\n  ip: x\n",
       "f.yaml:7:3: Workload/default/w: spec.ip: unknown field"},
      {"workload relative cgroup",
       std::string(kWl) + "  node: n1\n  addresses: [10.0.0.1]\n  cgroup: kubepods/x\n",
       "f.yaml:7:11: Workload/default/w: spec.cgroup: \"kubepods/x\" is not an absolute path"},
      {"workload duplicate address",
       std::string(kWl) + "  node: n1\n  addresses: [10.0.0.1, 10.0.0.1]\n",
       "spec.addresses[1]: 10.0.0.1 is listed twice (also spec.addresses[0])"},
      {"pa bad mode", std::string(kPa) + "  mtls: {mode: strict}\n",
       "f.yaml:5:16: PeerAuthentication/default/p: spec.mtls.mode: unknown mode \"strict\" (use "
       "DISABLE, PERMISSIVE, STRICT or UNSET)"},
      {"pa port level without selector",
       std::string(kPa) + "  portLevelMtls:\n    \"80\": {mode: DISABLE}\n",
       "f.yaml:6:5: PeerAuthentication/default/p: spec.portLevelMtls: needs "
       "spec.selector.matchLabels"},
      {"pa bad port",
       std::string(kPa) + "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n"
                          "    \"http\": {mode: DISABLE}\n",
       "f.yaml:7:5: PeerAuthentication/default/p: spec.portLevelMtls.http: \"http\" is not a port "
       "number"},
      {"ap custom", std::string(kAp) + "  action: CUSTOM\n",
       "f.yaml:5:11: AuthorizationPolicy/default/a: spec.action: action CUSTOM is not supported "
       "by meshd (use ALLOW or DENY)"},
      {"ap audit", std::string(kAp) + "  action: AUDIT\n", "action AUDIT is not supported"},
      {"ap bad action", std::string(kAp) + "  action: allow\n",
       "spec.action: unknown action \"allow\" (use ALLOW or DENY)"},
      {"ap unknown when key",
       std::string(kAp) + "  rules:\n  - when:\n    - key: request.auth.claims[iss]\n"
                          "      values: [x]\n",
       "f.yaml:7:12: AuthorizationPolicy/default/a: spec.rules[0].when[0].key: key "
       "\"request.auth.claims[iss]\" is not supported (meshd supports request.headers[<name>], "
       "source.namespace, source.principal, source.ip and destination.port)"},
      {"ap bad cidr",
       std::string(kAp) + "  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.1/8]}\n",
       "f.yaml:7:27: AuthorizationPolicy/default/a: spec.rules[0].from[0].source.ipBlocks[0]: "
       "\"10.0.0.1/8\" has host bits set (did you mean 10.0.0.0/8?)"},
      {"ap bad prefix len",
       std::string(kAp) + "  rules:\n  - from:\n    - source: {notIpBlocks: [\"fd00::/129\"]}\n",
       "spec.rules[0].from[0].source.notIpBlocks[0]: \"fd00::/129\": prefix length must be 0-128"},
      {"ap star in the middle",
       std::string(kAp) + "  rules:\n  - to:\n    - operation: {paths: [\"/a/*/b\"]}\n",
       "spec.rules[0].to[0].operation.paths[0]: \"/a/*/b\" is not a valid value"},
      {"ap unknown source field",
       std::string(kAp) + "  rules:\n  - from:\n    - source: {principal: [x]}\n",
       "f.yaml:7:16: AuthorizationPolicy/default/a: spec.rules[0].from[0].source.principal: "
       "unknown field"},
      {"ap jwt", std::string(kAp) + "  rules:\n  - from:\n    - source: {requestPrincipals: [x]}\n",
       "source.requestPrincipals: is not supported (meshd has no JWT request authentication)"},
      {"ap bad port", std::string(kAp) + "  rules:\n  - to:\n    - operation: {ports: [\"0\"]}\n",
       "spec.rules[0].to[0].operation.ports[0]: \"0\" is not a port number (1-65535)"},
      {"ap empty from", std::string(kAp) + "  rules:\n  - from: []\n",
       "spec.rules[0].from: must not be empty"},
      {"ap wrong type", std::string(kAp) + "  rules: {}\n",
       "f.yaml:5:10: AuthorizationPolicy/default/a: spec.rules: expected a list, got a mapping"},
      {"ap when without values", std::string(kAp) + "  rules:\n  - when: [{key: source.ip}]\n",
       "spec.rules[0].when[0]: needs values or notValues"},
      {"ap when source.ip bad",
       std::string(kAp) + "  rules:\n  - when: [{key: source.ip, values: [\"1*\"]}]\n",
       "spec.rules[0].when[0].values[0]: \"1*\" is not an address or address block"},
      {"ap when port bad",
       std::string(kAp) + "  rules:\n  - when: [{key: destination.port, notValues: [x]}]\n",
       "spec.rules[0].when[0].notValues[0]: \"x\" is not a port number (1-65535)"},
      {"rl bad unit", std::string(kRl) + "  requests: {requestsPerUnit: 10, unit: day}\n",
       "f.yaml:6:41: RateLimitPolicy/default/r: spec.requests.unit: unknown unit \"day\" (use "
       "second, minute or hour)"},
      {"rl zero", std::string(kRl) + "  requests: {requestsPerUnit: 0}\n",
       "spec.requests.requestsPerUnit: requestsPerUnit 0 is out of range [1, 1000000000]"},
      {"rl nothing", std::string(kRl),
       "RateLimitPolicy/default/r: spec: limits nothing: set requests, perClient, routes or "
       "connections"},
      {"rl route without limit", std::string(kRl) + "  routes:\n  - match: {pathPrefix: /api}\n",
       "spec.routes[0]: needs requests and/or perClient"},
      {"rl route bad prefix",
       std::string(kRl) + "  routes:\n  - match: {pathPrefix: api}\n"
                          "    requests: {requestsPerUnit: 1}\n",
       "spec.routes[0].match.pathPrefix: \"api\" must start with '/'"},
      {"rl target kind",
       "apiVersion: meshd.io/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: r}\nspec:\n"
       "  targetRef: {kind: HTTPRoute, name: web}\n  perClient: {requestsPerUnit: 1}\n",
       "spec.targetRef.kind: kind \"HTTPRoute\" is not supported (a RateLimitPolicy targets a "
       "Service)"},
      {"rl connect rate", std::string(kRl) + "  connections: {connectRate: {burst: 3}}\n",
       "spec.connections.connectRate.perSecond: required field is missing"},
  };
  for (const Bad& c : cases) {
    EXPECT_THAT(errorsOf(c.yaml), HasSubstr(c.expected)) << c.name << "\n" << c.yaml;
  }
}

TEST(PolicyResources, OneLinePerErrorEvenForTypedConditionValues) {
  // An empty list of addresses is one problem, not one per reading of the list.
  const std::string errors =
      errorsOf(std::string(kAp) + "  rules:\n  - when: [{key: source.ip, values: []}]\n");
  EXPECT_EQ(std::count(errors.begin(), errors.end(), '\n'), 0) << errors;
  EXPECT_THAT(errors, HasSubstr("spec.rules[0].when[0].values: must not be empty"));
}

TEST(PolicyResources, OneLinePerError) {
  // Three problems, three lines; nothing accepted.
  const std::string yaml = std::string(kAp) +
                           "  action: CUSTOM\n  rules:\n  - when: [{key: bogus, values: [x]}]\n"
                           "    to: [{operation: {hosts: []}}]\n";
  const std::string errors = errorsOf(yaml);
  EXPECT_EQ(std::count(errors.begin(), errors.end(), '\n'), 2) << errors;
}

TEST(PolicyResources, TypedViewsAndDefaults) {
  auto parsed = parse(std::string(kWl) +
                      "  addresses: [10.0.0.1, \"fd00::1\"]\n  node: n1\n"
                      "  netns: /var/run/netns/w\n"
                      "---\n" +
                      kAp +
                      "  selector: {matchLabels: {app: web}}\n"
                      "  rules:\n  - {}\n"
                      "  - from: [{source: {principals: [\"cluster.local/ns/a/sa/b\"]}}]\n"
                      "    to: [{operation: {ports: [8080, \"9090\"], hosts: [Web.Example]}}]\n"
                      "    when: [{key: \"request.headers[X-Id]\", notValues: [\"*\"]}]\n"
                      "---\n" +
                      kRl +
                      "  requests: {requestsPerUnit: 100}\n"
                      "  perClient: {requestsPerUnit: 5, unit: minute, burst: 10}\n"
                      "  routes:\n  - match: {httpRoute: web-api, pathPrefix: /api}\n"
                      "    requests: {requestsPerUnit: 1, unit: hour}\n"
                      "---\n" +
                      kPa + "  mtls: {mode: STRICT}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto w = workloadSpec((*parsed)[0]);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->service_account, "default");
  EXPECT_EQ(w->addresses.size(), 2u);
  EXPECT_EQ(w->netns, "/var/run/netns/w");
  EXPECT_EQ(spiffeId(kDefaultTrustDomain, "default", w->service_account),
            "spiffe://cluster.local/ns/default/sa/default");
  auto a = authorizationPolicySpec((*parsed)[1]);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->action, AuthzAction::kAllow);
  ASSERT_EQ(a->rules.size(), 2u);
  EXPECT_TRUE(a->rules[0].from.empty() && a->rules[0].to.empty() && a->rules[0].when.empty());
  EXPECT_EQ(a->rules[1].to[0].ports, (std::vector<uint16_t>{8080, 9090}));
  EXPECT_EQ(a->rules[1].to[0].hosts, (std::vector<std::string>{"web.example"}));
  EXPECT_EQ(a->rules[1].when[0].key, AuthzConditionKey::kRequestHeader);
  EXPECT_EQ(a->rules[1].when[0].header, "x-id");
  ASSERT_TRUE(a->selector.has_value());
  EXPECT_EQ(*a->selector, (Labels{{"app", "web"}}));
  auto r = rateLimitPolicySpec((*parsed)[2]);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->target_service, "web");
  EXPECT_EQ(r->requests.burst, 100u) << "burst defaults to requestsPerUnit";
  EXPECT_EQ(r->per_client.unit, RateUnit::kMinute);
  EXPECT_EQ(r->per_client.burst, 10u);
  ASSERT_EQ(r->routes.size(), 1u);
  EXPECT_EQ(r->routes[0].http_route, "web-api");
  EXPECT_EQ(r->routes[0].requests.unitNs(), 3'600'000'000'000ULL);
  auto p = peerAuthenticationSpec((*parsed)[3]);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->mode, MtlsMode::kStrict);
  EXPECT_FALSE(p->selector.has_value());
}

TEST(PolicyResources, IpBlocks) {
  auto b = IpBlock::parse("10.1.0.0/16");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->contains(*IpAddress::parse("10.1.200.3")));
  EXPECT_FALSE(b->contains(*IpAddress::parse("10.2.0.1")));
  EXPECT_FALSE(b->contains(*IpAddress::parse("fd00::1")));
  auto one = IpBlock::parse("fd00::1");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->prefix_len, 128);
  EXPECT_TRUE(one->contains(*IpAddress::parse("fd00::1")));
  EXPECT_FALSE(one->contains(*IpAddress::parse("fd00::2")));
  auto odd = IpBlock::parse("10.0.0.128/25");
  ASSERT_TRUE(odd.ok());
  EXPECT_TRUE(odd->contains(*IpAddress::parse("10.0.0.200")));
  EXPECT_FALSE(odd->contains(*IpAddress::parse("10.0.0.127")));
  EXPECT_TRUE(IpBlock::parse("0.0.0.0/0")->contains(*IpAddress::parse("1.2.3.4")));
  EXPECT_FALSE(IpBlock::parse("10.0.0.0/x").ok());
}

constexpr char kService[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
    "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";

ResourceSet setOf(const std::string& yaml) {
  ResourceSet set;
  auto parsed = parse(yaml);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (parsed.ok()) {
    for (auto& r : *parsed) set.upsert(std::move(r));
  }
  return set;
}

TEST(PolicyResources, ConnectRateFromRateLimitPolicyReachesTheFrontend) {
  auto desired = state::computeDesiredState(
      setOf(std::string(kService) + "---\n" + kRl +
            "  connections: {connectRate: {perSecond: 50, burst: 80}, connectRatePerClient: "
            "{perSecond: 5}}\n"));
  ASSERT_TRUE(desired.ok()) << desired.status();
  ASSERT_EQ(desired->frontends.size(), 1u);
  EXPECT_EQ(desired->frontends[0].connect_rate, (state::ConnectRate{50, 80}));
  EXPECT_EQ(desired->frontends[0].client_connect_rate, (state::ConnectRate{5, 5}));
  EXPECT_FALSE(desired->frontends[0].l7) << "connect rates only: the kernel applies them";

  auto l7 = state::computeDesiredState(
      setOf(std::string(kService) + "---\n" + kRl + "  perClient: {requestsPerUnit: 5}\n"));
  ASSERT_TRUE(l7.ok()) << l7.status();
  EXPECT_TRUE(l7->frontends[0].l7) << "request limits need the L7 proxy";
}

TEST(PolicyResources, SetChecksNameBoth) {
  const std::string tp =
      "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: web}\n"
      "spec:\n  targetRef: {kind: Service, name: web}\n"
      "  connectionLimits: {connectRate: {perSecond: 10}}\n";
  const std::string rl = std::string(kRl) + "  connections: {connectRate: {perSecond: 50}}\n";
  ResourceSet set = setOf(tp + "---\n" + rl);
  EXPECT_THAT(std::string(validateSet(set).message()),
              HasSubstr("RateLimitPolicy/default/r: spec.connections.connectRate: Service "
                        "default/web gets a connect rate from both RateLimitPolicy/default/r and "
                        "TrafficPolicy/default/web (f.yaml:6:35): both program the same kernel "
                        "bucket; set it in one of them"));
  // Different rates (connectRate vs connectRatePerClient) do not conflict.
  const std::string rl2 =
      std::string(kRl) + "  connections: {connectRatePerClient: {perSecond: 50}}\n";
  EXPECT_TRUE(validateSet(setOf(tp + "---\n" + rl2)).ok());

  ResourceSet two = setOf(rl + "---\n" +
                          "apiVersion: meshd.io/v1alpha1\nkind: RateLimitPolicy\nmetadata: "
                          "{name: r2}\nspec:\n  targetRef: {kind: Service, name: web}\n"
                          "  perClient: {requestsPerUnit: 1}\n");
  EXPECT_THAT(std::string(validateSet(two).message()),
              HasSubstr("at most one RateLimitPolicy per Service"));

  ResourceSet wls = setOf(std::string(kWl) + "  node: n1\n  addresses: [10.0.0.1]\n---\n" +
                          "apiVersion: meshd.io/v1alpha1\nkind: Workload\nmetadata: {name: w2}\n"
                          "spec: {node: n1, addresses: [10.0.0.2, 10.0.0.1]}\n");
  EXPECT_THAT(std::string(validateSet(wls).message()),
              HasSubstr("Workload/default/w2: spec.addresses[1]: 10.0.0.1 is also an address of "
                        "Workload/default/w"));
}

class RecordingSink : public state::LbStateSink {
 public:
  absl::Status apply(const state::DesiredLbState& d) override {
    last = d;
    ++applies;
    return absl::OkStatus();
  }
  state::DesiredLbState last;
  int applies = 0;
};

// The new kinds go through Model::apply/remove like the others: all or nothing.
TEST(PolicyResources, ModelAppliesAllOrNothing) {
  RecordingSink sink;
  state::Model model(nullptr, sink);
  ASSERT_TRUE(model.load().ok());
  auto good =
      parse(std::string(kService) + "---\n" + kWl + "  node: n1\n  addresses: [10.0.0.1]\n---\n" +
            kRl + "  connections: {connectRate: {perSecond: 7}}\n");
  ASSERT_TRUE(good.ok()) << good.status();
  auto applied = model.apply(*good, false);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(model.resources().size(), 3u);
  EXPECT_EQ(sink.last.frontends.at(0).connect_rate, (state::ConnectRate{7, 7}));

  // A batch with one bad policy (made without positions, as the API could send it): nothing
  // of it is applied.
  auto bad = resourceFromJson(nlohmann::json::parse(R"({
      "apiVersion": "meshd.io/v1alpha1", "kind": "AuthorizationPolicy",
      "metadata": {"name": "x"}, "spec": {"action": "AUDIT"}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("AuthorizationPolicy/default/x: spec.action: action AUDIT is not "
                        "supported by meshd"));
  // A conflicting TrafficPolicy in a batch with a valid Workload: refused whole.
  auto conflict = parse(
      "apiVersion: meshd.io/v1alpha1\nkind: Workload\nmetadata: {name: w2}\n"
      "spec: {node: n1, addresses: [10.0.0.2]}\n---\n"
      "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: "
      "web}\nspec:\n  targetRef: {kind: Service, name: web}\n"
      "  connectionLimits: {connectRate: {perSecond: 10}}\n");
  ASSERT_TRUE(conflict.ok()) << conflict.status();
  const int applies = sink.applies;
  auto refused = model.apply(*conflict, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("Service default/web gets a connect rate from both "
                        "RateLimitPolicy/default/r and TrafficPolicy/default/web"));
  EXPECT_EQ(model.resources().size(), 3u);
  EXPECT_EQ(sink.applies, applies);

  // Deleting the RateLimitPolicy gives the kernel bucket back.
  auto removed = model.remove({ResourceKey{kKindRateLimitPolicy, "default", "r"}});
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(sink.last.frontends.at(0).connect_rate, state::ConnectRate{});
}

TEST(NodeResource, ViewAndFirstInternalIp) {
  auto parsed = parse(
      "apiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nstatus:\n  addresses:\n"
      "  - {type: Hostname, address: node-2}\n  - {type: ExternalIP, address: 203.0.113.7}\n"
      "  - {type: InternalIP, address: 192.168.10.2}\n"
      "  - {type: InternalIP, address: 192.168.10.3}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ((*parsed)[0].key.toString(), "Node/default/node-2");
  auto spec = nodeSpec((*parsed)[0]);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->addresses.size(), 4u);
  EXPECT_EQ(spec->addresses[0].type, NodeAddress::Type::kHostname);
  ASSERT_TRUE(spec->internal_ip.has_value());
  EXPECT_EQ(spec->internal_ip->toString(), "192.168.10.2");
  auto only_host = parse(
      "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus:\n  addresses:\n"
      "  - {type: Hostname, address: n}\n");
  ASSERT_TRUE(only_host.ok()) << only_host.status();
  EXPECT_FALSE(nodeSpec((*only_host)[0])->internal_ip.has_value());
}

TEST(NodeResource, RejectedWithFileLineAndField) {
  const std::string head = "apiVersion: v1\nkind: Node\nmetadata: {name: n}\n";
  const Bad cases[] = {
      {"no status", head, "Node/default/n: status: required field is missing"},
      {"no addresses", head + "status:\n  addresses: []\n",
       "f.yaml:5:14: Node/default/n: status.addresses: must list at least one address"},
      {"bad type", head + "status:\n  addresses:\n  - {type: internalip, address: 10.0.0.1}\n",
       "status.addresses[0].type: unknown address type \"internalip\" (use InternalIP, "
       "ExternalIP or Hostname)"},
      {"bad ip", head + "status:\n  addresses:\n  - {type: InternalIP, address: 10.0.0.300}\n",
       "f.yaml:6:33: Node/default/n: status.addresses[0].address: \"10.0.0.300\" is not an "
       "IPv4 or IPv6 address"},
      {"bad hostname", head + "status:\n  addresses:\n  - {type: Hostname, address: Node_1}\n",
       "status.addresses[0].address: \"Node_1\" is not a valid hostname"},
      {"unknown status field",
       head + "status:\n  addresses:\n  - {type: InternalIP, address: 10.0.0.1}\n"
              "  conditions: []\n",
       "status.conditions: unknown field"},
      {"spec", head + "spec: {podCIDR: 10.0.0.0/24}\n", "Node/default/n: spec: unknown field"},
      {"namespaced",
       "apiVersion: v1\nkind: Node\nmetadata: {name: n, namespace: x}\nstatus:\n  addresses:\n"
       "  - {type: InternalIP, address: 10.0.0.1}\n",
       "metadata.namespace: a Node is cluster-scoped"},
      {"wrong apiVersion",
       "apiVersion: meshd.io/v1alpha1\nkind: Node\nmetadata: {name: n}\nstatus:\n  addresses:\n"
       "  - {type: InternalIP, address: 10.0.0.1}\n",
       "unknown apiVersion \"meshd.io/v1alpha1\" for Node (use v1)"},
  };
  for (const Bad& c : cases) {
    EXPECT_THAT(errorsOf(c.yaml), HasSubstr(c.expected)) << c.name;
  }
}

}  // namespace
}  // namespace meshd::resources
