// The daemon's side of the L7 proxy: what the proxy core (userspace/proxy/core) asks of
// meshd — where a connection was going (the kernel's mesh_orig_dst), where a request
// goes (the routing table), and what to count (Istio's request metrics).
//
// Configuration reaches the workers as an immutable Snapshot, built on the updater
// thread before the datapath is programmed (state::ConfigObserver) and published by
// bumping a generation counter; each worker keeps its own reference and re-reads it
// only when the generation moved (one relaxed atomic load per request, no lock).
//
// Request-level resilience (docs/design/0003-l7-proxy.md, "Resilience (as built)"): every
// resolved cluster of a snapshot has its node-wide state from a ClusterRegistry (circuit
// breaker + retry budget, L7 outlier detection), the same objects across swaps; route() hands
// the core the target cluster's breaker, the called Service's retry policy and fault delay;
// retarget() picks another endpoint for a retry; onTry() feeds outlier detection (ejections
// go to the kernel through a datapath::BackendEjector) and peak-EWMA balancing.
//
// Authorization and rate limits (docs/design/0004-identity-mtls.md, "Authorization and rate
// limits"): after the endpoint is picked, the request is authorized against the destination
// Workload's AuthorizationPolicies (policy::Authorizer; the source is the Workload whose
// address is the peer's, on this node) — denied: 403 "RBAC: access denied", flag RBAC — and
// then charged to the called Service's RateLimitPolicy buckets (policy::RateLimiter,
// node-wide, kept across config swaps while the policy is unchanged) — refused: 429 with
// Retry-After, flag RL.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/container/node_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "daemon/identity_agent.h"
#include "datapath/ejector.h"
#include "datapath/orig_dst.h"
#include "policy/authz.h"
#include "policy/rate_limit.h"
#include "proxy/core/proxy.h"
#include "proxy/resilience/registry.h"
#include "proxy/routing/route_table.h"
#include "state/model.h"
#include "telemetry/access_log.h"
#include "telemetry/request_metrics.h"

