#include "proxy/core/session.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>

#include "proxy/core/h2.h"
#include "proxy/http1/chars.h"
#include "proxy/http2/types.h"

namespace meshd::proxy {
namespace {

namespace chars = http1::chars;
using http1::BodyKind;
using http1::ChunkedDecoder;
using http1::ParseStatus;

// How long a connection that was told "Connection: close" may keep sending before it is
// closed (its unread bytes would otherwise turn close() into a RST that can destroy the
// response in flight: the "lingering close" of nginx and Apache).
constexpr uint64_t kLingerMs = 2000;
constexpr uint64_t kMaxLingerBytes = 1 << 20;

// Room kept free in an upstream buffer for a chunk-size line and CRLF.
constexpr size_t kChunkOverhead = 32;

constexpr std::string_view kMethods[] = {"GET ",   "HEAD ",    "POST ",    "PUT ",  "DELETE ",
                                         "PATCH ", "OPTIONS ", "CONNECT ", "TRACE "};

std::string_view reasonPhrase(uint16_t status) {
  switch (status) {
    case 200:
      return "OK";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 417:
      return "Expectation Failed";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

void appendNumber(std::string* out, uint64_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), n);
  out->append(buf, end);
}

// Fields a route's header edits may not touch: the proxy writes framing and hop-by-hop
// fields itself (an edit adding Transfer-Encoding would make upstream framing differ).
bool protectedField(std::string_view name) {
  return chars::equalsLower(name, "host") || chars::equalsLower(name, "content-length") ||
         chars::equalsLower(name, "transfer-encoding") || chars::equalsLower(name, "connection") ||
         chars::equalsLower(name, "upgrade") || chars::equalsLower(name, "te") ||
         chars::equalsLower(name, "keep-alive") || chars::equalsLower(name, "proxy-connection");
}

// The origin-form (path and query) of an absolute-form target, for the router:
// "http://a/b?c" -> "/b?c", "http://a" -> "/". ("http://a?c" gives "?c": the writer adds
// the "/" when it forwards.)
std::string_view originForm(std::string_view target) {
  const size_t scheme = target.find("://");
  if (scheme == std::string_view::npos) return target;
  const size_t path = target.find_first_of("/?", scheme + 3);
  if (path == std::string_view::npos) return "/";
  return target.substr(path);
}

}  // namespace

bool looksLikeH2ServerPreface(std::string_view b) {
  // A SETTINGS frame header (RFC 9113 §4.1, §6.5): 24-bit length (a multiple of 6),
  // type 0x4, flags 0 (not an ACK), stream 0; judged on the bytes that arrived so far.
  static constexpr uint8_t kHeader[9] = {0, 0, 0, 0x04, 0, 0, 0, 0, 0};
  if (!b.empty() && b[0] != 0) return false;  // the length is at most 16384
  for (size_t i = 3; i < b.size() && i < 9; ++i) {
    if (static_cast<uint8_t>(b[i]) != kHeader[i]) return false;
  }
  if (b.size() >= 3) {
    const uint32_t len = (static_cast<uint32_t>(static_cast<uint8_t>(b[0])) << 16) |
                         (static_cast<uint32_t>(static_cast<uint8_t>(b[1])) << 8) |
                         static_cast<uint8_t>(b[2]);
    if (len % 6 != 0 || len > 16384) return false;
  }
  return true;
}

Detected detectProtocol(std::string_view b) {
  // The HTTP/2 client preface (prior knowledge) starts at the first byte. A partial one
  // waits for more (bounded by the request-headers timeout); "PRI " followed by anything
  // else is relayed opaquely, as any other unknown method could not be HTTP/1.1 either.
  if (!b.empty() && b[0] == 'P') {
    switch (http2::matchPreface(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(b.data()), b.size()))) {
      case http2::PrefaceMatch::kComplete:
        return Detected::kHttp2;
      case http2::PrefaceMatch::kPartial:
        return Detected::kNeedMore;
      case http2::PrefaceMatch::kMismatch:
        break;
    }
  }
  // Leading CRLFs: the parser tolerates one (RFC 9112 §2.2) and answers 400 to more; both
  // are HTTP's to judge, so they are skipped here.
  while (!b.empty() && b[0] == '\r') {
    if (b.size() < 2) return Detected::kNeedMore;
    if (b[1] != '\n') return Detected::kOpaque;
    b.remove_prefix(2);
  }
  if (b.empty()) return Detected::kNeedMore;
  // The reserved method PRI that is not the HTTP/2 preface: relay it opaquely.
  constexpr std::string_view kPri = "PRI ";
  if (b.substr(0, kPri.size()) == kPri.substr(0, std::min(b.size(), kPri.size()))) {
    return b.size() >= kPri.size() ? Detected::kOpaque : Detected::kNeedMore;
  }
  // A registered method and SP: HTTP, whatever follows (the parser judges the rest, so
  // "GET /\r\n" (HTTP/0.9) gets its 400 instead of being relayed).
  bool prefix_of_method = false;
  for (std::string_view m : kMethods) {
    if (b.size() >= m.size() && b.substr(0, m.size()) == m) return Detected::kHttp1;
    if (b.size() < m.size() && m.substr(0, b.size()) == b) prefix_of_method = true;
  }
  // Otherwise the first line decides: a request-line ends in " HTTP/d.d". Control bytes
  // (other than CR, HTAB) or non-ASCII before the first LF mean binary: opaque at once,
  // so a client-first binary protocol (TLS, ...) is never held.
  constexpr size_t kMaxDetectLine = 8192;
  for (size_t i = 0; i < b.size() && i < kMaxDetectLine; ++i) {
    const auto c = static_cast<unsigned char>(b[i]);
    if (c == '\n') {
      std::string_view line = b.substr(0, i);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.size() < 9) return Detected::kOpaque;
      std::string_view v = line.substr(line.size() - 9);
      const bool http = v.substr(0, 6) == " HTTP/" && v[6] >= '0' && v[6] <= '9' && v[7] == '.' &&
                        v[8] >= '0' && v[8] <= '9';
      return http ? Detected::kHttp1 : Detected::kOpaque;
    }
    if ((c < 0x20 && c != '\r' && c != '\t') || c >= 0x7f) {
      return prefix_of_method ? Detected::kNeedMore : Detected::kOpaque;
    }
  }
  if (b.size() >= kMaxDetectLine) return Detected::kOpaque;
  // No line end yet. Only a prefix of a registered method may wait for more: anything else
  // (a client-first protocol that sends a few bytes and waits for the answer, e.g. a
  // one-byte ping) is relayed at once rather than held until the request-headers timeout.
  // An unknown-method request whose line arrives split is relayed opaquely too (it still
  // reaches the Service, only without per-request routing).
  return prefix_of_method ? Detected::kNeedMore : Detected::kOpaque;
}

