// The proxy core end to end through real sockets on 127.0.0.1 (topology in
// proxy_test_util.h): HTTP/1.1 connection behaviour, protocol detection, opaque relay,
// error responses and flags, timeouts, and what the upstream actually received.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>
#include <mutex>
#include <thread>

#include "counting_new.h"
#include "proxy/core/buffer.h"
#include "proxy/core/proxy.h"
#include "proxy/core/session.h"
#include "proxy_test_util.h"

namespace meshd::proxy {
namespace {

using testing::loopback;
using testing::ParsedRequest;
using testing::ParsedResponse;
using testing::parseRequests;
using testing::readResponse;
using testing::Socket;
using testing::TestObserver;
using testing::TestOriginalDst;
using testing::TestRouter;
using testing::UpstreamServer;

constexpr int kIoTimeoutMsForEof() { return testing::kIoTimeoutMs; }

class ProxyCoreTest : public ::testing::Test {
 protected:
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
  // A port nothing listens on.
  static uint16_t closedPort() {
    UpstreamServer tmp([](UpstreamServer::Conn&) {});
    return tmp.port();
  }

  TestRouter router_;
  TestOriginalDst odst_;
  TestObserver observer_;
  std::unique_ptr<Proxy> proxy_;
};

std::string get(std::string_view target, std::string_view extra = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: web\r\n" + std::string(extra) + "\r\n";
}

TEST_F(ProxyCoreTest, KeepAliveReusesOneUpstreamConnection) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  ProxyOptions o;
  o.workers = 1;
  startProxy(o);
  Socket c = client();
  std::string buf;
  for (const char* t : {"/a", "/b", "/c"}) {
    c.send(get(t));
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value()) << t;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, std::string("ok:") + t);
  }
  ASSERT_TRUE(observer_.waitFor(3));
  EXPECT_EQ(observer_.records()[0].request_bytes, get("/a").size());
  // The pre-connected connection carried all three requests.
  EXPECT_EQ(up.accepts(), 1);
  EXPECT_GE(proxy_->stats().upstream_reused, 2u);
  ASSERT_TRUE(observer_.waitFor(3));
  for (const auto& rec : observer_.records()) {
    EXPECT_EQ(rec.code, 200);
    EXPECT_EQ(rec.method, "GET");
    EXPECT_EQ(rec.protocol, "http/1.1");
    EXPECT_EQ(rec.cluster, "test/web:80");
    EXPECT_EQ(rec.flags, "");
    EXPECT_EQ(rec.orig_dst, odst_.vip);
    EXPECT_EQ(rec.upstream, up.address());
  }
  // A second client connection gets its own pre-connect; the pool keeps both.
  Socket c2 = client();
  std::string buf2;
  c2.send(get("/d"));
  auto r = readResponse(c2, buf2);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "ok:/d");
  EXPECT_EQ(up.accepts(), 2);
}

TEST_F(ProxyCoreTest, PipelinedRequestsAnsweredInOrder) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send(get("/1") + get("/2") + get("/3"));
  std::string buf;
  for (const char* t : {"/1", "/2", "/3"}) {
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value()) << t;
    EXPECT_EQ(r->body, std::string("ok:") + t);
  }
  // The upstream saw them one at a time, in order, on one connection.
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].target, "/1");
  EXPECT_EQ(reqs[1].target, "/2");
  EXPECT_EQ(reqs[2].target, "/3");
  EXPECT_EQ(up.accepts(), 1);
}

TEST_F(ProxyCoreTest, ChunkedBodiesAreReChunked) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    auto req = c.readRequest();
    if (!req) return;
    c.send(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n "
        "world\r\n0\r\nX-Trailer: t\r\n\r\n");
    c.readSome(kIoTimeoutMsForEof());
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send(
      "POST /up HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;ext=1\r\nabc\r\n00004\r\ndefg\r\n0\r\nTrailer-Field: x\r\n\r\n");
  std::string buf;
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello world");
  EXPECT_EQ(r->header("transfer-encoding"), "chunked");
  c.close();
  proxy_->stop();
  ASSERT_TRUE(up.waitConnectionsDone(1));
  // Exactly our chunk lines: the client's extensions and trailers were not forwarded.
  const std::string got = up.received();
  EXPECT_NE(got.find("\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"), std::string::npos) << got;
  EXPECT_EQ(got.find("ext=1"), std::string::npos);
  EXPECT_EQ(got.find("Trailer-Field"), std::string::npos);
  auto reqs = parseRequests(got);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].body, "abcdefg");
}

TEST_F(ProxyCoreTest, BytesArrivingOneAtATime) {
  // Both sides trickle: every parser and decoder in the path resumes across reads.
  const std::string response =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
  UpstreamServer up([&response](UpstreamServer::Conn& c) {
    while (auto req = c.readRequest()) {
      for (char ch : response) c.send(std::string_view(&ch, 1));
    }
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  const std::string request =
      "POST /t HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  std::string buf;
  for (int round = 0; round < 2; ++round) {
    for (char ch : request) c.send(std::string_view(&ch, 1));
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value()) << round;
    EXPECT_EQ(r->body, "abcd");
    EXPECT_EQ(r->header("x-a"), "b");
  }
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].body, "abcde");
  EXPECT_EQ(reqs[1].body, "abcde");
}

