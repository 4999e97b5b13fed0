// daemon::computeKernelPolicy without a kernel: which identities, STRICT entries,
// authorization destinations and rules the applied resources give this node
// (docs/design/0004-identity-mtls.md, "Kernel enforcement"). Table cases: ALLOW by principal,
// DENY by port, no policy = ungoverned, STRICT workload-wide and per port, missing cgroup,
// address-dependent policies, another node's workloads.
#include "daemon/kernel_policy.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "resources/resource.h"
#include "resources/resource_set.h"
#include "state/desired_state.h"

namespace meshd::daemon {
namespace {

using datapath::AuthzDst;
using datapath::AuthzRule;
using datapath::AuthzVerdict;
using datapath::StrictEntry;

IpAddress ip(std::string_view s) { return *IpAddress::parse(s); }

// Node n1: web-0 (sa web, cgroup /web) and cli-0 (sa cli, cgroup /cli) and bad-0 (sa bad,
// cgroup /bad); db-0 (10.0.0.20, cgroup /db) backs Service db (80 -> 5432, 81 -> 6432).
// Node n2: far-0 (10.0.1.1), backs db too.
constexpr char kBase[] = R"(apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.0.0.10], node: n1, cgroup: /web, netns: /run/netns/web}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: cli-0, namespace: tools, labels: {app: cli}}
spec: {serviceAccount: cli, addresses: [10.0.0.11], node: n1, cgroup: /cli}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec: {serviceAccount: db, addresses: [10.0.0.20], node: n1, cgroup: /db, netns: /run/netns/db}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: far-0, namespace: shop, labels: {app: db}}
spec: {serviceAccount: db, addresses: [10.0.1.1], node: n2, cgroup: /far}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: pg, port: 80, targetPort: 5432}, {name: bouncer, port: 81, targetPort: 6432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: shop
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
  - addresses: [10.0.0.20]
  - addresses: [10.0.1.1]
ports: [{name: pg, port: 5432}, {name: bouncer, port: 6432}]
)";

struct Computed {
  absl::StatusOr<KernelPolicyPlan> plan;
  uint32_t web_id = 0, cli_id = 0, db_id = 0;
};

Computed compute(const std::string& extra, std::string node = "n1") {
  Computed out;
  auto parsed = resources::parseFiles({resources::SourceFile{
      "t.yaml", extra.empty() ? std::string(kBase) : absl::StrCat(kBase, "---\n", extra)}});
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) {
    out.plan = parsed.status();
    return out;
  }
  resources::ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  EXPECT_TRUE(resources::validateSet(set).ok()) << resources::validateSet(set);
  auto desired = state::computeDesiredState(set);
  EXPECT_TRUE(desired.ok()) << desired.status();
  IdentityIds ids;
  // Fixed ids: the order identities are first seen in is not the test's concern.
  out.web_id = ids.idOf("shop", "web");
  out.cli_id = ids.idOf("tools", "cli");
  out.db_id = ids.idOf("shop", "db");
  KernelPolicyInput in;
  in.resources = &set;
  in.desired = &*desired;
  in.node_name = std::move(node);
  in.cgroup_id = [](const std::string& path) -> absl::StatusOr<uint64_t> {
    if (path == "/web") return 100;
    if (path == "/cli") return 101;
    if (path == "/db") return 102;
    if (path == "/far") return 103;
    return absl::NotFoundError(absl::StrCat("cgroup directory ", path, ": No such file"));
  };
  out.plan = computeKernelPolicy(in, ids);
  return out;
}

std::vector<AuthzRule> rulesFor(const KernelPolicyPlan& p, uint32_t src) {
  std::vector<AuthzRule> out;
  for (const AuthzRule& r : p.policy.rules) {
    if (r.src_id == src) out.push_back(r);
  }
  return out;
}

TEST(KernelPolicyTest, NoPolicyMeansUngovernedAndNoStrict) {
  Computed c = compute("");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  const KernelPolicyPlan& p = *c.plan;
  EXPECT_EQ(p.local_workloads, 3u);  // far-0 is on n2
  // Every local workload with a cgroup has its identity; n2's far-0 is not programmed.
  EXPECT_EQ(p.policy.identities, (std::vector<std::pair<uint64_t, uint32_t>>{
                                     {100, c.web_id}, {101, c.cli_id}, {102, c.db_id}}));
  EXPECT_TRUE(p.policy.strict.empty());
  EXPECT_TRUE(p.policy.dsts.empty());
  EXPECT_TRUE(p.policy.rules.empty());
  EXPECT_TRUE(p.governed.empty());
  EXPECT_TRUE(p.warnings.empty());
}

