// The mTLS tunnel in meshd (docs/design/0004-identity-mtls.md, "Wiring into meshd"):
//
//   L7 proxy worker ── RouteDecision::via ──▶ MeshTunnel::open() (UpstreamConnector)
//        socketpair: the worker keeps one end, the tunnel loop relays the other through
//        TunnelClient::openStream(source workload identity, peer node :15008, dst)
//   peer meshd: TunnelServer :15008 (presents the node credential) ── InboundHook ──▶ pod
//
// One tunnel::EpollLoop thread runs the client and the server. `via` ids come from a ViaTable:
// (source workload identity, peer node, peer address) ↔ u64, append-only (ids are never
// reused, so a pooled upstream connection keyed by an old via can never carry another's
// requests).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "common/net.h"
#include "daemon/identity_agent.h"
#include "identity/x509.h"
#include "proxy/core/proxy.h"
#include "tunnel/loop.h"
#include "tunnel/tunnel.h"

namespace meshd::daemon {

// The client-side verifier: the peer's chain verifies against `bundle` in `trust_domain` now
// (identity::verifyPeer) and its SPIFFE ID is spiffe://<td>/meshd/node/<node>.
tunnel::PeerVerifier nodeVerifier(std::shared_ptr<const identity::TrustBundle> bundle,
                                  std::string trust_domain, std::string node);
// The server-side verifier: verifyPeer, and the ID is a workload ID (/ns/<ns>/sa/<sa>).
tunnel::PeerVerifier workloadVerifier(std::shared_ptr<const identity::TrustBundle> bundle,
                                      std::string trust_domain);

struct ViaEntry {
  uint64_t id = 0;
  std::shared_ptr<const WorkloadCredential> source;
  std::string node;
  SocketAddress peer;  // the node's InternalIP : tunnel port
  tunnel::PeerVerifier verifier;
};

class ViaTable {
 public:
  ViaTable(std::shared_ptr<const identity::TrustBundle> bundle, std::string trust_domain)
      : bundle_(std::move(bundle)), trust_domain_(std::move(trust_domain)) {}
  // The id of (source, node, peer): an existing one, else a new one (never 0). Updater thread
  // (thread-safe anyway).
  uint64_t idFor(std::shared_ptr<const WorkloadCredential> source, const std::string& node,
                 const SocketAddress& peer);
  // The entry of `id`, or null. Entries live as long as the table. Thread-safe (a lock: once
  // per upstream connection opened through the tunnel, not per request).
  const ViaEntry* find(uint64_t id) const;
  size_t size() const;

 private:
  std::shared_ptr<const identity::TrustBundle> bundle_;
  std::string trust_domain_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<ViaEntry>> entries_;  // id = index + 1
  std::map<std::tuple<const WorkloadCredential*, std::string, std::string>, uint64_t> by_key_;
};

struct MeshTunnelOptions {
  SocketAddress listen;                               // e.g. 0.0.0.0:15008
  std::shared_ptr<tunnel::Identity> server_identity;  // the node credential
  std::shared_ptr<const identity::TrustBundle> bundle;
  std::shared_ptr<const tunnel::TrustBundle> tunnel_bundle;
  std::string trust_domain;
  tunnel::InboundHook hook;
  tunnel::TunnelLimits limits;
};

class MeshTunnel final : public proxy::UpstreamConnector {
 public:
  // Starts the loop thread, the client, and the server listening on options.listen.
  static absl::StatusOr<std::unique_ptr<MeshTunnel>> start(MeshTunnelOptions options,
                                                           const ViaTable& vias);
  ~MeshTunnel() override;
  void stop();

  // proxy::UpstreamConnector (worker threads).
  int open(const SocketAddress& upstream, uint64_t via, int* err) override;

  SocketAddress listening() const { return listening_; }
  // Counters (relaxed reads).
  const tunnel::TunnelCounters& clientCounters() const;
  const tunnel::TunnelCounters& serverCounters() const;
  // Prometheus text: meshd_tunnel_* families.
  void renderMetrics(std::string& out) const;

 private:
  MeshTunnel(const ViaTable& vias) : vias_(vias) {}
  const ViaTable& vias_;
  std::unique_ptr<tunnel::EpollLoop> loop_;
  std::unique_ptr<tunnel::TunnelClient> client_;
  std::unique_ptr<tunnel::TunnelServer> server_;
  std::thread thread_;
  SocketAddress listening_;
  std::atomic<uint64_t> open_refused_{0};
  std::atomic<bool> stopped_{false};
};

}  // namespace meshd::daemon