namespace meshd::daemon {

// Results of the kernel ejections L7 outlier detection requested: by datapath::EjectResult,
// then one slot for syscall errors.
inline constexpr size_t kEjectResults = 6;

class ViaTable;  // daemon/mesh_tunnel.h
// The via routeConnectionFrom() gives a connection whose destination is STRICT while its
// source has no certificate: no ViaTable entry has it, so the connector refuses it (an
// opaque relay is closed, flag UF) while the connection's HTTP requests are still parsed and
// answered 503 MTLS by route(). Never plaintext.
inline constexpr uint64_t kViaStrictRefused = ~uint64_t{0};
struct KernelEjectCounters {
  std::array<std::atomic<uint64_t>, kEjectResults> by_result{};
};

class L7Config : public state::ConfigObserver,
                 public proxy::Router,
                 public proxy::Observer,
                 public proxy::OriginalDst {
 public:
  // `orig_dst` null: every lookup misses (no kernel redirect; tests).
  L7Config(datapath::OrigDstTablePtr orig_dst, unsigned metric_shards);
  ~L7Config() override;

  // state::ConfigObserver (updater thread).
  void willApply(const state::ResourceSet& resources,
                 const state::DesiredLbState& desired) override;

  // proxy::Router (worker threads).
  void route(const proxy::RequestInfo& req, proxy::RouteDecision& out) override;
  bool routeConnection(const SocketAddress& orig_dst, SocketAddress& upstream,
                       std::string_view& cluster) override;
  // routeConnection() plus the mTLS tunnel decision for the opaque relay (via);
  // kViaStrictRefused when the destination is STRICT and the source has no certificate.
  bool routeConnectionFrom(const SocketAddress& orig_dst, const SocketAddress& peer,
                           SocketAddress& upstream, std::string_view& cluster,
                           uint64_t& via) override;
  // Another endpoint of decision's cluster for a retry (never `failed` while another
  // endpoint that is not L7-ejected exists); false when the decision has no cluster state.
  bool retarget(proxy::RouteDecision& decision, const SocketAddress& failed) override;
  // Every try's end: L7 outlier detection (may eject the endpoint, also in the kernel) and
  // the peak-EWMA sample of a LeastLatency cluster.
  void onTry(const proxy::RouteDecision& decision, const SocketAddress& endpoint,
             const proxy::resilience::TryOutcome& outcome, uint64_t elapsed_us) override;
  void onCancel(const proxy::RouteDecision& decision, const SocketAddress& endpoint) override;
  // proxy::Observer (worker threads).
  void onRequest(const proxy::RequestRecord& record) override;
  // proxy::OriginalDst (worker threads).
  std::optional<SocketAddress> lookup(int fd, const SocketAddress& peer) override;

  telemetry::RequestMetrics& metrics() { return metrics_; }
  // Where L7 outlier ejections are published (Datapath::ejector(): the kernel's ejection
  // state, so connect() skips the backend too); null (the default) = the proxy's view only.
  // Set before the first willApply (snapshots capture it).
  void setEjector(datapath::BackendEjectorPtr ejector) { ejector_ = std::move(ejector); }

  // Request-level resilience state of one cluster of the current snapshot.
  struct ClusterStats {
    std::string cluster;  // "ns/svc:port"
    proxy::resilience::CircuitBreaker::Counts breaker;
    uint32_t ejected = 0;  // endpoints L7-ejected now
    uint64_t ejections = 0, ejections_skipped = 0;
  };
  // Every cluster with resilience state, sorted by name.
  std::vector<ClusterStats> clusterStats() const;
  // Kernel ejections requested by L7 outlier detection, by result (KernelEjectCounters).
  std::array<uint64_t, kEjectResults> kernelEjections() const;
  // The per-cluster breaker and L7 ejection metrics (docs/metrics.md) appended to `out`.
  void renderResilienceMetrics(std::string& out) const;
  // The access log (--access-log): one line per record, after the metrics. Set before
  // the proxy starts; null (the default) = off.
  void setAccessLog(telemetry::AccessLogPtr log) { access_log_ = std::move(log); }
  telemetry::AccessLog* accessLog() { return access_log_.get(); }
  // Services with routes in the current snapshot (for status).
  size_t routedServices() const;
  // This node's name (Workload spec.node): only Workloads of this node are trusted as the
  // source of a request by their address; "" (the default) = any node's. The SPIFFE trust
  // domain of Workload identities. Both before the first willApply.
  void setNodeName(std::string node) { node_name_ = std::move(node); }
  void setTrustDomain(std::string td) { trust_domain_ = std::move(td); }
  // meshd_authz_denied_total and meshd_ratelimited_total (docs/metrics.md) appended to `out`.
  void renderPolicyMetrics(std::string& out) const;

  // The mTLS tunnel (docs/design/0004-identity-mtls.md, "Wiring into meshd"). With both set,
  // a request from a local Workload with a certificate to an endpoint Workload on another
  // node that has a Node InternalIP, whose effective mTLS mode is not DISABLE, goes through
  // the tunnel (RouteDecision::via, an id of `vias`); a STRICT destination without a source
  // certificate is answered 503 (flag "MTLS"). Set before the first willApply; both must
  // outlive the L7Config. `credentials` is asked for every local Workload's identity.
  struct MtlsSettings {
    CredentialProvider* credentials = nullptr;
    ViaTable* vias = nullptr;
    uint16_t tunnel_port = 15008;
  };
  void setMtls(MtlsSettings m) { mtls_ = m; }
  // The tunnel server's authorization of one inbound stream: `peer_id` the client's SPIFFE
  // ID (a workload's), `dst` the CONNECT authority. Any thread.
  enum class TunnelVerdict : uint8_t { kAllow, kNotLocal, kDenied };
  TunnelVerdict authorizeTunnel(std::string_view peer_id, const SocketAddress& dst);
  // Requests/connections refused because the destination is STRICT and the source has no
  // certificate (meshd_mtls_refused_total{reason="no_source_certificate"}).
  uint64_t strictNoCredential() const { return strict_no_cred_.load(std::memory_order_relaxed); }

  struct Snapshot;

 private:
  std::shared_ptr<const Snapshot> snapshot() const;
  static bool pickInto(const proxy::routing::Cluster& c, const Snapshot& snap, const void* ce,
                       proxy::RouteDecision& out);
  // Authorization and rate limits for a forwarded decision; false when `out` became a
  // direct response (403 RBAC or 429 RL), which then holds `snap` as its pin (moved from).
  // `route` is the matched rule's route ("HTTPRoute/ns/name"; "" = none).
  static bool admit(std::shared_ptr<const Snapshot>& snap, const proxy::RequestInfo& req,
                    std::string_view route, proxy::RouteDecision& out);
  // The tunnel decision for a forwarded decision (sets out.via); false when `out` became a
  // 503 (STRICT destination, no source certificate), which then holds the pin.
  bool viaInto(std::shared_ptr<const Snapshot>& snap, const SocketAddress& peer,
               proxy::RouteDecision& out);
  // A counter of policy_counters_, created on first use (updater thread).
  std::atomic<uint64_t>* policyCounter(const std::string& key);

  datapath::OrigDstTablePtr orig_dst_;
  datapath::BackendEjectorPtr ejector_;
  // Kernel ejection results (kernelEjections()); shared with the snapshots' sinks.
  std::shared_ptr<KernelEjectCounters> eject_counters_ = std::make_shared<KernelEjectCounters>();
  // Node-wide per-cluster state across swaps; the updater thread only (willApply).
  proxy::resilience::ClusterRegistry registry_;
  telemetry::RequestMetrics metrics_;
  telemetry::AccessLogPtr access_log_;
  std::atomic<unsigned> next_shard_{0};
  // Unique in the process (not the address: tests make several L7Configs, and a worker
  // thread's cached snapshot must not outlive the instance it came from).
  const uint64_t instance_;
  std::atomic<uint64_t> generation_{0};
  mutable absl::Mutex mu_;
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mu_);
  // Cluster names handed out without a pin (routeConnection); bounded by the
  // configuration's distinct Service ports, never freed.
  absl::node_hash_set<std::string> interned_ ABSL_GUARDED_BY(mu_);
  std::string node_name_;
  std::string trust_domain_ = resources::kDefaultTrustDomain;
  MtlsSettings mtls_;
  std::atomic<uint64_t> strict_no_cred_{0};
  // Rate limiters by RateLimitPolicy ("ns/name"), reused across snapshots while their spec
  // is unchanged (the buckets keep their state); the updater thread only.
  absl::flat_hash_map<std::string, std::shared_ptr<policy::RateLimiter>> limiters_;
  // Policy counters by "<family>|<label values>", never removed (bounded by the policies
  // ever configured); nodes are stable, so snapshots point at them.
  absl::node_hash_map<std::string, std::atomic<uint64_t>> policy_counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace meshd::daemon