TEST_F(ProxyCoreTest, LargeContentLengthBodiesStreamBothWays) {
  constexpr size_t kSize = 3 * 1024 * 1024 + 17;  // far over the 64 KiB buffers
  std::string body(kSize, '\0');
  for (size_t i = 0; i < kSize; ++i) body[i] = static_cast<char>('a' + (i * 7 + i / 1000) % 26);
  UpstreamServer up([&body](UpstreamServer::Conn& c) {
    auto req = c.readRequest();
    if (!req) return;
    const bool same = req->body == body;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nX-Same: " + (same ? "yes" : "no") + "\r\n\r\n");
    c.send(body);
    c.readSome(kIoTimeoutMsForEof());
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  // Sending 3 MiB blocks until the proxy has moved it on: the upstream reads only while it
  // parses, so the proxy's buffers fill and it must stop reading the client
  // (backpressure) without losing or reordering a byte.
  std::thread sender([&] {
    c.send("POST /big HTTP/1.1\r\nHost: web\r\nContent-Length: " + std::to_string(kSize) +
           "\r\n\r\n");
    c.send(body);
  });
  const uint64_t growths_before = Buffer::growths();
  std::string buf;
  auto r = readResponse(c, buf);
  sender.join();
  ASSERT_TRUE(r.has_value());
  // No buffer grew past its 64 KiB: the proxy stopped reading instead of queueing.
  EXPECT_EQ(Buffer::growths(), growths_before);
  EXPECT_EQ(r->header("x-same"), "yes");
  EXPECT_EQ(r->body.size(), kSize);
  EXPECT_TRUE(r->body == body);
}

TEST_F(ProxyCoreTest, ExpectContinueIsAnsweredByTheProxy) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send("PUT /x HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  std::string buf;
  // The body is sent only after the 100 (a client that waited would hang otherwise).
  ASSERT_TRUE(c.readUntil(buf, "HTTP/1.1 100 Continue\r\n\r\n"));
  buf.erase(0, buf.find("\r\n\r\n") + 4);
  c.send("hello");
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].body, "hello");
  EXPECT_EQ(reqs[0].count("expect"), 0);  // Envoy's default: not forwarded
}

TEST_F(ProxyCoreTest, WebSocketUpgradeBecomesATunnel) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    auto req = c.readRequest();
    if (!req || req->header("upgrade") != "websocket") return;
    c.send(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: abc\r\n\r\n");
    if (!c.readUntil("\x81\x04ping")) return;
    c.send("\x81\x04pong");
    c.readSome(kIoTimeoutMsForEof());
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send(
      "GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  std::string buf;
  ASSERT_TRUE(c.readUntil(buf, "\r\n\r\n"));
  EXPECT_EQ(buf.rfind("HTTP/1.1 101 ", 0), 0u) << buf;
  EXPECT_NE(buf.find("Upgrade: websocket"), std::string::npos);
  buf.erase(0, buf.find("\r\n\r\n") + 4);
  c.send("\x81\x04ping");
  ASSERT_TRUE(c.readUntil(buf, "\x81\x04pong"));
  c.close();
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].code, 101);
}

TEST_F(ProxyCoreTest, RefusedUpgradeKeepsLaterBytesAsTheNextRequest) {
  // The upstream declines the upgrade (200): what the client sent after its head was held
  // back, and is parsed by the proxy as the next request, never passed on raw.
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send("GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" +
         get("/after"));
  std::string buf;
  auto r1 = readResponse(c, buf);
  auto r2 = readResponse(c, buf);
  ASSERT_TRUE(r1.has_value() && r2.has_value());
  EXPECT_EQ(r1->body, "ok:/ws");
  EXPECT_EQ(r2->body, "ok:/after");
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].target, "/after");
}

TEST_F(ProxyCoreTest, ConnectTunnel) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    auto req = c.readRequest();
    if (!req || req->method != "CONNECT") return;
    c.send("HTTP/1.1 200 OK\r\n\r\n");
    if (!c.readUntil("hello")) return;
    c.send("world");
    c.readSome(kIoTimeoutMsForEof());
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send("CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n");
  std::string buf;
  ASSERT_TRUE(c.readUntil(buf, "\r\n\r\n"));
  EXPECT_EQ(buf.rfind("HTTP/1.1 200 ", 0), 0u) << buf;
  buf.clear();
  c.send("hello");
  ASSERT_TRUE(c.readUntil(buf, "world"));
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].target, "db.internal:5432");
}

TEST_F(ProxyCoreTest, HeadAnd204And304HaveNoBody) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    while (auto req = c.readRequest()) {
      if (req->method == "HEAD") {
        c.send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
      } else if (req->target == "/204") {
        c.send("HTTP/1.1 204 No Content\r\n\r\n");
      } else if (req->target == "/304") {
        c.send("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
      } else {
        c.send("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast");
      }
    }
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  std::string buf;
  c.send("HEAD /h HTTP/1.1\r\nHost: web\r\n\r\n");
  auto h = readResponse(c, buf, /*head_request=*/true);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->header("content-length"), "10");
  c.send(get("/204") + get("/304") + get("/last"));
  auto r204 = readResponse(c, buf);
  auto r304 = readResponse(c, buf);
  auto last = readResponse(c, buf);
  ASSERT_TRUE(r204 && r304 && last);
  EXPECT_EQ(r204->status, 204);
  EXPECT_EQ(r304->status, 304);
  EXPECT_EQ(r304->header("etag"), "\"x\"");
  EXPECT_EQ(last->body, "last");  // framing stayed in step
  EXPECT_TRUE(buf.empty());
}

