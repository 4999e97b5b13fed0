// Internal to meshd_proxy_core: HTTP/2 (h2c, prior knowledge) through the proxy.
//
//   client ══h2══► Session (kH2) ── H2Conn: http2::ServerSession, one H2Stream per stream
//                                        │ Router::route per stream
//                                        ▼
//                  Worker's h2 pool: H2Upstream per connection (http2::ClientSession),
//                  many streams (of any session of this worker) multiplexed on it ══h2══► upstream
//
// Bodies move one stream at a time through bounded per-stream queues: bytes received on
// one side are consume()d (re-opening that side's flow-control window) only once the
// other side's session accepted them, so a slow reader stops a fast writer after about
// one stream window plus one send queue. Trailers and RST_STREAM travel both ways.
// docs/design/0003-l7-proxy.md, "Proxy core (as built)", HTTP/2 part.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "common/scoped_fd.h"
#include "proxy/core/proxy.h"
#include "proxy/core/worker.h"
#include "proxy/http2/client_session.h"
#include "proxy/http2/grpc.h"
#include "proxy/http2/server_session.h"

namespace meshd::proxy {

class Session;
class H2Conn;
class H2Upstream;

// A copied header section (trailers): the views point into `arena`.
struct HeaderCopy {
  std::string arena;
  std::vector<http1::HeaderField> fields;
  bool present = false;
  void clear() {
    arena.clear();
    fields.clear();
    present = false;
  }
  void assign(absl::Span<const http1::HeaderField> in);
};

// One proxied stream: a client stream of the downstream ServerSession and, once forwarded,
// a stream on a pooled upstream ClientSession. Pooled by its H2Conn (buffers keep their
// capacity across streams).
struct H2Stream {
  H2Conn* conn = nullptr;
  int32_t id = 0;            // downstream stream id
  H2Upstream* up = nullptr;  // null: not forwarded, answered locally, or the upstream side ended
  int32_t up_id = 0;
  RouteDecision decision;
  // decision.upstream was picked (route() or retarget()) and no try carried it yet: given
  // back with Router::onCancel() when the stream is recorded.
  bool pick_pending = false;
  bool grpc = false;
  bool request_done = false;   // the client's END_STREAM arrived (data or trailers)
  bool request_sent = false;   // ... and was passed upstream
  bool response_head = false;  // a response head was submitted to the client
  bool response_end = false;   // the response is complete on the upstream side
  bool response_sent = false;  // ... and its end was submitted to the client
  bool local = false;          // answered by the proxy: request bytes are dropped
  uint64_t deadline_ms = 0;    // request timeout (until the response head); 0 = none
  uint64_t start_us = 0;
  uint64_t request_bytes = 0;
  uint64_t response_bytes = 0;
  uint16_t status = 0;
  std::string_view flags;
  SocketAddress upstream_addr;
  // Request body bytes received and not yet accepted upstream (bounded by our stream
  // window: they are consume()d only when accepted), and bytes to consume() and drop.
  std::string req_pending;
  size_t req_off = 0;
  size_t req_discard = 0;
  HeaderCopy req_trailers;
  // Response body bytes not yet accepted by the downstream session (bounded by the
  // upstream stream window for the same reason).
  std::string resp_pending;
  size_t resp_off = 0;
  HeaderCopy resp_trailers;
  std::vector<http1::HeaderField> edited;  // the forwarded head's fields
  // The forwarded head (views into the client's stream, `edited`, the pinned decision),
  // kept for every try (a retry regenerates nothing: nghttp2 copies it per submit).
  http2::RequestHeaders fwd;

