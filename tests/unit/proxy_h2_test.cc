// HTTP/2 and gRPC through the proxy core, end to end on 127.0.0.1:
//
//   H2Client (http2::ClientSession ══h2c══► Proxy (1 worker) ══h2c══► H2Server
//   over a blocking socket)                  │ TestRouter: per-test decisions (http2::ServerSession
//                                            └ TestObserver: RequestRecords    per connection, own
//                                            thread)
//
// H2Server answers by path (see H2Server::answer) and records every stream it saw (head,
// body, trailers, how it closed), so each test asserts what reached the upstream and
// what came back.
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "counting_new.h"
#include "gtest/gtest.h"
#include "proxy/core/buffer.h"
#include "proxy/core/proxy.h"
#include "proxy/http2/client_session.h"
#include "proxy/http2/server_session.h"
#include "proxy_test_util.h"

namespace meshd::proxy {
namespace {

using testing::kIoTimeoutMs;
using testing::loopback;
using testing::Socket;
using testing::TestObserver;
using testing::TestOriginalDst;
using testing::TestRouter;

using Headers = std::vector<std::pair<std::string, std::string>>;

std::string find(const Headers& h, std::string_view name) {
  for (const auto& [n, v] : h) {
    if (n == name) return v;
  }
  return "";
}

Headers copyFields(absl::Span<const http1::HeaderField> fields) {
  Headers out;
  for (const http1::HeaderField& f : fields) out.emplace_back(f.name, f.value);
  return out;
}

std::vector<http1::HeaderField> viewsOf(const Headers& h) {
  std::vector<http1::HeaderField> out;
  for (const auto& [n, v] : h) out.push_back({n, v, false});
  return out;
}

absl::Span<const uint8_t> bytes(std::string_view s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// What one side saw of a stream.
struct StreamState {
  int status = 0;
  Headers headers, trailers;
  std::string body;
  bool ended = false;  // END_STREAM received
  bool closed = false;
  uint32_t close_code = 0;
};

// Queued body/trailers to send on a stream, given to the session as it takes them.
struct Outgoing {
  std::string data;
  size_t off = 0;
  bool end = false;
  bool has_trailers = false;
  Headers trailers;
  bool done = false;
};

// ------------------------------------------------------------------------------------
// The test client: http2::ClientSession over a blocking socket.

class H2Client : public http2::ClientHandler {
 public:
  explicit H2Client(uint16_t port) : sock_(Socket::connectTo(port)) {
    auto s = http2::ClientSession::create(*this);
    EXPECT_TRUE(s.ok());
    session_ = std::move(*s);
  }

  int32_t open(std::string_view method, std::string_view path, const Headers& headers = {},
               bool end_stream = true, std::string_view authority = "web") {
    std::vector<http1::HeaderField> fields = viewsOf(headers);
    http2::RequestHeaders r{method, "http", authority, path, fields};
    auto id = session_->submitRequest(r, end_stream);
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return -1;
    streams[*id];
    return *id;
  }
  void send(int32_t id, std::string data, bool end) {
    Outgoing& o = out_[id];
    o.data += data;
    o.end = end;
  }
  void sendTrailers(int32_t id, Headers trailers) {
    Outgoing& o = out_[id];
    o.has_trailers = true;
    o.end = true;
    o.trailers = std::move(trailers);
  }
  void reset(int32_t id, uint32_t code) { (void)session_->resetStream(id, code); }

  // One round: hands queued bodies to the session, writes its output, then reads what
  // arrives within `wait_ms`.
  void pump(int wait_ms) {
    for (auto& [id, o] : out_) {
      if (o.done) continue;
      const size_t rest = o.data.size() - o.off;
      const bool end_with_data = o.end && !o.has_trailers;
      if (rest > 0 || end_with_data) {
        auto r =
            session_->submitData(id, bytes(std::string_view(o.data).substr(o.off)), end_with_data);
        if (!r.ok()) {
          o.done = true;
          continue;
        }
        o.off += *r;
        accepted += *r;
        if (o.off == o.data.size() && end_with_data) o.done = true;
      }
      if (!o.done && o.has_trailers && o.off == o.data.size()) {
        auto f = viewsOf(o.trailers);
        (void)session_->submitTrailers(id, f);
        o.done = true;
      }
    }
    while (!eof && session_->wantsWrite()) {
      std::string buf;
      session_->produce(buf, 1 << 20);
      if (buf.empty()) break;
      sock_.send(buf);
    }
    if (eof) return;
    pollfd p{sock_.fd(), POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return;
    char buf[65536];
    const ssize_t n = ::read(sock_.fd(), buf, sizeof(buf));
    if (n <= 0) {
      eof = true;
      return;
    }
    if (!session_->feed(bytes(std::string_view(buf, static_cast<size_t>(n)))).ok()) failed = true;
  }
  bool runUntil(const std::function<bool()>& pred, int timeout_ms = kIoTimeoutMs) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= end || eof) return pred();
      pump(20);
    }
    return true;
  }
  void runFor(int ms) {
    runUntil([] { return false; }, ms);
  }
  bool waitClosed(int32_t id) {
    return runUntil([&] { return streams[id].closed; });
  }
  // Consumes what was held back while auto_consume was off.
  void consumeAll() {
    for (auto& [id, n] : unconsumed_) {
      (void)session_->consume(id, n);
      n = 0;
    }
  }

  // ClientHandler
  void onResponse(int32_t id, uint16_t status, absl::Span<const http1::HeaderField> headers,
                  bool end_stream) override {
    StreamState& s = streams[id];
    s.status = status;
    s.headers = copyFields(headers);
    s.ended = end_stream;
  }
  void onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) override {
    StreamState& s = streams[id];
    s.body.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (auto_consume) {
      (void)session_->consume(id, data.size());
    } else {
      unconsumed_[id] += data.size();
    }
    if (end_stream) s.ended = true;
  }
  void onTrailers(int32_t id, absl::Span<const http1::HeaderField> trailers) override {
    streams[id].trailers = copyFields(trailers);
    streams[id].ended = true;
  }
  void onStreamClosed(int32_t id, uint32_t code) override {
    streams[id].closed = true;
    streams[id].close_code = code;
  }
  void onGoaway(int32_t) override { goaway = true; }

  std::map<int32_t, StreamState> streams;
  bool goaway = false;
  bool eof = false;
  bool failed = false;
  bool auto_consume = true;
  uint64_t accepted = 0;  // body bytes the session took from us

 private:
  Socket sock_;
  std::unique_ptr<http2::ClientSession> session_;
  std::map<int32_t, Outgoing> out_;
  std::map<int32_t, size_t> unconsumed_;
};

// ------------------------------------------------------------------------------------
// The test upstream: http2::ServerSession per accepted connection, one thread each.

struct SeenStream {
  std::string method, path, authority;
  Headers headers, trailers;
  std::string body;
  bool request_ended = false;
  bool closed = false;
  uint32_t close_code = 0;
  int conn = 0;
};

