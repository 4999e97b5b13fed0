#include "relay.h"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace meshd::bench::iolayer {

const char* layerName(Layer layer) {
  switch (layer) {
    case Layer::kEpoll:
      return "epoll";
    case Layer::kUring:
      return "io_uring";
    case Layer::kUringMultishot:
      return "io_uring-mshot";
  }
  return "?";
}

void RelayStartup::finish(std::string err, std::string what) {
  std::lock_guard<std::mutex> lock(mu);
  error = std::move(err);
  setup = std::move(what);
  done = true;
  cv.notify_all();
}

std::string RelayStartup::wait() {
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [this] { return done; });
  return error;
}

std::string errnoMessage(const std::string& what, int err) {
  return "iolayer: " + what + ": " + std::strerror(err);
}

std::string pinThread(int cpu) {
  if (cpu < 0) return "";
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  if (rc != 0) return errnoMessage("pinning the relay thread to CPU " + std::to_string(cpu), rc);
  return "";
}

namespace {

std::string prepare(int fd, const char* which) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    return errnoMessage(std::string("TCP_NODELAY on the ") + which + " socket", errno);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return errnoMessage(std::string("O_NONBLOCK on the ") + which + " socket", errno);
  return "";
}

}  // namespace

std::string acceptPairs(const RelayConfig& config, std::vector<FdPair>& pairs) {
  for (int i = 0; i < config.connections; ++i) {
    FdPair pair;
    pair.client = accept4(config.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (pair.client < 0) return errnoMessage("accepting client " + std::to_string(i), errno);
    pairs.push_back(pair);
    pair.upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (pair.upstream < 0) return errnoMessage("creating an upstream socket", errno);
    pairs.back().upstream = pair.upstream;
    if (connect(pair.upstream, reinterpret_cast<const sockaddr*>(&config.upstream),
                sizeof(config.upstream)) != 0)
      return errnoMessage("connecting to the upstream echo server", errno);
    if (auto err = prepare(pair.client, "client"); !err.empty()) return err;
    if (auto err = prepare(pair.upstream, "upstream"); !err.empty()) return err;
  }
  return "";
}

void runRelay(const RelayConfig& config, RelayCounters& counters, RelayStartup& startup) {
  if (config.layer == Layer::kEpoll) {
    runEpollRelay(config, counters, startup);
  } else {
    runUringRelay(config, counters, startup);
  }
}

}  // namespace meshd::bench::iolayer
