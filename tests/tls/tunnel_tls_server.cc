// A :15008-style tunnel server for testssl.sh (tests/tls/testssl_test.py): the real
// tunnel::TunnelServer with the TLS settings meshd uses, presenting the test PKI's node-n2
// credential and requiring client certificates chained to bundle.pem. Every stream is
// refused (no destination is reachable from it). Prints the bound port on stdout, then
// serves until stdin reaches EOF or SIGTERM/SIGINT.
// Usage: tunnel_tls_server CERTS_DIR
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "common/net.h"
#include "tunnel/loop.h"
#include "tunnel/tls.h"
#include "tunnel/tunnel.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CERTS_DIR\n", argv[0]);
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const std::string dir = argv[1];
  using namespace meshd;
  auto creds = tunnel::Credentials::fromFiles(dir + "/node-n2.chain.pem", dir + "/node-n2.key");
  auto trust = tunnel::TrustBundle::fromFile(dir + "/bundle.pem");
  auto loop = tunnel::EpollLoop::create();
  if (!creds.ok() || !trust.ok() || !loop.ok()) {
    std::fprintf(stderr, "tunnel_tls_server: %s %s %s\n", creds.status().ToString().c_str(),
                 trust.status().ToString().c_str(), loop.status().ToString().c_str());
    return 1;
  }
  auto identity = std::make_shared<tunnel::Identity>("n2", *creds);
  auto server = tunnel::TunnelServer::create(
      **loop, identity, *trust, [](X509*, STACK_OF(X509)*) { return absl::OkStatus(); },
      [](const tunnel::InboundRequest&) {
        return tunnel::InboundDecision::deny(403, "testssl target");
      });
  if (!server.ok()) {
    std::fprintf(stderr, "tunnel_tls_server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<SocketAddress> bound;
  std::thread runner([&] { (*loop)->run(); });
  (*loop)->runSync([&] { bound = (*server)->listen(*SocketAddress::parse("127.0.0.1:0")); });
  if (!bound.ok()) {
    std::fprintf(stderr, "tunnel_tls_server: %s\n", bound.status().ToString().c_str());
    (*loop)->stop();
    runner.join();
    return 1;
  }
  std::printf("%u\n", static_cast<unsigned>(bound->port));
  std::fflush(stdout);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // Wait for stdin EOF or a signal.
  while (true) {
    pollfd p{STDIN_FILENO, POLLIN, 0};
    timespec ts{0, 100'000'000};
    if (::ppoll(&p, 1, &ts, nullptr) > 0) {
      char buf[64];
      if (::read(STDIN_FILENO, buf, sizeof(buf)) <= 0) break;
    }
    timespec zero{0, 0};
    if (sigtimedwait(&set, nullptr, &zero) > 0) break;
  }
  (*loop)->runSync([&] { (*server)->closeAll(); });
  (*loop)->stop();
  runner.join();
  return 0;
}
