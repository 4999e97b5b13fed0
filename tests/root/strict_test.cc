// Root tests of the kernel side of STRICT mTLS (tc program at the host end of
// a workload's veth) and of L4 authorization at connect() for same-node pairs.
//
//   node netns (the test thread; meshd's place)
//   +------------------------------------------------------+
//   | pa: 10.1.1.1/24 fd00:1::1/64   pb: 10.1.2.1/24 fd00:2::1/64 |
//   | ip_forward on; "node" listener 10.1.1.1:7070          |
//   +----|-------------------------------|-----------------+
//        | veth                          | veth   <- mesh_strict_egress (tcx egress of pb)
//   pod A netns                      pod B netns
//   eth0 10.1.1.2 fd00:1::2          eth0 10.1.2.2 fd00:2::2
//   clients (cgroups allowed/denied) servers :8080 (STRICT) :9090
//
// A dropped SYN is seen as a connect that does not complete within a bounded
// wait (nonblocking connect + poll); the drop counters say it was STRICT.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/net.h"
#include "datapath/datapath.h"
#include "datapath/policy_maps.h"
#include "datapath/preflight.h"
#include "datapath/reconciler.h"
#include "gtest/gtest.h"
#include "state/lb_state.h"
#include "tests/root/fixture.h"

namespace meshd::datapath {
namespace {

using meshd::testing::Cgroup;
using meshd::testing::Child;
using meshd::testing::Netns;
using state::DesiredLbState;
using state::Frontend;

constexpr uint16_t kStrictPort = 8080;
constexpr uint16_t kOpenPort = 9090;
constexpr uint16_t kNodePort = 7070;
constexpr char kPodB4[] = "10.1.2.2";
constexpr char kPodB6[] = "fd00:2::2";
constexpr char kNode4[] = "10.1.1.1";

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

uint64_t cgroupIdOf(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// Connects to addr:port with a bounded wait (the SYN may be dropped) and reads
// the server's identity line. `mark` != 0 sets SO_MARK first. Returns the
// identity, "TIMEOUT" when the connection did not complete in 1.5 s, or
// errText(errno).
std::string probe(const std::string& addr, uint16_t port, uint32_t mark = 0) {
  socklen_t len;
  sockaddr_storage ss = meshd::testing::sockaddrOf(addr, port, &len);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
    int err = errno;
    close(fd);
    return absl::StrCat("SO_MARK ", meshd::testing::errText(err));
  }
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    out = meshd::testing::errText(errno);
  } else {
    pollfd p{fd, POLLIN, 0};
    // Connected and the identity line arrived (POLLIN), or failed (POLLERR).
    if (poll(&p, 1, 1500) <= 0) {
      out = "TIMEOUT";
    } else {
      int err = 0;
      socklen_t el = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
      if (err != 0) {
        out = meshd::testing::errText(err);
      } else {
        char buf[128];
        ssize_t n = read(fd, buf, sizeof(buf));
        out = n > 0 ? std::string(buf, n) : "ERR:no-identity";
        if (!out.empty() && out.back() == '\n') out.pop_back();
      }
    }
  }
  close(fd);
  return out;
}

// Sends one hand-made IP packet (header included) from the calling thread's
// namespace. Returns "" or what failed.
std::string sendRaw(int family, const std::string& dst, const std::string& packet) {
  int fd = socket(family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd < 0) return absl::StrCat("raw socket: ", strerror(errno));
  socklen_t len;
  sockaddr_storage ss = meshd::testing::sockaddrOf(dst, 0, &len);
  ssize_t n = sendto(fd, packet.data(), packet.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
  int err = errno;
  close(fd);
  return n == static_cast<ssize_t>(packet.size()) ? "" : absl::StrCat("sendto: ", strerror(err));
}

// A TCP header (20 bytes, no checksum: the packets never reach a socket).
std::string tcpHeader(uint16_t sport, uint16_t dport, uint8_t flags) {
  std::string h(20, '\0');
  h[0] = static_cast<char>(sport >> 8);
  h[1] = static_cast<char>(sport & 0xff);
  h[2] = static_cast<char>(dport >> 8);
  h[3] = static_cast<char>(dport & 0xff);
  h[12] = 0x50;  // data offset 5 words
  h[13] = static_cast<char>(flags);
  return h;
}

// IPv4 header for `payload_len` bytes of TCP from src to dst; `frag` is the
// frag_off field (host order: flags and offset).
std::string ipv4Header(const std::string& src, const std::string& dst, size_t payload_len,
                       uint16_t frag) {
  std::string h(20, '\0');
  h[0] = 0x45;
  const uint16_t total = static_cast<uint16_t>(20 + payload_len);
  h[2] = static_cast<char>(total >> 8);
  h[3] = static_cast<char>(total & 0xff);
  h[4] = 0x12;  // id
  h[6] = static_cast<char>(frag >> 8);
  h[7] = static_cast<char>(frag & 0xff);
  h[8] = 64;
  h[9] = IPPROTO_TCP;
  inet_pton(AF_INET, src.c_str(), &h[12]);
  inet_pton(AF_INET, dst.c_str(), &h[16]);
  return h;  // the kernel fills in the checksum
}

class StrictRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MESHD_REQUIRE_ROOT();
    auto paths = preflight();
    ASSERT_TRUE(paths.ok()) << paths.status();
    ASSERT_TRUE(strictSupported().ok()) << strictSupported();
    home_netns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(home_netns_, 0);
    node_ = std::make_unique<Netns>();
    pod_a_ = std::make_unique<Netns>();
    pod_b_ = std::make_unique<Netns>();
    ASSERT_NO_FATAL_FAILURE(link(*pod_a_, "pa", 1));
    ASSERT_NO_FATAL_FAILURE(link(*pod_b_, "pb", 2));
    // The links' automatic link-local addresses go through duplicate address detection
    // for a second or more after the links come up; until then neighbour discovery waits,
    // and the first IPv6 connect can outlast a 1.5 s probe. Wait for it to finish.
    for (const Netns* ns : {node_.get(), pod_a_.get(), pod_b_.get()}) {
      ASSERT_TRUE(waitNoTentativeAddresses(*ns)) << ns->name() << ": IPv6 DAD did not finish";
    }
    ASSERT_TRUE(meshd::testing::run({"ip", "netns", "exec", node_->name(), "sysctl", "-qw",
                                     "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"})
                    .ok());
    // meshd's place: the test thread works in the node namespace from here.
    ASSERT_TRUE(node_->enter().ok());
    in_node_ = true;

    node_cg_ = std::make_unique<Cgroup>();
    allowed_cg_ = std::make_unique<Cgroup>(node_cg_.get());
    denied_cg_ = std::make_unique<Cgroup>(node_cg_.get());
    auto dp = meshd::testing::openTestDatapath(*node_cg_, "strict", &config_);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);

