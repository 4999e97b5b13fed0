// Root tests of the sockmap fast path (bpf/sockmap.bpf.c, mesh_sockmap.bpf.h):
// every scenario runs twice on the same datapath, splice off and splice on
// (switched at run time through mesh_config), and must give the same
// observable result; with the splice on, mesh_stats must show that sk_msg
// carried the bytes, with it off that nothing was spliced.
//
//   cgroup <test>   (programs attached here)
//   ├── pod A leaf                       ├── pod B leaf
//   netns A                               netns B
//   va 10.0.5.1/24  <──── veth pair ────>  vb 10.0.5.2/24
//   unreachable 10.96.0.0/12               server on 10.0.5.2:8080
//   client: connect(10.96.5.1:80) ── connect4 rewrites to 10.0.5.2:8080
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/net.h"
#include "datapath/datapath.h"
#include "datapath/preflight.h"
#include "datapath/reconciler.h"
#include "gtest/gtest.h"
#include "state/lb_state.h"
#include "tests/root/fixture.h"

namespace meshd::datapath {
namespace {

using meshd::testing::Cgroup;
using meshd::testing::Child;
using meshd::testing::errText;
using meshd::testing::Netns;

constexpr char kVip[] = "10.96.5.1";
constexpr uint16_t kVipPort = 80;
constexpr char kServerAddr[] = "10.0.5.2";
constexpr uint16_t kServerPort = 8080;
constexpr size_t kLarge = 32u << 20;  // bytes each way in the large transfer

// Deterministic bytes (xorshift64*), independent of how they are chunked.
class Bytes {
 public:
  explicit Bytes(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1Dull;
  }
  void fill(char* p, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<char>(next() >> 56);
  }

 private:
  uint64_t s_;
};

// 64-bit FNV-1a, streaming.
struct Fnv {
  uint64_t h = 0xcbf29ce484222325ull;
  uint64_t n = 0;
  void add(const char* p, size_t len) {
    for (size_t i = 0; i < len; ++i) {
      h ^= static_cast<uint8_t>(p[i]);
      h *= 0x100000001b3ull;
    }
    n += len;
  }
  std::string text() const { return absl::StrCat(n, " bytes fnv ", absl::Hex(h)); }
};

std::string expectedText(uint64_t seed, size_t n) {
  Bytes b(seed);
  Fnv f;
  std::vector<char> buf(1 << 16);
  for (size_t off = 0; off < n; off += buf.size()) {
    size_t k = std::min(buf.size(), n - off);
    b.fill(buf.data(), k);
    f.add(buf.data(), k);
  }
  return f.text();
}

// Sends n bytes of stream `seed` in chunks of 1 B .. 256 KiB. "" or the error.
std::string sendStream(int fd, uint64_t seed, size_t n) {
  Bytes data(seed), sizes(seed + 1000);
  std::vector<char> buf(256 << 10);
  size_t sent = 0;
  while (sent < n) {
    size_t k = std::min<size_t>(1 + sizes.next() % buf.size(), n - sent);
    data.fill(buf.data(), k);
    size_t off = 0;
    while (off < k) {
      ssize_t w = send(fd, buf.data() + off, k - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return absl::StrCat("send: ", errText(errno));
      off += w;
    }
    sent += k;
  }
  return "";
}

// Reads to EOF; the checksum text, or the error after what was read. Waits
// in poll() before each read, as event-loop applications do: a read()
// blocked on a spliced socket can return EAGAIN when it is woken without
// data (a KNOWN KERNEL DIFFERENCE, see ResetWakingABlockedReader... and
// docs/design/0002), which a duplex transfer with a writer thread on the
// same socket triggers.
std::string readToEof(int fd) {
  Fnv f;
  std::vector<char> buf(64 << 10);
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, -1) < 0 && errno != EINTR) return "poll " + errText(errno);
    ssize_t r = read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return absl::StrCat(f.text(), " then ", errText(errno));
    if (r == 0) return f.text() + " EOF";
    f.add(buf.data(), r);
  }
}

bool readExactly(int fd, char* p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got += r;
  }
  return true;
}

std::string readResult(int fd) {
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, n);
  }
  return out;
}

class SockmapRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MESHD_REQUIRE_ROOT();
    auto paths = preflight();
    ASSERT_TRUE(paths.ok()) << paths.status();
    pod_a_net_ = std::make_unique<Netns>();
    pod_b_net_ = std::make_unique<Netns>();
    ASSERT_TRUE(pod_a_net_
                    ->ip({"link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
                          pod_b_net_->name()})
                    .ok());
    ASSERT_TRUE(pod_a_net_->ip({"addr", "add", "10.0.5.1/24", "dev", "va"}).ok());
    ASSERT_TRUE(pod_b_net_->ip({"addr", "add", "10.0.5.2/24", "dev", "vb"}).ok());
    ASSERT_TRUE(pod_a_net_->ip({"link", "set", "va", "up"}).ok());
    ASSERT_TRUE(pod_b_net_->ip({"link", "set", "vb", "up"}).ok());
    ASSERT_TRUE(pod_a_net_->ip({"route", "add", "unreachable", "10.96.0.0/12"}).ok());
    node_ = std::make_unique<Cgroup>();
    pod_a_ = std::make_unique<Cgroup>(node_.get());
    pod_b_ = std::make_unique<Cgroup>(node_.get());

    auto dp = meshd::testing::openTestDatapath(*node_, "sm", &config_);
    ASSERT_TRUE(dp.ok()) << dp.status();
    dp_ = std::move(*dp);
    ASSERT_TRUE(dp_->sockmap().active)
        << "the start-up probe failed on this kernel: " << dp_->sockmap().reason;
    rec_ = std::make_unique<Reconciler>(dp_->maps());
    state::DesiredLbState d;
    state::Frontend fe;
    fe.ns = "test";
    fe.service = "sockmap";
    fe.vip = *IpAddress::parse(kVip);
    fe.port = kVipPort;
    fe.backends.push_back({*IpAddress::parse(kServerAddr), kServerPort, 1, "", ""});
    d.frontends.push_back(fe);
    ASSERT_TRUE(rec_->apply(d).ok());
  }

  void TearDown() override {
    rec_.reset();
    dp_.reset();
    if (!config_.instance.empty()) (void)Datapath::removePins(config_.pin_root, config_.instance);
    rmdir(meshd::testing::kTestPinRoot);
    pod_a_.reset();
    pod_b_.reset();
    node_.reset();
    pod_a_net_.reset();
    pod_b_net_.reset();
  }

  uint64_t stat(mesh_stat s) {
    auto stats = dp_->maps().readStats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? (*stats)[s] : 0;
  }

  // One connection from pod A to the VIP; `server` runs on the accepted
  // socket in pod B, `client` on the connected one in pod A. Returns
  // "client: <its result> | server: <its result>".
  std::string exchange(const std::function<std::string(int)>& client,
                       const std::function<std::string(int)>& server) {
    int result[2];
    if (pipe2(result, O_CLOEXEC) != 0) return "pipe failed";
    auto srv =
        meshd::testing::spawnInPod(*pod_b_net_, pod_b_.get(), [&server, result](int ready_fd) {
          close(result[0]);
          signal(SIGPIPE, SIG_IGN);
          socklen_t len;
          sockaddr_storage ss = meshd::testing::sockaddrOf(kServerAddr, kServerPort, &len);
          int l = socket(AF_INET, SOCK_STREAM, 0);
          int one = 1;
          setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
          if (bind(l, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(l, 4) != 0) {
            (void)!write(ready_fd, "Ebind", 5);
            _exit(1);
          }
          (void)!write(ready_fd, "O", 1);
          close(ready_fd);
          int c = accept(l, nullptr, nullptr);
          std::string out = c < 0 ? errText(errno) : server(c);
          (void)!write(result[1], out.data(), out.size());
          _exit(0);
        });
    close(result[1]);
    if (!srv.ok()) {
      close(result[0]);
      return absl::StrCat("server: ", srv.status().ToString());
    }
    auto cli = meshd::testing::runInPod(*pod_a_net_, pod_a_.get(), [&client]() -> std::string {
      signal(SIGPIPE, SIG_IGN);
      socklen_t len;
      sockaddr_storage ss = meshd::testing::sockaddrOf(kVip, kVipPort, &len);
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        return "connect " + errText(errno);
      }
      return client(fd);
    });
    std::string server_out = readResult(result[0]);
    close(result[0]);
    srv->kill();
    return absl::StrCat("client: ", cli.ok() ? *cli : cli.status().ToString(),
                        " | server: ", server_out);
  }

  struct Run {
    std::string observed;
    uint64_t added = 0, redirected = 0, bytes = 0;
  };

  // The scenario with the splice switched `on` or off; counters are deltas.
  Run run(bool on, const std::function<std::string(int)>& client,
          const std::function<std::string(int)>& server) {
    EXPECT_TRUE(dp_->setSockmapActive(on).ok());
    Run r;
    const uint64_t added = stat(MESH_STAT_SOCKMAP_ADDED);
    const uint64_t redirected = stat(MESH_STAT_SOCKMAP_REDIRECTED);
    const uint64_t bytes = stat(MESH_STAT_SOCKMAP_BYTES);
    r.observed = exchange(client, server);
    r.added = stat(MESH_STAT_SOCKMAP_ADDED) - added;
    r.redirected = stat(MESH_STAT_SOCKMAP_REDIRECTED) - redirected;
    r.bytes = stat(MESH_STAT_SOCKMAP_BYTES) - bytes;
    return r;
  }

  // Runs both modes and checks what every scenario shares: same observable
  // result; off splices nothing; on puts both sockets in the map.
  std::pair<Run, Run> both(const std::function<std::string(int)>& client,
                           const std::function<std::string(int)>& server) {
    Run off = run(false, client, server);
    Run on = run(true, client, server);
    EXPECT_EQ(on.observed, off.observed) << "the splice changed what the applications saw";
    EXPECT_EQ(off.added, 0u);
    EXPECT_EQ(off.bytes, 0u);
    EXPECT_EQ(on.added, 2u) << "client and server socket both join mesh_sockhash";
    return {off, on};
  }

  std::unique_ptr<Netns> pod_a_net_, pod_b_net_;
  std::unique_ptr<Cgroup> node_, pod_a_, pod_b_;
  DatapathConfig config_;
  DatapathPtr dp_;
  std::unique_ptr<Reconciler> rec_;
};

