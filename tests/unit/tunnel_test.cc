// The node-to-node tunnel (userspace/tunnel) on loopback with real OpenSSL, nghttp2 and the
// test PKI (scripts/gen-test-certs.sh): pooled CONNECT streams, backpressure, the handshake
// refusals and their counters, inbound hook denials, resumption and rotation.
#include "tunnel/tunnel.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <random>

#include "gtest/gtest.h"
#include "tunnel_test_util.h"

namespace meshd::tunnel {
namespace {

using testing::certPath;
using testing::EchoServer;
using testing::LoopThread;
using testing::uriPrefix;
using testing::writeAll;

constexpr char kTd[] = "spiffe://cluster.local/";
constexpr char kNodePrefix[] = "spiffe://cluster.local/meshd/node/";

std::shared_ptr<const Credentials> creds(const std::string& name) {
  auto c = Credentials::fromFiles(certPath(name + ".chain.pem"), certPath(name + ".key"));
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// Polls `pred` (generous limit: only there to avoid a hang).
template <typename F>
bool waitFor(F pred) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    usleep(1000);
  }
  return pred();
}

std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  std::mt19937 rng(seed);
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Reads until EOF or error; `err` gets errno of a failed read (0 on EOF).
std::string readAll(int fd, int* err = nullptr) {
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (err != nullptr) *err = n == 0 ? 0 : errno;
    return out;
  }
}

void setRecvTimeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

class TunnelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);
    auto t = TrustBundle::fromFile(certPath("bundle.pem"));
    ASSERT_TRUE(t.ok()) << t.status();
    trust_ = *t;
    client_id_ = std::make_shared<Identity>("client", creds("client"));
    node_id_ = std::make_shared<Identity>("n2", creds("node-n2"));
  }
  void TearDown() override {
    if (HasFailure()) {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& l : logs_) fprintf(stderr, "log: %s\n", l.c_str());
      auto dump = [](const char* who, const TunnelCounters& c) {
        fprintf(stderr,
                "%s: conns %lu ok %lu resumed %lu connfail %lu opened %lu refused %lu reset %lu\n",
                who, c.connections_opened.load(), c.handshakes_ok.load(),
                c.handshakes_resumed.load(), c.connections_failed.load(), c.streams_opened.load(),
                c.streams_refused.load(), c.streams_reset.load());
      };
      if (client_) dump("client", client_->counters());
      if (server_) dump("server", server_->counters());
    }
    loop_.sync([&] {
      client_.reset();
      server_.reset();
    });
    loop_.stop();
  }

  LogSink sink() {
    return [this](std::string_view line) {
      std::lock_guard<std::mutex> lock(mu_);
      logs_.emplace_back(line);
    };
  }
  bool logged(const std::string& needle) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& l : logs_) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }

  void startServer(InboundHook hook = nullptr, TunnelLimits limits = {},
                   const char* listen_on = "127.0.0.1:0") {
    if (!hook) {
      hook = [this](const InboundRequest& r) {
        std::lock_guard<std::mutex> lock(mu_);
        inbound_.push_back(r.peer_identity);
        sources_.push_back(r.source.valid() ? r.source.toString() : "");
        return InboundDecision::allowWithMark(0);
      };
    }
    loop_.sync([&] {
      auto s = TunnelServer::create(loop_.loop(), node_id_, server_trust_ ? server_trust_ : trust_,
                                    server_verifier_ ? server_verifier_ : uriPrefix(kTd), hook,
                                    limits, sink());
      ASSERT_TRUE(s.ok()) << s.status();
      server_ = std::move(*s);
      auto a = server_->listen(*SocketAddress::parse(listen_on));
      ASSERT_TRUE(a.ok()) << a.status();
      addr_ = *a;
    });
  }
  void startClient(TunnelLimits limits = {}) {
    loop_.sync([&] {
      auto c = TunnelClient::create(loop_.loop(), trust_, limits, sink());
      ASSERT_TRUE(c.ok()) << c.status();
      client_ = std::move(*c);
    });
  }
  SocketAddress echoDst(const EchoServer& echo) {
    return *SocketAddress::parse("127.0.0.1:" + std::to_string(echo.port()));
  }
  // A socketpair: one end relayed by the tunnel to `dst`, the other returned (blocking).
  ScopedFd open(const SocketAddress& dst, std::shared_ptr<Identity> id = nullptr) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    StreamRequest req;
    req.peer = addr_;
    req.verify_peer = uriPrefix(kNodePrefix);
    req.dst = dst;
    req.source = *SocketAddress::parse("10.1.2.3:40000");
    ScopedFd relayed(sv[0]);
    loop_.sync([&] { client_->openStream(id ? id : client_id_, req, std::move(relayed)); });
    setRecvTimeout(sv[1], 20);
    return ScopedFd(sv[1]);
  }
  std::string echoOnce(int fd, const std::string& data) {
    EXPECT_TRUE(writeAll(fd, data.data(), data.size()));
    std::string got;
    char buf[65536];
    while (got.size() < data.size()) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  size_t clientConnections() {
    size_t n = 0;
    loop_.sync([&] { n = client_->connections(); });
    return n;
  }

  LoopThread loop_;
  std::shared_ptr<const TrustBundle> trust_;
  std::shared_ptr<const TrustBundle> server_trust_;  // default: trust_
  PeerVerifier server_verifier_;                     // default: uriPrefix(kTd)
  std::shared_ptr<Identity> client_id_;
  std::shared_ptr<Identity> node_id_;
  std::unique_ptr<TunnelServer> server_;
  std::unique_ptr<TunnelClient> client_;
  SocketAddress addr_;
  std::mutex mu_;
  std::vector<std::string> logs_;
  std::vector<std::string> inbound_;
  std::vector<std::string> sources_;
};

