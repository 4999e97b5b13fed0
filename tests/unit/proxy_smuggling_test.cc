// Request smuggling end to end: each case sends raw bytes through a real Proxy and checks
// both what the client got and what the upstream actually received.
//
//   client ──raw bytes──► Proxy ──► UpstreamServer (records every byte, answers 200s)
//
// Rejections: the client gets the expected 4xx/5xx with "connection: close" and the
// connection closes; the upstream received nothing, or (for a body error found after the
// head was forwarded) at most the head and a prefix of one request — never a second
// request, never the smuggled marker. Acceptances: the upstream received exactly the
// requests the proxy framed, with exactly the expected bodies.
// The parser-level table (every split of every case) is tests/unit/http1_test.cc.
#include <gtest/gtest.h>

#include <cstdio>

#include "proxy/core/proxy.h"
#include "proxy_test_util.h"

namespace meshd::proxy {
namespace {

using testing::loopback;
using testing::parseRequests;
using testing::Socket;
using testing::TestObserver;
using testing::TestOriginalDst;
using testing::TestRouter;
using testing::UpstreamServer;

enum class Upstream {
  kNothing,     // not one byte
  kAtMostHead,  // the forwarded head and a prefix of its body, no complete second request
  kRequests,    // exactly `requests` complete requests
};

struct Case {
  const char* name;
  std::string bytes;
  int status;  // expected status of the (last) response
  Upstream upstream;
  size_t requests = 0;              // kRequests
  std::vector<std::string> bodies;  // kRequests: expected bodies in order
};

const std::string kPost = "POST / HTTP/1.1\r\nHost: a\r\n";
const std::string kAdmin = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";

std::string hex(size_t n) {
  char buf[20];
  snprintf(buf, sizeof(buf), "%zx", n);
  return buf;
}

std::vector<Case> cases() {
  std::vector<Case> c;
  auto reject = [&c](const char* name, std::string bytes, int status,
                     Upstream up = Upstream::kNothing) {
    c.push_back({name, std::move(bytes), status, up, 0, {}});
  };
  // Content-Length / Transfer-Encoding conflicts.
  reject("cl_and_te",
         kPost + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + kAdmin, 400);
  reject("te_and_cl",
         kPost + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + kAdmin, 400);
  reject("two_cl_differ", kPost + "Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello" + kAdmin,
         400);
  reject("two_cl_same", kPost + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400);
  reject("cl_list", kPost + "Content-Length: 5, 5\r\n\r\nhello", 400);
  reject("cl_plus", kPost + "Content-Length: +5\r\n\r\nhello", 400);
  reject("cl_minus", kPost + "Content-Length: -1\r\n\r\n" + kAdmin, 400);
  reject("cl_inner_space", kPost + "Content-Length: 1 0\r\n\r\nhelloworld", 400);
  reject("cl_hex", kPost + "Content-Length: 0x5\r\n\r\nhello", 400);
  reject("cl_empty", kPost + "Content-Length: \r\n\r\n" + kAdmin, 400);
  reject("cl_overflow", kPost + "Content-Length: 18446744073709551616\r\n\r\nx", 400);
  reject("cl_space_before_colon", kPost + "Content-Length : 5\r\n\r\nhello", 400);
  reject("te_space_before_colon", kPost + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + kAdmin,
         400);
  reject("te_chunked_identity", kPost + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
         400);
  reject("te_identity", kPost + "Transfer-Encoding: identity\r\n\r\n" + kAdmin, 400);
  reject("te_gzip_chunked", kPost + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
  reject("te_xchunked", kPost + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + kAdmin, 400);
  reject("te_chunked_twice", kPost + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400);
  reject("te_two_lines",
         kPost + "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n", 400);
  reject("te_vertical_tab", kPost + "Transfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n", 400);
  reject("te_in_http10",
         "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + kAdmin, 400);
  reject("te_underscore", kPost + "Transfer_Encoding: chunked\r\n\r\n0\r\n\r\n" + kAdmin, 400);
  reject("cl_underscore", kPost + "Content_Length: 5\r\n\r\nhello", 400);
  // Line structure.
  reject("obs_fold_hides_te",
         kPost + "X: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + kAdmin, 400);
  reject("obs_fold_first_line", "POST / HTTP/1.1\r\n Host: a\r\nHost: a\r\n\r\n", 400);
  reject("bare_lf_lines", "GET / HTTP/1.1\nHost: a\n\n" + kAdmin, 400);
  reject("bare_lf_header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400);
  reject("bare_cr_in_value",
         "GET / HTTP/1.1\r\nHost: a\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n", 400);
  const std::string nul(1, '\0');
  reject("nul_in_value", "GET / HTTP/1.1\r\nHost: a\r\nX: a" + nul + "b\r\n\r\n", 400);
  reject("nul_in_name", "GET / HTTP/1.1\r\nHost: a\r\nX" + nul + "Y: b\r\n\r\n", 400);
  reject("ctl_in_value",
         "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
         "b\r\n\r\n",
         400);
  reject("del_in_name", "GET / HTTP/1.1\r\nHost: a\r\nX\x7f: b\r\n\r\n", 400);
  reject("two_leading_crlf", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  // Request-line.
  reject("invalid_method_char", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  reject("http09", "GET /\r\n\r\n", 400);
  reject("http12", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
  reject("http20_line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
  reject("lowercase_version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400);
  reject("double_space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  reject("fragment_in_target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  reject("userinfo_absolute", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  // Host.
  reject("absolute_host_mismatch", "GET http://internal/admin HTTP/1.1\r\nHost: a\r\n\r\n", 400);
  reject("two_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: internal\r\n\r\n", 400);
  reject("no_host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400);
  reject("host_with_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
  // Limits, expectations, CONNECT, Upgrade.
  reject("oversized_head",
         "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(70 * 1024, 'x') + "\r\n\r\n", 431);
  {
    std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < 120; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
    reject("too_many_fields", many + "\r\n", 431);
  }
  reject("expect_other", kPost + "Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417);
  reject("connect_with_body",
         "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\nhello", 400);
  reject("two_upgrades",
         "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n",
         400);
  // Chunked body errors: found after the head went upstream.
  const std::string chunked = kPost + "Transfer-Encoding: chunked\r\n\r\n";
  reject("chunk_size_overflow", chunked + "ffffffffffffffff1\r\nx\r\n0\r\n\r\n" + kAdmin, 400,
         Upstream::kAtMostHead);
  reject("chunk_size_0x", chunked + "0x5\r\nhello\r\n0\r\n\r\n" + kAdmin, 400,
         Upstream::kAtMostHead);
  reject("chunk_size_negative", chunked + "-5\r\nhello\r\n0\r\n\r\n", 400, Upstream::kAtMostHead);
  reject("chunk_size_space", chunked + "5 \r\nhello\r\n0\r\n\r\n", 400, Upstream::kAtMostHead);
  reject("chunk_longer_than_size", chunked + "3\r\nhello\r\n0\r\n\r\n" + kAdmin, 400,
         Upstream::kAtMostHead);
  reject("chunk_bare_lf", chunked + "5\nhello\r\n0\r\n\r\n", 400, Upstream::kAtMostHead);
  reject("chunk_ext_line_too_long",
         chunked + "1;a=" + std::string(5000, 'b') + "\r\nx\r\n0\r\n\r\n", 400,
         Upstream::kAtMostHead);
  reject("chunk_ext_bad", chunked + "5;\x01\r\nhello\r\n0\r\n\r\n", 400, Upstream::kAtMostHead);
  reject("chunk_bad_trailer", chunked + "0\r\nBad Name: x\r\n\r\n" + kAdmin, 400,
         Upstream::kAtMostHead);
  {
    // Tiny chunks with long extensions: bounded per body.
    std::string abuse = chunked;
    for (int i = 0; i < 40; ++i) abuse += "1;e=" + std::string(1000, 'z') + "\r\nx\r\n";
    reject("chunk_ext_total_abuse", abuse + "0\r\n\r\n", 400, Upstream::kAtMostHead);
  }
  // Accepted: framed exactly as the proxy parsed it.
  c.push_back({"request_inside_chunked_body",
               chunked + hex(kAdmin.size()) + "\r\n" + kAdmin + "\r\n0\r\n\r\n",
               200,
               Upstream::kRequests,
               1,
               {kAdmin}});
  c.push_back({"zero_chunk_inside_cl_body",
               kPost + "Content-Length: 5\r\n\r\n0\r\n\r\n",
               200,
               Upstream::kRequests,
               1,
               {"0\r\n\r\n"}});
  c.push_back({"cl_leading_zeros",
               kPost + "Content-Length: 005\r\n\r\nhello",
               200,
               Upstream::kRequests,
               1,
               {"hello"}});
  c.push_back({"te_uppercase",
               kPost + "Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               200,
               Upstream::kRequests,
               1,
               {"hello"}});
  c.push_back({"te_leading_ows",
               kPost + "Transfer-Encoding:  \tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               200,
               Upstream::kRequests,
               1,
               {"hello"}});
  c.push_back({"connection_names_cl",
               kPost + "Connection: content-length\r\nContent-Length: 5\r\n\r\nhello",
               200,
               Upstream::kRequests,
               1,
               {"hello"}});
  c.push_back({"pipelined_after_body",
               kPost + "Content-Length: 5\r\n\r\nhello" + kAdmin,
               200,
               Upstream::kRequests,
               2,
               {"hello", ""}});
  return c;
}

class SmugglingTest : public ::testing::TestWithParam<Case> {};

TEST_P(SmugglingTest, EndToEnd) {
  const Case& tc = GetParam();
  UpstreamServer up([](UpstreamServer::Conn& c) {
    while (auto req = c.readRequest()) {
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
    // Keep reading (and recording) until the proxy closes.
    while (!c.readSome(testing::kIoTimeoutMs).empty()) {
    }
  });
  TestRouter router;
  router.forwardTo(up.address());
  TestOriginalDst odst;
  TestObserver observer;
  ProxyOptions o;
  o.listen = loopback(0);
  o.workers = 1;
  auto proxy = Proxy::start(o, router, odst, &observer);
  ASSERT_TRUE(proxy.ok()) << proxy.status();

  Socket c = Socket::connectTo((*proxy)->port());
  ASSERT_TRUE(c.valid());
  c.send(tc.bytes);
  if (tc.upstream == Upstream::kRequests) c.shutdownWrite();
  bool closed = false;
  const std::string got = c.readAll(testing::kIoTimeoutMs, &closed);
  EXPECT_TRUE(closed) << "the proxy kept the connection open";
  if (tc.upstream == Upstream::kRequests) {
    // One 200 per request the proxy framed (bodies may contain "HTTP/1.1 ", heads do not
    // start a line with anything else).
    size_t responses = 0;
    for (size_t pos = got.find("HTTP/1.1 200 OK\r\n"); pos != std::string::npos;
         pos = got.find("HTTP/1.1 200 OK\r\n", pos + 1)) {
      ++responses;
    }
    EXPECT_EQ(responses, tc.requests) << got;
  } else {
    // Exactly one response: the verdict, saying the connection closes.
    const std::string want = "HTTP/1.1 " + std::to_string(tc.status) + " ";
    EXPECT_EQ(got.rfind(want, 0), 0u) << got;
    EXPECT_NE(got.find("connection: close\r\n"), std::string::npos) << got;
    EXPECT_EQ(got.find("HTTP/1.1 200"), std::string::npos) << got;
  }

  // Every upstream connection is finished once the proxy is gone.
  (*proxy)->stop();
  ASSERT_TRUE(up.waitConnectionsDone(up.accepts()));
  const std::string received = up.received();
  std::string rest;
  const auto reqs = parseRequests(received, &rest);
  switch (tc.upstream) {
    case Upstream::kNothing:
      EXPECT_EQ(received, "") << received;
      break;
    case Upstream::kAtMostHead:
      EXPECT_TRUE(reqs.empty()) << received;  // no complete request
      EXPECT_EQ(received.find("/admin"), std::string::npos) << received;
      // Nothing, or the one forwarded head (when the body error came in a later read).
      EXPECT_TRUE(received.empty() || received.rfind("POST / HTTP/1.1\r\n", 0) == 0) << received;
      break;
    case Upstream::kRequests:
      ASSERT_EQ(reqs.size(), tc.requests) << received;
      EXPECT_EQ(rest, "") << received;
      for (size_t i = 0; i < tc.bodies.size() && i < reqs.size(); ++i) {
        EXPECT_EQ(reqs[i].body, tc.bodies[i]) << i;
        EXPECT_LE(reqs[i].count("content-length") + reqs[i].count("transfer-encoding"), 1);
      }
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, SmugglingTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

TEST(SmugglingTableTest, HasAtLeastFortyCases) { EXPECT_GE(cases().size(), 40u); }

}  // namespace
}  // namespace meshd::proxy
