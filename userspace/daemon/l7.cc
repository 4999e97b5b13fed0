#include "daemon/l7.h"

#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "proxy/resilience/fault.h"
#include "proxy/resilience/outlier.h"
#include "proxy/resilience/peak_ewma.h"
#include "spdlog/spdlog.h"

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

// The endpoint for one request: weighted random, or peak-EWMA P2C when the cluster's policy
// asks for LeastLatency.
const routing::Endpoint* pickEndpoint(const routing::Cluster& c, uint64_t snapshot_id) {
  if (c.request_policy == nullptr || !c.request_policy->peak_ewma || c.endpoints.size() < 2) {
    return c.pickEndpoint(nextRandom());
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
  const size_t i = e.balancer.pick(c.cumulative, nextRandom(), monotonicNs());
  if (i >= c.endpoints.size()) return c.pickEndpoint(nextRandom());
  e.balancer.onStart(i);
  return &c.endpoints[i];
}

// Fault injection's abort (Istio's fault.abort): fills a direct response with flag FI when
// this request draws it. Delays need a timer in the proxy core: not yet.
bool faultAbort(const state::FaultInjection& fault, proxy::RouteDecision& out) {
  if (!fault.aborts()) return false;
  const proxy::resilience::FaultDecision d =
      proxy::resilience::FaultInjector(fault).decide(nextRandom());
  if (!d.aborted()) return false;
  out.kind = proxy::RouteDecision::Kind::kDirectResponse;
  out.status = d.abort_http_status != 0
                   ? d.abort_http_status
                   : proxy::resilience::httpStatusFromGrpc(d.abort_grpc_status);
  out.body = "fault filter abort\n";
  out.response_flags = "FI";
  return true;
}

// The latency of a finished request, for the balancer that picked its endpoint.
void recordLatency(std::string_view cluster, const SocketAddress& upstream, uint64_t duration_us) {
  auto& map = workerBalancers().by_cluster;
  auto it = map.find(absl::string_view(cluster.data(), cluster.size()));
  if (it == map.end()) return;
  const size_t i = it->second.balancer.indexOf(upstream);
  if (i >= it->second.balancer.size()) return;
  it->second.balancer.onFinish(i, duration_us * 1000, monotonicNs());
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

  const Workload* workload(const IpAddress& a) const {
    auto it = workloads.find(a);
    return it == workloads.end() ? nullptr : &it->second;
  }
};

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

void L7Config::route(const proxy::RequestInfo& req, proxy::RouteDecision& out) {
  std::shared_ptr<const Snapshot> snap = snapshot();
  const routing::ServiceRoutes* routes =
      snap->table ? snap->table->find(req.orig_dst.ip, req.orig_dst.port) : nullptr;
  if (routes == nullptr) {
    // No route bound: the Service's own endpoints — its L7 cluster when a request-level
    // TrafficPolicy made it L7 (faults, balancing), else as the L4 path would.
    const routing::Cluster* c =
        snap->table ? snap->table->serviceCluster(req.orig_dst.ip, req.orig_dst.port) : nullptr;
    if (c == nullptr) {
      auto it = snap->frontends.find(VipPort{req.orig_dst.ip, req.orig_dst.port});
      c = it == snap->frontends.end() ? nullptr : &it->second->cluster;
    }
    if (c != nullptr && c->request_policy != nullptr && faultAbort(c->request_policy->fault, out)) {
      out.pin = std::move(snap);
      return;
    }
    const routing::Endpoint* ep = c ? pickEndpoint(*c, snap->id) : nullptr;
    if (ep == nullptr) {
      out.kind = proxy::RouteDecision::Kind::kDirectResponse;
      out.status = 503;
      out.body = "no healthy upstream\n";
      out.response_flags = "UH";
      out.cluster = c ? std::string_view(c->name) : std::string_view();
      out.pin = std::move(snap);
      return;
    }
    out.upstream = SocketAddress{ep->address, ep->port};
    out.cluster = c->name;
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
  // Fault injection (the called Service's TrafficPolicy, like a VirtualService's fault):
  // an abort answers here with flag FI. Delays need a timer in the core: not yet.
  if (faultAbort(routes->requestPolicy().fault, out)) {
    out.pin = std::move(snap);
    return;
  }
  const routing::BackendRef* ref = routing::pickBackendRef(rule, nextRandom());
  const routing::Cluster* c = ref ? ref->cluster : nullptr;
  const routing::Endpoint* ep = c ? pickEndpoint(*c, snap->id) : nullptr;
  if (ep == nullptr) {
    out.kind = proxy::RouteDecision::Kind::kDirectResponse;
    out.status = static_cast<uint16_t>(c ? c->unavailableStatus() : 500);
    out.body = out.status == 503 ? std::string_view("no healthy upstream\n")
                                 : std::string_view("backend not found\n");
    out.response_flags = out.status == 503 ? "UH" : "NR";
    out.cluster = c ? std::string_view(c->name) : std::string_view();
    out.pin = std::move(snap);
    return;
  }
  out.upstream = SocketAddress{ep->address, ep->port};
  out.cluster = c->name;
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
  if (r.upstream.valid() && !r.cluster.empty()) recordLatency(r.cluster, r.upstream, r.duration_us);
  if (access_log_) logAccess(*access_log_, r);
}

}  // namespace meshd::daemon
