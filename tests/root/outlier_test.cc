// Root tests of passive outlier detection and p2c-ewma (LeastLatency) in the
// real kernel: DesiredLbState -> Reconciler -> maps -> connect() from a pod,
// with backends in their own network namespaces so that each one can fail in
// its own way (no listener: RST; iptables drop: SYN black hole or a stalled
// connection) or sit behind a slow link.
//
//   client netns (pod, in the cgroup)                backend netns, one each
//   +-----------------------------------+   veth    +----------------------+
//   | vb<i>: 10.0.<20+i>.1/24           |<--------->| eth0: 10.0.<20+i>.2  |
//   | route unreachable 10.96.0.0/12    |           | echo server :8080    |
//   | dly<i>: 10.0.<20+i>.1 (slow link) |<-- tun -->| dly<i>: 10.0.<20+i>.2|
//   +-----------------------------------+  relay    +----------------------+
//                                          (+20 ms client -> backend)
//
// This kernel has no sch_netem, so the slow link is two TUN devices and a
// relay process that holds packets from the client for 20 ms (DelayLink).
// Waiting for an ejection to expire is a bounded poll on CLOCK_MONOTONIC (the
// clock of ejected_until_ns); nothing asserts on how fast anything ran.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/net.h"
#include "datapath/datapath.h"
#include "datapath/preflight.h"
#include "datapath/reconciler.h"
#include "gtest/gtest.h"
#include "mesh_lb.h"
#include "state/lb_state.h"
#include "tests/root/fixture.h"

