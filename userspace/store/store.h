// The embedded store: applied resources on local disk (standalone mode), so
// they survive a meshd restart. One JSON file, resources.json, replaced whole
// and atomically on every save; a lock file keeps a second meshd out.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "resources/resource.h"

namespace meshd::store {

class Store;
using StorePtr = std::unique_ptr<Store>;

class Store {
 public:
  static constexpr char kFileName[] = "resources.json";
  static constexpr char kLockName[] = "lock";
  // Written into the file; load() refuses files of another format.
  static constexpr char kFormat[] = "meshd.io/store/v1";

  // Opens (creating it with mode 0700 if needed) the store directory and takes
  // an exclusive lock on <dir>/lock. Fails naming the directory when it cannot
  // be created or is not a directory, and with FailedPrecondition when another
  // process holds the lock.
  static absl::StatusOr<StorePtr> open(const std::string& dir);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Every stored resource, validated (no positions; source/line are where the
  // resource was applied from). An absent file is an empty store. A corrupt
  // file (not JSON, wrong format, an invalid or duplicate resource) fails with
  // DataLoss naming the file and what is wrong.
  absl::StatusOr<std::vector<resources::Resource>> load();

  // Replaces the stored set atomically: writes <file>.tmp, fsyncs it, renames
  // it over the file and fsyncs the directory. On failure the previous file is
  // intact. Errors carry errno and the path.
  absl::Status save(const std::vector<resources::Resource>& resources);

  const std::string& dir() const { return dir_; }
  std::string filePath() const;

 private:
  Store(std::string dir, int lock_fd) : dir_(std::move(dir)), lock_fd_(lock_fd) {}

  std::string dir_;
  int lock_fd_ = -1;
};

}  // namespace meshd::store
