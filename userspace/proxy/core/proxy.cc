#include "proxy/core/proxy.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "proxy/core/worker.h"
#include "proxy/http2/server_session.h"

namespace meshd::proxy {
namespace {

absl::StatusOr<ScopedFd> bindListener(const SocketAddress& addr, int backlog) {
  const std::string where = addr.toString();
  ScopedFd fd(::socket(addr.ip.family == AF_INET6 ? AF_INET6 : AF_INET,
                       SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errnoError(errno, absl::StrCat("socket for listener ", where));
  int one = 1;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    return errnoError(errno, absl::StrCat("SO_REUSEADDR/SO_REUSEPORT on listener ", where));
  }
  sockaddr_storage ss;
  const socklen_t len = addr.toSockaddr(&ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return errnoError(errno, absl::StrCat("bind ", where, " (is another process using the port?)"));
  }
  if (::listen(fd.get(), backlog) != 0) return errnoError(errno, absl::StrCat("listen ", where));
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Proxy>> Proxy::start(ProxyOptions options, Router& router,
                                                    OriginalDst& original_dst, Observer* observer) {
  if (!options.listen.valid()) {
    return absl::InvalidArgumentError("proxy listen address is unset");
  }
  if (options.max_buffer_bytes < 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "proxy max_buffer_bytes ", options.max_buffer_bytes, " is below the minimum of 1024"));
  }
  {
    // The HTTP/2 limits are checked by the codec when a session is made: make one now, so
    // a bad value fails here rather than on the first HTTP/2 connection.
    struct NoHandler final : http2::ServerHandler {
      void onRequest(int32_t, const http2::RequestHeaders&, bool) override {}
      void onData(int32_t, absl::Span<const uint8_t>, bool) override {}
      void onTrailers(int32_t, absl::Span<const http1::HeaderField>) override {}
      void onStreamClosed(int32_t, uint32_t) override {}
    } no_handler;
    auto probe = http2::ServerSession::create(no_handler, options.h2_limits);
    if (!probe.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("proxy h2_limits: ", probe.status().message()));
    }
  }
  unsigned workers = options.workers;
  if (workers == 0) workers = std::max(1u, std::thread::hardware_concurrency());
  std::unique_ptr<Proxy> proxy(new Proxy());
  SocketAddress addr = options.listen;
  for (unsigned i = 0; i < workers; ++i) {
    ASSIGN_OR_RETURN(ScopedFd fd, bindListener(addr, options.listen_backlog));
    if (i == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        return errnoError(errno, "getsockname of the proxy listener");
      }
      addr = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
      proxy->port_ = addr.port;
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Worker> w,
                     Worker::create(options, router, original_dst, observer, std::move(fd)));
    proxy->workers_.push_back(std::move(w));
  }
  for (auto& w : proxy->workers_) {
    Worker* raw = w.get();
    proxy->threads_.emplace_back([raw] { raw->run(); });
  }
  return proxy;
}

Proxy::~Proxy() { stop(); }

void Proxy::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& w : workers_) w->requestStop();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

ProxyStats Proxy::stats() const {
  ProxyStats s;
  for (const auto& w : workers_) {
    const WorkerCounters& c = w->counters;
    s.accepted += c.accepted.load(std::memory_order_relaxed);
    s.orig_dst_unknown += c.orig_dst_unknown.load(std::memory_order_relaxed);
    s.no_route += c.no_route.load(std::memory_order_relaxed);
    s.upstream_connects += c.upstream_connects.load(std::memory_order_relaxed);
    s.upstream_reused += c.upstream_reused.load(std::memory_order_relaxed);
    s.opaque += c.opaque.load(std::memory_order_relaxed);
    s.http += c.http.load(std::memory_order_relaxed);
    s.http2 += c.http2.load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace meshd::proxy
