// mesh-echo's server: one epoll loop serving up to three listeners, so a pod in the lab
// answers TCP, HTTP/1.1 and UDP with its own name and a client can tell which backend
// the mesh picked.
//   TCP:  on accept writes "NAME\n", then echoes every byte back.
//   HTTP: GET/HEAD on any path answers 200 with body "NAME\n" (keep-alive honoured),
//         GET .../headers (any path ending so) adds the request head as received (what a proxy
//         forwarded); other methods 405, malformed requests 400 and close.
//   UDP:  answers each datagram with "NAME\n" to its source.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "tools/endpoint.h"

namespace meshd::tools {

class EchoServer;
using EchoServerPtr = std::unique_ptr<EchoServer>;

class EchoServer {
 public:
  struct Options {
    std::string name;
    std::string bind = "0.0.0.0";     // "::" for dual-stack
    std::optional<uint16_t> tcpPort;  // 0 = pick a free port (tests)
    std::optional<uint16_t> httpPort;
    std::optional<uint16_t> udpPort;
  };

  // Binds and listens on every requested port. Fails with the errno text of the socket
  // call and the address ("is the port in use? is the address on an interface?").
  static absl::StatusOr<EchoServerPtr> create(const Options& options);
  ~EchoServer();

  // Ports actually bound (differ from the options when they asked for 0); 0 = not serving.
  uint16_t tcpPort() const { return tcp_port_; }
  uint16_t httpPort() const { return http_port_; }
  uint16_t udpPort() const { return udp_port_; }

  // Serves until stop(). Returns an error only when epoll itself fails.
  absl::Status run();
  // Makes run() return. Async-signal-safe (writes an eventfd), so a signal handler may call it.
  void stop();

 private:
  enum class Kind { kTcpListener, kHttpListener, kUdp, kTcpConn, kHttpConn, kWake };
  struct Conn {
    explicit Conn(Kind k = Kind::kWake) : kind(k) {}
    Kind kind;
    std::string in;
    std::string out;
    size_t bodyToSkip = 0;
    bool closeAfterWrite = false;
    bool wantWrite = false;
  };

  explicit EchoServer(std::string name) : name_(std::move(name)) {}
  absl::Status listen(Kind kind, const std::string& bind, uint16_t port, uint16_t& bound);
  void accept(int listen_fd, Kind conn_kind);
  void onReadable(int fd, Conn& conn);
  void onUdp(int fd);
  void handleHttp(Conn& conn);
  // Writes what it can of conn.out; returns false when the connection must be closed.
  bool flush(int fd, Conn& conn);
  void updateInterest(int fd, Conn& conn);
  void close(int fd);

  const std::string name_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  // Held open so that on EMFILE we can free one descriptor, accept and drop the pending
  // connection instead of spinning on a listener that stays readable.
  int spare_fd_ = -1;
  uint16_t tcp_port_ = 0;
  uint16_t http_port_ = 0;
  uint16_t udp_port_ = 0;
  std::unordered_map<int, Conn> fds_;
};

}  // namespace meshd::tools
