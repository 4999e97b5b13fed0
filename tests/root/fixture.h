// Helpers for root tests: network namespaces, cgroups and processes that the
// test creates and always removes (RAII), and running code "in a pod" (a
// forked child inside a netns and a cgroup).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "datapath/datapath.h"

namespace meshd::testing {

// Fails the current test when not root, unless MESHD_ALLOW_ROOT_SKIP=1 (then
// skips it with a message). Use in SetUp() (it returns from the caller).
#define MESHD_REQUIRE_ROOT()                                                               \
  do {                                                                                     \
    if (::geteuid() != 0) {                                                                \
      if (::meshd::testing::rootSkipAllowed())                                             \
        GTEST_SKIP() << "not root: skipped "                                               \
                        "(MESHD_ALLOW_ROOT_SKIP=1)";                                       \
      FAIL() << "root tests need root (set MESHD_ALLOW_ROOT_SKIP=1 to skip them instead)"; \
    }                                                                                      \
  } while (0)
bool rootSkipAllowed();

// write() all of s, retrying on EINTR and short writes. False on error or EOF.
bool writeAll(int fd, const std::string& s);
// read() until EOF (or an error); what was read.
std::string readAll(int fd);

// Runs argv (no shell) and waits. Error with the command line and exit status.
absl::Status run(const std::vector<std::string>& argv);

// A network namespace "meshd-t<pid>-<n>" with lo up. Deleted on destruction.
class Netns {
 public:
  Netns();
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  const std::string& name() const { return name_; }
  // Runs `ip <args>` inside the namespace, e.g. {"addr", "add", "10.0.1.1/32", "dev", "lo"}.
  absl::Status ip(std::vector<std::string> args) const;
  // Moves the calling thread into this namespace.
  absl::Status enter() const;

 private:
  std::string name_;
};

// A cgroup v2 directory under the cgroup2 mount. On destruction its processes
// (ours: test children) are killed and the directory removed.
class Cgroup {
 public:
  Cgroup();
  // A leaf under `parent` (e.g. one pod of a node). Destroy it before the parent.
  explicit Cgroup(const Cgroup* parent);
  ~Cgroup();
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  const std::string& path() const { return path_; }
  absl::Status addPid(pid_t pid) const;
  void killAll() const;

 private:
  std::string path_;
};

// A forked child process, SIGKILLed and reaped on destruction.
class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid) : pid_(pid) {}
  ~Child() { kill(); }
  Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  Child& operator=(Child&& o) noexcept;
  pid_t pid() const { return pid_; }
  // SIGKILL + waitpid. Idempotent.
  void kill();

 private:
  pid_t pid_ = -1;
};

// Forks; the child joins `cgroup` (when non-null) and `netns`, runs fn and
// sends its result back. Returns fn's string, or an error when the child
// failed to set up or died.
absl::StatusOr<std::string> runInPod(const Netns& netns, const Cgroup* cgroup,
                                     const std::function<std::string()>& fn);

// Like runInPod but does not wait: the child runs fn (which should block or
// loop) and the caller gets the process. `ready` is written once the child is
// inside the netns/cgroup and fn's setup signalled it via the given fd.
absl::StatusOr<Child> spawnInPod(const Netns& netns, const Cgroup* cgroup,
                                 const std::function<void(int ready_fd)>& fn);

// Starts `count` pod processes that wait at a barrier until all of them are in
// place, then run fn() at the same moment and pause. Appends them to *children
// (also those started before a failure).
absl::Status spawnTogether(const Netns& netns, const Cgroup* cgroup, int count,
                           const std::function<void()>& fn, std::vector<Child>* children);

// A TCP+UDP backend server in `netns` for every (address, port): accepted TCP
// connections get "<address>:<port>\n" and are kept open until the peer
// closes; each UDP datagram is answered with the same text.
absl::StatusOr<Child> startBackends(const Netns& netns,
                                    const std::vector<std::pair<std::string, uint16_t>>& listen);

// bpffs directory every root test pins under (removed when the last test
// leaves it empty).
inline constexpr char kTestPinRoot[] = "/sys/fs/bpf/meshd-test";

// Opens a Datapath with small maps (64 services, 64 backends, 256 slots)
// attached to `cgroup` and pinned under kTestPinRoot as instance
// "<prefix><pid>-<n>". *config receives what was used (for removePins or a
// second open that adopts).
absl::StatusOr<datapath::DatapathPtr> openTestDatapath(const Cgroup& cgroup,
                                                       const std::string& prefix,
                                                       datapath::DatapathConfig* config);

// ---- clients, run inside pods ------------------------------------------------

// A sockaddr for "10.0.0.1" or "fd00::1" and port (host order); *len is its size.
sockaddr_storage sockaddrOf(const std::string& addr, uint16_t port, socklen_t* len);
// "addr:port" of a sockaddr (IPv6 without brackets, as the backends announce).
std::string textOf(const sockaddr_storage& ss);
// "ERR:<ENAME>", e.g. "ERR:ECONNREFUSED".
std::string errText(int err);

// Connects over TCP and returns the first line the backend sends (its
// "addr:port" identity, without the newline), or errText(errno). With
// `fd_out` the socket stays open and is handed over; with `peer`,
// getpeername()'s answer is stored there.
std::string tcpConnect(const std::string& addr, uint16_t port, int* fd_out = nullptr,
                       std::string* peer = nullptr);

// `count` sequential tcpConnect()s; returns how often each identity answered,
// serialized for runInPod ("<identity> <count>" lines). parseCounts reads it back.
std::string dialMany(const std::string& addr, uint16_t port, int count);
std::map<std::string, int> parseCounts(const std::string& text);

}  // namespace meshd::testing