TEST_F(ProxyCoreTest, Http10KeepAliveRules) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    while (auto req = c.readRequest()) {
      if (req->target == "/chunked") {
        c.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
      } else {
        c.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      }
    }
  });
  router_.forwardTo(up.address());
  startProxy();
  {
    // No keep-alive option: one response, then the proxy closes.
    Socket c = client();
    c.send("GET /a HTTP/1.0\r\n\r\n");
    bool closed = false;
    const std::string all = c.readAll(kIoTimeoutMsForEof(), &closed);
    EXPECT_TRUE(closed);
    EXPECT_EQ(all.rfind("HTTP/1.1 200 ", 0), 0u) << all;
    EXPECT_NE(all.find("\r\n\r\nok"), std::string::npos);
  }
  {
    // keep-alive: the answer says so and the connection carries another request.
    Socket c = client();
    std::string buf;
    c.send("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->header("connection"), "keep-alive");
    // A chunked upstream response reaches an HTTP/1.0 client close-delimited.
    c.send("GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    bool closed = false;
    const std::string all = c.readAll(kIoTimeoutMsForEof(), &closed);
    EXPECT_TRUE(closed);
    EXPECT_EQ(all.find("chunked"), std::string::npos) << all;
    EXPECT_EQ(all.substr(all.size() - 7), "\r\n\r\nabc") << all;
  }
  // Upstream requests are HTTP/1.1, with a Host (the VIP when the client sent none).
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].version, "HTTP/1.1");
  EXPECT_EQ(reqs[0].authority, "10.96.0.10:80");
}

TEST_F(ProxyCoreTest, CloseDelimitedResponse) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    if (!c.readRequest()) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end");
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send(get("/"));
  std::string buf;
  auto r = readResponse(c, buf);  // reads until EOF
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "until the end");
  EXPECT_EQ(r->header("connection"), "close");
}

TEST_F(ProxyCoreTest, ServerFirstProtocolIsRelayedWithoutClientBytes) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    c.send("220 smtp.example ESMTP\r\n");
    if (!c.readUntil("QUIT\r\n")) return;
    c.send("221 bye\r\n");
  });
  router_.setConnectionUpstream(up.address());
  startProxy();
  Socket c = client();
  std::string buf;
  ASSERT_TRUE(c.readUntil(buf, "220 smtp.example ESMTP\r\n"));  // before sending anything
  c.send("QUIT\r\n");
  bool closed = false;
  buf += c.readAll(kIoTimeoutMsForEof(), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(buf, "220 smtp.example ESMTP\r\n221 bye\r\n");
  // The upstream's FIN was passed on as a half-close; the relay ends when the client's
  // side closes too.
  c.close();
  ASSERT_TRUE(observer_.waitFor(1));
  const auto rec = observer_.records()[0];
  EXPECT_EQ(rec.protocol, "tcp");
  EXPECT_EQ(rec.cluster, "test/conn:80");
  EXPECT_EQ(rec.request_bytes, 6u);
  EXPECT_EQ(rec.response_bytes, buf.size());
  EXPECT_EQ(up.received(), "QUIT\r\n");
}

TEST_F(ProxyCoreTest, NonHttpClientBytesAreRelayedOpaquely) {
  const std::string tls_like("\x16\x03\x01\x00\x05hello", 10);
  // "PRI" that is not the HTTP/2 preface (the preface itself is HTTP/2: proxy_h2_test.cc).
  const std::string not_h2_preface = "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";
  for (const std::string& first : {tls_like, not_h2_preface, std::string("*1\r\n$4\r\nPING\r\n")}) {
    UpstreamServer up([&first](UpstreamServer::Conn& c) {
      if (!c.readUntil(first)) return;
      c.send("reply");
      c.readSome(kIoTimeoutMsForEof());
    });
    router_.forwardTo(up.address());
    startProxy();
    Socket c = client();
    c.send(first);
    std::string buf;
    ASSERT_TRUE(c.readUntil(buf, "reply"));
    c.close();
    proxy_->stop();
    EXPECT_EQ(up.received(), first);  // byte for byte
    EXPECT_GE(proxy_->stats().opaque, 1u);
    EXPECT_EQ(router_.seen().size(), 0u);  // never routed as HTTP
    proxy_.reset();
  }
}

// An upstream that resets the connection while the client keeps streaming: the relay ends
// (the client's connection closes) and the worker stays free for other connections. Before
// the fix a failed send to the upstream was retried forever (EPIPE in a loop).
TEST_F(ProxyCoreTest, UpstreamResetDuringOpaqueStreamEndsTheRelay) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    if (c.index() == 0) {
      c.readSome();
      linger lg{1, 0};  // close with RST: the proxy's next sends fail with EPIPE/ECONNRESET
      ::setsockopt(c.socket().fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
      c.close();
      return;
    }
    if (!c.readUntil("ping")) return;
    c.send("pong");
    c.readSome(kIoTimeoutMsForEof());
  });
  router_.forwardTo(up.address());
  ProxyOptions o;
  o.workers = 1;  // one event loop: a stuck worker would stall the second client too
  startProxy(o);
  Socket c = client();
  const std::string chunk(256 * 1024, '\x01');  // binary: opaque at once
  std::thread writer([&] {
    for (int i = 0; i < 16; ++i) {
      if (::send(c.fd(), chunk.data(), chunk.size(), MSG_NOSIGNAL) <= 0) break;
    }
  });
  bool closed = false;
  c.readAll(kIoTimeoutMsForEof(), &closed);
  writer.join();
  EXPECT_TRUE(closed) << "the client connection stayed open after the upstream reset";
  Socket c2 = client();
  c2.send(std::string("\x02ping", 5));
  std::string buf;
  EXPECT_TRUE(c2.readUntil(buf, "pong")) << "the worker did not serve a second connection";
}