TEST(KernelPolicyTest, NoNodeNameMeansNoKernelPolicy) {
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: meshd-system}
spec: {mtls: {mode: STRICT}}
)",
                       "");
  ASSERT_TRUE(c.plan.ok());
  EXPECT_EQ(c.plan->local_workloads, 0u);
  EXPECT_TRUE(c.plan->policy.strict.empty());
  EXPECT_TRUE(c.plan->policy.identities.empty());
}

TEST(KernelPolicyTest, AllowByPrincipal) {
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
)");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  const KernelPolicyPlan& p = *c.plan;
  // db-0 is governed, not STRICT: unauthenticated peers are denied by default.
  EXPECT_EQ(p.policy.dsts,
            (std::vector<AuthzDst>{{ip("10.0.0.20"), true, AuthzVerdict::kDeny, false}}));
  EXPECT_EQ(p.governed, std::vector<std::string>{"shop/db-0"});
  const IpAddress db = ip("10.0.0.20");
  EXPECT_EQ(rulesFor(p, c.web_id),
            (std::vector<AuthzRule>{{c.web_id, db, 5432, AuthzVerdict::kAllow},
                                    {c.web_id, db, 6432, AuthzVerdict::kAllow}}));
  EXPECT_EQ(rulesFor(p, c.cli_id),
            (std::vector<AuthzRule>{{c.cli_id, db, 5432, AuthzVerdict::kDeny},
                                    {c.cli_id, db, 6432, AuthzVerdict::kDeny}}));
  EXPECT_EQ(rulesFor(p, c.db_id).size(), 2u);
  EXPECT_TRUE(rulesFor(p, 0).empty());  // the default verdict covers id 0
  // The other node's backend is not this node's to govern.
  for (const AuthzDst& d : p.policy.dsts) EXPECT_NE(d.addr, ip("10.0.1.1"));
}

TEST(KernelPolicyTest, DenyByPortAndNamespaceKnownFromTheIdentity) {
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-bouncer-from-tools, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules: [{from: [{source: {namespaces: [tools]}}], to: [{operation: {ports: ["6432"]}}]}]
)");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  const KernelPolicyPlan& p = *c.plan;
  const IpAddress db = ip("10.0.0.20");
  // DENY only: everyone else is allowed, including unauthenticated peers.
  EXPECT_EQ(p.policy.dsts, (std::vector<AuthzDst>{{db, true, AuthzVerdict::kAllow, false}}));
  EXPECT_EQ(rulesFor(p, c.cli_id),
            (std::vector<AuthzRule>{{c.cli_id, db, 5432, AuthzVerdict::kAllow},
                                    {c.cli_id, db, 6432, AuthzVerdict::kDeny}}));
  EXPECT_EQ(rulesFor(p, c.web_id),
            (std::vector<AuthzRule>{{c.web_id, db, 5432, AuthzVerdict::kAllow},
                                    {c.web_id, db, 6432, AuthzVerdict::kAllow}}));
}

TEST(KernelPolicyTest, PortDependentUnauthenticatedVerdictGetsIdZeroRules) {
  // ALLOW anyone on 5432 only: unauthenticated peers are allowed there, denied on 6432.
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: pg-only, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules: [{to: [{operation: {ports: ["5432"]}}]}]
)");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  const IpAddress db = ip("10.0.0.20");
  EXPECT_EQ(c.plan->policy.dsts, (std::vector<AuthzDst>{{db, true, AuthzVerdict::kDeny, false}}));
  EXPECT_EQ(rulesFor(*c.plan, 0), (std::vector<AuthzRule>{{0, db, 5432, AuthzVerdict::kAllow}}));
}

TEST(KernelPolicyTest, StrictWorkloadWide) {
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: STRICT}
)");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  const KernelPolicyPlan& p = *c.plan;
  const IpAddress db = ip("10.0.0.20");
  EXPECT_EQ(p.policy.strict, (std::vector<StrictEntry>{{db, 0}}));
  ASSERT_EQ(p.strict_workloads.size(), 1u);
  EXPECT_EQ(p.strict_workloads[0].workload, "shop/db-0");
  EXPECT_EQ(p.strict_workloads[0].netns, "/run/netns/db");
  // Backs a service: an ungoverned destination with a STRICT pass, no rules.
  EXPECT_EQ(p.policy.dsts, (std::vector<AuthzDst>{{db, false, AuthzVerdict::kAllow, true}}));
  EXPECT_TRUE(p.policy.rules.empty());
  EXPECT_TRUE(p.governed.empty());
}

