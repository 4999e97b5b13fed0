// connrate: new TCP connections per second, the cost a mesh adds at connect() and accept().
//
//   connrate server --port P
//       accepts, reads one byte, writes it back, closes. One epoll loop; runs until
//       SIGINT/SIGTERM.
//   connrate client --target ADDR:PORT --duration S [--concurrency N] [-o json|table]
//       N threads, each in a loop: socket, connect, write 1 byte, read 1 byte, close.
//       Prints {"conns":..,"conn_per_s":..,"errors":..,"p50_ms":..,"p99_ms":..} where the
//       latencies are of the whole connect..reply exchange.
//
// The client closes only after the server's reply, so the server's close comes first
// most of the time and TIME_WAIT lands on the server side; the suite still sets
// net.ipv4.tcp_tw_reuse=1 in the client's netns so a long run never runs out of ports.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"

namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_stop = 0;
void onSignal(int) { g_stop = 1; }

bool parseTarget(const std::string& text, sockaddr_in& out) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  out = {};
  out.sin_family = AF_INET;
  if (inet_pton(AF_INET, text.substr(0, colon).c_str(), &out.sin_addr) != 1) return false;
  const int port = std::atoi(text.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return false;
  out.sin_port = htons(static_cast<uint16_t>(port));  // network byte order
  return true;
}

int runServer(int port) {
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(lfd, 4096) < 0) {
    std::fprintf(stderr, "connrate server: bind/listen on 0.0.0.0:%d: %s (is the port in use?)\n",
                 port, std::strerror(errno));
    return 1;
  }
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  epoll_event events[256];
  while (!g_stop) {
    const int n = epoll_wait(ep, events, 256, 200);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          const int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      char byte;
      const ssize_t r = read(fd, &byte, 1);
      if (r == 1) {
        // One byte always fits in an empty send buffer: no partial-write handling needed.
        (void)!write(fd, &byte, 1);
      } else if (r < 0 && errno == EAGAIN) {
        continue;
      }
      close(fd);  // closing also removes fd from the epoll set
    }
  }
  return 0;
}

struct ThreadResult {
  uint64_t conns = 0;
  uint64_t errors = 0;
  std::vector<uint32_t> latencyUs;
};

void clientLoop(const sockaddr_in& target, Clock::time_point deadline, ThreadResult& result) {
  result.latencyUs.reserve(1 << 20);
  while (Clock::now() < deadline && !g_stop) {
    const auto start = Clock::now();
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ++result.errors;
      continue;
    }
    timeval tv{2, 0};  // a lost reply must not stall the run past its duration
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char byte = 'x';
    bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof(target)) == 0 &&
              write(fd, &byte, 1) == 1 && read(fd, &byte, 1) == 1;
    close(fd);
    if (!ok) {
      ++result.errors;
      continue;
    }
    ++result.conns;
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    result.latencyUs.push_back(static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX)));
  }
}

double percentileMs(std::vector<uint32_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t idx = std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()));
  return sorted[idx] / 1000.0;
}

int runClient(const std::string& targetText, double duration, int concurrency,
              const std::string& output) {
  sockaddr_in target{};
  if (!parseTarget(targetText, target)) {
    std::fprintf(stderr, "connrate client: --target must be IPV4:PORT, got '%s'\n",
                 targetText.c_str());
    return 2;
  }
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::microseconds(static_cast<int64_t>(duration * 1e6));
  std::vector<ThreadResult> results(concurrency);
  std::vector<std::thread> threads;
  for (int i = 0; i < concurrency; ++i) {
    threads.emplace_back(clientLoop, std::cref(target), deadline, std::ref(results[i]));
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  ThreadResult total;
  for (auto& r : results) {
    total.conns += r.conns;
    total.errors += r.errors;
    total.latencyUs.insert(total.latencyUs.end(), r.latencyUs.begin(), r.latencyUs.end());
  }
  std::sort(total.latencyUs.begin(), total.latencyUs.end());
  const double rate = total.conns / elapsed;
  if (output == "json") {
    std::printf(
        "{\"conns\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"conn_per_s\":%.1f,"
        "\"p50_ms\":%.4f,\"p99_ms\":%.4f}\n",
        static_cast<unsigned long long>(total.conns), static_cast<unsigned long long>(total.errors),
        elapsed, rate, percentileMs(total.latencyUs, 0.50), percentileMs(total.latencyUs, 0.99));
  } else {
    std::printf("%llu connections in %.2f s: %.0f conn/s, %llu errors, p50 %.3f ms, p99 %.3f ms\n",
                static_cast<unsigned long long>(total.conns), elapsed, rate,
                static_cast<unsigned long long>(total.errors), percentileMs(total.latencyUs, 0.50),
                percentileMs(total.latencyUs, 0.99));
  }
  // Every connection failing means the path is broken, not slow.
  return total.conns == 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"connrate: new TCP connections per second (connect, 1-byte exchange, close)"};
  app.require_subcommand(1);
  int port = 7000;
  std::string target;
  double duration = 5;
  int concurrency = 1;
  std::string output = "table";
  auto* server = app.add_subcommand("server", "accept, echo one byte, close");
  server->add_option("--port", port, "listen port (0.0.0.0)")->capture_default_str();
  auto* client = app.add_subcommand("client", "connect/exchange/close in a loop");
  client->add_option("--target", target, "IPV4:PORT")->required();
  client->add_option("--duration", duration, "seconds")->capture_default_str();
  client->add_option("--concurrency", concurrency, "threads, each one connection at a time")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  client->add_option("-o,--output", output, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, onSignal);
  signal(SIGTERM, onSignal);
  if (*server) return runServer(port);
  return runClient(target, duration, concurrency, output);
}
