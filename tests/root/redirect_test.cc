// Root tests of the L7 redirect (docs/design/0003-l7-proxy.md, "Redirect"):
// connect() to an L7 service's VIP lands on meshd's listener, sockops
// publishes the original destination in mesh_orig_dst, and OrigDstTable finds
// it by the accepted socket's peer. The test process plays meshd: its
// listeners are sockets created in the node's network namespace.
//
//   cgroup <node>   (programs attached here)
//   └── pod leaf
//   netns pod                                 netns node
//   vp 10.0.7.2/24, fd00:7::2/64  <── veth ──>  vn 10.0.7.1/24, fd00:7::1/64
//   unreachable 10.96.0.0/12, fd00:96::/64      backends 10.0.7.1:8080, [fd00:7::1]:8080
//                                               ("addr:port\n" on accept)
//   connect(10.96.0.10:80)   L7  ──connect4──>  "meshd" 10.0.7.1:15001 (test process)
//   connect(fd00:96::10:80)  L7  ──connect6──>  "meshd" [fd00:7::1]:15001
//   connect(10.96.0.11:80)   L4  ──connect4──>  backend 10.0.7.1:8080
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/net.h"
#include "common/scoped_fd.h"
#include "datapath/datapath.h"
#include "datapath/orig_dst.h"
#include "datapath/preflight.h"
#include "datapath/reconciler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "state/lb_state.h"
#include "tests/root/fixture.h"

namespace meshd::datapath {
namespace {

using meshd::testing::Cgroup;
using meshd::testing::Child;
using meshd::testing::errText;
using meshd::testing::Netns;
using meshd::testing::textOf;

constexpr char kNode4[] = "10.0.7.1";
constexpr char kNode6[] = "fd00:7::1";
constexpr char kPod4[] = "10.0.7.2";
constexpr char kL7Vip4[] = "10.96.0.10";
constexpr char kL4Vip4[] = "10.96.0.11";
constexpr char kL7Vip6[] = "fd00:96::10";
constexpr uint16_t kVipPort = 80;
constexpr uint16_t kBackendPort = 8080;
constexpr uint16_t kProxyPort = 15001;
// Generous: only there so that a broken redirect fails instead of hanging.
constexpr int kAcceptTimeoutMs = 10'000;

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

// What one redirected connection looked like from both ends.
struct Exchange {
  std::string client;             // the pod's view: "peer=<getpeername> reply=<line>" or an error
  std::string error;              // the listener side's failure, "" when it accepted
  std::string peer;               // the accepted socket's peer, "addr:port"
  std::optional<OrigDst> orig;    // first take()
  std::optional<OrigDst> second;  // take() again: must be gone
};

class RedirectRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MESHD_REQUIRE_ROOT();
    auto paths = preflight();
    ASSERT_TRUE(paths.ok()) << paths.status();
    pod_net_ = std::make_unique<Netns>();
    node_net_ = std::make_unique<Netns>();
    ASSERT_TRUE(pod_net_
                    ->ip({"link", "add", "vp", "type", "veth", "peer", "name", "vn", "netns",
                          node_net_->name()})
                    .ok());
    ASSERT_TRUE(pod_net_->ip({"addr", "add", std::string(kPod4) + "/24", "dev", "vp"}).ok());
    ASSERT_TRUE(pod_net_->ip({"addr", "add", "fd00:7::2/64", "dev", "vp", "nodad"}).ok());
    ASSERT_TRUE(node_net_->ip({"addr", "add", std::string(kNode4) + "/24", "dev", "vn"}).ok());
    ASSERT_TRUE(node_net_->ip({"addr", "add", "fd00:7::1/64", "dev", "vn", "nodad"}).ok());
    ASSERT_TRUE(pod_net_->ip({"link", "set", "vp", "up"}).ok());
    ASSERT_TRUE(node_net_->ip({"link", "set", "vn", "up"}).ok());
    ASSERT_TRUE(pod_net_->ip({"route", "add", "unreachable", "10.96.0.0/12"}).ok());
    ASSERT_TRUE(pod_net_->ip({"-6", "route", "add", "unreachable", "fd00:96::/64"}).ok());
    auto backends =
        meshd::testing::startBackends(*node_net_, {{kNode4, kBackendPort}, {kNode6, kBackendPort}});
    ASSERT_TRUE(backends.ok()) << backends.status();
    backends_ = std::move(*backends);

