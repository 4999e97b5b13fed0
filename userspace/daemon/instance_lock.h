// One meshd per instance: an exclusive flock on /run/meshd/<instance>.lock,
// taken before the datapath is touched, so a second meshd for the same
// instance cannot take over the pinned links of a running one.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace meshd::daemon {

class InstanceLock;
using InstanceLockPtr = std::unique_ptr<InstanceLock>;

class InstanceLock {
 public:
  static constexpr char kLockDir[] = "/run/meshd";

  // Creates `dir` (0755) if needed and locks <dir>/<instance>.lock. Fails with
  // FailedPrecondition when another process holds it (another meshd runs this
  // instance), and with the errno text otherwise.
  static absl::StatusOr<InstanceLockPtr> acquire(const std::string& dir,
                                                 const std::string& instance);
  // Removes the file and releases the lock.
  ~InstanceLock();
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;

 private:
  InstanceLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

}  // namespace meshd::daemon
