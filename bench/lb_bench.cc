// lb_bench: the foundation's benchmark (docs/benchmarks/foundation.md).
//
// 1. Connect + request latency through a VIP versus directly to the backend,
//    measured side by side in one run, interleaved (VIP, direct, VIP, ...) so
//    that machine noise hits both alike:
//
//      netns meshd-t<pid>-N            cgroup (programs attached)
//      ┌───────────────────────────────────────────────┐
//      │ client (in the cgroup) ── connect(10.96.0.1:80) │  rewritten in connect4
//      │        └──────────────── connect(10.0.1.1:8080) │  direct
//      │ echo server 10.0.1.1:8080 (not in the cgroup)   │
//      └───────────────────────────────────────────────┘
//    Each sample: socket(), connect(), send 64 bytes, receive 64 bytes, close().
//    A second pair measures a request on an open connection (the VIP costs
//    nothing after connect: both numbers should match).
//
// 2. Reconcile time: 10,000 services x 10 backends written into the real maps
//    of a second, idle instance (full apply, no-op apply, 1% churn, adoption by
//    a restarted reconciler, delete all).
//
// Needs root. Prints a markdown report on stdout; scripts/bench-foundation.sh
// adds the machine header and writes docs/benchmarks/foundation.md.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "datapath/datapath.h"
#include "datapath/preflight.h"
#include "datapath/reconciler.h"
#include "state/lb_state.h"
#include "tests/root/fixture.h"

namespace {

using meshd::IpAddress;
using meshd::datapath::Datapath;
using meshd::datapath::DatapathConfig;
using meshd::datapath::Reconciler;
using meshd::state::DesiredLbState;
using meshd::state::Frontend;
using meshd::testing::Cgroup;
using meshd::testing::Netns;

constexpr char kVip[] = "10.96.0.1";
constexpr uint16_t kVipPort = 80;
constexpr char kBackend[] = "10.0.1.1";
constexpr uint16_t kBackendPort = 8080;
constexpr size_t kPayload = 64;

double nowUs() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

sockaddr_in sockAddr(const char* addr, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr, &sa.sin_addr);
  return sa;
}

bool readFull(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd, buf + got, n - got, 0);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// One epoll loop echoing whatever arrives; runs until killed.
void echoServer(int ready_fd) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa = sockAddr(kBackend, kBackendPort);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(lfd, 4096) != 0) {
    perror("echo server bind/listen");
    _exit(1);
  }
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  char c = 'O';  // the fixture's "ready" byte
  if (write(ready_fd, &c, 1) != 1) _exit(1);
  std::vector<epoll_event> events(256);
  char buf[4096];
  for (;;) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          int cfd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK);
          if (cfd < 0) break;
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = cfd;
          epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
        }
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof(buf), 0);
      if (r <= 0) {
        close(fd);
        continue;
      }
      (void)!send(fd, buf, static_cast<size_t>(r), MSG_NOSIGNAL);
    }
  }
}

// Connect + 64-byte request/response + close. Returns microseconds, or -1.
double connectRequest(const char* addr, uint16_t port) {
  char out[kPayload];
  char in[kPayload];
  std::memset(out, 'x', sizeof(out));
  double t0 = nowUs();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in sa = sockAddr(addr, port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      send(fd, out, sizeof(out), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(out)) ||
      !readFull(fd, in, sizeof(in))) {
    close(fd);
    return -1;
  }
  close(fd);
  return nowUs() - t0;
}

