// Tests of bench/loadgen. The generator tests run real sockets against a small blocking
// HTTP server in this process, so their timing assertions are deliberately loose (tens of
// milliseconds against effects of 50-200 ms): they must fail if queueing were hidden or
// the schedule were wrong, not on a noisy machine.
//
//   openloop generator ---- N keep-alive connections ----> TestHttpServer 127.0.0.1:0
//   (this thread)                                          (one thread per connection;
//                                                           a policy may delay answers)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "histogram.h"
#include "http_response_parser.h"
#include "open_loop.h"

namespace meshd::loadgen {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// LatencyHistogram

// The nearest-rank percentile of a sorted vector, as valueAtPercentile defines it.
uint64_t exactPercentile(const std::vector<uint64_t>& sorted, double p) {
  const uint64_t rank = std::max<uint64_t>(
      1, static_cast<uint64_t>(std::ceil(p * static_cast<double>(sorted.size()) / 100.0 - 1e-9)));
  return sorted[rank - 1];
}

TEST(LatencyHistogramTest, BucketsAreContiguousAndBounded) {
  size_t prev = 0;
  for (uint64_t v = 0; v < 2'000'000; v++) {
    const size_t i = LatencyHistogram::bucketIndex(v);
    ASSERT_TRUE(i == prev || i == prev + 1) << v;
    ASSERT_GE(LatencyHistogram::bucketHighest(i), v);
    // Relative precision: the bucket's highest value is within v/256 of v.
    ASSERT_LE(LatencyHistogram::bucketHighest(i) - v, v >> LatencyHistogram::kSubBucketBits) << v;
    ASSERT_EQ(LatencyHistogram::bucketIndex(LatencyHistogram::bucketHighest(i)), i);
    prev = i;
  }
}

TEST(LatencyHistogramTest, PercentilesMatchSortedVectorWithinBucketPrecision) {
  std::mt19937_64 rng(42);
  // Log-uniform from 1 us to ~60 s, plus a cluster, so both the exact and the
  // log-linear ranges are exercised.
  std::uniform_real_distribution<double> log_us(0.0, std::log(60e6));
  std::vector<uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 100'000; i++) {
    const uint64_t v = i % 3 == 0 ? 150 + rng() % 20 : static_cast<uint64_t>(std::exp(log_us(rng)));
    values.push_back(v);
    h.record(v);
  }
  std::sort(values.begin(), values.end());
  EXPECT_EQ(h.count(), values.size());
  EXPECT_EQ(h.max(), values.back());
  EXPECT_EQ(h.min(), values.front());
  for (double p : {0.1, 1.0, 10.0, 25.0, 33.3, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    const uint64_t exact = exactPercentile(values, p);
    const uint64_t got = h.valueAtPercentile(p);
    EXPECT_GE(got, exact) << "p" << p;
    EXPECT_LE(got, exact + (exact >> LatencyHistogram::kSubBucketBits)) << "p" << p;
  }
}

TEST(LatencyHistogramTest, SmallSetsAndClamping) {
  LatencyHistogram h;
  EXPECT_EQ(h.valueAtPercentile(50), 0u);
  for (uint64_t v = 1; v <= 100; v++) h.record(v);
  EXPECT_EQ(h.valueAtPercentile(50), 50u);  // exact below 256 us
  EXPECT_EQ(h.valueAtPercentile(99), 99u);
  EXPECT_EQ(h.valueAtPercentile(100), 100u);
  EXPECT_EQ(h.countAtOrAbove(91), 10u);
  h.record(3'600'000'000);  // an hour: clamped to the 60 s limit, still counted
  EXPECT_EQ(h.count(), 101u);
  EXPECT_EQ(h.max(), LatencyHistogram::kMaxValueUs);
}

// ---------------------------------------------------------------------------------------
// HttpResponseParser

struct ParseCase {
  const char* name;
  std::string input;
  HttpResponseParser::Result want;
  int status = 0;
  bool keep_alive = true;
  size_t trailing = 0;  // bytes after the response that must not be consumed
};

// Feeds `input` in pieces of `step` bytes; returns the final result and what was left.
HttpResponseParser::Result feedAll(HttpResponseParser& p, const std::string& input, size_t step,
                                   size_t* left) {
  size_t pos = 0;
  while (pos < input.size()) {
    const size_t n = std::min(step, input.size() - pos);
    size_t consumed = 0;
    auto r = p.feed(std::string_view(input).substr(pos, n), &consumed);
    if (r == HttpResponseParser::Result::kError) return r;
    pos += consumed;
    if (r == HttpResponseParser::Result::kComplete) {
      *left = input.size() - pos;
      return r;
    }
  }
  *left = 0;
  return HttpResponseParser::Result::kNeedMore;
}

TEST(HttpResponseParserTest, Table) {
  using R = HttpResponseParser::Result;
  const std::vector<ParseCase> cases = {
      {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", R::kComplete, 200},
      {"zero length", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", R::kComplete, 200},
      {"no reason phrase", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", R::kComplete, 404},
      {"trailing bytes", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", R::kComplete, 200,
       true, 5},
      {"incomplete body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", R::kNeedMore},
      {"chunked",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
       "1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
       R::kComplete, 200},
      {"chunked with trailers",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n"
       "X-Trailer: 1\r\n\r\n",
       R::kComplete, 200},
      {"chunked incomplete", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
       R::kNeedMore},
      {"100 continue first",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
       R::kComplete, 201},
      {"204 has no body", "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", R::kComplete,
       204},
      {"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
       R::kComplete, 200, false},
      {"http/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", R::kComplete, 200, false},
      {"http/1.0 keep-alive",
       "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", R::kComplete, 200,
       true},
      {"te and cl: te wins, no reuse",
       "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       R::kComplete, 200, false},
      {"body until close", "HTTP/1.1 200 OK\r\n\r\nstream...", R::kNeedMore},
      {"not http", "SSH-2.0-OpenSSH_9.2\r\n\r\n", R::kError},
      {"bad version", "HTTP/2.0 200 OK\r\n\r\n", R::kError},
      {"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", R::kError},
      {"bad content-length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", R::kError},
      {"conflicting content-length",
       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", R::kError},
      {"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx", R::kError},
      {"header without colon", "HTTP/1.1 200 OK\r\nfoo\r\n\r\n", R::kError},
      {"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", R::kError},
      {"chunk size overflow",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", R::kError},
      {"no crlf after chunk",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", R::kError},
      {"bare lf chunk line", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc",
       R::kError},
  };
  for (const ParseCase& c : cases) {
    // Whole, then byte by byte, then in 7-byte pieces: framing must not depend on reads.
    for (size_t step : {c.input.size(), size_t{1}, size_t{7}}) {
      HttpResponseParser p;
      p.reset();
      size_t left = 0;
      const auto r = feedAll(p, c.input, step, &left);
      ASSERT_EQ(r, c.want) << c.name << " step " << step << ": " << p.error();
      if (r == HttpResponseParser::Result::kComplete) {
        EXPECT_EQ(p.status(), c.status) << c.name;
        EXPECT_EQ(p.keepAlive(), c.keep_alive) << c.name;
        EXPECT_EQ(left, c.trailing) << c.name;
      }
      if (r == HttpResponseParser::Result::kError) {
        EXPECT_FALSE(p.error().empty()) << c.name;
      }
    }
  }
}

TEST(HttpResponseParserTest, EofAndLimits) {
  using R = HttpResponseParser::Result;
  HttpResponseParser p;
  p.reset();
  size_t consumed = 0;
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\n\r\nall the rest", &consumed), R::kNeedMore);
  EXPECT_EQ(p.finishOnEof(), R::kComplete);  // body delimited by close
  EXPECT_FALSE(p.keepAlive());

  p.reset();
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", &consumed), R::kNeedMore);
  EXPECT_EQ(p.finishOnEof(), R::kError);  // truncated

  p.reset();
  EXPECT_FALSE(p.started());
  EXPECT_EQ(p.finishOnEof(), R::kError);

  p.reset();
  std::string huge = "HTTP/1.1 200 OK\r\n";
  while (huge.size() <= HttpResponseParser::kMaxHeadBytes) huge += "X-Pad: aaaaaaaaaaaaaaaa\r\n";
  EXPECT_EQ(p.feed(huge, &consumed), R::kError);
}

// ---------------------------------------------------------------------------------------
// The generator against a local server.

class TestHttpServer {
 public:
  // Called for each request (0-based, in arrival order, across connections) before it
  // is answered; may sleep. Returns whether to close the connection after answering.
  using Policy = std::function<bool(uint64_t request)>;

  explicit TestHttpServer(Policy policy) : policy_(std::move(policy)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(listen_fd_, 128), 0);
    socklen_t len = sizeof(a);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { acceptLoop(); });
  }

  ~TestHttpServer() {
    stopping_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : conn_fds_) shutdown(fd, SHUT_RDWR);
    }
    for (std::thread& t : workers_) t.join();
    close(listen_fd_);
  }

  uint16_t port() const { return port_; }
  uint64_t requests() const { return requests_.load(); }

 private:
  void acceptLoop() {
    while (!stopping_) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      conn_fds_.push_back(fd);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    std::string in;
    char buf[4096];
    while (true) {
      const size_t end = in.find("\r\n\r\n");
      if (end == std::string::npos) {
        const ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
        continue;
      }
      in.erase(0, end + 4);
      const bool close_after = policy_(requests_.fetch_add(1));
      const std::string resp =
          close_after ? "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
                      : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
      if (send(fd, resp.data(), resp.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(resp.size())) {
        break;
      }
      if (close_after) break;
    }
    // The fd stays open (and listed) until the destructor, so shutdown() there never
    // hits a reused descriptor; half-close here so the client sees the close now.
    shutdown(fd, SHUT_RDWR);
  }

  Policy policy_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> requests_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> conn_fds_;
  std::vector<std::thread> workers_;
};

OpenLoopConfig configFor(const TestHttpServer& server, double rate, double duration_s,
                         int connections) {
  OpenLoopConfig cfg;
  const std::string target = "127.0.0.1:" + std::to_string(server.port());
  EXPECT_TRUE(resolveTarget(target, &cfg).ok());
  cfg.host = target;
  cfg.rate = rate;
  cfg.duration_s = duration_s;
  cfg.connections = connections;
  return cfg;
}

double ms(uint64_t us) { return static_cast<double>(us) / 1000.0; }

TEST(OpenLoopTest, EveryTenthDelayedShowsInP99NotP50AndScheduleIsKept) {
  TestHttpServer server([](uint64_t i) {
    if (i % 10 == 9) std::this_thread::sleep_for(milliseconds(50));
    return false;
  });
  OpenLoopConfig cfg = configFor(server, 500, 2.0, 16);
  cfg.warmup_s = 0.2;
  absl::StatusOr<OpenLoopResult> r = runOpenLoop(cfg);
  ASSERT_TRUE(r.ok()) << r.status();
  // rate * duration within 2% (the warmup's 100 requests are not counted).
  EXPECT_NEAR(static_cast<double>(r->sent), 1000.0, 20.0);
  EXPECT_EQ(r->errors, 0u);
  EXPECT_EQ(r->ok, r->sent);
  EXPECT_EQ(r->latency_us.count(), r->sent);
  EXPECT_EQ(server.requests(), 1100u);
  const auto& h = r->latency_us;
  EXPECT_GE(ms(h.valueAtPercentile(99)), 45.0);
  EXPECT_LT(ms(h.valueAtPercentile(50)), 20.0);
  // About 10% of requests were delayed: their count, not just the max, shows it.
  EXPECT_NEAR(static_cast<double>(h.countAtOrAbove(45'000)), 100.0, 30.0);
}

TEST(OpenLoopTest, StalledServerQueuesRequestsAndTheWaitCounts) {
  // Request #250 (~0.5 s in at 500/s) starts a 200 ms stall: every request the server
  // takes before the stall ends is held until then. With 4 connections, only 4 requests
  // are on the wire during the stall; the ~96 others due in that window wait in the
  // generator's queue. A closed-loop tool would measure only those 4 as slow
  // (coordinated omission); here the queued ones must show latencies ramping up to
  // ~200 ms.
  std::mutex mu;
  SteadyClock::time_point stall_until{};
  TestHttpServer server([&](uint64_t i) {
    SteadyClock::time_point until;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (i == 250) stall_until = SteadyClock::now() + milliseconds(200);
      until = stall_until;
    }
    std::this_thread::sleep_until(until);
    return false;
  });
  OpenLoopConfig cfg = configFor(server, 500, 2.0, 4);
  absl::StatusOr<OpenLoopResult> r = runOpenLoop(cfg);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->errors, 0u);
  EXPECT_NEAR(static_cast<double>(r->sent), 1000.0, 20.0);
  const auto& h = r->latency_us;
  EXPECT_GE(ms(h.max()), 180.0);
  // ~50 requests queued for >= 100 ms; coordinated omission would report at most 4.
  EXPECT_GE(h.countAtOrAbove(100'000), 30u);
  EXPECT_GE(h.countAtOrAbove(20'000), 60u);
  EXPECT_GE(ms(h.valueAtPercentile(99)), 100.0);
  EXPECT_LT(ms(h.valueAtPercentile(50)), 20.0);
}

TEST(OpenLoopTest, ReconnectsWhenTheServerClosesConnections) {
  TestHttpServer server([](uint64_t i) { return i % 3 == 0; });
  OpenLoopConfig cfg = configFor(server, 300, 1.0, 4);
  absl::StatusOr<OpenLoopResult> r = runOpenLoop(cfg);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->errors, 0u);
  EXPECT_EQ(r->ok, r->sent);
  EXPECT_GE(r->reconnects, 50u);
  EXPECT_NEAR(static_cast<double>(r->sent), 300.0, 6.0);
}

TEST(OpenLoopTest, FailsClearlyWhenNothingListens) {
  // A port that was free a moment ago: bind, read it, close.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  OpenLoopConfig cfg;
  ASSERT_TRUE(resolveTarget("127.0.0.1:" + std::to_string(ntohs(a.sin_port)), &cfg).ok());
  cfg.host = "x";
  cfg.duration_s = 0.1;
  cfg.connections = 2;
  absl::StatusOr<OpenLoopResult> r = runOpenLoop(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST(OpenLoopTest, RejectsBadConfigAndTargets) {
  OpenLoopConfig cfg;
  EXPECT_FALSE(resolveTarget("no-port", &cfg).ok());
  EXPECT_FALSE(resolveTarget("127.0.0.1:", &cfg).ok());
  ASSERT_TRUE(resolveTarget("[::1]:80", &cfg).ok());
  EXPECT_EQ(cfg.target.ss_family, AF_INET6);
  cfg.host = "h";
  cfg.rate = 0;
  EXPECT_EQ(runOpenLoop(cfg).status().code(), absl::StatusCode::kInvalidArgument);
  cfg.rate = 10;
  cfg.path = "/a b";
  EXPECT_EQ(runOpenLoop(cfg).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace meshd::loadgen
