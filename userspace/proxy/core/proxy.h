// The L7 proxy engine: listeners, worker event loops, downstream HTTP/1.1 and opaque TCP
// connections, upstream connection pools. Routing (Router), the original destination of
// redirected connections (OriginalDst) and telemetry (Observer) plug in from outside;
// this library depends on neither the daemon, the datapath nor the resources libraries.
// Design and behaviour: docs/design/0003-l7-proxy.md, "Proxy core (as built)".
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "proxy/http1/head_parser.h"
#include "proxy/http2/types.h"
#include "proxy/resilience/breaker.h"
#include "proxy/resilience/retry.h"
#include "state/lb_state.h"

namespace meshd::proxy {

// The original destination of an accepted connection (the VIP:port the app connected to).
class OriginalDst {
 public:
  virtual ~OriginalDst() = default;
  // Called once per accepted connection on the worker thread (must be thread-safe).
  // nullopt = unknown: the connection is closed and counted (Stats::orig_dst_unknown).
  virtual std::optional<SocketAddress> lookup(int fd, const SocketAddress& peer) = 0;
};

// One header edit of a route filter. Edits of framing and hop-by-hop fields (Host,
// Content-Length, Transfer-Encoding, Connection, Upgrade, TE, Keep-Alive,
// Proxy-Connection) are ignored: the proxy writes those itself.
struct HeaderEdit {
  enum class Op : uint8_t { kSet, kAdd, kRemove };
  Op op = Op::kSet;
  std::string_view name, value;
};

// What routing decided for one request. Views must stay valid while `pin` is held (the core
// keeps `pin` until the exchange ends; the router sets it to its config snapshot).
struct RouteDecision {
  enum class Kind : uint8_t { kForward, kDirectResponse };
  Kind kind = Kind::kForward;
  std::shared_ptr<const void> pin;
  // kForward
  SocketAddress upstream;              // chosen endpoint
  std::string_view cluster;            // stable name for metrics/logs, e.g. "default/web:80"
  std::string_view authority_rewrite;  // "" = keep
  std::string_view path_rewrite;       // "" = keep (full new origin-form target incl. query)
  absl::Span<const HeaderEdit> request_edits, response_edits;
  // From the routed request head until the response head; 0 = none. Default: Envoy's
  // route timeout, 15 s. Expiry answers 504 "UT".
  uint32_t request_timeout_ms = 15'000;
  // Resilience (docs/design/0003-l7-proxy.md, "Resilience in the core"); all optional.
  // The called Service's retry policy; null = no retries. Its per_try_timeout_ms bounds
  // each try (the request timeout still spans all of them).
  const state::RetrySettings* retries = nullptr;
  // The target cluster's request-level circuit breakers and retry budget (node-wide, the
  // same object across config swaps); null = no limits.
  resilience::CircuitBreaker* breaker = nullptr;
  // Fault injection's delay: the request waits this long before it is forwarded (or before
  // the direct response of an abort); flag DI.
  uint32_t fault_delay_ms = 0;
  // The router's own context for retarget()/onTry() (e.g. its per-cluster state).
  const void* cluster_ctx = nullptr;
  // How the upstream is reached: 0 = a TCP connect from meshd; else the router's id of an
  // indirect route (the mTLS tunnel to another node's meshd, as the source workload),
  // opened by ProxyOptions::connector. Pooled upstream connections are kept per (upstream,
  // via): a connection opened for one via never carries another's requests. retarget()
  // sets it with the new upstream.
  uint64_t via = 0;
  // The router's own per-request tag, kept as is for retarget() (e.g. which source workload
  // the request came from, so a retry to another endpoint picks that endpoint's via). The
  // core never reads it.
  uint32_t router_tag = 0;
  // kDirectResponse (redirects, 404 no route, 500 missing backend, fault abort, 403 RBAC,
  // 429 rate limited)
  uint16_t status = 0;
  std::string_view location;        // "" = no Location field
  std::string_view body;            // sent as text/plain
  std::string_view response_flags;  // e.g. "NR"
  std::string_view retry_after;     // Retry-After field (429 "RL"); "" = none. Not for gRPC.
};

struct RequestInfo {
  SocketAddress orig_dst;
  SocketAddress peer;
  std::string_view method;
  // Origin-form (path and query; an absolute-form target is reduced to it), or CONNECT's
  // authority-form, or "*" for OPTIONS.
  std::string_view target;
  std::string_view authority;  // Host, or the absolute-form / CONNECT target's authority
  absl::Span<const http1::HeaderField> headers;
};

class Router {
 public:
  virtual ~Router() = default;
  // Decides one request; `out` starts as a default RouteDecision. Worker thread; must be
  // thread-safe.
  virtual void route(const RequestInfo& req, RouteDecision& out) = 0;
  // Where a connection goes before/without HTTP (protocol detection, opaque relay).
  // false = none (the connection is closed and counted in Stats::no_route).
  virtual bool routeConnection(const SocketAddress& orig_dst, SocketAddress& upstream,
                               std::string_view& cluster) = 0;
  // routeConnection() with the downstream peer, and how the upstream is reached
  // (RouteDecision::via; 0 = a TCP connect). The core calls this one; by default it is the one
  // above, direct.
  virtual bool routeConnectionFrom(const SocketAddress& orig_dst, const SocketAddress& peer,
                                   SocketAddress& upstream, std::string_view& cluster,
                                   uint64_t& via) {
    (void)peer;
    via = 0;
    return routeConnection(orig_dst, upstream, cluster);
  }
  // A retry of `decision`: sets decision.upstream to another endpoint of the same cluster,
  // avoiding `failed` (the endpoint of the try that just failed) when another is usable.
  // false = no endpoint: the last try's outcome is answered. Worker thread.
  virtual bool retarget(RouteDecision& decision, const SocketAddress& failed) {
    (void)decision;
    (void)failed;
    return false;
  }
  // The end of every try of a forwarded request (outlier detection, latency-aware
  // balancing): the endpoint it went to, how it ended, and the time from when it was sent
  // to its response head or failure, in µs. Called before the retry decision. Worker thread.
  virtual void onTry(const RouteDecision& decision, const SocketAddress& endpoint,
                     const resilience::TryOutcome& outcome, uint64_t elapsed_us) {
    (void)decision;
    (void)endpoint;
    (void)outcome;
    (void)elapsed_us;
  }
  // An endpoint route() (kForward) or retarget() picked for a try that was never made: the
  // breaker refused it, or the client left or a timeout fired during a fault delay or a
  // back-off. No onTry() follows for that pick; a router that counts outstanding picks
  // (peak-EWMA's pending requests) gives it back here. Worker thread.
  virtual void onCancel(const RouteDecision& decision, const SocketAddress& endpoint) {
    (void)decision;
    (void)endpoint;
  }
};

// One finished request (protocol "http/1.1", "http/2", or "grpc" for an HTTP/2 request
// with content-type application/grpc*) or opaque connection (protocol "tcp"). Views are
// valid only during Observer::onRequest.
struct RequestRecord {
  std::string_view cluster;
  uint16_t response_code = 0;  // 0: no response was sent (e.g. the client went away)
  // Envoy's flags: UF, UH, UT, UC, NR, DC, DPE, UPE, UO, URX, FI, DI, SI; "" = none.
  std::string_view response_flags;
  std::string_view method;
  uint64_t duration_us = 0;
  // Bytes received from the client for this request and sent to it for the response:
  // head and body in HTTP/1.1; in HTTP/2 the DATA payload only (heads are HPACK-coded
  // and share the connection's compression state).
  uint64_t request_bytes = 0;
  uint64_t response_bytes = 0;
  SocketAddress peer, orig_dst, upstream;
  std::string_view protocol;  // "http/1.1" | "http/2" | "grpc" | "tcp"
  std::string_view request_id;
  // Tries made (1 + retries); 0 when the request was never forwarded.
  uint32_t attempts = 0;
  // gRPC only: the grpc-status the client got (from the upstream's trailers or
  // trailers-only head, or the one meshd answered with); "" if none was seen.
  std::string_view grpc_status;
  // For the access log (HTTP only; "" for "tcp" and when absent), copied as received and
  // cut at the kRecordMax* bounds below: the request target (origin-form: path and query,
  // an absolute-form target reduced to it; CONNECT's authority-form; "*"), the authority
  // (Host or :authority) and User-Agent.
  std::string_view path;
  std::string_view authority;
  std::string_view user_agent;
  // Wall-clock start (CLOCK_REALTIME, µs since the Unix epoch; the same instant as the
  // start of duration_us): the HTTP/1.1 head parsed, the HTTP/2 HEADERS received, or the
  // opaque relay begun.
  uint64_t start_unix_us = 0;
};

// Bounds of RequestRecord's copied strings (longer values are cut, not dropped): a path
// past 2 KiB is rarely useful in a log line, hostnames are at most 253 bytes plus a port,
// and User-Agent strings beyond 256 bytes are noise.
inline constexpr size_t kRecordMaxPath = 2048;
inline constexpr size_t kRecordMaxAuthority = 256;
inline constexpr size_t kRecordMaxUserAgent = 256;

// Opens upstream connections that are not a TCP connect from meshd (RouteDecision::via != 0):
// e.g. a stream of the mTLS tunnel to another node. Worker thread; must be thread-safe.
class UpstreamConnector {
 public:
  virtual ~UpstreamConnector() = default;
  // Returns this side's end of a new connected stream socket (non-blocking, close-on-exec)
  // to `upstream` by way of `via`, or -1 with `*err` (an errno: ECONNREFUSED, EHOSTUNREACH,
  // ...). The connector relays the other end; a failure later (the tunnel refused the
  // stream, the peer node is down) closes or resets it, which the core handles like a
  // reset connection.
  virtual int open(const SocketAddress& upstream, uint64_t via, int* err) = 0;
};

class Observer {
 public:
  virtual ~Observer() = default;
  // Worker thread; must be thread-safe.
  virtual void onRequest(const RequestRecord& record) = 0;
};

struct ProxyOptions {
  SocketAddress listen;
  unsigned workers = 0;  // 0 = one per CPU
  http1::Limits limits;
  // HTTP/2 limits, for downstream (h2c client) and upstream (pooled h2c) sessions alike.
  http2::Limits h2_limits;
  // Envoy's defaults: downstream idle 1 h; request headers (slowloris) 10 s from the first
  // byte of a head (Envoy: disabled by default; issue 5 asks for it); upstream connect
  // timeout 10 s (Envoy's cluster connect_timeout is 5 s; 10 s follows the issue);
  // pooled upstream idle 60 s.
  uint32_t idle_timeout_ms = 3'600'000;
  uint32_t request_headers_timeout_ms = 10'000;
  uint32_t connect_timeout_ms = 10'000;
  uint32_t upstream_idle_ms = 60'000;
  // Bytes buffered per direction and connection before reading from that side stops
  // (backpressure). At least limits.max_head_bytes + 1.
  size_t max_buffer_bytes = 64 * 1024;
  int listen_backlog = 1024;
  // SO_MARK on every upstream socket meshd connects (0 = none): the kernel's STRICT program
  // lets only marked connections reach a STRICT workload (docs/design/0004-identity-mtls.md).
  uint32_t upstream_mark = 0;
  // Opens upstreams whose RouteDecision::via is not 0 (must outlive the Proxy); null = every
  // via is refused with ENETUNREACH.
  UpstreamConnector* connector = nullptr;
};

// Counters summed over workers (relaxed reads; for tests and /metrics).
struct ProxyStats {
  uint64_t accepted = 0;
  uint64_t orig_dst_unknown = 0;  // closed: OriginalDst::lookup said nullopt
  uint64_t no_route = 0;          // closed: Router::routeConnection said false
  uint64_t upstream_connects = 0;
  uint64_t upstream_reused = 0;  // requests sent on a pooled connection
  uint64_t opaque = 0;           // connections relayed as opaque TCP
  uint64_t http = 0;             // connections handled as HTTP/1.1
  uint64_t http2 = 0;            // connections handled as HTTP/2 (prior-knowledge h2c)
};

class Worker;

class Proxy {
 public:
  // Binds one SO_REUSEPORT listener per worker on options.listen (port 0: the first gets a
  // port, the others bind the same one) and starts the workers. Fails with the errno of the
  // socket call that failed (e.g. "bind 127.0.0.1:15001: Address already in use").
  // `router`, `original_dst` and `observer` (nullable) must outlive the Proxy.
  static absl::StatusOr<std::unique_ptr<Proxy>> start(ProxyOptions options, Router& router,
                                                      OriginalDst& original_dst,
                                                      Observer* observer);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // The listening port (host order).
  uint16_t port() const { return port_; }
  ProxyStats stats() const;
  // Stops accepting, closes every connection and joins the workers. Idempotent.
  void stop();

 private:
  Proxy() = default;
  uint16_t port_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

}  // namespace meshd::proxy