int openConn(const char* addr, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in sa = sockAddr(addr, port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

double request(int fd) {
  char out[kPayload];
  char in[kPayload];
  std::memset(out, 'y', sizeof(out));
  double t0 = nowUs();
  if (send(fd, out, sizeof(out), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(out)) ||
      !readFull(fd, in, sizeof(in)))
    return -1;
  return nowUs() - t0;
}

struct Samples {
  std::vector<double> vip, direct, vip_req, direct_req;
};

// Runs in the client pod; returns the four sample series as text lines.
std::string clientRun(int iterations, int warmup) {
  std::ostringstream out;
  for (int i = 0; i < warmup; ++i) {
    connectRequest(kVip, kVipPort);
    connectRequest(kBackend, kBackendPort);
  }
  std::vector<double> vip, direct;
  vip.reserve(iterations);
  direct.reserve(iterations);
  for (int i = 0; i < iterations; ++i) {
    // Alternate which goes first so neither always runs on a warmer cache.
    if (i % 2 == 0) {
      vip.push_back(connectRequest(kVip, kVipPort));
      direct.push_back(connectRequest(kBackend, kBackendPort));
    } else {
      direct.push_back(connectRequest(kBackend, kBackendPort));
      vip.push_back(connectRequest(kVip, kVipPort));
    }
  }
  int vfd = openConn(kVip, kVipPort);
  int dfd = openConn(kBackend, kBackendPort);
  std::vector<double> vreq, dreq;
  if (vfd >= 0 && dfd >= 0) {
    for (int i = 0; i < warmup; ++i) {
      request(vfd);
      request(dfd);
    }
    for (int i = 0; i < iterations; ++i) {
      vreq.push_back(request(vfd));
      dreq.push_back(request(dfd));
    }
  }
  close(vfd);
  close(dfd);
  auto dump = [&](const char* name, const std::vector<double>& v) {
    out << name;
    for (double d : v) out << ' ' << d;
    out << '\n';
  };
  dump("vip", vip);
  dump("direct", direct);
  dump("vip_req", vreq);
  dump("direct_req", dreq);
  return out.str();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

int failures(const std::vector<double>& v) {
  return static_cast<int>(std::count_if(v.begin(), v.end(), [](double d) { return d < 0; }));
}

std::vector<double> valid(const std::vector<double>& v) {
  std::vector<double> out;
  for (double d : v)
    if (d >= 0) out.push_back(d);
  return out;
}

absl::Status latencyBench(int iterations, int warmup, std::ostream& report) {
  Netns ns;
  Cgroup cg;
  RETURN_IF_ERROR(ns.ip({"addr", "add", absl::StrCat(kBackend, "/32"), "dev", "lo"}));
  // The VIP range is unreachable in the namespace: a missed rewrite fails.
  RETURN_IF_ERROR(ns.ip({"route", "add", "unreachable", "10.96.0.0/16"}));
  RETURN_IF_ERROR(
      meshd::testing::run({"ip", "netns", "exec", ns.name(), "sysctl", "-q", "-w",
                           "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1"}));
  DatapathConfig cfg;
  cfg.instance = absl::StrCat("bench-lat-", getpid());
  cfg.cgroup_path = cg.path();
  cfg.max_services = 1024;
  cfg.max_backends = 1024;
  cfg.max_slots = 4096;
  auto dp = Datapath::open(cfg);
  if (!dp.ok()) return dp.status();
  struct PinCleanup {
    std::string root, inst;
    ~PinCleanup() { (void)Datapath::removePins(root, inst); }
  } pins{cfg.pin_root, cfg.instance};
  Reconciler rec((*dp)->maps());
  DesiredLbState desired;
  Frontend fe;
  fe.ns = "bench";
  fe.service = "echo";
  fe.vip = ip(kVip);
  fe.port = kVipPort;
  fe.backends.push_back({ip(kBackend), kBackendPort, 1, "", ""});
  desired.frontends.push_back(fe);
  RETURN_IF_ERROR(rec.apply(desired));

  auto server = meshd::testing::spawnInPod(ns, nullptr, echoServer);
  if (!server.ok()) return server.status();
  auto result = meshd::testing::runInPod(ns, &cg, [&] { return clientRun(iterations, warmup); });
  if (!result.ok()) return result.status();

  Samples s;
  for (absl::string_view line : absl::StrSplit(*result, '\n', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.empty()) continue;
    std::vector<double>* dst = parts[0] == "vip"          ? &s.vip
                               : parts[0] == "direct"     ? &s.direct
                               : parts[0] == "vip_req"    ? &s.vip_req
                               : parts[0] == "direct_req" ? &s.direct_req
                                                          : nullptr;
    if (dst == nullptr) continue;
    for (size_t i = 1; i < parts.size(); ++i) dst->push_back(std::stod(parts[i]));
  }
  int failed = failures(s.vip) + failures(s.direct) + failures(s.vip_req) + failures(s.direct_req);
  auto row = [&](const char* what, const std::vector<double>& vip,
                 const std::vector<double>& direct) {
    auto v = valid(vip), d = valid(direct);
    double v50 = percentile(v, 50), v99 = percentile(v, 99);
    double d50 = percentile(d, 50), d99 = percentile(d, 99);
    report << absl::StrFormat("| %s | %.1f | %.1f | %.1f | %.1f | %.3f | %.3f |\n", what, d50, v50,
                              d99, v99, d50 > 0 ? v50 / d50 : 0, d99 > 0 ? v99 / d99 : 0);
  };
  report << "## Connect + request latency: VIP vs direct\n\n";
  report << absl::StrFormat(
      "%d samples each, interleaved, after %d warm-up rounds; 64-byte request and response; "
      "one network namespace, client in the meshd cgroup. Failed samples: %d.\n\n",
      iterations, warmup, failed);
  report << "| measurement | direct p50 (µs) | VIP p50 (µs) | direct p99 (µs) | VIP p99 (µs) | "
            "ratio p50 | ratio p99 |\n|---|---|---|---|---|---|---|\n";
  row("connect + request + close", s.vip, s.direct);
  row("request on an open connection", s.vip_req, s.direct_req);
  report << "\n";
  if (failed > 0) return absl::InternalError(absl::StrCat(failed, " samples failed"));
  return absl::OkStatus();
}

DesiredLbState manyServices(int services, int backends_per_service, int variant) {
  DesiredLbState d;
  d.frontends.reserve(services);
  uint32_t next_backend = 0;
  for (int i = 0; i < services; ++i) {
    Frontend fe;
    fe.ns = "bench";
    fe.service = absl::StrCat("svc-", i);
    // VIPs 10.96.0.0/16 upwards: 10.96.x.y.
    fe.vip = ip(absl::StrCat("10.", 96 + i / 65536, ".", (i / 256) % 256, ".", i % 256));
    fe.port = 80;
    for (int j = 0; j < backends_per_service; ++j) {
      uint32_t b = next_backend++;
      // 1% churn: in `variant` > 0, every 100th service replaces its first backend.
      if (variant > 0 && i % 100 == 0 && j == 0) b += 1u << 22;
      IpAddress a = ip(absl::StrCat("10.", 128 + (b >> 16), ".", (b >> 8) & 0xff, ".", b & 0xff));
      fe.backends.push_back({a, 8080, 1, "", ""});
    }
    d.frontends.push_back(std::move(fe));
  }
  return d;
}

absl::Status reconcileBench(int services, int per, std::ostream& report) {
  Cgroup cg;
  DatapathConfig cfg;
  cfg.instance = absl::StrCat("bench-rec-", getpid());
  cfg.cgroup_path = cg.path();
  cfg.max_services = 2 * static_cast<uint32_t>(services) + 1024;
  cfg.max_backends = 2 * static_cast<uint32_t>(services * per) + 1024;
  cfg.max_slots = 2 * static_cast<uint32_t>(services * per) + 1024;
  auto dp = Datapath::open(cfg);
  if (!dp.ok()) return dp.status();
  struct PinCleanup {
    std::string root, inst;
    ~PinCleanup() { (void)Datapath::removePins(root, inst); }
  } pins{cfg.pin_root, cfg.instance};

  DesiredLbState full = manyServices(services, per, 0);
  DesiredLbState churn = manyServices(services, per, 1);
  report << "## Reconcile time\n\n";
  report << absl::StrFormat(
      "%d services x %d backends (%d slots) into the real maps (batched writes).\n\n", services,
      per, services * per);
  report << "| step | seconds | entries written or deleted |\n|---|---|---|\n";
  Reconciler rec((*dp)->maps());
  auto step = [&](const char* what, auto fn) -> absl::Status {
    double t0 = nowUs();
    RETURN_IF_ERROR(fn());
    double secs = (nowUs() - t0) / 1e6;
    report << absl::StrFormat("| %s | %.3f | %d |\n", what, secs, rec.stats().last_writes);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(step("first apply (empty maps)", [&] { return rec.apply(full); }));
  RETURN_IF_ERROR(step("same state again (no-op)", [&] { return rec.apply(full); }));
  RETURN_IF_ERROR(step("1% of services change one backend", [&] { return rec.apply(churn); }));
  Reconciler restarted((*dp)->maps());
  double t0 = nowUs();
  RETURN_IF_ERROR(restarted.adopt());
  double adopt_secs = (nowUs() - t0) / 1e6;
  report << absl::StrFormat("| restart: adopt (read every map back) | %.3f | 0 |\n", adopt_secs);
  t0 = nowUs();
  RETURN_IF_ERROR(restarted.apply(churn));
  report << absl::StrFormat("| restart: re-apply same state after adopt | %.3f | %d |\n",
                            (nowUs() - t0) / 1e6, restarted.stats().last_writes);
  t0 = nowUs();
  RETURN_IF_ERROR(restarted.apply(DesiredLbState{}));
  report << absl::StrFormat("| delete everything | %.3f | %d |\n\n", (nowUs() - t0) / 1e6,
                            restarted.stats().last_writes);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshd foundation benchmark: VIP vs direct latency, reconcile time"};
  int iterations = 10000;
  int warmup = 500;
  int services = 10000;
  int per = 10;
  app.add_option("--iterations", iterations, "latency samples per series");
  app.add_option("--warmup", warmup, "warm-up rounds");
  app.add_option("--services", services, "services for the reconcile benchmark");
  app.add_option("--backends-per-service", per, "backends per service");
  CLI11_PARSE(app, argc, argv);

  auto host = meshd::datapath::preflight();
  if (!host.ok()) {
    std::fprintf(stderr, "lb_bench: %s\n", std::string(host.status().message()).c_str());
    return 1;
  }
  std::ostringstream report;
  absl::Status st = latencyBench(iterations, warmup, report);
  if (st.ok()) st = reconcileBench(services, per, report);
  std::fputs(report.str().c_str(), stdout);
  if (!st.ok()) {
    std::fprintf(stderr, "lb_bench: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
