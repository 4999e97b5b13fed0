// Request-level resilience in the HTTP/1.1 exchange of the proxy core, end to end through
// real sockets on 127.0.0.1 (topology in proxy_test_util.h): retries (connect failure,
// retriable status, reset, per-try timeout) with replay of the request, the retry budget and
// circuit breakers (503 UO), back-off, fault delays (DI), the reused-connection resend, and
// the response flags and attempts recorded. Every test asserts what the upstreams and the
// client saw. Design: docs/design/0003-l7-proxy.md, "Resilience in the core: HTTP/1.1".
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/core/proxy.h"
#include "proxy/resilience/breaker.h"
#include "proxy/resilience/retry.h"
#include "proxy_test_util.h"
#include "state/lb_state.h"

namespace meshd::proxy {
namespace {

using resilience::TryOutcome;
using testing::loopback;
using testing::readResponse;
using testing::Socket;
using testing::TestObserver;
using testing::TestOriginalDst;
using testing::UpstreamServer;
using Clock = std::chrono::steady_clock;

// Routes every request to endpoints[0] with the configured resilience settings; retarget()
// moves to the endpoint after the failed one (cyclically); retarget() and onTry() calls are
// recorded.
class RetryRouter : public Router {
 public:
  struct Try {
    SocketAddress endpoint;
    TryOutcome::Kind kind;
    uint16_t status;
    bool replayable;
  };

  // Configuration: set before the proxy starts.
  std::vector<SocketAddress> endpoints;
  SocketAddress conn_upstream;  // routeConnection's (pre-connect) target
  state::RetrySettings retries;
  bool with_retries = true;
  resilience::CircuitBreaker* breaker = nullptr;
  uint32_t fault_delay_ms = 0;
  bool abort = false;  // a fault abort: 503 FI direct response
  uint32_t request_timeout_ms = 15'000;
  bool allow_retarget = true;
  std::atomic<int> routed{0};

  void route(const RequestInfo&, RouteDecision& d) override {
    routed.fetch_add(1);
    d.upstream = endpoints.at(0);
    d.cluster = "test/web:80";
    d.retries = with_retries ? &retries : nullptr;
    d.breaker = breaker;
    d.fault_delay_ms = fault_delay_ms;
    d.request_timeout_ms = request_timeout_ms;
    if (abort) {
      d.kind = RouteDecision::Kind::kDirectResponse;
      d.status = 503;
      d.body = "fault filter abort";
      d.response_flags = "FI";
    }
  }
  bool routeConnection(const SocketAddress&, SocketAddress& upstream,
                       std::string_view& cluster) override {
    upstream = conn_upstream;
    cluster = "test/conn:80";
    return true;
  }
  bool retarget(RouteDecision& d, const SocketAddress& failed) override {
    std::lock_guard<std::mutex> lock(mu_);
    retargets_.push_back(failed);
    if (!allow_retarget) return false;
    size_t i = 0;
    while (i < endpoints.size() && !(endpoints[i] == failed)) ++i;
    d.upstream = endpoints[(i + 1) % endpoints.size()];
    return true;
  }
  void onTry(const RouteDecision&, const SocketAddress& endpoint, const TryOutcome& outcome,
             uint64_t) override {
    std::lock_guard<std::mutex> lock(mu_);
    tries_.push_back({endpoint, outcome.kind, outcome.http_status, outcome.replayable});
  }

  void onCancel(const RouteDecision&, const SocketAddress& endpoint) override {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(endpoint);
  }

