#include "daemon/l7.h"

#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <random>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "daemon/mesh_tunnel.h"
#include "identity/spiffe.h"
#include "proxy/resilience/fault.h"
#include "proxy/resilience/outlier.h"
#include "proxy/resilience/peak_ewma.h"
#include "spdlog/spdlog.h"
#include "telemetry/exposition.h"

namespace meshd::daemon {
namespace {

using proxy::HeaderEdit;
namespace routing = proxy::routing;

struct VipPort {
  IpAddress vip;
  uint16_t port = 0;
  friend bool operator==(const VipPort&, const VipPort&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const VipPort& k) {
    return H::combine(std::move(h), k.vip, k.port);
  }
};

// A per-thread generator: splitmix64 seeded once from the OS (requests need fair
// draws, not cryptographic ones; no lock, no allocation).
uint64_t nextRandom() {
  thread_local uint64_t state = [] {
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ rd();
  }();
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void appendEdits(const routing::HeaderEdits& e, std::vector<HeaderEdit>& out) {
  for (const auto& r : e.remove) out.push_back({HeaderEdit::Op::kRemove, r, {}});
  for (const auto& s : e.set) out.push_back({HeaderEdit::Op::kSet, s.name, s.value});
  for (const auto& a : e.add) out.push_back({HeaderEdit::Op::kAdd, a.name, a.value});
}

// ::ffff:a.b.c.d -> a.b.c.d (a dual-stack listener reports IPv4 peers so).
IpAddress unmapped(const IpAddress& a) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (a.family != AF_INET6 || !std::equal(kPrefix, kPrefix + 12, a.bytes.begin())) return a;
  IpAddress v4;
  v4.family = AF_INET;
  std::copy(a.bytes.begin() + 12, a.bytes.end(), v4.bytes.begin());
  return v4;
}

// One access-log line (telemetry/access_log.h) for a record.
void logAccess(telemetry::AccessLog& log, const proxy::RequestRecord& r) {
  telemetry::AccessLogEntry e;
  e.start_unix_us = r.start_unix_us;
  e.method = r.method;
  e.path = r.path;
  e.protocol = telemetry::accessLogProtocol(r.protocol);
  e.response_code = r.response_code;
  e.response_flags = r.response_flags;
  e.bytes_received = r.request_bytes;
  e.bytes_sent = r.response_bytes;
  e.duration_us = r.duration_us;
  e.user_agent = r.user_agent;
  e.request_id = r.request_id;
  e.authority = r.authority;
  e.upstream_host = r.upstream;
  e.upstream_cluster = r.cluster;
  e.downstream_local = r.orig_dst;
  e.downstream_remote = r.peer;
  e.grpc = r.protocol == "grpc";
  e.grpc_status = r.grpc_status;
  e.attempts = r.attempts;
  log.log(e);
}

// "ns/svc:port" -> (ns, svc); views into `cluster`.
std::pair<std::string_view, std::string_view> serviceOf(std::string_view cluster) {
  const size_t slash = cluster.find('/');
  if (slash == std::string_view::npos) return {};
  std::string_view ns = cluster.substr(0, slash);
  std::string_view rest = cluster.substr(slash + 1);
  return {ns, rest.substr(0, rest.rfind(':'))};
}

// Per-request latency-aware balancing (TrafficPolicy loadBalancer LeastLatency): one
// peak-EWMA P2C balancer per cluster and worker thread, keyed by the cluster's name so its
// state survives config swaps (PeakEwmaBalancer::update carries endpoints by address).
// Only the worker that picked an endpoint records its latency, so nothing is shared.
struct WorkerBalancers {
  struct Entry {
    proxy::resilience::PeakEwmaBalancer balancer;
    uint64_t snapshot = 0;  // Snapshot::id it was updated for (ids are never reused)
  };
  absl::flat_hash_map<std::string, Entry> by_cluster;
};

WorkerBalancers& workerBalancers() {
  thread_local WorkerBalancers b;
  return b;
}

uint64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ULL + uint64_t(ts.tv_nsec);
}

uint64_t monotonicMs() { return monotonicNs() / 1'000'000; }

constexpr size_t kNoIndex = proxy::resilience::kNoEndpoint;

// The worker's peak-EWMA balancer of a LeastLatency cluster (re-indexed when the worker first
// routes on a new snapshot), or null for weighted random.
proxy::resilience::PeakEwmaBalancer* balancerFor(const routing::Cluster& c, uint64_t snapshot_id) {
  if (c.request_policy == nullptr || !c.request_policy->peak_ewma || c.endpoints.size() < 2) {
    return nullptr;
  }
  auto& map = workerBalancers().by_cluster;
  auto it = map.find(c.name);
  if (it == map.end()) it = map.try_emplace(c.name).first;  // first request: allocates once
  WorkerBalancers::Entry& e = it->second;
  if (e.snapshot != snapshot_id) {  // a new snapshot: re-index by address (not per request)
    std::vector<SocketAddress> eps;
    eps.reserve(c.endpoints.size());
    for (const auto& ep : c.endpoints) eps.push_back(SocketAddress{ep.address, ep.port});
    e.balancer.update(eps);
    e.snapshot = snapshot_id;
  }
  return &e.balancer;
}

// One draw: peak-EWMA P2C, or weighted random. kNoIndex when there is no endpoint.
size_t drawIndex(const routing::Cluster& c, proxy::resilience::PeakEwmaBalancer* b) {
  if (c.endpoints.empty()) return kNoIndex;
  if (b != nullptr) {
    const size_t i = b->pick(c.cumulative, nextRandom(), monotonicNs());
    if (i < c.endpoints.size()) return i;
  }
  const routing::Endpoint* ep = c.pickEndpoint(nextRandom());
  return ep == nullptr ? kNoIndex : static_cast<size_t>(ep - c.endpoints.data());
}

// Draws before falling back to a scan when draws keep hitting ejected (or the failed)
// endpoints: with 10% ejected (the default cap) four draws all miss with probability 1e-4.
constexpr int kMaxDraws = 4;

// The endpoint for a request (avoid null) or a retry (avoid = the endpoint that just failed):
// by the cluster's algorithm, skipping endpoints L7 outlier detection ejected and `avoid` —
// kMaxDraws draws, then a scan from a random index for one that is usable. When none is
// (every endpoint ejected, or all but `avoid`), Envoy's panic behaviour: ejections are
// ignored (another endpoint than `avoid` if there is one, else `avoid` itself). Without
// ejections and `avoid`, one draw (the per-request path). onStart for peak-EWMA.
size_t chooseEndpoint(const routing::Cluster& c, uint64_t snapshot_id,
                      proxy::resilience::L7Outlier* outlier, const SocketAddress* avoid) {
  const size_t n = c.endpoints.size();
  if (n == 0) return kNoIndex;
  proxy::resilience::PeakEwmaBalancer* b = balancerFor(c, snapshot_id);
  const bool check_ejected =
      outlier != nullptr && outlier->size() == n && outlier->ejectedCount() != 0;
  size_t pick = kNoIndex;
  if (!check_ejected && avoid == nullptr) {
    pick = drawIndex(c, b);
  } else {
    const uint64_t now_ms = check_ejected ? monotonicMs() : 0;
    auto isAvoided = [&](size_t i) {
      return avoid != nullptr && c.endpoints[i].address == avoid->ip &&
             c.endpoints[i].port == avoid->port;
    };
    auto usable = [&](size_t i) {
      return !isAvoided(i) && !(check_ejected && outlier->ejected(i, now_ms));
    };
    for (int d = 0; d < kMaxDraws && pick == kNoIndex; ++d) {
      const size_t i = drawIndex(c, b);
      if (i < n && usable(i)) pick = i;
    }
    const size_t start = nextRandom() % n;
    for (size_t k = 0; k < n && pick == kNoIndex; ++k) {
      if (usable((start + k) % n)) pick = (start + k) % n;
    }
    for (size_t k = 0; k < n && pick == kNoIndex; ++k) {  // panic: ejections ignored
      if (!isAvoided((start + k) % n)) pick = (start + k) % n;
    }
    if (pick == kNoIndex) pick = drawIndex(c, b);  // `avoid` is the only endpoint
  }
  if (b != nullptr && pick < n) b->onStart(pick);
  return pick;
}

// The index of `a` in a cluster's endpoints (sorted by address, port), or kNoIndex.
size_t endpointIndex(const routing::Cluster& c, const SocketAddress& a) {
  auto it = std::lower_bound(c.endpoints.begin(), c.endpoints.end(), a,
                             [](const routing::Endpoint& e, const SocketAddress& k) {
                               return std::tie(e.address, e.port) < std::tie(k.ip, k.port);
                             });
  if (it == c.endpoints.end() || it->address != a.ip || it->port != a.port) return kNoIndex;
  return static_cast<size_t>(it - c.endpoints.begin());
}

// Fault injection (Istio's fault): one decision per request from the called Service's
// policy. A delay sets fault_delay_ms (the core waits, flag DI); an abort fills a direct
// response with its status and flag FI (the core sends it after the delay, if any, and adds
// DI). Returns true when the request is aborted.
bool applyFault(const state::FaultInjection& fault, proxy::RouteDecision& out) {
  if (!fault.aborts() && !fault.delays()) return false;
  const proxy::resilience::FaultDecision d =
      proxy::resilience::FaultInjector(fault).decide(nextRandom());
  out.fault_delay_ms = d.delay_ms;
  if (!d.aborted()) return false;
  out.kind = proxy::RouteDecision::Kind::kDirectResponse;
  out.status = d.abort_http_status != 0
                   ? d.abort_http_status
                   : proxy::resilience::httpStatusFromGrpc(d.abort_grpc_status);
  out.body = "fault filter abort\n";
  out.response_flags = "FI";
  return true;
}

// The latency of a finished try, for the balancer that picked its endpoint (same worker).
void recordLatency(std::string_view cluster, const SocketAddress& upstream, uint64_t duration_us) {
  auto& map = workerBalancers().by_cluster;
  auto it = map.find(absl::string_view(cluster.data(), cluster.size()));
  if (it == map.end()) return;
  const size_t i = it->second.balancer.indexOf(upstream);
  if (i >= it->second.balancer.size()) return;
  it->second.balancer.onFinish(i, duration_us * 1000, monotonicNs());
}

// A request whose endpoint was picked but that was never sent (breaker overflow, client
// gone during a fault delay): the pick's pending count is given back without a sample.
void cancelPick(std::string_view cluster, const SocketAddress& upstream) {
  auto& map = workerBalancers().by_cluster;
  auto it = map.find(absl::string_view(cluster.data(), cluster.size()));
  if (it == map.end()) return;
  const size_t i = it->second.balancer.indexOf(upstream);
  if (i < it->second.balancer.size()) it->second.balancer.onCancel(i);
}

// L7 outlier detection's ejections of one cluster, published into the kernel's ejection
// state (datapath::BackendEjector) against the Service's frontend of the endpoint's family.
// Worker threads; one BPF_PROG_TEST_RUN per ejection (rare: at most one per endpoint per
// ejection time).
class KernelSink final : public proxy::resilience::EjectionSink {
 public:
  KernelSink(std::string_view cluster, datapath::BackendEjectorPtr ejector,
             std::shared_ptr<KernelEjectCounters> counters)
      : cluster_(cluster), ejector_(std::move(ejector)), counters_(std::move(counters)) {}

