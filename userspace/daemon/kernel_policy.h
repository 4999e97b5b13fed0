// The kernel side of PeerAuthentication STRICT and of L4 AuthorizationPolicy for this node
// (docs/design/0004-identity-mtls.md, "Kernel enforcement"): computed from the applied
// resources (computeKernelPolicy, pure: no kernel, testable) and programmed after every
// change (KernelPolicySync: PolicyMaps::replaceAll, the STRICT links on the workloads' veths).
//
// Only Workloads of this node (DaemonOptions::node_name) are programmed:
//  - identities: each local Workload with spec.cgroup → its cgroup id → the identity id of its
//    (namespace, serviceAccount) (IdentityIds: stable while meshd runs);
//  - STRICT: (address, port) of each local Workload whose effective mTLS mode is STRICT
//    (port 0 = every port when the whole workload is STRICT and no port is exempt);
//  - authorization: each address of a local Workload that backs a TCP service (a backend of
//    the desired state) gets a mesh_authz_dst entry when AuthorizationPolicies govern it
//    (rules per local source identity and backend port, from policy::evaluate with
//    http=false) or when it is STRICT (strict_pass, so authorized same-node connects pass).
//    Workloads governed by a policy that depends on the source address (ipBlocks, source.ip)
//    are left ungoverned in the kernel.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "datapath/datapath.h"
#include "datapath/policy_maps.h"
#include "nlohmann/json.hpp"
#include "resources/resource_set.h"
#include "state/lb_state.h"
#include "telemetry/meshd_metrics.h"

namespace meshd::daemon {

// Identity ids (> 0) per (namespace, serviceAccount): assigned on first sight, never reused
// while meshd runs, so a recomputation keeps every known identity's id.
class IdentityIds {
 public:
  uint32_t idOf(std::string_view ns, std::string_view service_account);
  // Claims `id` for the identity when neither is taken yet (a restarted meshd keeps the ids
  // the maps hold). False when it could not.
  bool seed(std::string_view ns, std::string_view service_account, uint32_t id);

 private:
  absl::flat_hash_map<std::pair<std::string, std::string>, uint32_t> ids_;
  absl::flat_hash_set<uint32_t> taken_;
  uint32_t next_ = 1;
};

// cgroup path (spec.cgroup) → cgroup id; an error names what is wrong.
using CgroupIdResolver = std::function<absl::StatusOr<uint64_t>(const std::string& path)>;

// The cgroup v2 id of `path` (its directory's inode): absolute paths under the cgroup2 mount
// as they are, other paths relative to the mount. NotFound / FailedPrecondition naming the
// directory.
absl::StatusOr<uint64_t> cgroupIdOfPath(const std::string& cgroup2_mount, const std::string& path);

struct KernelPolicyInput {
  const resources::ResourceSet* resources = nullptr;
  const state::DesiredLbState* desired = nullptr;
  std::string node_name;  // "" = no kernel policy
  std::string trust_domain = "cluster.local";
  CgroupIdResolver cgroup_id;
};

struct StrictWorkload {
  std::string workload;  // "ns/name"
  std::string netns;     // spec.netns ("" = unknown: STRICT cannot be attached)
};

struct KernelPolicyPlan {
  datapath::KernelPolicy policy;
  // Local workloads with STRICT entries: their veth's host end needs the STRICT program.
  std::vector<StrictWorkload> strict_workloads;
  std::vector<std::string> governed;    // "ns/name" of workloads with governed destinations
  std::vector<std::string> meshd_only;  // "ns/name" governed by address-dependent policies
  std::vector<std::string> warnings;    // each names the workload
  size_t local_workloads = 0;
};

// Pure: the kernel policy for `in.node_name` (empty plan when it is ""). Fails only when the
// resources do not compile (they were validated before).
absl::StatusOr<KernelPolicyPlan> computeKernelPolicy(const KernelPolicyInput& in, IdentityIds& ids);

// Programs the plan: the four policy maps (replaceAll) and the STRICT tcx links on the host
// ends of the STRICT workloads' veths (attached where needed, detached where no longer).
// Runs on the updater thread; status()/strictSamples() from any thread.
class KernelPolicySync {
 public:
  // `datapath_mu` guards the Datapath (shared with the daemon's inspection calls).
  KernelPolicySync(datapath::Datapath& datapath, absl::Mutex& datapath_mu, std::string node_name,
                   std::string trust_domain, std::string cgroup2_mount);

  // Recomputes and programs. Errors are logged (naming the workload) and kept for status();
  // the returned status is the first of them (the caller does not fail the apply on it: the
  // resources are valid, the kernel could not be programmed as asked).
  absl::Status sync(const resources::ResourceSet& resources, const state::DesiredLbState& desired);

  // Before the load balancing state moves from `current` to `next` (state::ConfigObserver):
  // programs the maps for `resources` with the backends of both, so no backend is reachable
  // before its authorization rules and STRICT pass exist (a connect racing the change is
  // decided by the new policy). Maps only; sync() follows with the exact state and the links.
  void prepare(const resources::ResourceSet& resources, const state::DesiredLbState& current,
               const state::DesiredLbState& next);

  // `meshctl status` "policy" section.
  nlohmann::ordered_json status() const;
  // meshd_strict_dropped_syns_total samples; NodeCounters for status.
  std::vector<telemetry::StrictSample> strictSamples() const;

 private:
  absl::StatusOr<KernelPolicyPlan> computePlan(const resources::ResourceSet& resources,
                                               const state::DesiredLbState& desired);

  datapath::Datapath& datapath_;
  absl::Mutex& datapath_mu_;
  const std::string node_name_, trust_domain_, cgroup2_mount_;
  IdentityIds ids_;                                       // updater thread only
  absl::flat_hash_map<std::string, int> strict_ifindex_;  // "ns/name" -> its veth (updater)
  bool seeded_ = false;
  bool warned_no_node_ = false;

  mutable absl::Mutex mu_;
  std::vector<std::string> interfaces_ ABSL_GUARDED_BY(mu_);  // "ifindex (ns/name)"
  std::vector<std::string> governed_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> meshd_only_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> warnings_ ABSL_GUARDED_BY(mu_);
  size_t identities_ ABSL_GUARDED_BY(mu_) = 0;
  size_t strict_entries_ ABSL_GUARDED_BY(mu_) = 0;
  size_t local_workloads_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::string state_ ABSL_GUARDED_BY(mu_) = "not computed yet";
};

}  // namespace meshd::daemon
