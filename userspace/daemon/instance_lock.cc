#include "daemon/instance_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace meshd::daemon {

absl::StatusOr<InstanceLockPtr> InstanceLock::acquire(const std::string& dir,
                                                      const std::string& instance) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("creating ", dir, " for the instance lock: ", ec.message()));
  }
  const std::string path = absl::StrCat(dir, "/", instance, ".lock");
  // The previous owner unlinks the file on exit; if we locked a file that was
  // unlinked meanwhile, a third meshd could lock a new one: retry until the
  // locked file is the one at `path`.
  for (int attempt = 0; attempt < 10; ++attempt) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return errnoError(errno, absl::StrCat("opening the instance lock ", path));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      close(fd);
      if (err == EWOULDBLOCK) {
        return absl::FailedPreconditionError(
            absl::StrCat("another meshd is running instance \"", instance, "\" (", path,
                         " is locked); stop it first, or choose another --instance"));
      }
      return errnoError(err, absl::StrCat("locking ", path));
    }
    struct stat by_fd {};
    struct stat by_path {};
    if (fstat(fd, &by_fd) == 0 && stat(path.c_str(), &by_path) == 0 &&
        by_fd.st_ino == by_path.st_ino && by_fd.st_dev == by_path.st_dev) {
      return InstanceLockPtr(new InstanceLock(path, fd));
    }
    close(fd);
  }
  return absl::UnavailableError(absl::StrCat("could not lock ", path, " (keeps being replaced)"));
}

InstanceLock::~InstanceLock() {
  unlink(path_.c_str());
  close(fd_);
}

}  // namespace meshd::daemon
