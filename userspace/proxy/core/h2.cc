#include "proxy/core/h2.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "proxy/core/session.h"
#include "proxy/http1/chars.h"

namespace meshd::proxy {
namespace {

namespace chars = http1::chars;
namespace grpc = http2::grpc;

constexpr std::string_view kConnectFailure =
    "upstream connect error or disconnect/reset before headers. reset reason: connection "
    "failure";
constexpr std::string_view kConnectionTermination =
    "upstream connect error or disconnect/reset before headers. reset reason: connection "
    "termination";

constexpr std::string_view kOverflow =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

// Transparent retries of one stream refused by upstreams (REFUSED_STREAM: not processed)
// when the retry policy does not retry it (or there is none), before it gets 503 UC.
constexpr uint8_t kMaxRefusedRetries = 3;

using resilience::TryOutcome;

absl::Span<const uint8_t> bytesOf(std::string_view s, size_t off) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()) + off, s.size() - off);
}

// The grpc-status meshd answers with for an error it generates itself: UNAVAILABLE when
// there is no usable upstream, DEADLINE_EXCEEDED on the request timeout, else gRPC's
// HTTP → gRPC mapping of the HTTP status (404 NR → UNIMPLEMENTED).
grpc::Code grpcCodeFor(uint16_t status, std::string_view flags) {
  if (flags == "UT") return grpc::Code::kDeadlineExceeded;
  // Envoy's local rate limit with rate_limited_as_resource_exhausted (HTTP 429 maps to
  // UNAVAILABLE otherwise); 403 RBAC is PERMISSION_DENIED by the HTTP mapping.
  if (flags == "RL") return grpc::Code::kResourceExhausted;
  if (flags == "UF" || flags == "UC" || flags == "UH" || flags == "UO") {
    return grpc::Code::kUnavailable;
  }
  return grpc::codeFromHttpStatus(status);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// HeaderCopy, H2Stream

void HeaderCopy::assign(absl::Span<const http1::HeaderField> in) {
  clear();
  size_t total = 0;
  for (const http1::HeaderField& f : in) total += f.name.size() + f.value.size();
  arena.reserve(total);  // the views below must not move
  for (const http1::HeaderField& f : in) {
    const size_t at = arena.size();
    arena.append(f.name);
    arena.append(f.value);
    const std::string_view a(arena);
    fields.push_back(http1::HeaderField{
        a.substr(at, f.name.size()), a.substr(at + f.name.size(), f.value.size()), f.hop_by_hop});
  }
  present = true;
}

void H2Stream::reset() {
  // The guards first: their counters live in the breaker the decision's pin keeps alive.
  pending_guard.release();
  active_guard.release();
  retry_guard.release();
  conn = nullptr;
  id = 0;
  up = nullptr;
  up_id = 0;
  decision = RouteDecision();
  grpc = request_done = request_sent = response_head = response_end = response_sent = false;
  local = false;
  deadline_ms = start_us = request_bytes = response_bytes = 0;
  status = 0;
  flags = {};
  upstream_addr = SocketAddress();
  req_pending.clear();
  req_off = req_discard = 0;
  req_trailers.clear();
  resp_pending.clear();
  resp_off = 0;
  resp_trailers.clear();
  edited.clear();
  fwd = http2::RequestHeaders();
  wait = Wait::kNone;
  wake_ms = 0;
  timed_index = UINT32_MAX;
  req_acked = 0;
  retain = false;
  pick_pending = false;
  replayable = true;
  delayed = urx = false;
  timeout_ms = 0;
  attempts = 0;
  refused = 0;
  try_start_us = 0;
  method_len = request_id_len = grpc_status_len = 0;
  log_path.clear();
  log_authority.clear();
  log_user_agent.clear();
  start_unix_us = 0;
}

// ---------------------------------------------------------------------------------------
// H2Conn: the downstream side

H2Conn::H2Conn(Session& session) : s_(session), w_(session.w_) {}

H2Conn::~H2Conn() {
  // The server session may report streams while it is torn down: nothing is listening.
  closing_ = true;
  streams_.clear();
  server_.reset();
}

absl::Status H2Conn::init() {
  absl::StatusOr<std::unique_ptr<http2::ServerSession>> s =
      http2::ServerSession::create(*this, w_.options().h2_limits);
  if (!s.ok()) return s.status();
  server_ = std::move(*s);
  scratch_.reserve(64 * 1024);
  return absl::OkStatus();
}

bool H2Conn::shouldClose() const {
  return server_->shouldClose() || (failed_ && !server_->wantsWrite());
}

H2Stream* H2Conn::find(int32_t id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second;
}

void H2Conn::scheduleSession() { w_.schedule(&s_); }

bool H2Conn::step() {
  bool progress = false;
  if (!s_.in_.empty() && !failed_) {
    const std::string_view in = s_.in_.view();
    const absl::Status st = server_->feed(bytesOf(in, 0));
    s_.in_.clear();
    progress = true;
    if (!st.ok()) failed_ = true;  // the GOAWAY (if any) is produced below, then we close
  }
  if (s_.dead) return true;
  // Move bodies (snapshot: streams may close while we produce, never while we pump).
  iter_.clear();
  for (auto& [id, st] : streams_) iter_.push_back(st);
  for (H2Stream* st : iter_) progress |= pump(*st);
  // Output, bounded by the client buffer (a slow client stops the streams' data here, and
  // so, through the flow-control windows, the upstreams).
  while (server_->wantsWrite()) {
    const size_t room = s_.out_.room(w_.outLimit());
    if (room == 0) break;
    scratch_.clear();
    const size_t n = server_->produce(scratch_, room);
    if (n == 0) break;
    s_.out_.append(scratch_);
    progress = true;
  }
  return progress;
}

bool H2Conn::pump(H2Stream& st) {
  bool progress = false;
  // Request direction: client → upstream.
  if (st.wait == H2Stream::Wait::kFaultDelay || st.wait == H2Stream::Wait::kBackoff) {
    // Between tries: the bytes wait (unconsumed, so bounded by the stream window).
  } else if (st.up == nullptr || st.local || (st.request_sent && !st.retain)) {
    if (!st.req_pending.empty()) dropBody(st);
  } else if (!st.request_sent) {
    http2::ClientSession& c = *st.up->session;
    const size_t rest = st.req_pending.size() - st.req_off;
    const bool end_with_data = st.request_done && !st.req_trailers.present;
    if (rest > 0 || end_with_data) {
      absl::StatusOr<size_t> taken =
          c.submitData(st.up_id, bytesOf(st.req_pending, st.req_off), end_with_data);
      if (!taken.ok()) {
        // The upstream stream ended (its close is on its way): drop what the client sends,
        // unless it is kept for a retry.
        if (!st.retain) dropBody(st);
        st.request_sent = true;
      } else {
        if (*taken > 0) {
          st.req_off += *taken;
          if (st.req_off > st.req_acked) {
            // Re-opens the client's window (bytes replayed by a retry were consumed before).
            (void)server_->consume(st.id, st.req_off - st.req_acked);
            st.req_acked = st.req_off;
          }
          if (!st.retain) st.replayable = false;  // accepted bytes are not kept
          progress = true;
        }
        if (st.req_off == st.req_pending.size()) {
          if (!st.retain) {
            st.req_pending.clear();
            st.req_off = st.req_acked = 0;
          }
          if (end_with_data) {
            st.request_sent = true;
            progress = true;
          }
        }
        // Kept for a replay up to the per-request bound (max_buffer_bytes).
        if (st.retain && st.req_off > w_.outLimit()) stopRetaining(st);
        w_.flushLater(st.up);
      }
    }
    if (!st.request_sent && st.request_done && st.req_trailers.present &&
        st.req_off == st.req_pending.size()) {
      (void)c.submitTrailers(st.up_id, st.req_trailers.fields);
      st.request_sent = true;
      progress = true;
      w_.flushLater(st.up);
    }
  }
  if (st.req_discard > 0) {
    (void)server_->consume(st.id, st.req_discard);
    st.req_discard = 0;
    progress = true;
  }
  // Response direction: upstream → client.
  if (st.response_head && !st.response_sent) {
    const size_t rest = st.resp_pending.size() - st.resp_off;
    const bool end_with_data = st.response_end && !st.resp_trailers.present;
    if (rest > 0 || end_with_data) {
      absl::StatusOr<size_t> taken =
          server_->submitData(st.id, bytesOf(st.resp_pending, st.resp_off), end_with_data);
      if (!taken.ok()) {
        st.resp_pending.clear();  // the client's stream is gone; its close is on its way
        st.resp_off = 0;
        st.response_sent = true;
      } else {
        if (*taken > 0) {
          if (st.up != nullptr) {
            (void)st.up->session->consume(st.up_id, *taken);  // re-opens the upstream's window
            w_.flushLater(st.up);
          }
          st.resp_off += *taken;
          progress = true;
        }
        if (st.resp_off == st.resp_pending.size()) {
          st.resp_pending.clear();
          st.resp_off = 0;
          if (end_with_data) {
            st.response_sent = true;
            progress = true;
          }
        }
      }
    }
    if (!st.response_sent && st.response_end && st.resp_trailers.present &&
        st.resp_off == st.resp_pending.size()) {
      (void)server_->submitTrailers(st.id, st.resp_trailers.fields);
      st.response_sent = true;
      progress = true;
    }
  }
  return progress;
}

void H2Conn::onRequest(int32_t id, const http2::RequestHeaders& req, bool end_stream) {
  if (closing_) return;
  s_.head_deadline_ms_ = 0;  // the slowloris deadline ends with the first complete HEADERS
  H2Stream* st;
  if (free_.empty()) {
    all_.push_back(std::make_unique<H2Stream>());
    st = all_.back().get();
  } else {
    st = free_.back();
    free_.pop_back();
  }
  st->conn = this;
  st->id = id;
  streams_[id] = st;
  st->start_us = w_.nowUs();
  st->start_unix_us = w_.unixUs();
  st->request_done = end_stream;
  st->method_len = std::min(req.method.size(), sizeof(st->method));
  std::copy_n(req.method.data(), st->method_len, st->method);

  bool have_id = false;
  std::string_view grpc_timeout;
  for (const http1::HeaderField& f : req.headers) {
    if (f.name == "content-type") {
      st->grpc = grpc::isGrpc(f.value);
    } else if (f.name == "x-request-id" && !have_id) {
      st->request_id_len = std::min(f.value.size(), sizeof(st->request_id));
      std::copy_n(f.value.data(), st->request_id_len, st->request_id);
      have_id = true;
    } else if (f.name == "grpc-timeout") {
      grpc_timeout = f.value;
    } else if (f.name == "user-agent" && st->log_user_agent.empty()) {
      copyBounded(st->log_user_agent, f.value, kRecordMaxUserAgent);
    }
  }
  if (!have_id) {
    w_.newRequestId(st->request_id);
    st->request_id_len = 36;
  }

  RequestInfo info;
  info.orig_dst = s_.orig_dst_;
  info.peer = s_.peer_;
  info.method = req.method;
  info.target = req.method == "CONNECT" ? req.authority : req.path;
  info.authority = req.authority;
  info.headers = req.headers;
  copyBounded(st->log_path, info.target, kRecordMaxPath);
  copyBounded(st->log_authority, req.authority, kRecordMaxAuthority);
  w_.router().route(info, st->decision);
  const RouteDecision& d = st->decision;
  st->pick_pending = d.kind == RouteDecision::Kind::kForward;
  st->delayed = d.fault_delay_ms > 0;
  if (d.kind == RouteDecision::Kind::kDirectResponse) {
    if (st->delayed) {
      setWake(*st, H2Stream::Wait::kFaultDelay, afterMs(d.fault_delay_ms));
    } else {
      localReply(*st, d.status, d.response_flags, d.body, d.location, d.retry_after);
    }
    return;
  }

  // The request timeout: the route's, capped by the client's grpc-timeout (a gRPC
  // client's deadline; an invalid value is ignored, as the upstream will judge it).
  uint64_t timeout = d.request_timeout_ms;
  bool timed = timeout != 0;
  if (st->grpc && !grpc_timeout.empty()) {
    absl::StatusOr<uint64_t> ms = grpc::parseTimeoutMs(grpc_timeout);
    if (ms.ok() && (!timed || *ms < timeout)) {
      timeout = *ms;
      timed = true;
    }
  }
  // It starts when forwarding begins (after a fault delay, as Envoy's router timeout starts
  // after its fault filter).
  st->timeout_ms = timed ? static_cast<uint32_t>(std::clamp<uint64_t>(timeout, 1, UINT32_MAX)) : 0;

  st->upstream_addr = d.upstream;
  applyHeaderEdits(req.headers, d.request_edits, false, st->edited);
  if (!have_id) {
    st->edited.push_back(http1::HeaderField{
        "x-request-id", std::string_view(st->request_id, st->request_id_len), false});
  }
  st->fwd = req;
  st->fwd.headers = absl::MakeConstSpan(st->edited);
  if (!d.path_rewrite.empty() && req.method != "CONNECT") st->fwd.path = d.path_rewrite;
  if (!d.authority_rewrite.empty()) {
    st->fwd.authority = d.authority_rewrite;
  } else if (st->fwd.authority.empty()) {
    st->fwd.authority = s_.orig_dst_text_;
  }
  // Body bytes are kept for replays only when a retry policy may use them.
  st->retain = d.retries != nullptr && d.retries->attempts > 0;
  if (st->delayed) {
    setWake(*st, H2Stream::Wait::kFaultDelay, afterMs(d.fault_delay_ms));
    return;
  }
  st->deadline_ms = st->timeout_ms != 0 ? w_.nowMs() + st->timeout_ms : 0;
  startTry(*st);
}

void H2Conn::startTry(H2Stream& st) {
  resilience::CircuitBreaker* breaker = st.decision.breaker;
  if (breaker != nullptr && !st.active_guard) {
    // Held from the first try until the stream ends (back-offs included).
    st.active_guard = breaker->tryAcquireRequest();
    if (!st.active_guard) {
      localReply(st, resilience::kOverflowHttpStatus, resilience::kOverflowFlag, kOverflow, "");
      return;
    }
  }
  int err = 0;
  H2Upstream* up = w_.acquireH2(st.decision.upstream, st.decision.via, &err);
  if (up != nullptr && up->connecting && breaker != nullptr) {
    // Waiting for a new connection: released once it is established or the try ends.
    st.pending_guard = breaker->tryAcquirePending();
    if (!st.pending_guard) {
      localReply(st, resilience::kOverflowHttpStatus, resilience::kOverflowFlag, kOverflow, "");
      return;
    }
  }
  ++st.attempts;
  st.pick_pending = false;
  st.try_start_us = w_.nowUs();
  st.upstream_addr = st.decision.upstream;
  st.status = 0;
  st.grpc_status_len = 0;
  st.req_off = 0;  // the body (if kept) is sent again from its start
  st.request_sent = false;
  // The end of the request goes with the HEADERS when nothing else will follow.
  const bool end_stream = st.request_done && st.req_pending.empty() && !st.req_trailers.present;
  if (up == nullptr || !up->open(st, st.fwd, end_stream).ok()) {
    if (!endTry(st, TryOutcome::connectFailure())) {
      localReply(st, 503, "UF", kConnectFailure, "");
    }
    return;
  }
  st.request_sent = end_stream;
  const state::RetrySettings* retries = st.decision.retries;
  if (retries != nullptr && retries->per_try_timeout_ms != 0) {
    setWake(st, H2Stream::Wait::kPerTry, afterMs(retries->per_try_timeout_ms));
  }
  scheduleSession();
}

bool H2Conn::endTry(H2Stream& st, const TryOutcome& outcome) {
  clearWake(st);
  st.pending_guard.release();
  st.retry_guard.release();  // this try (if a retry) ended
  w_.router().onTry(st.decision, st.upstream_addr, outcome, w_.nowUs() - st.try_start_us);
  const state::RetrySettings* retries = st.decision.retries;
  if (retries != nullptr) {
    const resilience::RetryPolicy policy(*retries);
    if (st.replayable && policy.shouldRetry(outcome, st.attempts)) {
      resilience::CircuitBreaker* breaker = st.decision.breaker;
      resilience::Guard guard;
      if (breaker != nullptr) guard = breaker->tryAcquireRetry();
      if ((breaker == nullptr || guard) && w_.router().retarget(st.decision, st.upstream_addr)) {
        st.pick_pending = true;
        st.retry_guard = std::move(guard);
        setWake(st, H2Stream::Wait::kBackoff, afterMs(policy.backoffMs(st.attempts, w_.random())));
        return true;
      }
    }
    st.urx = st.attempts > 1 && policy.retriable(outcome);
  }
  if (outcome.kind == TryOutcome::Kind::kRefusedStream && st.replayable &&
      st.refused < kMaxRefusedRetries) {
    // REFUSED_STREAM (over the upstream's MAX_CONCURRENT_STREAMS before its SETTINGS
    // reached us, or cut off by a GOAWAY): the upstream did not process the stream. Open
    // it again (same endpoint, another stream) at once, with or without a retry policy, as
    // long as every body byte is still held.
    ++st.refused;
    st.urx = false;
    setWake(st, H2Stream::Wait::kBackoff, w_.nowMs());
    return true;
  }
  return false;
}

void H2Conn::dropBody(H2Stream& st) {
  st.req_discard += st.req_pending.size() - st.req_acked;
  st.req_pending.clear();
  st.req_off = st.req_acked = 0;
}

void H2Conn::stopRetaining(H2Stream& st) {
  st.retain = false;
  if (st.req_off > 0) {
    st.req_pending.erase(0, st.req_off);
    st.req_acked -= st.req_off;  // req_acked >= req_off
    st.req_off = 0;
    st.replayable = false;
  }
}

uint64_t H2Conn::afterMs(uint64_t ms) const {
  // Rounded up to the worker's millisecond clock, so that a wait is never shorter than
  // asked (nowMs() truncates).
  return (w_.nowUs() + ms * 1000 + 999) / 1000;
}

void H2Conn::setWake(H2Stream& st, H2Stream::Wait wait, uint64_t at_ms) {
  st.wait = wait;
  st.wake_ms = at_ms;
  if (st.timed_index == UINT32_MAX) {
    st.timed_index = static_cast<uint32_t>(timed_.size());
    timed_.push_back(&st);
  }
  w_.wakeAt(&s_, at_ms);
}

void H2Conn::clearWake(H2Stream& st) {
  st.wait = H2Stream::Wait::kNone;
  st.wake_ms = 0;
  if (st.timed_index == UINT32_MAX) return;
  H2Stream* last = timed_.back();
  timed_[st.timed_index] = last;
  last->timed_index = st.timed_index;
  timed_.pop_back();
  st.timed_index = UINT32_MAX;
}

void H2Conn::onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) {
  H2Stream* st = find(id);
  if (st == nullptr) return;
  st->request_bytes += data.size();
  const bool between_tries =
      st->wait == H2Stream::Wait::kFaultDelay || st->wait == H2Stream::Wait::kBackoff;
  if (st->local || (st->request_sent && !st->retain) || (st->up == nullptr && !between_tries)) {
    st->req_discard += data.size();
  } else if (!data.empty()) {
    st->req_pending.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  if (end_stream) st->request_done = true;
}

void H2Conn::onTrailers(int32_t id, absl::Span<const http1::HeaderField> trailers) {
  H2Stream* st = find(id);
  if (st == nullptr) return;
  st->request_done = true;
  if (!st->local && (!st->request_sent || st->retain)) st->req_trailers.assign(trailers);
}

void H2Conn::onStreamClosed(int32_t id, uint32_t error_code) {
  H2Stream* st = find(id);
  if (st == nullptr) return;
  streams_.erase(id);
  clearWake(*st);
  // The client reset the stream (or it completed): the upstream stream goes too.
  if (st->up != nullptr) detach(*st, !(st->response_end && st->request_sent));
  if (error_code != http2::kNoError && !st->response_sent && st->flags.empty()) st->flags = "DC";
  record(*st);
  st->reset();
  free_.push_back(st);
}

void H2Conn::detach(H2Stream& st, bool reset) {
  if (st.up == nullptr) return;
  st.up->forget(st, reset, http2::kCancel);
  st.up = nullptr;
}

void H2Conn::localReply(H2Stream& st, uint16_t status, std::string_view flags,
                        std::string_view body, std::string_view location,
                        std::string_view retry_after) {
  detach(st, true);
  clearWake(st);
  st.pending_guard.release();
  st.retry_guard.release();
  st.local = true;
  st.retain = false;
  st.flags = flags;
  st.deadline_ms = 0;
  dropBody(st);
  st.resp_pending.clear();
  st.resp_off = 0;
  if (st.grpc) {
    // gRPC clients read errors from grpc-status: a trailers-only response (HTTP 200).
    const grpc::Code code = grpcCodeFor(status, flags);
    trailers_only_.build(code, body);
    (void)server_->submitResponse(st.id, grpc::TrailersOnly::kHttpStatus, trailers_only_.fields(),
                                  true);
    st.status = grpc::TrailersOnly::kHttpStatus;
    auto [end, ec] = std::to_chars(st.grpc_status, st.grpc_status + sizeof(st.grpc_status),
                                   static_cast<uint32_t>(code));
    st.grpc_status_len = static_cast<size_t>(end - st.grpc_status);
  } else {
    http1::HeaderField f[4];
    size_t n = 0;
    f[n++] = {"content-type", "text/plain", false};
    if (!flags.empty()) f[n++] = {"x-meshd-response-flags", flags, false};
    if (!location.empty()) f[n++] = {"location", location, false};
    if (!retry_after.empty()) f[n++] = {"retry-after", retry_after, false};
    (void)server_->submitResponse(st.id, status, absl::MakeConstSpan(f, n), body.empty());
    if (!body.empty()) {
      (void)server_->submitData(st.id, bytesOf(body, 0), true);
      st.response_bytes += body.size();
    }
    st.status = status;
  }
  st.response_head = st.response_end = st.response_sent = true;
  scheduleSession();
}

void H2Conn::captureGrpcStatus(H2Stream& st, absl::Span<const http1::HeaderField> fields) {
  for (const http1::HeaderField& f : fields) {
    if (f.name == "grpc-status") {
      st.grpc_status_len = std::min(f.value.size(), sizeof(st.grpc_status));
      std::copy_n(f.value.data(), st.grpc_status_len, st.grpc_status);
      return;
    }
  }
}

void H2Conn::upResponse(H2Stream& st, uint16_t status, absl::Span<const http1::HeaderField> fields,
                        bool end_stream) {
  if (st.local || st.response_head) return;
  st.status = status;
  captureGrpcStatus(st, fields);  // trailers-only responses carry it in the head
  int32_t grpc_code = -1;
  if (st.grpc && end_stream && st.grpc_status_len > 0) {
    uint32_t v = 0;
    const char* end = st.grpc_status + st.grpc_status_len;
    auto [p, ec] = std::from_chars(st.grpc_status, end, v);
    if (ec == std::errc() && p == end && v <= INT32_MAX) grpc_code = static_cast<int32_t>(v);
  }
  if (endTry(st, TryOutcome::response(status, grpc_code, st.replayable))) {
    // Retried: this response is discarded (RST_STREAM CANCEL; its body is never read).
    detach(st, true);
    return;
  }
  st.deadline_ms = 0;
  if (st.retain) stopRetaining(st);  // no more tries: the kept body can go
  // The request head was copied by nghttp2 when it was submitted: `edited` is free again.
  applyHeaderEdits(fields, st.decision.response_edits, false, st.edited);
  if (!server_->submitResponse(st.id, status, st.edited, end_stream).ok()) {
    detach(st, true);  // the client's stream is gone
    st.local = true;
    return;
  }
  st.response_head = true;
  if (end_stream) st.response_end = st.response_sent = true;
  scheduleSession();
}

void H2Conn::upData(H2Stream& st, absl::Span<const uint8_t> data, bool end_stream) {
  if (st.local) return;
  if (!data.empty()) {
    st.resp_pending.append(reinterpret_cast<const char*>(data.data()), data.size());
    st.response_bytes += data.size();
  }
  if (end_stream) st.response_end = true;
  scheduleSession();
}

void H2Conn::upTrailers(H2Stream& st, absl::Span<const http1::HeaderField> fields) {
  if (st.local) return;
  captureGrpcStatus(st, fields);
  st.resp_trailers.assign(fields);
  st.response_end = true;
  scheduleSession();
}

void H2Conn::upClosed(H2Stream& st, uint32_t code, bool connect_failed) {
  if (st.local) return;
  if (!st.response_head) {
    const TryOutcome outcome = connect_failed                  ? TryOutcome::connectFailure()
                               : code == http2::kRefusedStream ? TryOutcome::refusedStream()
                                                               : TryOutcome::reset(st.replayable);
    if (endTry(st, outcome)) {
      scheduleSession();
      return;
    }
    // Nothing reached the client yet: answer (gRPC: UNAVAILABLE).
    if (connect_failed) {
      localReply(st, 503, "UF", kConnectFailure, "");
    } else {
      localReply(st, 503, "UC", kConnectionTermination, "");
    }
    return;
  }
  if (!st.response_end) {
    // The upstream broke mid-response: the client's stream is reset (never a second head).
    st.flags = "UC";
    st.local = true;
    st.resp_pending.clear();
    st.resp_off = 0;
    st.response_sent = true;
    (void)server_->resetStream(st.id, code != http2::kNoError ? code : http2::kInternalError);
  }
  scheduleSession();
}

bool H2Conn::sweep(uint64_t now) {
  bool fired = false;
  iter_.clear();
  for (auto& [id, st] : streams_) iter_.push_back(st);
  for (H2Stream* st : iter_) {
    if (st->deadline_ms != 0 && !st->response_head && now >= st->deadline_ms) {
      localReply(*st, 504, "UT", "upstream request timeout", "");
      fired = true;
    }
  }
  return fired;
}

bool H2Conn::onTimer(uint64_t now_ms) {
  if (closing_ || timed_.empty()) return false;
  due_.clear();
  for (H2Stream* st : timed_) {
    if (st->wake_ms <= now_ms) due_.push_back(st);
  }
  // Handling one stream never frees another (streams close only in step()/closeAll()).
  for (H2Stream* st : due_) {
    const H2Stream::Wait wait = st->wait;
    clearWake(*st);
    if (st->local) continue;
    switch (wait) {
      case H2Stream::Wait::kFaultDelay: {
        const RouteDecision& d = st->decision;
        if (d.kind == RouteDecision::Kind::kDirectResponse) {
          localReply(*st, d.status, d.response_flags, d.body, d.location,
                     d.retry_after);  // the abort
        } else {
          st->deadline_ms = st->timeout_ms != 0 ? now_ms + st->timeout_ms : 0;
          startTry(*st);
        }
        break;
      }
      case H2Stream::Wait::kBackoff:
        startTry(*st);
        break;
      case H2Stream::Wait::kPerTry:
        if (st->up == nullptr || st->response_head) break;
        detach(*st, true);  // RST_STREAM CANCEL: the try is abandoned
        if (!endTry(*st, TryOutcome::perTryTimeout(st->replayable))) {
          localReply(*st, 504, "UT", "upstream request timeout", "");
        }
        break;
      case H2Stream::Wait::kNone:
        break;
    }
  }
  if (due_.empty()) return false;
  scheduleSession();
  return true;
}

void H2Conn::closeAll(std::string_view flags) {
  if (closing_) return;
  closing_ = true;
  for (auto& [id, st] : streams_) {
    detach(*st, true);
    if (!flags.empty() && !st->response_sent && st->flags.empty()) st->flags = flags;
    record(*st);
    st->reset();
    free_.push_back(st);
  }
  streams_.clear();
  timed_.clear();
}

void H2Conn::record(H2Stream& st) {
  if (st.pick_pending) {  // picked, never tried: the router gets the pick back
    st.pick_pending = false;
    w_.router().onCancel(st.decision, st.decision.upstream);
  }
  Observer* o = w_.observer();
  if (o == nullptr) return;
  RequestRecord r;
  r.cluster = st.decision.cluster;
  r.response_code = st.status;
  r.response_flags = st.flags;
  if (st.delayed || st.urx) {
    // Envoy's comma-separated form: "DI,FI", "URX,UF", "DI,URX,UC"...
    size_t n = 0;
    auto put = [&](std::string_view f) {
      if (f.empty()) return;
      if (n != 0 && n < sizeof(st.flags_buf)) st.flags_buf[n++] = ',';
      const size_t k = std::min(f.size(), sizeof(st.flags_buf) - n);
      std::copy_n(f.data(), k, st.flags_buf + n);
      n += k;
    };
    if (st.delayed) put("DI");
    if (st.urx) put("URX");
    put(st.flags);
    r.response_flags = std::string_view(st.flags_buf, n);
  }
  r.attempts = st.attempts;
  r.method = std::string_view(st.method, st.method_len);
  r.duration_us = w_.nowUs() - st.start_us;
  r.request_bytes = st.request_bytes;
  r.response_bytes = st.response_bytes;
  r.peer = s_.peer_;
  r.orig_dst = s_.orig_dst_;
  r.upstream = st.upstream_addr;
  r.protocol = st.grpc ? "grpc" : "http/2";
  r.request_id = std::string_view(st.request_id, st.request_id_len);
  r.grpc_status = std::string_view(st.grpc_status, st.grpc_status_len);
  r.path = st.log_path;
  r.authority = st.log_authority;
  r.user_agent = st.log_user_agent;
  r.start_unix_us = st.start_unix_us;
  o->onRequest(r);
}

// ---------------------------------------------------------------------------------------
// H2Upstream: one pooled upstream connection

H2Upstream::H2Upstream(Worker& w, int fd_in, const SocketAddress& a, bool is_connecting)
    : worker(w), fd(fd_in), addr(a) {
  connecting = is_connecting;
  connected_once = !is_connecting;
  writable = !is_connecting;
}

absl::Status H2Upstream::init(const http2::Limits& limits) {
  absl::StatusOr<std::unique_ptr<http2::ClientSession>> s =
      http2::ClientSession::create(*this, limits);
  if (!s.ok()) return s.status();
  session = std::move(*s);
  out.reserve(64 * 1024);
  return absl::OkStatus();
}

bool H2Upstream::usable(uint32_t assumed_max_streams) const {
  return !dead && session->canOpenStream() && (heard || streams.size() < assumed_max_streams);
}

H2Stream* H2Upstream::find(int32_t id) const {
  auto it = streams.find(id);
  return it == streams.end() ? nullptr : it->second;
}

absl::Status H2Upstream::open(H2Stream& st, const http2::RequestHeaders& req, bool end_stream) {
  absl::StatusOr<int32_t> id = session->submitRequest(req, end_stream);
  if (!id.ok()) return id.status();
  st.up = this;
  st.up_id = *id;
  streams[*id] = &st;
  idle_since_ms = 0;
  worker.flushLater(this);
  return absl::OkStatus();
}

void H2Upstream::forget(H2Stream& st, bool reset, uint32_t code) {
  streams.erase(st.up_id);
  if (reset && !dead) {
    (void)session->resetStream(st.up_id, code);
    worker.flushLater(this);
  }
  if (streams.empty()) idle_since_ms = worker.nowMs();
}

void H2Upstream::onEvent(uint32_t events) {
  if (dead) return;
  if (connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    connecting = false;
    if (err != 0 || (events & EPOLLERR)) {
      worker.destroy(this, http2::kRefusedStream, /*connect_failed=*/true);
      return;
    }
    connected_once = true;
    // The streams waiting for this connection are no longer pending (circuit breakers).
    for (auto& [id, st] : streams) st->pending_guard.release();
  }
  if (events & EPOLLOUT) writable = true;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    readInput();
    if (dead) return;
  }
  flush();
}

