// The head writer (proxy/http1/head_writer.h): what the proxy forwards is regenerated
// from what the parser decided, and parses back to the same message.
#include <string>
#include <string_view>
#include <vector>

#include "counting_new.h"
#include "gtest/gtest.h"
#include "proxy/http1/head_parser.h"
#include "proxy/http1/head_writer.h"

namespace meshd::proxy::http1 {
namespace {

// Parses `in` as a request, writes it for upstream, and returns what was written.
std::string forward(std::string_view in, const RequestWriteOptions& options = {}) {
  RequestParser p;
  EXPECT_EQ(p.parse(in), ParseStatus::kDone) << p.error().reason << "\n" << in;
  std::string out;
  writeRequestHead(p.head(), options, &out);
  return out;
}

TEST(Http1WriterTest, RequestFramingIsRegeneratedNotCopied) {
  EXPECT_EQ(forward("POST /a HTTP/1.1\r\nHost: web\r\nContent-Length: 005\r\n\r\nhello"),
            "POST /a HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\n");
  EXPECT_EQ(forward("POST /a HTTP/1.1\r\nHost: web\r\nTransfer-Encoding:  CHUNKED \r\n\r\n"),
            "POST /a HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(forward("GET / HTTP/1.1\r\nHost: web\r\n\r\n"), "GET / HTTP/1.1\r\nHost: web\r\n\r\n");
}

TEST(Http1WriterTest, HopByHopFieldsAndConnectionNamedOnesAreDropped) {
  EXPECT_EQ(forward("GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, x-secret\r\n"
                    "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
                    "Proxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"),
            "GET / HTTP/1.1\r\nHost: web\r\nAccept: */*\r\n\r\n");
}

TEST(Http1WriterTest, AbsoluteFormBecomesOriginFormWithHostFromTheTarget) {
  EXPECT_EQ(forward("GET http://web:8080/p?q=1 HTTP/1.1\r\nHost: web:8080\r\n\r\n"),
            "GET /p?q=1 HTTP/1.1\r\nHost: web:8080\r\n\r\n");
  EXPECT_EQ(forward("GET http://web HTTP/1.1\r\nHost: web\r\n\r\n"),
            "GET / HTTP/1.1\r\nHost: web\r\n\r\n");
  EXPECT_EQ(forward("GET http://web?q HTTP/1.1\r\nHost: web\r\n\r\n"),
            "GET /?q HTTP/1.1\r\nHost: web\r\n\r\n");
}

TEST(Http1WriterTest, Http10GoesUpstreamAsHttp11AndCloseWhenAsked) {
  RequestWriteOptions close;
  close.upstream_keep_alive = false;
  EXPECT_EQ(forward("GET / HTTP/1.0\r\nHost: web\r\n\r\n", close),
            "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
}

TEST(Http1WriterTest, UpgradeIsKeptAndExtraFieldsAreAppended) {
  const ExtraField extra[] = {{"x-request-id", "abc"}};
  RequestWriteOptions options;
  options.extra = extra;
  EXPECT_EQ(forward("GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\n"
                    "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    options),
            "GET /ws HTTP/1.1\r\nHost: web\r\nSec-WebSocket-Version: 13\r\n"
            "Connection: upgrade\r\nUpgrade: websocket\r\nx-request-id: abc\r\n\r\n");
}

// Whatever the parser accepted, the written head parses back to the same message:
// method, origin-form target, authority, framing and end-to-end fields in order.
TEST(Http1WriterTest, WrittenRequestsParseBackToTheSameMessage) {
  const std::vector<std::string> inputs = {
      "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
      "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0012\r\nA: 1\r\nB:  2 \r\n\r\n",
      "PUT /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a:81\r\n\r\n",
      "DELETE http://a:81/z?k=v HTTP/1.1\r\nHost: A:81\r\nConnection: close\r\n\r\n",
      "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
      "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
      "GET /old HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
  };
  for (const std::string& in : inputs) {
    RequestParser first;
    ASSERT_EQ(first.parse(in), ParseStatus::kDone) << in;
    std::string out;
    writeRequestHead(first.head(), {}, &out);
    RequestParser second;
    ASSERT_EQ(second.parse(out), ParseStatus::kDone) << second.error().reason << "\n" << out;
    EXPECT_EQ(second.headLength(), out.size()) << out;
    const RequestHead &a = first.head(), &b = second.head();
    EXPECT_EQ(b.method, a.method) << out;
    if (a.form == TargetForm::kAbsolute) {
      EXPECT_EQ(b.form, TargetForm::kOrigin) << out;
    } else {
      EXPECT_EQ(b.target, a.target) << out;
    }
    EXPECT_EQ(b.version, Version::kHttp11) << out;
    EXPECT_EQ(b.authority, a.authority) << out;
    EXPECT_EQ(b.framing.body, a.framing.body) << out;
    EXPECT_EQ(b.framing.content_length, a.framing.content_length) << out;
    std::vector<std::pair<std::string_view, std::string_view>> ea, eb;
    for (const HeaderField& f : a.headers) {
      if (!f.hop_by_hop && f.name != "Host" && f.name != "Content-Length")
        ea.emplace_back(f.name, f.value);
    }
    for (const HeaderField& f : b.headers) {
      if (!f.hop_by_hop && f.name != "Host" && f.name != "Content-Length")
        eb.emplace_back(f.name, f.value);
    }
    EXPECT_EQ(eb, ea) << out;
  }
}

TEST(Http1WriterTest, ResponsesKeepTheirFramingAndCloseWhenNeeded) {
  auto respond = [](std::string_view in, const RequestContext& ctx,
                    const ResponseWriteOptions& options = {}) {
    ResponseParser p;
    EXPECT_EQ(p.parse(in, ctx), ParseStatus::kDone) << p.error().reason << "\n" << in;
    std::string out;
    writeResponseHead(p.head(), options, &out);
    return out;
  };
  EXPECT_EQ(respond("HTTP/1.1 200 OK\r\nContent-Length: 02\r\nServer: x\r\n\r\nhi", {}),
            "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\n");
  EXPECT_EQ(respond("HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", {}),
            "HTTP/1.1 200 OK\r\nServer: x\r\nConnection: close\r\n\r\n")
      << "a close-delimited body stays close-delimited";
  EXPECT_EQ(
      respond("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
              "Upgrade: websocket\r\n\r\n",
              RequestContext{false, false, true}),
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
  ResponseWriteOptions close;
  close.keep_alive = false;
  EXPECT_EQ(respond("HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=1\r\n\r\n", {}, close),
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
}

TEST(Http1WriterTest, ChunkLines) {
  std::string out;
  writeChunkHeader(0x1a2b, &out);
  writeLastChunk(&out);
  EXPECT_EQ(out, "1a2b\r\n0\r\n\r\n");
}

// With capacity reserved, writing a head allocates nothing (the per-request path).
TEST(Http1WriterTest, WritingAllocatesNothingOnceTheBufferHasRoom) {
  RequestParser p;
  const std::string in =
      "POST /api/v1/items?x=1 HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 12\r\n"
      "User-Agent: curl/7.88\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n";
  ASSERT_EQ(p.parse(in), ParseStatus::kDone);
  std::string out;
  out.reserve(4096);
  const ExtraField extra[] = {{"x-request-id", "0123456789abcdef"}};
  RequestWriteOptions options;
  options.extra = extra;
  meshd::testing::startCountingAllocations();
  for (int i = 0; i < 100; ++i) {
    out.clear();
    writeRequestHead(p.head(), options, &out);
  }
  EXPECT_EQ(meshd::testing::stopCountingAllocations(), 0u);
  EXPECT_NE(out.find("x-request-id: 0123456789abcdef\r\n"), std::string::npos);
}

}  // namespace
}  // namespace meshd::proxy::http1
