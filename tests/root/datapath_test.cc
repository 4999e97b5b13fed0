// Root tests of the kernel datapath: the real mesh BPF programs attached to a
// temporary cgroup, driven through Datapath + BpfLbMaps (no reconciler).
//
//   netns meshd-t<pid>-<n>                       cgroup <cgroup2>/meshd-t<pid>-<n>
//   +-------------------------------------+      (pods join it; the programs
//   | lo: 10.0.1.1 10.0.1.2 10.0.1.3      |       are attached to it)
//   |     fd00:1::1 fd00:1::2             |
//   | route unreachable 10.96.0.0/12      |  <- a VIP that is not rewritten
//   | route unreachable fd00:96::/64      |     fails at once (EHOSTUNREACH)
//   | backends (not in the cgroup):       |
//   |   tcp+udp echo of "addr:port\n"     |
//   | pods (forked, in the cgroup):       |
//   |   connect(VIP) -> rewritten         |
//   +-------------------------------------+
#include "datapath/datapath.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/net.h"
#include "datapath/alias.h"
#include "datapath/preflight.h"
#include "gtest/gtest.h"
#include "tests/root/fixture.h"

namespace meshd::datapath {
namespace {

using meshd::testing::Cgroup;
using meshd::testing::Child;
using meshd::testing::errText;
using meshd::testing::Netns;
using meshd::testing::sockaddrOf;
using meshd::testing::tcpConnect;
using meshd::testing::textOf;

#define ASSERT_OK(expr)           \
  do {                            \
    auto _st = (expr);            \
    ASSERT_TRUE(_st.ok()) << _st; \
  } while (0)

constexpr const char* kPinRoot = meshd::testing::kTestPinRoot;

struct BackendSpec {
  uint32_t id;
  std::string addr;
  uint16_t port;
  uint32_t weight = 1;
};

// ---- client side, run inside pods -------------------------------------------

// ---- the fixture -------------------------------------------------------------

class DatapathRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MESHD_REQUIRE_ROOT();
    auto paths = preflight();
    ASSERT_TRUE(paths.ok()) << paths.status();
    netns_ = std::make_unique<Netns>();
    cgroup_ = std::make_unique<Cgroup>();
    for (const char* a : {"10.0.1.1/32", "10.0.1.2/32", "10.0.1.3/32"}) {
      ASSERT_OK(netns_->ip({"addr", "add", a, "dev", "lo"}));
    }
    for (const char* a : {"fd00:1::1/128", "fd00:1::2/128"}) {
      ASSERT_OK(netns_->ip({"addr", "add", a, "dev", "lo", "nodad"}));
    }
    ASSERT_OK(netns_->ip({"route", "add", "unreachable", "10.96.0.0/12"}));
    ASSERT_OK(netns_->ip({"-6", "route", "add", "unreachable", "fd00:96::/64"}));
    auto backends = meshd::testing::startBackends(*netns_, {{"10.0.1.1", 8080},
                                                            {"10.0.1.2", 8080},
                                                            {"10.0.1.3", 8080},
                                                            {"fd00:1::1", 8080},
                                                            {"fd00:1::2", 8080}});
    ASSERT_TRUE(backends.ok()) << backends.status();
    backends_ = std::move(*backends);

