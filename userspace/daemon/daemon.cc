#include "daemon/daemon.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "datapath/abi_names.h"
#include "datapath/preflight.h"
#include "spdlog/spdlog.h"

namespace meshd::daemon {
namespace {

absl::Status withContext(const absl::Status& s, std::string_view what) {
  return absl::Status(s.code(), absl::StrCat(std::string(what), ": ", std::string(s.message())));
}

nlohmann::ordered_json mapInfoJson(const datapath::MapInfo& m) {
  return {{"name", m.name},
          {"type", m.type},
          {"id", m.id},
          {"keySize", m.key_size},
          {"valueSize", m.value_size},
          {"maxEntries", m.max_entries},
          {"entries", m.entries},
          {"pinPath", m.pin_path}};
}

nlohmann::ordered_json programJson(const datapath::ProgramInfo& p) {
  return {{"name", p.name},      {"attachType", p.attach_type}, {"progId", p.prog_id},
          {"linkId", p.link_id}, {"runCount", p.run_cnt},       {"runTimeNs", p.run_time_ns}};
}

// meshd's own cgroup v2 directory ("0::<path>" in /proc/self/cgroup).
absl::StatusOr<std::string> ownCgroup(const std::string& cgroup2_mount) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("0::")) return cgroup2_mount + line.substr(3);
  }
  return absl::NotFoundError("meshd's cgroup v2 path is not in /proc/self/cgroup");
}

// Before the datapath is programmed: the L7 configuration, then the kernel policy for the
// backends of both the current and the next state (KernelPolicySync::prepare).
class PolicyFirstObserver : public state::ConfigObserver {
 public:
  PolicyFirstObserver(L7Config& l7, KernelPolicySync& policy, const state::Model& model)
      : l7_(l7), policy_(policy), model_(model) {}
  // model_.desired() is still the current state here (the model commits after the sink).
  void willApply(const state::ResourceSet& resources,
                 const state::DesiredLbState& desired) override {
    l7_.willApply(resources, desired);
    policy_.prepare(resources, model_.desired(), desired);
  }

 private:
  L7Config& l7_;
  KernelPolicySync& policy_;
  const state::Model& model_;
};

}  // namespace

absl::Status ObservedSink::apply(const state::DesiredLbState& desired) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = inner_.apply(desired);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  readiness_.recordReconcile(s, seconds);
  if (s.ok()) {
    spdlog::debug("reconciled {} frontends in {:.3f}s", desired.frontends.size(), seconds);
    if (after_) after_();
  } else {
    spdlog::error("reconcile failed after {:.3f}s: {}", seconds, std::string(s.message()));
  }
  return s;
}

absl::StatusOr<DaemonPtr> Daemon::start(DaemonOptions options) {
  if (options.state_dir.empty()) options.state_dir = "/var/lib/meshd/" + options.instance;
  DaemonPtr d(new Daemon(std::move(options)));
  absl::Status s = d->init();
  if (!s.ok()) {
    d->stop();
    return s;
  }
  return d;
}

