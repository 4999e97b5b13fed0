#include "tunnel/engine.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace meshd::tunnel::detail {
namespace h2 = proxy::http2;

namespace {

constexpr uint32_t kIoEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP;

void setNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Closes `fd` so that a TCP peer sees a reset (SO_LINGER 0); other sockets just close.
void abortFd(ScopedFd& fd) {
  if (!fd.valid()) return;
  linger lin{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
  fd.reset();
}

int socketError(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

}  // namespace

int newSessionCallback(SSL* ssl, SSL_SESSION* session) {
  ConnVerify* verify = connVerify(ssl);
  if (verify == nullptr || verify->conn == nullptr) return 0;
  auto* conn = static_cast<Conn*>(verify->conn);
  conn->engine.storeSession(*conn, session);
  return 1;  // we keep the reference
}

// --- Pipe --------------------------------------------------------------------------------

Pipe::Pipe(Conn& c, int32_t stream_id, ScopedFd f) : conn(c), id(stream_id), fd(std::move(f)) {
  timer.pipe = this;
}

Pipe::~Pipe() { conn.engine.loop.cancel(&timer); }

void Pipe::Timer::run() {
  if (pipe->dead || pipe->state != State::kWaiting) return;
  pipe->onConnected(ETIMEDOUT);
}

void Pipe::onIo(uint32_t events) {
  if (dead) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) hup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) writable = true;
  if (state == State::kWaiting) {
    // Server: the upstream connect() finished (EPOLLOUT) or failed (EPOLLERR/HUP).
    if (conn.server && writable) onConnected(socketError(fd.get()));
    return;
  }
  flushOut();
  if (!dead) pumpIn();
}

bool Pipe::submitPending() {
  while (pending_off < pending.size() || (read_eof && !end_sent)) {
    absl::Span<const uint8_t> rest(reinterpret_cast<const uint8_t*>(pending.data()) + pending_off,
                                   pending.size() - pending_off);
    absl::StatusOr<size_t> taken = conn.session().submitData(id, rest, read_eof);
    if (!taken.ok()) return false;  // the stream is gone; onStreamClosed() follows
    conn.scheduleFlush();
    pending_off += *taken;
    if (pending_off < pending.size()) return false;  // queue full: onSendReady()
    pending.clear();
    pending_off = 0;
    if (read_eof) end_sent = true;
  }
  return true;
}

void Pipe::pumpIn() {
  if (dead || state != State::kRelaying || end_sent) return;
  if (!submitPending()) return;
  Engine& engine = conn.engine;
  while (readable && !read_eof && !dead) {
    ssize_t n = recv(fd.get(), engine.tcp_scratch.data(), engine.limits.read_chunk, 0);
    if (n > 0) {
      engine.counters.bytes_to_tunnel.fetch_add(static_cast<uint64_t>(n),
                                                std::memory_order_relaxed);
      absl::StatusOr<size_t> taken = conn.session().submitData(
          id, absl::Span<const uint8_t>(engine.tcp_scratch.data(), static_cast<size_t>(n)), false);
      if (!taken.ok()) return;
      conn.scheduleFlush();
      if (*taken < static_cast<size_t>(n)) {
        pending.assign(reinterpret_cast<const char*>(engine.tcp_scratch.data()) + *taken,
                       static_cast<size_t>(n) - *taken);
        pending_off = 0;
        notePeak();
        return;  // resumes on onSendReady()
      }
      // A short read drained the receive queue: edge-triggered epoll reports what arrives
      // later, so skip the recv() that would return EAGAIN (unless the peer hung up: then
      // read on to the EOF or error).
      if (static_cast<size_t>(n) < engine.limits.read_chunk && !hup) readable = false;
    } else if (n == 0) {
      read_eof = true;
      submitPending();
      return;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      readable = false;
    } else if (errno != EINTR) {
      resetBoth();
      return;
    }
  }
}

