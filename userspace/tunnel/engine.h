// Internal to meshd_tunnel: the machinery TunnelClient and TunnelServer share. One Engine per
// tunnel end; Conn = one TLS connection with its HTTP/2 session; Pipe = one CONNECT stream
// relayed to a TCP socket. Everything runs on the Loop's thread; objects are freed after the
// current batch of events (Engine::reap), so a callback never frees what is on its stack.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "proxy/http2/client_session.h"
#include "proxy/http2/server_session.h"
#include "tunnel/tunnel.h"

namespace meshd::tunnel::detail {

class Conn;

// The client SSL_CTX's new-session callback: stores TLS 1.3 tickets per pool key.
int newSessionCallback(SSL* ssl, SSL_SESSION* session);

class Pipe final : public IoHandler {
 public:
  Pipe(Conn& conn, int32_t stream_id, ScopedFd fd);
  ~Pipe();
  void onIo(uint32_t events) override;

  // HTTP/2 side events (from Conn).
  void onData(absl::Span<const uint8_t> data, bool end_stream);
  void onSendReady();
  void onStreamClosed(uint32_t error_code);
  // Client: the response head. Server: the upstream connect finished.
  void onResponse(uint16_t status, std::string_view reason, bool end_stream);
  void onConnected(int err);
  // fd → stream, as far as the stream's send queue and the socket allow.
  void pumpIn();
  // Buffered stream bytes → fd; gives the window back for what was written.
  void flushOut();
  // The TCP side reset or failed: RST_STREAM CONNECT_ERROR, close the fd with a reset.
  void resetBoth();
  // Closes the fd (with a TCP reset when `abort`) and frees the pipe after this batch.
  void finish(bool abort);

  enum class State : uint8_t { kWaiting, kRelaying };

  Conn& conn;
  const int32_t id;
  ScopedFd fd;
  State state = State::kWaiting;
  bool readable = false;
  bool writable = false;
  bool hup = false;       // EPOLLRDHUP/HUP/ERR seen: read until EOF or EAGAIN
  bool read_eof = false;  // EOF read from fd
  bool end_sent = false;  // END_STREAM submitted
  bool fin_received = false;
  bool write_shut = false;
  bool stream_closed = false;
  bool dead = false;
  std::string pending;  // read from fd, not yet taken by the stream's send queue
  size_t pending_off = 0;
  std::string out;  // stream DATA not yet written to fd (bounded by the stream window)
  size_t out_off = 0;
  struct Timer final : Task {
    Pipe* pipe = nullptr;
    void run() override;
  } timer;  // server: connect timeout

 private:
  bool submitPending();
  void notePeak();
};

class Engine;

class Conn final : public IoHandler,
                   public proxy::http2::ClientHandler,
                   public proxy::http2::ServerHandler {
 public:
  Conn(Engine& engine, ScopedFd fd, bool server, const SocketAddress& peer);
  ~Conn() override;

  void onIo(uint32_t events) override;
  void drive();
  void flush();
  void scheduleFlush();
  // Closes now: every pipe's fd is closed with a reset; freed after this batch.
  void close();
  void failHandshake(HandshakeFailure failure);
  void removePipe(int32_t id);
  Pipe* pipe(int32_t id);
  proxy::http2::detail::SessionBase& session();

  // ClientHandler + ServerHandler.
  void onRequest(int32_t stream_id, const proxy::http2::RequestHeaders& request,
                 bool end_stream) override;
  void onResponse(int32_t stream_id, uint16_t status,
                  absl::Span<const proxy::http2::HeaderField> headers, bool end_stream) override;
  void onData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream) override;
  void onTrailers(int32_t stream_id, absl::Span<const proxy::http2::HeaderField> trailers) override;
  void onStreamClosed(int32_t stream_id, uint32_t error_code) override;
  void onGoaway(int32_t last_stream_id) override;
  void onSendReady(int32_t stream_id) override;

