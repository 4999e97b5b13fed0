// The open-loop HTTP/1.1 generator behind the `openloop` tool: requests at fixed intended
// send times over N keep-alive connections, latency measured from the intended send time
// (see openloop.cc for why that avoids coordinated omission).
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "histogram.h"

namespace meshd::loadgen {

struct OpenLoopConfig {
  sockaddr_storage target{};
  socklen_t target_len = 0;
  double rate = 1000;      // requests per second, > 0
  double duration_s = 10;  // measured window, after the warmup
  double warmup_s = 0;     // requests sent in the warmup are not counted
  int connections = 16;    // persistent keep-alive connections
  std::string path = "/";
  std::string host;  // Host header
  // After the last intended send time, how long to wait for outstanding responses
  // before counting them as errors.
  std::chrono::milliseconds drain_timeout{5000};
};

struct OpenLoopResult {
  LatencyHistogram latency_us;  // measured requests with a complete response (any status)
  uint64_t sent = 0;            // measured requests written to a connection
  uint64_t ok = 0;              // measured requests answered with 2xx
  uint64_t non_2xx = 0;         // measured requests answered with another status
  uint64_t errors = 0;          // measured requests that got no complete response
  uint64_t connect_errors = 0;  // failed (re)connects (all phases)
  uint64_t reconnects = 0;      // connections re-established after a close
  // How late the last request left, relative to its intended send time. Large when
  // every connection was busy (the server is saturated: queueing, which the latencies
  // include) or when the generator itself is CPU-bound.
  double behind_schedule_ms = 0;
  // The part of the lateness the generator alone is to blame for: for the last request,
  // the time from when both its intended time had come and a connection was idle, to the
  // write. Above ~1 ms the generator, not the server, limits the rate.
  double generator_lag_ms = 0;
  // Fraction of the run (from the first intended send) the loop spent working rather than
  // blocked in epoll. Near 1 the generator is CPU-bound, so lateness is its own (a
  // generator starved of CPU also stamps completions late, which hides it from
  // generator_lag_ms).
  double loop_busy = 0;
  double elapsed_s = 0;  // wall time of the whole run including warmup and drain
};

// Resolves "HOST:PORT" or "[V6]:PORT" (numeric or DNS name) into cfg->target.
absl::Status resolveTarget(const std::string& target, OpenLoopConfig* cfg);

// Runs the generator to completion. Fails only if the config is invalid or no
// connection to the target can be established at the start; errors during the run are
// counted in the result.
absl::StatusOr<OpenLoopResult> runOpenLoop(const OpenLoopConfig& cfg);

}  // namespace meshd::loadgen