    node_ = std::make_unique<Cgroup>();
    pod_ = std::make_unique<Cgroup>(node_.get());
    openDatapath();
    ASSERT_NE(dp_, nullptr);
    ASSERT_TRUE(dp_->setRedirectTarget(ip(kNode4), ip(kNode6), kProxyPort).ok());
    listener4_ = listenInNode(kNode4);
    listener6_ = listenInNode(kNode6);
    ASSERT_TRUE(listener4_.valid());
    ASSERT_TRUE(listener6_.valid());
    ASSERT_TRUE(apply(true).ok());
  }

  void TearDown() override {
    holders_.clear();
    rec_.reset();
    dp_.reset();
    if (!config_.instance.empty()) (void)Datapath::removePins(config_.pin_root, config_.instance);
    rmdir(meshd::testing::kTestPinRoot);
    listener4_.reset();
    listener6_.reset();
    backends_.kill();
    pod_.reset();
    node_.reset();
    pod_net_.reset();
    node_net_.reset();
  }

  void openDatapath() {
    auto dp = meshd::testing::openTestDatapath(*node_, "rd", &config_);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);
    rec_ = std::make_unique<Reconciler>(dp_->maps());
    ASSERT_TRUE(rec_->adopt().ok());
  }

  static state::Frontend frontend(const std::string& vip, bool l7) {
    state::Frontend fe;
    fe.ns = "test";
    fe.service = vip;
    fe.vip = ip(vip);
    fe.port = kVipPort;
    fe.l7 = l7;
    fe.backends.push_back({ip(fe.vip.isV4() ? kNode4 : kNode6), kBackendPort, 1, "", ""});
    return fe;
  }

  // The L7 services (IPv4 and IPv6, l7 as given) and one plain L4 service.
  absl::Status apply(bool l7) {
    state::DesiredLbState d;
    d.frontends.push_back(frontend(kL7Vip4, l7));
    d.frontends.push_back(frontend(kL4Vip4, false));
    d.frontends.push_back(frontend(kL7Vip6, l7));
    return rec_->apply(d);
  }

  uint32_t svcId(const std::string& vip) {
    auto views = rec_->describe();
    EXPECT_TRUE(views.ok()) << views.status();
    if (views.ok()) {
      for (const auto& fv : *views)
        if (fv.frontend.vip == ip(vip)) return fv.svc_id;
    }
    ADD_FAILURE() << "no frontend " << vip;
    return 0;
  }

  uint64_t stat(mesh_stat s) {
    auto stats = dp_->maps().readStats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? (*stats)[s] : 0;
  }

  // A listening TCP socket of this process on addr:kProxyPort inside the
  // node's namespace (created on a thread that enters it: the socket stays
  // in that namespace).
  ScopedFd listenInNode(const std::string& addr) {
    int fd = -1;
    std::thread t([&] {
      if (!node_net_->enter().ok()) return;
      socklen_t len;
      sockaddr_storage ss = meshd::testing::sockaddrOf(addr, kProxyPort, &len);
      int l = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (ss.ss_family == AF_INET6) setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
      if (bind(l, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(l, 1024) != 0) {
        ADD_FAILURE() << "listen on " << addr << ": " << errText(errno);
        close(l);
        return;
      }
      fd = l;
    });
    t.join();
    return ScopedFd(fd);
  }

  // accept() with a hang guard; -1 after kAcceptTimeoutMs.
  static int acceptWithin(int listener, sockaddr_storage* peer, int timeout_ms = kAcceptTimeoutMs) {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return -1;
    socklen_t len = sizeof(*peer);
    return accept4(listener, reinterpret_cast<sockaddr*>(peer), &len, SOCK_CLOEXEC);
  }

  // Whether a connection waits on the listener right now (no waiting: a
  // connect() that returned has already put its connection in the queue).
  static bool pending(int listener) {
    pollfd p{listener, POLLIN, 0};
    return poll(&p, 1, 0) == 1;
  }

  // The pod connects to vip:port from a socket of `family` (AF_INET6 with an
  // IPv4 `vip` dials it v4-mapped), sends "ping\n" and reads one line back;
  // the test accepts on `listener`, takes the original destination (twice),
  // reads the ping and answers "pong\n".
  Exchange exchange(const std::string& vip, int listener, int family = 0) {
    Exchange ex;
    int result[2];
    if (pipe2(result, O_CLOEXEC) != 0) {
      ex.error = "pipe";
      return ex;
    }
    const std::string dial =
        family == AF_INET6 && vip.find(':') == std::string::npos ? "::ffff:" + vip : vip;
    auto client = meshd::testing::spawnInPod(*pod_net_, pod_.get(), [&, dial](int ready_fd) {
      close(result[0]);
      signal(SIGPIPE, SIG_IGN);
      (void)!write(ready_fd, "O", 1);
      close(ready_fd);
      socklen_t len;
      sockaddr_storage ss = meshd::testing::sockaddrOf(dial, kVipPort, &len);
      int fd = socket(ss.ss_family, SOCK_STREAM, 0);
      std::string out;
      if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        out = "connect " + errText(errno);
      } else {
        sockaddr_storage p{};
        socklen_t plen = sizeof(p);
        getpeername(fd, reinterpret_cast<sockaddr*>(&p), &plen);
        out = "peer=" + textOf(p);
        char buf[64] = {0};
        if (!meshd::testing::writeAll(fd, "ping\n")) {
          out += " send " + errText(errno);
        } else {
          ssize_t n = read(fd, buf, sizeof(buf) - 1);
          out += n > 0 ? " reply=" + std::string(buf, n) : " read " + errText(errno);
        }
      }
      meshd::testing::writeAll(result[1], out);
      _exit(0);
    });
    close(result[1]);
    if (!client.ok()) {
      close(result[0]);
      ex.error = client.status().ToString();
      return ex;
    }
    sockaddr_storage peer{};
    ScopedFd conn(acceptWithin(listener, &peer));
    if (!conn.valid()) {
      ex.error = "nothing accepted";
    } else {
      ex.peer = textOf(peer);
      ex.orig = dp_->origDstTable()->take(peer);
      ex.second = dp_->origDstTable()->take(peer);
      char buf[16] = {0};
      ssize_t n = read(conn.get(), buf, 5);
      if (n != 5 || std::string(buf, 5) != "ping\n") ex.error = "no ping";
      (void)!meshd::testing::writeAll(conn.get(), "pong\n");
    }
    ex.client = meshd::testing::readAll(result[0]);
    close(result[0]);
    client->kill();
    return ex;
  }

  // A connect from the pod whose connection goes to a backend: its identity
  // line and getpeername(), as "id peer".
  std::string connectToBackend(const std::string& vip) {
    auto out = meshd::testing::runInPod(*pod_net_, pod_.get(), [vip] {
      std::string peer;
      std::string id = meshd::testing::tcpConnect(vip, kVipPort, nullptr, &peer);
      return id + " " + peer;
    });
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : "";
  }

  std::unique_ptr<Netns> pod_net_, node_net_;
  std::unique_ptr<Cgroup> node_, pod_;
  Child backends_;
  std::vector<Child> holders_;
  ScopedFd listener4_, listener6_;
  DatapathConfig config_;
  DatapathPtr dp_;
  std::unique_ptr<Reconciler> rec_;
};

