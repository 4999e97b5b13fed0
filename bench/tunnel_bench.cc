// tunnel_bench: CPU cost of the node-to-node tunnel (userspace/tunnel) on loopback. Not a test.
// The client and the server each run on their own EpollLoop thread; their CPU time is read
// from the threads' CPU clocks, so the app side, the echo/sink servers and the kernel's
// loopback work on other threads are not counted (the tunnel's own syscalls are).
//
//   tunnel_bench [--mb N] [--streams N] [--handshakes N]
//
// Prints a markdown table: CPU µs per MiB relayed (one stream, app → destination), CPU µs
// per short stream (CONNECT + 100 bytes echoed + close, pooled connection), and CPU µs per
// full and resumed handshake.
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "tunnel/tunnel.h"
#include "tunnel_test_util.h"

using namespace meshd;
using namespace meshd::tunnel;
using meshd::tunnel::testing::certPath;
using meshd::tunnel::testing::EchoServer;
using meshd::tunnel::testing::LoopThread;
using meshd::tunnel::testing::uriPrefix;
using meshd::tunnel::testing::writeAll;

namespace {

double threadCpuSeconds(LoopThread& t) {
  clockid_t cid;
  pthread_getcpuclockid(t.handle(), &cid);
  timespec ts;
  clock_gettime(cid, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double wallSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Reads and discards; counts bytes.
class SinkServer {
 public:
  SinkServer() {
    listener_ = ScopedFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin);
    listen(listener_.get(), 16);
    socklen_t len = sizeof sin;
    getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&sin), &len);
    port_ = ntohs(sin.sin_port);
    thread_ = std::thread([this] {
      int fd = accept(listener_.get(), nullptr, nullptr);
      std::vector<char> buf(256 * 1024);
      while (true) {
        ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        bytes_ += static_cast<uint64_t>(n);
      }
      close(fd);
    });
  }
  ~SinkServer() { thread_.join(); }
  uint16_t port() const { return port_; }
  uint64_t bytes() const { return bytes_.load(); }

 private:
  ScopedFd listener_;
  uint16_t port_ = 0;
  std::atomic<uint64_t> bytes_{0};
  std::thread thread_;
};

struct Setup {
  LoopThread client_loop;
  LoopThread server_loop;
  std::shared_ptr<const TrustBundle> trust;
  std::shared_ptr<Identity> client_id;
  std::shared_ptr<Identity> node_id;
  std::unique_ptr<TunnelClient> client;
  std::unique_ptr<TunnelServer> server;
  SocketAddress addr;

  Setup() {
    trust = *TrustBundle::fromFile(certPath("bundle.pem"));
    client_id = std::make_shared<Identity>(
        "client", *Credentials::fromFiles(certPath("client.chain.pem"), certPath("client.key")));
    node_id = std::make_shared<Identity>(
        "n2", *Credentials::fromFiles(certPath("node-n2.chain.pem"), certPath("node-n2.key")));
    server_loop.sync([&] {
      server = std::move(*TunnelServer::create(server_loop.loop(), node_id, trust,
                                               uriPrefix("spiffe://cluster.local/"), nullptr));
      addr = *server->listen(*SocketAddress::parse("127.0.0.1:0"));
    });
    client_loop.sync([&] { client = std::move(*TunnelClient::create(client_loop.loop(), trust)); });
  }
  ~Setup() {
    client_loop.sync([&] { client.reset(); });
    server_loop.sync([&] { server.reset(); });
  }
  ScopedFd open(uint16_t port) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    StreamRequest req;
    req.peer = addr;
    req.verify_peer = uriPrefix("spiffe://cluster.local/meshd/node/");
    req.dst = *SocketAddress::parse("127.0.0.1:" + std::to_string(port));
    ScopedFd relayed(sv[0]);
    client_loop.sync([&] { client->openStream(client_id, req, std::move(relayed)); });
    return ScopedFd(sv[1]);
  }
  double cpuClient() { return threadCpuSeconds(client_loop); }
  double cpuServer() { return threadCpuSeconds(server_loop); }
};