absl::Status Daemon::init() {
  // 1. The host: privileges, BTF, cgroup v2, bpffs.
  ASSIGN_OR_RETURN(datapath::HostPaths host, datapath::preflight());
  ASSIGN_OR_RETURN(cgroup_path_, datapath::resolveCgroup(host, options_.cgroup));
  spdlog::info("cgroup2 at {}, bpffs at {}; attaching to {}", host.cgroup2_mount, host.bpffs_mount,
               cgroup_path_);

  // 2. One meshd per instance, before anything touches its pins.
  ASSIGN_OR_RETURN(lock_, InstanceLock::acquire(options_.lock_dir, options_.instance));

  // 3. The kernel programs and maps (adopting pins a previous meshd left).
  datapath::DatapathConfig config;
  config.instance = options_.instance;
  config.cgroup_path = cgroup_path_;
  config.pin_root = options_.pin_root;
  config.max_services = options_.max_services;
  config.max_backends = options_.max_backends;
  config.max_slots = options_.max_slots;
  config.sockmap = options_.sockmap;
  auto datapath = datapath::Datapath::open(config);
  if (!datapath.ok()) return withContext(datapath.status(), "loading the BPF datapath");
  datapath_ = std::move(*datapath);
  spdlog::info("{} BPF programs and maps under {}", datapath_->adopted() ? "adopted" : "created",
               pinDir());
  if (const datapath::SockmapState& sm = datapath_->sockmap();
      sm.active || sm.mode == datapath::SockmapMode::kOff) {
    spdlog::info("sockmap: {}", datapath::sockmapStatusText(sm));
  } else {
    spdlog::warn("sockmap: {}; local pod-to-pod bytes take the plain TCP path",
                 datapath::sockmapStatusText(sm));
  }

  // 3b. Where connects to L7 services go (meshd's outbound listener). The
  // proxy serving it is wired in by the proxy core (datapath_->origDstTable()).
  {
    const datapath::RedirectTarget& r = options_.redirect;
    if (absl::Status s = datapath_->setRedirectTarget(r.v4, r.v6, r.port); !s.ok()) {
      return withContext(s, "setting the L7 redirect target (--redirect-address, --proxy-port)");
    }
    if (r.enabled()) {
      spdlog::info("L7 services redirect to {}", r.toString());
      // The app↔meshd hop: splice it like any local pair when the fast path is on.
      if (datapath_->sockmap().active) {
        auto own = ownCgroup(host.cgroup2_mount);
        absl::Status spliced = own.ok() ? datapath_->attachProxySockops(*own) : own.status();
        if (spliced.ok()) {
          proxy_splice_ = absl::StrCat("on (sockops on meshd's cgroup ", *own, ")");
        } else {
          proxy_splice_ = absl::StrCat("off: ", spliced.message());
          spdlog::warn("the app-to-meshd hop is not spliced: {}", std::string(spliced.message()));
        }
      } else {
        proxy_splice_ = "off: sockmap is off";
      }
      spdlog::info("app-to-meshd hop splice: {}", proxy_splice_);
    } else {
      spdlog::info("L7 redirect off (no --redirect-address): L7 services take the L4 path");
    }
  }

  // 4. The reconciler learns what the maps already hold.
  reconciler_ = std::make_unique<datapath::Reconciler>(datapath_->maps());
  if (absl::Status s = reconciler_->adopt(); !s.ok()) {
    return withContext(s, "reading the pinned maps");
  }
  sink_ = std::make_unique<ObservedSink>(*reconciler_, readiness_,
                                         [this] { terminateRemovedConnections(); });
  kernel_policy_ = std::make_unique<KernelPolicySync>(*datapath_, datapath_mu_, options_.node_name,
                                                      options_.trust_domain, host.cgroup2_mount);

  // 5. The embedded store.
  auto store = store::Store::open(options_.state_dir);
  if (!store.ok()) return withContext(store.status(), "opening the store (--state-dir)");
  store_ = std::move(*store);

  // 6. The model loads the store and reconciles the maps to it. The L7 proxy's
  // configuration follows every state the model programs (before the kernel does).
  const unsigned workers = options_.proxy_workers != 0
                               ? options_.proxy_workers
                               : std::max(1u, std::thread::hardware_concurrency());
  l7_ = std::make_unique<L7Config>(datapath_->origDstTable(), workers);
  // L7 outlier ejections go into the kernel's ejection state (connect() skips them too).
  l7_->setEjector(datapath_->ejector());
  l7_->setNodeName(options_.node_name);
  l7_->setTrustDomain(options_.trust_domain);
  if (!options_.ca_address.empty()) {
    RETURN_IF_ERROR(startIdentityAgent());
    vias_ = std::make_unique<ViaTable>(agent_->bundlePtr(), options_.trust_domain);
    l7_->setMtls({agent_.get(), vias_.get(), options_.tunnel_port});
  }
  if (!options_.access_log.empty()) {
    telemetry::AccessLog::Options ao;
    ao.shards = workers;
    ao.on_error = [](std::string_view m) { spdlog::error("{}", m); };
    auto log = telemetry::AccessLog::open(options_.access_log, std::move(ao));
    if (!log.ok()) return log.status();
    l7_->setAccessLog(std::move(*log));
    spdlog::info("access log: {} (JSON lines)", options_.access_log);
  }
  model_ = std::make_unique<state::Model>(
      store_.get(), *sink_,
      state::MeshSettings{.mtls = !options_.ca_address.empty(), .node_name = options_.node_name});
  observer_ = std::make_unique<PolicyFirstObserver>(*l7_, *kernel_policy_, *model_);
  model_->setObserver(observer_.get());
  updater_ = std::make_unique<state::Updater>();
  readiness_.setProgramsAttached(attachedPrograms());
  absl::Status loaded = updater_->run([this] {
    absl::Status s = model_->load();
    // The kernel policy follows the loaded resources (not an unreadable store's nothing).
    if (model_->generation() != 0) syncKernelPolicy();
    return s;
  });
  if (!loaded.ok()) {
    // The sink ran and failed: keep serving (not ready) and retry later. A
    // store that cannot be read is fatal: serving an empty state would delete
    // every service from the maps on the next apply.
    if (!readiness_.snapshot().reconciled) return loaded;
    spdlog::error("{}; serving anyway, /readyz reports not ready, retrying",
                  std::string(loaded.message()));
  } else {
    const size_t n =
        updater_->run([this]() -> absl::StatusOr<size_t> { return model_->resources().size(); })
            .value_or(0);
    spdlog::info("loaded {} resources from {}", n, store_->filePath());
  }

  // 7. Serve: the mTLS tunnel, the L7 proxy (when connects are redirected to it), metrics,
  // the API.
  if (agent_) RETURN_IF_ERROR(startTunnel());
  if (options_.redirect.enabled()) {
    proxy::ProxyOptions po;
    auto listen = SocketAddress::parse(
        absl::StrCat(options_.redirect.v6 ? "[::]" : "0.0.0.0", ":", options_.redirect.port));
    if (!listen.ok()) return listen.status();
    po.listen = *listen;
    po.workers = workers;
    po.connector = tunnel_.get();
    // meshd's upstream connections to local workloads must pass STRICT.
    po.upstream_mark = datapath_->strictMark();
    auto proxy = proxy::Proxy::start(po, *l7_, *l7_, l7_.get());
    if (!proxy.ok()) return withContext(proxy.status(), "starting the L7 proxy (--proxy-port)");
    proxy_ = std::move(*proxy);
    spdlog::info("L7 proxy listening on {} with {} workers", po.listen.toString(), workers);
  }
  metrics_ = nullptr;
  auto metrics = telemetry::HttpServer::start(
      options_.metrics_addr,
      telemetry::makeAdminHandler([this] { return ready(); }, [this] { return renderMetrics(); }));
  if (!metrics.ok()) return metrics.status();
  metrics_ = std::move(*metrics);
  auto api = api::ApiServer::start(options_.api_socket, *this);
  if (!api.ok()) return api.status();
  api_ = std::move(*api);
  spdlog::info("serving the API on {} and metrics on port {}", options_.api_socket,
               metrics_->port());
  if (absl::Status r = ready(); r.ok()) {
    spdlog::info("ready");
  } else {
    spdlog::warn("not ready: {}", std::string(r.message()));
  }
  started_ = true;
  return absl::OkStatus();
}