TEST_F(ProxyCoreTest, UpstreamRefusedIs503UF) {
  const SocketAddress dead = loopback(closedPort());
  router_.forwardTo(dead);
  startProxy();
  Socket c = client();
  c.send(get("/") + get("/again"));
  std::string buf;
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UF");
  auto r2 = readResponse(c, buf);  // the connection stays usable
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 503);
  ASSERT_TRUE(observer_.waitFor(2));
  EXPECT_EQ(observer_.records()[0].flags, "UF");
  EXPECT_EQ(observer_.records()[0].code, 503);
}

TEST_F(ProxyCoreTest, UpstreamConnectTimeoutIs503UF) {
  // A listener that never accepts, its queue filled: further SYNs are dropped, so the
  // proxy's connects stay pending until connect_timeout_ms.
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
  router_.forwardTo(blackhole);
  ProxyOptions o;
  o.connect_timeout_ms = 200;
  startProxy(o);
  Socket c = client();
  c.send(get("/"));
  std::string buf;
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UF");
}

TEST_F(ProxyCoreTest, DirectResponseToARequestWithABodyClosesTheConnection) {
  router_.setConnectionUpstream(loopback(closedPort()));
  router_.setRoute([](const RequestInfo&, RouteDecision& d) {
    d.kind = RouteDecision::Kind::kDirectResponse;
    d.status = 404;
    d.response_flags = "NR";
  });
  startProxy();
  Socket c = client();
  // The body is never read, so what follows it cannot be framed: the proxy closes.
  c.send("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello" + get("/next"));
  bool closed = false;
  const std::string all = c.readAll(kIoTimeoutMsForEof(), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(all.rfind("HTTP/1.1 404 ", 0), 0u) << all;
  EXPECT_NE(all.find("connection: close"), std::string::npos);
  EXPECT_EQ(all.find("HTTP/1.1", 1), std::string::npos);  // one response only
  EXPECT_EQ(router_.seen().size(), 1u);
}

TEST_F(ProxyCoreTest, UpstreamClosingBeforeTheHeadIs503UC) {
  UpstreamServer up([](UpstreamServer::Conn& c) { c.readRequest(); });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send(get("/"));
  std::string buf;
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UC");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UC");
}

TEST_F(ProxyCoreTest, MalformedUpstreamResponseIs502UPE) {
  for (const char* bad : {"garbage\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"}) {
    UpstreamServer up([bad](UpstreamServer::Conn& c) {
      if (!c.readRequest()) return;
      c.send(bad);
      c.readSome(kIoTimeoutMsForEof());
    });
    router_.forwardTo(up.address());
    startProxy();
    Socket c = client();
    c.send(get("/"));
    std::string buf;
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value()) << bad;
    EXPECT_EQ(r->status, 502) << bad;
    EXPECT_EQ(r->header("x-meshd-response-flags"), "UPE");
    proxy_->stop();
    proxy_.reset();
  }
}

TEST_F(ProxyCoreTest, UpstreamBreakingAfterTheHeadClosesTheClient) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    if (!c.readRequest()) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send(get("/"));
  bool closed = false;
  const std::string all = c.readAll(kIoTimeoutMsForEof(), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(all.rfind("HTTP/1.1 200 ", 0), 0u);
  EXPECT_EQ(all.find("HTTP/1.1 5"), std::string::npos);  // no second response
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UC");
}

TEST_F(ProxyCoreTest, RequestTimeoutIs504UT) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    if (!c.readRequest()) return;
    c.readSome(kIoTimeoutMsForEof());  // never answers
  });
  router_.setConnectionUpstream(up.address());
  router_.setRoute([&up](const RequestInfo&, RouteDecision& d) {
    d.upstream = up.address();
    d.request_timeout_ms = 200;
  });
  startProxy();
  Socket c = client();
  c.send(get("/slow"));
  std::string buf;
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UT");
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UT");
}

TEST_F(ProxyCoreTest, SilentUpstreamWithoutRouteTimeoutHitsTheIdleTimeout) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    if (!c.readRequest()) return;
    c.readSome(kIoTimeoutMsForEof());  // never answers
  });
  router_.setConnectionUpstream(up.address());
  router_.setRoute([&up](const RequestInfo&, RouteDecision& d) {
    d.upstream = up.address();
    d.request_timeout_ms = 0;  // disabled
  });
  ProxyOptions o;
  o.idle_timeout_ms = 200;
  startProxy(o);
  Socket c = client();
  c.send(get("/"));
  std::string buf;
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "SI");
}

TEST_F(ProxyCoreTest, SlowlorisHeadTimeoutCloses) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  ProxyOptions o;
  o.request_headers_timeout_ms = 200;
  startProxy(o);
  Socket c = client();
  c.send("GET / HTTP/1.1\r\nHost: web\r\nX-Slow: 1\r\n");  // never finished
  bool closed = false;
  const std::string all = c.readAll(kIoTimeoutMsForEof(), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(all.rfind("HTTP/1.1 408 ", 0), 0u) << all;
  EXPECT_TRUE(up.requests().empty());
}