// 32 MiB each way at once, in chunks of random size, each side then
// half-closes; both ends checksum what they received.
TEST_F(SockmapRootTest, LargeDuplexTransferIsByteExactAndCarriedBySplice) {
  auto client = [](int fd) {
    std::string err;
    std::thread writer([&] {
      err = sendStream(fd, 1, kLarge);
      shutdown(fd, SHUT_WR);
    });
    std::string got = readToEof(fd);
    writer.join();
    return err.empty() ? got : err;
  };
  auto server = [](int fd) {  // the same, with its own stream
    std::string err;
    std::thread writer([&] {
      err = sendStream(fd, 2, kLarge);
      shutdown(fd, SHUT_WR);
    });
    std::string got = readToEof(fd);
    writer.join();
    return err.empty() ? got : err;
  };
  auto [off, on] = both(client, server);
  EXPECT_EQ(on.observed, absl::StrCat("client: ", expectedText(2, kLarge),
                                      " EOF | server: ", expectedText(1, kLarge), " EOF"));
  EXPECT_GE(on.bytes, 2 * kLarge) << "sk_msg must have carried every byte both ways";
  EXPECT_GT(on.redirected, 0u);
}

// shutdown(SHUT_WR) reaches the server as EOF after every byte; the other
// direction keeps working afterwards.
TEST_F(SockmapRootTest, HalfCloseDeliversEofAndTheOtherDirectionKeepsWorking) {
  auto client = [](int fd) {
    std::string err = sendStream(fd, 3, 100000);
    if (!err.empty()) return err;
    if (shutdown(fd, SHUT_WR) != 0) return "shutdown " + errText(errno);
    return readToEof(fd);
  };
  auto server = [](int fd) {
    std::string got = readToEof(fd);  // returns at the client's EOF
    std::string err = sendStream(fd, 4, 1 << 20);
    close(fd);
    return err.empty() ? got : got + " " + err;
  };
  auto [off, on] = both(client, server);
  EXPECT_EQ(on.observed, absl::StrCat("client: ", expectedText(4, 1 << 20),
                                      " EOF | server: ", expectedText(3, 100000), " EOF"));
  EXPECT_GE(on.bytes, 100000u + (1 << 20));
}

// An abortive close (SO_LINGER 0) of the client resets the connection: the
// server, reading after the RST arrived, gets ECONNRESET, then EPIPE on write.
TEST_F(SockmapRootTest, ResetGivesThePeerEconnreset) {
  auto client = [](int fd) {
    std::string err = sendStream(fd, 5, 65536);
    char ack;
    if (!err.empty() || !readExactly(fd, &ack, 1)) return "no ack " + err;
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    return std::string("reset sent");
  };
  auto server = [](int fd) {
    std::vector<char> buf(65536);
    if (!readExactly(fd, buf.data(), buf.size())) return "short read " + errText(errno);
    (void)!write(fd, "k", 1);
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 10000) != 1) return std::string("no event after the reset");
    char c;
    ssize_t r = read(fd, &c, 1);
    std::string out = absl::StrCat("read ", r < 0 ? errText(errno) : std::to_string(r));
    ssize_t w = send(fd, "x", 1, MSG_NOSIGNAL);
    return absl::StrCat(out, ", write ", w < 0 ? errText(errno) : std::to_string(w));
  };
  auto [off, on] = both(client, server);
  EXPECT_EQ(off.observed, "client: reset sent | server: read ERR:ECONNRESET, write ERR:EPIPE");
}

