// Internal to meshd_proxy_core: one accepted downstream connection and its state machine.
//
//   accept ─► kDetect ──(upstream spoke first, or client bytes are not HTTP/1)──► kRaw
//               │                                                   (opaque TCP relay)
//               ├──(the HTTP/2 client preface)──► kH2: streams multiplexed over pooled
//               │        h2c upstream connections (h2.h)
//               └──(client bytes start an HTTP/1 request line)──► kHttp
//                        exchange: head ─► route ─► forward head + body ─► response
//                        (101 / 2xx to CONNECT) ──► kRaw (tunnel)
//
// All work happens in drive(): read what each side has (bounded by the buffer limits),
// advance the state machine, write what is queued; repeated while anything moves.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/net.h"
#include "common/scoped_fd.h"
#include "proxy/core/buffer.h"
#include "proxy/core/proxy.h"
#include "proxy/core/worker.h"
#include "proxy/http1/chunked_decoder.h"
#include "proxy/http1/head_parser.h"
#include "proxy/http1/head_writer.h"
#include "proxy/resilience/breaker.h"
#include "proxy/resilience/retry.h"

namespace meshd::proxy {

// What the first bytes of a connection are (see docs/design/0003, "Protocol detection").
enum class Detected : uint8_t { kNeedMore, kHttp1, kHttp2, kOpaque };
Detected detectProtocol(std::string_view first_bytes);

// A route's header edits applied to `in` (into `out`, cleared first): set/remove replace
// every field of that name, add appends; edits of framing and hop-by-hop fields are
// ignored (HeaderEdit). `drop_expect` leaves out Expect (answered by the proxy).
void applyHeaderEdits(absl::Span<const http1::HeaderField> in, absl::Span<const HeaderEdit> edits,
                      bool drop_expect, std::vector<http1::HeaderField>& out);

// True when `upstream_bytes` are (the start of) an HTTP/2 server's SETTINGS frame: an
// h2c upstream that speaks first is not taken for a server-first protocol.
bool looksLikeH2ServerPreface(std::string_view upstream_bytes);

// Copies `value` cut at `max` bytes into `out`, reusing its capacity (RequestRecord's
// strings: no allocation once a connection's buffers have grown to their bound).
inline void copyBounded(std::string& out, std::string_view value, size_t max) {
  out.assign(value.data(), std::min(value.size(), max));
}

class H2Conn;

class Session final : public EventHandler {
 public:
  Session(Worker& worker, int fd, const SocketAddress& peer, const SocketAddress& orig_dst,
          std::string_view cluster, const SocketAddress& upstream, uint64_t via);
  ~Session();

  // Starts the pre-connect to the connection's upstream (Router::routeConnection).
  void start();
  void onEvent(uint32_t events) override;
  void drive();
  // Timers (called about every 50 ms).
  void sweep(uint64_t now_ms);
  // A Worker::wakeAt() deadline passed.
  void onTimer(uint64_t now_ms);
  // Closes everything at once (worker shutdown).
  void abort();

  bool dead = false;
  uint32_t timers = 0;  // Worker::wakeAt() entries pending for this session
  bool queued = false;
  size_t index = 0;  // in Worker::sessions_

 private:
  friend class H2Conn;
  enum class Mode : uint8_t { kDetect, kHttp, kRaw, kH2 };
  enum class Body : uint8_t { kNone, kLength, kChunked, kUntilClose };

  // The HTTP/1.1 state: allocated when the connection turns out to be HTTP.
  struct Http {
    explicit Http(const http1::Limits& limits)
        : request(limits), response(limits), request_chunks(limits), response_chunks(limits) {
      response_chunks.setErrorStatus(502, 502);
    }
    http1::RequestParser request;
    http1::ResponseParser response;
    http1::ChunkedDecoder request_chunks;
    http1::ChunkedDecoder response_chunks;
    std::vector<http1::HeaderField> edited;  // request or response fields after edits
    std::string scratch;                     // heads and chunk lines are written here first
    // The request as sent upstream (head, then body bytes as written), kept for a retry
    // while it fits in Session::replayLimit(); only when the route has retries or a delay.
    std::string replay;
    std::string flags;  // combined response flags ("UF,URX", "DI,FI"): Session::withFlags
  };