TEST_F(ProxyCoreTest, RequestIdAddedWhenAbsentAndKeptWhenPresent) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  std::string buf;
  c.send(get("/new", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"));
  ASSERT_TRUE(readResponse(c, buf).has_value());
  c.send(get("/kept", "X-Request-Id: my-id-1\r\n"));
  ASSERT_TRUE(readResponse(c, buf).has_value());
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 2u);
  const std::string id = reqs[0].header("x-request-id");
  // UUIDv4 text: 8-4-4-4-12 lowercase hex, version 4, variant 10xx. (No std::regex: gcc 12
  // warns inside <regex> under the sanitizer build's -Werror.)
  auto isUuid4 = [](const std::string& u) {
    if (u.size() != 36) return false;
    for (size_t i = 0; i < u.size(); ++i) {
      const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
      const char c = u[i];
      if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return u[14] == '4' && (u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
  };
  EXPECT_TRUE(isUuid4(id)) << id;
  EXPECT_FALSE(isUuid4("0af76519-16cd-33dd-8448-eb211c80319c"));  // version 3: the check bites
  EXPECT_EQ(reqs[0].header("traceparent"),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  EXPECT_EQ(reqs[1].header("x-request-id"), "my-id-1");
  EXPECT_EQ(reqs[1].count("x-request-id"), 1);
  ASSERT_TRUE(observer_.waitFor(2));
  EXPECT_EQ(observer_.records()[0].request_id, id);
  EXPECT_EQ(observer_.records()[1].request_id, "my-id-1");
}

TEST_F(ProxyCoreTest, EditsAndRewritesReachTheUpstream) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    while (auto req = c.readRequest()) {
      c.send("HTTP/1.1 200 OK\r\nServer: up\r\nX-Internal: secret\r\nContent-Length: 0\r\n\r\n");
    }
  });
  static const HeaderEdit kReq[] = {
      {HeaderEdit::Op::kSet, "x-a", "new"},
      {HeaderEdit::Op::kAdd, "x-b", "2"},
      {HeaderEdit::Op::kRemove, "x-c", ""},
      {HeaderEdit::Op::kAdd, "Transfer-Encoding", "chunked"},  // ignored: framing
      {HeaderEdit::Op::kSet, "Content-Length", "99"},          // ignored: framing
  };
  static const HeaderEdit kResp[] = {
      {HeaderEdit::Op::kRemove, "x-internal", ""},
      {HeaderEdit::Op::kSet, "x-route", "r1"},
  };
  router_.setConnectionUpstream(up.address());
  router_.setRoute([&up](const RequestInfo&, RouteDecision& d) {
    d.upstream = up.address();
    d.path_rewrite = "/v2/items?page=1";
    d.authority_rewrite = "items.internal";
    d.request_edits = kReq;
    d.response_edits = kResp;
  });
  startProxy();
  Socket c = client();
  std::string buf;
  c.send(
      "POST /v1/items HTTP/1.1\r\nHost: web\r\nX-A: old\r\nX-C: gone\r\nX-D: kept\r\n"
      "Content-Length: 3\r\n\r\nabc");
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->header("x-route"), "r1");
  EXPECT_EQ(r->header("x-internal"), "");
  EXPECT_EQ(r->header("server"), "up");
  auto reqs = up.requests();
  ASSERT_EQ(reqs.size(), 1u);
  const ParsedRequest& q = reqs[0];
  EXPECT_EQ(q.target, "/v2/items?page=1");
  EXPECT_EQ(q.authority, "items.internal");
  EXPECT_EQ(q.header("x-a"), "new");
  EXPECT_EQ(q.count("x-a"), 1);
  EXPECT_EQ(q.header("x-b"), "2");
  EXPECT_EQ(q.count("x-c"), 0);
  EXPECT_EQ(q.header("x-d"), "kept");
  EXPECT_EQ(q.count("transfer-encoding"), 0);
  EXPECT_EQ(q.header("content-length"), "3");
  EXPECT_EQ(q.body, "abc");
  // The router saw the request as the client sent it.
  ASSERT_EQ(router_.seen().size(), 1u);
  EXPECT_EQ(router_.seen()[0].target, "/v1/items");
  EXPECT_EQ(router_.seen()[0].authority, "web");
  EXPECT_EQ(router_.seen()[0].orig_dst, odst_.vip);
}

TEST_F(ProxyCoreTest, AbsoluteFormIsRoutedAndForwardedInOriginForm) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  std::string buf;
  c.send("GET http://web/p?q=1 HTTP/1.1\r\nHost: web\r\n\r\n");
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "ok:/p?q=1");
  ASSERT_EQ(router_.seen().size(), 1u);
  EXPECT_EQ(router_.seen()[0].target, "/p?q=1");
  EXPECT_EQ(router_.seen()[0].authority, "web");
}

TEST_F(ProxyCoreTest, DirectResponsesNeverReachTheUpstream) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.setConnectionUpstream(up.address());
  router_.setRoute([](const RequestInfo& req, RouteDecision& d) {
    d.kind = RouteDecision::Kind::kDirectResponse;
    if (req.target == "/old") {
      d.status = 301;
      d.location = "http://web/new";
    } else {
      d.status = 404;
      d.body = "no route";
      d.response_flags = "NR";
    }
  });
  startProxy();
  Socket c = client();
  std::string buf;
  c.send(get("/old") + get("/missing"));
  auto r1 = readResponse(c, buf);
  auto r2 = readResponse(c, buf);
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(r1->status, 301);
  EXPECT_EQ(r1->header("location"), "http://web/new");
  EXPECT_EQ(r2->status, 404);
  EXPECT_EQ(r2->body, "no route");
  EXPECT_EQ(r2->header("x-meshd-response-flags"), "NR");
  ASSERT_TRUE(observer_.waitFor(2));
  EXPECT_EQ(observer_.records()[1].flags, "NR");
  EXPECT_TRUE(up.requests().empty());
}

TEST_F(ProxyCoreTest, RateLimitedDirectResponseCarriesRetryAfter) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.setConnectionUpstream(up.address());
  router_.setRoute([](const RequestInfo&, RouteDecision& d) {
    d.kind = RouteDecision::Kind::kDirectResponse;
    d.status = 429;
    d.body = "local_rate_limited";
    d.response_flags = "RL";
    d.retry_after = "12";
  });
  startProxy();
  Socket c = client();
  std::string buf;
  c.send(get("/"));
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 429);
  EXPECT_EQ(r->header("retry-after"), "12");
  EXPECT_EQ(r->header("x-meshd-response-flags"), "RL");
  EXPECT_EQ(r->body, "local_rate_limited");
  EXPECT_TRUE(up.requests().empty());
}

