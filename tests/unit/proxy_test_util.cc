#include "proxy_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>

#include "proxy/http1/chars.h"

namespace meshd::proxy::testing {
namespace {

using http1::ChunkedDecoder;
using http1::ParseStatus;

bool waitReadable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) > 0;
}

std::string lowerCopy(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = http1::chars::lower(c);
  return out;
}

std::string findHeader(const std::vector<std::pair<std::string, std::string>>& h,
                       std::string_view name) {
  const std::string want = lowerCopy(name);
  for (const auto& [n, v] : h) {
    if (lowerCopy(n) == want) return v;
  }
  return "";
}

}  // namespace

SocketAddress loopback(uint16_t port) {
  SocketAddress a = *SocketAddress::parse("127.0.0.1:0");
  a.port = port;
  return a;
}

// --- Socket ---

Socket Socket::connectTo(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss;
  const socklen_t len = loopback(port).toSockaddr(&ss);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    ::close(fd);
    return Socket();
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return Socket(fd);
}

void Socket::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

std::string Socket::readSome(int timeout_ms, bool* eof) {
  if (eof != nullptr) *eof = false;
  if (!waitReadable(fd_.get(), timeout_ms)) return "";
  char buf[65536];
  const ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
  if (n <= 0) {
    if (eof != nullptr) *eof = true;
    return "";
  }
  return std::string(buf, static_cast<size_t>(n));
}

std::string Socket::readAll(int timeout_ms, bool* closed) {
  std::string out;
  if (closed != nullptr) *closed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    bool eof = false;
    std::string s = readSome(100, &eof);
    if (eof) {
      if (closed != nullptr) *closed = true;
      break;
    }
    out += s;
  }
  return out;
}

bool Socket::readUntil(std::string& buffered, std::string_view needle, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (buffered.find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    bool eof = false;
    std::string s = readSome(100, &eof);
    if (eof) return buffered.find(needle) != std::string::npos;
    buffered += s;
  }
  return true;
}

void Socket::shutdownWrite() { ::shutdown(fd_.get(), SHUT_WR); }

// --- parsing ---

std::string ParsedRequest::header(std::string_view name) const { return findHeader(headers, name); }

int ParsedRequest::count(std::string_view name) const {
  int n = 0;
  const std::string want = lowerCopy(name);
  for (const auto& h : headers) n += lowerCopy(h.first) == want;
  return n;
}

std::string ParsedResponse::header(std::string_view name) const {
  return findHeader(headers, name);
}

std::optional<ParsedRequest> parseOneRequest(std::string_view bytes, size_t* consumed,
                                             bool* error) {
  *consumed = 0;
  *error = false;
  http1::RequestParser parser;
  const ParseStatus st = parser.parse(bytes);
  if (st != ParseStatus::kDone) {
    *error = st == ParseStatus::kError;
    return std::nullopt;
  }
  const http1::RequestHead& h = parser.head();
  ParsedRequest r;
  r.method = std::string(h.method);
  r.target = std::string(h.target);
  r.authority = std::string(h.authority);
  r.version = h.version == http1::Version::kHttp10 ? "HTTP/1.0" : "HTTP/1.1";
  for (const auto& f : h.headers) r.headers.emplace_back(f.name, f.value);
  std::string_view body = bytes.substr(parser.headLength());
  size_t used = parser.headLength();
  if (h.framing.body == http1::BodyKind::kContentLength) {
    if (body.size() < h.framing.content_length) return std::nullopt;
    r.body = std::string(body.substr(0, h.framing.content_length));
    used += h.framing.content_length;
  } else if (h.framing.body == http1::BodyKind::kChunked) {
    ChunkedDecoder dec;
    while (true) {
      const ChunkedDecoder::Result res = dec.decode(body);
      if (res.status == ChunkedDecoder::Status::kError) {
        *error = true;
        return std::nullopt;
      }
      r.body.append(res.data);
      body.remove_prefix(res.consumed);
      used += res.consumed;
      if (res.status == ChunkedDecoder::Status::kDone) break;
      if (res.status == ChunkedDecoder::Status::kNeedMore) return std::nullopt;
    }
  }
  *consumed = used;
  return r;
}