void Pipe::flushOut() {
  while (out_off < out.size() && writable && fd.valid()) {
    ssize_t n = send(fd.get(), out.data() + out_off, out.size() - out_off, MSG_NOSIGNAL);
    if (n > 0) {
      out_off += static_cast<size_t>(n);
      conn.engine.counters.bytes_from_tunnel.fetch_add(static_cast<uint64_t>(n),
                                                       std::memory_order_relaxed);
      if (!stream_closed) (void)conn.session().consume(id, static_cast<size_t>(n));
      conn.scheduleFlush();
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      writable = false;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      resetBoth();
      return;
    }
  }
  if (out_off < out.size()) return;
  out.clear();
  out_off = 0;
  if (fin_received && !write_shut && fd.valid()) {
    shutdown(fd.get(), SHUT_WR);
    write_shut = true;
  }
  if (stream_closed) finish(false);
}

void Pipe::onData(absl::Span<const uint8_t> data, bool end_stream) {
  if (dead) {
    (void)conn.session().consume(id, data.size());
    return;
  }
  size_t off = 0;
  if (out_off == out.size() && writable && state == State::kRelaying && !data.empty()) {
    // Nothing queued: write straight from nghttp2's buffer.
    while (off < data.size()) {
      ssize_t n = send(fd.get(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        writable = false;
        break;
      } else {
        (void)conn.session().consume(id, data.size());
        resetBoth();
        return;
      }
    }
    if (off > 0) {
      conn.engine.counters.bytes_from_tunnel.fetch_add(off, std::memory_order_relaxed);
      (void)conn.session().consume(id, off);
      conn.scheduleFlush();
    }
  }
  if (off < data.size()) {
    out.append(reinterpret_cast<const char*>(data.data()) + off, data.size() - off);
    notePeak();
  }
  if (end_stream) fin_received = true;
  if (state == State::kRelaying) flushOut();
}

void Pipe::notePeak() {
  uint64_t held = (out.size() - out_off) + (pending.size() - pending_off);
  std::atomic<uint64_t>& peak = conn.engine.counters.stream_buffer_peak;
  if (held > peak.load(std::memory_order_relaxed)) peak.store(held, std::memory_order_relaxed);
}

void Pipe::onSendReady() {
  if (!dead) pumpIn();
}

void Pipe::onStreamClosed(uint32_t error_code) {
  stream_closed = true;
  if (error_code != h2::kNoError) {
    if (state == State::kWaiting) {
      conn.engine.counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
    } else {
      conn.engine.counters.streams_reset.fetch_add(1, std::memory_order_relaxed);
    }
    finish(true);
    return;
  }
  flushOut();
}

void Pipe::onResponse(uint16_t status, std::string_view reason, bool end_stream) {
  if (dead) return;
  if (status >= 200 && status < 300) {
    state = State::kRelaying;
    if (end_stream) fin_received = true;
    flushOut();
    pumpIn();
    return;
  }
  conn.engine.counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
  conn.engine.logRefusal(
      conn.peer, "CONNECT refused",
      absl::StrCat(status, " ",
                   reason.empty() ? absl::string_view("(no reason)")
                                  : absl::string_view(reason.data(), reason.size())));
  // End our side too so the stream closes cleanly; the app sees a reset.
  if (!end_sent) (void)conn.session().submitData(id, {}, true);
  conn.scheduleFlush();
  finish(true);
}

void Pipe::onConnected(int err) {
  conn.engine.loop.cancel(&timer);
  auto& srv = *conn.srv;
  if (err != 0) {
    std::string reason = absl::StrCat("connect ", "failed: ", strerror(err));
    h2::HeaderField field{kReasonHeader, reason, false};
    (void)srv.submitResponse(id, 503, absl::MakeConstSpan(&field, 1), true);
    conn.engine.counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
    conn.scheduleFlush();
    finish(true);
    return;
  }
  state = State::kRelaying;
  setNoDelay(fd.get());
  (void)srv.submitResponse(id, 200, {}, false);
  conn.engine.counters.streams_opened.fetch_add(1, std::memory_order_relaxed);
  conn.scheduleFlush();
  flushOut();
  if (!dead) pumpIn();
}

void Pipe::resetBoth() {
  if (dead) return;
  if (!stream_closed) (void)conn.session().resetStream(id, h2::kConnectError);
  conn.engine.counters.streams_reset.fetch_add(1, std::memory_order_relaxed);
  conn.scheduleFlush();
  finish(true);
}

void Pipe::finish(bool abort) {
  if (dead) return;
  dead = true;
  if (fd.valid()) {
    conn.engine.loop.remove(fd.get());
    if (abort) {
      abortFd(fd);
    } else {
      fd.reset();
    }
  }
  conn.removePipe(id);
}

// --- Conn --------------------------------------------------------------------------------

Conn::Conn(Engine& e, ScopedFd f, bool is_server, const SocketAddress& p)
    : engine(e), fd(std::move(f)), server(is_server), peer(p) {
  flush_task.conn = this;
  timer_task.conn = this;
  verify.conn = this;
}

Conn::~Conn() {
  engine.loop.cancel(&flush_task);
  engine.loop.cancel(&timer_task);
  pipes.clear();
  client.reset();
  srv.reset();
  if (ssl != nullptr) SSL_free(ssl);
}

h2::detail::SessionBase& Conn::session() {
  if (server) return *srv;
  return *client;
}

void Conn::scheduleFlush() {
  if (!dead) engine.loop.flushLater(&flush_task);
}

Pipe* Conn::pipe(int32_t id) {
  auto it = pipes.find(id);
  return it == pipes.end() ? nullptr : it->second.get();
}

void Conn::removePipe(int32_t id) {
  auto it = pipes.find(id);
  if (it == pipes.end()) return;
  engine.retire(std::move(it->second));
  pipes.erase(it);
  if (pipes.empty() && !dead) armIdle();
}

void Conn::armIdle() {
  deadline_ms = engine.loop.nowMs() +
                (server ? engine.limits.server_idle_timeout_ms : engine.limits.idle_timeout_ms);
  engine.loop.wakeAt(&timer_task, deadline_ms);
}

void Conn::TimerTask::run() {
  Conn& c = *conn;
  if (c.dead || c.engine.loop.nowMs() < c.deadline_ms) return;
  if (c.handshaking || c.tcp_connecting) {
    c.failHandshake(HandshakeFailure::kTimeout);
  } else if (c.pipes.empty()) {
    c.close();  // idle
  }
}

void Conn::onIo(uint32_t events) {
  if (dead) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) writable = true;
  drive();
}