TEST_F(ProxyCoreTest, UnknownOriginalDestinationIsClosedAndCounted) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  odst_.unknown = true;
  startProxy();
  Socket c = client();
  c.send(get("/"));
  bool closed = false;
  EXPECT_EQ(c.readAll(kIoTimeoutMsForEof(), &closed), "");
  EXPECT_TRUE(closed);
  EXPECT_EQ(proxy_->stats().orig_dst_unknown, 1u);
  EXPECT_EQ(up.accepts(), 0);
}

TEST_F(ProxyCoreTest, ClientLeavingMidBodyIsRecordedDC) {
  UpstreamServer up([](UpstreamServer::Conn& c) { c.readSome(kIoTimeoutMsForEof()); });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  c.send("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n\r\nonly-ten..");
  c.close();
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "DC");
  EXPECT_EQ(observer_.records()[0].code, 0);
}

TEST_F(ProxyCoreTest, PooledConnectionClosedByTheServerIsNotReused) {
  // The upstream answers one request per connection and closes without saying so.
  UpstreamServer up([](UpstreamServer::Conn& c) {
    auto req = c.readRequest();
    if (!req) return;
    const std::string body = "ok:" + req->target;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  router_.forwardTo(up.address());
  ProxyOptions o;
  o.workers = 1;
  startProxy(o);
  Socket c = client();
  std::string buf;
  c.send(get("/1"));
  auto r1 = readResponse(c, buf);
  ASSERT_TRUE(r1.has_value());
  ASSERT_TRUE(up.waitConnectionsDone(1));  // its FIN is on the pooled socket now
  c.send(get("/2"));
  auto r2 = readResponse(c, buf);
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 200);  // not 503 UC: a fresh connection carried it
  EXPECT_EQ(r2->body, "ok:/2");
  EXPECT_EQ(up.accepts(), 2);
}

TEST_F(ProxyCoreTest, UpstreamConnectionCloseDoesNotCloseTheClient) {
  UpstreamServer up([](UpstreamServer::Conn& c) {
    auto req = c.readRequest();
    if (!req) return;
    c.send("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
  });
  router_.forwardTo(up.address());
  startProxy();
  Socket c = client();
  std::string buf;
  for (int i = 0; i < 2; ++i) {
    c.send(get("/"));
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value()) << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("connection"), "");
  }
  EXPECT_EQ(up.accepts(), 2);  // the closed upstream connection was not reused
}

TEST_F(ProxyCoreTest, IdlePooledConnectionsExpire) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  ProxyOptions o;
  o.workers = 1;
  o.upstream_idle_ms = 100;
  startProxy(o);
  Socket c = client();
  std::string buf;
  c.send(get("/1"));
  ASSERT_TRUE(readResponse(c, buf).has_value());
  // The proxy closes the idle pooled connection: the upstream's script sees EOF and ends.
  EXPECT_TRUE(up.waitConnectionsDone(1));
  c.send(get("/2"));
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "ok:/2");
  EXPECT_EQ(up.accepts(), 2);
}

// An UpstreamConnector that opens a plain loopback TCP connection (blocking connect, then
// non-blocking) and counts the calls per via; via kRefusedVia fails with ECONNREFUSED.
class CountingConnector : public UpstreamConnector {
 public:
  static constexpr uint64_t kRefusedVia = 99;
  int open(const SocketAddress& upstream, uint64_t via, int* err) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_[via];
    }
    if (via == kRefusedVia) {
      *err = ECONNREFUSED;
      return -1;
    }
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage ss;
    const socklen_t len = upstream.toSockaddr(&ss);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      *err = errno;
      if (fd >= 0) ::close(fd);
      return -1;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
  }
  int calls(uint64_t via) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = calls_.find(via);
    return it == calls_.end() ? 0 : it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<uint64_t, int> calls_;
};

TEST_F(ProxyCoreTest, ViaRoutesUseTheConnectorAndPoolPerVia) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  const SocketAddress target = up.address();
  router_.setRoute([target](const RequestInfo& req, RouteDecision& d) {
    d.upstream = target;
    d.cluster = "test/web:80";
    if (req.target.starts_with("/a")) d.via = 1;
    if (req.target.starts_with("/b")) d.via = 2;
    if (req.target.starts_with("/x")) d.via = CountingConnector::kRefusedVia;
  });
  CountingConnector connector;
  ProxyOptions o;
  o.workers = 1;
  o.connector = &connector;
  startProxy(o);
  Socket c = client();
  std::string buf;
  for (const char* t : {"/a1", "/b1", "/a2", "/b2", "/c1"}) {
    c.send(get(t));
    auto r = readResponse(c, buf);
    ASSERT_TRUE(r.has_value()) << t;
    EXPECT_EQ(r->status, 200) << t;
    EXPECT_EQ(r->body, std::string("ok:") + t);
  }
  // One connection per via, reused by the second request of each; /c1 (via 0) went over
  // the session's own pre-connected TCP connection.
  EXPECT_EQ(connector.calls(1), 1);
  EXPECT_EQ(connector.calls(2), 1);
  EXPECT_EQ(connector.calls(0), 0);
  EXPECT_EQ(up.accepts(), 3);
  // A via the connector cannot open is a connect failure: 503 UF, nothing reaches the upstream.
  c.send(get("/x"));
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("x-meshd-response-flags"), "UF");
  EXPECT_EQ(connector.calls(CountingConnector::kRefusedVia), 1);
  EXPECT_EQ(up.accepts(), 3);
}

