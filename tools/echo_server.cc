#include "tools/echo_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/status.h"
#include "tools/http_request.h"
#include "tools/text_util.h"

namespace meshd::tools {
namespace {

// Output buffered per connection before we stop reading from it: a client that sends
// but never reads must not grow our memory without bound.
constexpr size_t kMaxPendingOut = 1 << 20;

}  // namespace

absl::StatusOr<EchoServerPtr> EchoServer::create(const Options& options) {
  if (!options.tcpPort && !options.httpPort && !options.udpPort) {
    return absl::InvalidArgumentError(
        "nothing to serve: give at least one of --tcp, --http, --udp");
  }
  EchoServerPtr server(new EchoServer(options.name));
  server->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (server->epoll_fd_ < 0) return errnoError(errno, "epoll_create1");
  server->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (server->wake_fd_ < 0) return errnoError(errno, "eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = server->wake_fd_;
  if (epoll_ctl(server->epoll_fd_, EPOLL_CTL_ADD, server->wake_fd_, &ev) < 0) {
    return errnoError(errno, "epoll_ctl(eventfd)");
  }
  server->fds_[server->wake_fd_] = Conn(Kind::kWake);
  server->spare_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);

  if (options.tcpPort) {
    RETURN_IF_ERROR(
        server->listen(Kind::kTcpListener, options.bind, *options.tcpPort, server->tcp_port_));
  }
  if (options.httpPort) {
    RETURN_IF_ERROR(
        server->listen(Kind::kHttpListener, options.bind, *options.httpPort, server->http_port_));
  }
  if (options.udpPort) {
    RETURN_IF_ERROR(server->listen(Kind::kUdp, options.bind, *options.udpPort, server->udp_port_));
  }
  return server;
}

EchoServer::~EchoServer() {
  for (auto& [fd, conn] : fds_) ::close(fd);
  if (spare_fd_ >= 0) ::close(spare_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

absl::Status EchoServer::listen(Kind kind, const std::string& bind, uint16_t port,
                                uint16_t& bound) {
  ASSIGN_OR_RETURN(Endpoint ep, Endpoint::fromHostPort(bind, port));
  const bool udp = kind == Kind::kUdp;
  const char* proto = udp ? "udp" : "tcp";
  const int fd =
      socket(ep.family(), (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoError(errno, strCat("socket(", proto, ")"));
  fds_[fd] = Conn(kind);  // owned from here on: the destructor closes it
  const int one = 1;
  const int zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ep.family() == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ep.addr), ep.len) < 0) {
    return errnoError(errno, strCat("bind ", proto, " ", ep.toString(),
                                    " (is the port in use? is the address local?)"));
  }
  if (!udp && ::listen(fd, SOMAXCONN) < 0) {
    return errnoError(errno, strCat("listen ", ep.toString()));
  }
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) < 0) {
    return errnoError(errno, "getsockname");
  }
  bound = Endpoint::fromSockaddr(reinterpret_cast<sockaddr*>(&local), len).port();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0) return errnoError(errno, "epoll_ctl");
  return absl::OkStatus();
}

void EchoServer::stop() {
  const uint64_t one = 1;
  // write(2) is async-signal-safe; a full counter (EAGAIN) still means "wake up".
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
}

absl::Status EchoServer::run() {
  epoll_event events[64];
  for (;;) {
    const int n = epoll_wait(epoll_fd_, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errnoError(errno, "epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      auto it = fds_.find(fd);
      if (it == fds_.end()) continue;  // closed earlier in this batch
      Conn& conn = it->second;
      switch (conn.kind) {
        case Kind::kWake:
          return absl::OkStatus();
        case Kind::kTcpListener:
          accept(fd, Kind::kTcpConn);
          break;
        case Kind::kHttpListener:
          accept(fd, Kind::kHttpConn);
          break;
        case Kind::kUdp:
          onUdp(fd);
          break;
        case Kind::kTcpConn:
        case Kind::kHttpConn:
          if (events[i].events & (EPOLLERR | EPOLLHUP)) {
            close(fd);
            break;
          }
          if (events[i].events & EPOLLOUT) {
            if (!flush(fd, conn)) {
              close(fd);
              break;
            }
          }
          if (events[i].events & EPOLLIN) onReadable(fd, conn);
          break;
      }
    }
  }
}

void EchoServer::accept(int listen_fd, Kind conn_kind) {
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
      if ((errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
        std::fprintf(stderr, "mesh-echo %s: out of file descriptors, dropping a connection\n",
                     name_.c_str());
        ::close(spare_fd_);
        const int dropped = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (dropped >= 0) ::close(dropped);
        spare_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
        continue;
      }
      std::fprintf(stderr, "mesh-echo %s: accept: %s\n", name_.c_str(), std::strerror(errno));
      return;
    }
    Conn& conn = fds_[fd] = Conn(conn_kind);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      close(fd);
      continue;
    }
    if (conn_kind == Kind::kTcpConn) {
      conn.out = name_ + "\n";
      if (!flush(fd, conn)) close(fd);
    }
  }
}