void Conn::failHandshake(HandshakeFailure failure) {
  if (dead) return;
  engine.countFailure(failure);
  std::string detail = handshakeFailureName(failure);
  if (failure == HandshakeFailure::kVerifierRefused && !verify.refusal.empty()) {
    absl::StrAppend(&detail, " (", verify.refusal, ")");
  }
  engine.logRefusal(peer, server ? "inbound TLS handshake" : "outbound TLS handshake", detail);
  close();
}

void Conn::drive() {
  if (dead) return;
  if (tcp_connecting) {
    if (!writable) return;
    int err = socketError(fd.get());
    if (err != 0) {
      engine.logRefusal(peer, "tunnel connect", strerror(err));
      engine.counters.connections_failed.fetch_add(1, std::memory_order_relaxed);
      close();
      return;
    }
    tcp_connecting = false;
  }
  if (handshaking) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r != 1) {
      int e = SSL_get_error(ssl, r);
      if (e == SSL_ERROR_WANT_READ) {
        readable = false;
        return;
      }
      if (e == SSL_ERROR_WANT_WRITE) {
        writable = false;
        return;
      }
      failHandshake(classifyHandshakeFailure(ssl, ERR_peek_error(), verify));
      ERR_clear_error();
      return;
    }
    handshakeDone();
    if (dead) return;
  }
  readAll();
  if (!dead) flush();
}