  void eject(const IpAddress& address, uint16_t port, uint32_t ms) override {
    const SocketAddress backend{address, port};
    const std::optional<SocketAddress>& fe = address.family == AF_INET6 ? frontend6 : frontend4;
    if (ejector_ == nullptr) return;
    if (!fe) {
      counters_->by_result[static_cast<size_t>(datapath::EjectResult::kNoService)].fetch_add(1);
      return;
    }
    absl::StatusOr<datapath::EjectResult> r = ejector_->eject(*fe, backend, ms);
    if (!r.ok()) {
      counters_->by_result[kEjectResults - 1].fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("L7 outlier detection: {} of {}: {}", backend.toString(), cluster_,
                   std::string(r.status().message()));
      return;
    }
    counters_->by_result[static_cast<size_t>(*r)].fetch_add(1, std::memory_order_relaxed);
    spdlog::info("L7 outlier detection ejected {} of {} for {} ms; kernel: {}", backend.toString(),
                 cluster_, ms, datapath::ejectResultName(*r));
  }

  // The Service's frontends (VIP, Service port) by family; set when the snapshot is built.
  std::optional<SocketAddress> frontend4, frontend6;

 private:
  std::string cluster_;
  datapath::BackendEjectorPtr ejector_;
  std::shared_ptr<KernelEjectCounters> counters_;
};

// Retry-After values: "0".."3600" kept for the process (the decision's view must outlive
// route(): a fault delay may come first). A GCRA wait never exceeds one token's interval,
// and the longest interval is an hour (1 per hour), so the table covers every wait.
constexpr uint32_t kRetryAfterTable = 3600;
std::string_view retryAfterText(uint32_t seconds) {
  static const std::vector<std::string>* table = [] {
    auto* t = new std::vector<std::string>();
    t->reserve(kRetryAfterTable + 1);
    for (uint32_t i = 0; i <= kRetryAfterTable; ++i) t->push_back(std::to_string(i));
    return t;
  }();
  return (*table)[std::min(seconds, kRetryAfterTable)];
}

// The route's name from a Rule's "HTTPRoute/ns/name".
std::string_view routeName(std::string_view route) {
  const size_t slash = route.rfind('/');
  return slash == std::string_view::npos ? route : route.substr(slash + 1);
}

// A forwarded decision turned into the proxy's own answer; the endpoint pick is given back
// (peak-EWMA's pending count). The cluster stays for the request metrics.
void answerLocally(proxy::RouteDecision& out, uint16_t status, std::string_view body,
                   std::string_view flags) {
  if (!out.cluster.empty()) cancelPick(out.cluster, out.upstream);
  out.kind = proxy::RouteDecision::Kind::kDirectResponse;
  out.status = status;
  out.body = body;
  out.response_flags = flags;
  out.upstream = SocketAddress{};
  out.breaker = nullptr;
  out.cluster_ctx = nullptr;
  out.retries = nullptr;
  out.request_edits = {};
  out.response_edits = {};
  out.authority_rewrite = {};
  out.path_rewrite = {};
}

}  // namespace