// The same reset while the server is blocked in read(). Without the splice
// it wakes with ECONNRESET. With it, a KNOWN KERNEL DIFFERENCE (Linux 6.18,
// net/ipv4/tcp_bpf.c): tcp_bpf_recvmsg() wakes without data and returns
// EAGAIN once; the next read gives ECONNRESET. A reader that polls first (or
// reads after the RST arrived, ResetGivesThePeerEconnreset) sees no
// difference. This test pins the behaviour so that a kernel that fixes it, or
// a change of ours that widens it, shows up. (The client waits 100 ms after
// the ack so that the server is most likely asleep in read() when the RST
// comes; no timing is asserted.)
TEST_F(SockmapRootTest, ResetWakingABlockedReaderDiffersOnlyByOneEagain) {
  auto client = [](int fd) {
    char ack;
    if (!readExactly(fd, &ack, 1)) return std::string("no ack");
    usleep(100000);
    linger lg{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    return std::string("reset sent");
  };
  auto server = [](int fd) {
    (void)!write(fd, "k", 1);
    char c;
    ssize_t r = read(fd, &c, 1);  // blocks until the RST
    std::string out = absl::StrCat("read ", r < 0 ? errText(errno) : std::to_string(r));
    r = read(fd, &c, 1);
    return absl::StrCat(out, ", again ", r < 0 ? errText(errno) : std::to_string(r));
  };
  EXPECT_TRUE(dp_->setSockmapActive(false).ok());
  Run off = run(false, client, server);
  Run on = run(true, client, server);
  EXPECT_EQ(off.observed, "client: reset sent | server: read ERR:ECONNRESET, again 0");
  EXPECT_EQ(on.added, 2u);
  if (on.observed != off.observed) {
    EXPECT_EQ(on.observed, "client: reset sent | server: read ERR:EAGAIN, again ERR:ECONNRESET");
  }
}

// Request/response: 2000 messages of 1..512 bytes, each echoed before the next.
TEST_F(SockmapRootTest, EchoOfManySmallMessagesIsExact) {
  auto client = [](int fd) {
    Bytes data(7), sizes(8);
    char out[512], back[512];
    for (int i = 0; i < 2000; ++i) {
      size_t n = 1 + sizes.next() % sizeof(out);
      data.fill(out, n);
      if (send(fd, out, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n))
        return "send " + errText(errno);
      if (!readExactly(fd, back, n)) return absl::StrCat("echo ", i, " short");
      if (std::memcmp(out, back, n) != 0) return absl::StrCat("echo ", i, " differs");
    }
    shutdown(fd, SHUT_WR);
    return readToEof(fd);
  };
  auto server = [](int fd) {
    char buf[4096];
    Fnv f;
    for (;;) {
      ssize_t r = read(fd, buf, sizeof(buf));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      f.add(buf, r);
      if (send(fd, buf, r, MSG_NOSIGNAL) != r) return "echo send " + errText(errno);
    }
    return f.text();
  };
  auto [off, on] = both(client, server);
  EXPECT_EQ(on.redirected >= 4000, true) << on.redirected << " messages spliced";
}

// meshd restarting: the second open() adopts the pinned mesh_sockhash and
// its sk_msg link (switched to the new program, not attached twice), and
// new local connections are still spliced.
TEST_F(SockmapRootTest, RestartAdoptsTheSkMsgLinkAndKeepsSplicing) {
  auto linkOfSkMsg = [this]() -> uint32_t {
    auto progs = dp_->programs();
    EXPECT_TRUE(progs.ok()) << progs.status();
    if (!progs.ok()) return 0;
    for (const auto& p : *progs)
      if (p.name == "mesh_sk_msg") return p.link_id;
    return 0;
  };
  const uint32_t link = linkOfSkMsg();
  ASSERT_NE(link, 0u) << "mesh_sk_msg is attached through a pinned link on this kernel";
  rec_.reset();
  dp_.reset();  // meshd stops; pins stay
  auto dp = Datapath::open(config_);
  ASSERT_TRUE(dp.ok()) << dp.status();
  dp_ = std::move(*dp);
  EXPECT_TRUE(dp_->adopted());
  EXPECT_TRUE(dp_->sockmap().active) << dp_->sockmap().reason;
  EXPECT_EQ(linkOfSkMsg(), link) << "the pinned link is reused, not a second one made";
  rec_ = std::make_unique<Reconciler>(dp_->maps());
  ASSERT_TRUE(rec_->adopt().ok());

  auto client = [](int fd) {
    std::string err = sendStream(fd, 9, 1 << 20);
    shutdown(fd, SHUT_WR);
    return err.empty() ? readToEof(fd) : err;
  };
  auto server = [](int fd) {
    std::string got = readToEof(fd);
    close(fd);
    return got;
  };
  Run on = run(true, client, server);
  EXPECT_EQ(on.observed, absl::StrCat("client: ", Fnv().text(),
                                      " EOF | server: ", expectedText(9, 1 << 20), " EOF"));
  EXPECT_EQ(on.added, 2u);
  EXPECT_GE(on.bytes, 1u << 20);
}

}  // namespace
}  // namespace meshd::datapath