void Conn::handshakeDone() {
  handshaking = false;
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
    failHandshake(HandshakeFailure::kNoAlpn);
    return;
  }
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) {
    failHandshake(HandshakeFailure::kNoPeerCert);
    return;
  }
  peer_identity = firstUriSan(cert);
  if (SSL_session_reused(ssl)) {
    // No chain check ran: the ticket vouches for a chain verified earlier. Re-check what
    // may have changed since: the leaf's validity and the verifier's decision.
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
      failHandshake(HandshakeFailure::kExpired);
      return;
    }
    if (verify.verifier != nullptr && *verify.verifier) {
      // chain = null: the ticket carries the leaf, not the chain verified back then.
      absl::Status st = (*verify.verifier)(cert, nullptr);
      if (!st.ok()) {
        verify.refused = true;
        verify.refusal = std::string(st.message());
        failHandshake(HandshakeFailure::kVerifierRefused);
        return;
      }
    }
  }
  if (server) {
    engine.counters.handshakes_ok.fetch_add(1, std::memory_order_relaxed);
    if (SSL_session_reused(ssl)) engine.counters.handshakes_resumed.fetch_add(1);
  }
  // The client counts its handshake once the server has sent something: in TLS 1.3 the
  // server checks our certificate after our side of the handshake is done.
  deadline_ms = UINT64_MAX;
  if (pipes.empty()) armIdle();
}

void Conn::readAll() {
  while (readable && !dead) {
    ERR_clear_error();
    int n = SSL_read(ssl, engine.tls_scratch.data(), static_cast<int>(engine.tls_scratch.size()));
    if (n > 0) {
      if (!confirmed) {
        confirmed = true;
        if (!server) {
          engine.counters.handshakes_ok.fetch_add(1, std::memory_order_relaxed);
          if (SSL_session_reused(ssl)) engine.counters.handshakes_resumed.fetch_add(1);
        }
      }
      absl::Status st = session().feed(absl::Span<const uint8_t>(engine.tls_scratch.data(), n));
      if (!st.ok()) {
        engine.logRefusal(peer, server ? "inbound tunnel HTTP/2" : "outbound tunnel HTTP/2",
                          st.message());
        engine.counters.connections_failed.fetch_add(1, std::memory_order_relaxed);
        flush();  // the GOAWAY, best effort
        close();
        return;
      }
      continue;
    }
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ) {
      readable = false;
      return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
      writable = false;
      return;
    }
    if (!confirmed && !server && e == SSL_ERROR_SSL) {
      // The server refused our certificate (its alert arrives after our handshake ended).
      failHandshake(classifyHandshakeFailure(ssl, ERR_peek_error(), verify));
      ERR_clear_error();
      return;
    }
    if (e != SSL_ERROR_ZERO_RETURN && !(e == SSL_ERROR_SYSCALL && pipes.empty())) {
      engine.counters.connections_failed.fetch_add(1, std::memory_order_relaxed);
    }
    ERR_clear_error();
    close();
    return;
  }
}

void Conn::flush() {
  if (dead || handshaking || tcp_connecting) return;
  h2::detail::SessionBase& s = session();
  while (true) {
    if (out_off == out.size()) {
      out.clear();
      out_off = 0;
      if (!s.wantsWrite()) break;
      s.produce(out, 64 * 1024);
      if (dead) return;
      if (out.empty()) break;
    }
    if (!writable) break;
    ERR_clear_error();
    int n = SSL_write(ssl, out.data() + out_off, static_cast<int>(out.size() - out_off));
    if (n > 0) {
      out_off += static_cast<size_t>(n);
      continue;
    }
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_WRITE) {
      writable = false;
      break;
    }
    if (e == SSL_ERROR_WANT_READ) break;
    ERR_clear_error();
    engine.counters.connections_failed.fetch_add(1, std::memory_order_relaxed);
    close();
    return;
  }
  if (s.shouldClose() && out_off == out.size()) close();
}