class H2Server {
 public:
  struct Options {
    http2::Limits limits;
    int goaway_after = 0;  // graceful GOAWAY after answering this many streams (0: never)
  };
  H2Server() : H2Server(Options()) {}
  explicit H2Server(Options o) : options_(o) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_storage ss;
    const socklen_t len = loopback(0).toSockaddr(&ss);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&ss), len), 0);
    EXPECT_EQ(::listen(fd, 128), 0);
    socklen_t l = sizeof(ss);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &l);
    port_ = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), l).port;
    listener_ = ScopedFd(fd);
    acceptor_ = std::thread([this] { acceptLoop(); });
  }
  ~H2Server() {
    stop_ = true;
    ::shutdown(listener_.get(), SHUT_RDWR);
    acceptor_.join();
    for (std::thread& t : threads_) t.join();
  }
  SocketAddress address() const { return loopback(port_); }
  int accepts() const { return accepts_.load(); }
  uint64_t received() const { return received_.load(); }
  std::vector<SeenStream> streams() const {
    std::lock_guard<std::mutex> l(mu_);
    return seen_;
  }
  size_t closedCount() const {
    std::lock_guard<std::mutex> l(mu_);
    size_t n = 0;
    for (const SeenStream& s : seen_) n += s.closed ? 1 : 0;
    return n;
  }
  bool waitFor(const std::function<bool()>& pred, int timeout_ms = kIoTimeoutMs) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  std::atomic<bool> consume{true};  // false: received DATA is not consumed (windows close)

 private:
  class Conn : public http2::ServerHandler {
   public:
    Conn(H2Server& srv, int fd, int index) : srv_(srv), fd_(fd), index_(index) {
      auto s = http2::ServerSession::create(*this, srv.options_.limits);
      EXPECT_TRUE(s.ok());
      session_ = std::move(*s);
    }
    void run() {
      while (!srv_.stop_) {
        if (srv_.consume) {
          for (auto& [id, n] : unconsumed_) {
            (void)session_->consume(id, n);
            n = 0;
          }
        }
        for (auto& [id, o] : out_) {
          if (o.done) continue;
          const bool end_with_data = o.end && !o.has_trailers;
          const size_t rest = o.data.size() - o.off;
          if (rest > 0 || end_with_data) {
            auto r = session_->submitData(id, bytes(std::string_view(o.data).substr(o.off)),
                                          end_with_data);
            if (!r.ok()) {
              o.done = true;
              continue;
            }
            o.off += *r;
            if (o.off == o.data.size() && end_with_data) o.done = true;
          }
          if (!o.done && o.has_trailers && o.off == o.data.size()) {
            auto f = viewsOf(o.trailers);
            (void)session_->submitTrailers(id, f);
            o.done = true;
          }
        }
        for (int32_t id : reset_after_) (void)session_->resetStream(id, http2::kInternalError);
        while (session_->wantsWrite()) {
          std::string buf;
          session_->produce(buf, 1 << 20);
          if (buf.empty()) break;
          if (!sendAll(buf)) return;
        }
        // Resets queued behind data go out only after that data was written.
        reset_after_.clear();
        reset_after_.swap(reset_next_);
        if (session_->shouldClose()) return;
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, 10) <= 0) continue;
        char buf[65536];
        const ssize_t n = ::read(fd_.get(), buf, sizeof(buf));
        if (n <= 0) return;
        if (!session_->feed(bytes(std::string_view(buf, static_cast<size_t>(n)))).ok()) {
          // flush the GOAWAY on the next round, then stop
        }
      }
    }
    bool sendAll(std::string_view b) {
      while (!b.empty()) {
        const ssize_t n = ::send(fd_.get(), b.data(), b.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        b.remove_prefix(static_cast<size_t>(n));
      }
      return true;
    }

    void onRequest(int32_t id, const http2::RequestHeaders& r, bool end_stream) override {
      SeenStream s;
      s.method = r.method;
      s.path = r.path;
      s.authority = r.authority;
      s.headers = copyFields(r.headers);
      s.conn = index_;
      {
        std::lock_guard<std::mutex> l(srv_.mu_);
        index_of_[id] = srv_.seen_.size();
        srv_.seen_.push_back(s);
      }
      if (r.path == "/reset") {
        (void)session_->resetStream(id, http2::kInternalError);
        return;
      }
      if (end_stream) answer(id);
    }
    void onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) override {
      srv_.received_ += data.size();
      {
        std::lock_guard<std::mutex> l(srv_.mu_);
        srv_.seen_[index_of_[id]].body.append(reinterpret_cast<const char*>(data.data()),
                                              data.size());
      }
      if (srv_.consume) {
        (void)session_->consume(id, data.size());
      } else {
        unconsumed_[id] += data.size();
      }
      if (end_stream) answer(id);
    }
    void onTrailers(int32_t id, absl::Span<const http1::HeaderField> trailers) override {
      {
        std::lock_guard<std::mutex> l(srv_.mu_);
        srv_.seen_[index_of_[id]].trailers = copyFields(trailers);
      }
      answer(id);
    }
    void onStreamClosed(int32_t id, uint32_t code) override {
      std::lock_guard<std::mutex> l(srv_.mu_);
      SeenStream& s = srv_.seen_[index_of_[id]];
      s.closed = true;
      s.close_code = code;
    }

    // Answers by path once the request ended:
    //   /hang...      never answers
    //   /grpc/ok      application/grpc, the request body echoed, trailers grpc-status 0
    //   /grpc/fail    application/grpc, no body, trailers grpc-status 5 + grpc-message
    //   /big          200 with x-size pattern bytes
    //   /reset-mid    200 head and some data, then RST_STREAM INTERNAL_ERROR
    //   /seq/<a>,<b>,...[?...]  the n-th stream with this exact path (any connection) does
    //                 step n (the last repeats): 200 ("ok:<path>"), 503 (body "busy"),
    //                 g0 (gRPC, body echoed, trailers grpc-status 0), g<N> (gRPC
    //                 trailers-only grpc-status N), reset (RST_STREAM INTERNAL_ERROR), hang
    //   anything else 200 "ok:<path>", x-upstream-authority
    void answer(int32_t id) {
      std::string path, body;
      Headers req_headers;
      {
        std::lock_guard<std::mutex> l(srv_.mu_);
        SeenStream& s = srv_.seen_[index_of_[id]];
        s.request_ended = true;
        path = s.path;
        body = s.body;
        req_headers = s.headers;
      }
      if (path.rfind("/hang", 0) == 0) return;
      Outgoing& o = out_[id];
      Headers head;
      uint16_t status = 200;
      std::string step;
      if (path.rfind("/seq/", 0) == 0) {
        std::vector<std::string> steps;
        const std::string list = path.substr(5, path.find('?') - 5);
        for (size_t at = 0; at <= list.size();) {
          const size_t comma = std::min(list.find(',', at), list.size());
          steps.push_back(list.substr(at, comma - at));
          at = comma + 1;
        }
        std::lock_guard<std::mutex> l(srv_.mu_);
        const size_t n = srv_.seq_count_[path]++;
        step = steps[std::min(n, steps.size() - 1)];
      }
      if (step == "hang") return;
      if (step == "reset") {
        (void)session_->resetStream(id, http2::kInternalError);
        return;
      }
      if (step.size() > 1 && step[0] == 'g' && step != "g0") {
        const Headers trailers_only = {{"content-type", "application/grpc"},
                                       {"grpc-status", step.substr(1)}};
        auto f = viewsOf(trailers_only);
        EXPECT_TRUE(session_->submitResponse(id, 200, f, true).ok());
        return;
      }
      if (step == "503") {
        status = 503;
        o.data = "busy";
        o.end = true;
      } else if (step == "g0" || path == "/grpc/ok" || path == "/grpc/fail") {
        head = {{"content-type", "application/grpc"}};
        o.data = path != "/grpc/fail" ? body : "";
        o.has_trailers = true;
        o.end = true;
        o.trailers = path != "/grpc/fail"
                         ? Headers{{"grpc-status", "0"}}
                         : Headers{{"grpc-status", "5"}, {"grpc-message", "no such thing"}};
      } else if (path == "/big") {
        o.data = pattern(std::stoul(find(req_headers, "x-size")));
        o.end = true;
      } else if (path == "/reset-mid") {
        o.data = "partial";
        reset_next_.push_back(id);
      } else {
        head = {{"x-upstream-path", path}};
        o.data = "ok:" + path;
        o.end = true;
      }
      auto f = viewsOf(head);
      EXPECT_TRUE(session_->submitResponse(id, status, f, false).ok());
      if (srv_.options_.goaway_after > 0 && ++answered_ == srv_.options_.goaway_after) {
        session_->goaway(http2::kNoError);
      }
    }

   private:
    H2Server& srv_;
    ScopedFd fd_;
    int index_;
    std::unique_ptr<http2::ServerSession> session_;
    std::map<int32_t, size_t> index_of_;
    std::map<int32_t, Outgoing> out_;
    std::map<int32_t, size_t> unconsumed_;
    std::vector<int32_t> reset_next_, reset_after_;
    int answered_ = 0;
  };

  void acceptLoop() {
    while (!stop_) {
      const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (stop_) return;
        continue;
      }
      const int index = accepts_++;
      threads_.emplace_back([this, fd, index] {
        Conn c(*this, fd, index);
        c.run();
      });
    }
  }

  Options options_;
  ScopedFd listener_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepts_{0};
  std::atomic<uint64_t> received_{0};
  std::thread acceptor_;
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  std::vector<SeenStream> seen_;
  std::map<std::string, size_t> seq_count_;  // /seq/ paths: streams seen per path
};

