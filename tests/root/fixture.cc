#include "tests/root/fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "datapath/preflight.h"

namespace meshd::testing {
namespace {

std::atomic<int> counter{0};

std::string uniqueName(const char* prefix) {
  return absl::StrCat(prefix, getpid(), "-", counter++);
}

std::string cgroup2Mount() {
  std::ifstream in("/proc/mounts");
  std::stringstream ss;
  ss << in.rdbuf();
  auto m = datapath::findCgroup2Mount(ss.str());
  return m.ok() ? *m : "";
}

// In a freshly forked child: join the cgroup, then the netns. Returns "" or
// the reason it failed.
std::string enterPod(const Netns& netns, const Cgroup* cgroup) {
  if (cgroup != nullptr) {
    auto st = cgroup->addPid(getpid());
    if (!st.ok()) return st.ToString();
  }
  auto st = netns.enter();
  return st.ok() ? "" : st.ToString();
}

// The pid in a name "<letters><pid>-<n>" (e.g. "meshd-t1234-0", "lb1234-2"),
// or 0 when the name has another shape.
pid_t pidInName(absl::string_view name, absl::string_view prefix) {
  if (!absl::StartsWith(name, prefix)) return 0;
  name.remove_prefix(prefix.size());
  size_t dash = name.find('-');
  pid_t pid = 0;
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, dash), &pid)) return 0;
  return pid;
}

bool deadPid(pid_t pid) { return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH; }

void removeCgroupTree(const std::string& path) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(path, ec))
    if (e.is_directory()) removeCgroupTree(e.path());
  std::ifstream in(path + "/cgroup.procs");
  pid_t pid;
  while (in >> pid) ::kill(pid, SIGKILL);
  for (int i = 0; i < 100 && rmdir(path.c_str()) != 0 && errno == EBUSY; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// Removes what a test process killed with SIGKILL (no destructors ran) left
// behind: network namespaces, cgroups and pinned datapaths named after a pid
// that no longer runs. Those of live processes (tests running in parallel)
// are left alone. Once per process.
void sweepStale() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/var/run/netns", ec)) {
      const std::string name = e.path().filename();
      if (deadPid(pidInName(name, "meshd-t"))) (void)run({"ip", "netns", "del", name});
    }
    const std::string mount = cgroup2Mount();
    for (const auto& e : std::filesystem::directory_iterator(mount, ec)) {
      if (e.is_directory() && deadPid(pidInName(e.path().filename().string(), "meshd-t")))
        removeCgroupTree(e.path());
    }
    for (const auto& e : std::filesystem::directory_iterator(kTestPinRoot, ec)) {
      std::string name = e.path().filename();
      size_t letters = name.find_first_of("0123456789");
      if (letters == std::string::npos) continue;
      if (deadPid(pidInName(name, name.substr(0, letters))))
        (void)datapath::Datapath::removePins(kTestPinRoot, name);
    }
  });
}

}  // namespace

bool writeAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += n;
  }
  return true;
}

std::string readAll(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, n);
  }
  return out;
}

bool rootSkipAllowed() {
  const char* v = std::getenv("MESHD_ALLOW_ROOT_SKIP");
  return v != nullptr && std::string(v) == "1";
}

absl::Status run(const std::vector<std::string>& argv) {
  pid_t pid = fork();
  if (pid < 0) return errnoError(errno, "fork");
  if (pid == 0) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDOUT_FILENO);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("`", absl::StrJoin(argv, " "), "` failed with status ", status));
}

Netns::Netns() : name_(uniqueName("meshd-t")) {
  sweepStale();
  (void)run({"ip", "netns", "add", name_});
  (void)ip({"link", "set", "lo", "up"});
}

Netns::~Netns() { (void)run({"ip", "netns", "del", name_}); }