    auto dp = meshd::testing::openTestDatapath(*cgroup_, "t", &config_);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);
  }

  void TearDown() override {
    dp_.reset();
    dp2_.reset();
    if (!config_.instance.empty()) (void)Datapath::removePins(config_.pin_root, config_.instance);
    rmdir(kPinRoot);  // only when empty: other tests may still use it
    backends_.kill();
    cgroup_.reset();
    netns_.reset();
  }

  // Writes backends, slots (alias tables from the weights) and the service.
  void addService(uint32_t svc_id, const std::string& vip, uint16_t port, uint8_t proto,
                  uint8_t algo, const std::vector<BackendSpec>& backends) {
    std::vector<std::pair<uint32_t, mesh_backend>> bes;
    for (const auto& b : backends) {
      auto ip = IpAddress::parse(b.addr);
      ASSERT_TRUE(ip.ok());
      mesh_backend be{};
      ip->toAbi(be.addr);
      be.port = htons(b.port);
      be.proto = proto;
      be.family = ip->isV4() ? MESH_AF_INET : MESH_AF_INET6;
      be.flags = MESH_BACKEND_F_ACTIVE;
      bes.emplace_back(b.id, be);
    }
    ASSERT_OK(dp_->maps().updateBackends(bes));
    std::vector<mesh_slot> slots = aliasSlots(backends);
    std::vector<std::pair<mesh_slot_key, mesh_slot>> sl;
    for (uint32_t i = 0; i < slots.size(); ++i) sl.push_back({{svc_id, i}, slots[i]});
    ASSERT_OK(dp_->maps().updateSlots(sl));
    auto vip_ip = IpAddress::parse(vip);
    ASSERT_TRUE(vip_ip.ok());
    mesh_svc_key key{};
    vip_ip->toAbi(key.addr);
    key.port = htons(port);
    key.proto = proto;
    key.family = vip_ip->isV4() ? MESH_AF_INET : MESH_AF_INET6;
    mesh_svc svc{};
    svc.svc_id = svc_id;
    svc.slot_count = backends.size();
    svc.algo = algo;
    std::pair<mesh_svc_key, mesh_svc> e{key, svc};
    ASSERT_OK(dp_->maps().updateServices({&e, 1}));
  }

  // Slots with alias tables from the weights (the reconciler's builder).
  static std::vector<mesh_slot> aliasSlots(const std::vector<BackendSpec>& backends) {
    std::vector<uint32_t> weights;
    for (const auto& b : backends) weights.push_back(b.weight);
    std::vector<AliasEntry> table = buildAliasTable(weights);
    std::vector<mesh_slot> out(backends.size());
    for (size_t i = 0; i < backends.size(); ++i)
      out[i] = {backends[i].id, backends[i].weight, table[i].threshold, table[i].alias};
    return out;
  }

  absl::StatusOr<std::string> inPod(const std::function<std::string()>& fn) {
    return meshd::testing::runInPod(*netns_, cgroup_.get(), fn);
  }

  // Polls mesh_backend_state until pred holds (sockets close asynchronously).
  mesh_backend_state waitState(uint32_t id,
                               const std::function<bool(const mesh_backend_state&)>& pred) {
    mesh_backend_state st{};
    for (int i = 0; i < 300; ++i) {
      auto s = dp_->maps().readBackendState(id);
      if (s.ok()) st = *s;
      if (s.ok() && pred(st)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return st;
  }

  uint32_t attachedCount(bpf_attach_type type) {
    int fd = open(cgroup_->path().c_str(), O_RDONLY | O_DIRECTORY);
    uint32_t ids[16] = {0}, cnt = 16, flags = 0;
    int ret = bpf_prog_query(fd, type, 0, &flags, ids, &cnt);
    close(fd);
    return ret == 0 ? cnt : 9999;
  }

  std::unique_ptr<Netns> netns_;
  std::unique_ptr<Cgroup> cgroup_;
  Child backends_;
  DatapathConfig config_;
  DatapathPtr dp_;
  DatapathPtr dp2_;
};

// ---- tests -------------------------------------------------------------------

TEST_F(DatapathRootTest, ConnectToVipReachesBackendAndGetpeernameShowsVip) {
  addService(1, "10.96.0.10", 80, MESH_PROTO_TCP, MESH_LB_WEIGHTED_RANDOM,
             {{1, "10.0.1.1", 8080}, {2, "10.0.1.2", 8080}});
  auto out = inPod([] {
    std::string r;
    for (int i = 0; i < 20; ++i) {
      std::string peer;
      std::string id = tcpConnect("10.96.0.10", 80, nullptr, &peer);
      r += id + "|" + peer + "\n";
    }
    // Same VIP, a port that is no service: not rewritten, so unreachable.
    r += tcpConnect("10.96.0.10", 81);
    return r;
  });
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<std::string> lines = absl::StrSplit(*out, '\n');
  ASSERT_EQ(lines.size(), 21u);
  std::map<std::string, int> seen;
  for (int i = 0; i < 20; ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i], '|');
    ASSERT_EQ(f.size(), 2u) << lines[i];
    EXPECT_TRUE(f[0] == "10.0.1.1:8080" || f[0] == "10.0.1.2:8080") << f[0];
    EXPECT_EQ(f[1], "10.96.0.10:80");
    ++seen[f[0]];
  }
  EXPECT_EQ(seen.size(), 2u) << "20 connects at 1:1 all went to one backend";
  EXPECT_EQ(lines[20], "ERR:EHOSTUNREACH");
  auto stats = dp_->maps().readStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)[MESH_STAT_CONNECT_REWRITTEN], 20u);
  EXPECT_EQ((*stats)[MESH_STAT_PEERNAME_REWRITTEN], 20u);
}

