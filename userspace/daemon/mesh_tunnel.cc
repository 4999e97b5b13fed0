#include "daemon/mesh_tunnel.h"

#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "identity/spiffe.h"
#include "spdlog/spdlog.h"
#include "telemetry/exposition.h"

namespace meshd::daemon {
namespace {

absl::string_view sv(std::string_view v) { return {v.data(), v.size()}; }

absl::StatusOr<identity::SpiffeId> verified(const identity::TrustBundle& bundle,
                                            std::string_view td, X509* leaf,
                                            STACK_OF(X509) * chain) {
  // chain == null: a resumed session. Its chain was verified against the bundle when the
  // session was established (a bundle change drops the tickets) and is not carried in the
  // ticket, so only the leaf's identity is checked again (the tunnel re-checks its expiry).
  identity::PeerVerifyResult r = chain == nullptr
                                     ? identity::spiffeIdOf(leaf)
                                     : identity::verifyPeer(leaf, chain, bundle, td, absl::Now());
  if (r.ok() && chain == nullptr && r.id.trust_domain != td) {
    return absl::PermissionDeniedError(
        absl::StrCat("wrong_trust_domain: ", r.id.toString(), " is not in trust domain ", sv(td)));
  }
  if (!r.ok()) {
    return absl::PermissionDeniedError(
        absl::StrCat(sv(identity::reasonName(*r.rejected)), ": ", r.detail));
  }
  return std::move(r.id);
}

}  // namespace

tunnel::PeerVerifier nodeVerifier(std::shared_ptr<const identity::TrustBundle> bundle,
                                  std::string trust_domain, std::string node) {
  return [bundle = std::move(bundle), td = std::move(trust_domain), node = std::move(node)](
             X509* leaf, STACK_OF(X509) * chain) -> absl::Status {
    absl::StatusOr<identity::SpiffeId> id = verified(*bundle, td, leaf, chain);
    if (!id.ok()) return id.status();
    absl::StatusOr<std::string_view> n = identity::nodeName(identity::view(*id));
    if (!n.ok() || *n != node) {
      return absl::PermissionDeniedError(absl::StrCat(
          "wrong_peer: the tunnel peer is ", id->toString(), ", expected node ", sv(node)));
    }
    return absl::OkStatus();
  };
}

tunnel::PeerVerifier workloadVerifier(std::shared_ptr<const identity::TrustBundle> bundle,
                                      std::string trust_domain) {
  return [bundle = std::move(bundle), td = std::move(trust_domain)](
             X509* leaf, STACK_OF(X509) * chain) -> absl::Status {
    absl::StatusOr<identity::SpiffeId> id = verified(*bundle, td, leaf, chain);
    if (!id.ok()) return id.status();
    if (!identity::workloadIdentity(identity::view(*id)).ok()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "not_workload: ", id->toString(), " is not a workload identity (/ns/<ns>/sa/<sa>)"));
    }
    return absl::OkStatus();
  };
}

uint64_t ViaTable::idFor(std::shared_ptr<const WorkloadCredential> source, const std::string& node,
                         const SocketAddress& peer) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_tuple(source.get(), node, peer.toString());
  if (auto it = by_key_.find(key); it != by_key_.end()) return it->second;
  auto e = std::make_unique<ViaEntry>();
  e->id = entries_.size() + 1;
  e->source = std::move(source);
  e->node = node;
  e->peer = peer;
  e->verifier = nodeVerifier(bundle_, trust_domain_, node);
  const uint64_t id = e->id;
  entries_.push_back(std::move(e));
  by_key_.emplace(std::move(key), id);
  return id;
}

const ViaEntry* ViaTable::find(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (id == 0 || id > entries_.size()) return nullptr;
  return entries_[id - 1].get();
}

size_t ViaTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

absl::StatusOr<std::unique_ptr<MeshTunnel>> MeshTunnel::start(MeshTunnelOptions options,
                                                              const ViaTable& vias) {
  std::unique_ptr<MeshTunnel> t(new MeshTunnel(vias));
  auto loop = tunnel::EpollLoop::create();
  if (!loop.ok()) return loop.status();
  t->loop_ = std::move(*loop);
  tunnel::LogSink log = [](std::string_view line) { spdlog::warn("tunnel: {}", line); };
  auto client = tunnel::TunnelClient::create(*t->loop_, options.tunnel_bundle, options.limits, log);
  if (!client.ok()) return client.status();
  t->client_ = std::move(*client);
  auto server =
      tunnel::TunnelServer::create(*t->loop_, options.server_identity, options.tunnel_bundle,
                                   workloadVerifier(options.bundle, options.trust_domain),
                                   std::move(options.hook), options.limits, log);
  if (!server.ok()) return server.status();
  t->server_ = std::move(*server);
  auto bound = t->server_->listen(options.listen);
  if (!bound.ok()) {
    return absl::Status(bound.status().code(),
                        absl::StrCat("tunnel listener (--tunnel-port) on ",
                                     options.listen.toString(), ": ", bound.status().message()));
  }
  t->listening_ = *bound;
  t->thread_ = std::thread([p = t.get()] { p->loop_->run(); });
  spdlog::info("mTLS tunnel listening on {} as {}", t->listening_.toString(),
               options.server_identity->name());
  return t;
}