// Snapshot ids: unique in the process (several L7Configs in tests; addresses get reused).
static std::atomic<uint64_t> g_next_snapshot_id{1};

struct L7Config::Snapshot {
  uint64_t id = g_next_snapshot_id.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const routing::RouteTable> table;
  // Every frontend's own endpoints, for connections before (or without) HTTP.
  struct Frontend {
    routing::Cluster cluster;
    std::string ns, service;
    // Where a connection goes before its first request: the Service's own endpoints,
    // else (a routed Service without endpoints of its own) the first backend of its
    // first rule.
    const routing::Cluster* preconnect = nullptr;
    // preconnect's name, interned for the process's lifetime: routeConnection's
    // view has no pin and may outlive this snapshot.
    std::string_view preconnect_name;
  };
  absl::flat_hash_map<VipPort, std::unique_ptr<Frontend>> frontends;
  // Header edits per (rule, backendRef) in the core's form: the rule's, then the
  // backendRef's. Keyed by the BackendRef (rules without backends by the Rule).
  struct Edits {
    std::vector<HeaderEdit> request, response;
  };
  absl::flat_hash_map<const void*, Edits> edits;
  // Pod names and namespaces by address (EndpointSlice targetRef), for metric labels.
  struct Workload {
    std::string name, ns;
  };
  absl::flat_hash_map<IpAddress, Workload> workloads;
  // Request-level resilience state of every resolved cluster of the table (RouteDecision::
  // cluster_ctx points at one): the node-wide breaker and L7 outlier detector from the
  // registry (the same objects across swaps), and where its ejections go.
  struct ClusterEntry {
    const routing::Cluster* cluster = nullptr;
    const Snapshot* owner = nullptr;  // the snapshot it belongs to (retarget's tunnel check)
    uint64_t snapshot_id = 0;         // the Snapshot's id (keys the workers' balancers)
    proxy::resilience::ClusterStatePtr state;
    std::unique_ptr<KernelSink> sink;
  };
  absl::flat_hash_map<const routing::Cluster*, std::unique_ptr<ClusterEntry>> clusters;
  // Authorization: Workloads and their compiled AuthorizationPolicies.
  std::shared_ptr<const policy::Authorizer> authz;
  std::string node;  // L7Config::setNodeName; "" = any
  // meshd_authz_denied_total counters: by the deciding DENY policy's name (Decision::policy),
  // and for "ALLOW policies select the workload but none matched".
  absl::flat_hash_map<const std::string*, std::atomic<uint64_t>*> deny_counters;
  std::atomic<uint64_t>* no_allow_counter = nullptr;
  // RateLimitPolicies by the called Service's frontend.
  struct Limit {
    std::shared_ptr<policy::RateLimiter> limiter;
    std::atomic<uint64_t>* service_counter = nullptr;  // meshd_ratelimited_total{bucket}
    std::atomic<uint64_t>* client_counter = nullptr;
  };
  absl::flat_hash_map<VipPort, Limit> limits;
  // The mTLS tunnel (L7Config::setMtls): remote nodes with an InternalIP by name (index into
  // each source's `via`), and local Workloads' credentials by address.
  bool mtls = false;
  absl::flat_hash_map<std::string, size_t> mtls_nodes;
  struct MtlsSource {
    std::shared_ptr<const WorkloadCredential> cred;
    std::vector<uint64_t> via;  // by node index
  };
  std::vector<MtlsSource> mtls_sources;
  absl::flat_hash_map<IpAddress, size_t> mtls_source_by_address;

  const ClusterEntry* entry(const routing::Cluster* c) const {
    auto it = clusters.find(c);
    return it == clusters.end() ? nullptr : it->second.get();
  }

  const Workload* workload(const IpAddress& a) const {
    auto it = workloads.find(a);
    return it == workloads.end() ? nullptr : &it->second;
  }
};

namespace {

// How a connection from a local source reaches `upstream` (docs/design/0004-identity-mtls.md,
// "Wiring into meshd"): directly, through the tunnel (*via set), or not at all (a STRICT
// destination and a source without a certificate). `src` indexes snap.mtls_sources (kNoIndex:
// the peer is no local Workload). No allocation: hash lookups and one atomic load.
enum class MeshPath : uint8_t { kDirect, kTunnel, kStrictNoCredential };
MeshPath meshPath(const L7Config::Snapshot& snap, size_t src, const SocketAddress& upstream,
                  uint64_t* via) {
  *via = 0;
  if (!snap.mtls || snap.authz == nullptr) return MeshPath::kDirect;
  const policy::Workload* dst = snap.authz->workloadByAddress(unmapped(upstream.ip));
  if (dst == nullptr || dst->node == snap.node) return MeshPath::kDirect;
  auto node = snap.mtls_nodes.find(dst->node);
  if (node == snap.mtls_nodes.end()) return MeshPath::kDirect;  // no Node address: plaintext
  const resources::MtlsMode mode = policy::effectiveMtlsMode(*dst, upstream.port);
  if (mode == resources::MtlsMode::kDisable) return MeshPath::kDirect;
  if (src < snap.mtls_sources.size()) {
    const L7Config::Snapshot::MtlsSource& s = snap.mtls_sources[src];
    if (s.cred->ready.load(std::memory_order_acquire)) {
      *via = s.via[node->second];
      return MeshPath::kTunnel;
    }
  }
  return mode == resources::MtlsMode::kStrict ? MeshPath::kStrictNoCredential : MeshPath::kDirect;
}

size_t mtlsSourceIndex(const L7Config::Snapshot& snap, const IpAddress& peer) {
  if (!snap.mtls) return kNoIndex;
  auto it = snap.mtls_source_by_address.find(unmapped(peer));
  return it == snap.mtls_source_by_address.end() ? kNoIndex : it->second;
}

void logStrictRefusal(const L7Config::Snapshot& snap, size_t src, const SocketAddress& peer,
                      const SocketAddress& upstream) {
  const WorkloadCredential* cred =
      src < snap.mtls_sources.size() ? snap.mtls_sources[src].cred.get() : nullptr;
  if (cred != nullptr && cred->strict_refusal_logged.exchange(true)) return;
  static std::atomic<bool> unknown_logged{false};
  if (cred == nullptr && unknown_logged.exchange(true)) return;
  spdlog::warn(
      "mTLS: {} -> {} refused (503 MTLS): the destination's PeerAuthentication is STRICT and "
      "the source {} (logged once per source identity; counted in meshd_mtls_refused_total)",
      peer.toString(), upstream.toString(),
      cred ? absl::StrCat(cred->spiffe_id, " has no certificate yet (meshd-ca unreachable?)")
           : std::string("is not a local Workload"));
}

}  // namespace