namespace meshd::datapath {
namespace {

using meshd::testing::Cgroup;
using meshd::testing::Child;
using meshd::testing::Netns;
using meshd::testing::parseCounts;
using meshd::testing::writeAll;
using state::DesiredLbState;
using state::Frontend;
using state::LbAlgorithm;

constexpr uint16_t kPort = 8080;

uint64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Reads up to and without '\n'; "" on EOF or error.
std::string readLine(int fd) {
  std::string line;
  char c;
  for (;;) {
    ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return line;
    line += c;
  }
}

// An echo server on addr:kPort in `ns`: each accepted connection gets
// "<addr>:8080\n", then every byte it sends comes back.
absl::StatusOr<Child> startEchoServer(const Netns& ns, const std::string& addr) {
  return meshd::testing::spawnInPod(ns, nullptr, [addr](int ready_fd) {
    socklen_t len;
    sockaddr_storage ss = meshd::testing::sockaddrOf(addr, kPort, &len);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(lfd, 1024) != 0) {
      writeAll(ready_fd, absl::StrCat("Ebind ", addr, ": ", strerror(errno)));
      _exit(1);
    }
    writeAll(ready_fd, "O");
    close(ready_fd);
    const std::string id = absl::StrCat(addr, ":", kPort, "\n");
    std::vector<pollfd> fds = {{lfd, POLLIN, 0}};
    for (;;) {
      if (poll(fds.data(), fds.size(), -1) < 0) continue;
      const size_t n = fds.size();
      for (size_t i = 0; i < n; ++i) {
        if (fds[i].revents == 0) continue;
        if (i == 0) {
          int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
          if (c < 0) continue;
          writeAll(c, id);
          fds.push_back({c, POLLIN, 0});
          continue;
        }
        char buf[512];
        ssize_t r = read(fds[i].fd, buf, sizeof(buf));
        if (r <= 0) {
          close(fds[i].fd);
          fds[i].fd = -1;  // poll ignores negative fds
        } else {
          writeAll(fds[i].fd, std::string(buf, r));
        }
      }
    }
  });
}

// Opens a TUN device `name` in the calling thread's network namespace.
int openTun(const std::string& name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A point-to-point link between two namespaces whose client -> backend
// direction is delayed by `delay`: a TUN device in each namespace and a relay
// process moving IP packets between them. Stands in for netem, which this
// kernel lacks. The relay dies with the Child; the devices with it.
absl::StatusOr<Child> startDelayLink(const Netns& client, const Netns& backend,
                                     const std::string& dev, std::chrono::milliseconds delay) {
  return meshd::testing::spawnInPod(client, nullptr, [&backend, dev, delay](int ready_fd) {
    int cfd = openTun(dev);
    if (cfd < 0 || !backend.enter().ok()) {
      writeAll(ready_fd, absl::StrCat("Etun in client netns: ", strerror(errno)));
      _exit(1);
    }
    int bfd = openTun(dev);
    if (bfd < 0) {
      writeAll(ready_fd, absl::StrCat("Etun in backend netns: ", strerror(errno)));
      _exit(1);
    }
    writeAll(ready_fd, "O");
    close(ready_fd);
    const uint64_t delay_ns = std::chrono::nanoseconds(delay).count();
    std::deque<std::pair<uint64_t, std::string>> queue;  // (due, packet) client -> backend
    pollfd fds[2] = {{cfd, POLLIN, 0}, {bfd, POLLIN, 0}};
    char buf[65536];
    for (;;) {
      int timeout = -1;
      if (!queue.empty()) {
        const uint64_t now = monotonicNs();
        timeout = queue.front().first > now
                      ? static_cast<int>((queue.front().first - now + 999'999) / 1'000'000)
                      : 0;
      }
      poll(fds, 2, timeout);
      if (fds[0].revents & POLLIN) {
        ssize_t n = read(cfd, buf, sizeof(buf));
        if (n > 0) queue.emplace_back(monotonicNs() + delay_ns, std::string(buf, n));
      }
      if (fds[1].revents & POLLIN) {
        ssize_t n = read(bfd, buf, sizeof(buf));
        if (n > 0) (void)!write(cfd, buf, n);
      }
      const uint64_t now = monotonicNs();
      while (!queue.empty() && queue.front().first <= now) {
        (void)!write(bfd, queue.front().second.data(), queue.front().second.size());
        queue.pop_front();
      }
    }
  });
}

// Client side of the tests, run in the pod: `count` sequential connections
// to vip:80, each reading the backend's identity and then making `exchanges`
// request/response round trips. With `short_syn`, a SYN that gets no answer
// fails the connect after about a second (TCP_SYNCNT 1, TCP_USER_TIMEOUT
// 500 ms) instead of after two minutes. Returns "<identity or ERR:..> <n>"
// lines (parseCounts).
std::string dialTalk(const std::string& vip, int count, int exchanges, bool short_syn) {
  std::map<std::string, int> seen;
  for (int i = 0; i < count; ++i) {
    socklen_t len;
    sockaddr_storage ss = meshd::testing::sockaddrOf(vip, 80, &len);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (short_syn) {
      int syncnt = 1;
      unsigned int user_timeout_ms = 500;
      setsockopt(fd, IPPROTO_TCP, TCP_SYNCNT, &syncnt, sizeof(syncnt));
      setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
    }
    if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      seen[meshd::testing::errText(errno)]++;
      close(fd);
      continue;
    }
    std::string id = readLine(fd);
    for (int e = 0; e < exchanges && !id.empty(); ++e) {
      if (!writeAll(fd, "ping\n") || readLine(fd) != "ping") id = "ERR:exchange";
    }
    seen[id.empty() ? "ERR:no-identity" : id]++;
    close(fd);
  }
  std::string out;
  for (const auto& [id, n] : seen) absl::StrAppend(&out, id, " ", n, "\n");
  return out;
}

class OutlierRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MESHD_REQUIRE_ROOT();
    auto paths = preflight();
    ASSERT_TRUE(paths.ok()) << paths.status();
    client_ = std::make_unique<Netns>();
    cgroup_ = std::make_unique<Cgroup>();
    ASSERT_TRUE(client_->ip({"route", "add", "unreachable", "10.96.0.0/12"}).ok());
    auto dp = meshd::testing::openTestDatapath(*cgroup_, "outl", &config_);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);
    rec_ = std::make_unique<Reconciler>(dp_->maps());
  }

  void TearDown() override {
    holders_.clear();
    rec_.reset();
    dp_.reset();
    if (!config_.instance.empty()) (void)Datapath::removePins(config_.pin_root, config_.instance);
    rmdir(meshd::testing::kTestPinRoot);
    for (auto& b : backends_) {
      b.server.kill();
      b.link.kill();
    }
    backends_.clear();
    cgroup_.reset();
    client_.reset();
  }

  struct BackendPod {
    std::unique_ptr<Netns> ns;
    std::string addr;  // 10.0.<20+i>.2
    Child server;      // echo server, when serving
    Child link;        // DelayLink relay, when slow
  };