// The whole path on IPv4: redirected to the listener, the original
// destination found once by the accepted socket's peer, the VIP shown to the
// app, bytes both ways, and no backend or limit counter touched.
TEST_F(RedirectRootTest, L7VipGoesToListenerWithOriginalDestination) {
  const uint64_t redirected = stat(MESH_STAT_L7_REDIRECTED);
  const uint64_t recorded = stat(MESH_STAT_ORIG_DST_RECORDED);
  const uint64_t rewritten = stat(MESH_STAT_CONNECT_REWRITTEN);

  Exchange ex = exchange(kL7Vip4, listener4_.get());
  ASSERT_EQ(ex.error, "");
  EXPECT_EQ(ex.client, "peer=10.96.0.10:80 reply=pong\n");
  EXPECT_EQ(ex.peer.rfind(std::string(kPod4) + ":", 0), 0u) << ex.peer;
  ASSERT_TRUE(ex.orig.has_value()) << "no mesh_orig_dst entry for " << ex.peer;
  EXPECT_EQ(ex.orig->vip, ip(kL7Vip4));
  EXPECT_EQ(ex.orig->port, kVipPort);
  EXPECT_EQ(ex.orig->svc_id, svcId(kL7Vip4));
  EXPECT_FALSE(ex.second.has_value()) << "take() must delete the entry";

  EXPECT_EQ(stat(MESH_STAT_L7_REDIRECTED) - redirected, 1u);
  EXPECT_EQ(stat(MESH_STAT_ORIG_DST_RECORDED) - recorded, 1u);
  EXPECT_EQ(stat(MESH_STAT_CONNECT_REWRITTEN) - rewritten, 0u) << "no backend was chosen";
  auto views = rec_->describe();
  ASSERT_TRUE(views.ok()) << views.status();
  for (const auto& fv : *views) {
    EXPECT_EQ(fv.counters.live_conns, 0) << fv.frontend.service;
    for (const auto& b : fv.backends) EXPECT_EQ(b.counters.total_conns, 0u) << fv.frontend.service;
  }
  EXPECT_FALSE(pending(listener4_.get()));
}