    // Pod B: one listener per (address, port); the node: one on 7070.
    auto b = meshd::testing::startBackends(
        *pod_b_,
        {{kPodB4, kStrictPort}, {kPodB4, kOpenPort}, {kPodB6, kStrictPort}, {kPodB6, kOpenPort}});
    ASSERT_TRUE(b.ok()) << b.status();
    servers_.push_back(std::move(*b));
    auto n = meshd::testing::startBackends(*node_, {{kNode4, kNodePort}});
    ASSERT_TRUE(n.ok()) << n.status();
    servers_.push_back(std::move(*n));
  }

  void TearDown() override {
    servers_.clear();
    rec_.reset();
    dp_.reset();
    if (!config_.instance.empty()) (void)Datapath::removePins(config_.pin_root, config_.instance);
    rmdir(meshd::testing::kTestPinRoot);
    allowed_cg_.reset();
    denied_cg_.reset();
    node_cg_.reset();
    if (in_node_) setns(home_netns_, CLONE_NEWNET);
    if (home_netns_ >= 0) close(home_netns_);
    pod_a_.reset();
    pod_b_.reset();
    node_.reset();
  }

  // Polls `ip -6 addr show tentative` in `ns` until it lists nothing (true), or 10 s.
  static bool waitNoTentativeAddresses(const Netns& ns) {
    const std::string cmd = "ip -n " + ns.name() + " -6 addr show tentative 2>&1";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      FILE* f = ::popen(cmd.c_str(), "r");
      if (f == nullptr) return false;
      std::string out;
      char buf[256];
      while (size_t n = ::fread(buf, 1, sizeof(buf), f)) out.append(buf, n);
      const int rc = ::pclose(f);
      if (rc == 0 && out.empty()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // A veth: `dev` in the node netns, eth0 in `pod`, 10.1.<n>.0/24 and
  // fd00:<n>::/64 with the node end as the pod's gateway.
  void link(const Netns& pod, const std::string& dev, int n) {
    const std::string v4 = absl::StrCat("10.1.", n, "."), v6 = absl::StrCat("fd00:", n, "::");
    ASSERT_TRUE(
        node_->ip({"link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", pod.name()})
            .ok());
    ASSERT_TRUE(node_->ip({"addr", "add", v4 + "1/24", "dev", dev}).ok());
    ASSERT_TRUE(node_->ip({"addr", "add", v6 + "1/64", "dev", dev, "nodad"}).ok());
    ASSERT_TRUE(node_->ip({"link", "set", dev, "up"}).ok());
    ASSERT_TRUE(pod.ip({"addr", "add", v4 + "2/24", "dev", "eth0"}).ok());
    ASSERT_TRUE(pod.ip({"addr", "add", v6 + "2/64", "dev", "eth0", "nodad"}).ok());
    ASSERT_TRUE(pod.ip({"link", "set", "eth0", "up"}).ok());
    ASSERT_TRUE(pod.ip({"route", "add", "default", "via", v4 + "1"}).ok());
    ASSERT_TRUE(pod.ip({"-6", "route", "add", "default", "via", v6 + "1"}).ok());
  }

  // probe() from pod A, in `cgroup` (null: the test's own cgroup, not steered).
  std::string fromPodA(const std::string& addr, uint16_t port, const Cgroup* cgroup = nullptr,
                       uint32_t mark = 0) {
    auto out = meshd::testing::runInPod(*pod_a_, cgroup, [&] { return probe(addr, port, mark); });
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : "ERR:pod";
  }

  PolicyCounters counters() {
    auto c = dp_->policy().counters();
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : PolicyCounters{};
  }
  uint64_t strictDrops(const std::string& addr, uint16_t port) {
    for (const StrictCounter& c : counters().strict) {
      if (c.entry.addr == ip(addr) && c.entry.port == port) return c.syn_dropped;
    }
    ADD_FAILURE() << "no STRICT entry " << addr << " port " << port;
    return 0;
  }

  void attachPodB() {
    auto ifindex = hostIfindexOfPod(absl::StrCat("/var/run/netns/", pod_b_->name()));
    ASSERT_TRUE(ifindex.ok()) << ifindex.status();
    pb_ifindex_ = *ifindex;
    ASSERT_TRUE(dp_->attachStrict(pb_ifindex_).ok());
  }

  int home_netns_ = -1;
  bool in_node_ = false;
  std::unique_ptr<Netns> node_, pod_a_, pod_b_;
  std::unique_ptr<Cgroup> node_cg_, allowed_cg_, denied_cg_;
  DatapathConfig config_;
  DatapathPtr dp_;
  std::unique_ptr<Reconciler> rec_;
  std::vector<Child> servers_;
  int pb_ifindex_ = 0;
};

TEST_F(StrictRootTest, HostIfindexOfPodIsTheNodeEndOfItsVeth) {
  auto ifindex = hostIfindexOfPod(absl::StrCat("/var/run/netns/", pod_b_->name()));
  ASSERT_TRUE(ifindex.ok()) << ifindex.status();
  char name[IF_NAMESIZE] = {};
  ASSERT_NE(if_indextoname(static_cast<unsigned>(*ifindex), name), nullptr);
  EXPECT_STREQ(name, "pb");
  EXPECT_EQ(hostIfindexOfPod("/var/run/netns/meshd-no-such-netns").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(
      hostIfindexOfPod(absl::StrCat("/var/run/netns/", pod_b_->name()), "nosuch0").status().code(),
      absl::StatusCode::kNotFound);
  // lo has no peer: not a veth.
  EXPECT_EQ(hostIfindexOfPod(absl::StrCat("/var/run/netns/", pod_b_->name()), "lo").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(StrictRootTest, StrictDropsPlaintextSynsThatDidNotComeFromMeshd) {
  const std::string strict_id = absl::StrCat(kPodB4, ":", kStrictPort);
  const std::string open_id = absl::StrCat(kPodB4, ":", kOpenPort);
  // Before STRICT: plaintext from pod A reaches both ports.
  ASSERT_EQ(fromPodA(kPodB4, kStrictPort), strict_id);
  ASSERT_NO_FATAL_FAILURE(attachPodB());
  ASSERT_EQ(dp_->strictInterfaces(), std::vector<int>{pb_ifindex_});
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB4), kStrictPort}, true).ok());

  EXPECT_EQ(fromPodA(kPodB4, kStrictPort), "TIMEOUT") << "plaintext from another pod";
  const uint64_t after_pod = strictDrops(kPodB4, kStrictPort);
  EXPECT_GE(after_pod, 1u);
  EXPECT_EQ(fromPodA(kPodB4, kOpenPort), open_id) << "a port that is not STRICT";
  // A pod cannot forge meshd's mark: it is cleared when the packet leaves its netns.
  EXPECT_EQ(fromPodA(kPodB4, kStrictPort, nullptr, dp_->strictMark()), "TIMEOUT");
  // The node's own sockets (the node link's path too) without the mark: dropped.
  EXPECT_EQ(probe(kPodB4, kStrictPort), "TIMEOUT");
  // meshd's sockets carry the mark.
  EXPECT_EQ(probe(kPodB4, kStrictPort, dp_->strictMark()), strict_id);
  EXPECT_EQ(probe(kPodB4, kStrictPort, dp_->strictMark() | 0x1), strict_id) << "other bits too";
  EXPECT_GT(strictDrops(kPodB4, kStrictPort), after_pod);
  EXPECT_EQ(counters().strict_dropped, strictDrops(kPodB4, kStrictPort));

  // IPv6, and the whole-address entry (port 0).
  EXPECT_EQ(fromPodA(kPodB6, kStrictPort), absl::StrCat(kPodB6, ":", kStrictPort));
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB6), 0}, true).ok());
  EXPECT_EQ(fromPodA(kPodB6, kStrictPort), "TIMEOUT");
  EXPECT_EQ(fromPodA(kPodB6, kOpenPort), "TIMEOUT");
  EXPECT_GE(strictDrops(kPodB6, 0), 2u);
  EXPECT_EQ(probe(kPodB6, kOpenPort, dp_->strictMark()), absl::StrCat(kPodB6, ":", kOpenPort));
  // Pod B's own outbound connections still get their replies (SYN-ACKs are
  // not judged): pod B -> node listener works under the port-0 entry.
  auto out = meshd::testing::runInPod(*pod_b_, nullptr, [] { return probe(kNode4, kNodePort); });
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, absl::StrCat(kNode4, ":", kNodePort));

  // Removing the entries lets plaintext through again.
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB4), kStrictPort}, false).ok());
  ASSERT_TRUE(dp_->policy().replaceAll(KernelPolicy{}).ok());
  EXPECT_EQ(fromPodA(kPodB4, kStrictPort), strict_id);
  EXPECT_EQ(fromPodA(kPodB6, kOpenPort), absl::StrCat(kPodB6, ":", kOpenPort));

  // Detached: no program; the pin is gone.
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB4), kStrictPort}, true).ok());
  ASSERT_TRUE(dp_->detachStrict(pb_ifindex_).ok());
  EXPECT_TRUE(dp_->strictInterfaces().empty());
  EXPECT_EQ(fromPodA(kPodB4, kStrictPort), strict_id);
}

