#include "tunnel/tunnel.h"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "tunnel/engine.h"

namespace meshd::tunnel {

absl::StatusOr<std::unique_ptr<TunnelClient>> TunnelClient::create(
    Loop& loop, std::shared_ptr<const TrustBundle> trust, const TunnelLimits& limits, LogSink log) {
  if (trust == nullptr) return absl::InvalidArgumentError("tunnel client: no trust bundle");
  std::unique_ptr<TunnelClient> client(new TunnelClient());
  client->engine_ = std::make_unique<detail::Engine>(loop, false, limits, std::move(log));
  absl::Status st = client->engine_->setTrust(std::move(trust));
  if (!st.ok()) return st;
  return client;
}

TunnelClient::~TunnelClient() = default;

void TunnelClient::openStream(std::shared_ptr<Identity> source, const StreamRequest& request,
                              ScopedFd fd) {
  engine_->openStream(std::move(source), request, std::move(fd));
}

absl::Status TunnelClient::setTrustBundle(std::shared_ptr<const TrustBundle> bundle) {
  return engine_->setTrust(std::move(bundle));
}

const TunnelCounters& TunnelClient::counters() const { return engine_->counters; }
size_t TunnelClient::connections() const { return engine_->conns.size(); }
void TunnelClient::closeAll() { engine_->closeAll(); }

absl::StatusOr<std::unique_ptr<TunnelServer>> TunnelServer::create(
    Loop& loop, std::shared_ptr<Identity> identity, std::shared_ptr<const TrustBundle> trust,
    PeerVerifier verify_peer, InboundHook hook, const TunnelLimits& limits, LogSink log) {
  if (trust == nullptr) return absl::InvalidArgumentError("tunnel server: no trust bundle");
  if (identity == nullptr || identity->current() == nullptr) {
    return absl::InvalidArgumentError("tunnel server: no identity credentials");
  }
  std::unique_ptr<TunnelServer> server(new TunnelServer());
  server->engine_ = std::make_unique<detail::Engine>(loop, true, limits, std::move(log));
  detail::Engine& e = *server->engine_;
  absl::Status st = e.setTrust(std::move(trust));
  if (!st.ok()) return st;
  e.identity = std::move(identity);
  e.server_verifier = std::move(verify_peer);
  e.hook = std::move(hook);
  return server;
}

TunnelServer::~TunnelServer() = default;

absl::StatusOr<SocketAddress> TunnelServer::listen(const SocketAddress& addr) {
  detail::Engine& e = *engine_;
  if (e.listener.valid()) return absl::FailedPreconditionError("tunnel server: already listening");
  ScopedFd fd(socket(addr.ip.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid())
    return absl::InternalError(absl::StrCat("tunnel listen: socket: ", strerror(errno)));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss;
  socklen_t len = addr.toSockaddr(&ss);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return absl::UnavailableError(
        absl::StrCat("tunnel listen: bind ", addr.toString(), ": ", strerror(errno)));
  }
  if (::listen(fd.get(), 1024) != 0) {
    return absl::InternalError(absl::StrCat("tunnel listen: listen: ", strerror(errno)));
  }
  len = sizeof ss;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  SocketAddress bound = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  absl::Status st = e.loop.add(fd.get(), EPOLLIN, &e.listener_handler);
  if (!st.ok()) return st;
  e.listener = std::move(fd);
  return bound;
}

absl::Status TunnelServer::setTrustBundle(std::shared_ptr<const TrustBundle> bundle) {
  return engine_->setTrust(std::move(bundle));
}

void TunnelServer::drain() {
  detail::Engine& e = *engine_;
  if (e.listener.valid()) {
    e.loop.remove(e.listener.get());
    e.listener.reset();
  }
  std::vector<detail::Conn*> all;
  for (auto& [raw, owned] : e.conns) all.push_back(raw);
  for (detail::Conn* c : all) {
    if (c->handshaking || c->tcp_connecting) {
      c->close();
      continue;
    }
    c->srv->goaway(proxy::http2::kNoError);
    c->scheduleFlush();
  }
}

const TunnelCounters& TunnelServer::counters() const { return engine_->counters; }
size_t TunnelServer::connections() const { return engine_->conns.size(); }
void TunnelServer::closeAll() { engine_->closeAll(); }

}  // namespace meshd::tunnel
