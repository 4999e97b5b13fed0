// The node-to-node tunnel (issue 6; docs/design/0004-identity-mtls.md, "The node-to-node
// tunnel"): meshd → meshd on :15008, TLS 1.3 with mutual authentication, one HTTP/2 CONNECT
// stream per proxied TCP connection.
//
//   app fd ◀──▶ TunnelClient ══ TLS 1.3 + h2, pooled per (source identity, peer) ══▶
//               TunnelServer (:15008) ── InboundHook ── connect(dst, SO_MARK) ◀──▶ pod
//
// Both ends run on a Loop (loop.h) and are called on its thread only. Nothing blocks.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "common/scoped_fd.h"
#include "proxy/http2/types.h"
#include "tunnel/loop.h"
#include "tunnel/tls.h"

namespace meshd::tunnel {

// Header fields meshd adds to a CONNECT request / response (all lower-case).
inline constexpr std::string_view kSourceAddrHeader = "meshd-source-addr";  // "ip:port"
inline constexpr std::string_view kReasonHeader = "meshd-reason";  // on a refusal (4xx/5xx)

struct TunnelLimits {
  // HTTP/2 limits (max concurrent streams 100 per connection, stream window 256 KiB,
  // connection window 1 MiB, send queue 64 KiB per stream; see proxy/http2/types.h).
  proxy::http2::Limits h2;
  // Bytes read from a TCP socket at a time (one scratch buffer per tunnel end).
  size_t read_chunk = 16 * 1024;
  uint64_t handshake_timeout_ms = 10'000;
  // A client connection with no stream for this long is closed (close_notify, then close).
  uint64_t idle_timeout_ms = 60'000;
  // The server closes a connection idle for this long (longer than the client's, so the
  // client normally closes first and never races a new stream against the server's close).
  uint64_t server_idle_timeout_ms = 180'000;
  // Server: the upstream connect() must complete within this, else 503.
  uint64_t connect_timeout_ms = 5'000;
  // Server: connections (handshaking or established) beyond this are accepted and closed
  // at once (counted in connections_rejected): bounds memory and handshake CPU under a
  // connection flood.
  size_t max_server_connections = 8192;
  // Distinct (peer address, reason) pairs logged; later refusals are only counted.
  size_t max_logged_refusals = 1024;
};

struct TunnelCounters {
  std::atomic<uint64_t> connections_opened{0};  // TCP connections (accepted or connected)
  std::atomic<uint64_t> handshakes_ok{0};
  std::atomic<uint64_t> handshakes_resumed{0};  // of handshakes_ok
  std::array<std::atomic<uint64_t>, kHandshakeFailureCount> handshakes_failed{};
  std::atomic<uint64_t> connections_failed{0};    // after the handshake (I/O or h2 error)
  std::atomic<uint64_t> connections_rejected{0};  // server: over max_server_connections
  std::atomic<uint64_t> streams_opened{0};        // client: submitted; server: 200 sent
  std::atomic<uint64_t> streams_refused{0};       // non-2xx (or reset before the response)
  std::atomic<uint64_t> streams_reset{0};         // reset after it was established
  std::atomic<uint64_t> bytes_to_tunnel{0};       // payload read from TCP sockets
  std::atomic<uint64_t> bytes_from_tunnel{0};     // payload written to TCP sockets
  // The most bytes one stream ever held in meshd's own buffers (stream DATA not yet written
  // to its socket + socket bytes not yet taken by the stream's send queue). Bounded by
  // h2.initial_stream_window + read_chunk (plus the send queue nghttp2 drains).
  std::atomic<uint64_t> stream_buffer_peak{0};