TEST_F(ProxyCoreTest, ViaWithoutAConnectorIsRefused) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  const SocketAddress target = up.address();
  router_.setRoute([target](const RequestInfo&, RouteDecision& d) {
    d.upstream = target;
    d.cluster = "test/web:80";
    d.via = 5;
  });
  ProxyOptions o;
  o.workers = 1;
  startProxy(o);
  Socket c = client();
  std::string buf;
  c.send(get("/a"));
  auto r = readResponse(c, buf);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  ASSERT_TRUE(observer_.waitFor(1));
  EXPECT_EQ(observer_.records()[0].flags, "UF");
}

TEST_F(ProxyCoreTest, ManyClientsOverSeveralWorkers) {
  UpstreamServer up(UpstreamServer::echoTarget);
  router_.forwardTo(up.address());
  ProxyOptions o;
  o.workers = 3;
  startProxy(o);
  std::vector<Socket> clients;
  for (int i = 0; i < 12; ++i) clients.push_back(client());
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < clients.size(); ++i) {
      clients[i].send(get("/c" + std::to_string(i)));
    }
    for (size_t i = 0; i < clients.size(); ++i) {
      std::string buf;
      auto r = readResponse(clients[i], buf);
      ASSERT_TRUE(r.has_value());
      EXPECT_EQ(r->body, "ok:/c" + std::to_string(i));
    }
  }
  EXPECT_EQ(proxy_->stats().accepted, 12u);
  EXPECT_EQ(proxy_->stats().http, 12u);
}

// Allocation-free helpers for the counting test: fixed buffers and syscalls only.
class CountingRouter : public Router {
 public:
  CountingRouter(SocketAddress up, const state::RetrySettings* retries,
                 resilience::CircuitBreaker* breaker)
      : up_(up), retries_(retries), breaker_(breaker) {}
  void route(const RequestInfo&, RouteDecision& d) override {
    d.upstream = up_;
    d.cluster = "test/web:80";
    d.retries = retries_;
    d.breaker = breaker_;
  }
  bool routeConnection(const SocketAddress&, SocketAddress& upstream,
                       std::string_view& cluster) override {
    upstream = up_;
    cluster = "test/web:80";
    return true;
  }

 private:
  SocketAddress up_;
  const state::RetrySettings* retries_;
  resilience::CircuitBreaker* breaker_;
};

class CountingObserver : public Observer {
 public:
  void onRequest(const RequestRecord& r) override {
    if (r.response_code == 200) ok.fetch_add(1);
  }
  std::atomic<int> ok{0};
};

// Reads from `fd` until `heads` complete "\r\n\r\n" terminators and then `tail` more
// bytes were seen. False on EOF/timeout.
bool readHeads(int fd, int* state, int heads, size_t tail) {
  char buf[4096];
  int seen = 0;
  size_t after = 0;
  while (seen < heads || after < tail) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, testing::kIoTimeoutMs) <= 0) return false;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    for (ssize_t i = 0; i < n; ++i) {
      if (seen == heads) {
        ++after;
        continue;
      }
      const char ch = buf[i];
      static constexpr char kEnd[] = "\r\n\r\n";
      *state = ch == kEnd[*state] ? *state + 1 : (ch == '\r' ? 1 : 0);
      if (*state == 4) {
        *state = 0;
        ++seen;
      }
    }
  }
  return true;
}

// One raw upstream connection answering each head with a fixed response; one client
// connection; one worker. Nothing in the test allocates inside the counted window.
void expectNoAllocationPerRequest(const state::RetrySettings* retries,
                                  resilience::CircuitBreaker* breaker) {
  ScopedFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  socklen_t len = loopback(0).toSockaddr(&ss);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  len = sizeof(ss);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  const SocketAddress up = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  std::thread server([&listener] {
    const int fd = ::accept(listener.get(), nullptr, nullptr);
    if (fd < 0) return;
    static constexpr std::string_view kResp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    int state = 0;
    while (readHeads(fd, &state, 1, 0)) {
      if (::send(fd, kResp.data(), kResp.size(), MSG_NOSIGNAL) <= 0) break;
    }
    ::close(fd);
  });
  CountingRouter router(up, retries, breaker);
  TestOriginalDst odst;
  CountingObserver observer;
  ProxyOptions o;
  o.listen = loopback(0);
  o.workers = 1;
  auto proxy = Proxy::start(o, router, odst, &observer);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  Socket c = Socket::connectTo((*proxy)->port());
  static constexpr std::string_view kReq =
      "GET /items?page=2 HTTP/1.1\r\nHost: web\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n";
  int state = 0;
  auto once = [&] {
    if (::send(c.fd(), kReq.data(), kReq.size(), MSG_NOSIGNAL) <= 0) return false;
    return readHeads(c.fd(), &state, 1, 2);
  };
  int done = 0;
  for (int i = 0; i < 200; ++i) done += once();  // warm-up: buffers, pool, vectors
  meshd::testing::startCountingAllocations();
  for (int i = 0; i < 2000; ++i) done += once();
  const size_t allocations = meshd::testing::stopCountingAllocations();
  EXPECT_EQ(done, 2200);
  EXPECT_EQ(allocations, 0u);
  c.close();
  (*proxy)->stop();
  server.join();
  EXPECT_EQ(observer.ok.load(), 2200);
}

TEST(ProxyAllocationTest, NoAllocationPerRequestInSteadyState) {
  expectNoAllocationPerRequest(nullptr, nullptr);
}