// Crafted packets from pod A: a SYN split after the ports (the flags byte in
// the second fragment) is judged by its first fragment; an ACK is not judged;
// an IPv6 SYN behind more extension headers than the program walks is dropped.
TEST_F(StrictRootTest, StrictJudgesFirstFragmentsAndLongIpv6Chains) {
  ASSERT_NO_FATAL_FAILURE(attachPodB());
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB4), kStrictPort}, true).ok());
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB6), kStrictPort}, true).ok());
  auto sent = meshd::testing::runInPod(*pod_a_, nullptr, [] {
    const std::string syn = tcpHeader(40000, kStrictPort, 0x02);
    std::string err;
    // A plain ACK to the STRICT port: not a connection opening.
    err += sendRaw(AF_INET, kPodB4,
                   ipv4Header("10.1.1.2", kPodB4, 20, 0) + tcpHeader(40001, kStrictPort, 0x10));
    // A SYN in two fragments: 8 bytes (ports, sequence), then the rest at offset 1.
    err += sendRaw(AF_INET, kPodB4, ipv4Header("10.1.1.2", kPodB4, 8, 0x2000) + syn.substr(0, 8));
    err += sendRaw(AF_INET, kPodB4, ipv4Header("10.1.1.2", kPodB4, 12, 0x0001) + syn.substr(8));
    // IPv6 SYN behind 7 destination-options headers (8 bytes each: PadN).
    std::string v6(40, '\0');
    v6[0] = 0x60;
    const uint16_t plen = 7 * 8 + 20;
    v6[4] = static_cast<char>(plen >> 8);
    v6[5] = static_cast<char>(plen & 0xff);
    v6[6] = 60;  // next: destination options
    v6[7] = 64;
    inet_pton(AF_INET6, "fd00:1::2", &v6[8]);
    inet_pton(AF_INET6, kPodB6, &v6[24]);
    for (int i = 0; i < 7; ++i) {
      std::string opt(8, '\0');
      opt[0] = static_cast<char>(i < 6 ? 60 : IPPROTO_TCP);
      opt[2] = 1;  // PadN
      opt[3] = 4;
      v6 += opt;
    }
    err += sendRaw(AF_INET6, kPodB6, v6 + syn);
    return err;
  });
  ASSERT_TRUE(sent.ok()) << sent.status();
  ASSERT_EQ(*sent, "");
  // Forwarding runs in softirq context: wait (bounded) for the last packet's verdict.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (counters().strict_unparsed == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(strictDrops(kPodB4, kStrictPort), 1u) << "the first fragment, not the ACK";
  PolicyCounters c = counters();
  EXPECT_EQ(c.strict_dropped, 1u);
  EXPECT_EQ(c.strict_unparsed, 1u);
}