  Engine& engine;
  ScopedFd fd;
  const bool server;
  const SocketAddress peer;
  SSL* ssl = nullptr;
  ConnVerify verify;
  PeerVerifier verifier;  // client: the one of the stream that opened the connection
  std::unique_ptr<proxy::http2::ClientSession> client;
  std::unique_ptr<proxy::http2::ServerSession> srv;
  std::shared_ptr<Identity> identity;              // client: the source identity
  std::shared_ptr<const Credentials> credentials;  // what this connection presents
  std::string peer_identity;                       // the peer's first URI SAN
  bool tcp_connecting = false;
  bool handshaking = true;
  bool confirmed = false;  // client: the server sent something after the handshake
  bool readable = false;
  bool writable = false;
  bool dead = false;
  uint64_t deadline_ms = 0;  // handshake deadline, then (client, no streams) idle expiry
  std::string out;
  size_t out_off = 0;
  absl::flat_hash_map<int32_t, std::unique_ptr<Pipe>> pipes;

  struct FlushTask final : Task {
    Conn* conn = nullptr;
    void run() override { conn->flush(); }
  } flush_task;
  struct TimerTask final : Task {
    Conn* conn = nullptr;
    void run() override;
  } timer_task;

 private:
  void handshakeDone();
  void armIdle();
  void readAll();
};

class Engine {
 public:
  Engine(Loop& loop, bool server, const TunnelLimits& limits, LogSink log);
  ~Engine();

  // Moves the object to the dead list; freed after the current batch.
  void retire(Conn* conn);
  void retire(std::unique_ptr<Pipe> pipe);
  void logRefusal(const SocketAddress& peer, absl::string_view what, absl::string_view reason);
  void countFailure(HandshakeFailure failure) {
    counters.handshakes_failed[static_cast<size_t>(failure)].fetch_add(1,
                                                                       std::memory_order_relaxed);
  }
  // Client: the session ticket store, per (source identity name, peer).
  void storeSession(Conn& conn, SSL_SESSION* session);
  SSL_SESSION* findSession(const std::string& identity, const SocketAddress& peer,
                           const Credentials* creds);
  void removeFromPool(Conn* conn);
  // A new SSL_CTX with `bundle` for new connections (live ones keep theirs). Client: the
  // cached tickets are dropped (they were verified against the old bundle).
  absl::Status setTrust(std::shared_ptr<const TrustBundle> bundle);
  Conn* addConn(std::unique_ptr<Conn> conn);
  void closeAll();

  // Client.
  void openStream(std::shared_ptr<Identity> source, const StreamRequest& request, ScopedFd fd);
  // Server.
  void acceptAll();

  Loop& loop;
  const bool server;
  TunnelLimits limits;
  LogSink log;
  SSL_CTX* ctx = nullptr;
  std::shared_ptr<const TrustBundle> trust;
  TunnelCounters counters;
  // read_chunk bytes each. Separate: a TLS read is parsed by nghttp2 while its callbacks
  // read TCP sockets (a 200 starts the relay from inside feed()).
  std::vector<uint8_t> tcp_scratch;
  std::vector<uint8_t> tls_scratch;

  // Server.
  std::shared_ptr<Identity> identity;
  PeerVerifier server_verifier;
  InboundHook hook;
  ScopedFd listener;
  struct Listener final : IoHandler {
    Engine* engine = nullptr;
    void onIo(uint32_t) override { engine->acceptAll(); }
  } listener_handler;

  // Client pool: (source identity name, peer) → connections.
  using PoolKey = std::pair<std::string, SocketAddress>;
  absl::flat_hash_map<PoolKey, std::vector<Conn*>> pool;
  struct CachedSession {
    std::shared_ptr<const Credentials> creds;
    SSL_SESSION* session = nullptr;
  };
  absl::flat_hash_map<PoolKey, CachedSession> sessions;
  static constexpr size_t kMaxCachedSessions = 4096;

  absl::flat_hash_map<Conn*, std::unique_ptr<Conn>> conns;

 private:
  void reap();
  std::vector<std::unique_ptr<Conn>> dead_conns_;
  std::vector<std::unique_ptr<Pipe>> dead_pipes_;
  struct Reaper final : Task {
    Engine* engine = nullptr;
    void run() override { engine->reap(); }
  } reaper_;
  absl::flat_hash_set<std::pair<IpAddress, std::string>> logged_;
  bool log_full_ = false;
};

}  // namespace meshd::tunnel::detail