  uint64_t failed(HandshakeFailure f) const {
    return handshakes_failed[static_cast<size_t>(f)].load(std::memory_order_relaxed);
  }
};

// Where refusals are logged (once per (peer address, reason)). Default: stderr.
using LogSink = std::function<void(std::string_view line)>;

namespace detail {
class Engine;
}

// --- client -----------------------------------------------------------------------------

struct StreamRequest {
  SocketAddress peer;        // the peer node's tunnel address, ip:15008
  PeerVerifier verify_peer;  // decides on the peer's identity (e.g. its SPIFFE ID)
  SocketAddress dst;         // the original destination (:authority)
  SocketAddress source;      // the source workload's address (meshd-source-addr); optional
};

class TunnelClient {
 public:
  static absl::StatusOr<std::unique_ptr<TunnelClient>> create(
      Loop& loop, std::shared_ptr<const TrustBundle> trust, const TunnelLimits& limits = {},
      LogSink log = nullptr);
  ~TunnelClient();

  // Relays between `fd` (non-blocking or not: it is made non-blocking; an accepted app
  // socket or one end of a socketpair) and a new CONNECT stream to request.dst through a
  // pooled TLS connection of (source, request.peer): a live one with a free stream slot and
  // the source's current credentials, else a new one. A pooled connection was verified by
  // the verifier of the stream that opened it. When the stream cannot be set up (peer
  // unreachable, handshake refused, a non-2xx answer), `fd` is closed (a TCP socket with a
  // reset). On a TCP reset of `fd` the stream is reset (CONNECT_ERROR) and vice versa;
  // EOF is END_STREAM both ways (shutdown(SHUT_WR)).
  void openStream(std::shared_ptr<Identity> source, const StreamRequest& request, ScopedFd fd);

  // Root rotation: new connections verify against `bundle`; live ones keep the bundle they
  // were verified with; cached session tickets are dropped.
  absl::Status setTrustBundle(std::shared_ptr<const TrustBundle> bundle);

  const TunnelCounters& counters() const;
  // TLS connections in the pool (any state).
  size_t connections() const;
  // Closes every connection now (their fds are closed).
  void closeAll();

 private:
  TunnelClient() = default;
  std::unique_ptr<detail::Engine> engine_;
};

// --- server -----------------------------------------------------------------------------

struct InboundRequest {
  SpiffeIdString peer_identity;  // the client certificate's first URI SAN
  SocketAddress peer;            // the remote node's address
  SocketAddress dst;             // :authority
  SocketAddress source;          // meshd-source-addr (unset when absent or malformed)
  absl::Span<const proxy::http2::HeaderField> headers;  // all regular fields, valid during the call
};

struct InboundDecision {
  bool allow = false;
  uint32_t mark = 0;  // SO_MARK for the upstream socket (0: none)
  uint16_t code = 403;
  std::string reason;
  static InboundDecision allowWithMark(uint32_t mark) { return {true, mark, 200, {}}; }
  static InboundDecision deny(uint16_t code, std::string reason) {
    return {false, 0, code, std::move(reason)};
  }
};
using InboundHook = std::function<InboundDecision(const InboundRequest&)>;

class TunnelServer {
 public:
  // `identity`: the credentials presented to clients (rotate() it for new connections).
  // `verify_peer`: decides on every client certificate after the chain check.
  static absl::StatusOr<std::unique_ptr<TunnelServer>> create(
      Loop& loop, std::shared_ptr<Identity> identity, std::shared_ptr<const TrustBundle> trust,
      PeerVerifier verify_peer, InboundHook hook, const TunnelLimits& limits = {},
      LogSink log = nullptr);
  ~TunnelServer();

  // Binds and listens (SO_REUSEADDR; port 0 picks one). Returns the bound address.
  absl::StatusOr<SocketAddress> listen(const SocketAddress& addr);
  // Root rotation: new connections verify client chains against `bundle` (and get a new
  // ticket key: earlier tickets no longer resume); live connections are kept.
  absl::Status setTrustBundle(std::shared_ptr<const TrustBundle> bundle);

  // Graceful shutdown (e.g. before a restart): stops listening and sends GOAWAY (NO_ERROR)
  // on every connection; streams already open run to their end, clients put new streams
  // on other connections, and each connection closes once its last stream is done.
  void drain();

  const TunnelCounters& counters() const;
  size_t connections() const;
  void closeAll();

 private:
  TunnelServer() = default;
  std::unique_ptr<detail::Engine> engine_;
};

}  // namespace meshd::tunnel
