// meshd's wiring: host checks, the datapath, the reconciler, the store, the
// state model and its updater, then the API and telemetry servers.
//
// Threads: the state updater (every Model call), gRPC's pool (API handlers,
// which hand mutations to the updater), the telemetry HTTP thread, and the
// main thread (signals, reconcile retries).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "api/control.h"
#include "api/service.h"
#include "daemon/identity_agent.h"
#include "daemon/instance_lock.h"
#include "daemon/kernel_policy.h"
#include "daemon/l7.h"
#include "daemon/mesh_tunnel.h"
#include "datapath/datapath.h"
#include "datapath/reconciler.h"
#include "proxy/core/proxy.h"
#include "state/lb_state_sink.h"
#include "state/model.h"
#include "state/updater.h"
#include "store/store.h"
#include "telemetry/health.h"
#include "telemetry/http_server.h"
#include "telemetry/meshd_metrics.h"

namespace meshd::daemon {

struct DaemonOptions {
  std::string instance = "default";
  std::string cgroup;  // absolute, or relative to the cgroup2 mount; "" = the mount itself
  std::string api_socket = "/run/meshd/meshd.sock";
  std::string metrics_addr = "0.0.0.0:15020";
  std::string state_dir;  // "" = /var/lib/meshd/<instance>
  std::string pin_root = "/sys/fs/bpf/meshd";
  std::string lock_dir = InstanceLock::kLockDir;
  uint32_t max_services = 65536;
  uint32_t max_backends = 131072;
  uint32_t max_slots = 262144;
  datapath::SockmapMode sockmap = datapath::SockmapMode::kAuto;
  // meshd's outbound (L7) listener as pods reach it: connects to L7 services
  // are sent there (--redirect-address, --proxy-port). No address = the
  // redirect is off and L7 services take the L4 path.
  datapath::RedirectTarget redirect{std::nullopt, std::nullopt, 15001};
  // The L7 proxy (started when the redirect is on): worker threads (0 = one per
  // CPU) listening on the redirect port of every address ([::] when an IPv6 target
  // is set, else 0.0.0.0).
  unsigned proxy_workers = 0;
  // The L7 proxy's JSON access log (--access-log): a file or /dev/stdout; "" = off
  // (Istio's default profile also logs nothing until meshConfig.accessLogFile is set).
  std::string access_log;
  // This node's name as Workload resources write it (spec.node): the L7 proxy takes a peer
  // address as a Workload's (its identity, for AuthorizationPolicy and per-client rate
  // limits) only for Workloads of this node. "" = Workloads of any node.
  std::string node_name;
  // The SPIFFE trust domain of Workload identities (spiffe://<td>/ns/<ns>/sa/<sa>).
  std::string trust_domain = "cluster.local";
  // The node agent and the mTLS tunnel (docs/design/0004-identity-mtls.md, "Wiring into
  // meshd"): on when ca_address is set (then node_name, node_cert, node_key and trust_bundle
  // are required). The tunnel listens on tunnel_port and reaches other nodes' meshd at their
  // Node InternalIP on the same port.
  std::string ca_address;
  std::string node_cert, node_key, trust_bundle;
  uint16_t tunnel_port = 15008;
  // The tunnel listener's address; "" = every address (0.0.0.0, or [::] with an IPv6
  // redirect target).
  std::string tunnel_address;
};

// Passes each desired state to the reconciler and records the outcome and its
// duration for /readyz, /metrics and `meshctl status`. Runs on the updater thread.
class ObservedSink : public state::LbStateSink {
 public:
  // `after` runs after each successful apply (e.g. ending the connections of
  // removed backends).
  ObservedSink(state::LbStateSink& inner, telemetry::Readiness& readiness,
               std::function<void()> after = nullptr)
      : inner_(inner), readiness_(readiness), after_(std::move(after)) {}
  absl::Status apply(const state::DesiredLbState& desired) override;