TEST_F(TunnelTest, FiftyConcurrentStreamsShareOnePooledConnection) {
  EchoServer echo;
  startServer();
  startClient();
  constexpr int kStreams = 50;
  std::vector<ScopedFd> fds;
  for (int i = 0; i < kStreams; ++i) fds.push_back(open(echoDst(echo)));
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      const std::string data = pattern(64 * 1024 + static_cast<size_t>(i) * 997, i);
      int fd = fds[i].get();
      std::thread writer([&] {
        EXPECT_TRUE(writeAll(fd, data.data(), data.size()));
        shutdown(fd, SHUT_WR);  // half-close towards the destination...
      });
      int err = -1;
      std::string got = readAll(fd, &err);  // ...whose echo still comes back, then its EOF
      writer.join();
      EXPECT_EQ(err, 0) << "stream " << i << ": " << strerror(err);
      EXPECT_EQ(got.size(), data.size()) << "stream " << i;
      if (got == data) ++good;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), kStreams);
  EXPECT_EQ(clientConnections(), 1u);
  EXPECT_EQ(client_->counters().handshakes_ok.load(), 1u);
  EXPECT_EQ(server_->counters().handshakes_ok.load(), 1u);
  EXPECT_EQ(server_->counters().streams_opened.load(), static_cast<uint64_t>(kStreams));
  EXPECT_EQ(echo.accepted(), kStreams);
  // The source address header reached the inbound hook.
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(sources_.size(), static_cast<size_t>(kStreams));
  EXPECT_EQ(sources_[0], "10.1.2.3:40000");
  EXPECT_EQ(inbound_[0], "spiffe://cluster.local/ns/default/sa/client");
}