  // --- Resilience (docs/design/0003-l7-proxy.md, "Resilience in the core: HTTP/2 and
  // gRPC"). What a stream is waiting for: nothing, the end of a fault delay or of a retry's
  // back-off (no upstream stream; request bytes are buffered), or the per-try timeout of
  // the try in flight.
  enum class Wait : uint8_t { kNone, kFaultDelay, kBackoff, kPerTry };
  Wait wait = Wait::kNone;
  uint64_t wake_ms = 0;               // when `wait` ends; 0 = none
  uint32_t timed_index = UINT32_MAX;  // position in H2Conn::timed_ (UINT32_MAX: not there)
  // Body bytes [0, req_off) of req_pending were accepted upstream in this try; with
  // `retain` they stay there for a replay. [0, req_acked) were consume()d from the client.
  size_t req_acked = 0;
  bool retain = false;      // keep accepted body bytes (a retry policy applies, ≤ the bound)
  bool replayable = true;   // every body byte of the request is still held
  bool delayed = false;     // a fault delay was applied (flag DI)
  bool urx = false;         // the retries ran out on a retriable outcome (flag URX)
  uint32_t timeout_ms = 0;  // the request timeout, started when forwarding begins
  uint32_t attempts = 0;    // tries made (RequestRecord::attempts)
  uint8_t refused = 0;      // transparent REFUSED_STREAM retries (no retry policy needed)
  uint64_t try_start_us = 0;
  resilience::Guard pending_guard;  // waiting for a new upstream connection
  resilience::Guard active_guard;   // the request is active upstream (until the stream ends)
  resilience::Guard retry_guard;    // this try is a retry (until it ends)
  char flags_buf[24] = {};          // composed flags ("DI,URX,UF") for the record
  char method[24] = {};
  size_t method_len = 0;
  char request_id[64] = {};
  size_t request_id_len = 0;
  char grpc_status[12] = {};
  size_t grpc_status_len = 0;
  // For RequestRecord (access log): copies bounded by kRecordMax*, reused with the stream.
  std::string log_path, log_authority, log_user_agent;
  uint64_t start_unix_us = 0;

  void reset();
};

// The HTTP/2 state of one downstream connection (Session in mode kH2).
class H2Conn final : public http2::ServerHandler {
 public:
  explicit H2Conn(Session& session);
  ~H2Conn() override;
  // Creates the server session (queues our SETTINGS). Fails only on invalid limits.
  absl::Status init();

  // Feeds the client's bytes, moves bodies both ways, produces output into the
  // session's client buffer. Returns true when anything moved.
  bool step();
  // Per-stream request timeouts. True when one fired (drive the session).
  bool sweep(uint64_t now_ms);
  // A Worker::wakeAt() deadline of one of the streams passed (back-off, fault delay,
  // per-try timeout). True when something changed (drive the session).
  bool onTimer(uint64_t now_ms);
  // The connection is going away: every stream is recorded and its upstream stream reset.
  void closeAll(std::string_view flags);
  // True when the server session has nothing more to do (GOAWAY exchanged, fatal error).
  bool shouldClose() const;
  size_t activeStreams() const { return streams_.size(); }

  // Events of the upstream side of `st` (from H2Upstream).
  void upResponse(H2Stream& st, uint16_t status, absl::Span<const http1::HeaderField> fields,
                  bool end_stream);
  void upData(H2Stream& st, absl::Span<const uint8_t> data, bool end_stream);
  void upTrailers(H2Stream& st, absl::Span<const http1::HeaderField> fields);
  // The upstream stream is gone (`st.up` already cleared). `connect_failed`: it never
  // reached the upstream.
  void upClosed(H2Stream& st, uint32_t code, bool connect_failed);

  // http2::ServerHandler
  void onRequest(int32_t id, const http2::RequestHeaders& req, bool end_stream) override;
  void onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) override;
  void onTrailers(int32_t id, absl::Span<const http1::HeaderField> trailers) override;
  void onStreamClosed(int32_t id, uint32_t error_code) override;