// 1000 connections at weights 1:3. Tolerance: +-0.06 around 0.75 is 4.4
// standard deviations (sqrt(0.75*0.25/1000) = 0.0137).
TEST_F(DatapathRootTest, WeightsHoldOver1000Connections) {
  addService(1, "10.96.0.11", 80, MESH_PROTO_TCP, MESH_LB_WEIGHTED_RANDOM,
             {{1, "10.0.1.1", 8080, 1}, {2, "10.0.1.2", 8080, 3}});
  auto out = inPod([] {
    int a = 0, b = 0, other = 0;
    for (int i = 0; i < 1000; ++i) {
      std::string id = tcpConnect("10.96.0.11", 80);
      (id == "10.0.1.1:8080" ? a : id == "10.0.1.2:8080" ? b : other)++;
    }
    return absl::StrCat(a, " ", b, " ", other);
  });
  ASSERT_TRUE(out.ok()) << out.status();
  int a = 0, b = 0, other = 0;
  ASSERT_EQ(sscanf(out->c_str(), "%d %d %d", &a, &b, &other), 3);
  EXPECT_EQ(other, 0);
  EXPECT_NEAR(b / 1000.0, 0.75, 0.06) << "backend 1: " << a << ", backend 2: " << b;
  auto s1 = dp_->maps().readBackendState(1);
  auto s2 = dp_->maps().readBackendState(2);
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_EQ(s1->total_conns, static_cast<uint64_t>(a));
  EXPECT_EQ(s2->total_conns, static_cast<uint64_t>(b));
}

TEST_F(DatapathRootTest, VipWithoutBackendsIsRefused) {
  addService(1, "10.96.0.12", 80, MESH_PROTO_TCP, MESH_LB_RANDOM, {});
  auto out = inPod([] { return tcpConnect("10.96.0.12", 80); });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "ERR:ECONNREFUSED");
  auto stats = dp_->maps().readStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)[MESH_STAT_NO_BACKEND], 1u);
}

// In a pod: sendto(VIP) on an unconnected UDP socket of the VIP's family and
// recvfrom() the answer (sendmsg + recvmsg hooks). "<backend identity>|<source
// the app saw>" or the error.
std::string udpQuery(const std::string& vip_addr, uint16_t port) {
  socklen_t len;
  sockaddr_storage vip = sockaddrOf(vip_addr, port, &len);
  int fd = socket(vip.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sendto(fd, "q", 1, 0, reinterpret_cast<sockaddr*>(&vip), len);
  char buf[128] = {0};
  sockaddr_storage from{};
  socklen_t flen = sizeof(from);
  ssize_t n = recvfrom(fd, buf, sizeof(buf) - 1, 0, reinterpret_cast<sockaddr*>(&from), &flen);
  std::string r = n > 0 ? absl::StrCat(std::string(buf, n - 1), "|", textOf(from)) : errText(errno);
  close(fd);
  return r;
}

// udpQuery(), then the same through a connected UDP socket (connect +
// getpeername hooks). Two lines "<backend identity>|<address the app saw>".
std::string udpExchange(const std::string& vip_addr, uint16_t port) {
  std::string r = udpQuery(vip_addr, port);
  socklen_t len;
  sockaddr_storage vip = sockaddrOf(vip_addr, port, &len);
  int fd = socket(vip.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&vip), len) != 0) return r + "\n" + errText(errno);
  send(fd, "q", 1, 0);
  char buf[128] = {0};
  ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
  sockaddr_storage peer{};
  socklen_t plen = sizeof(peer);
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen);
  r += "\n" + (n > 0 ? absl::StrCat(std::string(buf, n - 1), "|", textOf(peer)) : errText(errno));
  close(fd);
  return r;
}