TEST_F(StrictRootTest, StrictLinkSurvivesRestartAndIsAdopted) {
  ASSERT_NO_FATAL_FAILURE(attachPodB());
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB4), kStrictPort}, true).ok());
  dp_.reset();  // meshd stops: the pinned link and maps keep enforcing
  EXPECT_EQ(fromPodA(kPodB4, kStrictPort), "TIMEOUT");
  auto dp = Datapath::open(config_);
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  EXPECT_EQ(dp_->strictInterfaces(), std::vector<int>{pb_ifindex_});
  EXPECT_GE(strictDrops(kPodB4, kStrictPort), 1u) << "counters survive the restart";
  ASSERT_TRUE(dp_->attachStrict(pb_ifindex_).ok()) << "idempotent";
  EXPECT_EQ(fromPodA(kPodB4, kStrictPort), "TIMEOUT");
  EXPECT_EQ(probe(kPodB4, kStrictPort, dp_->strictMark()), absl::StrCat(kPodB4, ":", kStrictPort));
}

TEST_F(StrictRootTest, ReplaceAllValidatesWholeAndWritesDifferences) {
  KernelPolicy p;
  p.identities = {{111, 1}, {222, 2}};
  p.dsts = {{ip(kPodB4), true, AuthzVerdict::kDeny, true}};
  p.rules = {{1, ip(kPodB4), kStrictPort, AuthzVerdict::kAllow}};
  p.strict = {{ip(kPodB4), kStrictPort}};
  ASSERT_TRUE(dp_->policy().replaceAll(p).ok());
  auto got = dp_->policy().read();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->identities.size(), 2u);
  ASSERT_EQ(got->dsts.size(), 1u);
  EXPECT_EQ(got->dsts[0], p.dsts[0]);
  ASSERT_EQ(got->rules.size(), 1u);
  EXPECT_EQ(got->rules[0], p.rules[0]);
  EXPECT_EQ(got->strict, p.strict);

  KernelPolicy bad = p;
  bad.identities.push_back({111, 3});
  auto st = dp_->policy().replaceAll(bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("cgroup id 111"), std::string::npos) << st;
  bad = p;
  bad.identities.push_back({333, 0});
  EXPECT_EQ(dp_->policy().replaceAll(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.strict.push_back({IpAddress{}, 80});
  EXPECT_EQ(dp_->policy().replaceAll(bad).code(), absl::StatusCode::kInvalidArgument);
  got = dp_->policy().read();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->identities.size(), 2u) << "a refused batch wrote nothing";

  p.identities = {{222, 2}};
  p.rules.clear();
  ASSERT_TRUE(dp_->policy().replaceAll(p).ok());
  got = dp_->policy().read();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->identities, (std::vector<std::pair<uint64_t, uint32_t>>{{222, 2}}));
  EXPECT_TRUE(got->rules.empty());
}

