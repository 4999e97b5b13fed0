// mesh-client: dials one address N times, tallies which backend (mesh-echo name) answered,
// and checks that the application only ever sees the dialed address. Exit: 0 all probes
// succeeded, 1 any connection error or peer-address mismatch, 2 usage.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "tools/probe.h"

namespace {

volatile sig_atomic_t g_stop = 0;
void onSignal(int) { g_stop = 1; }

// --hold keeps every connection open: raise the descriptor limit to what we may use.
void raiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mesh-client: dial ADDR:PORT N times and show which backends answered"};
  app.require_subcommand(1);
  std::string target_text;
  meshd::tools::ProbeOptions options;
  std::string output = "table";
  int timeout_ms = 2000;
  double hold_seconds = -1;
  bool quiet = false;

  auto add_common = [&](CLI::App* sub) {
    sub->add_option("target", target_text, "ADDR:PORT or [V6ADDR]:PORT")->required();
    sub->add_option("-n,--count", options.count, "number of probes")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    sub->add_option("-o,--output", output, "table or json")
        ->check(CLI::IsMember({"table", "json"}))
        ->capture_default_str();
    sub->add_option("--timeout-ms", timeout_ms, "per connect/read timeout")->capture_default_str();
    sub->add_flag("-q,--quiet", quiet, "print nothing on success (errors still go to stderr)");
  };
  auto* tcp = app.add_subcommand("tcp", "sequential TCP connections; reads the first line");
  add_common(tcp);
  tcp->add_flag("--hold", options.hold,
                "keep the connections open after the report until SIGINT/SIGTERM");
  tcp->add_option("--hold-seconds", hold_seconds, "with --hold: close after this long");
  auto* http = app.add_subcommand("http", "one HTTP/1.1 GET per connection; reads the body");
  add_common(http);
  http->add_option("--path", options.httpPath, "request path")->capture_default_str();
  auto* udp = app.add_subcommand("udp", "one datagram per fresh socket; reads the reply");
  add_common(udp);
  udp->add_flag("--connect", options.udpConnect,
                "connect() the socket and check getpeername instead of the reply source");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto target = meshd::tools::Endpoint::parse(target_text);
  if (!target.ok()) {
    std::fprintf(stderr, "mesh-client: %s\n", std::string(target.status().message()).c_str());
    return 2;
  }
  options.target = *target;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  options.mode = *tcp    ? meshd::tools::ProbeMode::kTcp
                 : *http ? meshd::tools::ProbeMode::kHttp
                         : meshd::tools::ProbeMode::kUdp;
  signal(SIGPIPE, SIG_IGN);
  if (options.hold) raiseFdLimit();

  meshd::tools::ProbeResult result = meshd::tools::runProbes(options);
  for (const std::string& e : result.errorSamples)
    std::fprintf(stderr, "mesh-client: %s\n", e.c_str());
  const int failed = result.errors + result.peerMismatches;
  if (failed > static_cast<int>(result.errorSamples.size())) {
    std::fprintf(stderr, "mesh-client: ... %d failures in all\n", failed);
  }
  if (!quiet || failed > 0) {
    std::cout << (output == "json" ? meshd::tools::formatJson(options, result)
                                   : meshd::tools::formatTable(options, result))
              << std::flush;
  }
  if (options.hold && !result.heldFds.empty()) {
    struct sigaction sa {};
    sa.sa_handler = onSignal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::fprintf(stderr, "mesh-client: holding %zu connections\n", result.heldFds.size());
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(hold_seconds * 1000));
    while (!g_stop && (hold_seconds < 0 || std::chrono::steady_clock::now() < deadline)) {
      usleep(50 * 1000);
    }
    result.closeHeld();
  }
  return failed > 0 ? 1 : 0;
}
