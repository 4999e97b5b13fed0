// PolicyMaps: the kernel side of PeerAuthentication STRICT and of L4
// AuthorizationPolicy for same-node pairs (docs/design/0004-identity-mtls.md,
// "Kernel enforcement: STRICT and L4 authorization"). No resource parsing
// here: the caller computes the entries from PeerAuthentication,
// AuthorizationPolicy and the local workloads.
//
//   mesh_strict       (address, port|0) of local workloads under STRICT
//   mesh_cg_identity  cgroup id of a local workload -> identity id
//   mesh_authz_dst    local workload address -> governed? default verdict, STRICT pass
//   mesh_authz_l4     (identity id, backend address, port) -> allow/deny
//
// The map fds are borrowed from the Datapath that owns them.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/net.h"
#include "mesh_abi.h"

namespace meshd::datapath {

enum class AuthzVerdict : uint8_t {
  kDeny = MESH_AUTHZ_DENY,
  kAllow = MESH_AUTHZ_ALLOW,
};

// A STRICT (address, port): TCP SYNs to it that meshd did not send are
// dropped at the workload's veth. port is host order; 0 = every port.
struct StrictEntry {
  IpAddress addr;
  uint16_t port = 0;
  friend bool operator==(const StrictEntry&, const StrictEntry&) = default;
};

// A local workload address the connect hook authorizes connects to.
struct AuthzDst {
  IpAddress addr;
  // Policy applies: the (identity, address, port) rule decides, else
  // default_verdict. Not governed: allowed (the entry may exist for
  // strict_pass alone).
  bool governed = false;
  AuthzVerdict default_verdict = AuthzVerdict::kAllow;
  // The workload has STRICT ports: allowed same-node connects get a STRICT
  // pass. Needed for every local STRICT workload that backs a service.
  bool strict_pass = false;
  friend bool operator==(const AuthzDst&, const AuthzDst&) = default;
};

// One L4 rule: may the workloads of identity `src_id` connect to addr:port?
// src_id 0 is "no identity" (a cgroup without mesh_cg_identity entry). port
// is host order and exact (the backend's port; no wildcard).
struct AuthzRule {
  uint32_t src_id = 0;
  IpAddress addr;
  uint16_t port = 0;
  AuthzVerdict verdict = AuthzVerdict::kDeny;
  friend bool operator==(const AuthzRule&, const AuthzRule&) = default;
};

// Everything the four maps should hold (PolicyMaps::replaceAll).
struct KernelPolicy {
  std::vector<StrictEntry> strict;
  std::vector<std::pair<uint64_t, uint32_t>> identities;  // cgroup id -> identity id (> 0)
  std::vector<AuthzDst> dsts;
  std::vector<AuthzRule> rules;
};

struct StrictCounter {
  StrictEntry entry;
  uint64_t syn_dropped = 0;  // summed over CPUs
};

struct PolicyCounters {
  std::vector<StrictCounter> strict;  // one per mesh_strict entry
  // Node-wide (mesh_stats).
  uint64_t strict_dropped = 0;      // plaintext SYNs dropped (sum of the entries' counts)
  uint64_t strict_unparsed = 0;     // IPv6 packets with too long a header chain, dropped
  uint64_t strict_fast_pass = 0;    // SYNs of authorized same-node connects let through
  uint64_t strict_pass_failed = 0;  // mesh_strict_pass could not be written (full?)
  uint64_t authz_denied = 0;        // connects refused by L4 authorization
  uint64_t authz_skipped = 0;       // reroutes that skipped a backend the client may not reach
};

struct PolicyMapFds {
  int strict = -1;       // PERCPU_HASH mesh_strict_key -> __u64
  int cg_identity = -1;  // HASH __u64 -> __u32
  int authz_dst = -1;    // HASH mesh_authz_dst_key -> mesh_authz_dst
  int authz_l4 = -1;     // HASH mesh_authz_l4_key -> __u8
  int stats = -1;        // PERCPU_ARRAY mesh_stats
};

class PolicyMaps {
 public:
  explicit PolicyMaps(const PolicyMapFds& fds) : fds_(fds) {}

  // Makes the four maps hold exactly `desired`, writing only differences
  // (what the maps hold is read back, so adopted pins work the same). The
  // whole of `desired` is validated first: InvalidArgument naming the entry
  // (unset address, identity id 0, two different values for one key).
  // Ordered so a concurrent connect never finds a governed destination
  // without its rules: identities, rules, destinations and STRICT entries are
  // added, then stale destinations, rules, identities and STRICT entries
  // removed. STRICT entries that stay are not rewritten (their counters
  // survive).
  absl::Status replaceAll(const KernelPolicy& desired);

  // Single-entry edits (same validation).
  absl::Status setStrict(const StrictEntry& entry, bool on);
  // id 0 removes the cgroup's entry.
  absl::Status setWorkloadIdentity(uint64_t cgroup_id, uint32_t id);
  absl::Status setAuthzDst(const AuthzDst& dst);
  absl::Status removeAuthzDst(const IpAddress& addr);
  absl::Status setAuthzRule(const AuthzRule& rule);
  absl::Status removeAuthzRule(uint32_t src_id, const IpAddress& addr, uint16_t port);

  // What the maps hold now.
  absl::StatusOr<KernelPolicy> read() const;
  absl::StatusOr<PolicyCounters> counters() const;

 private:
  PolicyMapFds fds_;
};

// ABI keys and values (exposed for tests).
absl::StatusOr<mesh_strict_key> strictKeyOf(const StrictEntry& e);
absl::StatusOr<mesh_authz_dst_key> authzDstKeyOf(const IpAddress& addr);
absl::StatusOr<mesh_authz_l4_key> authzRuleKeyOf(uint32_t src_id, const IpAddress& addr,
                                                 uint16_t port);

}  // namespace meshd::datapath