std::vector<ParsedRequest> parseRequests(std::string_view bytes, std::string* rest, bool* error) {
  std::vector<ParsedRequest> out;
  bool err = false;
  while (!bytes.empty()) {
    size_t used = 0;
    std::optional<ParsedRequest> r = parseOneRequest(bytes, &used, &err);
    if (!r.has_value()) break;
    out.push_back(std::move(*r));
    bytes.remove_prefix(used);
  }
  if (error != nullptr) *error = err;
  if (rest != nullptr) *rest = std::string(bytes);
  return out;
}

std::optional<ParsedResponse> readResponse(Socket& s, std::string& buffered, bool head_request) {
  http1::ResponseParser parser;
  http1::RequestContext ctx;
  ctx.head = head_request;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kIoTimeoutMs);
  auto more = [&]() -> bool {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    bool eof = false;
    std::string got = s.readSome(100, &eof);
    if (eof) return false;
    buffered += got;
    return true;
  };
  while (true) {
    parser.reset();
    ParseStatus st;
    while ((st = parser.parse(buffered, ctx)) == ParseStatus::kNeedMore) {
      if (!more()) return std::nullopt;
    }
    if (st == ParseStatus::kError) return std::nullopt;
    if (!parser.head().informational) break;
    buffered.erase(0, parser.headLength());  // skip 1xx
  }
  ParsedResponse r;
  const http1::ResponseHead& h = parser.head();
  r.status = h.status;
  for (const auto& f : h.headers) r.headers.emplace_back(f.name, f.value);
  const http1::Framing framing = h.framing;
  const size_t head_len = parser.headLength();
  buffered.erase(0, head_len);
  switch (framing.body) {
    case http1::BodyKind::kContentLength:
      while (buffered.size() < framing.content_length) {
        if (!more()) return std::nullopt;
      }
      r.body = buffered.substr(0, framing.content_length);
      buffered.erase(0, framing.content_length);
      break;
    case http1::BodyKind::kChunked: {
      ChunkedDecoder dec;
      size_t pos = 0;
      while (true) {
        const ChunkedDecoder::Result res = dec.decode(std::string_view(buffered).substr(pos));
        if (res.status == ChunkedDecoder::Status::kError) return std::nullopt;
        r.body.append(res.data);
        pos += res.consumed;
        if (res.status == ChunkedDecoder::Status::kDone) break;
        if (res.status == ChunkedDecoder::Status::kNeedMore && !more()) return std::nullopt;
      }
      buffered.erase(0, pos);
      break;
    }
    case http1::BodyKind::kCloseDelimited: {
      bool eof = false;
      while (!eof) {
        std::string got = s.readSome(kIoTimeoutMs, &eof);
        if (!eof && got.empty()) return std::nullopt;
        buffered += got;
      }
      r.body = buffered;
      buffered.clear();
      break;
    }
    default:
      break;
  }
  return r;
}

// --- UpstreamServer ---

UpstreamServer::UpstreamServer(Script script) : script_(std::move(script)) {
  listener_ = ScopedFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_storage ss;
  const socklen_t len = loopback(0).toSockaddr(&ss);
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::listen(listener_.get(), 128) != 0) {
    throw std::runtime_error("upstream test server: bind/listen on 127.0.0.1:0 failed");
  }
  socklen_t l = sizeof(ss);
  ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&ss), &l);
  port_ = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), l).port;
  acceptor_ = std::thread([this] { acceptLoop(); });
}

UpstreamServer::~UpstreamServer() {
  stop_ = true;
  ::shutdown(listener_.get(), SHUT_RDWR);
  acceptor_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (std::thread& t : conn_threads_) t.join();
}

void UpstreamServer::acceptLoop() {
  while (!stop_) {
    if (!waitReadable(listener_.get(), 50)) continue;
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const int index = accepts_++;
    std::lock_guard<std::mutex> lock(mu_);
    open_fds_.push_back(fd);
    received_[index];
    conn_threads_.emplace_back([this, fd, index] {
      Conn c(*this, fd, index);
      script_(c);
      {
        std::lock_guard<std::mutex> l(mu_);
        for (int& f : open_fds_) {
          if (f == fd) f = -1;
        }
      }
      c.close();
      std::lock_guard<std::mutex> l(mu_);
      ++done_;
      cv_.notify_all();
    });
  }
}