  // Backend i in its own netns, linked to the client netns by a veth pair
  // (or, with `delay`, by a DelayLink). `serve`: start the echo server;
  // without it connects get RST (nothing listens).
  void addBackend(bool serve, std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
    const size_t i = backends_.size();
    BackendPod b;
    b.ns = std::make_unique<Netns>();
    b.addr = absl::StrCat("10.0.", 20 + i, ".2");
    const std::string client_addr = absl::StrCat("10.0.", 20 + i, ".1");
    if (delay.count() == 0) {
      const std::string dev = absl::StrCat("vb", i);
      ASSERT_TRUE(client_
                      ->ip({"link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns",
                            b.ns->name()})
                      .ok());
      ASSERT_TRUE(client_->ip({"addr", "add", client_addr + "/24", "dev", dev}).ok());
      ASSERT_TRUE(client_->ip({"link", "set", dev, "up"}).ok());
      ASSERT_TRUE(b.ns->ip({"addr", "add", b.addr + "/24", "dev", "eth0"}).ok());
      ASSERT_TRUE(b.ns->ip({"link", "set", "eth0", "up"}).ok());
    } else {
      const std::string dev = absl::StrCat("dly", i);
      auto link = startDelayLink(*client_, *b.ns, dev, delay);
      ASSERT_TRUE(link.ok()) << link.status();
      b.link = std::move(*link);
      for (const auto& [ns, local, peer] : {std::tuple{client_.get(), client_addr, b.addr},
                                            std::tuple{b.ns.get(), b.addr, client_addr}}) {
        ASSERT_TRUE(ns->ip({"addr", "add", local + "/32", "dev", dev}).ok());
        ASSERT_TRUE(ns->ip({"link", "set", dev, "up"}).ok());
        ASSERT_TRUE(ns->ip({"route", "add", peer + "/32", "dev", dev}).ok());
      }
    }
    backends_.push_back(std::move(b));
    if (serve) {
      ASSERT_NO_FATAL_FAILURE(serveBackend(i));
    }
  }

  void serveBackend(size_t i) {
    auto server = startEchoServer(*backends_[i].ns, backends_[i].addr);
    ASSERT_TRUE(server.ok()) << server.status();
    backends_[i].server = std::move(*server);
  }

  std::string id(size_t i) const { return absl::StrCat(backends_[i].addr, ":", kPort); }

  Frontend frontend(const std::string& vip, LbAlgorithm algo, state::OutlierDetection od,
                    std::vector<uint32_t> weights = {}) {
    Frontend fe;
    fe.ns = "test";
    fe.service = vip;
    fe.vip = *IpAddress::parse(vip);
    fe.port = 80;
    fe.algorithm = algo;
    fe.outlier = od;
    for (size_t i = 0; i < backends_.size(); ++i) {
      fe.backends.push_back(
          {*IpAddress::parse(backends_[i].addr), kPort, weights.empty() ? 1 : weights[i], "", ""});
    }
    std::sort(fe.backends.begin(), fe.backends.end(),
              [](const auto& a, const auto& b) { return a.address < b.address; });
    return fe;
  }

  void apply(const Frontend& fe) {
    DesiredLbState d;
    d.frontends.push_back(fe);
    auto st = rec_->apply(d);
    ASSERT_TRUE(st.ok()) << st;
  }

  std::map<std::string, int> dial(const std::string& vip, int count, int exchanges = 0,
                                  bool short_syn = false) {
    auto out = meshd::testing::runInPod(*client_, cgroup_.get(),
                                        [&] { return dialTalk(vip, count, exchanges, short_syn); });
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? parseCounts(*out) : std::map<std::string, int>{};
  }

  // The kernel's per-backend state of backend i, and the service's.
  mesh_backend_state backendState(size_t i) {
    auto views = rec_->describe();
    EXPECT_TRUE(views.ok()) << views.status();
    if (views.ok()) {
      for (const auto& fv : *views)
        for (const auto& b : fv.backends)
          if (b.address.toString() == backends_[i].addr) return b.counters;
    }
    ADD_FAILURE() << "backend " << backends_[i].addr << " not found";
    return mesh_backend_state{};
  }
  mesh_svc_state serviceState() {
    auto views = rec_->describe();
    EXPECT_TRUE(views.ok() && views->size() == 1);
    return views.ok() && !views->empty() ? (*views)[0].counters : mesh_svc_state{};
  }
  uint64_t stat(mesh_stat s) {
    auto stats = dp_->maps().readStats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? (*stats)[s] : 0;
  }

