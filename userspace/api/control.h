// What the API needs from the rest of meshd. The daemon implements it on top
// of the state model's one updater (every call below runs there), the
// reconciler and the datapath; tests implement it with fakes. The API layer
// (service.h) only translates requests and validates them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "api/views.h"
#include "nlohmann/json.hpp"
#include "resources/resource.h"

namespace meshd::api {

struct AppliedResource {
  resources::ResourceKey key;
  std::string action;  // created | configured | unchanged
};

class MeshdControl {
 public:
  virtual ~MeshdControl() = default;

  // Applies parsed, validated resources atomically (all or nothing). With
  // dry_run nothing changes but the actions are reported as if it did.
  virtual absl::StatusOr<std::vector<AppliedResource>> apply(
      std::vector<resources::Resource> resources, bool dry_run) = 0;
  // Deletes all of `keys` or none (NotFound naming the missing ones).
  virtual absl::StatusOr<std::vector<resources::ResourceKey>> remove(
      std::vector<resources::ResourceKey> keys) = 0;
  // The reconciler's view of the maps with live counters.
  virtual absl::StatusOr<FrontendViews> frontends() = 0;
  // The L7 proxy's request-level state per cluster (empty without the proxy).
  virtual absl::StatusOr<L7ClusterViews> l7Clusters() { return L7ClusterViews{}; }
  // Every applied resource, sorted by key.
  virtual absl::StatusOr<std::vector<resources::Resource>> resources() = 0;
  // meshd's state for `meshctl status` (a JSON object).
  virtual absl::StatusOr<nlohmann::ordered_json> status() = 0;
  // "maps", "progs" or "dump" (with `map`): JSON from the datapath.
  virtual absl::StatusOr<nlohmann::ordered_json> bpf(std::string_view what,
                                                     std::string_view map) = 0;
};

}  // namespace meshd::api