// Dual-stack clients (gRPC's C-core, Java) dial IPv4 through AF_INET6 sockets
// as ::ffff:a.b.c.d. connect6 folds that into the IPv4 service, rewrites to the
// IPv4 backend (v4-mapped), and getpeername6 / recvmsg6 show ::ffff:VIP.
TEST_F(DatapathRootTest, V4MappedAddressesOnIpv6SocketsAreSteered) {
  addService(1, "10.96.0.24", 80, MESH_PROTO_TCP, MESH_LB_RANDOM, {{1, "10.0.1.1", 8080}});
  addService(2, "10.96.0.54", 53, MESH_PROTO_UDP, MESH_LB_RANDOM, {{1, "10.0.1.1", 8080}});
  auto out = inPod([] {
    std::string peer;
    std::string r = tcpConnect("::ffff:10.96.0.24", 80, nullptr, &peer) + "|" + peer;
    r += "\n" + udpQuery("::ffff:10.96.0.54", 53);
    return r;
  });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "10.0.1.1:8080|::ffff:10.96.0.24:80\n"
            "10.0.1.1:8080|::ffff:10.96.0.54:53");
}

// Both exchanges of udpExchange() reached one of `backends` and showed the
// application `vip`; each hook counted once.
void expectUdpSeesVip(const absl::StatusOr<std::string>& out,
                      const std::vector<std::string>& backends, const std::string& vip,
                      Datapath& dp) {
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<std::string> lines = absl::StrSplit(*out, '\n');
  ASSERT_EQ(lines.size(), 2u) << *out;
  for (const auto& line : lines) {
    std::vector<std::string> f = absl::StrSplit(line, '|');
    ASSERT_EQ(f.size(), 2u) << line;
    EXPECT_TRUE(f[0] == backends[0] || f[0] == backends[1]) << f[0];
    EXPECT_EQ(f[1], vip);
  }
  auto stats = dp.maps().readStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)[MESH_STAT_SENDMSG_REWRITTEN], 1u);
  EXPECT_EQ((*stats)[MESH_STAT_RECVMSG_REWRITTEN], 1u);
}

TEST_F(DatapathRootTest, UdpSendtoAndConnectedUdpSeeTheVip) {
  addService(1, "10.96.0.53", 53, MESH_PROTO_UDP, MESH_LB_RANDOM,
             {{1, "10.0.1.1", 8080}, {2, "10.0.1.2", 8080}});
  expectUdpSeesVip(inPod([] { return udpExchange("10.96.0.53", 53); }),
                   {"10.0.1.1:8080", "10.0.1.2:8080"}, "10.96.0.53:53", *dp_);
}

// The same over IPv6: sendmsg6, recvmsg6, connect6 and getpeername6.
TEST_F(DatapathRootTest, Udp6SendtoAndConnectedUdpSeeTheVip) {
  addService(1, "fd00:96::53", 53, MESH_PROTO_UDP, MESH_LB_RANDOM,
             {{1, "fd00:1::1", 8080}, {2, "fd00:1::2", 8080}});
  expectUdpSeesVip(inPod([] { return udpExchange("fd00:96::53", 53); }),
                   {"fd00:1::1:8080", "fd00:1::2:8080"}, "fd00:96::53:53", *dp_);
}

TEST_F(DatapathRootTest, LiveConnsFollowOpenCloseResetAndKill) {
  addService(1, "10.96.0.13", 80, MESH_PROTO_TCP, MESH_LB_RANDOM, {{1, "10.0.1.1", 8080}});
  auto live_is = [](int64_t n) {
    return [n](const mesh_backend_state& s) { return s.live_conns == n; };
  };

  // A pod holding 3 connections open.
  auto holder = meshd::testing::spawnInPod(*netns_, cgroup_.get(), [](int ready) {
    int fds[3];
    for (int& fd : fds) {
      if (tcpConnect("10.96.0.13", 80, &fd) != "10.0.1.1:8080") _exit(1);
    }
    (void)!write(ready, "O", 1);
    pause();
  });
  ASSERT_TRUE(holder.ok()) << holder.status();
  EXPECT_EQ(waitState(1, live_is(3)).live_conns, 3);

  // Orderly close (FIN) and abortive close (RST via SO_LINGER 0).
  auto out = inPod([] {
    int a = -1, b = -1;
    std::string r = tcpConnect("10.96.0.13", 80, &a) + tcpConnect("10.96.0.13", 80, &b);
    close(a);
    linger lg{1, 0};
    setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(b);
    return r;
  });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "10.0.1.1:808010.0.1.1:8080");
  mesh_backend_state st = waitState(1, live_is(3));
  EXPECT_EQ(st.live_conns, 3);
  EXPECT_EQ(st.total_conns, 5u);

  // kill -9 of the holder: the kernel closes its sockets.
  holder->kill();
  st = waitState(1, live_is(0));
  EXPECT_EQ(st.live_conns, 0);
  EXPECT_EQ(st.connect_failures, 0u);
}