// A plain service on the same datapath keeps the L4 path.
TEST_F(RedirectRootTest, NonL7VipStillGoesToItsBackend) {
  EXPECT_EQ(connectToBackend(kL4Vip4), "10.0.7.1:8080 10.96.0.11:80");
  EXPECT_FALSE(pending(listener4_.get()));
}

TEST_F(RedirectRootTest, Ipv6L7VipGoesToIpv6Listener) {
  Exchange ex = exchange(kL7Vip6, listener6_.get());
  ASSERT_EQ(ex.error, "");
  EXPECT_EQ(ex.client, "peer=fd00:96::10:80 reply=pong\n");
  EXPECT_EQ(ex.peer.rfind("fd00:7::2:", 0), 0u) << ex.peer;
  ASSERT_TRUE(ex.orig.has_value()) << "no mesh_orig_dst entry for " << ex.peer;
  EXPECT_EQ(ex.orig->vip, ip(kL7Vip6));
  EXPECT_EQ(ex.orig->port, kVipPort);
  EXPECT_EQ(ex.orig->svc_id, svcId(kL7Vip6));
  EXPECT_FALSE(ex.second.has_value());
}

// A dual-stack client dialing the IPv4 VIP v4-mapped reaches the IPv4
// listener; the entry is keyed folded to IPv4, so the IPv4 peer finds it.
TEST_F(RedirectRootTest, V4MappedClientReachesIpv4Listener) {
  Exchange ex = exchange(kL7Vip4, listener4_.get(), AF_INET6);
  ASSERT_EQ(ex.error, "");
  EXPECT_EQ(ex.client, "peer=::ffff:10.96.0.10:80 reply=pong\n");
  EXPECT_EQ(ex.peer.rfind(std::string(kPod4) + ":", 0), 0u) << ex.peer;
  ASSERT_TRUE(ex.orig.has_value()) << "no mesh_orig_dst entry for " << ex.peer;
  EXPECT_EQ(ex.orig->vip, ip(kL7Vip4));
  EXPECT_EQ(ex.orig->port, kVipPort);
  EXPECT_FALSE(ex.second.has_value());
}

// Reconciling l7 off: new connects go to backends again.
TEST_F(RedirectRootTest, TurningL7OffSendsNewConnectsToBackends) {
  ASSERT_EQ(exchange(kL7Vip4, listener4_.get()).error, "");
  ASSERT_TRUE(apply(false).ok());
  EXPECT_EQ(connectToBackend(kL7Vip4), "10.0.7.1:8080 10.96.0.10:80");
  EXPECT_EQ(connectToBackend(kL7Vip6), "fd00:7::1:8080 fd00:96::10:80");
  EXPECT_FALSE(pending(listener4_.get()));
  EXPECT_FALSE(pending(listener6_.get()));
  ASSERT_TRUE(apply(true).ok());
  Exchange again = exchange(kL7Vip4, listener4_.get());
  EXPECT_EQ(again.error, "");
  EXPECT_TRUE(again.orig.has_value());
}

