// meshd: the per-node daemon. Loads and attaches the kernel programs, keeps
// the BPF maps in line with the applied resources, and serves meshctl's API
// and the telemetry endpoints. SIGTERM/SIGINT stop it, leaving the programs
// attached (pinned) so service traffic keeps flowing until the next meshd
// adopts them; `meshd --remove-pins` removes them for good.
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <iostream>

#include "CLI/CLI.hpp"
#include "daemon/daemon.h"
#include "datapath/datapath.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
// How often a failed reconcile is retried.
constexpr int kRetrySeconds = 10;

int run(int argc, char** argv) {
  meshd::daemon::DaemonOptions o;
  std::string log_level = "info";
  bool remove_pins = false;
  bool version = false;

  CLI::App app{"meshd: sidecar-less service mesh daemon (eBPF socket load balancing)", "meshd"};
  app.add_option("--instance", o.instance,
                 "Instance name: separates pins, state and sockets of several meshd on one host")
      ->capture_default_str();
  app.add_option("--cgroup", o.cgroup,
                 "cgroup v2 subtree to attach to: absolute, or relative to the cgroup2 mount "
                 "(default: the whole mount)");
  app.add_option("--api-socket", o.api_socket, "Unix socket for meshctl")->capture_default_str();
  app.add_option("--metrics-addr", o.metrics_addr,
                 "HOST:PORT for /metrics, /healthz, /readyz (port 0 picks one)")
      ->capture_default_str();
  app.add_option("--state-dir", o.state_dir, "Embedded store (default /var/lib/meshd/<instance>)");
  app.add_option("--pin-root", o.pin_root, "bpffs directory for pins")->capture_default_str();
  app.add_option("--max-services", o.max_services, "Capacity of mesh_services (frontends)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 24));
  app.add_option("--max-backends", o.max_backends, "Capacity of mesh_backends")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 24));
  app.add_option("--max-slots", o.max_slots, "Capacity of mesh_slots (backends of all services)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 26));
  std::string sockmap = "auto";
  app.add_option("--sockmap", sockmap,
                 "Splice local pod-to-pod TCP with sockmap: auto (probe, use when it works), "
                 "on (fail to start without it), off")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  std::string redirect_address;
  app.add_option("--redirect-address", redirect_address,
                 "IP[,IP6]: this node's address(es) as pods reach it. Connects to L7 services "
                 "(an HTTPRoute/GRPCRoute bound) go there, to --proxy-port; default none: the "
                 "redirect is off and those services take the L4 path");
  app.add_option("--proxy-port", o.redirect.port, "meshd's outbound (L7) listener port")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--proxy-workers", o.proxy_workers,
                 "L7 proxy worker threads (event loops); 0 = one per CPU")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--access-log", o.access_log,
                 "L7 access log, one JSON object per request or TCP connection (a file, or "
                 "/dev/stdout); default off");
  app.add_option("--node-name", o.node_name,
                 "This node's name as Workload resources give it (spec.node); only local "
                 "Workloads are identified by their address. Default: any node");
  app.add_option("--trust-domain", o.trust_domain, "SPIFFE trust domain of Workload identities")
      ->capture_default_str();
  app.add_option("--ca-address", o.ca_address,
                 "meshd-ca HOST:PORT: turns on the node agent (workload certificates) and the "
                 "mTLS tunnel (--tunnel-port); needs --node-name, --node-cert, --node-key and "
                 "--trust-bundle. Default off");
  app.add_option("--node-cert", o.node_cert,
                 "PEM chain of this node's credential (spiffe://<td>/meshd/node/<node-name>)");
  app.add_option("--node-key", o.node_key, "PEM private key of --node-cert");
  app.add_option("--trust-bundle", o.trust_bundle,
                 "PEM roots that meshd-ca's and peers' certificates must chain to");
  app.add_option("--tunnel-port", o.tunnel_port,
                 "Port of the node-to-node mTLS tunnel (listened on and dialed at other "
                 "nodes' InternalIP); with --ca-address")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--tunnel-address", o.tunnel_address,
                 "Address the mTLS tunnel listens on; default every address");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("--remove-pins", remove_pins,
               "Unpin this instance's maps and links (detaching its programs) and exit");
  app.add_flag("--version", version, "Print the version and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  o.sockmap = *meshd::datapath::parseSockmapMode(sockmap);  // checked by CLI11 above
  auto redirect = meshd::datapath::parseRedirectTarget(redirect_address, o.redirect.port);
  if (!redirect.ok()) {
    std::cerr << "meshd: " << redirect.status().message() << "\n";
    return kExitUsage;
  }
  o.redirect = *redirect;

  if (version) {
    std::cout << "meshd " << MESHD_VERSION << "\n";
    return kExitOk;
  }
  auto logger = spdlog::stderr_color_mt("meshd");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (remove_pins) {
    absl::Status s = meshd::datapath::Datapath::removePins(o.pin_root, o.instance);
    if (!s.ok()) {
      spdlog::error("removing pins of instance {}: {}", o.instance, std::string(s.message()));
      return kExitFailure;
    }
    spdlog::info("removed the pins of instance {} under {}/{}; its programs are detached",
                 o.instance, o.pin_root, o.instance);
    return kExitOk;
  }

  // Block the stop signals in every thread (they inherit this mask) so that
  // only sigtimedwait() below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  spdlog::info("meshd {} starting, instance {}", MESHD_VERSION, o.instance);
  auto daemon = meshd::daemon::Daemon::start(o);
  if (!daemon.ok()) {
    spdlog::error("{}", std::string(daemon.status().message()));
    return kExitFailure;
  }

  for (;;) {
    timespec timeout{kRetrySeconds, 0};
    const int sig = sigtimedwait(&stop_signals, nullptr, &timeout);
    if (sig == SIGTERM || sig == SIGINT) {
      spdlog::info("{} received, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      break;
    }
    if (sig < 0 && errno == EAGAIN) {
      absl::Status r = (*daemon)->retryReconcile();
      if (!r.ok()) spdlog::warn("reconcile retry failed: {}", std::string(r.message()));
    }
  }
  (*daemon)->stop();
  daemon->reset();
  spdlog::info("stopped");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
