#include "telemetry/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <list>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/net.h"
#include "common/status.h"

namespace meshd::telemetry {
namespace {

using Clock = std::chrono::steady_clock;

// Debian's abseil has its own string_view type; absl::StrCat/StrSplit take that.
absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// RFC 9110 tchar.
bool isTchar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!isTchar(c)) return false;
  }
  return true;
}

HttpParse bad(std::string why) {
  HttpParse p;
  p.state = HttpParse::State::kBad;
  p.error = std::move(why);
  return p;
}

// Target characters: visible ASCII only (no spaces, no controls, no 8-bit).
bool validTarget(std::string_view t) {
  if (t.empty() || t[0] != '/') return false;
  for (char c : t) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
  }
  return true;
}

}  // namespace

HttpParse parseHttpRequestHead(std::string_view data, size_t max_bytes) {
  const size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (data.size() > max_bytes) {
      HttpParse p;
      p.state = HttpParse::State::kTooLarge;
      p.error = absl::StrCat("request head larger than ", max_bytes, " bytes");
      return p;
    }
    // A request line that is already wrong need not wait for the rest.
    const size_t eol = data.find("\r\n");
    std::string_view first = eol == std::string_view::npos ? data : data.substr(0, eol);
    for (char c : first) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\r') || u >= 0x7f)
        return bad("request line has control or non-ASCII bytes");
    }
    return HttpParse{};
  }
  if (end + 4 > max_bytes) {
    HttpParse p;
    p.state = HttpParse::State::kTooLarge;
    p.error = absl::StrCat("request head larger than ", max_bytes, " bytes");
    return p;
  }
  std::vector<absl::string_view> lines = absl::StrSplit(av(data.substr(0, end)), "\r\n");
  // Request line: method SP request-target SP HTTP-version, single spaces.
  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3) return bad("request line is not \"METHOD /path HTTP/1.1\"");
  const std::string_view method(parts[0].data(), parts[0].size());
  const std::string_view target(parts[1].data(), parts[1].size());
  if (!isToken(method)) return bad("bad method");
  if (!validTarget(target)) return bad("bad request target (must start with '/')");
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") return bad("unsupported HTTP version");
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string_view line(lines[i].data(), lines[i].size());
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return bad("header line without ':'");
    // No whitespace between field name and colon (RFC 9112 5.1), no obs-fold.
    if (!isToken(line.substr(0, colon))) return bad("bad header name");
    for (char c : line.substr(colon + 1)) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return bad("control character in header value");
    }
  }
  HttpParse p;
  p.state = HttpParse::State::kComplete;
  p.head.method = std::string(method);
  p.head.target = std::string(target);
  p.head.path = std::string(target.substr(0, target.find('?')));
  return p;
}

absl::StatusOr<ListenAddress> parseListenAddress(std::string_view text) {
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", av(text), "\" is not HOST:PORT (e.g. 0.0.0.0:15020 or [::]:15020)"));
  };
  ListenAddress out;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return invalid();
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return invalid();
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  uint32_t port_num = 0;
  if (port.empty() || !absl::SimpleAtoi(av(port), &port_num) || port_num > 65535) return invalid();
  if (!IpAddress::parse(host).ok()) return invalid();
  out.host = std::string(host);
  out.port = static_cast<uint16_t>(port_num);
  return out;
}

std::string_view httpReason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

absl::StatusOr<HttpServerPtr> HttpServer::start(std::string_view address, HttpHandler handler,
                                                Options options) {
  ASSIGN_OR_RETURN(ListenAddress where, parseListenAddress(address));
  ASSIGN_OR_RETURN(IpAddress ip, IpAddress::parse(where.host));
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (ip.isV4()) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(where.port);
    std::memcpy(&sin->sin_addr, ip.bytes.data(), 4);
    len = sizeof(sockaddr_in);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(where.port);
    std::memcpy(&sin6->sin6_addr, ip.bytes.data(), 16);
    len = sizeof(sockaddr_in6);
  }
  const int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return errnoError(errno, absl::StrCat("creating the metrics socket for ", av(address)));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    const int err = errno;
    close(fd);
    return errnoError(err,
                      absl::StrCat("binding the metrics address ", av(address),
                                   " (is another meshd using it? pick one with --metrics-addr)"));
  }
  if (listen(fd, 64) != 0) {
    const int err = errno;
    close(fd);
    return errnoError(err, absl::StrCat("listening on ", av(address)));
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  const uint16_t port =
      ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                       : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    const int err = errno;
    close(fd);
    return errnoError(err, "creating the metrics server's eventfd");
  }
  return HttpServerPtr(new HttpServer(fd, wake, port, std::move(handler), options));
}