Daemon::~Daemon() { stop(); }

void Daemon::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (api_) api_->shutdown();
  if (proxy_) proxy_->stop();
  if (tunnel_) tunnel_->stop();
  if (metrics_) metrics_->stop();
  if (updater_) updater_->stop();
  if (agent_) agent_->stop();
  if (started_) {
    spdlog::info(
        "leaving the BPF programs and maps pinned under {}: connections to services keep being "
        "balanced while meshd is down (meshd --remove-pins --instance {} removes them)",
        pinDir(), options_.instance);
  }
}

std::string Daemon::pinDir() const {
  return datapath_ ? datapath_->instanceDir() : options_.pin_root + "/" + options_.instance;
}

absl::Status Daemon::retryReconcile() {
  // A kernel policy that could not be programmed (e.g. a pod's netns not there yet) is
  // tried again; its errors stay in `meshctl status` (policy.lastError).
  (void)updater_->run([this] {
    if (kernel_policy_failed_) syncKernelPolicy();
    return absl::OkStatus();
  });
  const telemetry::Readiness::Snapshot s = readiness_.snapshot();
  if (s.last_ok) return absl::OkStatus();
  absl::Status r = updater_->run([this] { return model_->resync(); });
  if (r.ok()) spdlog::info("reconcile succeeded on retry; ready");
  return r;
}

int Daemon::attachedPrograms() {
  absl::MutexLock lock(&datapath_mu_);
  auto progs = datapath_->programs();
  if (!progs.ok()) {
    spdlog::warn("listing attached programs: {}", std::string(progs.status().message()));
    return 0;
  }
  return static_cast<int>(progs->size());
}

