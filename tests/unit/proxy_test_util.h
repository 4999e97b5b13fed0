// Test fixtures for the proxy core, on 127.0.0.1 only:
//
//   test client ──► Proxy (127.0.0.1:0, N workers) ──► UpstreamServer (127.0.0.1:0)
//                    │ TestOriginalDst: every peer → kVip (10.96.0.10:80)
//                    │ TestRouter: routeConnection → the configured upstream;
//                    │             route() → a per-test decision function
//                    └ TestObserver: copies of every RequestRecord
//
// UpstreamServer runs a script per accepted connection on its own thread and records
// every byte it received; helpers parse those bytes back into requests with the strict
// http1 parser, so a test asserts exactly what reached the upstream.
#pragma once

#include <poll.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/net.h"
#include "common/scoped_fd.h"
#include "proxy/core/proxy.h"
#include "proxy/http1/chunked_decoder.h"
#include "proxy/http1/head_parser.h"

namespace meshd::proxy::testing {

constexpr int kIoTimeoutMs = 5000;  // only to avoid hangs; never asserted on

SocketAddress loopback(uint16_t port);

// A connected, blocking TCP socket with poll-bounded reads.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  static Socket connectTo(uint16_t port);
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }
  void send(std::string_view bytes);
  // Reads what is available (waits up to timeout for the first byte). "" on EOF/timeout;
  // `eof` says which.
  std::string readSome(int timeout_ms = kIoTimeoutMs, bool* eof = nullptr);
  // Reads until EOF (or timeout; `closed` says whether EOF came).
  std::string readAll(int timeout_ms = kIoTimeoutMs, bool* closed = nullptr);
  // Reads until `buffered` contains `needle`; false on EOF/timeout.
  bool readUntil(std::string& buffered, std::string_view needle, int timeout_ms = kIoTimeoutMs);
  void shutdownWrite();
  void close() { fd_.reset(); }

 private:
  ScopedFd fd_;
};

struct ParsedRequest {
  std::string method, target, authority, version;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string header(std::string_view name) const;  // first, case-insensitive; "" if none
  int count(std::string_view name) const;
};

struct ParsedResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string header(std::string_view name) const;
};

// Parses one complete request from the start of `bytes`; `consumed` = its length.
std::optional<ParsedRequest> parseOneRequest(std::string_view bytes, size_t* consumed, bool* error);
// Parses as many complete requests as `bytes` holds (strictly). `rest` gets what is left
// (an incomplete or invalid message); `error` is set if a message was invalid.
std::vector<ParsedRequest> parseRequests(std::string_view bytes, std::string* rest = nullptr,
                                         bool* error = nullptr);

// Reads one complete response from `s` (buffering into `buffered`, which keeps any bytes
// that follow). nullopt on EOF/timeout/invalid.
std::optional<ParsedResponse> readResponse(Socket& s, std::string& buffered,
                                           bool head_request = false);

// Serves each accepted connection with `script` on its own thread.
class UpstreamServer {
 public:
  class Conn {
   public:
    Conn(UpstreamServer& server, int fd, int index) : server_(server), sock_(fd), index_(index) {}
    // The next complete request (strictly parsed); nullopt on EOF/timeout/bad bytes.
    std::optional<ParsedRequest> readRequest();
    // Reads until `buffered` holds `needle`.
    bool readUntil(std::string_view needle);
    std::string readSome(int timeout_ms = kIoTimeoutMs);
    void send(std::string_view bytes) { sock_.send(bytes); }
    void shutdownWrite() { sock_.shutdownWrite(); }
    void close() { sock_.close(); }
    int index() const { return index_; }
    std::string& buffered() { return buffered_; }
    Socket& socket() { return sock_; }

   private:
    void record(std::string_view bytes);
    UpstreamServer& server_;
    Socket sock_;
    int index_;
    std::string buffered_;
  };
  using Script = std::function<void(Conn&)>;

  explicit UpstreamServer(Script script);
  ~UpstreamServer();

  SocketAddress address() const { return loopback(port_); }
  uint16_t port() const { return port_; }
  int accepts() const { return accepts_.load(); }
  // Every byte received, all connections, in arrival order per connection.
  std::string received() const;
  std::string receivedOn(int conn_index) const;
  // Requests parsed from all connections' bytes.
  std::vector<ParsedRequest> requests() const;
  // Waits until at least `n` connections finished their script (true) or timeout.
  bool waitConnectionsDone(int n, int timeout_ms = kIoTimeoutMs);

  // Script: answer every request with 200 and body "ok:<target>" until EOF.
  static void echoTarget(Conn& c);

 private:
  void acceptLoop();
  ScopedFd listener_;
  uint16_t port_ = 0;
  Script script_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepts_{0};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> conn_threads_;
  std::vector<int> open_fds_;
  std::map<int, std::string> received_;
  int done_ = 0;
};

class TestOriginalDst : public OriginalDst {
 public:
  std::optional<SocketAddress> lookup(int, const SocketAddress&) override {
    if (unknown) return std::nullopt;
    return vip;
  }
  SocketAddress vip = *SocketAddress::parse("10.96.0.10:80");
  std::atomic<bool> unknown{false};
};

class TestRouter : public Router {
 public:
  using RouteFn = std::function<void(const RequestInfo&, RouteDecision&)>;
  void route(const RequestInfo& req, RouteDecision& out) override;
  bool routeConnection(const SocketAddress& orig_dst, SocketAddress& upstream,
                       std::string_view& cluster) override;
  // Forwards everything to `upstream` (and connections too).
  void forwardTo(const SocketAddress& upstream);
  void setRoute(RouteFn fn);
  void setConnectionUpstream(const SocketAddress& upstream);

  struct Seen {
    std::string method, target, authority;
    SocketAddress orig_dst;
  };
  std::vector<Seen> seen() const;

 private:
  mutable std::mutex mu_;
  RouteFn fn_;
  SocketAddress conn_upstream_;
  std::vector<Seen> seen_;
};

class TestObserver : public Observer {
 public:
  struct Record {
    std::string cluster, flags, method, protocol, request_id;
    int code = 0;
    uint64_t request_bytes = 0, response_bytes = 0;
    SocketAddress upstream, orig_dst;
    std::string grpc_status;
    std::string path, authority, user_agent;
    uint64_t start_unix_us = 0;
    uint32_t attempts = 0;
  };
  void onRequest(const RequestRecord& r) override;
  // Waits until `n` records exist (true) or timeout.
  bool waitFor(size_t n, int timeout_ms = kIoTimeoutMs);
  std::vector<Record> records() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
};

}  // namespace meshd::proxy::testing