Session::Session(Worker& worker, int fd, const SocketAddress& peer, const SocketAddress& orig_dst,
                 std::string_view cluster, const SocketAddress& upstream, uint64_t via)
    : w_(worker),
      fd_(fd),
      peer_(peer),
      orig_dst_(orig_dst),
      conn_upstream_(upstream),
      conn_via_(via),
      cluster_(cluster),
      in_(worker.inLimit()),
      out_(worker.outLimit()) {
  last_activity_ms_ = w_.nowMs();
}

Session::~Session() = default;

void Session::start() {
  int err = 0;
  up_ = w_.connect(conn_upstream_, conn_via_, &err);
  if (up_ != nullptr) up_->owner = this;
  // A failed pre-connect is not fatal yet: an HTTP client is routed per request (and gets
  // 503 UF if that fails too); an opaque one is closed when it is detected.
}

void Session::onEvent(uint32_t events) {
  if (dead) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable_ = true;
  if (events & EPOLLOUT) writable_ = true;
  drive();
}

void Session::drive() {
  if (dead) return;
  for (int round = 0; round < 16; ++round) {
    bool progress = readClient();
    progress |= readUpstream();
    // Advance the state machine as far as it goes before writing, so a response head
    // and its body leave in one send.
    progress |= step();
    if (dead) return;
    progress |= flushUpstream();
    progress |= flushClient();
    if (error_ && !exchange_) {
      close();
      return;
    }
    if (closing_ && out_.empty() && !lingering_) {
      // Shut our side, then drain what the client still sends until it closes (or the
      // linger deadline passes).
      ::shutdown(fd_.get(), SHUT_WR);
      lingering_ = true;
      linger_deadline_ms_ = w_.nowMs() + kLingerMs;
      in_.clear();
      progress = true;
    }
    if (lingering_ && (eof_ || error_)) {
      close();
      return;
    }
    if (!progress) return;
  }
  w_.schedule(this);  // let other connections run; continue after this batch
}