// ------------------------------------------------------------------------------------

class ProxyH2Test : public ::testing::Test {
 protected:
  void startProxy(ProxyOptions o = ProxyOptions()) {
    o.listen = loopback(0);
    o.workers = 1;  // one worker: one upstream pool, so connection counts are exact
    auto p = Proxy::start(o, router_, odst_, &observer_);
    ASSERT_TRUE(p.ok()) << p.status();
    proxy_ = std::move(*p);
  }
  void TearDown() override {
    if (proxy_) proxy_->stop();
  }
  TestRouter router_;
  TestOriginalDst odst_;
  TestObserver observer_;
  std::unique_ptr<Proxy> proxy_;
};

const Headers kGrpcHeaders = {{"content-type", "application/grpc"}, {"te", "trailers"}};

// A port nothing listens on.
uint16_t closedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss;
  socklen_t len = loopback(0).toSockaddr(&ss);
  ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const uint16_t port = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len).port;
  ::close(fd);
  return port;
}

TEST_F(ProxyH2Test, UnaryRequestWithBodiesIsForwardedOverHttp2) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("POST", "/things?x=1", {{"x-custom", "a"}}, false);
  c.send(id, "hello upstream", true);
  ASSERT_TRUE(c.waitClosed(id));
  const StreamState& s = c.streams[id];
  EXPECT_EQ(s.status, 200);
  EXPECT_EQ(s.body, "ok:/things?x=1");
  EXPECT_EQ(find(s.headers, "x-upstream-path"), "/things?x=1");
  EXPECT_EQ(s.close_code, 0u);

  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  const SeenStream u = up.streams()[0];
  EXPECT_EQ(u.method, "POST");
  EXPECT_EQ(u.path, "/things?x=1");
  EXPECT_EQ(u.authority, "web");
  EXPECT_EQ(u.body, "hello upstream");
  EXPECT_EQ(find(u.headers, "x-custom"), "a");
  EXPECT_EQ(find(u.headers, "x-request-id").size(), 36u);  // added when absent

  ASSERT_TRUE(observer_.waitFor(1));
  const auto rec = observer_.records()[0];
  EXPECT_EQ(rec.protocol, "http/2");
  EXPECT_EQ(rec.code, 200);
  EXPECT_EQ(rec.method, "POST");
  EXPECT_EQ(rec.cluster, "test/web:80");
  EXPECT_EQ(rec.request_id, find(u.headers, "x-request-id"));
  EXPECT_EQ(rec.request_bytes, 14u);
  EXPECT_EQ(rec.response_bytes, 14u);
  EXPECT_EQ(proxy_->stats().http2, 1u);
  EXPECT_EQ(router_.seen()[0].target, "/things?x=1");
  EXPECT_EQ(router_.seen()[0].authority, "web");
}

TEST_F(ProxyH2Test, ExistingRequestIdIsKept) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("GET", "/", {{"x-request-id", "my-id-1"}});
  ASSERT_TRUE(c.waitClosed(id));
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  const SeenStream u = up.streams()[0];
  EXPECT_EQ(find(u.headers, "x-request-id"), "my-id-1");
  int ids = 0;
  for (const auto& [n, v] : u.headers) ids += n == "x-request-id" ? 1 : 0;
  EXPECT_EQ(ids, 1);
}

TEST_F(ProxyH2Test, HundredConcurrentStreamsShareOneUpstreamConnection) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  std::vector<int32_t> ids;
  for (int i = 0; i < 100; ++i) ids.push_back(c.open("GET", "/s/" + std::to_string(i)));
  ASSERT_TRUE(c.runUntil([&] {
    for (int32_t id : ids) {
      if (!c.streams[id].closed) return false;
    }
    return true;
  }));
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(c.streams[ids[i]].status, 200);
    EXPECT_EQ(c.streams[ids[i]].body, "ok:/s/" + std::to_string(i));
  }
  // One h2 connection carried all 100 (the other accept, if any, is the pre-connect the
  // proxy makes before it knows the protocol, closed unused).
  std::map<int, int> per_conn;
  for (const SeenStream& s : up.streams()) per_conn[s.conn]++;
  EXPECT_EQ(per_conn.size(), 1u);
  EXPECT_LE(up.accepts(), 2);
}

TEST_F(ProxyH2Test, UpstreamConcurrencyLimitIsRespected) {
  H2Server::Options so;
  so.limits.max_concurrent_streams = 5;
  H2Server up(so);
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(c.open("GET", "/c/" + std::to_string(i)));
  ASSERT_TRUE(c.runUntil([&] {
    for (int32_t id : ids) {
      if (!c.streams[id].closed) return false;
    }
    return true;
  }));
  for (int32_t id : ids) EXPECT_EQ(c.streams[id].status, 200) << id;
  EXPECT_EQ(up.streams().size(), 40u);  // none refused by the upstream
}

TEST_F(ProxyH2Test, GrpcTrailersPassBothWays) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const std::string msg(
      "\0\0\0\0\x03"
      "abc",
      8);  // a gRPC length-prefixed message
  const int32_t ok = c.open("POST", "/grpc/ok", kGrpcHeaders, false);
  c.send(ok, msg, false);
  c.sendTrailers(ok, {{"x-req-trailer", "yes"}});
  const int32_t fail = c.open("POST", "/grpc/fail", kGrpcHeaders, false);
  c.send(fail, msg, true);
  ASSERT_TRUE(c.waitClosed(ok));
  ASSERT_TRUE(c.waitClosed(fail));
  EXPECT_EQ(c.streams[ok].status, 200);
  EXPECT_EQ(c.streams[ok].body, msg);
  EXPECT_EQ(find(c.streams[ok].trailers, "grpc-status"), "0");
  EXPECT_EQ(find(c.streams[fail].trailers, "grpc-status"), "5");
  EXPECT_EQ(find(c.streams[fail].trailers, "grpc-message"), "no such thing");

  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 2; }));
  for (const SeenStream& s : up.streams()) {
    EXPECT_EQ(find(s.headers, "te"), "trailers");  // gRPC servers require it
    if (s.path == "/grpc/ok") {
      EXPECT_EQ(find(s.trailers, "x-req-trailer"), "yes");
    }
  }
  ASSERT_TRUE(observer_.waitFor(2));
  std::map<std::string, std::string> status_by_code;
  for (const auto& r : observer_.records()) {
    EXPECT_EQ(r.protocol, "grpc");
    EXPECT_EQ(r.code, 200);
    status_by_code[r.grpc_status] = r.flags;
  }
  EXPECT_EQ(status_by_code.count("0"), 1u);
  EXPECT_EQ(status_by_code.count("5"), 1u);
}