TEST_F(TunnelTest, SixteenMebibytesToASlowReaderStayWithinTheBufferBound) {
  EchoServer echo;
  TunnelLimits limits;
  startServer(nullptr, limits);
  startClient(limits);
  ScopedFd fd = open(echoDst(echo));
  const std::string data = pattern(16 << 20, 7);
  std::thread writer([&] {
    EXPECT_TRUE(writeAll(fd.get(), data.data(), data.size()));
    shutdown(fd.get(), SHUT_WR);
  });
  std::string got;
  char buf[4096];
  while (true) {
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (got.size() % (256 * 1024) < sizeof buf) usleep(2000);  // a slow reader
  }
  writer.join();
  ASSERT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data);
  const uint64_t bound = limits.h2.initial_stream_window + limits.read_chunk;
  EXPECT_GT(client_->counters().stream_buffer_peak.load(), 0u);
  EXPECT_LE(client_->counters().stream_buffer_peak.load(), bound);
  EXPECT_LE(server_->counters().stream_buffer_peak.load(), bound);
  EXPECT_EQ(client_->counters().bytes_to_tunnel.load(), data.size());
  EXPECT_EQ(client_->counters().bytes_from_tunnel.load(), data.size());
}

// A blocking OpenSSL client with its own settings; the handshake is expected to fail.
void rawClient(const SocketAddress& addr, const std::string& cert,
               const std::function<void(SSL_CTX*)>& configure) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  static const unsigned char kAlpn[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn);
  if (!cert.empty()) {
    ASSERT_EQ(SSL_CTX_use_certificate_chain_file(ctx, certPath(cert + ".chain.pem").c_str()), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey_file(ctx, certPath(cert + ".key").c_str(), SSL_FILETYPE_PEM),
              1);
  }
  if (configure) configure(ctx);
  ScopedFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  socklen_t len = addr.toSockaddr(&ss);
  ASSERT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  setRecvTimeout(fd.get(), 20);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd.get());
  if (SSL_connect(ssl) == 1) {
    char buf[256];
    int n = SSL_read(ssl, buf, sizeof buf);  // TLS 1.3: the server's verdict comes now
    EXPECT_LE(n, 0) << "the server accepted the connection";
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
}

TEST_F(TunnelTest, ServerRefusesBadClientsAndCountsWhy) {
  startServer();
  struct Case {
    const char* name;
    std::string cert;
    std::function<void(SSL_CTX*)> configure;
    HandshakeFailure want;
  };
  const std::vector<Case> cases = {
      {"no client certificate", "", nullptr, HandshakeFailure::kNoPeerCert},
      {"cert from other-root", "other-ca", nullptr, HandshakeFailure::kUntrusted},
      {"expired cert", "expired", nullptr, HandshakeFailure::kExpired},
      {"not-yet-valid cert", "not-yet-valid", nullptr, HandshakeFailure::kNotYetValid},
      {"wrong trust domain (verifier)", "wrong-td", nullptr, HandshakeFailure::kVerifierRefused},
      {"TLS 1.2 only", "client",
       [](SSL_CTX* c) { SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION); },
       HandshakeFailure::kProtocolVersion},
      // A weak TLS 1.2 cipher is refused already by the version: TLS 1.2 is never spoken.
      {"weak TLS 1.2 cipher only", "client",
       [](SSL_CTX* c) {
         SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
         SSL_CTX_set_cipher_list(c, "AES128-SHA");
       },
       HandshakeFailure::kProtocolVersion},
      {"no ALPN h2", "client", [](SSL_CTX* c) { SSL_CTX_set_alpn_protos(c, nullptr, 0); },
       HandshakeFailure::kNoAlpn},
      {"TLS 1.3 with a suite we do not allow", "client",
       [](SSL_CTX* c) {
         SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
         SSL_CTX_set_ciphersuites(c, "TLS_AES_128_CCM_8_SHA256");
       },
       HandshakeFailure::kNoSharedCipher},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const uint64_t before = server_->counters().failed(c.want);
    rawClient(addr_, c.cert, c.configure);
    EXPECT_TRUE(waitFor([&] { return server_->counters().failed(c.want) == before + 1; }))
        << "counter " << handshakeFailureName(c.want) << " = "
        << server_->counters().failed(c.want);
  }
  EXPECT_EQ(server_->counters().handshakes_ok.load(), 0u);
  // Logged once per (peer, reason): a second no-cert attempt adds no line.
  size_t lines = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lines = logs_.size();
  }
  rawClient(addr_, "", nullptr);
  EXPECT_TRUE(
      waitFor([&] { return server_->counters().failed(HandshakeFailure::kNoPeerCert) == 2; }));
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(logs_.size(), lines);
}