 private:
  state::LbStateSink& inner_;
  telemetry::Readiness& readiness_;
  std::function<void()> after_;
};

class Daemon;
using DaemonPtr = std::unique_ptr<Daemon>;

class Daemon : public api::MeshdControl {
 public:
  // Runs the whole startup. Fails with the first error, already phrased for
  // the operator (what is missing, how to fix it). A failed initial reconcile
  // is not fatal: meshd serves, /readyz says why it is not ready, and
  // retryReconcile() tries again.
  static absl::StatusOr<DaemonPtr> start(DaemonOptions options);
  ~Daemon() override;

  // Stops serving (API first, then telemetry, then the updater). Pins stay.
  void stop();
  // Re-applies the desired state when the last reconcile failed. Returns its result.
  absl::Status retryReconcile();

  uint16_t metricsPort() const { return metrics_->port(); }
  // The L7 proxy's listening port; 0 when it is not running.
  uint16_t proxyPort() const { return proxy_ ? proxy_->port() : 0; }
  const DaemonOptions& options() const { return options_; }
  std::string pinDir() const;

  // api::MeshdControl
  absl::StatusOr<std::vector<api::AppliedResource>> apply(
      std::vector<resources::Resource> resources, bool dry_run) override;
  absl::StatusOr<std::vector<resources::ResourceKey>> remove(
      std::vector<resources::ResourceKey> keys) override;
  absl::StatusOr<api::FrontendViews> frontends() override;
  absl::StatusOr<api::L7ClusterViews> l7Clusters() override;
  absl::StatusOr<std::vector<resources::Resource>> resources() override;
  absl::StatusOr<nlohmann::ordered_json> status() override;
  absl::StatusOr<nlohmann::ordered_json> bpf(std::string_view what, std::string_view map) override;

 private:
  explicit Daemon(DaemonOptions options) : options_(std::move(options)) {}
  absl::Status init();
  // Programs attached right now (0 on error).
  int attachedPrograms();
  absl::Status ready();
  // Ends the connections of backends taken out of frontends that ask for it
  // (TrafficPolicy draining.terminateConnections); runs after each apply.
  void terminateRemovedConnections();
  std::string renderMetrics();
  // The node agent (before the model loads: L7 asks it for credentials).
  absl::Status startIdentityAgent();
  // The tunnel server and client (after the model loaded: its hook reads L7's snapshot).
  absl::Status startTunnel();
  // Programs the kernel policy (STRICT, L4 authorization) for the model's current resources
  // when they changed or the last attempt failed. Updater thread.
  void syncKernelPolicy();

  DaemonOptions options_;
  std::string cgroup_path_;                           // resolved
  std::string proxy_splice_ = "off: no L7 redirect";  // the app↔meshd hop, for status
  InstanceLockPtr lock_;
  telemetry::Readiness readiness_;
  absl::Mutex datapath_mu_;  // Datapath's inspection calls are not documented thread-safe
  datapath::DatapathPtr datapath_;
  std::unique_ptr<datapath::Reconciler> reconciler_;
  std::unique_ptr<ObservedSink> sink_;
  std::unique_ptr<KernelPolicySync> kernel_policy_;
  uint64_t kernel_policy_generation_ = 0;  // model generation last programmed (updater thread)
  bool kernel_policy_failed_ = false;
  store::StorePtr store_;
  // The node agent and the tunnel's via table: before l7_, which points at them.
  std::unique_ptr<IdentityAgent> agent_;
  std::unique_ptr<ViaTable> vias_;
  std::unique_ptr<L7Config> l7_;  // before model_: the model points at it
  // The model's observer: the L7 config, then the kernel policy's prepare step.
  std::unique_ptr<state::ConfigObserver> observer_;
  std::unique_ptr<state::Model> model_;
  // Declared after model_ so it is destroyed (and stopped) first.
  std::unique_ptr<state::Updater> updater_;
  std::unique_ptr<proxy::Proxy> proxy_;
  // After proxy_ in stop(): the proxy's workers call it (ProxyOptions::connector).
  std::unique_ptr<MeshTunnel> tunnel_;
  telemetry::HttpServerPtr metrics_;
  api::ApiServerPtr api_;
  bool stopped_ = false;
  bool started_ = false;  // init() finished
};

}  // namespace meshd::daemon