TEST(ProxyAllocationTest, NoAllocationPerRequestWithRetriesAndBreaker) {
  // The resilience path of a successful request: breaker guards, the request kept for a
  // replay, onTry and the retry decision — still nothing allocated per request.
  state::RetrySettings retries;
  retries.per_try_timeout_ms = 1000;  // a timer per try, too
  resilience::CircuitBreaker breaker;
  expectNoAllocationPerRequest(&retries, &breaker);
  EXPECT_EQ(breaker.counts().active, 0u);
  EXPECT_EQ(breaker.counts().pending, 0u);
}

TEST(ProxyStartTest, BadOptionsAreClearErrors) {
  TestRouter router;
  TestOriginalDst odst;
  ProxyOptions o;
  auto unset = Proxy::start(o, router, odst, nullptr);
  ASSERT_FALSE(unset.ok());
  EXPECT_NE(unset.status().message().find("listen address is unset"), std::string::npos);
  o.listen = loopback(0);
  o.max_buffer_bytes = 10;
  auto small = Proxy::start(o, router, odst, nullptr);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("max_buffer_bytes 10"), std::string::npos);
  o.max_buffer_bytes = 64 * 1024;
  o.listen = *SocketAddress::parse("192.0.2.1:15001");  // TEST-NET-1: not on this host
  auto foreign = Proxy::start(o, router, odst, nullptr);
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.status().message().find("bind 192.0.2.1:15001"), std::string::npos)
      << foreign.status();
}

TEST(SocketAddressTest, ParsesAndPrints) {
  auto v4 = SocketAddress::parse("10.0.0.1:8080");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->port, 8080);
  EXPECT_EQ(v4->toString(), "10.0.0.1:8080");
  auto v6 = SocketAddress::parse("[fd00::1]:443");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->toString(), "[fd00::1]:443");
  sockaddr_storage ss;
  const socklen_t len = v6->toSockaddr(&ss);
  EXPECT_EQ(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len), *v6);
  for (const char* bad : {"10.0.0.1", "10.0.0.1:", "10.0.0.1:65536", "10.0.0.1:8a", "fd00::1:80",
                          "[fd00::1]80", "host:80"}) {
    auto r = SocketAddress::parse(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_NE(SocketAddress::parse("10.0.0.1:99999").status().message().find("10.0.0.1:99999"),
            std::string::npos);
}

TEST(ProtocolDetectionTest, H2ServerSettingsAreNotAServerFirstProtocol) {
  EXPECT_TRUE(looksLikeH2ServerPreface(std::string("\0\0\x0c\x04\0\0\0\0\0", 9)));
  EXPECT_TRUE(looksLikeH2ServerPreface(std::string("\0\0\0\x04\0\0\0\0\0", 9)));
  EXPECT_TRUE(looksLikeH2ServerPreface(std::string("\0\0", 2)));  // could still be
  EXPECT_FALSE(looksLikeH2ServerPreface("220 smtp.example ESMTP\r\n"));
  EXPECT_FALSE(looksLikeH2ServerPreface(std::string("\0\0\x0c\x04\x01\0\0\0\0", 9)));  // ACK
  EXPECT_FALSE(looksLikeH2ServerPreface(std::string("\0\0\x0c\x01\0\0\0\0\0", 9)));    // HEADERS
  EXPECT_FALSE(looksLikeH2ServerPreface(std::string("\0\0\x07\x04\0\0\0\0\0", 9)));    // 7 % 6
  EXPECT_FALSE(looksLikeH2ServerPreface(std::string("\0\0\x0c\x04\0\0\0\0\x01", 9)));  // stream 1
}

TEST(ProtocolDetectionTest, Classifies) {
  EXPECT_EQ(detectProtocol("GET "), Detected::kHttp1);
  EXPECT_EQ(detectProtocol("GE"), Detected::kNeedMore);
  EXPECT_EQ(detectProtocol("\r\nPOST /"), Detected::kHttp1);
  // HTTP/2 prior knowledge: the whole preface; a part of it waits; anything else after
  // "PRI " is opaque.
  EXPECT_EQ(detectProtocol("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Detected::kHttp2);
  EXPECT_EQ(detectProtocol(std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04", 28)),
            Detected::kHttp2);
  EXPECT_EQ(detectProtocol("PRI * HTTP/2.0\r\n"), Detected::kNeedMore);
  EXPECT_EQ(detectProtocol("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), Detected::kOpaque);
  EXPECT_EQ(detectProtocol("PRI * HTTP/1.1\r\n"), Detected::kOpaque);
  EXPECT_EQ(detectProtocol("PR"), Detected::kNeedMore);
  EXPECT_EQ(detectProtocol("\x16\x03\x01"), Detected::kOpaque);
  // A line that is not a registered method's prefix does not wait for its end: a
  // client-first protocol sending a few bytes (connrate's one-byte ping) must not stall.
  EXPECT_EQ(detectProtocol("G@T / HTTP/1.1"), Detected::kOpaque);
  EXPECT_EQ(detectProtocol("x"), Detected::kOpaque);
  EXPECT_EQ(detectProtocol("PROPFIND /x"), Detected::kOpaque);
  EXPECT_EQ(detectProtocol("G@T / HTTP/1.1\r\n"), Detected::kHttp1);
  EXPECT_EQ(detectProtocol("PROPFIND /x HTTP/1.1\r\n"), Detected::kHttp1);
  EXPECT_EQ(detectProtocol("*1\r\n$4\r\nPING\r\n"), Detected::kOpaque);
  EXPECT_EQ(detectProtocol("HELLO\r\n"), Detected::kOpaque);
  EXPECT_EQ(detectProtocol(std::string("\0\0\0\x08", 4)), Detected::kOpaque);
}

}  // namespace
}  // namespace meshd::proxy