TEST_F(TunnelTest, TunnelClientWithAnUntrustedCertIsRefusedAndItsStreamClosed) {
  EchoServer echo;
  startServer();
  startClient();
  auto bad = std::make_shared<Identity>("bad", creds("other-ca"));
  ScopedFd fd = open(echoDst(echo), bad);
  int err = -1;
  std::string got = readAll(fd.get(), &err);
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(
      waitFor([&] { return server_->counters().failed(HandshakeFailure::kUntrusted) == 1; }));
  EXPECT_TRUE(
      waitFor([&] { return client_->counters().failed(HandshakeFailure::kPeerAlert) == 1; }));
  EXPECT_EQ(echo.accepted(), 0);
}

TEST_F(TunnelTest, ClientRefusesAServerTheVerifierRejects) {
  EchoServer echo;
  node_id_ = std::make_shared<Identity>("n2", creds("server"));  // not a node identity
  startServer();
  startClient();
  ScopedFd fd = open(echoDst(echo));
  std::string got = readAll(fd.get());
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(
      waitFor([&] { return client_->counters().failed(HandshakeFailure::kVerifierRefused) == 1; }));
  EXPECT_EQ(echo.accepted(), 0);
}

TEST_F(TunnelTest, InboundDenyGives403AndClosesTheClientFd) {
  EchoServer echo;
  startServer([](const InboundRequest&) { return InboundDecision::deny(403, "not allowed here"); });
  startClient();
  ScopedFd fd = open(echoDst(echo));
  writeAll(fd.get(), "hello", 5);
  int err = -1;
  std::string got = readAll(fd.get(), &err);
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(waitFor([&] { return client_->counters().streams_refused.load() == 1; }));
  EXPECT_EQ(server_->counters().streams_refused.load(), 1u);
  EXPECT_TRUE(logged("403 not allowed here"));
  EXPECT_EQ(echo.accepted(), 0);
  // The connection survives a refused stream: the next stream uses it too.
  EXPECT_EQ(clientConnections(), 1u);
}