MeshTunnel::~MeshTunnel() { stop(); }

void MeshTunnel::stop() {
  if (stopped_.exchange(true)) return;
  if (thread_.joinable()) {
    loop_->runSync([this] {
      server_->closeAll();
      client_->closeAll();
    });
    loop_->stop();
    thread_.join();
  }
  server_.reset();
  client_.reset();
}

int MeshTunnel::open(const SocketAddress& upstream, uint64_t via, int* err) {
  const ViaEntry* e = vias_.find(via);
  if (e == nullptr || !e->source->ready.load(std::memory_order_acquire) ||
      stopped_.load(std::memory_order_relaxed)) {
    open_refused_.fetch_add(1, std::memory_order_relaxed);
    *err = ENETUNREACH;
    return -1;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
    *err = errno;
    return -1;
  }
  tunnel::StreamRequest req;
  req.peer = e->peer;
  req.verify_peer = e->verifier;
  req.dst = upstream;
  loop_->post([this, identity = e->source->identity, req = std::move(req), fd = sv[1]]() mutable {
    client_->openStream(identity, req, ScopedFd(fd));
  });
  return sv[0];
}

const tunnel::TunnelCounters& MeshTunnel::clientCounters() const { return client_->counters(); }
const tunnel::TunnelCounters& MeshTunnel::serverCounters() const { return server_->counters(); }

void MeshTunnel::renderMetrics(std::string& out) const {
  if (client_ == nullptr || server_ == nullptr) return;
  telemetry::ExpositionWriter w;
  using telemetry::MetricType;
  auto v = [](const std::atomic<uint64_t>& a) { return double(a.load(std::memory_order_relaxed)); };
  const tunnel::TunnelCounters& c = client_->counters();
  const tunnel::TunnelCounters& s = server_->counters();
  w.family("meshd_tunnel_handshakes_total", "mTLS tunnel TLS handshakes that succeeded",
           MetricType::kCounter);
  w.sample({{"side", "client"}}, v(c.handshakes_ok));
  w.sample({{"side", "server"}}, v(s.handshakes_ok));
  w.family("meshd_tunnel_handshake_failures_total", "mTLS tunnel TLS handshakes that failed",
           MetricType::kCounter);
  for (size_t i = 0; i < tunnel::kHandshakeFailureCount; ++i) {
    const char* reason = tunnel::handshakeFailureName(tunnel::HandshakeFailure(i));
    w.sample({{"side", "client"}, {"reason", reason}}, v(c.handshakes_failed[i]));
    w.sample({{"side", "server"}, {"reason", reason}}, v(s.handshakes_failed[i]));
  }
  w.family("meshd_tunnel_streams_total", "mTLS tunnel streams (one per proxied connection)",
           MetricType::kCounter);
  w.sample({{"side", "client"}, {"result", "opened"}}, v(c.streams_opened));
  w.sample({{"side", "client"}, {"result", "refused"}}, v(c.streams_refused));
  w.sample({{"side", "server"}, {"result", "opened"}}, v(s.streams_opened));
  w.sample({{"side", "server"}, {"result", "refused"}}, v(s.streams_refused));
  w.family("meshd_tunnel_bytes_total", "Payload bytes relayed through the mTLS tunnel",
           MetricType::kCounter);
  w.sample({{"side", "client"}, {"direction", "to_tunnel"}}, v(c.bytes_to_tunnel));
  w.sample({{"side", "client"}, {"direction", "from_tunnel"}}, v(c.bytes_from_tunnel));
  w.sample({{"side", "server"}, {"direction", "to_tunnel"}}, v(s.bytes_to_tunnel));
  w.sample({{"side", "server"}, {"direction", "from_tunnel"}}, v(s.bytes_from_tunnel));
  w.family("meshd_tunnel_open_refused_total",
           "Upstream connections the proxy asked the tunnel for without a usable source "
           "certificate or via",
           MetricType::kCounter);
  w.sample(v(open_refused_));
  out += w.text();
}

}  // namespace meshd::daemon