class AuthzRootTest : public StrictRootTest {
 protected:
  static constexpr char kGovernedVip[] = "10.96.0.10";
  static constexpr char kOpenVip[] = "10.96.0.11";

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StrictRootTest::SetUp());
    rec_ = std::make_unique<Reconciler>(dp_->maps());
    DesiredLbState d;
    d.frontends.push_back(frontend(kGovernedVip, kPodB4, kStrictPort));
    d.frontends.push_back(frontend(kOpenVip, kNode4, kNodePort));
    ASSERT_TRUE(rec_->apply(d).ok());
    // Identity 1 may reach pod B:8080; identity 2 has no rule (default deny).
    KernelPolicy p;
    p.identities = {{cgroupIdOf(allowed_cg_->path()), 1}, {cgroupIdOf(denied_cg_->path()), 2}};
    p.dsts = {{ip(kPodB4), /*governed=*/true, AuthzVerdict::kDeny, /*strict_pass=*/true}};
    p.rules = {{1, ip(kPodB4), kStrictPort, AuthzVerdict::kAllow}};
    ASSERT_TRUE(dp_->policy().replaceAll(p).ok());
  }

  static Frontend frontend(const std::string& vip, const std::string& backend, uint16_t port) {
    Frontend fe;
    fe.ns = "test";
    fe.service = vip;
    fe.vip = ip(vip);
    fe.port = 80;
    fe.backends.push_back({ip(backend), port, 1, "", ""});
    return fe;
  }

  Reconciler::FrontendView view(const std::string& vip) {
    auto views = rec_->describe();
    EXPECT_TRUE(views.ok()) << views.status();
    if (views.ok()) {
      for (const auto& fv : *views)
        if (fv.frontend.vip == ip(vip)) return fv;
    }
    ADD_FAILURE() << "no frontend " << vip;
    return {};
  }
};

