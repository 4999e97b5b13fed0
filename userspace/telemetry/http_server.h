// A deliberately small HTTP/1.1 server for the telemetry endpoints
// (/healthz, /readyz, /metrics on :15020). One thread multiplexes every
// connection with poll(); each connection carries one GET and is closed
// after the response ("Connection: close"), which is all Prometheus and
// kubelet probes need. Requests are bounded in size and time so a slow or
// hostile client cannot hold the thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"

namespace meshd::telemetry {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Called on the server thread with the request path (query string removed).
using HttpHandler = std::function<HttpResponse(std::string_view path)>;

struct HttpRequestHead {
  std::string method;
  std::string target;  // as sent, e.g. "/metrics?x=1"
  std::string path;    // target without the query string
};

// Result of looking at the bytes received so far.
struct HttpParse {
  enum class State { kIncomplete, kComplete, kBad, kTooLarge };
  State state = State::kIncomplete;
  HttpRequestHead head;
  std::string error;  // why it is bad, for the 400 body
};

// Strict parse of a request head (request line + headers, CRLF line ends).
// Exposed for the table test. A head longer than max_bytes is kTooLarge.
HttpParse parseHttpRequestHead(std::string_view data, size_t max_bytes);

// "host:port" (IPv4 or "[v6]:port"), port 0 picks a free port. Returns
// InvalidArgument naming the text when it cannot be parsed.
struct ListenAddress {
  std::string host;
  uint16_t port = 0;
};
absl::StatusOr<ListenAddress> parseListenAddress(std::string_view text);

class HttpServer;
using HttpServerPtr = std::unique_ptr<HttpServer>;

class HttpServer {
 public:
  struct Options {
    size_t max_request_bytes = 8192;          // request head bound
    std::chrono::milliseconds timeout{5000};  // whole exchange per connection
    size_t max_connections = 128;             // beyond this, accept waits
  };

  // Binds and listens on `address` ("0.0.0.0:15020", "127.0.0.1:0",
  // "[::1]:0") and starts the server thread. Fails when the address cannot
  // be parsed or bound (the error names the address: is another meshd, or
  // another instance, already using the port?).
  static absl::StatusOr<HttpServerPtr> start(std::string_view address, HttpHandler handler,
                                             Options options);
  static absl::StatusOr<HttpServerPtr> start(std::string_view address, HttpHandler handler) {
    return start(address, std::move(handler), Options{});
  }

  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually bound (useful with port 0).
  uint16_t port() const { return port_; }
  // Stops the thread and closes every socket. Idempotent.
  void stop();

 private:
  HttpServer(int listen_fd, int wake_fd, uint16_t port, HttpHandler handler, Options options);
  void run();

  const int listen_fd_;
  const int wake_fd_;  // eventfd: written by stop() to wake poll()
  const uint16_t port_;
  HttpHandler handler_;
  const Options options_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// The reason phrase of the status codes this server sends.
std::string_view httpReason(int status);

}  // namespace meshd::telemetry
