// Helpers shared by tunnel_test.cc and bench/tunnel_bench.cc: a loop thread, a blocking echo
// server on loopback, and the test PKI's paths.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/scoped_fd.h"
#include "tunnel/loop.h"
#include "tunnel/tls.h"

namespace meshd::tunnel::testing {

inline std::string certPath(const std::string& name) {
  return std::string(MESHD_TEST_CERTS_DIR) + "/" + name;
}

// The URI SAN read with OpenSSL's GENERAL_NAME API (what the tests' verifiers compare).
inline std::string uriOf(X509* cert) {
  std::string out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_URI) {
      out.assign(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.uniformResourceIdentifier)),
          ASN1_STRING_length(n->d.uniformResourceIdentifier));
      break;
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

// Accepts a peer whose URI SAN starts with `prefix`.
inline PeerVerifier uriPrefix(std::string prefix) {
  return [prefix](X509* leaf, STACK_OF(X509)*) -> absl::Status {
    std::string uri = uriOf(leaf);
    if (uri.rfind(prefix, 0) == 0) return absl::OkStatus();
    return absl::PermissionDeniedError("peer URI SAN \"" + uri + "\" is not under " + prefix);
  };
}

// An EpollLoop running on its own thread.
class LoopThread {
 public:
  LoopThread() {
    loop_ = std::move(*EpollLoop::create());
    thread_ = std::thread([this] { loop_->run(); });
  }
  ~LoopThread() { stop(); }
  void stop() {
    if (thread_.joinable()) {
      loop_->stop();
      thread_.join();
    }
  }
  EpollLoop& loop() { return *loop_; }
  void sync(std::function<void()> fn) { loop_->runSync(std::move(fn)); }
  std::thread::native_handle_type handle() { return thread_.native_handle(); }

 private:
  std::unique_ptr<EpollLoop> loop_;
  std::thread thread_;
};

inline bool writeAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Blocking echo server on 127.0.0.1: a thread per connection; echoes until EOF, then
// shutdown(SHUT_WR) and close (half-close travels back).
class EchoServer {
 public:
  // On 127.0.0.1, or on ::1 with `v6`.
  explicit EchoServer(bool v6 = false) {
    listener_ = ScopedFd(socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_storage ss{};
    socklen_t len;
    if (v6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
      sin6->sin6_family = AF_INET6;
      sin6->sin6_addr = in6addr_loopback;
      len = sizeof *sin6;
    } else {
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      sin->sin_family = AF_INET;
      sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof *sin;
    }
    bind(listener_.get(), reinterpret_cast<sockaddr*>(&ss), len);
    listen(listener_.get(), 256);
    getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = v6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
               : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    acceptor_ = std::thread([this] { acceptLoop(); });
  }
  ~EchoServer() {
    stopping_ = true;
    shutdown(listener_.get(), SHUT_RDWR);
    acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : workers_) t.join();
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  void acceptLoop() {
    while (!stopping_) {
      int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stopping_) return;
        continue;
      }
      ++accepted_;
      std::lock_guard<std::mutex> lock(mu_);
      workers_.emplace_back([fd] {
        std::vector<char> buf(64 * 1024);
        while (true) {
          ssize_t n = recv(fd, buf.data(), buf.size(), 0);
          if (n <= 0) break;
          if (!writeAll(fd, buf.data(), static_cast<size_t>(n))) break;
        }
        shutdown(fd, SHUT_WR);
        // Wait for the peer to finish too, then close.
        char c;
        while (recv(fd, &c, 1, 0) > 0) {
        }
        close(fd);
      });
    }
  }
  ScopedFd listener_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;
};

}  // namespace meshd::tunnel::testing