L7Config::L7Config(datapath::OrigDstTablePtr orig_dst, unsigned metric_shards)
    : orig_dst_(std::move(orig_dst)),
      metrics_(metric_shards),
      instance_(g_next_snapshot_id.fetch_add(1, std::memory_order_relaxed)) {
  absl::MutexLock lock(&mu_);
  current_ = std::make_shared<const Snapshot>();
}

L7Config::~L7Config() = default;

void L7Config::willApply(const state::ResourceSet& resources,
                         const state::DesiredLbState& desired) {
  auto snap = std::make_shared<Snapshot>();
  auto table = routing::RouteTable::build(resources, desired);
  if (!table.ok()) {
    // Resources validated by the model always build; keep the previous routes.
    spdlog::error("L7 routing table: {}; keeping the previous one",
                  std::string(table.status().message()));
    return;
  }
  snap->table = *table;
  for (const state::Frontend& f : desired.frontends) {
    if (f.protocol != state::Protocol::kTcp) continue;
    auto fe = std::make_unique<Snapshot::Frontend>();
    fe->ns = f.ns;
    fe->service = f.service;
    fe->cluster.name = absl::StrCat(f.ns, "/", f.service, ":", f.port);
    fe->cluster.resolved = true;
    uint64_t sum = 0;
    for (const state::Backend& b : f.backends) {
      if (b.weight == 0) continue;
      fe->cluster.endpoints.push_back({b.address, b.port, b.weight});
      sum += b.weight;
      fe->cluster.cumulative.push_back(sum);
      if (b.target.starts_with("Pod/")) {
        std::string_view t = std::string_view(b.target).substr(4);
        const size_t slash = t.find('/');
        if (slash != std::string_view::npos) {
          snap->workloads.try_emplace(b.address,
                                      Snapshot::Workload{std::string(t.substr(slash + 1)),
                                                         std::string(t.substr(0, slash))});
        }
      }
    }
    fe->preconnect = fe->cluster.endpoints.empty() ? nullptr : &fe->cluster;
    const routing::ServiceRoutes* routes = snap->table->find(f.vip, f.port);
    if (routes != nullptr) {
      for (const routing::RouteMatch& m : routes->entries()) {
        const routing::Rule& rule = m.rule();
        if (fe->preconnect == nullptr) {
          for (const auto& b : rule.backends) {
            if (b.weight > 0 && !b.cluster->endpoints.empty()) {
              fe->preconnect = b.cluster;
              break;
            }
          }
        }
        if (!snap->edits.contains(&rule)) {
          Snapshot::Edits e;
          appendEdits(rule.request_headers, e.request);
          appendEdits(rule.response_headers, e.response);
          snap->edits.emplace(&rule, std::move(e));
        }
        for (const auto& b : rule.backends) {
          if (snap->edits.contains(&b)) continue;
          Snapshot::Edits e;
          appendEdits(rule.request_headers, e.request);
          appendEdits(b.request_headers, e.request);
          appendEdits(rule.response_headers, e.response);
          appendEdits(b.response_headers, e.response);
          snap->edits.emplace(&b, std::move(e));
        }
      }
    }
    snap->frontends.emplace(VipPort{f.vip, f.port}, std::move(fe));
  }
  // Resilience state for every resolved cluster (each is a TCP Service port), attached to the
  // registry so breakers and outlier state carry over from the previous snapshot.
  absl::flat_hash_set<std::string> names;
  for (const state::Frontend& f : desired.frontends) {
    if (f.protocol != state::Protocol::kTcp) continue;
    const routing::Cluster* c =
        snap->table->cluster(absl::StrCat(f.ns, "/", f.service, ":", f.port));
    if (c == nullptr || !c->resolved || c->request_policy == nullptr) continue;
    std::unique_ptr<Snapshot::ClusterEntry>& ce = snap->clusters[c];
    if (ce == nullptr) {
      ce = std::make_unique<Snapshot::ClusterEntry>();
      ce->cluster = c;
      ce->owner = snap.get();
      ce->snapshot_id = snap->id;
      std::vector<SocketAddress> eps;
      eps.reserve(c->endpoints.size());
      for (const auto& ep : c->endpoints) eps.push_back(SocketAddress{ep.address, ep.port});
      ce->state = registry_.attach(c->name, *c->request_policy, eps);
      ce->sink = std::make_unique<KernelSink>(c->name, ejector_, eject_counters_);
      names.insert(c->name);
    }
    (f.vip.family == AF_INET6 ? ce->sink->frontend6 : ce->sink->frontend4) =
        SocketAddress{f.vip, f.port};
  }
  registry_.retain(names);

  // Authorization and rate limits.
  snap->node = node_name_;
  if (auto authz = policy::Authorizer::build(resources, trust_domain_); authz.ok()) {
    snap->authz = *authz;
  } else {
    spdlog::error("authorization policies: {}; none applied",
                  std::string(authz.status().message()));
  }
  if (snap->authz) {
    for (const auto& w : snap->authz->workloads()) {
      for (const policy::CompiledPolicy* p : w->deny) {
        const std::string* name = &policy::nameOf(*p);
        if (!snap->deny_counters.contains(name)) {
          snap->deny_counters.emplace(name,
                                      policyCounter(absl::StrCat("authz|", *name, "|deny_policy")));
        }
      }
    }
  }
  snap->no_allow_counter = policyCounter("authz||no_allow_match");
  absl::flat_hash_map<std::string, std::shared_ptr<policy::RateLimiter>> limiters;
  for (const resources::Resource* r : resources.list(resources::kKindRateLimitPolicy)) {
    auto spec = resources::rateLimitPolicySpec(*r);
    if (!spec.ok()) continue;  // validated by the model
    const std::string name = absl::StrCat(r->key.ns, "/", r->key.name);
    std::shared_ptr<policy::RateLimiter> limiter;
    if (auto it = limiters_.find(name); it != limiters_.end() && it->second->spec() == *spec) {
      limiter = it->second;  // unchanged: the buckets keep their state
    } else {
      limiter = std::make_shared<policy::RateLimiter>(name, *spec);
    }
    Snapshot::Limit limit{limiter, policyCounter(absl::StrCat("rl|", name, "|service")),
                          policyCounter(absl::StrCat("rl|", name, "|client"))};
    for (const state::Frontend& f : desired.frontends) {
      if (f.protocol == state::Protocol::kTcp && f.ns == r->key.ns &&
          f.service == spec->target_service) {
        snap->limits.emplace(VipPort{f.vip, f.port}, limit);
      }
    }
    limiters.emplace(name, std::move(limiter));
  }
  limiters_ = std::move(limiters);

  // The mTLS tunnel: remote nodes' tunnel addresses, local sources' credentials and vias.
  if (mtls_.credentials != nullptr && mtls_.vias != nullptr && snap->authz != nullptr) {
    snap->mtls = true;
    std::vector<std::pair<std::string, SocketAddress>> nodes;
    for (const resources::Resource* r : resources.list(resources::kKindNode)) {
      if (r->key.name == node_name_) continue;
      auto spec = resources::nodeSpec(*r);
      if (!spec.ok() || !spec->internal_ip) continue;
      snap->mtls_nodes.emplace(r->key.name, nodes.size());
      nodes.emplace_back(r->key.name, SocketAddress{*spec->internal_ip, mtls_.tunnel_port});
    }
    std::set<std::pair<std::string, std::string>> local;
    absl::flat_hash_map<const WorkloadCredential*, size_t> index;
    for (const auto& w : snap->authz->workloads()) {
      if (w->node != node_name_) continue;
      local.emplace(w->ns, w->service_account);
      std::shared_ptr<const WorkloadCredential> cred =
          mtls_.credentials->credential(w->ns, w->service_account);
      auto [it, inserted] = index.emplace(cred.get(), snap->mtls_sources.size());
      if (inserted) {
        Snapshot::MtlsSource src;
        for (const auto& [name, peer] : nodes)
          src.via.push_back(mtls_.vias->idFor(cred, name, peer));
        src.cred = std::move(cred);
        snap->mtls_sources.push_back(std::move(src));
      }
      for (const IpAddress& a : w->addresses) snap->mtls_source_by_address.emplace(a, it->second);
    }
    mtls_.credentials->retain(local);
  }

  absl::MutexLock lock(&mu_);
  for (auto& [key, fe] : snap->frontends) {
    if (fe->preconnect != nullptr)
      fe->preconnect_name = *interned_.insert(fe->preconnect->name).first;
  }
  current_ = std::move(snap);
  generation_.fetch_add(1, std::memory_order_release);
}