TEST_F(ProxyH2Test, LargeBodiesStreamWithBackpressure) {
  H2Server up;
  up.consume = false;  // the upstream does not read: its window closes after 256 KiB
  router_.forwardTo(up.address());
  startProxy();
  const uint64_t growths = Buffer::growths();
  H2Client c(proxy_->port());
  constexpr size_t kUpload = 8 << 20;
  const std::string body = pattern(kUpload);
  const int32_t id = c.open("POST", "/upload", {}, false);
  c.send(id, body, true);
  const uint32_t window = http2::Limits().initial_stream_window;
  ASSERT_TRUE(c.runUntil([&] { return up.received() >= window; }));
  c.runFor(300);  // give the proxy every chance to take more than it should
  // What the client could push: its own queue + the proxy's stream window + the proxy's
  // upstream queue + the upstream's window (~640 KiB). Buffering without bound would
  // have taken all 8 MiB.
  EXPECT_LE(c.accepted, 1u << 20);
  EXPECT_EQ(up.received(), window);
  up.consume = true;
  ASSERT_TRUE(c.runUntil([&] { return c.streams[id].closed; }, 20'000));
  EXPECT_EQ(c.streams[id].status, 200);
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  EXPECT_TRUE(up.streams()[0].body == body);

  // And a 4 MiB download to a client that reads slowly (consumes only when told).
  c.auto_consume = false;
  const int32_t big = c.open("GET", "/big", {{"x-size", std::to_string(4 << 20)}});
  ASSERT_TRUE(c.runUntil([&] { return c.streams[big].body.size() >= window; }));
  c.runFor(300);
  EXPECT_EQ(c.streams[big].body.size(), window);  // exactly our window, nothing more
  c.auto_consume = true;
  c.consumeAll();
  ASSERT_TRUE(c.runUntil([&] { return c.streams[big].closed; }, 20'000));
  EXPECT_TRUE(c.streams[big].body == pattern(4 << 20));
  EXPECT_EQ(Buffer::growths(), growths);
}

TEST_F(ProxyH2Test, ClientResetReachesTheUpstream) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("GET", "/hang");
  ASSERT_TRUE(c.runUntil([&] { return up.streams().size() == 1; }));
  c.reset(id, http2::kCancel);
  c.pump(0);
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  EXPECT_EQ(up.streams()[0].close_code, static_cast<uint32_t>(http2::kCancel));
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "DC");
  EXPECT_EQ(observer_.records()[0].code, 0);
}

TEST_F(ProxyH2Test, UpstreamResetBeforeHeadIs503AndAfterHeadResetsTheClient) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t before = c.open("GET", "/reset");
  const int32_t mid = c.open("GET", "/reset-mid");
  ASSERT_TRUE(c.waitClosed(before));
  ASSERT_TRUE(c.waitClosed(mid));
  EXPECT_EQ(c.streams[before].status, 503);
  EXPECT_EQ(find(c.streams[before].headers, "x-meshd-response-flags"), "UC");
  EXPECT_EQ(c.streams[mid].status, 200);
  EXPECT_FALSE(c.streams[mid].ended);  // never a complete response
  EXPECT_EQ(c.streams[mid].close_code, static_cast<uint32_t>(http2::kInternalError));
}

TEST_F(ProxyH2Test, RefusedUpstreamIs503OrGrpcUnavailable) {
  router_.forwardTo(loopback(closedPort()));
  startProxy();
  H2Client c(proxy_->port());
  const int32_t plain = c.open("GET", "/");
  const int32_t rpc = c.open("POST", "/pkg.Svc/Call", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(plain));
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_EQ(c.streams[plain].status, 503);
  EXPECT_EQ(find(c.streams[plain].headers, "x-meshd-response-flags"), "UF");
  // gRPC: trailers-only, HTTP 200, grpc-status 14 UNAVAILABLE.
  EXPECT_EQ(c.streams[rpc].status, 200);
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"), "14");
  EXPECT_EQ(find(c.streams[rpc].headers, "content-type"), "application/grpc");
  EXPECT_TRUE(c.streams[rpc].body.empty());
  ASSERT_TRUE(observer_.waitFor(2));
  for (const auto& r : observer_.records()) {
    EXPECT_EQ(r.flags, "UF");
    if (r.protocol == "grpc") {
      EXPECT_EQ(r.grpc_status, "14");
    }
  }
}

TEST_F(ProxyH2Test, RouteTimeoutIs504OrDeadlineExceeded) {
  H2Server up;
  const SocketAddress addr = up.address();
  router_.setConnectionUpstream(addr);
  router_.setRoute([addr](const RequestInfo&, RouteDecision& d) {
    d.upstream = addr;
    d.request_timeout_ms = 200;
  });
  startProxy();
  H2Client c(proxy_->port());
  const int32_t plain = c.open("GET", "/hang");
  const int32_t rpc = c.open("POST", "/hang/grpc", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(plain));
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_EQ(c.streams[plain].status, 504);
  EXPECT_EQ(find(c.streams[plain].headers, "x-meshd-response-flags"), "UT");
  EXPECT_EQ(c.streams[rpc].status, 200);
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"), "4");  // DEADLINE_EXCEEDED
  // The upstream streams were cancelled.
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 2; }));
  for (const SeenStream& s : up.streams()) {
    EXPECT_EQ(s.close_code, static_cast<uint32_t>(http2::kCancel));
  }
}

TEST_F(ProxyH2Test, ShorterGrpcTimeoutWinsOverTheRouteTimeout) {
  H2Server up;
  const SocketAddress addr = up.address();
  router_.setConnectionUpstream(addr);
  router_.setRoute([addr](const RequestInfo&, RouteDecision& d) {
    d.upstream = addr;
    d.request_timeout_ms = 600'000;  // would outlast the test
  });
  startProxy();
  H2Client c(proxy_->port());
  Headers h = kGrpcHeaders;
  h.emplace_back("grpc-timeout", "150m");
  const int32_t rpc = c.open("POST", "/hang/grpc", h);
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"), "4");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UT");
  EXPECT_EQ(observer_.records()[0].grpc_status, "4");
}

TEST_F(ProxyH2Test, RouteEditsAndRewritesAreApplied) {
  H2Server up;
  const SocketAddress addr = up.address();
  static const HeaderEdit kReq[] = {{HeaderEdit::Op::kSet, "x-added", "yes"},
                                    {HeaderEdit::Op::kRemove, "x-drop", ""}};
  static const HeaderEdit kResp[] = {{HeaderEdit::Op::kSet, "x-resp", "1"}};
  router_.setConnectionUpstream(addr);
  router_.setRoute([addr](const RequestInfo&, RouteDecision& d) {
    d.upstream = addr;
    d.request_edits = kReq;
    d.response_edits = kResp;
    d.path_rewrite = "/rewritten";
    d.authority_rewrite = "backend.internal";
  });
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("GET", "/orig", {{"x-drop", "1"}, {"x-keep", "2"}});
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 200);
  EXPECT_EQ(find(c.streams[id].headers, "x-resp"), "1");
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  const SeenStream u = up.streams()[0];
  EXPECT_EQ(u.path, "/rewritten");
  EXPECT_EQ(u.authority, "backend.internal");
  EXPECT_EQ(find(u.headers, "x-added"), "yes");
  EXPECT_EQ(find(u.headers, "x-drop"), "");
  EXPECT_EQ(find(u.headers, "x-keep"), "2");
}

TEST_F(ProxyH2Test, NoRouteIs404OrGrpcUnimplemented) {
  H2Server up;
  router_.setConnectionUpstream(up.address());
  router_.setRoute([](const RequestInfo&, RouteDecision& d) {
    d.kind = RouteDecision::Kind::kDirectResponse;
    d.status = 404;
    d.body = "no route";
    d.response_flags = "NR";
  });
  startProxy();
  H2Client c(proxy_->port());
  const int32_t plain = c.open("GET", "/nothing");
  const int32_t rpc = c.open("POST", "/pkg.Svc/Missing", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(plain));
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_EQ(c.streams[plain].status, 404);
  EXPECT_EQ(c.streams[plain].body, "no route");
  EXPECT_EQ(find(c.streams[plain].headers, "x-meshd-response-flags"), "NR");
  EXPECT_EQ(c.streams[rpc].status, 200);
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"), "12");  // UNIMPLEMENTED
  EXPECT_EQ(up.streams().size(), 0u);
}

// Authorization and rate limits answer locally: 403 "RBAC" is PERMISSION_DENIED (7) for
// gRPC, 429 "RL" RESOURCE_EXHAUSTED (8, as Envoy's local rate limit with
// rate_limited_as_resource_exhausted); plain HTTP/2 gets the status and Retry-After.
TEST_F(ProxyH2Test, RbacIs403OrPermissionDeniedAndRateLimitIs429OrResourceExhausted) {
  H2Server up;
  router_.setConnectionUpstream(up.address());
  router_.setRoute([](const RequestInfo& req, RouteDecision& d) {
    d.kind = RouteDecision::Kind::kDirectResponse;
    if (req.target.find("denied") != std::string_view::npos) {
      d.status = 403;
      d.body = "RBAC: access denied";
      d.response_flags = "RBAC";
    } else {
      d.status = 429;
      d.body = "local_rate_limited";
      d.response_flags = "RL";
      d.retry_after = "7";
    }
  });
  startProxy();
  H2Client c(proxy_->port());
  const int32_t denied = c.open("GET", "/denied");
  const int32_t limited = c.open("GET", "/limited");
  const int32_t rpc_denied = c.open("POST", "/pkg.Svc/denied", kGrpcHeaders);
  const int32_t rpc_limited = c.open("POST", "/pkg.Svc/Limited", kGrpcHeaders);
  for (int32_t id : {denied, limited, rpc_denied, rpc_limited}) ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[denied].status, 403);
  EXPECT_EQ(c.streams[denied].body, "RBAC: access denied");
  EXPECT_EQ(find(c.streams[denied].headers, "x-meshd-response-flags"), "RBAC");
  EXPECT_EQ(find(c.streams[denied].headers, "retry-after"), "");
  EXPECT_EQ(c.streams[limited].status, 429);
  EXPECT_EQ(find(c.streams[limited].headers, "retry-after"), "7");
  EXPECT_EQ(c.streams[rpc_denied].status, 200);
  EXPECT_EQ(find(c.streams[rpc_denied].headers, "grpc-status"), "7");  // PERMISSION_DENIED
  EXPECT_EQ(c.streams[rpc_limited].status, 200);
  EXPECT_EQ(find(c.streams[rpc_limited].headers, "grpc-status"), "8");  // RESOURCE_EXHAUSTED
  EXPECT_EQ(up.streams().size(), 0u);
}