  // Polls (bounded) until backend i's ejection time has passed.
  void waitEjectionOver(size_t i, std::chrono::seconds bound) {
    const uint64_t until = backendState(i).ejected_until_ns;
    const auto deadline = std::chrono::steady_clock::now() + bound;
    while (monotonicNs() < until && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_GE(monotonicNs(), until) << "ejection did not end within " << bound.count() << " s";
  }

  std::unique_ptr<Netns> client_;
  std::unique_ptr<Cgroup> cgroup_;
  std::vector<BackendPod> backends_;
  std::vector<Child> holders_;
  DatapathConfig config_;
  DatapathPtr dp_;
  std::unique_ptr<Reconciler> rec_;
};

// Three backends, the first refusing (no listener: RST in SYN_SENT). With
// 5 consecutive failures and 4 s base time: exactly 5 connects fail, then it
// is ejected and 200 connects all reach the other two; after 4 s it returns
// (a connect reaches it again), and its second ejection lasts 2 x 4 s. (4 s,
// not less: the 200 connects must fit in the ejection on a loaded machine.)
TEST_F(OutlierRootTest, RefusingBackendIsEjectedGetsNoConnectionsAndReturns) {
  ASSERT_NO_FATAL_FAILURE(addBackend(false));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(
      apply(frontend("10.96.1.1", LbAlgorithm::kRandom, {5, 4'000, 20'000, 10})));

  // 60 connects: the refusing backend is drawn ~20 times (fewer than 5 has
  // probability ~1e-6); only the first 5 reach it.
  auto counts = dial("10.96.1.1", 60);
  EXPECT_EQ(counts["ERR:ECONNREFUSED"], 5);
  EXPECT_EQ(counts[id(1)] + counts[id(2)], 55);
  mesh_backend_state bad = backendState(0);
  EXPECT_EQ(bad.connect_failures, 5u);
  EXPECT_EQ(bad.consecutive_failures, 5u);
  EXPECT_EQ(bad.times_ejected, 1u);
  EXPECT_TRUE(mesh_is_ejected(bad.ejected_until_ns, monotonicNs()));
  mesh_svc_state svc = serviceState();
  EXPECT_EQ(svc.ejected, 1);
  EXPECT_EQ(svc.ejections, 1u);
  EXPECT_EQ(svc.ejections_skipped, 0u);
  EXPECT_EQ(stat(MESH_STAT_EJECTION), 1u);

  // While ejected: nothing reaches it (it would answer RST).
  counts = dial("10.96.1.1", 200);
  EXPECT_EQ(counts.count("ERR:ECONNREFUSED"), 0u);
  EXPECT_EQ(counts[id(1)] + counts[id(2)], 200);
  EXPECT_GT(stat(MESH_STAT_EJECTED_SKIPPED), 0u) << "about a third of the picks were it";
  EXPECT_EQ(backendState(0).total_conns, 5u);

  // After the ejection time it is back: the first connect that draws it
  // clears the ejection, and five more failures eject it again for 2 x 4 s.
  ASSERT_NO_FATAL_FAILURE(waitEjectionOver(0, std::chrono::seconds(10)));
  const uint64_t t0 = monotonicNs();
  counts = dial("10.96.1.1", 60);
  const uint64_t t1 = monotonicNs();
  EXPECT_EQ(counts["ERR:ECONNREFUSED"], 5) << "it receives connections again";
  EXPECT_EQ(stat(MESH_STAT_EJECTION_EXPIRED), 1u);
  bad = backendState(0);
  EXPECT_EQ(bad.times_ejected, 2u);
  EXPECT_GE(bad.ejected_until_ns, t0 + 8'000'000'000);
  EXPECT_LE(bad.ejected_until_ns, t1 + 8'000'000'000);
  EXPECT_EQ(serviceState().ejected, 1);
}

// A backend that drops SYNs (iptables in its netns): each connect to it
// times out (short SYN timeout in the client); five in a row eject it, the
// next connects all go to the healthy one, and it returns after 5 s.
TEST_F(OutlierRootTest, SynBlackHoleIsEjectedAndReturns) {
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_TRUE(meshd::testing::run({"ip", "netns", "exec", backends_[0].ns->name(), "iptables", "-A",
                                   "INPUT", "-p", "tcp", "--syn", "-j", "DROP"})
                  .ok());
  // Weights 100:1: nearly every pick is the black hole, so eight parallel
  // connects (at least five of them to it: a false failure ~1e-6) fail
  // together in about a second.
  ASSERT_NO_FATAL_FAILURE(
      apply(frontend("10.96.1.2", LbAlgorithm::kWeightedRandom, {5, 5'000, 10'000, 10}, {100, 1})));
  std::vector<Child> dialers;
  int done[2];
  ASSERT_EQ(pipe(done), 0);
  for (int p = 0; p < 8; ++p) {
    auto child = meshd::testing::spawnInPod(*client_, cgroup_.get(), [w = done[1]](int ready) {
      (void)!write(ready, "O", 1);
      close(ready);
      std::string out = dialTalk("10.96.1.2", 1, 0, true);
      (void)!write(w, out.rfind("ERR:ETIMEDOUT", 0) == 0 ? "T" : "x", 1);
      pause();
    });
    ASSERT_TRUE(child.ok()) << child.status();
    dialers.push_back(std::move(*child));
  }
  close(done[1]);
  int timed_out = 0;
  for (int p = 0; p < 8; ++p) {
    char c = 0;
    ASSERT_EQ(read(done[0], &c, 1), 1);
    timed_out += c == 'T';
  }
  close(done[0]);
  // The dialers still run: their connects timed out half-open (SYN_SENT to
  // TCP_CLOSE), which must have given every reservation back.
  EXPECT_EQ(backendState(0).live_conns, 0) << "no count leaked by half-open timeouts";
  EXPECT_EQ(serviceState().live_conns, 0);
  dialers.clear();
  EXPECT_GE(timed_out, 5) << "about 1 in 100 goes to the healthy backend";
  mesh_backend_state bad = backendState(0);
  EXPECT_GE(bad.connect_failures, 5u);
  EXPECT_GT(bad.rto_events, 0u) << "SYN retransmission timeouts are counted";
  EXPECT_TRUE(mesh_is_ejected(bad.ejected_until_ns, monotonicNs()));

  auto counts = dial("10.96.1.2", 100, 0, true);
  EXPECT_EQ(counts[id(1)], 100) << "the black hole gets nothing while ejected";

  ASSERT_NO_FATAL_FAILURE(waitEjectionOver(0, std::chrono::seconds(15)));
  counts = dial("10.96.1.2", 1, 0, true);
  EXPECT_EQ(counts["ERR:ETIMEDOUT"] + counts[id(1)], 1);
  EXPECT_EQ(stat(MESH_STAT_EJECTION_EXPIRED), 1u);
  EXPECT_EQ(serviceState().ejected, 0) << "returned: the service's count is given back";
}

// Four backends, three refusing, maxEjectionPercent 25: at most one of four
// is ejected at any time, even with four pods connecting concurrently; the
// other refusing ones reach the threshold and are counted as skipped.
TEST_F(OutlierRootTest, MaxEjectionPercentCapsEjections) {
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(addBackend(false));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(
      apply(frontend("10.96.1.3", LbAlgorithm::kRandom, {5, 60'000, 60'000, 25})));
  ASSERT_TRUE(
      meshd::testing::spawnTogether(
          *client_, cgroup_.get(), 4, [] { dialTalk("10.96.1.3", 40, 0, false); }, &holders_)
          .ok());
  // 160 connects; done when every one is accounted for.
  for (int i = 0; i < 1000; ++i) {
    uint64_t total = 0;
    for (size_t b = 0; b < 4; ++b) total += backendState(b).total_conns;
    if (total == 160) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  int ejected = 0;
  for (size_t b = 0; b < 3; ++b) {
    const mesh_backend_state st = backendState(b);
    ejected += mesh_is_ejected(st.ejected_until_ns, monotonicNs());
    EXPECT_GE(st.consecutive_failures, 5u) << "each refusing backend reached the threshold";
  }
  EXPECT_EQ(ejected, 1);
  EXPECT_FALSE(mesh_is_ejected(backendState(3).ejected_until_ns, monotonicNs()));
  mesh_svc_state svc = serviceState();
  EXPECT_EQ(svc.ejected, 1);
  EXPECT_EQ(svc.ejections, 1u);
  EXPECT_GE(svc.ejections_skipped, 2u);
  EXPECT_EQ(stat(MESH_STAT_EJECTION_OVER_PERCENT), svc.ejections_skipped);
}

// Four failures, a success, four failures: not ejected (a success ends the
// run). The fifth failure in a row ejects the only backend, and then the
// kernel refuses connects itself (no SYN leaves), counted as refused_ejected.
TEST_F(OutlierRootTest, SuccessResetsTheCountAndAllEjectedIsRefused) {
  ASSERT_NO_FATAL_FAILURE(addBackend(false));
  ASSERT_NO_FATAL_FAILURE(
      apply(frontend("10.96.1.4", LbAlgorithm::kRandom, {5, 60'000, 60'000, 10})));
  EXPECT_EQ(dial("10.96.1.4", 4)["ERR:ECONNREFUSED"], 4);
  EXPECT_EQ(backendState(0).consecutive_failures, 4u);
  ASSERT_NO_FATAL_FAILURE(serveBackend(0));
  EXPECT_EQ(dial("10.96.1.4", 1)[id(0)], 1);
  EXPECT_EQ(backendState(0).consecutive_failures, 0u) << "a success resets the count";
  backends_[0].server.kill();
  EXPECT_EQ(dial("10.96.1.4", 4)["ERR:ECONNREFUSED"], 4);
  mesh_backend_state st = backendState(0);
  EXPECT_EQ(st.consecutive_failures, 4u);
  EXPECT_EQ(st.ejected_until_ns, 0u);
  EXPECT_EQ(serviceState().ejections, 0u);

  EXPECT_EQ(dial("10.96.1.4", 1)["ERR:ECONNREFUSED"], 1);
  st = backendState(0);
  EXPECT_TRUE(mesh_is_ejected(st.ejected_until_ns, monotonicNs()))
      << "one backend at 10%: at least one may be ejected";
  EXPECT_EQ(st.connect_failures, 9u);

  EXPECT_EQ(dial("10.96.1.4", 3)["ERR:ECONNREFUSED"], 3);
  EXPECT_EQ(backendState(0).connect_failures, 9u) << "refused in connect(): no SYN left";
  EXPECT_EQ(serviceState().refused_ejected, 3u);
  EXPECT_EQ(stat(MESH_STAT_ALL_EJECTED), 3u);
  EXPECT_EQ(serviceState().live_conns, 0);
}

// An established connection whose backend stops answering (iptables drops
// everything in its netns): the third retransmission timeout in a row is an
// RTO storm, a failure; with consecutiveFailures 1 that ejects it (the only
// backend: at least one may be ejected).
TEST_F(OutlierRootTest, RtoStormOnAnEstablishedConnectionIsAFailure) {
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(
      apply(frontend("10.96.1.5", LbAlgorithm::kRandom, {1, 60'000, 60'000, 10})));
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  auto child = meshd::testing::spawnInPod(
      *client_, cgroup_.get(), [rd = go[0], wr = go[1], want = id(0)](int ready_fd) {
        close(wr);
        int fd = -1;
        std::string got = meshd::testing::tcpConnect("10.96.1.5", 80, &fd);
        (void)!write(ready_fd, got == want ? "O" : "E", 1);
        char c;
        (void)!read(rd, &c, 1);
        writeAll(fd, "ping\n");  // never acknowledged: retransmitted until the storm
        pause();
      });
  ASSERT_TRUE(child.ok()) << child.status();
  holders_.push_back(std::move(*child));
  EXPECT_EQ(backendState(0).consecutive_failures, 0u);
  ASSERT_TRUE(meshd::testing::run({"ip", "netns", "exec", backends_[0].ns->name(), "iptables", "-A",
                                   "INPUT", "-j", "DROP"})
                  .ok());
  close(go[0]);
  close(go[1]);
  // RTOs at about 0.2, 0.6 and 1.4 s; bounded at 20 s.
  for (int i = 0; i < 400 && !backendState(0).ejected_until_ns; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  mesh_backend_state st = backendState(0);
  EXPECT_GE(st.rto_events, 3u);
  EXPECT_EQ(st.connect_failures, 0u) << "the connect itself succeeded";
  EXPECT_TRUE(mesh_is_ejected(st.ejected_until_ns, monotonicNs()));
  EXPECT_EQ(serviceState().ejections, 1u);
}

// An ejected backend that leaves the service (its pod replaced, say) gives the
// service's ejected count back at once (meshd runs mesh_backend_forget on the
// freed id), and the next backend given that id starts clean.
TEST_F(OutlierRootTest, RemovedEjectedBackendReleasesItsCountAndItsIdStartsClean) {
  ASSERT_NO_FATAL_FAILURE(addBackend(false));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  Frontend fe = frontend("10.96.1.7", LbAlgorithm::kRandom, {5, 60'000, 60'000, 50});
  ASSERT_NO_FATAL_FAILURE(apply(fe));
  EXPECT_EQ(dial("10.96.1.7", 40)["ERR:ECONNREFUSED"], 5);
  ASSERT_EQ(serviceState().ejected, 1);

  Frontend without = fe;
  without.backends.erase(without.backends.begin());  // 10.0.20.2, the refusing one
  ASSERT_NO_FATAL_FAILURE(apply(without));
  EXPECT_EQ(serviceState().ejected, 0) << "the removed backend's ejection is over";

  // Back with a listener: the same address gets the lowest free id again.
  ASSERT_NO_FATAL_FAILURE(serveBackend(0));
  ASSERT_NO_FATAL_FAILURE(apply(fe));
  const mesh_backend_state st = backendState(0);
  EXPECT_EQ(st.ejected_until_ns, 0u);
  EXPECT_EQ(st.consecutive_failures, 0u);
  EXPECT_EQ(st.times_ejected, 0u);
  EXPECT_EQ(st.connect_failures, 0u);
  EXPECT_EQ(st.total_conns, 0u);
  auto counts = dial("10.96.1.7", 100);
  EXPECT_GT(counts[id(0)], 20) << "it receives connections at once";
  EXPECT_EQ(counts[id(0)] + counts[id(1)], 100);
}

// At maxEjectionPercent, an ejection whose time is over but that no connect
// has cleared yet (nothing drew that backend since) does not block the next
// one: the failing path clears it first.
TEST_F(OutlierRootTest, ExpiredEjectionNobodyClearedDoesNotHoldTheCap) {
  ASSERT_NO_FATAL_FAILURE(addBackend(false));
  ASSERT_NO_FATAL_FAILURE(addBackend(false));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  // Cap 1 (10% of 2, then of 3). First without backend 1 (reroutes from
  // ejected backend 0 would otherwise fail there too): backend 0 is nearly
  // every pick and is ejected.
  Frontend first =
      frontend("10.96.1.8", LbAlgorithm::kWeightedRandom, {5, 1'000, 1'000, 10}, {1000, 1, 1});
  first.backends.erase(first.backends.begin() + 1);
  ASSERT_NO_FATAL_FAILURE(apply(first));
  dial("10.96.1.8", 10);
  ASSERT_TRUE(mesh_is_ejected(backendState(0).ejected_until_ns, monotonicNs()));
  ASSERT_NO_FATAL_FAILURE(waitEjectionOver(0, std::chrono::seconds(5)));
  EXPECT_NE(backendState(0).ejected_until_ns, 0u) << "over, but not cleared yet";
  // Backend 0 now serves: connects rerouted to it once backend 1 is ejected
  // must not fail and hit the cap themselves.
  ASSERT_NO_FATAL_FAILURE(serveBackend(0));
  // Now backend 1 joins and is nearly every pick, and fails.
  ASSERT_NO_FATAL_FAILURE(apply(
      frontend("10.96.1.8", LbAlgorithm::kWeightedRandom, {5, 1'000, 1'000, 10}, {1, 1000, 1})));
  dial("10.96.1.8", 10);
  EXPECT_TRUE(mesh_is_ejected(backendState(1).ejected_until_ns, monotonicNs()));
  const mesh_svc_state svc = serviceState();
  EXPECT_EQ(svc.ejections, 2u);
  EXPECT_EQ(svc.ejections_skipped, 0u);
  EXPECT_EQ(svc.ejected, 1);
  EXPECT_EQ(stat(MESH_STAT_EJECTION_EXPIRED), 1u);
}

// An ejection by the proxy's L7 outlier detection (consecutive 5xx from a backend) goes into
// the kernel's ejection state through mesh_backend_eject (BPF_PROG_TYPE_SYSCALL, the same
// claim and cap as sockops): connect() to the Service VIP then skips that backend until the
// ejection time is over, and reaches it again afterwards. Three serving backends, cap 1
// (50% of 3).
TEST_F(OutlierRootTest, L7EjectionMakesConnectSkipTheBackendUntilItExpires) {
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(
      apply(frontend("10.96.1.9", LbAlgorithm::kRandom, {5, 60'000, 60'000, 50})));
  const BackendEjectorPtr& ejector = dp_->ejector();
  ASSERT_NE(ejector, nullptr);
  const SocketAddress vip = *SocketAddress::parse("10.96.1.9:80");
  auto backend = [&](size_t i) {
    return SocketAddress{*IpAddress::parse(backends_[i].addr), kPort};
  };

  // 6 s: the 60 connects below must fit in it on a loaded machine.
  const uint64_t t0 = monotonicNs();
  auto r = ejector->eject(vip, backend(0), 6'000);
  const uint64_t t1 = monotonicNs();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, EjectResult::kEjected);
  mesh_backend_state st = backendState(0);
  EXPECT_GE(st.ejected_until_ns, t0 + 6'000'000'000);
  EXPECT_LE(st.ejected_until_ns, t1 + 6'000'000'000);
  EXPECT_EQ(st.times_ejected, 1u);
  mesh_svc_state svc = serviceState();
  EXPECT_EQ(svc.ejected, 1);
  EXPECT_EQ(svc.ejections, 1u);
  EXPECT_EQ(stat(MESH_STAT_EJECTION), 1u);

  // Once ejected it stays so; the service's cap (1) holds for L7 ejections too; unknown
  // services and backends are answered as such.
  r = ejector->eject(vip, backend(0), 6'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, EjectResult::kAlreadyEjected);
  r = ejector->eject(vip, backend(1), 6'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, EjectResult::kSkippedMaxPercent);
  r = ejector->eject(*SocketAddress::parse("10.96.1.99:80"), backend(1), 6'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, EjectResult::kNoService);
  r = ejector->eject(vip, *SocketAddress::parse("10.0.99.2:8080"), 6'000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, EjectResult::kNoBackend);
  svc = serviceState();
  EXPECT_EQ(svc.ejected, 1);
  EXPECT_EQ(svc.ejections_skipped, 1u);

  // While ejected: connects to the VIP never reach it.
  auto counts = dial("10.96.1.9", 60);
  const uint64_t dialed = monotonicNs();
  ASSERT_LT(dialed, backendState(0).ejected_until_ns) << "the connects outlasted the ejection";
  EXPECT_EQ(counts[id(0)], 0);
  EXPECT_EQ(counts[id(1)] + counts[id(2)], 60);
  EXPECT_GT(stat(MESH_STAT_EJECTED_SKIPPED), 0u) << "about a third of the picks were it";

  // After it: back (the first connect that draws it ends the ejection). Missing it in 60
  // draws of three has probability (2/3)^60 ~ 3e-11.
  ASSERT_NO_FATAL_FAILURE(waitEjectionOver(0, std::chrono::seconds(15)));
  counts = dial("10.96.1.9", 60);
  EXPECT_GT(counts[id(0)], 0);
  EXPECT_EQ(counts[id(0)] + counts[id(1)] + counts[id(2)], 60);
  EXPECT_EQ(stat(MESH_STAT_EJECTION_EXPIRED), 1u);
  EXPECT_EQ(serviceState().ejected, 0);
  EXPECT_EQ(backendState(0).ejected_until_ns, 0u);
}

// LeastLatency (p2c-ewma): three backends, one behind a link that delays
// client -> backend packets by 20 ms. 300 sequential connections, each with
// three request/response exchanges so that RTT samples exist. A uniform
// choice would give the slow one 100 +- 8 (1 sd); p2c-ewma gives it only
// what exploration (1/32 of picks, a third of those it) and the first
// connections before it has a sample give it: expected well under 10.
TEST_F(OutlierRootTest, LeastLatencySendsFewerConnectionsToASlowBackend) {
  ASSERT_NO_FATAL_FAILURE(addBackend(true, std::chrono::milliseconds(20)));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(addBackend(true));
  ASSERT_NO_FATAL_FAILURE(apply(frontend("10.96.1.6", LbAlgorithm::kLeastLatency, {})));
  auto counts = dial("10.96.1.6", 300, 3);
  const int slow = counts[id(0)];
  const int fast = counts[id(1)] + counts[id(2)];
  EXPECT_EQ(slow + fast, 300) << "every connection and exchange succeeded";
  EXPECT_LE(slow, 30) << "uniform would be ~100; fast ones got " << fast;
  const mesh_backend_state s = backendState(0);
  RecordProperty("slow_connections", slow);
  RecordProperty("slow_srtt_ewma_us", s.srtt_ewma_us);
  RecordProperty("fast_srtt_ewma_us",
                 absl::StrCat(backendState(1).srtt_ewma_us, ",", backendState(2).srtt_ewma_us));
  EXPECT_GT(s.rtt_samples, 0u);
  EXPECT_GE(s.srtt_ewma_us, 15'000u) << "the 20 ms delay shows in its EWMA";
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_GT(backendState(i).rtt_samples, 0u);
    EXPECT_LT(backendState(i).srtt_ewma_us, s.srtt_ewma_us);
  }
}

}  // namespace
}  // namespace meshd::datapath
