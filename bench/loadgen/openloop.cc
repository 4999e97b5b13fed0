// openloop: an open-loop HTTP/1.1 load generator at a fixed request rate.
//
// Why "open loop", and how it avoids coordinated omission
// -------------------------------------------------------
// A closed-loop tester (wrk, ab) sends the next request on a connection only after the
// previous response came back. When the server stalls, the tester stalls with it: it
// stops sending, so the requests a real client population would have sent during the
// stall are never issued and never measured. Only the one request that was in flight
// sees the stall; the percentiles look fine while users would have seen a queue. Gil
// Tene named this "coordinated omission" (talk "How NOT to Measure Latency"), and wrk2
// fixes it by fixing the schedule in advance and timing each request from when it
// should have been sent. This tool does the same:
//
//   * Request i has an intended send time t0 + i/rate, decided before the run starts.
//     The schedule never adapts to the server.
//   * Latency = time the last byte of the response was read - intended send time. If all
//     --connections are busy when a request is due, it waits in a queue for a free
//     connection, and that wait is part of its latency (nothing is skipped or dropped:
//     a stalled server shows up as a ramp of latencies over every queued request).
//   * behind_schedule_ms reports how late the last requests left. generator_lag_ms is the
//     part for which the generator alone is to blame (a connection was idle, the request
//     was due, and the loop had not got to it): above 1 ms the tool warns, because then
//     the generator, not the server, limits the rate and the numbers are not trustworthy.
//
// One thread, epoll, N persistent keep-alive connections (reconnected when the server
// closes them; a request lost with a connection counts as an error). Measured on this
// machine (2 cores, loopback, against a fast local server): see bench/loadgen/README.md.
#include <sys/prctl.h>

#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "open_loop.h"

namespace {

double ms(uint64_t us) { return static_cast<double>(us) / 1000.0; }

}  // namespace

int main(int argc, char** argv) {
  using meshd::loadgen::OpenLoopConfig;
  CLI::App app{"Open-loop HTTP/1.1 load generator at a fixed rate (no coordinated omission)"};
  std::string target;
  std::string output = "text";
  double duration_s = 10;
  double warmup_s = 0;
  OpenLoopConfig cfg;
  app.add_option("--target", target, "server address, HOST:PORT or [V6]:PORT")->required();
  app.add_option("--rate", cfg.rate, "requests per second")->required();
  app.add_option("--duration", duration_s, "measured seconds (after the warmup)")->required();
  app.add_option("--connections", cfg.connections, "persistent keep-alive connections")->required();
  app.add_option("--path", cfg.path, "request path")->capture_default_str();
  app.add_option("--host", cfg.host, "Host header (default: the target)");
  app.add_option("--warmup", warmup_s, "seconds of load before measuring")->capture_default_str();
  app.add_option("-o,--output", output, "json or text")
      ->check(CLI::IsMember({"json", "text"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  cfg.duration_s = duration_s;
  cfg.warmup_s = warmup_s;
  if (cfg.host.empty()) cfg.host = target;

  if (absl::Status s = meshd::loadgen::resolveTarget(target, &cfg); !s.ok()) {
    std::cerr << "openloop: " << s.message() << "\n";
    return 2;
  }
  // Timer slack defaults to 50 us for normal threads: too coarse for a send schedule at
  // tens of thousands of requests per second.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

  absl::StatusOr<meshd::loadgen::OpenLoopResult> r = meshd::loadgen::runOpenLoop(cfg);
  if (!r.ok()) {
    std::cerr << "openloop: " << r.status().message() << "\n";
    return 1;
  }
  const auto& h = r->latency_us;

  std::string warning;
  if (r->generator_lag_ms > 1.0 || (r->behind_schedule_ms > 1.0 && r->loop_busy > 0.9)) {
    warning = absl::StrFormat(
        "the generator fell %.1f ms behind schedule and its loop was busy %.0f%% of the time: "
        "it is CPU-bound and limits the rate, not the server; lower --rate or give it a free "
        "core",
        r->behind_schedule_ms, 100 * r->loop_busy);
  } else if (r->behind_schedule_ms > 1.0) {
    warning = absl::StrFormat(
        "requests left %.1f ms after their intended time because all %d connections were busy: "
        "the server (or too few --connections) could not keep up; the latencies include this "
        "queueing",
        r->behind_schedule_ms, cfg.connections);
  }
  if (!warning.empty()) std::cerr << "openloop: warning: " << warning << "\n";

  if (output == "json") {
    nlohmann::json j = {
        {"rate", cfg.rate},
        {"duration_s", cfg.duration_s},
        {"warmup_s", cfg.warmup_s},
        {"connections", cfg.connections},
        {"sent", r->sent},
        {"ok", r->ok},
        {"errors", r->errors},
        {"non_2xx", r->non_2xx},
        {"connect_errors", r->connect_errors},
        {"achieved_rps", static_cast<double>(r->sent) / cfg.duration_s},
        {"p50_ms", ms(h.valueAtPercentile(50))},
        {"p90_ms", ms(h.valueAtPercentile(90))},
        {"p99_ms", ms(h.valueAtPercentile(99))},
        {"p999_ms", ms(h.valueAtPercentile(99.9))},
        {"max_ms", ms(h.max())},
        {"mean_ms", h.mean() / 1000.0},
        {"behind_schedule_ms", r->behind_schedule_ms},
        {"generator_lag_ms", r->generator_lag_ms},
        {"loop_busy", r->loop_busy},
        {"warning", warning.empty() ? nlohmann::json(nullptr) : nlohmann::json(warning)},
    };
    std::cout << j.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "target %s  rate %.0f/s  duration %.1fs (+%.1fs warmup)  connections %d\n"
        "sent %d  ok %d  non-2xx %d  errors %d  connect errors %d\n"
        "latency from intended send time (ms): p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
        "max %.3f\n"
        "behind schedule at end: %.3f ms (generator's own lag %.3f ms, loop busy %.0f%%)\n",
        target, cfg.rate, cfg.duration_s, cfg.warmup_s, cfg.connections, r->sent, r->ok, r->non_2xx,
        r->errors, r->connect_errors, ms(h.valueAtPercentile(50)), ms(h.valueAtPercentile(90)),
        ms(h.valueAtPercentile(99)), ms(h.valueAtPercentile(99.9)), ms(h.max()),
        r->behind_schedule_ms, r->generator_lag_ms, 100 * r->loop_busy);
  }
  return 0;
}
