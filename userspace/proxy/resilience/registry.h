// The node-wide resilience state of each cluster, kept across config swaps: the daemon asks
// the registry for every cluster of a new snapshot and stores the answer next to it, so the
// workers reach it through the snapshot they pinned.
//
//   build snapshot N+1 (control thread)            workers
//   registry.attach("ns/svc:port", policy, eps) -> ClusterStatePtr (kept by snapshot N+1)
//     breaker:  the same CircuitBreaker as in N (re-configure()d): counts in flight and the
//               guards held by exchanges on snapshot N stay valid and keep counting
//     outlier:  the same L7Outlier when endpoints and settings are unchanged; else a new one
//               carrying the old state by address (results recorded into N's copy meanwhile
//               are lost — a few per swap at most)
//   registry.retain(names of N+1)                  clusters gone from the config forgotten
//
// Not thread-safe: the control thread (the one that builds snapshots) calls it. Nothing here
// runs per request.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "proxy/resilience/breaker.h"
#include "proxy/resilience/outlier.h"
#include "state/lb_state.h"

namespace meshd::proxy::resilience {

struct ClusterState {
  std::shared_ptr<CircuitBreaker> breaker;  // never null
  std::shared_ptr<L7Outlier> outlier;       // never null; indexed like the endpoints given
};
using ClusterStatePtr = std::shared_ptr<const ClusterState>;

class ClusterRegistry {
 public:
  // The state of cluster `name` for a snapshot whose cluster has `endpoints` (in the order of
  // routing::Cluster::endpoints) and `policy`.
  ClusterStatePtr attach(std::string_view name, const state::RequestPolicy& policy,
                         absl::Span<const SocketAddress> endpoints);
  // Forgets every cluster not named in `names` (call after attaching a snapshot's clusters).
  void retain(const absl::flat_hash_set<std::string>& names);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    ClusterStatePtr state;
    state::L7OutlierSettings settings;
    std::vector<SocketAddress> endpoints;
  };
  absl::flat_hash_map<std::string, Entry> entries_;
};

}  // namespace meshd::proxy::resilience
