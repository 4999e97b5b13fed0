// The relay under test in iolayer_bench: one thread that accepts client connections,
// connects each to the upstream and moves bytes both ways. Two I/O layers with the same
// buffer sizes and semantics: edge-triggered epoll with read()/write() (as
// userspace/proxy/core does) and io_uring (liburing) with recv/send SQEs.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace meshd::bench::iolayer {

// Bytes buffered per direction of a relayed connection (the core's default
// max_buffer_bytes).
constexpr size_t kBufferBytes = 64 * 1024;

enum class Layer { kEpoll, kUring, kUringMultishot };
const char* layerName(Layer layer);

struct RelayConfig {
  Layer layer = Layer::kEpoll;
  int listen_fd = -1;      // listening, blocking; owned by the caller
  sockaddr_in upstream{};  // network byte order, as for connect()
  int connections = 1;     // accepted before the loop starts
  int cpu = -1;            // pin the relay thread to this CPU; -1 = no pinning
  int stop_fd = -1;        // eventfd: readable = leave the loop; owned by the caller
};

// Written by the relay thread only, read by the load generator at window boundaries.
struct RelayCounters {
  // Syscalls made by the relay's loop: read/write/shutdown/epoll_wait for epoll; calls
  // to io_uring_submit_and_wait (each at most one io_uring_enter) and shutdown for
  // io_uring. Published once per loop iteration.
  std::atomic<uint64_t> syscalls{0};
  std::atomic<uint64_t> iterations{0};
};

// Handshake between the relay thread and the thread that started it.
struct RelayStartup {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error;  // empty = the relay is up and all connections are paired
  std::string setup;  // human description of what the layer uses (ring flags, ...)
  void finish(std::string err, std::string what);
  // Waits until finish(); returns the error ("" on success).
  std::string wait();
};

// Runs the relay on the calling thread until config.stop_fd turns readable. Reports setup
// success or failure through startup exactly once. Never throws.
void runRelay(const RelayConfig& config, RelayCounters& counters, RelayStartup& startup);

// Implementations (relay_epoll.cc, relay_uring.cc). Same contract as runRelay.
void runEpollRelay(const RelayConfig& config, RelayCounters& counters, RelayStartup& startup);
void runUringRelay(const RelayConfig& config, RelayCounters& counters, RelayStartup& startup);

// Shared set-up: pins the calling thread (if cpu >= 0), accepts `connections` clients and
// connects each to the upstream (blocking; outside the measured window), then makes all
// sockets non-blocking with TCP_NODELAY. Returns "" or an error naming the step.
struct FdPair {
  int client = -1;
  int upstream = -1;
};
std::string pinThread(int cpu);
std::string acceptPairs(const RelayConfig& config, std::vector<FdPair>& pairs);

// "iolayer: <what>: <strerror(errno)>".
std::string errnoMessage(const std::string& what, int err);

}  // namespace meshd::bench::iolayer