absl::Status Daemon::ready() {
  readiness_.setProgramsAttached(attachedPrograms());
  return readiness_.ready();
}

void Daemon::syncKernelPolicy() {
  if (!kernel_policy_) return;
  const uint64_t gen = model_->generation();
  if (gen == kernel_policy_generation_ && !kernel_policy_failed_) return;
  kernel_policy_generation_ = gen;
  kernel_policy_failed_ = !kernel_policy_->sync(model_->resources(), model_->desired()).ok();
}

void Daemon::terminateRemovedConnections() {
  std::vector<mesh_drain_key> pairs = reconciler_->takeTerminations();
  if (pairs.empty()) return;
  absl::MutexLock lock(&datapath_mu_);
  auto ended = datapath_->terminateConnections(pairs);
  if (ended.ok()) {
    spdlog::info("draining.terminateConnections: ended {} connections to {} removed backends",
                 *ended, pairs.size());
  } else {
    spdlog::warn("draining.terminateConnections: {}; those connections drain instead",
                 std::string(ended.status().message()));
  }
}

std::string Daemon::renderMetrics() {
  telemetry::MeshdMetrics m;
  m.version = MESHD_VERSION;
  m.ready = ready().ok();
  const telemetry::Readiness::Snapshot r = readiness_.snapshot();
  m.reconcile_ok = r.reconcile_ok;
  m.reconcile_error = r.reconcile_error;
  m.reconcile_seconds = r.last_seconds;
  {
    absl::MutexLock lock(&datapath_mu_);
    auto stats = datapath_->maps().readStats();
    if (stats.ok()) {
      for (uint32_t i = 0; i < stats->size(); ++i) {
        m.bpf_events.emplace_back(std::string(datapath::statName(i)), (*stats)[i]);
      }
    } else {
      spdlog::warn("reading mesh_stats: {}", std::string(stats.status().message()));
    }
  }
  auto views = reconciler_->describe();
  if (views.ok()) {
    absl::flat_hash_set<uint32_t> ids;
    m.frontends = views->size();
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns()'s clock
    const uint64_t now_ns = uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
    for (const auto& fv : *views) {
      const state::Frontend& f = fv.frontend;
      const mesh_svc_state& c = fv.counters;
      m.service_samples.push_back(
          {f.ns, f.service,
           absl::StrCat(api::hostPort(f.vip, f.port), "/",
                        absl::AsciiStrToUpper(resources::protocolName(f.protocol))),
           c.live_conns, c.refused_service, c.refused_backend, c.refused_rate,
           c.refused_client_rate, c.refused_ejected, c.rerouted, c.ejected, c.ejections,
           c.ejections_skipped, c.refused_authz});
      for (const auto& b : fv.backends) {
        ids.insert(b.id);
        m.backend_samples.push_back(
            {f.ns, f.service, api::hostPort(b.address, b.port), b.id, b.counters.live_conns,
             b.counters.total_conns, b.counters.connect_failures, b.counters.consecutive_failures,
             b.counters.ejected_until_ns > now_ns, b.counters.srtt_ewma_us / 1e6});
      }
    }
    m.draining_backends = reconciler_->drainingBackends();
    m.draining_services = reconciler_->drainingServices();
    m.backends = ids.size();
  } else {
    spdlog::warn("reading backend counters: {}", std::string(views.status().message()));
  }
  if (kernel_policy_) m.strict_samples = kernel_policy_->strictSamples();
  std::string out = telemetry::renderMetrics(m);
  if (l7_) {
    l7_->metrics().render(out);
    l7_->renderResilienceMetrics(out);
    l7_->renderPolicyMetrics(out);
  }
  if (tunnel_) tunnel_->renderMetrics(out);
  return out;
}

absl::Status Daemon::startIdentityAgent() {
  IdentityAgentOptions ao;
  ao.ca_address = options_.ca_address;
  ao.node_cert = options_.node_cert;
  ao.node_key = options_.node_key;
  ao.trust_bundle = options_.trust_bundle;
  ao.trust_domain = options_.trust_domain;
  ao.node_name = options_.node_name;
  auto agent = IdentityAgent::start(std::move(ao));
  if (!agent.ok()) return withContext(agent.status(), "starting the node agent (--ca-address)");
  agent_ = std::move(*agent);
  return absl::OkStatus();
}