std::string UpstreamServer::received() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string all;
  for (const auto& [i, s] : received_) all += s;
  return all;
}

std::string UpstreamServer::receivedOn(int conn_index) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = received_.find(conn_index);
  return it == received_.end() ? "" : it->second;
}

std::vector<ParsedRequest> UpstreamServer::requests() const {
  std::vector<ParsedRequest> all;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [i, s] : received_) {
    for (ParsedRequest& r : parseRequests(s)) all.push_back(std::move(r));
  }
  return all;
}

bool UpstreamServer::waitConnectionsDone(int n, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return done_ >= n; });
}

void UpstreamServer::echoTarget(Conn& c) {
  while (auto req = c.readRequest()) {
    const std::string body = "ok:" + req->target;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  }
}

void UpstreamServer::Conn::record(std::string_view bytes) {
  std::lock_guard<std::mutex> lock(server_.mu_);
  server_.received_[index_].append(bytes);
}

std::optional<ParsedRequest> UpstreamServer::Conn::readRequest() {
  while (true) {
    size_t used = 0;
    bool error = false;
    std::optional<ParsedRequest> r = parseOneRequest(buffered_, &used, &error);
    if (error) return std::nullopt;
    if (r.has_value()) {
      buffered_.erase(0, used);
      return r;
    }
    bool eof = false;
    std::string got = sock_.readSome(kIoTimeoutMs, &eof);
    if (got.empty()) return std::nullopt;
    record(got);
    buffered_ += got;
  }
}

bool UpstreamServer::Conn::readUntil(std::string_view needle) {
  while (buffered_.find(needle) == std::string::npos) {
    bool eof = false;
    std::string got = sock_.readSome(kIoTimeoutMs, &eof);
    if (got.empty()) return false;
    record(got);
    buffered_ += got;
  }
  return true;
}

std::string UpstreamServer::Conn::readSome(int timeout_ms) {
  std::string got = sock_.readSome(timeout_ms);
  record(got);
  buffered_ += got;
  return got;
}

// --- TestRouter / TestObserver ---

void TestRouter::route(const RequestInfo& req, RouteDecision& out) {
  std::lock_guard<std::mutex> lock(mu_);
  seen_.push_back(
      {std::string(req.method), std::string(req.target), std::string(req.authority), req.orig_dst});
  if (fn_) fn_(req, out);
}

bool TestRouter::routeConnection(const SocketAddress&, SocketAddress& upstream,
                                 std::string_view& cluster) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!conn_upstream_.valid()) return false;
  upstream = conn_upstream_;
  cluster = "test/conn:80";
  return true;
}

void TestRouter::forwardTo(const SocketAddress& upstream) {
  setConnectionUpstream(upstream);
  setRoute([upstream](const RequestInfo&, RouteDecision& d) {
    d.upstream = upstream;
    d.cluster = "test/web:80";
  });
}

void TestRouter::setRoute(RouteFn fn) {
  std::lock_guard<std::mutex> lock(mu_);
  fn_ = std::move(fn);
}

void TestRouter::setConnectionUpstream(const SocketAddress& upstream) {
  std::lock_guard<std::mutex> lock(mu_);
  conn_upstream_ = upstream;
}

std::vector<TestRouter::Seen> TestRouter::seen() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_;
}

void TestObserver::onRequest(const RequestRecord& r) {
  std::lock_guard<std::mutex> lock(mu_);
  records_.push_back({std::string(r.cluster), std::string(r.response_flags), std::string(r.method),
                      std::string(r.protocol), std::string(r.request_id), r.response_code,
                      r.request_bytes, r.response_bytes, r.upstream, r.orig_dst,
                      std::string(r.grpc_status), std::string(r.path), std::string(r.authority),
                      std::string(r.user_agent), r.start_unix_us, r.attempts});
  cv_.notify_all();
}

bool TestObserver::waitFor(size_t n, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return records_.size() >= n; });
}

std::vector<TestObserver::Record> TestObserver::records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_;
}

}  // namespace meshd::proxy::testing