TEST_F(AuthzRootTest, DeniedClientIsRefusedAtConnectAndAllowedOneConnects) {
  const std::string id = absl::StrCat(kPodB4, ":", kStrictPort);
  EXPECT_EQ(fromPodA(kGovernedVip, 80, allowed_cg_.get()), id);
  // Refused in connect(): ECONNREFUSED at once although pod B listens.
  EXPECT_EQ(fromPodA(kGovernedVip, 80, denied_cg_.get()), "ERR:ECONNREFUSED");
  EXPECT_EQ(fromPodA(kGovernedVip, 80, denied_cg_.get()), "ERR:ECONNREFUSED");
  Reconciler::FrontendView v = view(kGovernedVip);
  EXPECT_EQ(v.counters.refused_authz, 2u);
  EXPECT_EQ(v.counters.live_conns, 0) << "a denied connect holds no reservation";
  ASSERT_EQ(v.backends.size(), 1u);
  EXPECT_EQ(v.backends[0].counters.total_conns, 1u) << "only the allowed connect was steered";
  EXPECT_EQ(v.backends[0].counters.live_conns, 0);
  EXPECT_EQ(counters().authz_denied, 2u);

  // A service whose backend is not governed: both clients connect.
  const std::string node_id = absl::StrCat(kNode4, ":", kNodePort);
  EXPECT_EQ(fromPodA(kOpenVip, 80, allowed_cg_.get()), node_id);
  EXPECT_EQ(fromPodA(kOpenVip, 80, denied_cg_.get()), node_id);
  EXPECT_EQ(view(kOpenVip).counters.refused_authz, 0u);

  // An explicit allow for identity 2, and a client without identity (id 0)
  // falls to the default (deny).
  ASSERT_TRUE(dp_->policy().setAuthzRule({2, ip(kPodB4), kStrictPort, AuthzVerdict::kAllow}).ok());
  EXPECT_EQ(fromPodA(kGovernedVip, 80, denied_cg_.get()), id);
  ASSERT_TRUE(dp_->policy().setWorkloadIdentity(cgroupIdOf(denied_cg_->path()), 0).ok());
  EXPECT_EQ(fromPodA(kGovernedVip, 80, denied_cg_.get()), "ERR:ECONNREFUSED");
  // Not governed any more: allowed whatever the rules.
  ASSERT_TRUE(dp_->policy().setAuthzDst({ip(kPodB4), false, AuthzVerdict::kDeny, true}).ok());
  EXPECT_EQ(fromPodA(kGovernedVip, 80, denied_cg_.get()), id);
  EXPECT_EQ(view(kGovernedVip).counters.refused_authz, 3u);
}

