// meshd-ca: meshd's certificate authority. Signs short-lived workload X.509-SVIDs
// (spiffe://<td>/ns/<ns>/sa/<sa>) over gRPC (proto/ca.proto) for node agents that
// authenticate with their node credential (spiffe://<td>/meshd/node/<node>) and ask only for
// workloads placed on their node. Bring your own root/intermediate, or --self-signed-dir for
// a standalone self-signed root. SIGTERM/SIGINT stop it.
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/time/time.h"
#include "ca/placement.h"
#include "ca/service.h"
#include "identity/ca.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"
#include "telemetry/exposition.h"
#include "telemetry/http_server.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

bool parseDuration(const std::string& text, const char* flag, absl::Duration* out) {
  if (!absl::ParseDuration(text, out) || *out <= absl::ZeroDuration()) {
    std::cerr << "meshd-ca: " << flag << " " << text
              << ": not a positive duration (e.g. 24h, 90m, 3600s)\n";
    return false;
  }
  return true;
}

int run(int argc, char** argv) {
  meshd::identity::CaOptions ca;
  meshd::ca::CaServerOptions server;
  std::string workloads_file;
  std::string workload_ttl = "24h";
  std::string max_workload_ttl = "168h";
  std::string log_level = "info";
  std::string metrics_addr = "0.0.0.0:15014";
  bool version = false;

  CLI::App app{"meshd-ca: meshd's certificate authority (workload X.509-SVIDs over mTLS gRPC)",
               "meshd-ca"};
  app.add_option("--listen", server.listen, "HOST:PORT to serve on (port 0 picks one)")
      ->capture_default_str();
  app.add_option("--trust-domain", ca.trust_domain, "SPIFFE trust domain")->capture_default_str();
  app.add_option("--root-cert", ca.root_cert_file,
                 "Bring your own: PEM root certificate(s) = the trust bundle (old and new "
                 "during a root rotation)");
  app.add_option("--root-key,--ca-key", ca.key_file,
                 "Bring your own: PEM private key of the issuing CA (the intermediate's when "
                 "--cert-chain is given, else a root's)");
  app.add_option("--cert-chain", ca.cert_chain_file,
                 "Bring your own: PEM chain, issuing intermediate first, then further "
                 "intermediates");
  app.add_option("--self-signed-dir", ca.self_signed_dir,
                 "Standalone: generate (or reuse) a self-signed EC P-256 root in this directory");
  app.add_option("--workload-ttl", workload_ttl, "Default workload certificate lifetime")
      ->capture_default_str();
  app.add_option("--max-workload-ttl", max_workload_ttl, "Longest lifetime a request may get")
      ->capture_default_str();
  app.add_option("--workloads", workloads_file,
                 "YAML list of {name, namespace, serviceAccount, node}: the workloads each node "
                 "may obtain identities for")
      ->required();
  app.add_option("--server-name", server.server_names,
                 "DNS name(s) in the CA's serving certificate (clients' target name)")
      ->capture_default_str();
  app.add_option("--metrics-addr", metrics_addr,
                 "HOST:PORT for /metrics (issued and refused counts) and /healthz; empty: off")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("--version", version, "Print the version and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (version) {
    std::cout << "meshd-ca " << MESHD_VERSION << "\n";
    return kExitOk;
  }
  if (!parseDuration(workload_ttl, "--workload-ttl", &ca.default_ttl) ||
      !parseDuration(max_workload_ttl, "--max-workload-ttl", &ca.max_ttl)) {
    return kExitUsage;
  }

  auto logger = spdlog::stderr_color_mt("meshd-ca");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto placement = meshd::ca::StaticWorkloadPlacement::fromFile(workloads_file);
  if (!placement.ok()) {
    spdlog::error("{}", std::string(placement.status().message()));
    return kExitFailure;
  }
  auto authority = meshd::identity::CertificateAuthority::create(ca);
  if (!authority.ok()) {
    spdlog::error("{}", std::string(authority.status().message()));
    return kExitFailure;
  }
  if ((*authority)->selfSigned()) {
    spdlog::warn(
        "CA: standalone mode: the root is SELF-SIGNED, made by meshd-ca itself, not by "
        "your PKI: {}",
        (*authority)->describe());
  } else {
    spdlog::info("CA: {}", (*authority)->describe());
  }
  spdlog::info("CA: trust domain {}, workload TTL {} (max {}), {} workload placements from {}",
               (*authority)->trustDomain(), absl::FormatDuration(ca.default_ttl),
               absl::FormatDuration(ca.max_ttl), placement->size(), workloads_file);
  auto srv = meshd::ca::CaServer::start(server, **authority, *placement);
  if (!srv.ok()) {
    spdlog::error("{}", std::string(srv.status().message()));
    return kExitFailure;
  }
  meshd::telemetry::HttpServerPtr metrics;
  if (!metrics_addr.empty()) {
    meshd::ca::CertificateService* service = &(*srv)->service();
    auto started =
        meshd::telemetry::HttpServer::start(metrics_addr, [service](std::string_view path) {
          meshd::telemetry::HttpResponse r;
          if (path == "/metrics") {
            r.content_type = std::string(meshd::telemetry::kExpositionContentType);
            r.body = service->metricsText();
          } else if (path == "/healthz") {
            r.body = "ok\n";
          } else {
            r.status = 404;
            r.body = "not found: /metrics, /healthz\n";
          }
          return r;
        });
    if (!started.ok()) {
      spdlog::error("{}", std::string(started.status().message()));
      return kExitFailure;
    }
    metrics = std::move(*started);
    spdlog::info("CA: /metrics and /healthz on {} (port {})", metrics_addr, metrics->port());
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("{} received, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*srv)->shutdown();
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
