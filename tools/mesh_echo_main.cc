// mesh-echo: the lab's backend workload. Answers TCP, HTTP/1.1 and UDP with its name so
// clients can see which backend the mesh chose. See echo_server.h for the protocol.
#include <csignal>
#include <cstdio>

#include "CLI/CLI.hpp"
#include "tools/echo_server.h"

namespace {
meshd::tools::EchoServer* g_server = nullptr;
void onSignal(int) {
  if (g_server != nullptr) g_server->stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mesh-echo: answers TCP, HTTP/1.1 and UDP with its name (meshd lab workload)"};
  meshd::tools::EchoServer::Options options;
  uint16_t tcp = 0, http = 0, udp = 0;
  app.add_option("--name", options.name, "name sent to every client")->required();
  auto* tcp_opt = app.add_option("--tcp", tcp, "TCP port: sends NAME\\n on connect, then echoes");
  auto* http_opt = app.add_option("--http", http, "HTTP/1.1 port: GET answers 200 NAME\\n");
  auto* udp_opt = app.add_option("--udp", udp, "UDP port: answers each datagram with NAME\\n");
  app.add_option("--bind", options.bind, "local address (\"::\" for dual-stack)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (*tcp_opt) options.tcpPort = tcp;
  if (*http_opt) options.httpPort = http;
  if (*udp_opt) options.udpPort = udp;

  auto server = meshd::tools::EchoServer::create(options);
  if (!server.ok()) {
    std::fprintf(stderr, "mesh-echo: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  g_server = server->get();
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::fprintf(stderr, "mesh-echo %s: serving tcp=%u http=%u udp=%u on %s\n", options.name.c_str(),
               (*server)->tcpPort(), (*server)->httpPort(), (*server)->udpPort(),
               options.bind.c_str());
  absl::Status status = (*server)->run();
  g_server = nullptr;
  if (!status.ok()) {
    std::fprintf(stderr, "mesh-echo: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