absl::Status Netns::ip(std::vector<std::string> args) const {
  std::vector<std::string> argv = {"ip", "-n", name_};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

absl::Status Netns::enter() const {
  std::string path = absl::StrCat("/var/run/netns/", name_);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoError(errno, absl::StrCat("opening ", path));
  int ret = setns(fd, CLONE_NEWNET);
  int err = errno;
  close(fd);
  if (ret != 0) return errnoError(err, absl::StrCat("setns into ", name_));
  return absl::OkStatus();
}

Cgroup::Cgroup() {
  sweepStale();
  std::string mount = cgroup2Mount();
  path_ = absl::StrCat(mount.empty() ? "/sys/fs/cgroup" : mount, "/", uniqueName("meshd-t"));
  mkdir(path_.c_str(), 0755);
}

Cgroup::Cgroup(const Cgroup* parent) : path_(parent->path() + "/" + uniqueName("pod")) {
  mkdir(path_.c_str(), 0755);
}

Cgroup::~Cgroup() {
  killAll();
  for (int i = 0; i < 200; ++i) {
    if (rmdir(path_.c_str()) == 0 || errno == ENOENT) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

absl::Status Cgroup::addPid(pid_t pid) const {
  std::string procs = path_ + "/cgroup.procs";
  int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errnoError(errno, absl::StrCat("opening ", procs));
  bool ok = writeAll(fd, std::to_string(pid));
  int err = errno;
  close(fd);
  if (!ok) return errnoError(err, absl::StrCat("moving pid ", pid, " into ", path_));
  return absl::OkStatus();
}

void Cgroup::killAll() const {
  // Only our forked children ever join a test cgroup; they are reaped by their
  // Child owners (or by init once this process exits).
  std::ifstream in(path_ + "/cgroup.procs");
  pid_t pid;
  while (in >> pid) ::kill(pid, SIGKILL);
}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    kill();
    pid_ = o.pid_;
    o.pid_ = -1;
  }
  return *this;
}

void Child::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

absl::Status spawnTogether(const Netns& netns, const Cgroup* cgroup, int count,
                           const std::function<void()>& fn, std::vector<Child>* children) {
  int barrier[2];
  if (pipe(barrier) != 0) return errnoError(errno, "pipe");
  absl::Status result;
  for (int i = 0; i < count && result.ok(); ++i) {
    auto child = spawnInPod(netns, cgroup, [&fn, rd = barrier[0], wr = barrier[1]](int ready_fd) {
      close(wr);
      (void)!write(ready_fd, "O", 1);
      char c;
      (void)!read(rd, &c, 1);  // EOF when the parent closes its end: go
      fn();
      pause();
    });
    if (child.ok()) {
      children->push_back(std::move(*child));
    } else {
      result = child.status();
    }
  }
  close(barrier[0]);
  close(barrier[1]);
  return result;
}

absl::StatusOr<std::string> runInPod(const Netns& netns, const Cgroup* cgroup,
                                     const std::function<std::string()>& fn) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return errnoError(errno, "pipe");
  pid_t pid = fork();
  if (pid < 0) return errnoError(errno, "fork");
  if (pid == 0) {
    close(p[0]);
    std::string err = enterPod(netns, cgroup);
    // First byte: 'O' = fn ran, 'E' = setup failed.
    writeAll(p[1], err.empty() ? "O" + fn() : "E" + err);
    _exit(0);
  }
  close(p[1]);
  std::string out = readAll(p[0]);
  close(p[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (out.empty()) {
    return absl::InternalError(absl::StrCat("pod child died (wait status ", status, ")"));
  }
  if (out[0] != 'O') return absl::InternalError(absl::StrCat("pod setup: ", out.substr(1)));
  return out.substr(1);
}

absl::StatusOr<Child> spawnInPod(const Netns& netns, const Cgroup* cgroup,
                                 const std::function<void(int ready_fd)>& fn) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return errnoError(errno, "pipe");
  pid_t pid = fork();
  if (pid < 0) return errnoError(errno, "fork");
  if (pid == 0) {
    close(p[0]);
    std::string err = enterPod(netns, cgroup);
    if (!err.empty()) {
      writeAll(p[1], "E" + err);
      _exit(1);
    }
    fn(p[1]);  // writes "O" when ready, then blocks
    _exit(0);
  }
  Child child(pid);
  close(p[1]);
  char c = 0;
  ssize_t n;
  do {
    n = read(p[0], &c, 1);
  } while (n < 0 && errno == EINTR);
  std::string rest = n == 1 && c == 'E' ? readAll(p[0]) : "";
  close(p[0]);
  if (n != 1 || c != 'O') {
    return absl::InternalError(absl::StrCat("pod child failed to start: ", rest));
  }
  return child;
}

sockaddr_storage sockaddrOf(const std::string& addr, uint16_t port, socklen_t* len) {
  sockaddr_storage ss{};
  if (addr.find(':') != std::string::npos) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    inet_pton(AF_INET6, addr.c_str(), &s6->sin6_addr);
    *len = sizeof(*s6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    inet_pton(AF_INET, addr.c_str(), &s4->sin_addr);
    *len = sizeof(*s4);
  }
  return ss;
}

std::string textOf(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET6) {
    auto* s6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf));
    return absl::StrCat(buf, ":", ntohs(s6->sin6_port));
  }
  auto* s4 = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf));
  return absl::StrCat(buf, ":", ntohs(s4->sin_port));
}