std::shared_ptr<const L7Config::Snapshot> L7Config::snapshot() const {
  // Each worker thread keeps the snapshot it last saw and takes the lock only when
  // the generation moved. (One L7Config per process: the daemon's.)
  thread_local uint64_t seen = ~uint64_t{0};
  thread_local std::shared_ptr<const Snapshot> cached;
  thread_local uint64_t owner = 0;
  const uint64_t gen = generation_.load(std::memory_order_acquire);
  if (gen != seen || owner != instance_ || cached == nullptr) {
    absl::MutexLock lock(&mu_);
    cached = current_;
    seen = generation_.load(std::memory_order_relaxed);
    owner = instance_;
  }
  return cached;
}

size_t L7Config::routedServices() const {
  absl::MutexLock lock(&mu_);
  return current_->table ? current_->table->serviceCount() : 0;
}

std::optional<SocketAddress> L7Config::lookup(int /*fd*/, const SocketAddress& peer) {
  if (orig_dst_ == nullptr) return std::nullopt;
  auto od = orig_dst_->take(peer.ip, peer.port);
  if (!od) return std::nullopt;
  return SocketAddress{od->vip, od->port};
}

bool L7Config::routeConnection(const SocketAddress& orig_dst, SocketAddress& upstream,
                               std::string_view& cluster) {
  std::shared_ptr<const Snapshot> snap = snapshot();
  auto it = snap->frontends.find(VipPort{orig_dst.ip, orig_dst.port});
  if (it == snap->frontends.end() || it->second->preconnect == nullptr) return false;
  const routing::Cluster* c = it->second->preconnect;
  const routing::Endpoint* ep = c->pickEndpoint(nextRandom());
  if (ep == nullptr) return false;
  upstream = SocketAddress{ep->address, ep->port};
  cluster = it->second->preconnect_name;
  return true;
}

namespace {

// The retry policy the core applies: the called Service's (Istio's default policy without a
// TrafficPolicy, state::RetrySettings), none when it allows no retry.
const state::RetrySettings* retriesOf(const state::RequestPolicy& called) {
  return called.retries.attempts != 0 ? &called.retries : nullptr;
}

}  // namespace

// The endpoint of cluster `c` (resilience entry `ce`, may be null) into `out`: the upstream,
// the cluster's breaker and the context for retarget()/onTry(). false when the cluster has no
// endpoint.
bool L7Config::pickInto(const routing::Cluster& c, const Snapshot& snap, const void* ce_ptr,
                        proxy::RouteDecision& out) {
  const auto* ce = static_cast<const Snapshot::ClusterEntry*>(ce_ptr);
  const size_t i =
      chooseEndpoint(c, snap.id, ce ? ce->state->outlier.get() : nullptr, /*avoid=*/nullptr);
  if (i >= c.endpoints.size()) return false;
  out.upstream = SocketAddress{c.endpoints[i].address, c.endpoints[i].port};
  out.cluster = c.name;
  out.breaker = ce ? ce->state->breaker.get() : nullptr;
  out.cluster_ctx = ce;
  return true;
}

bool L7Config::admit(std::shared_ptr<const Snapshot>& snap_ptr, const proxy::RequestInfo& req,
                     std::string_view route, proxy::RouteDecision& out) {
  const Snapshot& snap = *snap_ptr;
  const IpAddress peer = unmapped(req.peer.ip);
  const policy::Workload* src = nullptr;
  if (snap.authz != nullptr) {
    src = snap.authz->workloadByAddress(peer);
    if (src != nullptr && !snap.node.empty() && src->node != snap.node) src = nullptr;
    if (const policy::Workload* dst = snap.authz->workloadByAddress(out.upstream.ip)) {
      policy::Request r;
      if (src != nullptr) {
        r.principal = src->principal;
        r.ns = src->ns;
      }
      r.ip = peer;
      r.port = out.upstream.port;
      r.http = true;
      r.method = req.method;
      r.path = req.target;
      r.host = req.authority;
      r.headers = req.headers;
      const policy::Decision d = policy::evaluate(*dst, r);
      if (!d.allowed) {
        std::atomic<uint64_t>* c = snap.no_allow_counter;
        if (d.policy != nullptr) {
          auto it = snap.deny_counters.find(d.policy);
          c = it == snap.deny_counters.end() ? nullptr : it->second;
        }
        if (c != nullptr) c->fetch_add(1, std::memory_order_relaxed);
        answerLocally(out, 403, "RBAC: access denied", "RBAC");
        out.pin = std::move(snap_ptr);
        return false;
      }
    }
  }
  auto lit = snap.limits.find(VipPort{req.orig_dst.ip, req.orig_dst.port});
  if (lit == snap.limits.end()) return true;
  const Snapshot::Limit& limit = lit->second;
  // The client: its SPIFFE ID when it is a known Workload, else its address (raw bytes).
  std::string_view client =
      src != nullptr
          ? std::string_view(src->principal)
          : std::string_view(reinterpret_cast<const char*>(peer.bytes.data()), peer.bytes.size());
  std::string_view path = req.target.substr(0, req.target.find('?'));
  const policy::RateLimiter::Result res =
      limit.limiter->tryAcquire(routeName(route), path, client, policy::monotonicNowNs());
  if (res.acquire.allowed) return true;
  (res.scope == policy::RateLimiter::Scope::kClient ? limit.client_counter : limit.service_counter)
      ->fetch_add(1, std::memory_order_relaxed);
  answerLocally(out, 429, "local_rate_limited", "RL");
  const uint32_t seconds = res.acquire.retryAfterSeconds();
  out.retry_after = retryAfterText(seconds);
  out.pin = std::move(snap_ptr);
  return false;
}