void Conn::close() {
  if (dead) return;
  dead = true;
  engine.loop.cancel(&flush_task);
  engine.loop.cancel(&timer_task);
  if (fd.valid()) engine.loop.remove(fd.get());
  // Pipes go first (finish() calls removePipe(), which edits the map): collect them.
  std::vector<Pipe*> live;
  live.reserve(pipes.size());
  for (auto& [id, p] : pipes) live.push_back(p.get());
  for (Pipe* p : live) {
    if (p->state == Pipe::State::kWaiting) {
      engine.counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
    } else {
      engine.counters.streams_reset.fetch_add(1, std::memory_order_relaxed);
    }
    p->finish(true);
  }
  if (!server) engine.removeFromPool(this);
  if (ssl != nullptr && !handshaking) {
    ERR_clear_error();
    SSL_shutdown(ssl);  // close_notify, best effort (non-blocking)
    ERR_clear_error();
  }
  fd.reset();
  engine.retire(this);
}

void Conn::onRequest(int32_t stream_id, const h2::RequestHeaders& request, bool end_stream) {
  if (dead) return;
  auto respond = [&](uint16_t code, std::string_view reason) {
    h2::HeaderField field{kReasonHeader, reason, false};
    (void)srv->submitResponse(stream_id, code, absl::MakeConstSpan(&field, 1), true);
    engine.counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
    engine.logRefusal(peer, "inbound CONNECT",
                      absl::StrCat(code, " ", absl::string_view(reason.data(), reason.size())));
    scheduleFlush();
  };
  if (request.method != "CONNECT") return respond(405, "only CONNECT is served on the tunnel");
  absl::StatusOr<SocketAddress> dst = SocketAddress::parse(request.authority);
  if (!dst.ok()) return respond(400, "bad :authority (want ip:port)");
  InboundRequest in;
  in.peer_identity = peer_identity;
  in.peer = peer;
  in.dst = *dst;
  in.headers = request.headers;
  for (const h2::HeaderField& f : request.headers) {
    if (f.name == kSourceAddrHeader) {
      absl::StatusOr<SocketAddress> src = SocketAddress::parse(f.value);
      if (src.ok()) in.source = *src;
    }
  }
  InboundDecision decision = engine.hook ? engine.hook(in) : InboundDecision::allowWithMark(0);
  if (dead) return;
  if (!decision.allow) {
    uint16_t code = decision.code >= 400 && decision.code <= 599 ? decision.code : 403;
    return respond(code, decision.reason.empty() ? "refused by policy" : decision.reason);
  }
  ScopedFd up(socket(dst->ip.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!up.valid()) return respond(503, absl::StrCat("socket: ", strerror(errno)));
  if (decision.mark != 0 &&
      setsockopt(up.get(), SOL_SOCKET, SO_MARK, &decision.mark, sizeof decision.mark) != 0) {
    return respond(503, absl::StrCat("SO_MARK: ", strerror(errno)));
  }
  sockaddr_storage ss;
  socklen_t len = dst->toSockaddr(&ss);
  int err = 0;
  if (connect(up.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    err = errno;
  }
  if (err != 0) return respond(503, absl::StrCat("connect failed: ", strerror(err)));
  auto p = std::make_unique<Pipe>(*this, stream_id, std::move(up));
  Pipe* raw = p.get();
  pipes.emplace(stream_id, std::move(p));
  if (end_stream) raw->fin_received = true;
  if (!engine.loop.add(raw->fd.get(), kIoEvents, raw).ok()) {
    return raw->onConnected(EIO);
  }
  engine.loop.wakeAt(&raw->timer, engine.loop.nowMs() + engine.limits.connect_timeout_ms);
}

void Conn::onResponse(int32_t stream_id, uint16_t status, absl::Span<const h2::HeaderField> headers,
                      bool end_stream) {
  Pipe* p = pipe(stream_id);
  if (p == nullptr) return;
  std::string_view reason;
  for (const h2::HeaderField& f : headers) {
    if (f.name == kReasonHeader) reason = f.value;
  }
  p->onResponse(status, reason, end_stream);
}

void Conn::onData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream) {
  Pipe* p = pipe(stream_id);
  if (p == nullptr) {
    // Refused or already reset: give the window back, drop the bytes.
    (void)session().consume(stream_id, data.size());
    scheduleFlush();
    return;
  }
  p->onData(data, end_stream);
}

void Conn::onTrailers(int32_t stream_id, absl::Span<const h2::HeaderField>) {
  // No trailers on a CONNECT tunnel: treat as the end of the stream.
  if (Pipe* p = pipe(stream_id)) p->onData({}, true);
}

void Conn::onStreamClosed(int32_t stream_id, uint32_t error_code) {
  if (Pipe* p = pipe(stream_id)) p->onStreamClosed(error_code);
}

void Conn::onGoaway(int32_t) {
  // No new streams go here (canOpenStream() is false now); the pool skips it.
}

void Conn::onSendReady(int32_t stream_id) {
  if (Pipe* p = pipe(stream_id)) p->onSendReady();
}

// --- Engine ------------------------------------------------------------------------------

Engine::Engine(Loop& l, bool is_server, const TunnelLimits& lim, LogSink sink)
    : loop(l), server(is_server), limits(lim), log(std::move(sink)) {
  limits.read_chunk = std::max<size_t>(limits.read_chunk, 1024);
  tcp_scratch.resize(limits.read_chunk);
  tls_scratch.resize(std::max<size_t>(limits.read_chunk, 16 * 1024));
  reaper_.engine = this;
  listener_handler.engine = this;
  if (!log) {
    log = [](std::string_view line) {
      fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    };
  }
}

Engine::~Engine() {
  closeAll();
  reap();
  if (listener.valid()) loop.remove(listener.get());
  loop.cancel(&reaper_);
  for (auto& [key, cached] : sessions) SSL_SESSION_free(cached.session);
  if (ctx != nullptr) SSL_CTX_free(ctx);
}

void Engine::closeAll() {
  std::vector<Conn*> all;
  for (auto& [raw, owned] : conns) all.push_back(raw);
  for (Conn* c : all) c->close();
}

Conn* Engine::addConn(std::unique_ptr<Conn> conn) {
  Conn* raw = conn.get();
  conns.emplace(raw, std::move(conn));
  return raw;
}

void Engine::retire(Conn* conn) {
  auto it = conns.find(conn);
  if (it == conns.end()) return;
  dead_conns_.push_back(std::move(it->second));
  conns.erase(it);
  loop.flushLater(&reaper_);
}

void Engine::retire(std::unique_ptr<Pipe> pipe) {
  dead_pipes_.push_back(std::move(pipe));
  loop.flushLater(&reaper_);
}

void Engine::reap() {
  // Pipes first: they point to their connection.
  dead_pipes_.clear();
  dead_conns_.clear();
}

void Engine::logRefusal(const SocketAddress& peer, absl::string_view what,
                        absl::string_view reason) {
  if (log_full_) return;
  std::string key = absl::StrCat(what, ": ", reason);
  if (logged_.size() >= limits.max_logged_refusals) {
    log_full_ = true;
    log("meshd tunnel: refusal log full; further refusals are only counted");
    return;
  }
  if (!logged_.emplace(peer.ip, key).second) return;
  std::string line =
      absl::StrCat("meshd tunnel: ", what, " with ", peer.toString(), " refused: ", reason,
                   " (logged once per peer address and reason)");
  log(std::string_view(line));
}

void Engine::storeSession(Conn& conn, SSL_SESSION* session) {
  // A ticket arriving late on a connection of rotated-out credentials is not kept.
  if (conn.identity == nullptr || conn.identity->current() != conn.credentials) {
    SSL_SESSION_free(session);
    return;
  }
  PoolKey key{conn.identity->name(), conn.peer};
  auto it = sessions.find(key);
  if (it == sessions.end()) {
    if (sessions.size() >= kMaxCachedSessions) {
      for (auto& [k, cached] : sessions) SSL_SESSION_free(cached.session);
      sessions.clear();
    }
    sessions.emplace(key, CachedSession{conn.credentials, session});
    return;
  }
  SSL_SESSION_free(it->second.session);
  it->second = CachedSession{conn.credentials, session};
}

SSL_SESSION* Engine::findSession(const std::string& identity_name, const SocketAddress& peer,
                                 const Credentials* creds) {
  auto it = sessions.find(PoolKey{identity_name, peer});
  if (it == sessions.end()) return nullptr;
  // A ticket made with other credentials would resume as the old identity: never use it.
  if (it->second.creds.get() != creds || !SSL_SESSION_is_resumable(it->second.session)) {
    SSL_SESSION_free(it->second.session);
    sessions.erase(it);
    return nullptr;
  }
  return it->second.session;
}

absl::Status Engine::setTrust(std::shared_ptr<const TrustBundle> bundle) {
  if (bundle == nullptr) return absl::InvalidArgumentError("tunnel: no trust bundle");
  absl::StatusOr<SSL_CTX*> fresh = makeTunnelContext(server, *bundle);
  if (!fresh.ok()) return fresh.status();
  if (!server) SSL_CTX_sess_set_new_cb(*fresh, newSessionCallback);
  if (ctx != nullptr) SSL_CTX_free(ctx);  // live SSL objects hold their own reference
  ctx = *fresh;
  trust = std::move(bundle);
  for (auto& [key, cached] : sessions) SSL_SESSION_free(cached.session);
  sessions.clear();
  return absl::OkStatus();
}

void Engine::removeFromPool(Conn* conn) {
  if (conn->identity == nullptr) return;
  auto it = pool.find(PoolKey{conn->identity->name(), conn->peer});
  if (it == pool.end()) return;
  std::erase(it->second, conn);
  if (it->second.empty()) pool.erase(it);
}

void Engine::openStream(std::shared_ptr<Identity> source, const StreamRequest& request,
                        ScopedFd fd) {
  if (source == nullptr || !request.peer.valid() || !request.dst.valid() || !fd.valid()) {
    log(absl::StrCat("meshd tunnel: openStream: ",
                     source == nullptr       ? "no source identity"
                     : !request.peer.valid() ? "no peer address"
                     : !request.dst.valid()  ? "no destination address"
                                             : "no fd",
                     " (stream dropped)"));
    counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
    abortFd(fd);
    return;
  }
  setNonBlocking(fd.get());
  std::shared_ptr<const Credentials> creds = source->current();
  PoolKey key{source->name(), request.peer};
  Conn* conn = nullptr;
  auto it = pool.find(key);
  if (it != pool.end()) {
    for (Conn* c : it->second) {
      if (!c->dead && c->credentials == creds && c->client->canOpenStream()) {
        conn = c;
        break;
      }
    }
  }
  if (conn == nullptr) {
    auto fail = [&](absl::string_view why) {
      logRefusal(request.peer, "tunnel connect", why);
      counters.connections_failed.fetch_add(1, std::memory_order_relaxed);
      counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
      abortFd(fd);
    };
    if (creds == nullptr) return fail("the source identity has no credentials");
    ScopedFd sock(socket(request.peer.ip.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!sock.valid()) return fail(strerror(errno));
    setNoDelay(sock.get());
    sockaddr_storage ss;
    socklen_t len = request.peer.toSockaddr(&ss);
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
      return fail(strerror(errno));
    }
    counters.connections_opened.fetch_add(1, std::memory_order_relaxed);
    auto owned = std::make_unique<Conn>(*this, std::move(sock), false, request.peer);
    Conn* c = owned.get();
    c->identity = source;
    c->credentials = creds;
    c->verifier = request.verify_peer;
    c->verify.verifier = &c->verifier;
    c->tcp_connecting = true;
    c->ssl = SSL_new(ctx);
    absl::StatusOr<std::unique_ptr<h2::ClientSession>> session =
        c->ssl ? h2::ClientSession::create(*c, limits.h2) : absl::InternalError("SSL_new failed");
    if (!session.ok() || !useCredentials(c->ssl, *creds).ok()) {
      ERR_clear_error();
      return fail("TLS or HTTP/2 setup failed");
    }
    c->client = std::move(*session);
    SSL_set_app_data(c->ssl, &c->verify);
    SSL_set_fd(c->ssl, c->fd.get());
    SSL_set_connect_state(c->ssl);
    if (SSL_SESSION* cached = findSession(key.first, request.peer, creds.get())) {
      SSL_set_session(c->ssl, cached);
    }
    if (!loop.add(c->fd.get(), kIoEvents, c).ok()) return fail("epoll registration failed");
    addConn(std::move(owned));
    pool[key].push_back(c);
    c->deadline_ms = loop.nowMs() + limits.handshake_timeout_ms;
    loop.wakeAt(&c->timer_task, c->deadline_ms);
    conn = c;
  }
  std::string authority = request.dst.toString();
  std::string source_addr;
  h2::HeaderField fields[1];
  size_t nfields = 0;
  if (request.source.valid()) {
    source_addr = request.source.toString();
    fields[nfields++] = h2::HeaderField{kSourceAddrHeader, source_addr, false};
  }
  h2::RequestHeaders head;
  head.method = "CONNECT";
  head.authority = authority;
  head.headers = absl::MakeConstSpan(fields, nfields);
  absl::StatusOr<int32_t> id = conn->client->submitRequest(head, false);
  if (!id.ok()) {
    counters.streams_refused.fetch_add(1, std::memory_order_relaxed);
    abortFd(fd);
    return;
  }
  counters.streams_opened.fetch_add(1, std::memory_order_relaxed);
  auto p = std::make_unique<Pipe>(*conn, *id, std::move(fd));
  Pipe* raw = p.get();
  conn->pipes.emplace(*id, std::move(p));
  if (!loop.add(raw->fd.get(), kIoEvents, raw).ok()) {
    raw->resetBoth();
    return;
  }
  conn->scheduleFlush();
}

void Engine::acceptAll() {
  while (true) {
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN, or EMFILE & co (retried on the next connection's event)
    }
    ScopedFd sock(fd);
    SocketAddress peer = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    if (conns.size() >= limits.max_server_connections) {
      counters.connections_rejected.fetch_add(1, std::memory_order_relaxed);
      logRefusal(peer, "inbound connection",
                 absl::StrCat("over max_server_connections (", limits.max_server_connections, ")"));
      continue;  // closed
    }
    setNoDelay(fd);
    counters.connections_opened.fetch_add(1, std::memory_order_relaxed);
    std::shared_ptr<const Credentials> creds = identity->current();
    auto owned = std::make_unique<Conn>(*this, std::move(sock), true, peer);
    Conn* c = owned.get();
    c->credentials = creds;
    c->verify.verifier = &server_verifier;
    c->ssl = SSL_new(ctx);
    absl::StatusOr<std::unique_ptr<h2::ServerSession>> session =
        c->ssl ? h2::ServerSession::create(*c, limits.h2) : absl::InternalError("SSL_new failed");
    if (!session.ok() || !useCredentials(c->ssl, *creds).ok()) {
      ERR_clear_error();
      logRefusal(peer, "inbound TLS setup", "SSL or HTTP/2 session setup failed");
      continue;
    }
    c->srv = std::move(*session);
    SSL_set_app_data(c->ssl, &c->verify);
    SSL_set_fd(c->ssl, c->fd.get());
    SSL_set_accept_state(c->ssl);
    if (!loop.add(c->fd.get(), kIoEvents, c).ok()) continue;
    addConn(std::move(owned));
    c->deadline_ms = loop.nowMs() + limits.handshake_timeout_ms;
    loop.wakeAt(&c->timer_task, c->deadline_ms);
  }
}

}  // namespace meshd::tunnel::detail