TEST(KernelPolicyTest, StrictPerPortAndMeshWideWithAnExemptPort) {
  Computed per_port = compute(R"(apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  portLevelMtls: {"6432": {mode: STRICT}}
)");
  ASSERT_TRUE(per_port.plan.ok()) << per_port.plan.status();
  const IpAddress db = ip("10.0.0.20");
  EXPECT_EQ(per_port.plan->policy.strict, (std::vector<StrictEntry>{{db, 6432}}));
  EXPECT_EQ(per_port.plan->policy.dsts,
            (std::vector<AuthzDst>{{db, false, AuthzVerdict::kAllow, true}}));

  // Mesh-wide STRICT, db exempts 5432: a port-0 entry cannot say so; its STRICT service
  // ports are listed (6432) and every other local workload is STRICT on every port.
  Computed mesh = compute(R"(apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: meshd-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  portLevelMtls: {"5432": {mode: PERMISSIVE}}
)");
  ASSERT_TRUE(mesh.plan.ok()) << mesh.plan.status();
  std::vector<StrictEntry> strict = mesh.plan->policy.strict;
  std::sort(strict.begin(), strict.end(), [](const StrictEntry& a, const StrictEntry& b) {
    return std::tie(a.addr, a.port) < std::tie(b.addr, b.port);
  });
  EXPECT_EQ(strict,
            (std::vector<StrictEntry>{{ip("10.0.0.10"), 0}, {ip("10.0.0.11"), 0}, {db, 6432}}));
  ASSERT_EQ(mesh.plan->warnings.size(), 1u);
  EXPECT_NE(mesh.plan->warnings[0].find("shop/db-0"), std::string::npos);
  // Only db backs a service: the only destination entry.
  EXPECT_EQ(mesh.plan->policy.dsts,
            (std::vector<AuthzDst>{{db, false, AuthzVerdict::kAllow, true}}));
}

TEST(KernelPolicyTest, StrictAndGovernedTogether) {
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: shop, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
)");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  EXPECT_EQ(c.plan->policy.dsts,
            (std::vector<AuthzDst>{{ip("10.0.0.20"), true, AuthzVerdict::kDeny, true}}));
  EXPECT_EQ(c.plan->strict_workloads.size(), 2u);  // web-0 and db-0 (namespace shop)
}

TEST(KernelPolicyTest, MissingCgroupIsAWarningNamingTheWorkload) {
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: gone-0, namespace: tools}
spec: {serviceAccount: gone, addresses: [10.0.0.30], node: n1, cgroup: /gone}
---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
)");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  ASSERT_EQ(c.plan->warnings.size(), 1u);
  EXPECT_NE(c.plan->warnings[0].find("tools/gone-0"), std::string::npos) << c.plan->warnings[0];
  EXPECT_NE(c.plan->warnings[0].find("/gone"), std::string::npos);
  // No cgroup, no identity entry and no rules for it: it is unauthenticated (default deny).
  EXPECT_EQ(c.plan->policy.identities.size(), 3u);
  for (const AuthzRule& r : c.plan->policy.rules) {
    EXPECT_TRUE(r.src_id == c.web_id || r.src_id == c.cli_id || r.src_id == c.db_id);
  }
}

TEST(KernelPolicyTest, SourceAddressPoliciesAreLeftToMeshd) {
  Computed c = compute(R"(apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-from-net, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/24]}}]}]
)");
  ASSERT_TRUE(c.plan.ok()) << c.plan.status();
  EXPECT_TRUE(c.plan->policy.dsts.empty());
  EXPECT_TRUE(c.plan->policy.rules.empty());
  EXPECT_EQ(c.plan->meshd_only, std::vector<std::string>{"shop/db-0"});
  ASSERT_EQ(c.plan->warnings.size(), 1u);
  EXPECT_NE(c.plan->warnings[0].find("shop/db-0"), std::string::npos);
}

TEST(KernelPolicyTest, IdentityIdsAreStableAndSeedable) {
  IdentityIds ids;
  EXPECT_TRUE(ids.seed("shop", "db", 7));
  EXPECT_FALSE(ids.seed("shop", "web", 7));  // taken
  const uint32_t web = ids.idOf("shop", "web");
  EXPECT_NE(web, 7u);
  EXPECT_NE(web, 0u);
  EXPECT_EQ(ids.idOf("shop", "db"), 7u);
  EXPECT_EQ(ids.idOf("shop", "web"), web);
  EXPECT_NE(ids.idOf("shop", "other"), web);
}

TEST(KernelPolicyTest, CgroupIdOfAMissingDirectoryNamesIt) {
  auto id = cgroupIdOfPath("/sys/fs/cgroup", "/no/such/meshd-test-cgroup");
  ASSERT_FALSE(id.ok());
  EXPECT_NE(id.status().message().find("/sys/fs/cgroup/no/such/meshd-test-cgroup"),
            std::string::npos)
      << id.status();
}

}  // namespace
}  // namespace meshd::daemon