 private:
  H2Stream* find(int32_t id) const;
  bool pump(H2Stream& st);
  // The proxy answers `st` itself (errors, direct responses): gRPC requests get a
  // trailers-only response with the grpc-status for `flags`/`status`.
  void localReply(H2Stream& st, uint16_t status, std::string_view flags, std::string_view body,
                  std::string_view location, std::string_view retry_after = {});
  // Forgets the upstream stream of `st` (RST_STREAM CANCEL when it is still open).
  void detach(H2Stream& st, bool reset);
  void captureGrpcStatus(H2Stream& st, absl::Span<const http1::HeaderField> fields);
  // Starts a try of `st` (the first after route/fault delay, or a retry after its
  // back-off): breaker guards, an upstream stream, the per-try timer.
  void startTry(H2Stream& st);
  // The try in flight ended with `outcome` before anything reached the client (the
  // upstream stream is already forgotten). Returns true when another try was scheduled;
  // false: the caller answers with this outcome.
  bool endTry(H2Stream& st, const resilience::TryOutcome& outcome);
  // Drops the request body held for replays (what the client sent is consume()d).
  void dropBody(H2Stream& st);
  // No more replays: the body bytes already accepted upstream are let go.
  void stopRetaining(H2Stream& st);
  // The worker-clock millisecond at which `ms` from now have surely passed.
  uint64_t afterMs(uint64_t ms) const;
  void setWake(H2Stream& st, H2Stream::Wait wait, uint64_t at_ms);
  void clearWake(H2Stream& st);
  void record(H2Stream& st);
  void scheduleSession();

  Session& s_;
  Worker& w_;
  std::unique_ptr<http2::ServerSession> server_;
  absl::flat_hash_map<int32_t, H2Stream*> streams_;
  std::vector<std::unique_ptr<H2Stream>> all_;
  std::vector<H2Stream*> free_;
  std::vector<H2Stream*> iter_;  // snapshot of streams_ for step()/sweep()
  // Streams with a wake deadline (fault delay, back-off, per-try timeout): onTimer()
  // looks only at these.
  std::vector<H2Stream*> timed_;
  std::vector<H2Stream*> due_;
  std::string scratch_;
  http2::grpc::TrailersOnly trailers_only_;
  bool closing_ = false;
  bool failed_ = false;

  friend class H2Upstream;
};

// One pooled HTTP/2 connection to an upstream endpoint (prior-knowledge h2c), shared by
// every session of its worker. Lives in Worker's h2 pool until closed.
class H2Upstream final : public EventHandler, public http2::ClientHandler {
 public:
  H2Upstream(Worker& worker, int fd, const SocketAddress& addr, bool connecting);
  // Creates the client session (queues the preface and SETTINGS).
  absl::Status init(const http2::Limits& limits);
  void onEvent(uint32_t events) override;
  // Writes what the session has to send (as far as the socket takes it).
  void flush();
  // True when a new stream may be opened here. Until the upstream's SETTINGS arrive, at
  // most `assumed_max_streams` (what this endpoint announced on an earlier connection).
  bool usable(uint32_t assumed_max_streams) const;

  // Opens a stream for `st` (forwarded head `req`). Unavailable when this connection takes
  // no new stream.
  absl::Status open(H2Stream& st, const http2::RequestHeaders& req, bool end_stream);
  // Forgets `st`; RST_STREAM `code` when `reset`.
  void forget(H2Stream& st, bool reset, uint32_t code);

  // http2::ClientHandler
  void onResponse(int32_t id, uint16_t status, absl::Span<const http1::HeaderField> headers,
                  bool end_stream) override;
  void onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) override;
  void onTrailers(int32_t id, absl::Span<const http1::HeaderField> trailers) override;
  void onStreamClosed(int32_t id, uint32_t error_code) override;
  void onGoaway(int32_t last_stream_id) override;
  void onSendReady(int32_t id) override;

  Worker& worker;
  ScopedFd fd;
  SocketAddress addr;
  uint64_t via = 0;  // RouteDecision::via it was opened for
  std::unique_ptr<http2::ClientSession> session;
  absl::flat_hash_map<int32_t, H2Stream*> streams;
  std::string out;
  size_t out_off = 0;
  bool connecting = true;
  bool connected_once = false;
  bool writable = false;
  bool dead = false;
  bool dirty = false;          // in the worker's flush list
  bool heard = false;          // bytes came from the upstream (its SETTINGS come first)
  uint64_t deadline_ms = 0;    // connect deadline
  uint64_t idle_since_ms = 0;  // no stream since (0: streams open)

 private:
  void readInput();
  H2Stream* find(int32_t id) const;
};

}  // namespace meshd::proxy