  std::vector<Try> tries() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tries_;
  }
  std::vector<SocketAddress> cancels() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancels_;
  }
  std::vector<SocketAddress> retargets() const {
    std::lock_guard<std::mutex> lock(mu_);
    return retargets_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Try> tries_;
  std::vector<SocketAddress> retargets_;
  std::vector<SocketAddress> cancels_;
};

std::string response(int status, std::string_view body) {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

// Scripts: answer every request with `status` (body "s<status>:<target>").
UpstreamServer::Script answering(int status) {
  return [status](UpstreamServer::Conn& c) {
    while (auto req = c.readRequest()) {
      c.send(response(status, "s" + std::to_string(status) + ":" + req->target));
    }
  };
}

// Answers 200 with the request's body (as the upstream decoded it).
void echoBody(UpstreamServer::Conn& c) {
  while (auto req = c.readRequest()) c.send(response(200, req->body));
}

// Reads a request, then stays silent until the connection closes.
void silent(UpstreamServer::Conn& c) {
  if (!c.readRequest()) return;
  c.readSome(testing::kIoTimeoutMs);
}

// Polls `cond` (test plumbing, not an assertion on time) until true or the I/O timeout.
template <typename F>
bool eventually(F cond) {
  const auto end = Clock::now() + std::chrono::milliseconds(testing::kIoTimeoutMs);
  while (!cond()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// A request an upstream holds until `release` is set, then answers 200.
UpstreamServer::Script holding(std::atomic<bool>* release) {
  return [release](UpstreamServer::Conn& c) {
    while (auto req = c.readRequest()) {
      eventually([release] { return release->load(); });
      c.send(response(200, "held:" + req->target));
    }
  };
}

class ProxyRetryTest : public ::testing::Test {
 protected:
  void SetUp() override { router_.conn_upstream = loopback(closedPort()); }
  void startProxy(ProxyOptions o = ProxyOptions()) {
    o.listen = loopback(0);
    if (o.workers == 0) o.workers = 2;
    auto p = Proxy::start(o, router_, odst_, &observer_);
    ASSERT_TRUE(p.ok()) << p.status();
    proxy_ = std::move(*p);
  }
  void TearDown() override {
    if (proxy_) proxy_->stop();
  }
  Socket client() {
    Socket s = Socket::connectTo(proxy_->port());
    EXPECT_TRUE(s.valid());
    return s;
  }
  static uint16_t closedPort() {
    UpstreamServer tmp([](UpstreamServer::Conn&) {});
    return tmp.port();
  }
  std::optional<testing::ParsedResponse> roundTrip(std::string_view request) {
    Socket c = client();
    c.send(request);
    std::string buf;
    return readResponse(c, buf);
  }

  RetryRouter router_;
  TestOriginalDst odst_;
  TestObserver observer_;
  std::unique_ptr<Proxy> proxy_;
};

std::string get(std::string_view target) {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: web\r\n\r\n";
}

TEST_F(ProxyRetryTest, ConnectFailureIsRetriedOnAnotherEndpoint) {
  UpstreamServer up(UpstreamServer::echoTarget);
  const SocketAddress dead = loopback(closedPort());
  router_.endpoints = {dead, up.address()};
  startProxy();
  auto r = roundTrip(get("/x"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok:/x");
  ASSERT_TRUE(observer_.waitFor(1));
  const auto rec = observer_.records()[0];
  EXPECT_EQ(rec.attempts, 2u);
  EXPECT_EQ(rec.flags, "");  // Envoy: a retry that succeeded leaves no flag
  EXPECT_EQ(rec.upstream, up.address());
  const auto tries = router_.tries();
  ASSERT_EQ(tries.size(), 2u);
  EXPECT_EQ(tries[0].endpoint, dead);
  EXPECT_EQ(tries[0].kind, TryOutcome::Kind::kConnectFailure);
  EXPECT_EQ(tries[1].endpoint, up.address());
  EXPECT_EQ(tries[1].kind, TryOutcome::Kind::kResponse);
  EXPECT_EQ(tries[1].status, 200);
  EXPECT_TRUE(router_.cancels().empty());  // every pick was carried by a try
  ASSERT_EQ(router_.retargets().size(), 1u);
  EXPECT_EQ(router_.retargets()[0], dead);
}

TEST_F(ProxyRetryTest, EveryEndpointRefusingIs503WithUfAndUrx) {
  router_.endpoints = {loopback(closedPort()), loopback(closedPort())};
  startProxy();
  auto r = roundTrip(get("/"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UF,URX");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UF,URX");
  EXPECT_EQ(observer_.records()[0].attempts, 3u);  // 1 + retries.attempts (2)
}

TEST_F(ProxyRetryTest, Retriable503IsReplacedByTheRetrysResponseWithTheSameBody) {
  UpstreamServer busy(answering(503));
  UpstreamServer ok(echoBody);
  router_.endpoints = {busy.address(), ok.address()};
  startProxy();
  const std::string cl = "POST /cl HTTP/1.1\r\nHost: web\r\nContent-Length: 11\r\n\r\nhello world";
  const std::string chunked =
      "POST /ch HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  for (const std::string& req : {cl, chunked}) {
    Socket c = client();
    c.send(req);
    std::string buf;
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello world");
    EXPECT_EQ(c.readSome(100), "");  // nothing else (the 503 never reached the client)
  }
  ASSERT_TRUE(observer_.waitFor(2));
  for (const auto& rec : observer_.records()) {
    EXPECT_EQ(rec.code, 200);
    EXPECT_EQ(rec.attempts, 2u);
    EXPECT_EQ(rec.flags, "");
  }
  const auto first = busy.requests();
  const auto second = ok.requests();
  ASSERT_EQ(first.size(), 2u);  // each request once on the first endpoint
  ASSERT_EQ(second.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(first[i].body, "hello world");
    EXPECT_EQ(second[i].body, first[i].body);
    EXPECT_EQ(second[i].target, first[i].target);
    EXPECT_EQ(second[i].header("x-request-id"), first[i].header("x-request-id"));
  }
  // The discarded responses' connections were closed, not pooled.
  EXPECT_TRUE(busy.waitConnectionsDone(2));
}

TEST_F(ProxyRetryTest, RetriesExhaustedForwardTheLast503WithUrx) {
  UpstreamServer a(answering(503));
  UpstreamServer b(answering(503));
  router_.endpoints = {a.address(), b.address()};
  startProxy();
  auto r = roundTrip(get("/busy"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "s503:/busy");  // the upstream's own last response
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "URX");
  EXPECT_EQ(observer_.records()[0].attempts, 3u);
  EXPECT_EQ(a.requests().size() + b.requests().size(), 3u);
  EXPECT_EQ(a.requests().size(), 2u);  // a, b, a
  EXPECT_EQ(router_.tries().size(), 3u);
}

TEST_F(ProxyRetryTest, A500IsNotRetriedByTheDefaultPolicy) {
  UpstreamServer a(answering(500));
  UpstreamServer b(UpstreamServer::echoTarget);
  router_.endpoints = {a.address(), b.address()};
  startProxy();
  auto r = roundTrip(get("/e"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 500);
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(observer_.records()[0].flags, "");
  EXPECT_EQ(b.accepts(), 0);
  EXPECT_TRUE(router_.retargets().empty());
}

TEST_F(ProxyRetryTest, ABodyBeyondTheReplayBoundIsNotRetried) {
  UpstreamServer a(answering(503));
  UpstreamServer b(echoBody);
  router_.endpoints = {a.address(), b.address()};
  startProxy();  // max_buffer_bytes 64 KiB: the replay bound
  const std::string body(100 * 1024, 'x');
  auto r = roundTrip("POST /big HTTP/1.1\r\nHost: web\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(observer_.records()[0].flags, "");  // no retry was made: no URX
  ASSERT_EQ(a.requests().size(), 1u);
  EXPECT_EQ(a.requests()[0].body.size(), body.size());
  EXPECT_EQ(b.accepts(), 0);
  const auto tries = router_.tries();
  ASSERT_EQ(tries.size(), 1u);
  EXPECT_FALSE(tries[0].replayable);
}

TEST_F(ProxyRetryTest, AResponseThatReachedTheClientIsNeverRetried) {
  UpstreamServer a([](UpstreamServer::Conn& c) {
    if (!c.readRequest()) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  });
  UpstreamServer b(UpstreamServer::echoTarget);
  router_.endpoints = {a.address(), b.address()};
  router_.retries.retry_on |= state::kRetryOnReset | state::kRetryOn5xx;
  startProxy();
  Socket c = client();
  c.send(get("/p"));
  bool closed = false;
  const std::string all = c.readAll(testing::kIoTimeoutMs, &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(all.rfind("HTTP/1.1 200 ", 0), 0u);
  EXPECT_EQ(all.find("HTTP/1.1", 1), std::string::npos);  // no second response
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(observer_.records()[0].flags, "UC");
  EXPECT_EQ(b.accepts(), 0);
}

TEST_F(ProxyRetryTest, PerTryTimeoutMovesToTheNextEndpoint) {
  UpstreamServer quiet(silent);
  UpstreamServer ok(UpstreamServer::echoTarget);
  router_.endpoints = {quiet.address(), ok.address()};
  router_.retries.per_try_timeout_ms = 200;
  router_.retries.retry_on |= state::kRetryOnReset;
  startProxy();
  auto r = roundTrip(get("/t"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok:/t");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 2u);
  const auto tries = router_.tries();
  ASSERT_EQ(tries.size(), 2u);
  EXPECT_EQ(tries[0].kind, TryOutcome::Kind::kPerTryTimeout);
  EXPECT_EQ(quiet.requests().size(), 1u);
}

TEST_F(ProxyRetryTest, PerTryTimeoutStartsWhenTheRequestWasPassedOn) {
  // A slow upload is not a slow upstream (Envoy starts the per-try timer at the end of the
  // downstream request): the pause below exceeds the per-try timeout, the try survives it.
  UpstreamServer up(echoBody);
  router_.endpoints = {up.address(), loopback(closedPort())};
  router_.retries.per_try_timeout_ms = 100;
  router_.retries.retry_on |= state::kRetryOnReset;
  startProxy();
  Socket c = client();
  c.send("POST /up HTTP/1.1\r\nHost: web\r\nContent-Length: 10\r\n\r\nhello");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the scenario, not a check
  c.send("world");
  std::string buf;
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "helloworld");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
}

TEST_F(ProxyRetryTest, PerTryTimeoutWithoutRetriesIs504Ut) {
  UpstreamServer quiet(silent);
  router_.endpoints = {quiet.address()};
  router_.retries.per_try_timeout_ms = 200;
  router_.retries.attempts = 0;
  startProxy();
  auto r = roundTrip(get("/t"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UT");
}

TEST_F(ProxyRetryTest, TheRequestTimeoutSpansAllTries) {
  UpstreamServer a(silent);
  UpstreamServer b(silent);
  router_.endpoints = {a.address(), b.address()};
  router_.retries.per_try_timeout_ms = 300;
  router_.retries.attempts = 5;
  router_.retries.retry_on |= state::kRetryOnReset;
  router_.request_timeout_ms = 500;
  startProxy();
  auto r = roundTrip(get("/slow"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 504);
  // Not "UT,URX": the route timeout ended the request, not the last per-try timeout.
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UT");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UT");
  EXPECT_GE(observer_.records()[0].attempts, 1u);
  EXPECT_LT(observer_.records()[0].attempts, 6u);
}

TEST_F(ProxyRetryTest, BackOffDelaysTheRetry) {
  // Full jitter draws each back-off in [0, base): no single retry has a lower bound, but 30
  // of them sum to 1.5 s on average (standard deviation 0.16 s); without a back-off they
  // take a few ms. The bound below is 6 standard deviations under the mean.
  UpstreamServer a(answering(503));
  UpstreamServer b(UpstreamServer::echoTarget);
  router_.endpoints = {a.address(), b.address()};
  router_.retries.base_interval_ms = 100;
  router_.retries.max_interval_ms = 1000;
  router_.retries.attempts = 1;
  startProxy();
  Socket c = client();
  std::string buf;
  const auto start = Clock::now();
  for (int i = 0; i < 30; ++i) {
    c.send(get("/b" + std::to_string(i)));
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->status, 200);
  }
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(500));
  EXPECT_EQ(a.requests().size(), 30u);
  EXPECT_EQ(b.requests().size(), 30u);
}

TEST_F(ProxyRetryTest, MaxRequestsOverflowIs503UoAndNeverReachesTheUpstream) {
  std::atomic<bool> release{false};
  UpstreamServer up(holding(&release));
  state::RequestLimits limits;
  limits.max_requests = 1;
  resilience::CircuitBreaker breaker(limits);
  router_.endpoints = {up.address()};
  router_.breaker = &breaker;
  startProxy();
  Socket c1 = client();
  c1.send(get("/held"));
  ASSERT_TRUE(eventually([&] { return up.requests().size() == 1; }));
  EXPECT_EQ(breaker.counts().active, 1u);
  auto r2 = roundTrip(get("/second"));
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 503);
  EXPECT_EQ(r2->header("x-meshd-response-flags"), "UO");
  release = true;
  std::string buf;
  auto r1 = readResponse(c1, buf);
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->status, 200);
  ASSERT_TRUE(observer_.waitFor(2));
  bool saw_uo = false;
  for (const auto& rec : observer_.records()) {
    if (rec.flags == "UO") {
      saw_uo = true;
      EXPECT_EQ(rec.code, 503);
      EXPECT_EQ(rec.attempts, 0u);
    }
  }
  EXPECT_TRUE(saw_uo);
  ASSERT_EQ(up.requests().size(), 1u);
  EXPECT_EQ(up.requests()[0].target, "/held");
  const auto counts = breaker.counts();
  EXPECT_EQ(counts.active, 0u);
  EXPECT_EQ(counts.pending, 0u);
  EXPECT_EQ(counts.retries, 0u);
  EXPECT_EQ(counts.request_overflow, 1u);
  // The refused request's pick went back to the router; the one that was sent did not.
  ASSERT_EQ(router_.cancels().size(), 1u);
  EXPECT_EQ(router_.cancels()[0], up.address());
}

TEST_F(ProxyRetryTest, MaxPendingZeroRefusesARequestThatNeedsANewConnection) {
  UpstreamServer up(UpstreamServer::echoTarget);
  state::RequestLimits limits;
  limits.max_pending_requests = 0;
  resilience::CircuitBreaker breaker(limits);
  router_.endpoints = {up.address()};
  router_.breaker = &breaker;
  startProxy();
  auto r = roundTrip(get("/p"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UO");
  EXPECT_TRUE(up.requests().empty());
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(breaker.counts().pending_overflow, 1u);
  EXPECT_EQ(breaker.counts().active, 0u);
  EXPECT_EQ(breaker.counts().pending, 0u);
}

TEST_F(ProxyRetryTest, MaxPendingOneWithAConnectingUpstream) {
  // A listener that never accepts, its queue filled: connects stay pending.
  ScopedFd full(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  socklen_t len = loopback(0).toSockaddr(&ss);
  ASSERT_EQ(::bind(full.get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  ASSERT_EQ(::listen(full.get(), 0), 0);
  len = sizeof(ss);
  ::getsockname(full.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  const SocketAddress blackhole =
      SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  std::vector<ScopedFd> fillers;
  for (int i = 0; i < 4; ++i) {
    fillers.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ::connect(fillers.back().get(), reinterpret_cast<sockaddr*>(&ss), len);
  }
  state::RequestLimits limits;
  limits.max_pending_requests = 1;
  resilience::CircuitBreaker breaker(limits);
  router_.endpoints = {blackhole};
  router_.breaker = &breaker;
  router_.with_retries = false;
  ProxyOptions o;
  o.connect_timeout_ms = 1000;
  startProxy(o);
  Socket c1 = client();
  c1.send(get("/first"));
  ASSERT_TRUE(eventually([&] { return breaker.counts().pending == 1; }));
  auto r2 = roundTrip(get("/second"));
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 503);
  EXPECT_EQ(r2->header("x-meshd-response-flags"), "UO");
  std::string buf;
  auto r1 = readResponse(c1, buf);  // the connect timeout
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->status, 503);
  EXPECT_EQ(r1->header("x-meshd-response-flags"), "UF");
  ASSERT_TRUE(observer_.waitFor(2));
  const auto counts = breaker.counts();
  EXPECT_EQ(counts.pending, 0u);
  EXPECT_EQ(counts.active, 0u);
  EXPECT_EQ(counts.pending_overflow, 1u);
}

TEST_F(ProxyRetryTest, TheRetryBudgetAllowsOneConcurrentRetry) {
  std::atomic<bool> release{false};
  UpstreamServer a(answering(503));
  UpstreamServer b(holding(&release));
  state::RequestLimits limits;
  limits.retry_budget = true;
  limits.budget_percent = 20;  // of 2 active requests: 0, so the minimum decides
  limits.min_retry_concurrency = 1;
  resilience::CircuitBreaker breaker(limits);
  router_.endpoints = {a.address(), b.address()};
  router_.breaker = &breaker;
  startProxy();
  Socket c1 = client();
  c1.send(get("/one"));
  ASSERT_TRUE(eventually([&] { return b.requests().size() == 1; }));  // its retry, held
  EXPECT_EQ(breaker.counts().retries, 1u);
  auto r2 = roundTrip(get("/two"));
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 503);  // its own outcome: the budget refused the retry
  EXPECT_EQ(r2->body, "s503:/two");
  release = true;
  std::string buf;
  auto r1 = readResponse(c1, buf);
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r1->body, "held:/one");
  ASSERT_TRUE(observer_.waitFor(2));
  for (const auto& rec : observer_.records()) {
    if (rec.path == "/two") {
      EXPECT_EQ(rec.attempts, 1u);
      EXPECT_EQ(rec.flags, "");  // no retry was made
    } else {
      EXPECT_EQ(rec.attempts, 2u);
    }
  }
  EXPECT_EQ(a.requests().size(), 2u);
  ASSERT_EQ(b.requests().size(), 1u);
  EXPECT_EQ(b.requests()[0].target, "/one");
  const auto counts = breaker.counts();
  EXPECT_EQ(counts.retry_overflow, 1u);
  EXPECT_EQ(counts.retries, 0u);
  EXPECT_EQ(counts.active, 0u);
  EXPECT_EQ(counts.pending, 0u);
}

TEST_F(ProxyRetryTest, FaultDelayHoldsTheRequestAndFlagsDi) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.endpoints = {up.address()};
  router_.fault_delay_ms = 300;
  startProxy();
  const auto start = Clock::now();
  auto r = roundTrip(get("/d"));
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok:/d");
  EXPECT_GE(elapsed, std::chrono::milliseconds(300));
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "DI");
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_GE(observer_.records()[0].code, 200);
}

TEST_F(ProxyRetryTest, FaultDelayThenAbortAnswersDiFi) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.endpoints = {up.address()};
  router_.fault_delay_ms = 300;
  router_.abort = true;
  startProxy();
  const auto start = Clock::now();
  auto r = roundTrip(get("/a"));
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "fault filter abort");
  EXPECT_EQ(r->header("x-meshd-response-flags"), "DI,FI");
  EXPECT_GE(elapsed, std::chrono::milliseconds(300));
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "DI,FI");
  EXPECT_EQ(observer_.records()[0].attempts, 0u);
  EXPECT_EQ(up.accepts(), 0);
}

TEST_F(ProxyRetryTest, AClientLeavingDuringTheDelayReleasesEverything) {
  UpstreamServer up(UpstreamServer::echoTarget);
  resilience::CircuitBreaker breaker;
  router_.endpoints = {up.address()};
  router_.breaker = &breaker;
  router_.fault_delay_ms = 2000;
  startProxy();
  {
    Socket c = client();
    c.send("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 10\r\n\r\nabc");
    ASSERT_TRUE(eventually([&] { return router_.routed.load() == 1; }));
    linger l{1, 0};  // close with a reset: the client is gone, not half-closed
    ::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }  // closed mid-body during the delay
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "DI,DC");
  EXPECT_EQ(observer_.records()[0].attempts, 0u);
  EXPECT_EQ(up.accepts(), 0);
  EXPECT_EQ(breaker.counts().active, 0u);
  EXPECT_EQ(router_.cancels().size(), 1u);  // the pick no try carried
}

TEST_F(ProxyRetryTest, AResetOnAReusedConnectionIsResentOnceForIdempotentMethods) {
  // Connection 0 answers the first request and closes when the second arrives (as a server
  // whose keep-alive timeout fired just then); later connections answer everything.
  UpstreamServer up([](UpstreamServer::Conn& c) {
    if (c.index() == 0) {
      auto req = c.readRequest();
      if (!req) return;
      c.send(response(200, "first"));
      c.readRequest();
      return;  // closed without an answer
    }
    UpstreamServer::echoTarget(c);
  });
  router_.endpoints = {up.address()};
  ProxyOptions o;
  o.workers = 1;
  startProxy(o);
  Socket c = client();
  std::string buf;
  c.send(get("/1"));
  auto r1 = readResponse(c, buf);
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->body, "first");
  c.send(get("/2"));
  auto r2 = readResponse(c, buf);
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 200);
  EXPECT_EQ(r2->body, "ok:/2");
  EXPECT_EQ(up.accepts(), 2);
  ASSERT_TRUE(observer_.waitFor(2));
  EXPECT_EQ(observer_.records()[1].attempts, 1u);  // the same try, re-sent
  EXPECT_EQ(observer_.records()[1].flags, "");
  EXPECT_EQ(router_.tries().size(), 2u);  // one onTry per request
  EXPECT_TRUE(router_.retargets().empty());
}

TEST_F(ProxyRetryTest, AResetOnAReusedConnectionIsNotResentForAPost) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    if (c.index() == 0) {
      auto req = c.readRequest();
      if (!req) return;
      c.send(response(200, "first"));
      c.readRequest();
      return;
    }
    UpstreamServer::echoTarget(c);
  });
  router_.endpoints = {up.address()};
  ProxyOptions o;
  o.workers = 1;
  startProxy(o);
  Socket c = client();
  std::string buf;
  c.send(get("/1"));
  ASSERT_TRUE(readResponse(c, buf).has_value());
  c.send("POST /2 HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\n\r\nhi");
  auto r2 = readResponse(c, buf);
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 503);  // the default policy does not retry resets
  EXPECT_EQ(r2->header("x-meshd-response-flags"), "UC");
  EXPECT_EQ(up.accepts(), 1);
  const auto tries = router_.tries();
  ASSERT_EQ(tries.size(), 2u);
  EXPECT_EQ(tries[1].kind, TryOutcome::Kind::kReset);
}

TEST_F(ProxyRetryTest, WithoutRetriesNothingChanges) {
  UpstreamServer a(answering(503));
  router_.endpoints = {a.address(), loopback(closedPort())};
  router_.with_retries = false;
  startProxy();
  auto r = roundTrip(get("/n"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].attempts, 1u);
  EXPECT_EQ(observer_.records()[0].flags, "");
  EXPECT_EQ(router_.tries().size(), 1u);  // onTry still reports the try
  EXPECT_TRUE(router_.retargets().empty());
}

}  // namespace
}  // namespace meshd::proxy