bool Session::readClient() {
  if (!readable_ || eof_ || error_) return false;
  bool got = false;
  while (true) {
    if (lingering_) {
      // Draining before close: bounded, so a client that keeps sending cannot hold the
      // worker or the connection.
      linger_drained_ += in_.size();
      in_.clear();
      if (linger_drained_ > kMaxLingerBytes) {
        error_ = true;
        return true;
      }
    }
    const size_t room = in_.room(w_.inLimit());
    if (room == 0) return got;  // backpressure: readable_ stays set, resumed on consume
    const ssize_t n = in_.readFrom(fd_.get(), room);
    if (n > 0) {
      got = true;
      last_activity_ms_ = w_.nowMs();
      if (mode_ != Mode::kRaw && mode_ != Mode::kH2 && !exchange_ && head_deadline_ms_ == 0) {
        head_deadline_ms_ = w_.nowMs() + w_.options().request_headers_timeout_ms;
      }
      // No short-read shortcut on this side: a client socket spliced by sockmap can
      // hold bytes in two queues (the psock's and TCP's, e.g. bytes that arrived before
      // the splice), and one read() returns from one of them only.
      continue;
    }
    readable_ = false;
    if (n == 0) {
      eof_ = true;
      return true;
    }
    if (errno == EINTR) {
      readable_ = true;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return got;
    error_ = true;
    return true;
  }
}

bool Session::readUpstream() {
  if (up_ == nullptr || !up_->readable || up_->eof || up_->failed || up_->connecting) {
    return false;
  }
  bool got = false;
  while (true) {
    const size_t room = up_->in.room(w_.inLimit());
    if (room == 0) return got;
    const ssize_t n = up_->in.readFrom(up_->fd.get(), room);
    if (n > 0) {
      got = true;
      last_activity_ms_ = w_.nowMs();
      if (static_cast<size_t>(n) < room && !up_->hup) {
        // Drained (short read). meshd's upstream sockets are never in the sockhash, so
        // all their bytes are in TCP's one receive queue.
        up_->readable = false;
        return got;
      }
      continue;
    }
    up_->readable = false;
    if (n == 0) {
      up_->eof = true;
      return true;
    }
    if (errno == EINTR) {
      up_->readable = true;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return got;
    up_->failed = true;
    up_->error = errno;
    return true;
  }
}

bool Session::flushClient() {
  bool wrote = false;
  while (!out_.empty() && writable_ && !error_) {
    const ssize_t n = out_.writeTo(fd_.get());
    if (n > 0) {
      wrote = true;
      last_activity_ms_ = w_.nowMs();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      writable_ = false;
      break;
    }
    error_ = true;  // EPIPE, ECONNRESET: the client is gone
    wrote = true;
  }
  return wrote;
}

bool Session::flushUpstream() {
  if (up_ == nullptr || up_->connecting || up_->failed) return false;
  bool wrote = false;
  while (!up_->out.empty() && up_->writable) {
    const ssize_t n = up_->out.writeTo(up_->fd.get());
    if (n > 0) {
      wrote = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      up_->writable = false;
      break;
    }
    // EPIPE, ECONNRESET: the upstream is gone. Stop here: the loop would otherwise retry
    // the same send forever (found by the benchmark's iperf3 through the opaque relay).
    up_->failed = true;
    up_->error = n < 0 ? errno : EPIPE;
    wrote = true;
    break;
  }
  return wrote;
}

bool Session::step() {
  switch (mode_) {
    case Mode::kDetect:
      return stepDetect();
    case Mode::kHttp:
      return stepHttp();
    case Mode::kRaw:
      return stepRaw();
    case Mode::kH2:
      return stepH2();
  }
  return false;
}

bool Session::stepDetect() {
  if (up_ != nullptr && !up_->in.empty()) {
    // The server spoke first: a server-first protocol, unless it is an h2c server sending
    // its SETTINGS right after accept (prior-knowledge servers may; nghttp2's and gRPC's
    // do). Then the client decides, within the request-headers timeout (sweep()).
    if (!looksLikeH2ServerPreface(up_->in.view())) {
      becomeRaw();
      return true;
    }
    if (h2_server_wait_ms_ == 0) {
      h2_server_wait_ms_ = w_.nowMs() + w_.options().request_headers_timeout_ms;
    }
  }
  if (error_) {
    close();
    return true;
  }
  if (!in_.empty()) {
    switch (detectProtocol(in_.view())) {
      case Detected::kHttp1:
        becomeHttp();
        return true;
      case Detected::kHttp2:
        becomeH2();
        return true;
      case Detected::kOpaque:
        becomeRaw();
        return true;
      case Detected::kNeedMore:
        break;
    }
  }
  if (eof_) {
    if (in_.empty()) {
      close();  // connected and left without a byte
    } else {
      becomeRaw();  // relay what it sent, then its FIN
    }
    return true;
  }
  return false;
}

void Session::becomeRaw() {
  mode_ = Mode::kRaw;
  w_.counters.opaque.fetch_add(1, std::memory_order_relaxed);
  head_deadline_ms_ = 0;
  start_us_ = w_.nowUs();
  start_unix_us_ = w_.unixUs();
  upstream_addr_ = conn_upstream_;
  if (up_ == nullptr || (up_->failed && !up_->connected_once)) {
    flags_ = "UF";
    record("tcp");
    close();
  }
}

void Session::becomeHttp() {
  mode_ = Mode::kHttp;
  w_.counters.http.fetch_add(1, std::memory_order_relaxed);
  http_ = std::make_unique<Http>(w_.options().limits);
  http_->edited.reserve(w_.options().limits.max_headers + 16);
  http_->scratch.reserve(4096);
  http_->flags.reserve(64);
  orig_dst_text_ = orig_dst_.toString();
  // The pre-connected upstream joins the pool: the first request takes it back if its
  // route picks the same endpoint.
  if (up_ != nullptr) {
    up_->owner = nullptr;
    w_.release(up_);
    up_ = nullptr;
  }
}

void Session::becomeH2() {
  mode_ = Mode::kH2;
  w_.counters.http2.fetch_add(1, std::memory_order_relaxed);
  orig_dst_text_ = orig_dst_.toString();
  // The pre-connected upstream spoke no HTTP/2 yet; streams use the worker's h2 pool.
  dropUpstream();
  h2_ = std::make_unique<H2Conn>(*this);
  if (!h2_->init().ok()) {
    close();
    return;
  }
  // head_deadline_ms_ keeps running from the first byte: the first request's HEADERS
  // must complete within request_headers_timeout_ms (slowloris); H2Conn stops it.
}

bool Session::stepH2() {
  if (error_ || (eof_ && in_.empty())) {
    h2_->closeAll("DC");
    close();
    return true;
  }
  if (closing_) return false;  // GOAWAY queued or sent: write it and close
  const bool progress = h2_->step();
  if (dead) return true;
  if (h2_->shouldClose()) closeSoon();
  return progress;
}

bool Session::stepRaw() {
  if (up_ == nullptr) {
    close();
    return true;
  }
  bool progress = false;
  const size_t to_up = std::min(in_.size(), up_->out.room(w_.outLimit()));
  if (to_up > 0) {
    up_->out.append(in_.view().substr(0, to_up));
    in_.consume(to_up);
    request_bytes_ += to_up;
    progress = true;
  }
  const size_t to_client = std::min(up_->in.size(), out_.room(w_.outLimit()));
  if (to_client > 0) {
    out_.append(up_->in.view().substr(0, to_client));
    up_->in.consume(to_client);
    response_bytes_ += to_client;
    progress = true;
  }
  // Half-close travels: a FIN from one side is passed on once its bytes are written.
  if (eof_ && in_.empty() && up_->out.empty() && !up_->write_shut && !up_->connecting &&
      !up_->failed) {
    ::shutdown(up_->fd.get(), SHUT_WR);
    up_->write_shut = true;
    progress = true;
  }
  if (up_->eof && up_->in.empty() && out_.empty() && !write_shut_) {
    ::shutdown(fd_.get(), SHUT_WR);
    write_shut_ = true;
    progress = true;
  }
  const bool up_broken = up_->failed;
  if (up_broken || error_ || (write_shut_ && up_->write_shut)) {
    if (up_broken && flags_.empty()) flags_ = up_->connected_once ? "UC" : "UF";
    if (error_ && flags_.empty()) flags_ = "DC";
    if (tunnel_) {
      record("http/1.1");
    } else {
      record("tcp");
    }
    close();
    return true;
  }
  return progress;
}

bool Session::stepHttp() {
  bool progress = false;
  if (!exchange_) {
    if (closing_) return false;
    if (error_) {
      close();
      return true;
    }
    if (in_.empty()) {
      if (eof_) {
        close();
        return true;
      }
      return false;
    }
    const ParseStatus st = http_->request.parse(in_.view());
    if (st == ParseStatus::kNeedMore) {
      if (eof_) {  // the client left in the middle of a head
        close();
        return true;
      }
      return false;
    }
    if (st == ParseStatus::kError) {
      resetExchange();
      request_bytes_ = in_.size();
      const http1::ParseError& e = http_->request.error();
      localReply(e.status, "DPE", e.reason, "", false);
      return true;
    }
    progress = beginExchange();
    if (dead || !exchange_) return true;
  }
  if (mode_ != Mode::kHttp) return true;
  progress |= pumpRequestBody();
  if (!exchange_ || mode_ != Mode::kHttp) return true;
  progress |= pumpResponse();
  if (!exchange_ || mode_ != Mode::kHttp) return true;
  if (response_done_) {
    // If the response ended before its request body did, the upstream connection is out
    // of step and where the client's next request starts is unknown: both are closed.
    endExchange(request_done_ && client_keep_alive_);
    return true;
  }
  if (error_ || (eof_ && !request_done_ && in_.empty())) {
    flags_ = "DC";
    dropUpstream();
    record("http/1.1");
    close();
    return true;
  }
  return progress;
}

bool Session::beginExchange() {
  const http1::RequestHead& head = http_->request.head();
  resetExchange();
  request_bytes_ = http_->request.headLength();
  head_request_ = head.method == "HEAD";
  client_http10_ = head.version == http1::Version::kHttp10;
  client_keep_alive_ = head.framing.keep_alive;
  method_len_ = std::min(head.method.size(), sizeof(method_));
  std::copy_n(head.method.data(), method_len_, method_);

  // x-request-id: kept when present (first one), else a new UUIDv4.
  request_id_len_ = 0;
  bool have_id = false;
  bool have_ua = false;
  for (const http1::HeaderField& f : head.headers) {
    if (!have_id && chars::equalsLower(f.name, "x-request-id")) {
      request_id_len_ = std::min(f.value.size(), sizeof(request_id_));
      std::copy_n(f.value.data(), request_id_len_, request_id_);
      have_id = true;
    } else if (!have_ua && chars::equalsLower(f.name, "user-agent")) {
      copyBounded(log_user_agent_, f.value, kRecordMaxUserAgent);
      have_ua = true;
    }
  }
  if (!have_id) {
    w_.newRequestId(request_id_);
    request_id_len_ = 36;
  }

  RequestInfo info;
  info.orig_dst = orig_dst_;
  info.peer = peer_;
  info.method = head.method;
  info.target = head.form == http1::TargetForm::kAbsolute ? originForm(head.target) : head.target;
  info.authority = head.authority;
  copyBounded(log_path_, info.target, kRecordMaxPath);
  copyBounded(log_authority_, head.authority, kRecordMaxAuthority);
  info.headers = head.headers;
  cancelPick();
  decision_ = RouteDecision();
  w_.router().route(info, decision_);
  pick_pending_ = decision_.kind == RouteDecision::Kind::kForward;

  const bool has_body = head.framing.body != BodyKind::kNone;
  if (decision_.kind == RouteDecision::Kind::kDirectResponse) {
    // The request body (if any) is not read: the connection closes after the answer.
    in_.consume(http_->request.headLength());
    request_done_ = !has_body;
    if (decision_.fault_delay_ms != 0) {
      // A fault abort after a fault delay: answered by httpTimer().
      delayed_ = true;
      wait_until_ms_ = deadlineAfter(decision_.fault_delay_ms);
      armTimer(wait_until_ms_);
      return true;
    }
    localReply(decision_.status, decision_.response_flags, decision_.body, decision_.location,
               client_keep_alive_ && !has_body, decision_.retry_after);
    return true;
  }

  upstream_addr_ = decision_.upstream;
  // The forwarded head: route edits applied, Expect: 100-continue answered here (below)
  // and not forwarded, rewrites, x-request-id added when absent.
  applyEdits(head.headers, decision_.request_edits, head.expect_continue);
  http1::RequestHead forwarded = head;
  forwarded.headers = absl::MakeConstSpan(http_->edited);
  if (!decision_.path_rewrite.empty() && !head.connect &&
      head.form != http1::TargetForm::kAsterisk) {
    forwarded.target = decision_.path_rewrite;
    forwarded.form = http1::TargetForm::kOrigin;
  }
  if (!decision_.authority_rewrite.empty()) {
    forwarded.authority = decision_.authority_rewrite;
  } else if (forwarded.authority.empty()) {
    forwarded.authority = orig_dst_text_;  // HTTP/1.0 without Host: the VIP the app dialled
  }
  http1::ExtraField extra[1];
  size_t extras = 0;
  if (!have_id) extra[extras++] = {"x-request-id", std::string_view(request_id_, 36)};
  http1::RequestWriteOptions wo;
  wo.upstream_keep_alive = true;
  wo.extra = absl::MakeConstSpan(extra, extras);
  http_->scratch.clear();
  http1::writeRequestHead(forwarded, wo, &http_->scratch);
  in_.consume(http_->request.headLength());
  // With retries the request is kept as sent (for a replay); with a fault delay the head
  // waits here (the parsed head's views into in_ do not survive the wait).
  keep_replay_ = decision_.retries != nullptr;
  if (keep_replay_ || decision_.fault_delay_ms != 0) {
    http_->replay.assign(http_->scratch);
    replayable_ = http_->replay.size() <= replayLimit();
  }

  switch (head.framing.body) {
    case BodyKind::kContentLength:
      request_body_ = head.framing.content_length > 0 ? Body::kLength : Body::kNone;
      request_remaining_ = head.framing.content_length;
      break;
    case BodyKind::kChunked:
      request_body_ = Body::kChunked;
      http_->request_chunks.reset();
      break;
    default:
      request_body_ = Body::kNone;
      break;
  }
  request_done_ = request_body_ == Body::kNone;
  // Envoy's default (proxy_100_continue off): answer 100 here, do not forward Expect.
  if (head.expect_continue && !request_done_) {
    constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
    out_.append(k100);
    response_bytes_ += k100.size();
  }
  response_context_.head = head_request_;
  response_context_.connect = head.connect;
  response_context_.upgrade_requested = head.upgrade_requested;
  http_->response.reset();
  if (decision_.fault_delay_ms != 0) {
    delayed_ = true;
    wait_until_ms_ = deadlineAfter(decision_.fault_delay_ms);
    armTimer(wait_until_ms_);
    return true;
  }
  startTry();
  return true;
}

bool Session::startTry() {
  wait_until_ms_ = 0;
  const bool first = attempts_ == 0;
  if (first) {
    // The route timeout spans every try and back-off (not a fault delay before them).
    request_deadline_ms_ =
        decision_.request_timeout_ms == 0 ? 0 : w_.nowMs() + decision_.request_timeout_ms;
  }
  resilience::CircuitBreaker* breaker = decision_.breaker;
  if (breaker != nullptr && !active_guard_) {
    active_guard_ = breaker->tryAcquireRequest();
    if (!active_guard_) {
      upstreamFailed(resilience::kOverflowHttpStatus, withFlags(resilience::kOverflowFlag),
                     "upstream connect error or disconnect/reset before headers. reset reason: "
                     "overflow");
      return false;
    }
  }
  int err = 0;
  bool reused = false;
  up_ = w_.acquire(decision_.upstream, decision_.via, &err, &reused);
  if (up_ != nullptr && up_->connecting && breaker != nullptr) {
    // Waiting for a new connection: a pending request until it is connected or fails.
    pending_guard_ = breaker->tryAcquirePending();
    if (!pending_guard_) {
      upstreamFailed(resilience::kOverflowHttpStatus, withFlags(resilience::kOverflowFlag),
                     "upstream connect error or disconnect/reset before headers. reset reason: "
                     "overflow");
      return false;
    }
  }
  ++attempts_;
  pick_pending_ = false;
  try_live_ = true;
  try_start_us_ = w_.nowUs();
  upstream_addr_ = decision_.upstream;
  try_deadline_ms_ = 0;
  if (request_done_) armPerTryTimer();  // else once the body has been passed on
  if (up_ == nullptr) {
    if (tryEnded(resilience::TryOutcome::connectFailure())) return true;
    upstreamFailed(503, withFlags("UF"),
                   "upstream connect error or disconnect/reset before headers. reset reason: "
                   "connection failure");
    return false;
  }
  up_->owner = this;
  up_->exchanges++;
  upstream_reused_ = reused;
  if (reused) w_.counters.upstream_reused.fetch_add(1, std::memory_order_relaxed);
  if (first && !keep_replay_ && !delayed_) {
    up_->out.append(http_->scratch);  // the forwarded head, written by beginExchange
  } else {
    up_->out.append(http_->replay);  // the head and the body sent so far
  }
  return true;
}

bool Session::tryEnded(const resilience::TryOutcome& outcome) {
  urx_ = false;
  if (!try_live_) return false;
  try_live_ = false;
  try_deadline_ms_ = 0;
  pending_guard_.release();
  retry_guard_.release();  // the retry that made this try is over
  const SocketAddress failed = upstream_addr_;
  w_.router().onTry(decision_, failed, outcome, w_.nowUs() - try_start_us_);
  if (decision_.retries == nullptr) return false;
  const resilience::RetryPolicy policy(*decision_.retries);
  if (!policy.retriable(outcome)) return false;
  // From here on the outcome is one the policy retries: URX if it stays the last one.
  urx_ = retried_;
  if (!replayable_ || !policy.shouldRetry(outcome, attempts_)) return false;
  resilience::Guard guard;
  if (decision_.breaker != nullptr) {
    guard = decision_.breaker->tryAcquireRetry();
    if (!guard) return false;  // the retry budget is spent: this outcome is the answer
  }
  if (!w_.router().retarget(decision_, failed)) return false;
  pick_pending_ = true;
  retry_guard_ = std::move(guard);
  retried_ = true;
  urx_ = false;
  dropUpstream();  // a connection that failed (or whose response is discarded) is not reused
  http_->response.reset();
  wait_until_ms_ = deadlineAfter(policy.backoffMs(attempts_, w_.random()));
  armTimer(wait_until_ms_);
  return true;
}

void Session::armPerTryTimer() {
  // Envoy starts the per-try timer when the whole request was received (a slow upload is
  // not a slow upstream); the route timeout bounds the rest.
  const uint32_t per_try = decision_.retries != nullptr ? decision_.retries->per_try_timeout_ms : 0;
  if (per_try == 0 || !try_live_ || response_head_sent_) return;
  try_deadline_ms_ = deadlineAfter(per_try);
  armTimer(try_deadline_ms_);
}

void Session::abandonTry(const resilience::TryOutcome& outcome) {
  urx_ = false;
  wait_until_ms_ = 0;
  if (!try_live_) return;
  try_live_ = false;
  try_deadline_ms_ = 0;
  w_.router().onTry(decision_, upstream_addr_, outcome, w_.nowUs() - try_start_us_);
}

bool Session::resendOnFreshConnection() {
  // A pooled connection the server closed while it was idle (its keep-alive timeout) just
  // as we sent on it: nothing of the request was processed. Re-sent once, at once, on a new
  // connection to the same endpoint, as the same try — for idempotent methods only (RFC
  // 9110 §9.2.2; RFC 9112 §9.3.1), and only while the request is held (a route with retries).
  if (!upstream_reused_ || resent_ || !keep_replay_ || !replayable_ || !try_live_) return false;
  const std::string_view m(method_, method_len_);
  if (m != "GET" && m != "HEAD" && m != "OPTIONS" && m != "TRACE" && m != "PUT" && m != "DELETE") {
    return false;
  }
  resent_ = true;
  dropUpstream();
  int err = 0;
  up_ = w_.connect(upstream_addr_, decision_.via, &err);
  upstream_reused_ = false;
  if (up_ == nullptr) {
    if (!tryEnded(resilience::TryOutcome::connectFailure())) {
      upstreamFailed(503, withFlags("UF"),
                     "upstream connect error or disconnect/reset before headers. reset reason: "
                     "connection failure");
    }
    return true;
  }
  up_->owner = this;
  up_->exchanges++;
  up_->out.append(http_->replay);
  http_->response.reset();
  return true;
}

void Session::keepForReplay(std::string_view bytes) {
  if (!replayable_) return;
  if (http_->replay.size() + bytes.size() > replayLimit()) {
    replayable_ = false;  // beyond the bound: this request is not retried
    return;
  }
  http_->replay.append(bytes);
}

namespace {

// Envoy's response flags in the order it prints them (ResponseFlagUtils).
constexpr std::string_view kFlagOrder[] = {
    "LH",   "UH", "UT",  "LR", "UR", "UF",  "UC",    "UO",   "NR",   "DI", "FI",  "RL", "UAEX",
    "RLSE", "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM"};

bool hasFlag(std::string_view list, std::string_view flag) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    if (list.substr(0, comma) == flag) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::string_view Session::withFlags(std::string_view base) {
  if (!delayed_ && !urx_) return base;
  std::string& out = http_->flags;
  if (!out.empty() && base.data() == out.data()) return base;  // already combined
  out.clear();
  for (std::string_view f : kFlagOrder) {
    if (hasFlag(base, f) || (f == "DI" && delayed_) || (f == "URX" && urx_)) {
      if (!out.empty()) out.push_back(',');
      out.append(f);
    }
  }
  return out;
}

void Session::releaseGuards() {
  pending_guard_.release();
  active_guard_.release();
  retry_guard_.release();
}

void Session::resetExchange() {
  exchange_ = true;
  recorded_ = false;
  start_us_ = w_.nowUs();
  start_unix_us_ = w_.unixUs();
  head_deadline_ms_ = 0;
  request_bytes_ = 0;
  response_bytes_ = 0;
  status_ = 0;
  flags_ = {};
  head_request_ = false;
  client_http10_ = false;
  client_keep_alive_ = false;
  request_done_ = false;
  response_head_sent_ = false;
  response_done_ = false;
  response_body_ = Body::kNone;
  upstream_reused_ = false;
  upstream_addr_ = SocketAddress();
  releaseGuards();
  attempts_ = 0;
  try_start_us_ = 0;
  try_deadline_ms_ = 0;
  wait_until_ms_ = 0;
  try_live_ = false;
  keep_replay_ = false;
  replayable_ = true;
  delayed_ = false;
  retried_ = false;
  urx_ = false;
  resent_ = false;
  method_len_ = 0;
  request_id_len_ = 0;
  log_path_.clear();
  log_authority_.clear();
  log_user_agent_.clear();
}

void applyHeaderEdits(absl::Span<const http1::HeaderField> in, absl::Span<const HeaderEdit> edits,
                      bool drop_expect, std::vector<http1::HeaderField>& out) {
  out.clear();
  for (const http1::HeaderField& f : in) {
    if (drop_expect && chars::equalsLower(f.name, "expect")) continue;
    bool removed = false;
    for (const HeaderEdit& e : edits) {
      if (e.op != HeaderEdit::Op::kAdd && !protectedField(e.name) &&
          chars::equalsIgnoreCase(f.name, e.name)) {
        removed = true;
        break;
      }
    }
    if (!removed) out.push_back(f);
  }
  for (const HeaderEdit& e : edits) {
    if (e.op == HeaderEdit::Op::kRemove || protectedField(e.name)) continue;
    out.push_back(http1::HeaderField{e.name, e.value, false});
  }
}

void Session::applyEdits(absl::Span<const http1::HeaderField> in,
                         absl::Span<const HeaderEdit> edits, bool drop_expect) {
  applyHeaderEdits(in, edits, drop_expect, http_->edited);
}

bool Session::pumpRequestBody() {
  if (request_done_ || up_ == nullptr) return false;
  bool progress = false;
  if (request_body_ == Body::kLength) {
    const size_t n = static_cast<size_t>(
        std::min<uint64_t>(request_remaining_, std::min(in_.size(), up_->out.room(w_.outLimit()))));
    if (n == 0) return false;
    up_->out.append(in_.view().substr(0, n));
    if (keep_replay_ && !response_head_sent_) keepForReplay(in_.view().substr(0, n));
    in_.consume(n);
    request_bytes_ += n;
    request_remaining_ -= n;
    request_done_ = request_remaining_ == 0;
    if (request_done_) armPerTryTimer();
    return true;
  }
  // Chunked: decoded and written again (the upstream sees our chunk lines, never the
  // client's extensions or trailers).
  while (!request_done_ && !in_.empty()) {
    const size_t room = up_->out.room(w_.outLimit());
    if (room <= kChunkOverhead) break;
    const std::string_view input = in_.view().substr(0, room - kChunkOverhead);
    const ChunkedDecoder::Result r = http_->request_chunks.decode(input);
    if (r.status == ChunkedDecoder::Status::kError) {
      const http1::ParseError& e = http_->request_chunks.error();
      dropUpstream();  // it holds a request that will never be completed
      if (response_head_sent_) {
        flags_ = "DPE";
        record("http/1.1");
        close();
      } else {
        localReply(e.status, "DPE", e.reason, "", false);
      }
      return true;
    }
    std::string& s = http_->scratch;
    s.clear();
    if (r.status == ChunkedDecoder::Status::kData && !r.data.empty()) {
      http1::writeChunkHeader(r.data.size(), &s);
      s.append(r.data);
      s.append("\r\n");
    } else if (r.status == ChunkedDecoder::Status::kDone) {
      http1::writeLastChunk(&s);
      request_done_ = true;
      armPerTryTimer();
    }
    up_->out.append(s);
    if (keep_replay_ && !response_head_sent_) keepForReplay(s);
    in_.consume(r.consumed);
    request_bytes_ += r.consumed;
    progress |= r.consumed > 0;
    if (r.status == ChunkedDecoder::Status::kNeedMore) break;
  }
  return progress;
}

void Session::dropUpstream() {
  if (up_ == nullptr) return;
  up_->owner = nullptr;
  w_.destroy(up_);
  up_ = nullptr;
}

void Session::upstreamFailed(uint16_t status, std::string_view flags, std::string_view body) {
  dropUpstream();
  if (response_head_sent_) {
    flags_ = flags;
    record("http/1.1");
    closeSoon();
    exchange_ = false;
    return;
  }
  localReply(status, flags, body, "", client_keep_alive_ && request_done_);
}

bool Session::pumpResponse() {
  if (up_ == nullptr) return false;
  if (!response_head_sent_) {
    if (pending_guard_ && !up_->connecting) pending_guard_.release();  // connected or failed
    if (up_->failed && !up_->connected_once) {
      if (tryEnded(resilience::TryOutcome::connectFailure())) return true;
      upstreamFailed(503, withFlags("UF"),
                     "upstream connect error or disconnect/reset before headers. reset reason: "
                     "connection failure");
      return true;
    }
    if (up_->in.empty()) {
      if (up_->eof || up_->failed) {
        if (resendOnFreshConnection()) return true;
        if (tryEnded(resilience::TryOutcome::reset(replayable_))) return true;
        upstreamFailed(503, withFlags("UC"),
                       "upstream connect error or disconnect/reset before headers. reset "
                       "reason: connection termination");
        return true;
      }
      return false;
    }
    const ParseStatus st = http_->response.parse(up_->in.view(), response_context_);
    if (st == ParseStatus::kNeedMore) {
      if (up_->eof || up_->failed) {
        if (tryEnded(resilience::TryOutcome::reset(replayable_))) return true;
        upstreamFailed(503, withFlags("UC"),
                       "upstream connect error or disconnect/reset before headers. reset "
                       "reason: connection termination");
        return true;
      }
      return false;
    }
    if (st == ParseStatus::kError) {
      // A malformed response head: a reset of the try (Envoy resets the stream with a
      // protocol error); answered 502 UPE unless retried.
      if (tryEnded(resilience::TryOutcome::reset(replayable_))) return true;
      upstreamFailed(502, withFlags("UPE"), http_->response.error().reason);
      return true;
    }
    const bool moved = onResponseHead();
    // A final head was queued: move the body bytes already read behind it now, so head
    // and body leave in one send.
    if (!response_head_sent_ || dead || mode_ != Mode::kHttp || !exchange_) return moved;
  }
  // The body.
  bool progress = false;
  switch (response_body_) {
    case Body::kNone:
      response_done_ = true;
      return true;
    case Body::kLength:
    case Body::kUntilClose: {
      uint64_t n = std::min(up_->in.size(), out_.room(w_.outLimit()));
      if (response_body_ == Body::kLength) n = std::min(n, response_remaining_);
      if (n > 0) {
        out_.append(up_->in.view().substr(0, n));
        up_->in.consume(n);
        response_bytes_ += n;
        progress = true;
        if (response_body_ == Body::kLength) {
          response_remaining_ -= n;
          if (response_remaining_ == 0) response_done_ = true;
        }
      }
      if (!response_done_ && up_->in.empty() && (up_->eof || up_->failed)) {
        if (response_body_ == Body::kUntilClose && !up_->failed) {
          response_done_ = true;  // the close delimits the body
          client_keep_alive_ = false;
        } else {
          upstreamFailed(0, "UC", "");
        }
        return true;
      }
      return progress;
    }
    case Body::kChunked: {
      while (!response_done_ && !up_->in.empty()) {
        const size_t room = out_.room(w_.outLimit());
        if (room <= kChunkOverhead) break;
        const std::string_view input = up_->in.view().substr(0, room - kChunkOverhead);
        const ChunkedDecoder::Result r = http_->response_chunks.decode(input);
        if (r.status == ChunkedDecoder::Status::kError) {
          upstreamFailed(502, "UPE", http_->response_chunks.error().reason);
          return true;
        }
        std::string& s = http_->scratch;
        s.clear();
        if (r.status == ChunkedDecoder::Status::kData && !r.data.empty()) {
          if (response_rechunk_) http1::writeChunkHeader(r.data.size(), &s);
          s.append(r.data);
          if (response_rechunk_) s.append("\r\n");
        } else if (r.status == ChunkedDecoder::Status::kDone) {
          if (response_rechunk_) http1::writeLastChunk(&s);
          response_done_ = true;
        }
        out_.append(s);
        response_bytes_ += s.size();
        up_->in.consume(r.consumed);
        progress |= r.consumed > 0;
        if (r.status == ChunkedDecoder::Status::kNeedMore) break;
      }
      if (!response_done_ && up_->in.empty() && (up_->eof || up_->failed)) {
        upstreamFailed(0, "UC", "");
        return true;
      }
      return progress;
    }
  }
  return progress;
}

bool Session::onResponseHead() {
  const http1::ResponseHead& head = http_->response.head();
  if (head.informational) {
    // 100 Continue was answered by the proxy; other 1xx (103) are dropped as well.
    up_->in.consume(http_->response.headLength());
    http_->response.reset();
    return true;
  }
  // The try's end: its outcome may make this response one that is not forwarded.
  if (try_live_ && tryEnded(resilience::TryOutcome::response(head.status, -1, replayable_))) {
    return true;  // retried: the response is discarded with its connection
  }
  status_ = head.status;
  http1::ResponseHead sent = head;
  response_rechunk_ = true;
  switch (head.framing.body) {
    case BodyKind::kContentLength:
      response_body_ = head.framing.content_length > 0 ? Body::kLength : Body::kNone;
      response_remaining_ = head.framing.content_length;
      break;
    case BodyKind::kChunked:
      response_body_ = Body::kChunked;
      http_->response_chunks.reset();
      if (client_http10_) {  // HTTP/1.0 has no chunked coding: delimit by closing instead
        response_rechunk_ = false;
        sent.framing.body = BodyKind::kCloseDelimited;
      }
      break;
    case BodyKind::kCloseDelimited:
      response_body_ = Body::kUntilClose;
      break;
    default:
      response_body_ = Body::kNone;
      break;
  }
  const bool tunnel = head.framing.body == BodyKind::kTunnel;
  // The client connection outlives an upstream that says "Connection: close" (only that
  // upstream connection is not reused); a close-delimited body or a response that came
  // before the request body ended closes it.
  if (sent.framing.body == BodyKind::kCloseDelimited || !request_done_) {
    client_keep_alive_ = false;
  }
  applyEdits(head.headers, decision_.response_edits, false);
  sent.headers = absl::MakeConstSpan(http_->edited);
  http1::ExtraField extra[2];
  size_t extras = 0;
  if (client_http10_ && client_keep_alive_ && !tunnel) {
    extra[extras++] = {"Connection", "keep-alive"};
  }
  if (head_request_) {
    // The writer frames from the parse (no body for HEAD); the length the upstream announced
    // is still the client's to see. The parser checked it is one valid number.
    for (const http1::HeaderField& f : head.headers) {
      if (chars::equalsLower(f.name, "content-length")) {
        extra[extras++] = {"Content-Length", f.value};
        break;
      }
    }
  }
  http1::ResponseWriteOptions wo;
  wo.keep_alive = client_keep_alive_ || tunnel;
  wo.extra = absl::MakeConstSpan(extra, extras);
  http_->scratch.clear();
  http1::writeResponseHead(sent, wo, &http_->scratch);
  out_.append(http_->scratch);
  response_bytes_ += http_->scratch.size();
  up_->in.consume(http_->response.headLength());
  response_head_sent_ = true;
  request_deadline_ms_ = 0;
  if (tunnel) {
    // 101 or a 2xx to CONNECT: bytes flow both ways untouched from here on. What the
    // client sent after its head was held back until now (it was not the upstream's to
    // see unless the upgrade happened).
    tunnel_ = true;
    mode_ = Mode::kRaw;
    request_done_ = true;
    return true;
  }
  if (response_body_ == Body::kNone) response_done_ = true;
  return true;
}

void Session::localReply(uint16_t status, std::string_view flags, std::string_view body,
                         std::string_view location, bool keep_client,
                         std::string_view retry_after) {
  dropUpstream();
  std::string& s = http_->scratch;
  s.clear();
  s.append("HTTP/1.1 ");
  appendNumber(&s, status);
  s.push_back(' ');
  s.append(reasonPhrase(status));
  s.append("\r\n");
  if (!location.empty()) {
    s.append("location: ");
    s.append(location);
    s.append("\r\n");
  }
  if (!retry_after.empty()) {
    s.append("retry-after: ");
    s.append(retry_after);
    s.append("\r\n");
  }
  s.append("content-length: ");
  appendNumber(&s, body.size());
  s.append("\r\ncontent-type: text/plain\r\n");
  if (!flags.empty()) {
    s.append("x-meshd-response-flags: ");
    s.append(flags);
    s.append("\r\n");
  }
  if (!keep_client) {
    s.append("connection: close\r\n");
  } else if (client_http10_) {
    s.append("connection: keep-alive\r\n");
  }
  s.append("\r\n");
  if (!head_request_) s.append(body);
  out_.append(s);
  response_bytes_ += s.size();
  status_ = status;
  flags_ = flags;
  response_head_sent_ = true;
  response_done_ = true;
  endExchange(keep_client);
}

void Session::endExchange(bool keep_client) {
  record("http/1.1");
  if (up_ != nullptr) {
    const bool reusable = request_done_ && response_done_ && !tunnel_ &&
                          http_->response.head().framing.keep_alive &&
                          response_body_ != Body::kUntilClose;
    up_->owner = nullptr;
    if (reusable) {
      w_.release(up_);
    } else {
      w_.destroy(up_);
    }
    up_ = nullptr;
  }
  releaseGuards();
  cancelPick();
  decision_ = RouteDecision();
  exchange_ = false;
  request_deadline_ms_ = 0;
  try_deadline_ms_ = 0;
  wait_until_ms_ = 0;
  try_live_ = false;
  http_->request.reset();
  http_->response.reset();
  if (!keep_client) {
    closeSoon();
  } else if (!in_.empty()) {
    head_deadline_ms_ = w_.nowMs() + w_.options().request_headers_timeout_ms;  // pipelined
  }
}

void Session::record(std::string_view protocol) {
  if (recorded_) return;
  recorded_ = true;
  releaseGuards();  // the exchange ended
  cancelPick();     // before the Observer hears of it: the router's view is final then
  flags_ = withFlags(flags_);
  Observer* o = w_.observer();
  if (o == nullptr) return;
  RequestRecord r;
  const bool http = protocol != "tcp";
  r.cluster = http ? decision_.cluster : std::string_view(cluster_);
  r.response_code = status_;
  r.response_flags = flags_;
  r.method = http ? std::string_view(method_, method_len_) : std::string_view();
  r.duration_us = w_.nowUs() - start_us_;
  r.request_bytes = request_bytes_;
  r.response_bytes = response_bytes_;
  r.peer = peer_;
  r.orig_dst = orig_dst_;
  r.upstream = upstream_addr_;
  r.protocol = protocol;
  r.request_id = http ? std::string_view(request_id_, request_id_len_) : std::string_view();
  if (http) {
    r.path = log_path_;
    r.authority = log_authority_;
    r.user_agent = log_user_agent_;
  }
  r.start_unix_us = start_unix_us_;
  r.attempts = http ? attempts_ : 0;
  o->onRequest(r);
}

void Session::closeSoon() {
  closing_ = true;
  readable_ = readable_ || !eof_;
}

void Session::sweep(uint64_t now) {
  if (dead) return;
  if (lingering_) {
    if (now >= linger_deadline_ms_) close();
    return;
  }
  const uint64_t idle_deadline = last_activity_ms_ + w_.options().idle_timeout_ms;
  if (mode_ == Mode::kH2) {
    if (head_deadline_ms_ != 0 && now >= head_deadline_ms_) {
      // Slowloris: no complete request HEADERS within request_headers_timeout_ms.
      h2_->closeAll("");
      close();
      return;
    }
    if (now >= idle_deadline) {
      // Nothing moved either way for idle_timeout_ms (Envoy: 1 h downstream idle timeout):
      // open streams end as stream idle timeouts.
      h2_->closeAll("SI");
      close();
      return;
    }
    if (h2_->sweep(now)) drive();
    return;
  }
  if (now >= idle_deadline && (!exchange_ || mode_ == Mode::kRaw)) {
    // Downstream idle timeout (Envoy: 1 h). An opaque relay or tunnel is recorded.
    if (mode_ == Mode::kRaw) record(tunnel_ ? "http/1.1" : "tcp");
    close();
    return;
  }
  bool fired = false;
  if (now >= idle_deadline && exchange_) {
    // Nothing moved either way for idle_timeout_ms during an exchange (a route without a
    // timeout and a silent upstream, or a stalled body): never a hang. Envoy's flag for its
    // stream idle timeout is SI.
    last_activity_ms_ = now;
    if (!response_head_sent_) abandonTry(resilience::TryOutcome::perTryTimeout(replayable_));
    upstreamFailed(504, withFlags("SI"), "stream idle timeout");
    fired = true;
  }
  if (up_ != nullptr && up_->connecting && now >= up_->deadline_ms) {
    up_->connecting = false;
    up_->failed = true;
    up_->error = ETIMEDOUT;
    fired = true;
  }
  if (mode_ == Mode::kDetect && h2_server_wait_ms_ != 0 && now >= h2_server_wait_ms_ &&
      head_deadline_ms_ == 0) {
    // The upstream sent what looked like HTTP/2 SETTINGS and the client stayed silent: a
    // server-first protocol after all.
    becomeRaw();
    if (!dead) drive();
    return;
  }
  if (head_deadline_ms_ != 0 && now >= head_deadline_ms_ && !exchange_ && !closing_) {
    // Slowloris: the head did not complete in time. Envoy answers 408 too.
    head_deadline_ms_ = 0;
    if (mode_ != Mode::kHttp) {
      close();
      return;
    }
    resetExchange();
    recorded_ = true;  // no request to record
    localReply(408, "", "request headers timeout", "", false);
    fired = true;
  }
  if (exchange_ && !response_head_sent_ && request_deadline_ms_ != 0 &&
      now >= request_deadline_ms_) {
    // The route timeout spans all tries: a try in flight ends as timed out, a back-off is
    // cut short; no retry follows.
    abandonTry(resilience::TryOutcome::perTryTimeout(replayable_));
    upstreamFailed(504, withFlags("UT"), "upstream request timeout");
    fired = true;
  }
  if (fired) drive();
}

void Session::onTimer(uint64_t now_ms) {
  if (dead) return;
  // Back-offs, fault delays and per-try timeouts check their own deadlines.
  if (mode_ == Mode::kH2) {
    if (h2_->onTimer(now_ms)) drive();
  } else if (mode_ == Mode::kHttp) {
    if (httpTimer(now_ms)) drive();
  }
}

bool Session::httpTimer(uint64_t now_ms) {
  if (timer_at_ != 0 && timer_at_ <= now_ms) timer_at_ = 0;  // that entry fired
  if (!exchange_ || mode_ != Mode::kHttp) return false;
  bool changed = false;
  if (wait_until_ms_ != 0 && now_ms >= wait_until_ms_) {
    wait_until_ms_ = 0;
    if (decision_.kind == RouteDecision::Kind::kDirectResponse) {
      // The abort that followed a fault delay.
      localReply(decision_.status, withFlags(decision_.response_flags), decision_.body,
                 decision_.location, client_keep_alive_ && request_done_, decision_.retry_after);
    } else {
      startTry();  // after a fault delay or a back-off
    }
    changed = true;
  } else if (try_live_ && try_deadline_ms_ != 0 && now_ms >= try_deadline_ms_ &&
             !response_head_sent_) {
    if (!tryEnded(resilience::TryOutcome::perTryTimeout(replayable_))) {
      // Envoy answers an expired per-try timeout with 504 UT.
      upstreamFailed(504, withFlags("UT"), "upstream request timeout");
    }
    changed = true;
  }
  // A deadline still ahead whose entry was skipped by armTimer() (an earlier one fired).
  if (exchange_) {
    const uint64_t live_try = try_live_ && !response_head_sent_ ? try_deadline_ms_ : 0;
    if (wait_until_ms_ != 0) armTimer(wait_until_ms_);
    if (live_try != 0) armTimer(live_try);
  }
  return changed;
}

void Session::armTimer(uint64_t at_ms) {
  // One Worker::wakeAt() entry per session at a time: a later deadline waits for the
  // pending earlier entry, which re-arms (httpTimer). Keeps the worker's heap at about one
  // entry per session instead of one per request (no growth, no allocation).
  if (timer_at_ != 0 && timer_at_ <= at_ms) return;
  w_.wakeAt(this, at_ms);
  timer_at_ = at_ms;
}

void Session::abort() {
  if (dead) return;
  close();
}

void Session::cancelPick() {
  if (!pick_pending_) return;
  pick_pending_ = false;
  w_.router().onCancel(decision_, decision_.upstream);
}

void Session::close() {
  if (dead) return;
  if (h2_ != nullptr) h2_->closeAll("DC");
  dropUpstream();
  releaseGuards();
  cancelPick();
  decision_ = RouteDecision();
  fd_.reset();
  w_.destroy(this);
}

}  // namespace meshd::proxy