TEST_F(TunnelTest, DestinationDownGives503) {
  startServer();
  startClient();
  // A port nobody listens on.
  ScopedFd probe(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(probe.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  socklen_t len = sizeof sin;
  getsockname(probe.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  SocketAddress dst = *SocketAddress::parse("127.0.0.1:" + std::to_string(ntohs(sin.sin_port)));
  probe.reset();
  ScopedFd fd = open(dst);
  std::string got = readAll(fd.get());
  EXPECT_TRUE(got.empty());
  EXPECT_TRUE(waitFor([&] { return client_->counters().streams_refused.load() == 1; }));
  EXPECT_TRUE(logged("503 connect failed"));
}

TEST_F(TunnelTest, SecondConnectionToTheSamePeerResumes) {
  EchoServer echo;
  startServer();
  startClient();
  {
    ScopedFd fd = open(echoDst(echo));
    EXPECT_EQ(echoOnce(fd.get(), "first"), "first");
  }
  EXPECT_EQ(client_->counters().handshakes_resumed.load(), 0u);
  loop_.sync([&] { client_->closeAll(); });
  ScopedFd fd = open(echoDst(echo));
  EXPECT_EQ(echoOnce(fd.get(), "second"), "second");
  EXPECT_EQ(client_->counters().handshakes_ok.load(), 2u);
  EXPECT_EQ(client_->counters().handshakes_resumed.load(), 1u);
  EXPECT_EQ(server_->counters().handshakes_resumed.load(), 1u);
  // The resumed session still carries the client's identity.
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(inbound_.size(), 2u);
  EXPECT_EQ(inbound_[1], "spiffe://cluster.local/ns/default/sa/client");
}

TEST_F(TunnelTest, RotationKeepsLiveStreamsAndNewConnectionsPresentTheNewCertificate) {
  EchoServer echo;
  startServer();
  startClient();
  ScopedFd live = open(echoDst(echo));
  EXPECT_EQ(echoOnce(live.get(), "before rotation"), "before rotation");
  client_id_->rotate(creds("node-n1"));
  ScopedFd fresh = open(echoDst(echo));
  EXPECT_EQ(echoOnce(fresh.get(), "new cert"), "new cert");
  EXPECT_EQ(echoOnce(live.get(), "after rotation"), "after rotation");
  EXPECT_EQ(clientConnections(), 2u);
  // The ticket of the old credentials was not used (it would resume as the old identity).
  EXPECT_EQ(client_->counters().handshakes_resumed.load(), 0u);
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(inbound_.size(), 2u);
  EXPECT_EQ(inbound_[0], "spiffe://cluster.local/ns/default/sa/client");
  EXPECT_EQ(inbound_[1], "spiffe://cluster.local/meshd/node/n1");
}

TEST_F(TunnelTest, PoolOpensAnotherConnectionAtTheStreamLimit) {
  EchoServer echo;
  startServer();
  TunnelLimits limits;
  limits.h2.max_concurrent_streams = 2;
  startClient(limits);
  std::vector<ScopedFd> fds;
  for (int i = 0; i < 5; ++i) fds.push_back(open(echoDst(echo)));
  for (int i = 0; i < 5; ++i) {
    std::string msg = "stream " + std::to_string(i);
    EXPECT_EQ(echoOnce(fds[i].get(), msg), msg);
  }
  EXPECT_EQ(clientConnections(), 3u);
}

TEST_F(TunnelTest, UnreachablePeerClosesTheStreamFd) {
  EchoServer echo;
  startClient();
  // addr_ is a port nobody listens on.
  ScopedFd probe(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(probe.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  socklen_t len = sizeof sin;
  getsockname(probe.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  addr_ = *SocketAddress::parse("127.0.0.1:" + std::to_string(ntohs(sin.sin_port)));
  probe.reset();
  ScopedFd fd = open(echoDst(echo));
  EXPECT_TRUE(readAll(fd.get()).empty());
  EXPECT_TRUE(waitFor([&] { return client_->counters().connections_failed.load() == 1; }));
  EXPECT_EQ(clientConnections(), 0u);
}

TEST_F(TunnelTest, TcpResetOfTheDestinationResetsTheStream) {
  // A destination that accepts and resets at once.
  ScopedFd lst(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(lst.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  listen(lst.get(), 8);
  socklen_t len = sizeof sin;
  getsockname(lst.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  startServer();
  startClient();
  ScopedFd fd = open(*SocketAddress::parse("127.0.0.1:" + std::to_string(ntohs(sin.sin_port))));
  ScopedFd accepted(accept(lst.get(), nullptr, nullptr));
  ASSERT_TRUE(accepted.valid());
  EXPECT_TRUE(waitFor([&] { return client_->counters().streams_opened.load() == 1; }));
  writeAll(fd.get(), "x", 1);
  char c;
  ASSERT_EQ(recv(accepted.get(), &c, 1, 0), 1);  // relaying works
  linger lin{1, 0};
  setsockopt(accepted.get(), SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
  accepted.reset();  // RST
  int err = -1;
  readAll(fd.get(), &err);
  EXPECT_TRUE(waitFor([&] { return client_->counters().streams_reset.load() == 1; }));
  EXPECT_TRUE(waitFor([&] { return server_->counters().streams_reset.load() == 1; }));
}

TEST_F(TunnelTest, DestinationHalfClosesFirstAndTheClientKeepsSending) {
  ScopedFd lst(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(lst.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin);
  listen(lst.get(), 8);
  socklen_t len = sizeof sin;
  getsockname(lst.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  std::string received;
  std::thread dst([&] {
    ScopedFd c(accept(lst.get(), nullptr, nullptr));
    setRecvTimeout(c.get(), 20);
    writeAll(c.get(), "greeting", 8);
    shutdown(c.get(), SHUT_WR);   // the destination is done talking...
    received = readAll(c.get());  // ...but still listens
  });
  startServer();
  startClient();
  ScopedFd fd = open(*SocketAddress::parse("127.0.0.1:" + std::to_string(ntohs(sin.sin_port))));
  int err = -1;
  EXPECT_EQ(readAll(fd.get(), &err), "greeting");  // then EOF: the half-close arrived
  EXPECT_EQ(err, 0);
  const std::string tail = pattern(300 * 1024, 3);
  EXPECT_TRUE(writeAll(fd.get(), tail.data(), tail.size()));
  shutdown(fd.get(), SHUT_WR);
  dst.join();
  EXPECT_TRUE(received == tail) << received.size();
  EXPECT_TRUE(waitFor([&] { return clientConnections() == 1; }));
  EXPECT_EQ(client_->counters().streams_reset.load(), 0u);
  EXPECT_EQ(server_->counters().streams_reset.load(), 0u);
}

TEST_F(TunnelTest, Ipv6PeerAndDestination) {
  EchoServer echo(/*v6=*/true);
  std::string authority;
  startServer(
      [&](const InboundRequest& r) {
        authority = r.dst.toString();
        return InboundDecision::allowWithMark(0);
      },
      {}, "[::1]:0");
  startClient();
  ScopedFd fd = open(*SocketAddress::parse("[::1]:" + std::to_string(echo.port())));
  EXPECT_EQ(echoOnce(fd.get(), "over v6"), "over v6");
  loop_.sync([] {});
  EXPECT_EQ(authority, "[::1]:" + std::to_string(echo.port()));
  EXPECT_TRUE(addr_.ip.family == AF_INET6);
}

TEST_F(TunnelTest, TheHooksMarkIsSetOnTheUpstreamSocketOr503) {
  EchoServer echo;
  startServer([](const InboundRequest&) { return InboundDecision::allowWithMark(0x2a); });
  startClient();
  ScopedFd fd = open(echoDst(echo));
  if (geteuid() == 0) {  // CAP_NET_ADMIN: SO_MARK works
    EXPECT_EQ(echoOnce(fd.get(), "marked"), "marked");
  } else {  // without it the stream is refused, not sent unmarked
    EXPECT_TRUE(readAll(fd.get()).empty());
    EXPECT_TRUE(waitFor([&] { return logged("503 SO_MARK"); }));
  }
}

TEST_F(TunnelTest, ServerDrainLetsLiveStreamsFinish) {
  EchoServer echo;
  startServer();
  startClient();
  ScopedFd live = open(echoDst(echo));
  EXPECT_EQ(echoOnce(live.get(), "before drain"), "before drain");
  loop_.sync([&] { server_->drain(); });
  EXPECT_EQ(echoOnce(live.get(), "while draining"), "while draining");
  // A new stream does not go on the draining connection; the listener is gone.
  ScopedFd refused = open(echoDst(echo));
  EXPECT_TRUE(readAll(refused.get()).empty());
  EXPECT_EQ(echoOnce(live.get(), "still here"), "still here");
  shutdown(live.get(), SHUT_WR);
  int err = -1;
  EXPECT_TRUE(readAll(live.get(), &err).empty());
  EXPECT_EQ(err, 0);
  size_t server_conns = 1;
  EXPECT_TRUE(waitFor([&] {
    loop_.sync([&] { server_conns = server_->connections(); });
    return server_conns == 0;
  }));
  EXPECT_TRUE(waitFor([&] { return clientConnections() == 0; }));
  EXPECT_EQ(client_->counters().streams_reset.load(), 0u);
}

TEST_F(TunnelTest, ServerConnectionLimit) {
  EchoServer echo;
  TunnelLimits limits;
  limits.max_server_connections = 1;
  startServer(nullptr, limits);
  startClient();
  ScopedFd first = open(echoDst(echo));
  EXPECT_EQ(echoOnce(first.get(), "one"), "one");
  auto other = std::make_shared<Identity>("other", creds("client"));  // another pool key
  ScopedFd second = open(echoDst(echo), other);
  EXPECT_TRUE(readAll(second.get()).empty());
  EXPECT_EQ(server_->counters().connections_rejected.load(), 1u);
  EXPECT_EQ(echoOnce(first.get(), "still one"), "still one");
}

TEST_F(TunnelTest, IdleConnectionsClose) {
  EchoServer echo;
  startServer();
  TunnelLimits limits;
  limits.idle_timeout_ms = 20;
  startClient(limits);
  {
    ScopedFd fd = open(echoDst(echo));
    EXPECT_EQ(echoOnce(fd.get(), "ping"), "ping");
  }  // the app closes: EOF both ways ends the stream
  EXPECT_TRUE(waitFor([&] { return clientConnections() == 0; }));
  EXPECT_EQ(client_->counters().connections_failed.load(), 0u);
}

TEST_F(TunnelTest, AFailedConnectionFailsOnlyItsOwnStreams) {
  EchoServer echo;
  startServer();
  startClient();
  // A second server (another "node") on the same loop.
  std::unique_ptr<TunnelServer> other;
  SocketAddress other_addr;
  loop_.sync([&] {
    other =
        std::move(*TunnelServer::create(loop_.loop(), node_id_, trust_, uriPrefix(kTd), nullptr));
    other_addr = *other->listen(*SocketAddress::parse("127.0.0.1:0"));
  });
  ScopedFd a = open(echoDst(echo));
  SocketAddress main_addr = addr_;
  addr_ = other_addr;
  ScopedFd b = open(echoDst(echo));
  addr_ = main_addr;
  EXPECT_EQ(echoOnce(a.get(), "a1"), "a1");
  EXPECT_EQ(echoOnce(b.get(), "b1"), "b1");
  loop_.sync([&] { other.reset(); });  // node B goes away: its connections close
  int err = -1;
  readAll(b.get(), &err);  // b is closed (EOF on the socketpair)
  EXPECT_EQ(echoOnce(a.get(), "a2"), "a2");
  EXPECT_TRUE(waitFor([&] { return clientConnections() == 1; }));
}

TEST_F(TunnelTest, TrustBundleWithTwoRootsAndServerRotation) {
  EchoServer echo;
  startServer();
  startClient();
  std::vector<std::string> seen;
  auto record = [&](X509* leaf, STACK_OF(X509)*) {
    seen.push_back(testing::uriOf(leaf));
    return absl::OkStatus();
  };
  auto openWith = [&](std::shared_ptr<Identity> id) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    StreamRequest req;
    req.peer = addr_;
    req.verify_peer = record;
    req.dst = echoDst(echo);
    ScopedFd relayed(sv[0]);
    loop_.sync([&] { client_->openStream(id, req, std::move(relayed)); });
    setRecvTimeout(sv[1], 20);
    return ScopedFd(sv[1]);
  };
  ScopedFd first = openWith(client_id_);
  EXPECT_EQ(echoOnce(first.get(), "root"), "root");
  // The server rotates to a certificate issued by the bundle's second root.
  node_id_->rotate(creds("server-root2"));
  auto other_client = std::make_shared<Identity>("client-2", creds("client"));
  ScopedFd second = openWith(other_client);
  EXPECT_EQ(echoOnce(second.get(), "root2"), "root2");
  EXPECT_EQ(echoOnce(first.get(), "still"), "still");
  loop_.sync([] {});
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], "spiffe://cluster.local/meshd/node/n2");
  EXPECT_EQ(seen[1], "spiffe://cluster.local/ns/default/sa/server");
}

TEST_F(TunnelTest, ServerRootRotationAcceptsChainsOfTheNewBundle) {
  EchoServer echo;
  server_trust_ = *TrustBundle::fromFile(certPath("root2.crt"));  // not the client's root
  startServer();
  startClient();
  {
    ScopedFd fd = open(echoDst(echo));
    EXPECT_TRUE(readAll(fd.get()).empty());
    EXPECT_TRUE(
        waitFor([&] { return server_->counters().failed(HandshakeFailure::kUntrusted) == 1; }));
  }
  loop_.sync([&] { ASSERT_TRUE(server_->setTrustBundle(trust_).ok()); });
  ScopedFd fd = open(echoDst(echo));
  EXPECT_EQ(echoOnce(fd.get(), "trusted now"), "trusted now");
}

TEST_F(TunnelTest, ResumedSessionsAreCheckedByTheVerifierAgain) {
  EchoServer echo;
  auto allow = std::make_shared<std::atomic<bool>>(true);
  server_verifier_ = [allow](X509*, STACK_OF(X509)*) {
    return allow->load() ? absl::OkStatus() : absl::PermissionDeniedError("revoked");
  };
  startServer();
  startClient();
  {
    ScopedFd fd = open(echoDst(echo));
    EXPECT_EQ(echoOnce(fd.get(), "one"), "one");
  }
  loop_.sync([&] { client_->closeAll(); });
  allow->store(false);
  ScopedFd fd = open(echoDst(echo));
  EXPECT_TRUE(readAll(fd.get()).empty());
  EXPECT_TRUE(
      waitFor([&] { return server_->counters().failed(HandshakeFailure::kVerifierRefused) == 1; }));
  EXPECT_EQ(server_->counters().handshakes_resumed.load(), 0u);
  EXPECT_TRUE(logged("revoked"));
}

// --- EpollLoop ---------------------------------------------------------------------------

struct Recorder final : Task {
  std::vector<int>* order = nullptr;
  int tag = 0;
  int runs = 0;
  void run() override {
    ++runs;
    order->push_back(tag);
  }
};

TEST(EpollLoopTest, TimersFireInDeadlineOrderAndCancelledOnesDoNot) {
  LoopThread t;
  std::vector<int> order;
  Recorder a, b, c, d;
  for (auto [r, tag] : {std::pair{&a, 1}, {&b, 2}, {&c, 3}, {&d, 4}}) {
    r->order = &order;
    r->tag = tag;
  }
  t.sync([&] {
    uint64_t now = t.loop().nowMs();
    t.loop().wakeAt(&a, now + 30);
    t.loop().wakeAt(&b, now + 10);
    t.loop().wakeAt(&c, now + 20);
    t.loop().wakeAt(&c, now + 40);  // re-armed: one wake, at the new deadline
    t.loop().wakeAt(&d, now + 5);
    t.loop().cancel(&d);
  });
  EXPECT_TRUE(waitFor([&] {
    size_t n = 0;
    t.sync([&] { n = order.size(); });
    return n == 3;
  }));
  t.sync([] {});
  EXPECT_EQ(order, (std::vector<int>{2, 1, 3}));
  EXPECT_EQ(c.runs, 1);
  EXPECT_EQ(d.runs, 0);
}

TEST(EpollLoopTest, FlushLaterRunsOnceAfterTheBatch) {
  LoopThread t;
  std::vector<int> order;
  Recorder f, g;
  f.order = g.order = &order;
  f.tag = 1;
  g.tag = 2;
  t.sync([&] {
    t.loop().flushLater(&f);
    t.loop().flushLater(&f);
    t.loop().flushLater(&g);
    t.loop().cancel(&g);
    order.push_back(0);  // still inside the posted function: nothing ran yet
  });
  t.sync([] {});
  EXPECT_EQ(order, (std::vector<int>{0, 1}));
  EXPECT_EQ(f.runs, 1);
}

}  // namespace
}  // namespace meshd::tunnel