  bool readClient();
  bool readUpstream();
  bool flushClient();
  bool flushUpstream();
  bool step();
  bool stepDetect();
  bool stepRaw();
  bool stepHttp();
  void becomeHttp();
  void becomeRaw();
  void becomeH2();
  bool stepH2();
  // A wakeAt() deadline of the HTTP/1.1 exchange; true when something changed (drive).
  bool httpTimer(uint64_t now_ms);
  bool beginExchange();
  // Resilience of the exchange (docs/design/0003-l7-proxy.md, "Resilience in the core:
  // HTTP/1.1"). A new try: breaker guards, an upstream connection, the request (replayed
  // from http_->replay after the first). false when it was answered instead (UO, UF).
  bool startTry();
  // The current try ended before anything of its response reached the client: onTry, then
  // the retry decision. true = a new try was started or is waiting for its back-off (the
  // caller stops); false = the caller answers the outcome as without retries.
  bool tryEnded(const resilience::TryOutcome& outcome);
  // Starts the per-try timeout of the try in flight (when the whole request was passed on).
  void armPerTryTimer();
  // Tells the router how the current try ended, without a retry (timeouts of the exchange).
  void abandonTry(const resilience::TryOutcome& outcome);
  // Whether a reset of a reused pooled connection before any response byte is re-sent at
  // once on a new connection (the server closed it while idle); see the design doc.
  bool resendOnFreshConnection();
  // Body bytes just written upstream: kept for a replay while within replayLimit().
  void keepForReplay(std::string_view bytes);
  size_t replayLimit() const { return w_.outLimit(); }
  // `base` plus DI/URX of this exchange, in Envoy's order; `base` itself when neither.
  std::string_view withFlags(std::string_view base);
  void releaseGuards();
  // Worker::wakeAt() for the HTTP/1.1 exchange's deadlines, deduplicated (timer_at_).
  void armTimer(uint64_t at_ms);
  // The worker-clock millisecond at or after which `ms` from now have passed (rounded up:
  // a delay or timeout never ends early because nowMs() truncates the µs clock).
  uint64_t deadlineAfter(uint64_t ms) const { return (w_.nowUs() + ms * 1000 + 999) / 1000; }
  void resetExchange();  // fields of a new exchange; exchange_ = true
  bool pumpRequestBody();
  bool pumpResponse();
  bool onResponseHead();
  // Ends the exchange: records it, returns or closes the upstream, readies the next one.
  void endExchange(bool keep_client);
  // Answers from the proxy itself (errors, direct responses); ends the exchange.
  void localReply(uint16_t status, std::string_view flags, std::string_view body,
                  std::string_view location, bool keep_client, std::string_view retry_after = {});
  // The upstream broke: answer `status` with `flags` if no response head was sent yet,
  // else close the client (never a second response).
  void upstreamFailed(uint16_t status, std::string_view flags, std::string_view body);
  void record(std::string_view protocol);
  void closeSoon();  // after what is queued for the client is written
  // Router::onCancel() for a pick no try carried (pick_pending_), before decision_ goes.
  void cancelPick();
  void close();
  void dropUpstream();
  void applyEdits(absl::Span<const http1::HeaderField> in, absl::Span<const HeaderEdit> edits,
                  bool drop_expect);

  Worker& w_;
  ScopedFd fd_;
  SocketAddress peer_, orig_dst_, conn_upstream_;
  uint64_t conn_via_ = 0;      // Router::routeConnection's via for conn_upstream_
  std::string cluster_;        // Router::routeConnection's name, for opaque records
  std::string orig_dst_text_;  // Host for HTTP/1.0 requests without one
  Buffer in_;                  // client bytes not yet passed on
  Buffer out_;                 // bytes for the client not yet written
  UpstreamConn* up_ = nullptr;
  std::unique_ptr<Http> http_;
  std::unique_ptr<H2Conn> h2_;
  Mode mode_ = Mode::kDetect;

  bool readable_ = true;
  bool writable_ = true;
  bool eof_ = false;
  bool error_ = false;
  bool write_shut_ = false;
  bool closing_ = false;    // write what is queued, then close
  bool lingering_ = false;  // write side shut; draining the client's bytes before close
  uint64_t linger_deadline_ms_ = 0;
  uint64_t linger_drained_ = 0;
  uint64_t last_activity_ms_ = 0;
  uint64_t head_deadline_ms_ = 0;   // request-headers timeout (0 = not running)
  uint64_t h2_server_wait_ms_ = 0;  // detection: the upstream sent SETTINGS; client decides

  // The current exchange (HTTP) or relay (opaque, tunnel).
  bool exchange_ = false;
  bool tunnel_ = false;
  bool recorded_ = false;
  uint64_t start_us_ = 0;
  // decision_.upstream was picked (route() or retarget()) and no try carried it yet: given
  // back with Router::onCancel() if the exchange ends first.
  bool pick_pending_ = false;
  uint64_t request_deadline_ms_ = 0;
  uint64_t request_bytes_ = 0;
  uint64_t response_bytes_ = 0;
  uint16_t status_ = 0;
  std::string_view flags_;
  RouteDecision decision_;
  SocketAddress upstream_addr_;
  bool head_request_ = false;
  bool client_http10_ = false;
  bool client_keep_alive_ = false;
  bool request_done_ = false;
  Body request_body_ = Body::kNone;
  uint64_t request_remaining_ = 0;
  bool response_head_sent_ = false;
  bool response_done_ = false;
  Body response_body_ = Body::kNone;
  bool response_rechunk_ = false;  // re-chunk the decoded body (false: HTTP/1.0 client)
  uint64_t response_remaining_ = 0;
  bool upstream_reused_ = false;  // the try is on a pooled connection that carried requests
  // Resilience: tries, timers and breaker guards of the exchange.
  resilience::Guard pending_guard_;  // waiting for a new upstream connection
  resilience::Guard active_guard_;   // from the first try until the exchange ends
  resilience::Guard retry_guard_;    // from a retry decision until that try ends
  uint32_t attempts_ = 0;            // tries started (RequestRecord::attempts)
  uint64_t try_start_us_ = 0;
  uint64_t try_deadline_ms_ = 0;  // per-try timeout of the try in flight (0 = none)
  uint64_t wait_until_ms_ = 0;    // fault delay or back-off before the next try (0 = none)
  bool try_live_ = false;         // a try is in flight (onTry not yet called for it)
  bool keep_replay_ = false;      // http_->replay holds the request (retries or a delay)
  bool replayable_ = true;        // the whole request sent so far is in http_->replay
  bool delayed_ = false;          // a fault delay was applied (flag DI)
  bool retried_ = false;          // a retry was made
  bool urx_ = false;              // retried, and the last outcome was still retriable (URX)
  bool resent_ = false;           // the reused-connection resend was used
  uint64_t timer_at_ = 0;         // the earliest wakeAt() entry known pending (0 = none)
  http1::RequestContext response_context_;
  char method_[24] = {};
  size_t method_len_ = 0;
  char request_id_[64] = {};
  size_t request_id_len_ = 0;
  // For RequestRecord (access log): copies bounded by kRecordMax*, reused across requests.
  std::string log_path_, log_authority_, log_user_agent_;
  uint64_t start_unix_us_ = 0;
};

}  // namespace meshd::proxy