// Redirect port 0: L7 services fall back to the L4 path, and a stat says so.
// A target of one family only: the other family's L7 VIPs fall back.
TEST_F(RedirectRootTest, NoRedirectTargetFallsBackToL4AndCounts) {
  ASSERT_TRUE(dp_->setRedirectTarget(ip(kNode4), ip(kNode6), 0).ok());
  EXPECT_FALSE(dp_->redirectTarget().enabled());
  uint64_t no_target = stat(MESH_STAT_L7_NO_TARGET);
  EXPECT_EQ(connectToBackend(kL7Vip4), "10.0.7.1:8080 10.96.0.10:80");
  EXPECT_EQ(stat(MESH_STAT_L7_NO_TARGET) - no_target, 1u);
  EXPECT_FALSE(pending(listener4_.get()));

  ASSERT_TRUE(dp_->setRedirectTarget(ip(kNode4), std::nullopt, kProxyPort).ok());
  no_target = stat(MESH_STAT_L7_NO_TARGET);
  EXPECT_EQ(connectToBackend(kL7Vip6), "fd00:7::1:8080 fd00:96::10:80");
  EXPECT_EQ(stat(MESH_STAT_L7_NO_TARGET) - no_target, 1u);
  EXPECT_FALSE(pending(listener6_.get()));
  Exchange ex = exchange(kL7Vip4, listener4_.get());
  EXPECT_EQ(ex.error, "");
  EXPECT_TRUE(ex.orig.has_value()) << "the IPv4 target still redirects";
}

TEST_F(RedirectRootTest, BadRedirectTargetsAreRefused) {
  auto bad = dp_->setRedirectTarget(ip(kNode6), std::nullopt, kProxyPort);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  bad = dp_->setRedirectTarget(std::nullopt, ip("::ffff:10.0.7.1"), kProxyPort);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  bad = dp_->setRedirectTarget(ip("0.0.0.0"), std::nullopt, kProxyPort);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  // The refused calls left the target as it was.
  EXPECT_EQ(dp_->redirectTarget(), (RedirectTarget{ip(kNode4), ip(kNode6), kProxyPort}));
}

// The app<->meshd hop splice: sockops on meshd's own cgroup, never on the steered
// subtree, an ancestor of it or a cgroup inside it; pinned and adopted on restart.
TEST_F(RedirectRootTest, ProxySockopsOnlyOnACgroupOutsideTheSteeredSubtree) {
  const std::string parent = std::filesystem::path(node_->path()).parent_path().string();
  for (const std::string& bad : {node_->path(), pod_->path(), parent}) {
    absl::Status s = dp_->attachProxySockops(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << bad << ": " << s;
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("steered cgroup")) << s;
  }
  EXPECT_EQ(dp_->proxySockopsCgroup(), "");
  Cgroup meshd_cg;  // a sibling of the node's cgroup, as the lab and a DaemonSet pod have
  ASSERT_TRUE(dp_->attachProxySockops(meshd_cg.path()).ok());
  EXPECT_EQ(dp_->proxySockopsCgroup(), meshd_cg.path());
  const std::string pin = dp_->instanceDir() + "/links/mesh_sockops_proxy";
  EXPECT_TRUE(std::filesystem::exists(pin));
  // A restarted meshd adopts the pinned link (same cgroup: same link id).
  uint32_t link_id = 0;
  {
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    const int fd = bpf_obj_get(pin.c_str());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
    link_id = info.id;
    close(fd);
  }
  rec_.reset();
  dp_.reset();
  openDatapath();
  ASSERT_TRUE(dp_->attachProxySockops(meshd_cg.path()).ok());
  {
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    const int fd = bpf_obj_get(pin.c_str());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
    EXPECT_EQ(info.id, link_id);
    close(fd);
  }
  rec_.reset();
  dp_.reset();  // before meshd_cg goes (the link holds the cgroup)
  (void)Datapath::removePins(config_.pin_root, config_.instance);
}

