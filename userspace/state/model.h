// The state model: the one in-memory truth inside meshd. It holds the applied
// resources and the desired load-balancing state computed from them, and
// changes both atomically: a batch is validated whole, programmed into the
// datapath (LbStateSink), persisted (Store), and only then swapped in.
//
// Not thread-safe: only the Updater thread calls it (see updater.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "resources/resource.h"
#include "resources/resource_set.h"
#include "state/desired_state.h"
#include "state/lb_state.h"
#include "state/lb_state_sink.h"
#include "store/store.h"

namespace meshd::state {

// Told of every state the datapath is about to be programmed with (the L7 proxy
// builds its routing snapshot here, so it is in place before the kernel starts
// redirecting a service to it), and of the state restored when programming failed.
// Runs on the updater thread.
class ConfigObserver {
 public:
  virtual ~ConfigObserver() = default;
  virtual void willApply(const ResourceSet& resources, const DesiredLbState& desired) = 0;
};

class Model {
 public:
  // `store` may be null (no persistence); both must outlive the Model.
  // `mesh`: this node's settings that shape the desired state (computeDesiredState).
  Model(store::Store* store, LbStateSink& sink, MeshSettings mesh = {});

  // Loads the store (if any), computes the desired state and applies it to the
  // sink. Fails when the store is unreadable or corrupt (resources stay empty),
  // or when the sink fails (resources and desired state are then still taken
  // from the store, so nothing is lost: call resync() to retry the sink).
  absl::Status load();

  // Applies desired() to the sink again (e.g. after load() failed to).
  absl::Status resync();

  struct ApplyResult {
    resources::ResourceKey key;
    std::string action;  // created | configured | unchanged
  };

  // Creates or replaces the batch's resources, all or nothing:
  //  1. every resource validates and no key appears twice in the batch;
  //  2. the candidate set (current + batch) passes resources::validateSet;
  //  3. desired = computeDesiredState(candidate); with dry_run, stop here;
  //  4. sink.apply(desired) (skipped if desired is unchanged);
  //  5. store->save(candidate) (skipped if no object changed).
  // A failure in 1-2 is InvalidArgument with one line per problem; a failure
  // in 4 or 5 re-applies the previous desired state to the sink (best effort)
  // and returns the error. The model changes only when everything succeeded.
  // Results are in batch order.
  absl::StatusOr<std::vector<ApplyResult>> apply(std::vector<resources::Resource> batch,
                                                 bool dry_run);

  // Deletes the keys, all or nothing (same steps 3-5 as apply). Unknown keys
  // fail with NotFound naming every one of them. Returns the deleted keys
  // (duplicates in `keys` removed, in request order).
  absl::StatusOr<std::vector<resources::ResourceKey>> remove(
      const std::vector<resources::ResourceKey>& keys);

  // `observer` (may be null) must outlive the Model; set it before load().
  void setObserver(ConfigObserver* observer) { observer_ = observer; }

  const ResourceSet& resources() const { return resources_; }
  const DesiredLbState& desired() const { return desired_; }
  // Increments on every change that took effect (apply, remove, load).
  uint64_t generation() const { return generation_; }

 private:
  // Steps 4-5 and the swap.
  absl::Status commit(ResourceSet candidate, DesiredLbState desired, bool objects_changed);

  store::Store* store_;
  LbStateSink& sink_;
  const MeshSettings mesh_;
  ConfigObserver* observer_ = nullptr;
  ResourceSet resources_;
  DesiredLbState desired_;
  uint64_t generation_ = 0;
};

}  // namespace meshd::state
