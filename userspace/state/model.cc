#include "state/model.h"

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace meshd::state {

Model::Model(store::Store* store, LbStateSink& sink, MeshSettings mesh)
    : store_(store), sink_(sink), mesh_(std::move(mesh)) {}

absl::Status Model::load() {
  ResourceSet loaded;
  if (store_ != nullptr) {
    ASSIGN_OR_RETURN(std::vector<resources::Resource> stored, store_->load());
    for (auto& r : stored) loaded.upsert(std::move(r));
    if (absl::Status st = resources::validateSet(loaded); !st.ok()) {
      return absl::DataLossError(absl::StrCat("store file ", store_->filePath(),
                                              " holds conflicting resources:\n", st.message()));
    }
  }
  ASSIGN_OR_RETURN(DesiredLbState desired, computeDesiredState(loaded, mesh_));
  resources_ = std::move(loaded);
  desired_ = std::move(desired);
  ++generation_;
  if (observer_ != nullptr) observer_->willApply(resources_, desired_);
  if (absl::Status st = sink_.apply(desired_); !st.ok()) {
    return absl::Status(
        st.code(), absl::StrCat("loaded ", resources_.size(),
                                " resources but could not program the datapath: ", st.message()));
  }
  return absl::OkStatus();
}

absl::Status Model::resync() { return sink_.apply(desired_); }

absl::StatusOr<std::vector<Model::ApplyResult>> Model::apply(std::vector<resources::Resource> batch,
                                                             bool dry_run) {
  std::vector<std::string> errors;
  absl::flat_hash_map<resources::ResourceKey, const resources::Resource*> seen;
  for (const auto& r : batch) {
    if (absl::Status st = resources::validate(r); !st.ok()) {
      errors.push_back(std::string(st.message()));
      continue;
    }
    auto [it, inserted] = seen.emplace(r.key, &r);
    if (!inserted) {
      std::string where = resources::locate(*it->second, "metadata.name");
      errors.push_back(resources::formatError(
          r, "metadata.name",
          absl::StrCat("duplicate: ", r.key.toString(), " is also defined at ",
                       where.empty() ? "an earlier document of this apply" : where)));
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));

  std::vector<ApplyResult> results;
  results.reserve(batch.size());
  ResourceSet candidate = resources_;
  bool changed = false;
  for (auto& r : batch) {
    const resources::Resource* old = resources_.find(r.key);
    std::string action = old == nullptr            ? "created"
                         : old->object == r.object ? "unchanged"
                                                   : "configured";
    changed = changed || action != "unchanged";
    results.push_back({r.key, std::move(action)});
    candidate.upsert(std::move(r));
  }
  RETURN_IF_ERROR(resources::validateSet(candidate));
  ASSIGN_OR_RETURN(DesiredLbState desired, computeDesiredState(candidate, mesh_));
  if (dry_run) return results;
  RETURN_IF_ERROR(commit(std::move(candidate), std::move(desired), changed));
  return results;
}

absl::StatusOr<std::vector<resources::ResourceKey>> Model::remove(
    const std::vector<resources::ResourceKey>& keys) {
  std::vector<resources::ResourceKey> removed;
  std::vector<std::string> missing;
  absl::flat_hash_set<resources::ResourceKey> seen;
  for (const auto& k : keys) {
    if (!seen.insert(k).second) continue;
    if (!resources_.contains(k)) {
      missing.push_back(k.toString());
    } else {
      removed.push_back(k);
    }
  }
  if (!missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat("not found (nothing was deleted): ", absl::StrJoin(missing, ", ")));
  }
  if (removed.empty()) return removed;
  ResourceSet candidate = resources_;
  for (const auto& k : removed) candidate.erase(k);
  ASSIGN_OR_RETURN(DesiredLbState desired, computeDesiredState(candidate, mesh_));
  RETURN_IF_ERROR(commit(std::move(candidate), std::move(desired), true));
  return removed;
}

absl::Status Model::commit(ResourceSet candidate, DesiredLbState desired, bool objects_changed) {
  const bool desired_changed = !(desired == desired_);
  const bool observed = observer_ != nullptr && (desired_changed || objects_changed);
  if (observed) observer_->willApply(candidate, desired);
  // Puts the observer back to the current state after a failure.
  auto restoreObserver = [&] {
    if (observed) observer_->willApply(resources_, desired_);
  };
  if (desired_changed) {
    if (absl::Status st = sink_.apply(desired); !st.ok()) {
      restoreObserver();
      absl::Status restore = sink_.apply(desired_);
      if (!restore.ok()) {
        return absl::Status(st.code(), absl::StrCat(st.message(),
                                                    "; restoring the previous state also "
                                                    "failed: ",
                                                    restore.message()));
      }
      return st;
    }
  }
  if (objects_changed && store_ != nullptr) {
    if (absl::Status st = store_->save(candidate.toVector()); !st.ok()) {
      restoreObserver();
      std::string msg =
          absl::StrCat("could not save to the store (nothing was applied): ", st.message());
      if (desired_changed) {
        if (absl::Status restore = sink_.apply(desired_); !restore.ok()) {
          absl::StrAppend(
              &msg, "; restoring the previous datapath state also failed: ", restore.message());
        }
      }
      return absl::Status(st.code(), msg);
    }
  }
  if (desired_changed || objects_changed) ++generation_;
  resources_ = std::move(candidate);
  desired_ = std::move(desired);
  return absl::OkStatus();
}

}  // namespace meshd::state