TEST_F(ProxyH2Test, UpstreamGoawaySendsNewStreamsToANewConnection) {
  H2Server::Options so;
  so.goaway_after = 1;
  H2Server up(so);
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t first = c.open("GET", "/one");
  ASSERT_TRUE(c.waitClosed(first));
  const int32_t second = c.open("GET", "/two");
  ASSERT_TRUE(c.waitClosed(second));
  EXPECT_EQ(c.streams[first].status, 200);
  EXPECT_EQ(c.streams[second].status, 200);
  EXPECT_EQ(c.streams[second].body, "ok:/two");
  const auto seen = up.streams();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_NE(seen[0].conn, seen[1].conn);
}

TEST_F(ProxyH2Test, RapidResetGetsGoawayAndOthersAreServed) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client attacker(proxy_->port());
  for (int i = 0; i < 400 && !attacker.eof && !attacker.goaway; ++i) {
    const int32_t id = attacker.open("GET", "/hang");
    attacker.pump(0);
    attacker.reset(id, http2::kCancel);
    attacker.pump(0);
  }
  ASSERT_TRUE(attacker.runUntil([&] { return attacker.goaway || attacker.eof; }));
  EXPECT_TRUE(attacker.runUntil([&] { return attacker.eof; }));  // and the connection closes

  H2Client good(proxy_->port());
  const int32_t id = good.open("GET", "/fine");
  ASSERT_TRUE(good.waitClosed(id));
  EXPECT_EQ(good.streams[id].status, 200);
  EXPECT_EQ(good.streams[id].body, "ok:/fine");
}

TEST_F(ProxyH2Test, UpstreamSettingsBeforeTheClientPrefaceDoNotMakeItOpaque) {
  // H2Server sends its SETTINGS as soon as it accepts, which reaches the proxy's
  // pre-connect before this client says anything: still HTTP/2, not a server-first relay.
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  ASSERT_TRUE(up.waitFor([&] { return up.accepts() >= 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // setup: let SETTINGS arrive
  const int32_t id = c.open("GET", "/late");
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 200);
  EXPECT_EQ(c.streams[id].body, "ok:/late");
  EXPECT_EQ(proxy_->stats().http2, 1u);
  EXPECT_EQ(proxy_->stats().opaque, 0u);
}

TEST_F(ProxyH2Test, SlowPrefaceAndMissingHeadersAreClosed) {
  H2Server up;
  router_.forwardTo(up.address());
  ProxyOptions o;
  o.request_headers_timeout_ms = 200;
  startProxy(o);
  {
    Socket s = Socket::connectTo(proxy_->port());
    s.send("PRI * HTTP/2.0\r\n");  // a partial preface, then nothing
    bool closed = false;
    s.readAll(kIoTimeoutMs, &closed);
    EXPECT_TRUE(closed);
  }
  {
    Socket s = Socket::connectTo(proxy_->port());
    // The whole preface and an empty SETTINGS frame, but never a HEADERS frame.
    s.send(std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0", 33));
    bool closed = false;
    s.readAll(kIoTimeoutMs, &closed);
    EXPECT_TRUE(closed);
  }
  EXPECT_EQ(up.streams().size(), 0u);
}

TEST(ProxyH2StartTest, BadHttp2LimitsAreAClearError) {
  TestRouter router;
  TestOriginalDst odst;
  ProxyOptions o;
  o.listen = loopback(0);
  o.h2_limits.max_frame_size = 100;
  auto p = Proxy::start(o, router, odst, nullptr);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("proxy h2_limits: http2 limits: max_frame_size 100"),
            std::string::npos)
      << p.status();
}

// ------------------------------------------------------------------------------------
// No allocation per stream in the steady state: a lean h2c client and upstream (the codec
// allocates nothing of its own once warm; nghttp2's own mallocs are not operator new and
// are not counted), one worker, a router and observer that allocate nothing.

class LeanRouter : public Router {
 public:
  explicit LeanRouter(SocketAddress up) : up_(up) {}
  void route(const RequestInfo&, RouteDecision& d) override {
    d.upstream = up_;
    d.cluster = "test/web:80";
  }
  bool routeConnection(const SocketAddress&, SocketAddress& upstream,
                       std::string_view& cluster) override {
    upstream = up_;
    cluster = "test/web:80";
    return true;
  }

 private:
  SocketAddress up_;
};

class LeanObserver : public Observer {
 public:
  void onRequest(const RequestRecord& r) override {
    if (r.response_code == 200 && r.protocol == "http/2") ok.fetch_add(1);
  }
  std::atomic<int> ok{0};
};

// Drives one session over `fd` with a reused output buffer.
class LeanIo {
 public:
  explicit LeanIo(int fd) : fd_(fd) { out_.reserve(1 << 20); }
  bool flush(http2::detail::SessionBase& s) {
    while (s.wantsWrite()) {
      out_.clear();
      s.produce(out_, 1 << 20);
      std::string_view b(out_);
      while (!b.empty()) {
        const ssize_t n = ::send(fd_, b.data(), b.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        b.remove_prefix(static_cast<size_t>(n));
      }
    }
    return true;
  }
  // Waits up to `timeout_ms` for bytes and feeds them. False on EOF or a feed error.
  bool readOnce(http2::detail::SessionBase& s, int timeout_ms, bool* timed_out = nullptr) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) {
      if (timed_out != nullptr) *timed_out = true;
      return timed_out != nullptr;
    }
    const ssize_t n = ::read(fd_, buf_, sizeof(buf_));
    if (n <= 0) return false;
    return s.feed(absl::MakeConstSpan(buf_, static_cast<size_t>(n))).ok();
  }

 private:
  int fd_;
  std::string out_;
  uint8_t buf_[65536];
};

class LeanUpstream : public http2::ServerHandler {
 public:
  void onRequest(int32_t id, const http2::RequestHeaders&, bool end_stream) override {
    if (end_stream) answer(id);
  }
  void onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) override {
    (void)session->consume(id, data.size());
    if (end_stream) answer(id);
  }
  void onTrailers(int32_t id, absl::Span<const http1::HeaderField>) override { answer(id); }
  void onStreamClosed(int32_t, uint32_t) override {}
  void answer(int32_t id) {
    static const http1::HeaderField kFields[] = {{"content-type", "text/plain", false}};
    (void)session->submitResponse(id, 200, kFields, false);
    static constexpr std::string_view kOk = "ok";
    (void)session->submitData(id, bytes(kOk), true);
  }
  std::unique_ptr<http2::ServerSession> session;
};

class LeanClient : public http2::ClientHandler {
 public:
  void onResponse(int32_t, uint16_t status, absl::Span<const http1::HeaderField>, bool) override {
    if (status == 200) ++ok_heads;
  }
  void onData(int32_t id, absl::Span<const uint8_t> data, bool) override {
    (void)session->consume(id, data.size());
  }
  void onTrailers(int32_t, absl::Span<const http1::HeaderField>) override {}
  void onStreamClosed(int32_t, uint32_t code) override {
    if (code == 0) ++closed;
  }
  void onGoaway(int32_t) override {}
  std::unique_ptr<http2::ClientSession> session;
  int ok_heads = 0;
  int closed = 0;
};