TEST_F(AuthzRootTest, DeniedConnectTakesNoRateToken) {
  // A service bucket of one token: denied connects must leave it for the allowed one.
  DesiredLbState d;
  Frontend fe = frontend(kGovernedVip, kPodB4, kStrictPort);
  fe.connect_rate.per_second = 1;
  fe.connect_rate.burst = 1;
  d.frontends.push_back(fe);
  ASSERT_TRUE(rec_->apply(d).ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(fromPodA(kGovernedVip, 80, denied_cg_.get()), "ERR:ECONNREFUSED");
  }
  EXPECT_EQ(fromPodA(kGovernedVip, 80, allowed_cg_.get()), absl::StrCat(kPodB4, ":", kStrictPort));
  Reconciler::FrontendView v = view(kGovernedVip);
  EXPECT_EQ(v.counters.refused_authz, 3u);
  EXPECT_EQ(v.counters.refused_rate, 0u);
}

TEST_F(AuthzRootTest, AuthorizedSameNodeConnectPassesStrict) {
  ASSERT_NO_FATAL_FAILURE(attachPodB());
  ASSERT_TRUE(dp_->policy().setStrict({ip(kPodB4), kStrictPort}, true).ok());
  const std::string id = absl::StrCat(kPodB4, ":", kStrictPort);
  // Through the VIP from pod A (another netns: no mark survives): the hook
  // authorized it, so its SYN passes.
  EXPECT_EQ(fromPodA(kGovernedVip, 80, allowed_cg_.get()), id);
  EXPECT_EQ(fromPodA(kGovernedVip, 80, allowed_cg_.get()), id);
  PolicyCounters c = counters();
  EXPECT_GE(c.strict_fast_pass, 2u);
  EXPECT_EQ(c.strict_dropped, 0u);
  EXPECT_EQ(c.strict_pass_failed, 0u);
  // The same client dialing pod B's address itself (no hook decision): dropped.
  EXPECT_EQ(fromPodA(kPodB4, kStrictPort, allowed_cg_.get()), "TIMEOUT");
  EXPECT_GE(counters().strict_dropped, 1u);
  // Without the STRICT pass flag the fast path is plaintext like any other.
  ASSERT_TRUE(dp_->policy().setAuthzDst({ip(kPodB4), true, AuthzVerdict::kDeny, false}).ok());
  EXPECT_EQ(fromPodA(kGovernedVip, 80, allowed_cg_.get()), "TIMEOUT");
}

// connect6: an IPv6 service whose backend is governed and STRICT.
TEST_F(AuthzRootTest, Ipv6ServiceIsAuthorizedAndItsFastPathPassesStrict) {
  constexpr char kVip6[] = "fd00:96::10";
  DesiredLbState d;
  d.frontends.push_back(frontend(kVip6, kPodB6, kStrictPort));
  ASSERT_TRUE(rec_->apply(d).ok());
  KernelPolicy p;
  p.identities = {{cgroupIdOf(allowed_cg_->path()), 1}, {cgroupIdOf(denied_cg_->path()), 2}};
  p.dsts = {{ip(kPodB6), true, AuthzVerdict::kDeny, true}};
  p.rules = {{1, ip(kPodB6), kStrictPort, AuthzVerdict::kAllow}};
  p.strict = {{ip(kPodB6), kStrictPort}};
  ASSERT_TRUE(dp_->policy().replaceAll(p).ok());
  ASSERT_NO_FATAL_FAILURE(attachPodB());
  const std::string id = absl::StrCat(kPodB6, ":", kStrictPort);
  EXPECT_EQ(fromPodA(kVip6, 80, allowed_cg_.get()), id);
  EXPECT_EQ(fromPodA(kVip6, 80, denied_cg_.get()), "ERR:ECONNREFUSED");
  EXPECT_EQ(view(kVip6).counters.refused_authz, 1u);
  EXPECT_EQ(fromPodA(kPodB6, kStrictPort, allowed_cg_.get()), "TIMEOUT") << "not via the hook";
  PolicyCounters c = counters();
  EXPECT_GE(c.strict_fast_pass, 1u);
  EXPECT_GE(c.strict_dropped, 1u);
}

}  // namespace
}  // namespace meshd::datapath