// 200 connections from 4 processes at once: each finds its own entry.
TEST_F(RedirectRootTest, ManyConcurrentConnectsAllFindTheirEntry) {
  constexpr int kProcs = 4;
  constexpr int kPerProc = 50;
  const uint64_t recorded = stat(MESH_STAT_ORIG_DST_RECORDED);
  ASSERT_TRUE(meshd::testing::spawnTogether(
                  *pod_net_, pod_.get(), kProcs,
                  [] {
                    for (int i = 0; i < kPerProc; ++i) {
                      socklen_t len;
                      sockaddr_storage ss = meshd::testing::sockaddrOf(kL7Vip4, kVipPort, &len);
                      int fd = socket(AF_INET, SOCK_STREAM, 0);  // left open: held until killed
                      if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) _exit(1);
                    }
                  },
                  &holders_)
                  .ok());
  std::set<std::string> peers;
  int found = 0;
  std::vector<ScopedFd> conns;
  for (int i = 0; i < kProcs * kPerProc; ++i) {
    sockaddr_storage peer{};
    ScopedFd c(acceptWithin(listener4_.get(), &peer));
    ASSERT_TRUE(c.valid()) << "accepted only " << i << " of " << kProcs * kPerProc;
    peers.insert(textOf(peer));
    std::optional<OrigDst> o = dp_->origDstTable()->take(peer);
    if (o.has_value() && o->vip == ip(kL7Vip4) && o->port == kVipPort) ++found;
    conns.push_back(std::move(c));
  }
  EXPECT_EQ(peers.size(), static_cast<size_t>(kProcs * kPerProc));
  EXPECT_EQ(found, kProcs * kPerProc);
  EXPECT_EQ(stat(MESH_STAT_ORIG_DST_RECORDED) - recorded, static_cast<uint64_t>(kProcs * kPerProc));
  auto left = dp_->dumpMap("mesh_orig_dst");
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_TRUE(left->empty()) << left->dump();
}

// A restarted meshd adopts mesh_orig_dst and mesh_config: the redirect
// target survives and an entry written before the restart is still found.
TEST_F(RedirectRootTest, RestartAdoptsTargetAndEntries) {
  auto client = meshd::testing::spawnInPod(*pod_net_, pod_.get(), [](int ready_fd) {
    socklen_t len;
    sockaddr_storage ss = meshd::testing::sockaddrOf(kL7Vip4, kVipPort, &len);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) _exit(1);
    (void)!write(ready_fd, "O", 1);
    pause();
  });
  ASSERT_TRUE(client.ok()) << client.status();
  holders_.push_back(std::move(*client));

  rec_.reset();
  dp_.reset();
  auto dp = Datapath::open(config_);  // same instance: adopts the pins
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  rec_ = std::make_unique<Reconciler>(dp_->maps());
  ASSERT_TRUE(rec_->adopt().ok());
  EXPECT_TRUE(dp_->adopted());
  EXPECT_EQ(dp_->redirectTarget(), (RedirectTarget{ip(kNode4), ip(kNode6), kProxyPort}));
  sockaddr_storage peer{};
  ScopedFd c(acceptWithin(listener4_.get(), &peer));
  ASSERT_TRUE(c.valid());
  std::optional<OrigDst> o = dp_->origDstTable()->take(peer);
  ASSERT_TRUE(o.has_value()) << textOf(peer);
  EXPECT_EQ(o->vip, ip(kL7Vip4));
  // And new connects are still redirected.
  EXPECT_EQ(exchange(kL7Vip4, listener4_.get()).client, "peer=10.96.0.10:80 reply=pong\n");
}

// The redirect branch sits in front of backend selection in connect4/6, whose
// verification is the expensive part (docs/design/0002: ~104k instructions
// for connect6 against the kernel's 1M limit). Keeps half the limit free.
TEST_F(RedirectRootTest, ConnectProgramsStayWellUnderTheVerifierLimit) {
  auto progs = dp_->programs();
  ASSERT_TRUE(progs.ok()) << progs.status();
  for (const ProgramInfo& p : *progs) {
    ScopedFd fd(bpf_prog_get_fd_by_id(p.prog_id));
    ASSERT_TRUE(fd.valid()) << p.name;
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    ASSERT_EQ(bpf_obj_get_info_by_fd(fd.get(), &info, &len), 0) << p.name;
    std::cout << p.name << ": " << info.verified_insns << " instructions verified\n";
    EXPECT_LT(info.verified_insns, 500'000u) << p.name;
  }
}

}  // namespace
}  // namespace meshd::datapath