void H2Upstream::readInput() {
  // Unbounded reads are safe here: DATA is bounded by the windows we re-open only as the
  // clients take the bytes, and nghttp2 bounds control frames (floods are errors).
  uint8_t buf[16384];
  while (true) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n > 0) {
      const absl::Status st = session->feed(absl::MakeConstSpan(buf, static_cast<size_t>(n)));
      if (dead) return;
      if (!heard) {
        heard = true;
        worker.learnMaxStreams(addr, session->peerMaxConcurrentStreams());
      }
      if (!st.ok()) {
        flush();  // the GOAWAY, best effort
        const uint32_t code = session->connectionErrorCode();
        worker.destroy(this, code != 0 ? code : http2::kProtocolError, false);
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // EOF or a socket error: every stream still open was cut off.
    worker.destroy(this, http2::kInternalError, false);
    return;
  }
}

void H2Upstream::flush() {
  if (dead || connecting) return;
  while (true) {
    if (out_off == out.size()) {
      out.clear();
      out_off = 0;
      if (!session->wantsWrite()) break;
      session->produce(out, 64 * 1024);
      if (out.empty()) break;
    }
    if (!writable) break;
    const ssize_t n = ::send(fd.get(), out.data() + out_off, out.size() - out_off, MSG_NOSIGNAL);
    if (n > 0) {
      out_off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      writable = false;
      break;
    }
    worker.destroy(this, http2::kInternalError, false);
    return;
  }
  const bool drained = out_off == out.size();
  if (drained && (session->shouldClose() || (session->goawayReceived() && streams.empty()))) {
    worker.destroy(this, http2::kRefusedStream, false);
  }
}