TEST_F(DatapathRootTest, ConnectFailuresAreCounted) {
  // Port 9999 has no listener: the SYN is answered with RST.
  addService(1, "10.96.0.14", 80, MESH_PROTO_TCP, MESH_LB_RANDOM, {{1, "10.0.1.1", 9999}});
  auto out = inPod([] { return tcpConnect("10.96.0.14", 80); });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "ERR:ECONNREFUSED");
  mesh_backend_state st =
      waitState(1, [](const mesh_backend_state& s) { return s.connect_failures == 1; });
  EXPECT_EQ(st.connect_failures, 1u);
  EXPECT_EQ(st.live_conns, 0);
  EXPECT_EQ(st.total_conns, 1u);
}

TEST_F(DatapathRootTest, LeastConnectionsPrefersFewerLiveConnections) {
  // First only backend 1: a pod parks 5 connections on it.
  addService(1, "10.96.0.15", 80, MESH_PROTO_TCP, MESH_LB_LEAST_CONN, {{1, "10.0.1.1", 8080}});
  auto holder = meshd::testing::spawnInPod(*netns_, cgroup_.get(), [](int ready) {
    int fds[5];
    for (int& fd : fds) {
      if (tcpConnect("10.96.0.15", 80, &fd) != "10.0.1.1:8080") _exit(1);
    }
    (void)!write(ready, "O", 1);
    pause();
  });
  ASSERT_TRUE(holder.ok()) << holder.status();
  // Then both, equal weights. P2C draws two distinct candidates, so each
  // connect compares backend 1 (5 live) with backend 2 (0 live, and the short
  // connections below close before the next connect): backend 1 gets none.
  addService(1, "10.96.0.15", 80, MESH_PROTO_TCP, MESH_LB_LEAST_CONN,
             {{1, "10.0.1.1", 8080}, {2, "10.0.1.2", 8080}});
  auto out = inPod([] {
    int a = 0;
    for (int i = 0; i < 400; ++i) a += tcpConnect("10.96.0.15", 80) == "10.0.1.1:8080";
    return std::to_string(a);
  });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::stoi(*out), 0) << "backend 1 (5 live connections) was chosen";
}

TEST_F(DatapathRootTest, MaglevIsStablePerPod) {
  addService(1, "10.96.0.16", 80, MESH_PROTO_TCP, MESH_LB_MAGLEV,
             {{1, "10.0.1.1", 8080}, {2, "10.0.1.2", 8080}, {3, "10.0.1.3", 8080}});
  std::vector<uint32_t> table = {1, 2, 3, 1, 2, 3, 1};  // size 7, prime
  ASSERT_OK(dp_->maps().setMaglevTable(1, table));
  // Now point the service at the table.
  auto contents = dp_->maps().readAll();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->services.size(), 1u);
  auto svc = contents->services[0];
  svc.second.maglev_size = table.size();
  ASSERT_OK(dp_->maps().updateServices({&svc, 1}));
  EXPECT_EQ(contents->maglev[1], table);

  auto out = inPod([] {
    std::string r;
    for (int i = 0; i < 20; ++i) r += tcpConnect("10.96.0.16", 80) + "\n";
    return r;
  });
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<std::string> lines = absl::StrSplit(*out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 20u);
  for (const auto& l : lines) EXPECT_EQ(l, lines[0]);
  EXPECT_EQ(lines[0].rfind("10.0.1.", 0), 0u) << lines[0];
}

TEST_F(DatapathRootTest, Connect6ReachesBackendAndGetpeernameShowsVip) {
  addService(1, "fd00:96::10", 80, MESH_PROTO_TCP, MESH_LB_WEIGHTED_RANDOM,
             {{1, "fd00:1::1", 8080}, {2, "fd00:1::2", 8080}});
  auto out = inPod([] {
    std::string peer;
    std::string id = tcpConnect("fd00:96::10", 80, nullptr, &peer);
    return id + "|" + peer;
  });
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<std::string> f = absl::StrSplit(*out, '|');
  ASSERT_EQ(f.size(), 2u) << *out;
  EXPECT_TRUE(f[0] == "fd00:1::1:8080" || f[0] == "fd00:1::2:8080") << f[0];
  EXPECT_EQ(f[1], "fd00:96::10:80");
}