std::atomic<uint64_t>* L7Config::policyCounter(const std::string& key) {
  absl::MutexLock lock(&mu_);
  return &policy_counters_[key];
}

void L7Config::renderPolicyMetrics(std::string& out) const {
  std::vector<std::pair<std::string, uint64_t>> counters;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [k, v] : policy_counters_) {
      counters.emplace_back(k, v.load(std::memory_order_relaxed));
    }
  }
  std::sort(counters.begin(), counters.end());
  telemetry::ExpositionWriter w;
  auto parts = [](const std::string& key) {
    const size_t a = key.find('|');
    const size_t b = key.find('|', a + 1);
    return std::array<std::string, 3>{key.substr(0, a), key.substr(a + 1, b - a - 1),
                                      key.substr(b + 1)};
  };
  w.family("meshd_authz_denied_total",
           "L7 requests denied by authorization (403 RBAC), by the DENY policy that matched "
           "(reason deny_policy) or because no ALLOW policy matched (reason no_allow_match)",
           telemetry::MetricType::kCounter);
  for (const auto& [k, v] : counters) {
    auto p = parts(k);
    if (p[0] == "authz") w.sample({{"policy", p[1]}, {"reason", p[2]}}, double(v));
  }
  w.family("meshd_ratelimited_total",
           "L7 requests refused by a RateLimitPolicy (429 RL), by policy and the bucket that "
           "refused (service: the shared one, client: the client's)",
           telemetry::MetricType::kCounter);
  for (const auto& [k, v] : counters) {
    auto p = parts(k);
    if (p[0] == "rl") w.sample({{"policy", p[1]}, {"bucket", p[2]}}, double(v));
  }
  w.family("meshd_mtls_refused_total",
           "Requests (503 MTLS) and opaque connections refused because the destination's "
           "PeerAuthentication is STRICT and the source has no workload certificate",
           telemetry::MetricType::kCounter);
  w.sample({{"reason", "no_source_certificate"}}, double(strictNoCredential()));
  out += w.text();
}