TEST(ProxyH2AllocationTest, NoAllocationPerStreamInSteadyState) {
  ScopedFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  socklen_t len = loopback(0).toSockaddr(&ss);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  len = sizeof(ss);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  const SocketAddress up = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  std::atomic<bool> stop{false};
  std::thread server([&] {
    // The proxy's pre-connect arrives first and is closed unused; serve every connection
    // in turn (the h2 one is the one that stays).
    while (!stop) {
      pollfd p{listener.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ScopedFd fd(::accept(listener.get(), nullptr, nullptr));
      if (!fd.valid()) continue;
      LeanUpstream h;
      h.session = std::move(*http2::ServerSession::create(h));
      LeanIo io(fd.get());
      while (!stop && io.flush(*h.session)) {
        bool idle = false;
        if (!io.readOnce(*h.session, 50, &idle)) break;
      }
    }
  });
  LeanRouter router(up);
  TestOriginalDst odst;
  LeanObserver observer;
  ProxyOptions o;
  o.listen = loopback(0);
  o.workers = 1;
  auto proxy = Proxy::start(o, router, odst, &observer);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  Socket c = Socket::connectTo((*proxy)->port());
  LeanClient client;
  client.session = std::move(*http2::ClientSession::create(client));
  LeanIo io(c.fd());
  static const http1::HeaderField kFields[] = {{"user-agent", "t", false},
                                               {"accept", "*/*", false}};
  const http2::RequestHeaders req{"GET", "http", "web", "/items?page=2", kFields};
  // Ten streams at a time, each batch until all closed.
  auto batch = [&] {
    const int target = client.closed + 10;
    for (int i = 0; i < 10; ++i) {
      if (!client.session->submitRequest(req, true).ok()) return false;
    }
    while (client.closed < target) {
      if (!io.flush(*client.session)) return false;
      if (!io.readOnce(*client.session, kIoTimeoutMs)) return false;
    }
    return true;
  };
  int batches = 0;
  for (int i = 0; i < 20; ++i) batches += batch();  // warm-up: pools, buffers, maps
  meshd::testing::startCountingAllocations();
  for (int i = 0; i < 200; ++i) batches += batch();
  const size_t allocations = meshd::testing::stopCountingAllocations();
  EXPECT_EQ(batches, 220);
  EXPECT_EQ(client.ok_heads, 2200);
  EXPECT_EQ(allocations, 0u);
  c.close();
  (*proxy)->stop();
  stop = true;
  server.join();
  EXPECT_EQ(observer.ok.load(), 2200);
}

// RequestRecord's access-log fields for HTTP/2: :path as received, :authority,
// user-agent, a wall-clock start; a gRPC stream is "grpc".
TEST_F(ProxyH2Test, RecordCarriesPathAuthorityUserAgentAndWallClockStart) {
  H2Server up;
  router_.forwardTo(up.address());
  startProxy();
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t before = static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
  H2Client c(proxy_->port());
  const int32_t id =
      c.open("GET", "/things?x=1", {{"user-agent", "grpc-go/1.60"}}, true, "web.default:8080");
  ASSERT_TRUE(c.waitClosed(id));
  Headers grpc = kGrpcHeaders;
  const int32_t gid = c.open("POST", "/grpc/ok", grpc, true);
  ASSERT_TRUE(c.waitClosed(gid));
  clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t after = static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
  ASSERT_TRUE(observer_.waitFor(2));
  auto recs = observer_.records();
  if (recs[0].protocol == "grpc") std::swap(recs[0], recs[1]);
  EXPECT_EQ(recs[0].protocol, "http/2");
  EXPECT_EQ(recs[0].path, "/things?x=1");
  EXPECT_EQ(recs[0].authority, "web.default:8080");
  EXPECT_EQ(recs[0].user_agent, "grpc-go/1.60");
  EXPECT_EQ(recs[1].protocol, "grpc");
  EXPECT_EQ(recs[1].path, "/grpc/ok");
  EXPECT_EQ(recs[1].grpc_status, "0");
  EXPECT_EQ(recs[1].authority, "web");
  EXPECT_EQ(recs[1].user_agent, "");  // the pooled stream's previous value is not kept
  for (const auto& r : recs) {
    EXPECT_EQ(r.attempts, 1u);
    // Slack only for a clock step during the test (see proxy_record_test.cc).
    EXPECT_GE(r.start_unix_us + 1'000'000, before);
    EXPECT_LE(r.start_unix_us, after + 1'000'000);
  }
}

// ------------------------------------------------------------------------------------
// Resilience per stream (docs/design/0003-l7-proxy.md, "Resilience in the core: HTTP/2
// and gRPC"): retries, circuit breakers, per-try timeouts, fault delays.

// A TestRouter that also retargets retries (to `next` when set, else the same endpoint)
// and records every try's end.
class RetryRouter : public TestRouter {
 public:
  struct Try {
    SocketAddress endpoint;
    resilience::TryOutcome::Kind kind;
    uint16_t http_status;
    int32_t grpc_status;
  };
  bool retarget(RouteDecision& d, const SocketAddress& failed) override {
    std::lock_guard<std::mutex> l(mu_);
    failed_.push_back(failed);
    if (next_.valid()) d.upstream = next_;
    return true;
  }
  void onTry(const RouteDecision&, const SocketAddress& endpoint, const resilience::TryOutcome& o,
             uint64_t) override {
    std::lock_guard<std::mutex> l(mu_);
    tries_.push_back({endpoint, o.kind, o.http_status, o.grpc_status});
  }
  void onCancel(const RouteDecision&, const SocketAddress& endpoint) override {
    std::lock_guard<std::mutex> l(mu_);
    cancels_.push_back(endpoint);
  }
  std::vector<SocketAddress> cancels() const {
    std::lock_guard<std::mutex> l(mu_);
    return cancels_;
  }
  void setNext(const SocketAddress& a) {
    std::lock_guard<std::mutex> l(mu_);
    next_ = a;
  }
  std::vector<Try> tries() const {
    std::lock_guard<std::mutex> l(mu_);
    return tries_;
  }
  std::vector<SocketAddress> failed() const {
    std::lock_guard<std::mutex> l(mu_);
    return failed_;
  }

 private:
  mutable std::mutex mu_;
  SocketAddress next_;
  std::vector<Try> tries_;
  std::vector<SocketAddress> failed_;
  std::vector<SocketAddress> cancels_;
};

class ProxyH2RetryTest : public ::testing::Test {
 protected:
  ProxyH2RetryTest() {
    retries_.base_interval_ms = 1;  // keep the back-offs short (0-1 ms, 0-3 ms...)
    retries_.max_interval_ms = 5;
  }
  // Every stream goes to `upstream` with the test's retry policy, breaker and fault delay.
  void routeTo(const SocketAddress& upstream) {
    router_.setConnectionUpstream(upstream);
    router_.setRoute([this, upstream](const RequestInfo&, RouteDecision& d) {
      d.upstream = upstream;
      d.cluster = "test/web:80";
      d.retries = use_retries_ ? &retries_ : nullptr;
      d.breaker = use_breaker_ ? &breaker_ : nullptr;
      d.fault_delay_ms = fault_delay_ms_;
      d.request_timeout_ms = request_timeout_ms_;
      if (abort_status_ != 0) {
        d.kind = RouteDecision::Kind::kDirectResponse;
        d.status = abort_status_;
        d.response_flags = "FI";
        d.body = "fault filter abort";
      }
    });
  }
  void startProxy() {
    ProxyOptions o;
    o.listen = loopback(0);
    o.workers = 1;
    auto p = Proxy::start(o, router_, odst_, &observer_);
    ASSERT_TRUE(p.ok()) << p.status();
    proxy_ = std::move(*p);
  }
  void TearDown() override {
    if (proxy_) proxy_->stop();
  }
  std::vector<SeenStream> streamsWithPath(const H2Server& up, std::string_view path) {
    std::vector<SeenStream> out;
    for (const SeenStream& s : up.streams()) {
      if (s.path == path) out.push_back(s);
    }
    return out;
  }

  state::RetrySettings retries_;
  bool use_retries_ = true;
  resilience::CircuitBreaker breaker_;
  bool use_breaker_ = false;
  uint32_t fault_delay_ms_ = 0;
  uint32_t request_timeout_ms_ = 15'000;
  uint16_t abort_status_ = 0;
  RetryRouter router_;
  TestOriginalDst odst_;
  TestObserver observer_;
  std::unique_ptr<Proxy> proxy_;
};

// 503 (in retriableStatusCodes by default) then 200: the client sees only the 200; the
// retry carried the same body and trailers; the 503 stream was cancelled upstream.
TEST_F(ProxyH2RetryTest, Http503ThenOkIsRetriedWithTheSameBodyAndTrailers) {
  H2Server up;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const std::string body = pattern(20'000);
  const int32_t id = c.open("POST", "/seq/503,200", {{"x-custom", "a"}}, false);
  c.send(id, body, true);
  c.sendTrailers(id, {{"x-checksum", "abc"}});
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 200);
  EXPECT_EQ(c.streams[id].body, "ok:/seq/503,200");

  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 2; }));
  const auto seen = streamsWithPath(up, "/seq/503,200");
  ASSERT_EQ(seen.size(), 2u);
  for (const SeenStream& s : seen) {
    EXPECT_EQ(s.body, body);
    EXPECT_EQ(find(s.trailers, "x-checksum"), "abc");
    EXPECT_EQ(find(s.headers, "x-custom"), "a");
  }
  EXPECT_EQ(find(seen[0].headers, "x-request-id"), find(seen[1].headers, "x-request-id"));

  ASSERT_TRUE(observer_.waitFor(1));
  const auto rec = observer_.records()[0];
  EXPECT_EQ(rec.code, 200);
  EXPECT_EQ(rec.flags, "");
  EXPECT_EQ(rec.attempts, 2u);
  const auto tries = router_.tries();
  ASSERT_EQ(tries.size(), 2u);
  EXPECT_EQ(tries[0].http_status, 503);
  EXPECT_EQ(tries[1].http_status, 200);
}