absl::Status Daemon::startTunnel() {
  MeshTunnelOptions to;
  std::string host = options_.tunnel_address;
  if (host.empty()) host = options_.redirect.v6 ? "[::]" : "0.0.0.0";
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  auto listen = SocketAddress::parse(absl::StrCat(host, ":", options_.tunnel_port));
  if (!listen.ok()) return withContext(listen.status(), "--tunnel-address");
  to.listen = *listen;
  to.server_identity = agent_->nodeIdentity();
  to.bundle = agent_->bundlePtr();
  to.tunnel_bundle = agent_->tunnelBundle();
  to.trust_domain = options_.trust_domain;
  // Inbound streams: to a local Workload only, authorized (L4: no HTTP attributes, rules
  // needing them fail closed) with the client's SPIFFE ID; upstream sockets carry the STRICT
  // mark so the kernel's STRICT program lets them through.
  const uint32_t mark = datapath_->strictMark();
  to.hook = [l7 = l7_.get(), mark](const tunnel::InboundRequest& r) {
    switch (l7->authorizeTunnel(r.peer_identity, r.dst)) {
      case L7Config::TunnelVerdict::kAllow:
        return tunnel::InboundDecision::allowWithMark(mark);
      case L7Config::TunnelVerdict::kNotLocal:
        return tunnel::InboundDecision::deny(403, "not a local workload");
      case L7Config::TunnelVerdict::kDenied:
        break;
    }
    return tunnel::InboundDecision::deny(403, "RBAC: access denied");
  };
  auto tunnel = MeshTunnel::start(std::move(to), *vias_);
  if (!tunnel.ok()) return withContext(tunnel.status(), "starting the mTLS tunnel");
  tunnel_ = std::move(*tunnel);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<api::AppliedResource>> Daemon::apply(
    std::vector<resources::Resource> batch, bool dry_run) {
  const size_t n = batch.size();
  auto results =
      updater_->run([this, batch = std::move(batch),
                     dry_run]() mutable -> absl::StatusOr<std::vector<state::Model::ApplyResult>> {
        auto r = model_->apply(std::move(batch), dry_run);
        if (r.ok() && !dry_run) syncKernelPolicy();
        return r;
      });
  if (!results.ok()) {
    spdlog::warn("apply of {} resources refused: {}", n, std::string(results.status().message()));
    return results.status();
  }
  std::vector<api::AppliedResource> out;
  for (auto& r : *results) {
    if (!dry_run && r.action != "unchanged") {
      spdlog::info("{} {}", r.key.toString(), r.action);
    }
    out.push_back({std::move(r.key), std::move(r.action)});
  }
  return out;
}

absl::StatusOr<std::vector<resources::ResourceKey>> Daemon::remove(
    std::vector<resources::ResourceKey> keys) {
  auto deleted = updater_->run(
      [this, keys = std::move(keys)]() -> absl::StatusOr<std::vector<resources::ResourceKey>> {
        auto r = model_->remove(keys);
        if (r.ok()) syncKernelPolicy();
        return r;
      });
  if (deleted.ok()) {
    for (const auto& k : *deleted) spdlog::info("{} deleted", k.toString());
  }
  return deleted;
}

absl::StatusOr<api::FrontendViews> Daemon::frontends() { return reconciler_->describe(); }

absl::StatusOr<api::L7ClusterViews> Daemon::l7Clusters() {
  api::L7ClusterViews out;
  if (!l7_) return out;
  for (const L7Config::ClusterStats& s : l7_->clusterStats()) {
    out.push_back({s.cluster, s.breaker.pending, s.breaker.active, s.breaker.retries,
                   s.breaker.pending_overflow, s.breaker.request_overflow, s.breaker.retry_overflow,
                   s.ejected, s.ejections, s.ejections_skipped});
  }
  return out;
}

absl::StatusOr<std::vector<resources::Resource>> Daemon::resources() {
  return updater_->run([this]() -> absl::StatusOr<std::vector<resources::Resource>> {
    return model_->resources().toVector();
  });
}

absl::StatusOr<nlohmann::ordered_json> Daemon::status() {
  nlohmann::ordered_json s;
  s["version"] = MESHD_VERSION;
  s["instance"] = options_.instance;
  absl::Status r = ready();
  s["ready"] = r.ok();
  if (!r.ok()) s["notReadyReason"] = std::string(r.message());
  s["adopted"] = datapath_->adopted();
  s["cgroup"] = cgroup_path_;
  s["pinDir"] = pinDir();
  s["programsAttached"] = readiness_.snapshot().programs_attached;
  {
    absl::MutexLock lock(&datapath_mu_);
    s["sockmap"] = datapath::sockmapStatusText(datapath_->sockmap());
    s["sockmapMode"] = std::string(datapath::sockmapModeName(datapath_->sockmap().mode));
    s["l7Redirect"] = datapath_->redirectTarget().toString();
    s["l7HopSplice"] = proxy_splice_;
  }
  if (proxy_) {
    const proxy::ProxyStats ps = proxy_->stats();
    s["l7Proxy"] = {{"port", proxy_->port()},  {"routedServices", l7_->routedServices()},
                    {"accepted", ps.accepted}, {"http", ps.http},
                    {"opaque", ps.opaque},     {"origDstUnknown", ps.orig_dst_unknown}};
  } else {
    s["l7Proxy"] = "off";
  }
  if (l7_ && l7_->accessLog() != nullptr) {
    const telemetry::AccessLogStats as = l7_->accessLog()->stats();
    s["accessLog"] = {{"path", l7_->accessLog()->path()},
                      {"lines", as.lines},
                      {"bytesWritten", as.bytes_written},
                      {"writeErrors", as.write_errors},
                      {"lostLines", as.lost_lines}};
  } else {
    s["accessLog"] = "off";
  }
  if (agent_) {
    const IdentityAgentStats as = agent_->stats();
    nlohmann::ordered_json m = {
        {"caAddress", options_.ca_address},  {"nodeIdentity", agent_->nodeIdentity()->name()},
        {"identities", as.identities},       {"identitiesReady", as.ready},
        {"certificatesIssued", as.issued},   {"caFailures", as.failures},
        {"vias", vias_ ? vias_->size() : 0}, {"strictNoCredential", l7_->strictNoCredential()}};
    if (tunnel_) {
      m["tunnelListen"] = tunnel_->listening().toString();
      m["tunnelStreamsOut"] = tunnel_->clientCounters().streams_opened.load();
      m["tunnelStreamsIn"] = tunnel_->serverCounters().streams_opened.load();
    }
    s["mtls"] = std::move(m);
  } else {
    s["mtls"] = "off";
  }
  ASSIGN_OR_RETURN(api::FrontendViews views, reconciler_->describe());
  absl::flat_hash_set<uint32_t> ids;
  for (const auto& fv : views) {
    for (const auto& b : fv.backends) ids.insert(b.id);
  }
  s["frontends"] = views.size();
  s["backends"] = ids.size();
  ASSIGN_OR_RETURN(size_t resource_count, updater_->run([this]() -> absl::StatusOr<size_t> {
    return model_->resources().size();
  }));
  s["resources"] = resource_count;
  s["stateDir"] = store_->dir();
  s["apiSocket"] = options_.api_socket;
  s["metricsPort"] = metrics_->port();
  if (kernel_policy_) s["policy"] = kernel_policy_->status();
  const telemetry::Readiness::Snapshot snap = readiness_.snapshot();
  const datapath::Reconciler::Stats stats = reconciler_->stats();
  s["reconcile"] = {{"ok", snap.reconcile_ok},
                    {"error", snap.reconcile_error},
                    {"lastSeconds", snap.last_seconds},
                    {"lastError", snap.last_error},
                    {"lastWrites", stats.last_writes}};
  return s;
}

absl::StatusOr<nlohmann::ordered_json> Daemon::bpf(std::string_view what, std::string_view map) {
  absl::MutexLock lock(&datapath_mu_);
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  if (what == "maps") {
    ASSIGN_OR_RETURN(auto maps, datapath_->mapInfo());
    for (const auto& m : maps) out.push_back(mapInfoJson(m));
    return out;
  }
  if (what == "progs") {
    ASSIGN_OR_RETURN(auto progs, datapath_->programs());
    for (const auto& p : progs) out.push_back(programJson(p));
    return out;
  }
  ASSIGN_OR_RETURN(nlohmann::json entries, datapath_->dumpMap(map));
  return nlohmann::ordered_json(entries);
}

}  // namespace meshd::daemon