HttpServer::HttpServer(int listen_fd, int wake_fd, uint16_t port, HttpHandler handler,
                       Options options)
    : listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      port_(port),
      handler_(std::move(handler)),
      options_(options) {
  thread_ = std::thread([this] { run(); });
}

HttpServer::~HttpServer() {
  stop();
  close(listen_fd_);
  close(wake_fd_);
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
}

namespace {

struct Connection {
  int fd;
  Clock::time_point deadline;
  std::string in;
  std::string out;
  size_t written = 0;
  bool responding = false;
  bool dead = false;  // peer went away or a socket error: close without a response
};

std::string renderResponse(const HttpResponse& r, bool head_only) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", r.status, " ", av(httpReason(r.status)), "\r\n",
                   "Content-Type: ", r.content_type, "\r\n", "Content-Length: ", r.body.size(),
                   "\r\n", "Connection: close\r\n");
  if (r.status == 405) out += "Allow: GET\r\n";
  out += "\r\n";
  if (!head_only) out += r.body;
  return out;
}

HttpResponse plain(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  if (r.body.empty() || r.body.back() != '\n') r.body += '\n';
  return r;
}

}  // namespace

void HttpServer::run() {
  std::list<Connection> conns;
  std::vector<pollfd> fds;
  std::vector<Connection*> by_index;
  while (!stopping_.load()) {
    fds.clear();
    by_index.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    // Stop accepting while at the connection bound; the kernel backlog holds the rest.
    fds.push_back({conns.size() < options_.max_connections ? listen_fd_ : -1, POLLIN, 0});
    auto now = Clock::now();
    Clock::time_point next = now + std::chrono::seconds(60);
    for (Connection& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.responding ? POLLOUT : POLLIN), 0});
      by_index.push_back(&c);
      next = std::min(next, c.deadline);
    }
    const auto wait_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    const int n = poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(wait_ms, 0)));
    if (n < 0 && errno != EINTR) break;
    if (stopping_.load()) break;
    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int cfd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) break;
        conns.push_back(Connection{cfd, Clock::now() + options_.timeout, {}, {}, 0, false, false});
        if (conns.size() >= options_.max_connections) break;
      }
    }
    now = Clock::now();
    for (size_t i = 0; i < by_index.size(); ++i) {
      Connection& c = *by_index[i];
      const short rev = fds[i + 2].revents;
      if (rev == 0) continue;
      if (!c.responding) {
        char buf[4096];
        const ssize_t got = recv(c.fd, buf, sizeof(buf), 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
          c.dead = true;
          continue;
        }
        if (got < 0) continue;
        c.in.append(buf, static_cast<size_t>(got));
        HttpParse p = parseHttpRequestHead(c.in, options_.max_request_bytes);
        HttpResponse resp;
        bool head_only = false;
        switch (p.state) {
          case HttpParse::State::kIncomplete:
            continue;
          case HttpParse::State::kBad:
            resp = plain(400, p.error);
            break;
          case HttpParse::State::kTooLarge:
            resp = plain(431, p.error);
            break;
          case HttpParse::State::kComplete:
            if (p.head.method == "GET" || p.head.method == "HEAD") {
              head_only = p.head.method == "HEAD";
              resp = handler_(p.head.path);
            } else {
              resp = plain(405, "only GET is supported");
            }
            break;
        }
        c.out = renderResponse(resp, head_only);
        c.responding = true;
      } else {
        const ssize_t sent =
            send(c.fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN && errno != EINTR) {
          c.dead = true;
          continue;
        }
        if (sent > 0) c.written += static_cast<size_t>(sent);
      }
    }
    // Close finished, failed and timed-out connections.
    now = Clock::now();
    for (auto it = conns.begin(); it != conns.end();) {
      const bool done = it->responding && it->written == it->out.size();
      if (done || it->dead || it->deadline <= now) {
        if (!done && !it->dead && !it->responding) {
          // Timed out waiting for the request: say so, best effort.
          std::string r = renderResponse(plain(408, "request not received in time"), false);
          [[maybe_unused]] ssize_t s = send(it->fd, r.data(), r.size(), MSG_NOSIGNAL);
        }
        shutdown(it->fd, SHUT_WR);
        close(it->fd);
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Connection& c : conns) close(c.fd);
}

}  // namespace meshd::telemetry