std::string echo(int fd, const std::string& data) {
  writeAll(fd, data.data(), data.size());
  std::string got;
  char buf[4096];
  while (got.size() < data.size()) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  size_t mb = 512, streams = 2000, handshakes = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--mb")) mb = std::stoul(argv[i + 1]);
    if (!strcmp(argv[i], "--streams")) streams = std::stoul(argv[i + 1]);
    if (!strcmp(argv[i], "--handshakes")) handshakes = std::stoul(argv[i + 1]);
  }
  printf("| measure | client CPU | server CPU | wall |\n|---|---|---|---|\n");
  {
    // Bulk: one stream, app → sink.
    Setup s;
    SinkServer sink;
    ScopedFd fd = s.open(sink.port());
    std::string chunk(256 * 1024, 'x');
    double c0 = s.cpuClient(), s0 = s.cpuServer(), w0 = wallSeconds();
    for (size_t i = 0; i < mb * 4; ++i) writeAll(fd.get(), chunk.data(), chunk.size());
    shutdown(fd.get(), SHUT_WR);
    while (sink.bytes() < mb * (1u << 20)) usleep(200);
    double c1 = s.cpuClient(), s1 = s.cpuServer(), w1 = wallSeconds();
    printf("| bulk, %zu MiB, 1 stream: µs CPU per MiB | %.1f | %.1f | %.0f MiB/s |\n", mb,
           (c1 - c0) * 1e6 / mb, (s1 - s0) * 1e6 / mb, mb / (w1 - w0));
  }
  {
    // Short streams on one pooled connection: CONNECT, 100 bytes echoed, close.
    Setup s;
    EchoServer echo_server;
    {
      ScopedFd warm = s.open(echo_server.port());
      echo(warm.get(), "warm");
    }
    std::string msg(100, 'y');
    double c0 = s.cpuClient(), s0 = s.cpuServer(), w0 = wallSeconds();
    for (size_t i = 0; i < streams; ++i) {
      ScopedFd fd = s.open(echo_server.port());
      if (echo(fd.get(), msg) != msg) {
        fprintf(stderr, "stream %zu: echo mismatch\n", i);
        return 1;
      }
    }
    double c1 = s.cpuClient(), s1 = s.cpuServer(), w1 = wallSeconds();
    printf("| %zu short streams (pooled): µs CPU per stream | %.1f | %.1f | %.0f streams/s |\n",
           streams, (c1 - c0) * 1e6 / streams, (s1 - s0) * 1e6 / streams, streams / (w1 - w0));
  }
  for (bool resume : {false, true}) {
    // A new TLS connection per stream: closeAll() between streams.
    Setup s;
    EchoServer echo_server;
    std::string msg(100, 'z');
    {
      ScopedFd warm = s.open(echo_server.port());
      echo(warm.get(), msg);
    }
    double c0 = 0, s0 = 0, w0 = 0;
    for (size_t i = 0; i <= handshakes; ++i) {
      if (i == 1) c0 = s.cpuClient(), s0 = s.cpuServer(), w0 = wallSeconds();
      s.client_loop.sync([&] { s.client->closeAll(); });
      if (!resume) {
        // A fresh identity object per connection: no ticket to resume with.
        s.client_id =
            std::make_shared<Identity>("client-" + std::to_string(i), s.client_id->current());
      }
      ScopedFd fd = s.open(echo_server.port());
      echo(fd.get(), msg);
    }
    double c1 = s.cpuClient(), s1 = s.cpuServer(), w1 = wallSeconds();
    printf(
        "| %zu %s handshakes (+1 stream each): µs CPU per connection | %.1f | %.1f | %.0f conn/s "
        "|\n",
        handshakes, resume ? "resumed" : "full", (c1 - c0) * 1e6 / handshakes,
        (s1 - s0) * 1e6 / handshakes, handshakes / (w1 - w0));
    printf("|   (client handshakes ok %lu, resumed %lu) | | | |\n",
           static_cast<unsigned long>(s.client->counters().handshakes_ok.load()),
           static_cast<unsigned long>(s.client->counters().handshakes_resumed.load()));
  }
  return 0;
}