// A body larger than the replay bound (max_buffer_bytes, 64 KiB) is not kept: its 503 is
// not retried (the request could not be sent again whole).
TEST_F(ProxyH2RetryTest, BodyBeyondTheReplayBoundIsNotRetried) {
  H2Server up;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const std::string body = pattern(200'000);
  const int32_t id = c.open("POST", "/seq/503,200", {}, false);
  c.send(id, body, true);
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 503);
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(observer_.records()[0].flags, "");  // no retry was made: no URX
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  EXPECT_EQ(up.streams().size(), 1u);
  EXPECT_EQ(up.streams()[0].body.size(), body.size());
}

// Without a retry policy the 503 goes to the client as it is.
TEST_F(ProxyH2RetryTest, WithoutAPolicyA503IsForwarded) {
  H2Server up;
  use_retries_ = false;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("GET", "/seq/503,200");
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 503);
  EXPECT_EQ(c.streams[id].body, "busy");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(up.streams().size(), 1u);
}

// gRPC: a trailers-only UNAVAILABLE is retried; OK reaches the client.
TEST_F(ProxyH2RetryTest, GrpcUnavailableThenOk) {
  H2Server up;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("POST", "/seq/g14,g0", kGrpcHeaders, false);
  c.send(id, "request-message", true);
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 200);
  EXPECT_EQ(find(c.streams[id].trailers, "grpc-status"), "0");
  EXPECT_EQ(c.streams[id].body, "request-message");
  ASSERT_TRUE(observer_.waitFor(1));
  const auto rec = observer_.records()[0];
  EXPECT_EQ(rec.grpc_status, "0");
  EXPECT_EQ(rec.attempts, 2u);
  EXPECT_EQ(rec.flags, "");
  const auto seen = streamsWithPath(up, "/seq/g14,g0");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].body, "request-message");
}

// Retries exhausted: the last UNAVAILABLE goes to the client, flag URX, 1 + attempts tries.
TEST_F(ProxyH2RetryTest, GrpcUnavailableExhaustedIsUrx) {
  H2Server up;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("POST", "/seq/g14", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(find(c.streams[id].headers, "grpc-status"), "14");
  ASSERT_TRUE(observer_.waitFor(1));
  const auto rec = observer_.records()[0];
  EXPECT_EQ(rec.flags, "URX");
  EXPECT_EQ(rec.grpc_status, "14");
  EXPECT_EQ(rec.attempts, 3u);  // the default policy: 2 retries
  EXPECT_EQ(streamsWithPath(up, "/seq/g14").size(), 3u);
}

// INTERNAL (13) is not in the default retryOn: one try, forwarded as it is.
TEST_F(ProxyH2RetryTest, GrpcInternalIsNotRetriedByDefault) {
  H2Server up;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("POST", "/seq/g13,g0", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(find(c.streams[id].headers, "grpc-status"), "13");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(observer_.records()[0].flags, "");
  EXPECT_EQ(streamsWithPath(up, "/seq/g13,g0").size(), 1u);
}

// A streamed gRPC response whose status comes in trailers is never retried.
TEST_F(ProxyH2RetryTest, GrpcStatusInTrailersIsNotRetried) {
  H2Server up;
  retries_.retry_on |= state::kRetryOn5xx;  // even with every condition on
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("POST", "/grpc/fail", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(find(c.streams[id].trailers, "grpc-status"), "5");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(up.streams().size(), 1u);
}

// A connect failure is retried on the endpoint retarget() gives; URX+UF when none works.
TEST_F(ProxyH2RetryTest, ConnectFailureIsRetriedOnAnotherEndpoint) {
  H2Server up;
  const SocketAddress dead = loopback(closedPort());
  routeTo(dead);
  router_.setNext(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("POST", "/things", {}, false);
  c.send(id, "payload", true);
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 200);
  EXPECT_EQ(c.streams[id].body, "ok:/things");
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  EXPECT_EQ(up.streams()[0].body, "payload");
  ASSERT_TRUE(observer_.waitFor(1));
  const auto rec = observer_.records()[0];
  EXPECT_EQ(rec.attempts, 2u);
  EXPECT_EQ(rec.upstream, up.address());
  ASSERT_EQ(router_.failed().size(), 1u);
  EXPECT_EQ(router_.failed()[0], dead);
  const auto tries = router_.tries();
  ASSERT_EQ(tries.size(), 2u);
  EXPECT_EQ(tries[0].kind, resilience::TryOutcome::Kind::kConnectFailure);
  EXPECT_EQ(tries[0].endpoint, dead);
  EXPECT_EQ(tries[1].kind, resilience::TryOutcome::Kind::kResponse);
}

TEST_F(ProxyH2RetryTest, ConnectFailureEverywhereIsUrxUf) {
  const SocketAddress dead = loopback(closedPort());
  routeTo(dead);
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("GET", "/x");
  const int32_t rpc = c.open("POST", "/rpc", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(id));
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_EQ(c.streams[id].status, 503);
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"), "14");
  ASSERT_TRUE(observer_.waitFor(2));
  for (const auto& r : observer_.records()) {
    EXPECT_EQ(r.flags, "URX,UF");
    EXPECT_EQ(r.attempts, 3u);
  }
}

// A reset before the response head is retried only when retryOn has reset.
TEST_F(ProxyH2RetryTest, ResetBeforeHeadIsRetriedOnlyWithReset) {
  H2Server up;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t a = c.open("GET", "/seq/reset,200?a");
  ASSERT_TRUE(c.waitClosed(a));
  EXPECT_EQ(c.streams[a].status, 503);  // the default policy does not retry resets
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UC");
  EXPECT_EQ(observer_.records()[0].attempts, 1u);

  retries_.retry_on |= state::kRetryOnReset;
  const int32_t b = c.open("GET", "/seq/reset,200?b");
  ASSERT_TRUE(c.waitClosed(b));
  EXPECT_EQ(c.streams[b].status, 200);
  EXPECT_EQ(c.streams[b].body, "ok:/seq/reset,200?b");
  ASSERT_TRUE(observer_.waitFor(2));
  EXPECT_EQ(observer_.records()[1].attempts, 2u);
  EXPECT_EQ(observer_.records()[1].flags, "");
}

// The first try hangs past perTryTimeout: it is cancelled upstream and retried.
TEST_F(ProxyH2RetryTest, PerTryTimeoutThenSuccess) {
  H2Server up;
  retries_.per_try_timeout_ms = 100;
  retries_.retry_on |= state::kRetryOnReset;  // per-try timeouts are in the reset class
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("GET", "/seq/hang,200");
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_EQ(c.streams[id].status, 200);
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 2; }));
  const auto seen = streamsWithPath(up, "/seq/hang,200");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].close_code, http2::kCancel);  // the abandoned try
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 2u);
  EXPECT_EQ(router_.tries()[0].kind, resilience::TryOutcome::Kind::kPerTryTimeout);
}