TEST_F(DatapathRootTest, ReopenAdoptsPinsAndRemovePinsDetaches) {
  addService(1, "10.96.0.17", 80, MESH_PROTO_TCP, MESH_LB_RANDOM, {{1, "10.0.1.1", 8080}});
  EXPECT_FALSE(dp_->adopted());
  auto maps1 = dp_->mapInfo();
  ASSERT_TRUE(maps1.ok()) << maps1.status();
  EXPECT_EQ(attachedCount(BPF_CGROUP_INET4_CONNECT), 1u);

  // "meshd restarts": a second open of the same instance, then the first dies.
  auto dp2 = Datapath::open(config_);
  ASSERT_TRUE(dp2.ok()) << dp2.status();
  dp2_ = std::move(*dp2);
  EXPECT_TRUE(dp2_->adopted());
  auto maps2 = dp2_->mapInfo();
  ASSERT_TRUE(maps2.ok());
  ASSERT_EQ(maps1->size(), maps2->size());
  for (size_t i = 0; i < maps1->size(); ++i) {
    EXPECT_EQ((*maps1)[i].id, (*maps2)[i].id) << (*maps1)[i].name << " was not reused";
  }
  dp_.reset();
  for (auto type : {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_UDP4_SENDMSG,
                    BPF_CGROUP_UDP4_RECVMSG, BPF_CGROUP_INET4_GETPEERNAME, BPF_CGROUP_SOCK_OPS}) {
    EXPECT_EQ(attachedCount(type), 1u) << "attach type " << type;
  }
  // The attached program is the new instance's.
  auto progs = dp2_->programs();
  ASSERT_TRUE(progs.ok());
  int cg = open(cgroup_->path().c_str(), O_RDONLY | O_DIRECTORY);
  uint32_t ids[4] = {0}, cnt = 4, flags = 0;
  ASSERT_EQ(bpf_prog_query(cg, BPF_CGROUP_INET4_CONNECT, 0, &flags, ids, &cnt), 0);
  close(cg);
  EXPECT_EQ(ids[0], (*progs)[0].prog_id);
  EXPECT_EQ((*progs)[0].name, "mesh_connect4");

  // The service written before the restart still steers.
  auto out = inPod([] { return tcpConnect("10.96.0.17", 80); });
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "10.0.1.1:8080");

  // Pins hold the datapath alone: close our last fds, it keeps working.
  dp2_.reset();
  out = inPod([] { return tcpConnect("10.96.0.17", 80); });
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "10.0.1.1:8080");

  ASSERT_OK(Datapath::removePins(config_.pin_root, config_.instance));
  EXPECT_EQ(attachedCount(BPF_CGROUP_INET4_CONNECT), 0u);
  out = inPod([] { return tcpConnect("10.96.0.17", 80); });
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "ERR:EHOSTUNREACH");
}

TEST_F(DatapathRootTest, DumpMapDecodesEntries) {
  addService(7, "10.96.0.18", 8443, MESH_PROTO_TCP, MESH_LB_LEAST_CONN, {{3, "10.0.1.3", 8080}});
  auto svcs = dp_->dumpMap("mesh_services");
  ASSERT_TRUE(svcs.ok()) << svcs.status();
  ASSERT_EQ(svcs->size(), 1u);
  EXPECT_EQ((*svcs)[0]["vip"], "10.96.0.18");
  EXPECT_EQ((*svcs)[0]["port"], 8443);
  EXPECT_EQ((*svcs)[0]["algo"], "least_conn");
  auto bes = dp_->dumpMap("mesh_backends");
  ASSERT_TRUE(bes.ok());
  ASSERT_EQ(bes->size(), 1u);
  EXPECT_EQ((*bes)[0]["address"], "10.0.1.3");
  EXPECT_EQ((*bes)[0]["id"], 3);
  EXPECT_FALSE(dp_->dumpMap("nope").ok());
  // Deleting absent keys is success; deleting a backend clears it.
  mesh_svc_key absent{};
  ASSERT_OK(dp_->maps().deleteServices({&absent, 1}));
  uint32_t id = 3;
  ASSERT_OK(dp_->maps().deleteBackends({&id, 1}));
  bes = dp_->dumpMap("mesh_backends");
  ASSERT_TRUE(bes.ok());
  EXPECT_TRUE(bes->empty());
}

}  // namespace
}  // namespace meshd::datapath