absl::StatusOr<datapath::DatapathPtr> openTestDatapath(const Cgroup& cgroup,
                                                       const std::string& prefix,
                                                       datapath::DatapathConfig* config) {
  static int counter = 0;
  config->instance = absl::StrCat(prefix, getpid(), "-", ++counter);
  config->pin_root = kTestPinRoot;
  config->cgroup_path = cgroup.path();
  config->max_services = 64;
  config->max_backends = 64;
  config->max_slots = 256;
  return datapath::Datapath::open(*config);
}

std::string errText(int err) { return absl::StrCat("ERR:", strerrorname_np(err)); }

std::string tcpConnect(const std::string& addr, uint16_t port, int* fd_out, std::string* peer) {
  socklen_t len;
  sockaddr_storage ss = sockaddrOf(addr, port, &len);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int err = errno;
    close(fd);
    return errText(err);
  }
  if (peer != nullptr) {
    sockaddr_storage p{};
    socklen_t plen = sizeof(p);
    getpeername(fd, reinterpret_cast<sockaddr*>(&p), &plen);
    *peer = textOf(p);
  }
  char buf[128] = {0};
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  std::string id = n > 0 ? std::string(buf, n - 1) : errText(errno);  // drop '\n'
  if (fd_out != nullptr) {
    *fd_out = fd;
  } else {
    close(fd);
  }
  return id;
}

std::string dialMany(const std::string& addr, uint16_t port, int count) {
  std::map<std::string, int> seen;
  for (int i = 0; i < count; ++i) seen[tcpConnect(addr, port)]++;
  std::string out;
  for (const auto& [id, n] : seen) absl::StrAppend(&out, id, " ", n, "\n");
  return out;
}

std::map<std::string, int> parseCounts(const std::string& text) {
  std::map<std::string, int> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    size_t sp = line.rfind(' ');  // the identity itself never ends in a count
    if (sp == absl::string_view::npos) continue;
    out[std::string(line.substr(0, sp))] = std::stoi(std::string(line.substr(sp + 1)));
  }
  return out;
}

absl::StatusOr<Child> startBackends(const Netns& netns,
                                    const std::vector<std::pair<std::string, uint16_t>>& listen) {
  return spawnInPod(netns, nullptr, [listen](int ready_fd) {
    std::vector<pollfd> fds;
    std::vector<std::string> ids;  // per fd: identity text
    std::vector<int> kind;         // 0 = TCP listener, 1 = UDP, 2 = TCP connection
    for (const auto& [addr, port] : listen) {
      socklen_t len;
      sockaddr_storage ss = sockaddrOf(addr, port, &len);
      const int family = ss.ss_family;
      std::string id = absl::StrCat(addr, ":", port, "\n");
      for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
        int fd = socket(family, type, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
            (type == SOCK_STREAM && ::listen(fd, 1024) != 0)) {
          writeAll(ready_fd, absl::StrCat("Ebind ", id, strerror(errno)));
          _exit(1);
        }
        fds.push_back({fd, POLLIN, 0});
        ids.push_back(id);
        kind.push_back(type == SOCK_STREAM ? 0 : 1);
      }
    }
    writeAll(ready_fd, "O");
    close(ready_fd);
    for (;;) {
      if (poll(fds.data(), fds.size(), -1) < 0) continue;
      size_t n = fds.size();
      for (size_t i = 0; i < n; ++i) {
        if (fds[i].revents == 0) continue;
        if (kind[i] == 0) {
          int c = accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (c < 0) continue;
          writeAll(c, ids[i]);
          fds.push_back({c, POLLIN, 0});
          ids.push_back(ids[i]);
          kind.push_back(2);
        } else if (kind[i] == 1) {
          char buf[512];
          sockaddr_storage from{};
          socklen_t flen = sizeof(from);
          ssize_t r =
              recvfrom(fds[i].fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &flen);
          if (r >= 0) {
            sendto(fds[i].fd, ids[i].data(), ids[i].size(), 0, reinterpret_cast<sockaddr*>(&from),
                   flen);
          }
        } else {
          char buf[512];
          ssize_t r = read(fds[i].fd, buf, sizeof(buf));
          if (r <= 0) {
            close(fds[i].fd);
            fds[i].fd = -1;  // poll ignores negative fds
          }
        }
      }
    }
  });
}

}  // namespace meshd::testing