// The request timeout spans every try and back-off: 504 UT / DEADLINE_EXCEEDED.
TEST_F(ProxyH2RetryTest, RequestTimeoutSpansTheTries) {
  H2Server up;
  retries_.per_try_timeout_ms = 50;
  retries_.attempts = 100;
  retries_.retry_on |= state::kRetryOnReset;
  request_timeout_ms_ = 600;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t id = c.open("GET", "/seq/hang");
  const int32_t rpc = c.open("POST", "/seq/hang?rpc", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(id));
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_EQ(c.streams[id].status, 504);
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"), "4");
  ASSERT_TRUE(observer_.waitFor(2));
  for (const auto& r : observer_.records()) {
    EXPECT_EQ(r.flags, "UT");
    EXPECT_GE(r.attempts, 2u);    // more than one try fit in the request timeout
    EXPECT_LT(r.attempts, 100u);  // ... but the request timeout ended them
  }
}

// maxRequests 1: a second stream gets 503 UO (gRPC: UNAVAILABLE + UO) and never reaches
// the upstream; counts return to 0 when the streams end.
TEST_F(ProxyH2RetryTest, BreakerOverflowIs503UoAndNeverReachesTheUpstream) {
  H2Server up;
  state::RequestLimits limits;
  limits.max_requests = 1;
  breaker_.configure(limits);
  use_breaker_ = true;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t held = c.open("GET", "/hang/held");
  ASSERT_TRUE(c.runUntil([&] { return up.streams().size() == 1; }));
  EXPECT_EQ(breaker_.counts().active, 1u);
  const int32_t over = c.open("GET", "/over");
  const int32_t rpc = c.open("POST", "/over-rpc", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(over));
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_EQ(c.streams[over].status, 503);
  EXPECT_EQ(find(c.streams[over].headers, "x-meshd-response-flags"), "UO");
  EXPECT_EQ(c.streams[rpc].status, 200);
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"),
            std::to_string(resilience::kOverflowGrpcStatus));
  ASSERT_TRUE(observer_.waitFor(2));
  for (const auto& r : observer_.records()) {
    EXPECT_EQ(r.flags, "UO");
    EXPECT_EQ(r.attempts, 0u);
  }
  EXPECT_EQ(breaker_.counts().request_overflow, 2u);
  c.reset(held, http2::kCancel);
  ASSERT_TRUE(c.waitClosed(held));
  ASSERT_TRUE(observer_.waitFor(3));
  EXPECT_EQ(up.streams().size(), 1u);  // the refused streams never reached it
  const auto counts = breaker_.counts();
  EXPECT_EQ(counts.active, 0u);
  EXPECT_EQ(counts.pending, 0u);
  EXPECT_EQ(counts.retries, 0u);
  // The two refused streams' picks went back to the router; the held one was tried.
  const auto cancels = router_.cancels();
  ASSERT_EQ(cancels.size(), 2u);
  EXPECT_EQ(cancels[0], up.address());
  EXPECT_EQ(cancels[1], up.address());
}

// A retry budget of one concurrent retry: of two streams whose first try fails, one is
// retried (and hangs), the other gets its 503 as it is (no URX: no retry was made).
TEST_F(ProxyH2RetryTest, RetryBudgetLimitsConcurrentRetries) {
  H2Server up;
  state::RequestLimits limits;
  limits.retry_budget = true;
  limits.budget_percent = 0;
  limits.min_retry_concurrency = 1;
  breaker_.configure(limits);
  use_breaker_ = true;
  request_timeout_ms_ = 0;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  const int32_t a = c.open("GET", "/seq/503,hang?a");
  const int32_t b = c.open("GET", "/seq/503,hang?b");
  ASSERT_TRUE(c.runUntil([&] { return c.streams[a].closed || c.streams[b].closed; }));
  ASSERT_TRUE(up.waitFor([&] { return up.streams().size() == 3; }));
  const int32_t refused = c.streams[a].closed ? a : b;
  const int32_t retried = refused == a ? b : a;
  EXPECT_EQ(c.streams[refused].status, 503);
  EXPECT_EQ(c.streams[refused].body, "busy");
  EXPECT_FALSE(c.streams[retried].closed);
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "");
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  auto counts = breaker_.counts();
  EXPECT_EQ(counts.retries, 1u);
  EXPECT_EQ(counts.retry_overflow, 1u);
  EXPECT_EQ(counts.active, 1u);
  c.reset(retried, http2::kCancel);
  ASSERT_TRUE(c.waitClosed(retried));
  ASSERT_TRUE(observer_.waitFor(2));
  EXPECT_EQ(observer_.records()[1].attempts, 2u);
  counts = breaker_.counts();
  EXPECT_EQ(counts.retries, 0u);
  EXPECT_EQ(counts.active, 0u);
  EXPECT_EQ(counts.pending, 0u);
}

// Fault delay: the stream waits at least the delay (lower bound only), flag DI; with an
// abort the direct response follows the delay ("DI,FI"; gRPC: the mapped grpc-status).
TEST_F(ProxyH2RetryTest, FaultDelayWithAndWithoutAbort) {
  H2Server up;
  fault_delay_ms_ = 200;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  auto t0 = std::chrono::steady_clock::now();
  const int32_t id = c.open("POST", "/delayed", {}, false);
  c.send(id, "body during the delay", true);
  ASSERT_TRUE(c.waitClosed(id));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  EXPECT_EQ(c.streams[id].status, 200);
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 1; }));
  EXPECT_EQ(up.streams()[0].body, "body during the delay");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "DI");
  EXPECT_EQ(observer_.records()[0].attempts, 1u);

  abort_status_ = 403;
  t0 = std::chrono::steady_clock::now();
  const int32_t plain = c.open("GET", "/aborted");
  const int32_t rpc = c.open("POST", "/aborted-rpc", kGrpcHeaders);
  ASSERT_TRUE(c.waitClosed(plain));
  ASSERT_TRUE(c.waitClosed(rpc));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  EXPECT_EQ(c.streams[plain].status, 403);
  EXPECT_EQ(c.streams[plain].body, "fault filter abort");
  EXPECT_EQ(find(c.streams[rpc].headers, "grpc-status"), "7");  // PERMISSION_DENIED
  ASSERT_TRUE(observer_.waitFor(3));
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_EQ(observer_.records()[i].flags, "DI,FI");
    EXPECT_EQ(observer_.records()[i].attempts, 0u);
  }
  EXPECT_EQ(up.streams().size(), 1u);  // aborts never reach the upstream
}

// Many streams on one connection, only some retried: the others are unaffected.
TEST_F(ProxyH2RetryTest, OnlyTheFailingStreamsOfAConnectionAreRetried) {
  H2Server up;
  routeTo(up.address());
  startProxy();
  H2Client c(proxy_->port());
  std::vector<int32_t> ids;
  for (int i = 0; i < 20; ++i) {
    const std::string path = (i % 4 == 0 ? "/seq/503,200?" : "/seq/200?") + std::to_string(i);
    ids.push_back(c.open("POST", path, {}, false));
    c.send(ids.back(), "body-" + std::to_string(i), true);
  }
  ASSERT_TRUE(c.runUntil([&] {
    for (int32_t id : ids) {
      if (!c.streams[id].closed) return false;
    }
    return true;
  }));
  for (int i = 0; i < 20; ++i) {
    const StreamState& s = c.streams[ids[i]];
    EXPECT_EQ(s.status, 200) << i;
    EXPECT_EQ(s.close_code, 0u) << i;
  }
  ASSERT_TRUE(observer_.waitFor(20));
  int retried = 0;
  for (const auto& r : observer_.records()) {
    const bool failing = r.path.rfind("/seq/503", 0) == 0;
    EXPECT_EQ(r.attempts, failing ? 2u : 1u) << r.path;
    retried += failing;
  }
  EXPECT_EQ(retried, 5);
  ASSERT_TRUE(up.waitFor([&] { return up.closedCount() == 25; }));
  for (const SeenStream& s : up.streams()) {
    EXPECT_EQ(s.body, "body-" + s.path.substr(s.path.find('?') + 1)) << s.path;
  }
  EXPECT_LE(up.accepts(), 2);  // one h2 connection (+ the detection pre-connect)
}
}  // namespace
}  // namespace meshd::proxy