void EchoServer::onReadable(int fd, Conn& conn) {
  char buf[16384];
  for (;;) {
    if (conn.out.size() >= kMaxPendingOut) break;  // resumes when the peer reads
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) {
      // Peer finished sending. Deliver what is pending, then close.
      conn.closeAfterWrite = true;
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      close(fd);
      return;
    }
    if (conn.kind == Kind::kTcpConn) {
      conn.out.append(buf, static_cast<size_t>(n));
    } else {
      conn.in.append(buf, static_cast<size_t>(n));
      handleHttp(conn);
      if (conn.closeAfterWrite) break;
    }
  }
  if (!flush(fd, conn)) {
    close(fd);
    return;
  }
  updateInterest(fd, conn);
}

void EchoServer::handleHttp(Conn& conn) {
  while (!conn.closeAfterWrite) {
    if (conn.bodyToSkip > 0) {
      const size_t skip = std::min(conn.bodyToSkip, conn.in.size());
      conn.in.erase(0, skip);
      conn.bodyToSkip -= skip;
      if (conn.bodyToSkip > 0) return;
    }
    auto head = parseRequestHead(conn.in);
    if (!head.ok()) {
      const std::string body = std::string(head.status().message()) + "\n";
      conn.out += strCat("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n",
                         "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
      conn.closeAfterWrite = true;
      return;
    }
    if (!head->has_value()) return;  // need more bytes
    const RequestHead& req = **head;
    // GET /headers also returns the request head as received (what a proxy forwarded).
    const std::string received =
        req.target.ends_with("/headers") ? conn.in.substr(0, req.headBytes) : std::string();
    conn.in.erase(0, req.headBytes);
    conn.bodyToSkip = req.contentLength;
    const std::string connection = req.keepAlive ? "keep-alive" : "close";
    if (req.method == "GET" || req.method == "HEAD") {
      const std::string body = name_ + "\n" + received;
      conn.out +=
          strCat("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ", body.size(),
                 "\r\nConnection: ", connection, "\r\n\r\n", req.method == "GET" ? body : "");
    } else {
      conn.out +=
          strCat("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n",
                 "Connection: ", connection, "\r\n\r\n");
    }
    if (!req.keepAlive) conn.closeAfterWrite = true;
  }
}

void EchoServer::onUdp(int fd) {
  const std::string reply = name_ + "\n";
  char buf[65536];
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    const ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&peer), &len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // EAGAIN, or an ICMP error queued on the socket: nothing to answer
    }
    // Best effort, like any UDP server: a full socket buffer drops the reply.
    sendto(fd, reply.data(), reply.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&peer), len);
  }
}

bool EchoServer::flush(int fd, Conn& conn) {
  while (!conn.out.empty()) {
    const ssize_t n = ::send(fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return false;
    }
    conn.out.erase(0, static_cast<size_t>(n));
  }
  if (conn.out.empty() && conn.closeAfterWrite) return false;
  updateInterest(fd, conn);
  return true;
}

void EchoServer::updateInterest(int fd, Conn& conn) {
  const bool want_write = !conn.out.empty();
  const bool want_read = conn.out.size() < kMaxPendingOut && !conn.closeAfterWrite;
  epoll_event ev{};
  ev.events = (want_read ? EPOLLIN : 0u) | (want_write ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
  conn.wantWrite = want_write;
}

void EchoServer::close(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  fds_.erase(fd);
}

}  // namespace meshd::tools