void L7Config::route(const proxy::RequestInfo& req, proxy::RouteDecision& out) {
  std::shared_ptr<const Snapshot> snap = snapshot();
  const routing::ServiceRoutes* routes =
      snap->table ? snap->table->find(req.orig_dst.ip, req.orig_dst.port) : nullptr;
  if (routes == nullptr) {
    // No route bound: the Service's own endpoints — its L7 cluster when a request-level
    // TrafficPolicy made it L7 (its own retries, faults, limits), else as the L4 path would
    // (no request-level resilience).
    const routing::Cluster* c =
        snap->table ? snap->table->serviceCluster(req.orig_dst.ip, req.orig_dst.port) : nullptr;
    if (c == nullptr) {
      auto it = snap->frontends.find(VipPort{req.orig_dst.ip, req.orig_dst.port});
      c = it == snap->frontends.end() ? nullptr : &it->second->cluster;
    }
    if (c != nullptr && c->request_policy != nullptr) {
      if (applyFault(c->request_policy->fault, out)) {
        out.pin = std::move(snap);
        return;
      }
      out.retries = retriesOf(*c->request_policy);
    }
    const Snapshot::ClusterEntry* ce = c ? snap->entry(c) : nullptr;
    if (c == nullptr || !pickInto(*c, *snap, ce, out)) {
      out.kind = proxy::RouteDecision::Kind::kDirectResponse;
      out.status = 503;
      out.body = "no healthy upstream\n";
      out.response_flags = "UH";
      out.cluster = c ? std::string_view(c->name) : std::string_view();
      out.retries = nullptr;
      out.pin = std::move(snap);
      return;
    }
    if (!admit(snap, req, {}, out)) return;
    if (!viaInto(snap, req.peer, out)) return;
    out.pin = std::move(snap);
    return;
  }
  // The path without the query, the query, and the host without the port.
  std::string_view target = req.target;
  if (target.empty() || target[0] != '/') {
    // absolute-form: keep the path part (the parser checked its authority).
    const size_t scheme = target.find("://");
    const size_t slash =
        scheme == std::string_view::npos ? std::string_view::npos : target.find('/', scheme + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  const routing::Request rreq{req.method, target, req.authority, req.headers};
  const routing::RouteMatch* m = routes->match(rreq);
  if (m == nullptr) {
    out.kind = proxy::RouteDecision::Kind::kDirectResponse;
    out.status = 404;
    out.body = "no route\n";
    out.response_flags = "NR";
    out.pin = std::move(snap);
    return;
  }
  const routing::Rule& rule = m->rule();
  if (rule.redirect) {
    // Rare path: the Location is built per request and kept alive by the pin.
    struct Held {
      std::shared_ptr<const Snapshot> snap;
      std::string location;
    };
    auto held = std::make_shared<Held>();
    rule.redirect->appendLocation(rreq, "http", req.orig_dst.port, held->location);
    held->snap = std::move(snap);
    out.kind = proxy::RouteDecision::Kind::kDirectResponse;
    out.status = static_cast<uint16_t>(rule.redirect->status_code);
    out.location = held->location;
    out.pin = std::move(held);
    return;
  }
  // Fault injection and retries: the called Service's TrafficPolicy (as a VirtualService's
  // fault and retries), whichever backend the rule picks.
  if (applyFault(routes->requestPolicy().fault, out)) {
    out.pin = std::move(snap);
    return;
  }
  const routing::BackendRef* ref = routing::pickBackendRef(rule, nextRandom());
  const routing::Cluster* c = ref ? ref->cluster : nullptr;
  if (c == nullptr || !pickInto(*c, *snap, snap->entry(c), out)) {
    out.kind = proxy::RouteDecision::Kind::kDirectResponse;
    out.status = static_cast<uint16_t>(c ? c->unavailableStatus() : 500);
    out.body = out.status == 503 ? std::string_view("no healthy upstream\n")
                                 : std::string_view("backend not found\n");
    out.response_flags = out.status == 503 ? "UH" : "NR";
    out.cluster = c ? std::string_view(c->name) : std::string_view();
    out.pin = std::move(snap);
    return;
  }
  if (!admit(snap, req, rule.route, out)) return;
  if (!viaInto(snap, req.peer, out)) return;
  out.retries = retriesOf(routes->requestPolicy());
  if (auto e = snap->edits.find(ref); e != snap->edits.end()) {
    out.request_edits = e->second.request;
    out.response_edits = e->second.response;
  }
  if (rule.request_timeout_ms) {
    out.request_timeout_ms = static_cast<uint32_t>(*rule.request_timeout_ms);
  }
  if (rule.backend_request_timeout_ms && *rule.backend_request_timeout_ms != 0 &&
      (out.request_timeout_ms == 0 || *rule.backend_request_timeout_ms < out.request_timeout_ms)) {
    out.request_timeout_ms = static_cast<uint32_t>(*rule.backend_request_timeout_ms);
  }
  if (rule.rewrite) {
    if (!rule.rewrite->hostname.empty()) out.authority_rewrite = rule.rewrite->hostname;
    if (rule.rewrite->path) {
      struct Held {
        std::shared_ptr<const Snapshot> snap;
        std::string path;
      };
      auto held = std::make_shared<Held>();
      rule.rewrite->path->apply(target, held->path);
      out.path_rewrite = held->path;
      held->snap = std::move(snap);
      out.pin = std::move(held);
      return;
    }
  }
  out.pin = std::move(snap);
}

bool L7Config::retarget(proxy::RouteDecision& decision, const SocketAddress& failed) {
  const auto* ce = static_cast<const Snapshot::ClusterEntry*>(decision.cluster_ctx);
  if (ce == nullptr) return false;
  // The decision's pin holds the snapshot `ce` belongs to; its id keys the worker's balancer
  // (a newer snapshot re-indexes it by address, which is harmless).
  const routing::Cluster& c = *ce->cluster;
  const size_t i = chooseEndpoint(c, ce->snapshot_id, ce->state->outlier.get(), &failed);
  if (i >= c.endpoints.size()) return false;
  decision.upstream = SocketAddress{c.endpoints[i].address, c.endpoints[i].port};
  // The tunnel for the new endpoint, as the same source (RouteDecision::router_tag = the
  // source's index + 1 in the snapshot the decision pins; 0 = not a local source).
  if (ce->owner != nullptr && ce->owner->mtls) {
    const Snapshot& snap = *ce->owner;
    const size_t src = decision.router_tag == 0 ? kNoIndex : size_t{decision.router_tag} - 1;
    if (meshPath(snap, src, decision.upstream, &decision.via) == MeshPath::kStrictNoCredential) {
      // Plaintext would be dropped by the destination: no retry (the last try's outcome).
      strict_no_cred_.fetch_add(1, std::memory_order_relaxed);
      decision.via = 0;
      return false;
    }
  }
  return true;
}

bool L7Config::viaInto(std::shared_ptr<const Snapshot>& snap_ptr, const SocketAddress& peer,
                       proxy::RouteDecision& out) {
  const Snapshot& snap = *snap_ptr;
  if (!snap.mtls) return true;
  const size_t src = mtlsSourceIndex(snap, peer.ip);
  out.router_tag = src < snap.mtls_sources.size() ? static_cast<uint32_t>(src + 1) : 0;
  switch (meshPath(snap, src, out.upstream, &out.via)) {
    case MeshPath::kDirect:
    case MeshPath::kTunnel:
      return true;
    case MeshPath::kStrictNoCredential:
      break;
  }
  strict_no_cred_.fetch_add(1, std::memory_order_relaxed);
  logStrictRefusal(snap, src, peer, out.upstream);
  answerLocally(out, 503, "upstream requires mTLS (STRICT): the source has no certificate\n",
                "MTLS");
  out.pin = std::move(snap_ptr);
  return false;
}

bool L7Config::routeConnectionFrom(const SocketAddress& orig_dst, const SocketAddress& peer,
                                   SocketAddress& upstream, std::string_view& cluster,
                                   uint64_t& via) {
  via = 0;
  if (!routeConnection(orig_dst, upstream, cluster)) return false;
  std::shared_ptr<const Snapshot> snap = snapshot();
  if (!snap->mtls) return true;
  const size_t src = mtlsSourceIndex(*snap, peer.ip);
  if (meshPath(*snap, src, upstream, &via) != MeshPath::kStrictNoCredential) return true;
  // Not refused here: an HTTP client on this connection gets route()'s 503 MTLS per request
  // (counted there); an opaque relay's connect is refused by the connector. Logged once.
  logStrictRefusal(*snap, src, peer, upstream);
  via = kViaStrictRefused;
  return true;
}

L7Config::TunnelVerdict L7Config::authorizeTunnel(std::string_view peer_id,
                                                  const SocketAddress& dst) {
  std::shared_ptr<const Snapshot> snap = snapshot();
  if (snap->authz == nullptr) return TunnelVerdict::kNotLocal;
  const policy::Workload* w = snap->authz->workloadByAddress(unmapped(dst.ip));
  if (w == nullptr || (!snap->node.empty() && w->node != snap->node)) {
    return TunnelVerdict::kNotLocal;
  }
  identity::SpiffeIdView id;
  identity::SpiffeParseError perr;
  policy::Request r;
  if (identity::parseSpiffeIdView(peer_id, &id, &perr)) {
    r.principal = peer_id;
    if (auto wi = identity::workloadIdentity(id); wi.ok()) r.ns = wi->ns;
  }
  r.port = dst.port;
  r.http = false;
  const policy::Decision d = policy::evaluate(*w, r);
  if (d.allowed) return TunnelVerdict::kAllow;
  std::atomic<uint64_t>* c = snap->no_allow_counter;
  if (d.policy != nullptr) {
    auto it = snap->deny_counters.find(d.policy);
    c = it == snap->deny_counters.end() ? nullptr : it->second;
  }
  if (c != nullptr) c->fetch_add(1, std::memory_order_relaxed);
  return TunnelVerdict::kDenied;
}

void L7Config::onCancel(const proxy::RouteDecision& decision, const SocketAddress& endpoint) {
  if (!decision.cluster.empty()) cancelPick(decision.cluster, endpoint);
}

void L7Config::onTry(const proxy::RouteDecision& decision, const SocketAddress& endpoint,
                     const proxy::resilience::TryOutcome& outcome, uint64_t elapsed_us) {
  const auto* ce = static_cast<const Snapshot::ClusterEntry*>(decision.cluster_ctx);
  if (ce == nullptr) return;
  const routing::Cluster& c = *ce->cluster;
  const size_t i = endpointIndex(c, endpoint);
  if (i == kNoIndex) return;
  if (i < ce->state->outlier->size()) {
    ce->state->outlier->record(i, proxy::resilience::classify(outcome), monotonicMs(), *ce->sink);
  }
  if (c.request_policy != nullptr && c.request_policy->peak_ewma) {
    recordLatency(c.name, endpoint, elapsed_us);
  }
}

void L7Config::onRequest(const proxy::RequestRecord& r) {
  thread_local unsigned shard = next_shard_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const Snapshot> snap = snapshot();
  telemetry::RequestLabels l;
  if (const Snapshot::Workload* w = snap->workload(unmapped(r.peer.ip))) {
    l.source_workload = w->name;
    l.source_namespace = w->ns;
  }
  if (r.upstream.valid()) {
    if (const Snapshot::Workload* w = snap->workload(r.upstream.ip)) {
      l.destination_workload = w->name;
      l.destination_namespace = w->ns;
    }
  }
  // The destination service is the one the request was routed to (Istio reports the
  // backend's service); before a route (404, bad request) the one the app called.
  std::pair<std::string_view, std::string_view> svc = serviceOf(r.cluster);
  if (svc.second.empty()) {
    auto it = snap->frontends.find(VipPort{r.orig_dst.ip, r.orig_dst.port});
    if (it != snap->frontends.end()) svc = {it->second->ns, it->second->service};
  }
  l.destination_service_namespace = svc.first;
  l.destination_service_name = svc.second;
  l.response_flags = r.response_flags;
  l.connection_security_policy = "none";
  if (r.protocol == "tcp") {
    l.request_protocol = "tcp";
    metrics_.recordTcpOpened(shard, l);
    metrics_.recordTcpClosed(shard, l, r.response_bytes, r.request_bytes);
    if (access_log_) logAccess(*access_log_, r);
    return;
  }
  // Istio's request_protocol: "http" for HTTP/1.1 and HTTP/2, "grpc" for gRPC (HTTP/2
  // with content-type application/grpc*), whose grpc_response_status is the grpc-status.
  if (r.protocol == "grpc") {
    l.request_protocol = "grpc";
    l.grpc_response_status = r.grpc_status;
  } else {
    l.request_protocol = "http";
  }
  l.response_code = r.response_code;
  metrics_.recordRequest(shard, l, r.duration_us, r.request_bytes, r.response_bytes);
  // Latency samples come from onTry (one per try); picks no try carried come back through
  // onCancel.
  if (access_log_) logAccess(*access_log_, r);
}

std::vector<L7Config::ClusterStats> L7Config::clusterStats() const {
  std::shared_ptr<const Snapshot> snap;
  {
    absl::MutexLock lock(&mu_);
    snap = current_;
  }
  const uint64_t now_ms = monotonicMs();
  std::vector<ClusterStats> out;
  out.reserve(snap->clusters.size());
  for (const auto& [c, ce] : snap->clusters) {
    ClusterStats st;
    st.cluster = c->name;
    st.breaker = ce->state->breaker->counts();
    proxy::resilience::L7Outlier& o = *ce->state->outlier;
    o.sweep(now_ms);  // ejections over that no request noticed yet
    st.ejected = o.ejectedCount();
    st.ejections = o.ejections();
    st.ejections_skipped = o.ejectionsSkipped();
    out.push_back(std::move(st));
  }
  std::sort(out.begin(), out.end(),
            [](const ClusterStats& a, const ClusterStats& b) { return a.cluster < b.cluster; });
  return out;
}

std::array<uint64_t, kEjectResults> L7Config::kernelEjections() const {
  std::array<uint64_t, kEjectResults> out{};
  for (size_t i = 0; i < kEjectResults; ++i) {
    out[i] = eject_counters_->by_result[i].load(std::memory_order_relaxed);
  }
  return out;
}

void L7Config::renderResilienceMetrics(std::string& out) const {
  const std::vector<ClusterStats> stats = clusterStats();
  telemetry::ExpositionWriter w;
  using telemetry::MetricType;
  struct Family {
    std::string_view name, help;
    MetricType type;
    uint64_t (*value)(const ClusterStats&);
  };
  static constexpr Family kFamilies[] = {
      {"meshd_l7_upstream_rq_pending_active",
       "Requests waiting for an upstream connection (circuit breaker maxPendingRequests)",
       MetricType::kGauge, [](const ClusterStats& s) { return s.breaker.pending; }},
      {"meshd_l7_upstream_rq_active",
       "Requests in flight to the upstream (circuit breaker maxRequests)", MetricType::kGauge,
       [](const ClusterStats& s) { return s.breaker.active; }},
      {"meshd_l7_upstream_rq_retries_active", "Retries in flight (maxRetries or the retry budget)",
       MetricType::kGauge, [](const ClusterStats& s) { return s.breaker.retries; }},
      {"meshd_l7_upstream_rq_pending_overflow_total",
       "Requests refused with 503 UO: maxPendingRequests reached", MetricType::kCounter,
       [](const ClusterStats& s) { return s.breaker.pending_overflow; }},
      {"meshd_l7_upstream_rq_overflow_total", "Requests refused with 503 UO: maxRequests reached",
       MetricType::kCounter, [](const ClusterStats& s) { return s.breaker.request_overflow; }},
      {"meshd_l7_upstream_rq_retry_overflow_total",
       "Retries not made: maxRetries or the retry budget reached", MetricType::kCounter,
       [](const ClusterStats& s) { return s.breaker.retry_overflow; }},
      {"meshd_l7_outlier_ejected_endpoints",
       "Endpoints ejected now by L7 outlier detection (consecutive 5xx / gateway errors)",
       MetricType::kGauge, [](const ClusterStats& s) { return uint64_t{s.ejected}; }},
  };
  for (const Family& f : kFamilies) {
    w.family(f.name, f.help, f.type);
    for (const ClusterStats& s : stats) w.sample({{"cluster", s.cluster}}, double(f.value(s)));
  }
  w.family("meshd_l7_outlier_ejections_total",
           "L7 outlier ejections made, and not made because maxEjectionPercent was reached",
           MetricType::kCounter);
  for (const ClusterStats& s : stats) {
    w.sample({{"cluster", s.cluster}, {"result", "ejected"}}, double(s.ejections));
    w.sample({{"cluster", s.cluster}, {"result", "skipped_max_percent"}},
             double(s.ejections_skipped));
  }
  w.family("meshd_l7_kernel_ejections_total",
           "L7 ejections published into the kernel's ejection state, by the kernel's answer",
           MetricType::kCounter);
  const std::array<uint64_t, kEjectResults> k = kernelEjections();
  for (size_t i = 0; i < kEjectResults; ++i) {
    const std::string_view name = i + 1 == kEjectResults
                                      ? std::string_view("error")
                                      : datapath::ejectResultName(datapath::EjectResult(i));
    w.sample({{"result", std::string(name)}}, double(k[i]));
  }
  out += w.text();
}

}  // namespace meshd::daemon