void H2Upstream::onResponse(int32_t id, uint16_t status,
                            absl::Span<const http1::HeaderField> headers, bool end_stream) {
  if (H2Stream* st = find(id)) st->conn->upResponse(*st, status, headers, end_stream);
}

void H2Upstream::onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) {
  // Bytes of a stream we forgot are never consumed: nghttp2 returns them to the
  // connection window when that stream closes.
  if (H2Stream* st = find(id)) st->conn->upData(*st, data, end_stream);
}

void H2Upstream::onTrailers(int32_t id, absl::Span<const http1::HeaderField> trailers) {
  if (H2Stream* st = find(id)) st->conn->upTrailers(*st, trailers);
}

void H2Upstream::onStreamClosed(int32_t id, uint32_t error_code) {
  H2Stream* st = find(id);
  if (st == nullptr) return;
  streams.erase(id);
  if (streams.empty()) idle_since_ms = worker.nowMs();
  st->up = nullptr;
  st->conn->upClosed(*st, error_code, false);
}

void H2Upstream::onGoaway(int32_t last_stream_id) {
  // canOpenStream() is false from now on: new streams go to another connection. Streams
  // above last_stream_id close with REFUSED_STREAM: retried (H2Conn::endTry).
  (void)last_stream_id;
}

void H2Upstream::onSendReady(int32_t id) {
  if (H2Stream* st = find(id)) worker.schedule(&st->conn->s_);
}

}  // namespace meshd::proxy
