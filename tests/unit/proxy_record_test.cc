// What RequestRecord carries for the access log, end to end on 127.0.0.1 (topology in
// proxy_test_util.h): the request target as received, the authority, User-Agent (cut at
// their bounds), the wall-clock start, and opaque connections' records.
#include <gtest/gtest.h>
#include <time.h>

#include <string>

#include "proxy/core/proxy.h"
#include "proxy_test_util.h"

namespace meshd::proxy {
namespace {

using testing::loopback;
using testing::readResponse;
using testing::Socket;
using testing::TestObserver;
using testing::TestOriginalDst;
using testing::TestRouter;
using testing::UpstreamServer;

uint64_t realtimeUs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

class ProxyRecordTest : public ::testing::Test {
 protected:
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
  TestRouter router_;
  TestOriginalDst odst_;
  TestObserver observer_;
  std::unique_ptr<Proxy> proxy_;
};

TEST_F(ProxyRecordTest, Http1RecordCarriesTargetAuthorityUserAgentAndWallClockStart) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  startProxy();
  Socket c = Socket::connectTo(proxy_->port());
  std::string buf;
  const uint64_t before = realtimeUs();
  c.send("GET /a/b?x=1&y=%22 HTTP/1.1\r\nHost: web.default:8080\r\nUser-Agent: curl/8.0\r\n\r\n");
  ASSERT_TRUE(readResponse(c, buf).has_value());
  // Absolute-form: the record has the origin-form, the authority from the target.
  c.send("GET http://api.example:81/v1/items?q=2 HTTP/1.1\r\nHost: api.example:81\r\n\r\n");
  ASSERT_TRUE(readResponse(c, buf).has_value());
  // Over-long values are cut at their bounds, not dropped.
  const std::string long_path = "/" + std::string(kRecordMaxPath + 100, 'p');
  const std::string long_ua(kRecordMaxUserAgent + 50, 'u');
  c.send("GET " + long_path + " HTTP/1.1\r\nHost: web\r\nUser-Agent: " + long_ua + "\r\n\r\n");
  ASSERT_TRUE(readResponse(c, buf).has_value());
  const uint64_t after = realtimeUs();
  ASSERT_TRUE(observer_.waitFor(3));
  const auto recs = observer_.records();

  EXPECT_EQ(recs[0].protocol, "http/1.1");
  EXPECT_EQ(recs[0].path, "/a/b?x=1&y=%22");
  EXPECT_EQ(recs[0].authority, "web.default:8080");
  EXPECT_EQ(recs[0].user_agent, "curl/8.0");
  EXPECT_EQ(recs[0].attempts, 1u);
  EXPECT_EQ(recs[1].path, "/v1/items?q=2");
  EXPECT_EQ(recs[1].authority, "api.example:81");
  EXPECT_EQ(recs[1].user_agent, "");  // none sent: not the previous request's
  EXPECT_EQ(recs[2].path, long_path.substr(0, kRecordMaxPath));
  EXPECT_EQ(recs[2].user_agent, long_ua.substr(0, kRecordMaxUserAgent));
  // The start is wall-clock time, between the test's own readings (the worker derives
  // it from the monotonic clock and a realtime offset re-read every second; the slack
  // only absorbs a clock step during the test).
  for (const auto& r : recs) {
    EXPECT_GE(r.start_unix_us + 1'000'000, before);
    EXPECT_LE(r.start_unix_us, after + 1'000'000);
  }
  EXPECT_LE(recs[0].start_unix_us, recs[2].start_unix_us);
}

TEST_F(ProxyRecordTest, OpaqueRecordHasAStartAndNoHttpFields) {
  UpstreamServer up([](UpstreamServer::Conn& conn) {
    conn.readUntil("ping");
    conn.send("pong");
    conn.close();
  });
  router_.forwardTo(up.address());
  startProxy();
  const uint64_t before = realtimeUs();
  Socket c = Socket::connectTo(proxy_->port());
  c.send("\x16\x03\x01 ping");  // not HTTP: relayed opaquely
  bool closed = false;
  EXPECT_EQ(c.readAll(testing::kIoTimeoutMs, &closed), "pong");
  c.close();
  ASSERT_TRUE(observer_.waitFor(1));
  const auto r = observer_.records()[0];
  EXPECT_EQ(r.protocol, "tcp");
  EXPECT_EQ(r.path, "");
  EXPECT_EQ(r.authority, "");
  EXPECT_EQ(r.user_agent, "");
  EXPECT_GE(r.start_unix_us + 1'000'000, before);
  EXPECT_LE(r.start_unix_us, realtimeUs() + 1'000'000);
}

}  // namespace
}  // namespace meshd::proxy
