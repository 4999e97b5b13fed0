// Table tests of the strict HTTP/1.1 parser (userspace/proxy/http1): valid requests and
// responses, every rejection with its exact status, a request-smuggling table, and the
// property that a message fed whole, byte by byte or in small pieces gives the same
// result. Every case is reduced to one outcome string, the framing a proxy would act on:
//   "400"                      the head was refused with that status
//   "none ka"                  no body; "ka" keep-alive / "close"
//   "len:5 ka"                 Content-Length body of 5 bytes
//   "chunked[hello] ka"        chunked body; the decoded data between brackets;
//                              "!400" after it when the chunked body was refused,
//                              "?more" when it is not complete
//   "... +rest[...]"           bytes after the body: the next message on the connection
// plus "connect", "expect", "upgrade:<proto>" flags.
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "counting_new.h"
#include "gtest/gtest.h"
#include "proxy/http1/chunked_decoder.h"
#include "proxy/http1/head_parser.h"

namespace meshd::proxy::http1 {
namespace {

using namespace std::string_literals;

// How bytes reach the parser: all at once, or in pieces of `piece` bytes appended to a
// growing buffer (which moves when it reallocates, as a connection's buffer would).
struct Feed {
  size_t piece = 0;  // 0: one piece
};

// Decodes a chunked body from `in`, fed in pieces; returns the outcome suffix and sets
// `rest` to the bytes after the body.
std::string decodeChunked(std::string_view in, Feed feed, const Limits& limits, std::string* rest) {
  ChunkedDecoder d(limits);
  std::string data;
  size_t pos = 0;  // bytes of `in` consumed
  size_t avail = feed.piece == 0 ? in.size() : std::min(in.size(), feed.piece);
  while (true) {
    const ChunkedDecoder::Result r = d.decode(in.substr(pos, avail - pos));
    pos += r.consumed;
    switch (r.status) {
      case ChunkedDecoder::Status::kData:
        data.append(r.data);
        continue;
      case ChunkedDecoder::Status::kDone:
        *rest = std::string(in.substr(pos));
        return absl::StrCat("chunked[", data, "]");
      case ChunkedDecoder::Status::kError:
        EXPECT_FALSE(d.error().reason.empty());
        return absl::StrCat("chunked[", data, "]!", d.error().status);
      case ChunkedDecoder::Status::kNeedMore:
        if (avail == in.size()) return absl::StrCat("chunked[", data, "]?more");
        avail = feed.piece == 0 ? in.size() : std::min(in.size(), avail + feed.piece);
        continue;
    }
  }
}

std::string framingOutcome(const Framing& f, std::string_view after, Feed feed,
                           const Limits& limits) {
  std::string out;
  std::string rest;
  switch (f.body) {
    case BodyKind::kNone:
      out = "none";
      rest = std::string(after);
      break;
    case BodyKind::kContentLength:
      out = absl::StrCat("len:", f.content_length);
      if (after.size() < f.content_length) {
        out += "?more";
      } else {
        rest = std::string(after.substr(f.content_length));
      }
      break;
    case BodyKind::kChunked:
      out = decodeChunked(after, feed, limits, &rest);
      break;
    case BodyKind::kCloseDelimited:
      out = "close-delimited";
      break;
    case BodyKind::kTunnel:
      out = "tunnel";
      break;
  }
  absl::StrAppend(&out, f.keep_alive ? " ka" : " close");
  if (!rest.empty()) absl::StrAppend(&out, " +rest[", rest, "]");
  return out;
}

std::string requestOutcome(std::string_view input, Feed feed, const Limits& limits = Limits()) {
  RequestParser p(limits);
  std::string buf;
  ParseStatus st = ParseStatus::kNeedMore;
  if (feed.piece == 0) {
    buf = std::string(input);
    st = p.parse(buf);
  } else {
    for (size_t at = 0; at < input.size() && st == ParseStatus::kNeedMore; at += feed.piece) {
      buf.append(input.substr(at, feed.piece));
      st = p.parse(buf);
    }
  }
  if (st == ParseStatus::kNeedMore) return "need-more";
  if (st == ParseStatus::kError) {
    EXPECT_FALSE(p.error().reason.empty()) << input;
    return absl::StrCat(p.error().status);
  }
  const RequestHead& h = p.head();
  EXPECT_LE(p.headLength(), buf.size());
  std::string out =
      framingOutcome(h.framing, std::string_view(input).substr(p.headLength()), feed, limits);
  if (h.connect) out += " connect";
  if (h.expect_continue) out += " expect";
  if (h.upgrade_requested) out += " upgrade:" + std::string(h.upgrade);
  return out;
}

struct Case {
  const char* name;
  std::string input;
  std::string want;
};

// One piece, byte by byte, and a few other piece sizes must all give `want`.
void checkCases(const std::vector<Case>& cases, const Limits& limits = Limits()) {
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string whole = requestOutcome(c.input, Feed{0}, limits);
    EXPECT_EQ(whole, c.want) << c.name;
    for (size_t piece : {1, 2, 3, 7, 64}) {
      EXPECT_EQ(requestOutcome(c.input, Feed{piece}, limits), whole)
          << c.name << " fed in pieces of " << piece;
    }
  }
}

const std::string kGet = "GET / HTTP/1.1\r\nHost: a\r\n";
const std::string kPost = "POST /p HTTP/1.1\r\nHost: a\r\n";

TEST(Http1RequestTest, ValidRequests) {
  checkCases({
      {"simple GET", kGet + "\r\n", "none ka"},
      {"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", "none close"},
      {"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "none ka"},
      {"HTTP/1.1 close", kGet + "Connection: close\r\n\r\n", "none close"},
      {"close wins over keep-alive", kGet + "Connection: keep-alive, close\r\n\r\n", "none close"},
      {"Content-Length body", kPost + "Content-Length: 5\r\n\r\nhello", "len:5 ka"},
      {"Content-Length 0", kPost + "Content-Length: 0\r\n\r\n", "len:0 ka"},
      {"body not yet received", kPost + "Content-Length: 9\r\n\r\nhel", "len:9?more ka"},
      {"chunked", kPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
       "chunked[hello] ka"},
      {"chunked, two chunks, extensions",
       kPost + "Transfer-Encoding: chunked\r\n\r\n5;a=b;c=\"q\\\"x\"\r\nhello\r\n1 ; "
               "d\r\n!\r\n0\r\n\r\n",
       "chunked[hello!] ka"},
      {"chunked with trailers",
       kPost + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\nY:\r\n\r\n",
       "chunked[abc] ka"},
      {"one leading CRLF tolerated", "\r\n" + kGet + "\r\n", "none ka"},
      {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "none ka"},
      {"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "none ka connect"},
      {"absolute-form", "GET http://a/x?y HTTP/1.1\r\nHost: a\r\n\r\n", "none ka"},
      {"absolute-form HTTP/1.0 without Host", "GET http://a:8080/ HTTP/1.0\r\n\r\n", "none close"},
      {"IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "none ka"},
      {"expect 100-continue", kPost + "Expect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi",
       "len:2 ka expect"},
      {"Expect ignored in HTTP/1.0", "POST / HTTP/1.0\r\nExpect: foo\r\n\r\n", "none close"},
      {"websocket upgrade",
       kGet + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
       "none ka upgrade:websocket"},
      {"Upgrade without Connection: upgrade", kGet + "Upgrade: websocket\r\n\r\n", "none ka"},
      {"Upgrade ignored in HTTP/1.0",
       "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", "none close"},
      {"obs-text and tabs in a value", kGet + "X: a\tb\x80\xff\r\n\r\n", "none ka"},
      {"empty value", kGet + "X:\r\n\r\n", "none ka"},
      {"unknown method is a token", "PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", "none ka"},
      {"pipelined requests", kGet + "\r\n" + kGet + "\r\n", "none ka +rest[" + kGet + "\r\n]"},
      {"incomplete head", "GET / HTTP/1.1\r\nHost: a\r\n", "need-more"},
  });
}

TEST(Http1RequestTest, Rejections) {
  checkCases({
      {"two leading CRLFs", "\r\n\r\n" + kGet + "\r\n", "400"},
      {"leading bare LF", "\n" + kGet + "\r\n", "400"},
      {"method not a token", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"HTTP/0.9 request-line", "GET /\r\n\r\n", "400"},
      {"SP after version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", "400"},
      {"leading SP in request-line", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", "505"},
      {"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", "505"},
      {"HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", "400"},
      {"fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"obs-text in target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"tab in target", "GET /\ta HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"CONNECT without port", "CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"CONNECT port out of range", "CONNECT a:65536 HTTP/1.1\r\nHost: a:65536\r\n\r\n", "400"},
      {"authority-form without CONNECT", "GET a:80 HTTP/1.1\r\nHost: a:80\r\n\r\n", "400"},
      {"ftp absolute-form", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"no colon", kGet + "Xyz\r\n\r\n", "400"},
      {"empty field name", kGet + ": v\r\n\r\n", "400"},
      {"DEL in value", kGet + "X: a\x7f\r\n\r\n", "400"},
      {"ESC in value", kGet + "X: a\x1b[0m\r\n\r\n", "400"},
      {"unknown expectation", kGet + "Expect: 200-ok\r\n\r\n", "417"},
      {"invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "400"},
      {"Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "400"},
      {"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "400"},
      {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", "400"},
      {"two Upgrade fields", kGet + "Upgrade: a\r\nUpgrade: b\r\n\r\n", "400"},
      {"Connection option not a token", kGet + "Connection: a b\r\n\r\n", "400"},
      {"CONNECT with a body", "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 1\r\n\r\nx",
       "400"},
  });
}

TEST(Http1RequestTest, Limits) {
  Limits limits;
  limits.max_headers = 3;
  limits.max_head_bytes = 64;
  checkCases(
      {
          {"3 fields fit", kGet + "B: 1\r\nC: 2\r\n\r\n", "none ka"},
          {"4 fields do not", kGet + "B: 1\r\nC: 2\r\nD: 3\r\n\r\n", "431"},
          {"64 bytes fit", kGet + "X: " + std::string(64 - 25 - 7, 'v') + "\r\n\r\n", "none ka"},
          {"65 bytes do not", kGet + "X: " + std::string(64 - 25 - 6, 'v') + "\r\n\r\n", "431"},
          {"long request-line", "GET /" + std::string(100, 'a') + " HTTP/1.1\r\n", "431"},
          {"no LF at all", std::string(100, 'a'), "431"},
          // A too-large verdict wins over a bad byte further on in the same line.
          {"too large and bad", "GET /" + std::string(70, 'a') + "\x01 HTTP/1.1\r\n", "431"},
          {"trailers over the byte limit",
           kPost + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: " + std::string(70, 'v') + "\r\n\r\n",
           "chunked[]!431 ka"},
          {"trailers over the field limit",
           kPost + "Transfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
           "chunked[]!431 ka"},
      },
      limits);
}

// Request smuggling (CL.TE, TE.CL, TE.TE and friends): each input is either refused with
// an exact status or framed exactly one way, which the outcome states.
TEST(Http1RequestTest, SmugglingTable) {
  const std::string body = "\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
  const std::vector<Case> cases = {
      // CL.TE / TE.CL
      {"CL then TE", kPost + "Content-Length: 6\r\nTransfer-Encoding: chunked" + body, "400"},
      {"TE then CL", kPost + "Transfer-Encoding: chunked\r\nContent-Length: 6" + body, "400"},
      {"TE with CL 0", kPost + "Transfer-Encoding: chunked\r\nContent-Length: 0" + body, "400"},
      {"TE with invalid CL", kPost + "Transfer-Encoding: chunked\r\nContent-Length: x" + body,
       "400"},
      // TE.TE obfuscations
      {"xchunked", kPost + "Transfer-Encoding: xchunked" + body, "400"},
      {"leading SP is OWS", kPost + "Transfer-Encoding:  chunked" + body, "chunked[hello] ka"},
      {"leading HTAB is OWS", kPost + "Transfer-Encoding:\tchunked" + body, "chunked[hello] ka"},
      {"trailing HTAB is OWS", kPost + "Transfer-Encoding: chunked\t" + body, "chunked[hello] ka"},
      {"upper case coding", kPost + "Transfer-Encoding: CHUNKED" + body, "chunked[hello] ka"},
      {"vertical tab before value",
       kPost +
           "Transfer-Encoding: \x0b"
           "chunked" +
           body,
       "400"},
      {"form feed after value", kPost + "Transfer-Encoding: chunked\x0c" + body, "400"},
      {"chunked, identity", kPost + "Transfer-Encoding: chunked, identity" + body, "400"},
      {"identity", kPost + "Transfer-Encoding: identity" + body, "400"},
      {"gzip, chunked", kPost + "Transfer-Encoding: gzip, chunked" + body, "501"},
      {"gzip alone", kPost + "Transfer-Encoding: gzip" + body, "400"},
      {"chunked twice in a list", kPost + "Transfer-Encoding: chunked, chunked" + body, "400"},
      {"two TE fields", kPost + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked" + body,
       "400"},
      {"TE list with empty element", kPost + "Transfer-Encoding: ,chunked" + body, "400"},
      {"TE with a parameter", kPost + "Transfer-Encoding: chunked;q=1" + body, "400"},
      {"quoted chunked", kPost + "Transfer-Encoding: \"chunked\"" + body, "400"},
      {"empty TE", kPost + "Transfer-Encoding:" + body, "400"},
      {"SP before colon", kPost + "Transfer-Encoding : chunked" + body, "400"},
      {"HTAB before colon", kPost + "Transfer-Encoding\t: chunked" + body, "400"},
      {"underscore TE", kPost + "Transfer_Encoding: chunked" + body, "400"},
      {"underscore CL", kPost + "Content_Length: 5\r\n\r\nhello", "400"},
      {"obs-fold TE value", kPost + "Transfer-Encoding:\r\n chunked" + body, "400"},
      {"obs-fold hiding TE", kPost + "X: a\r\n Transfer-Encoding: chunked" + body, "400"},
      {"whitespace before first field",
       "POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a" + body, "400"},
      {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked" + body, "400"},
      {"TE and CL in HTTP/1.0",
       "POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked" + body, "400"},
      {"TE on CONNECT", "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: chunked" + body,
       "400"},
      // Content-Length
      {"duplicate equal CL", kPost + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "400"},
      {"conflicting CL", kPost + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "400"},
      {"CL list", kPost + "Content-Length: 5, 5\r\n\r\nhello", "400"},
      {"CL with plus", kPost + "Content-Length: +5\r\n\r\nhello", "400"},
      {"negative CL", kPost + "Content-Length: -1\r\n\r\nhello", "400"},
      {"hex CL", kPost + "Content-Length: 0x5\r\n\r\nhello", "400"},
      {"CL with inner space", kPost + "Content-Length: 5 5\r\n\r\nhello", "400"},
      {"empty CL", kPost + "Content-Length:\r\n\r\nhello", "400"},
      {"CL leading zeros", kPost + "Content-Length: 005\r\n\r\nhello", "len:5 ka"},
      {"CL with OWS", kPost + "Content-Length: \t5 \r\n\r\nhello", "len:5 ka"},
      {"CL max uint64", kPost + "Content-Length: 18446744073709551615\r\n\r\n",
       "len:18446744073709551615?more ka"},
      {"CL overflow", kPost + "Content-Length: 18446744073709551616\r\n\r\n", "400"},
      {"CL huge", kPost + "Content-Length: 99999999999999999999999999\r\n\r\n", "400"},
      // Line endings and bytes
      {"bare LF ends a field line", kPost + "X: a\nTransfer-Encoding: chunked" + body, "400"},
      {"bare CR in a field line", kPost + "X: a\rTransfer-Encoding: chunked" + body, "400"},
      {"bare LF ends the head", kPost + "Content-Length: 5\r\n\nhello", "400"},
      {"bare LF request-line", "POST / HTTP/1.1\nHost: a\r\n\r\n", "400"},
      {"NUL in value", kPost + "X: a\0b\r\nContent-Length: 5\r\n\r\nhello"s, "400"},
      {"NUL in name", kPost + "X\0: a\r\nContent-Length: 5\r\n\r\nhello"s, "400"},
      {"NUL in target", "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n"s, "400"},
      // Chunked body
      {"chunk-size overflow", kPost + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\n",
       "chunked[]!400 ka"},
      {"chunk-size 0x prefix", kPost + "Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n",
       "chunked[]!400 ka"},
      {"negative chunk-size", kPost + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n",
       "chunked[]!400 ka"},
      {"chunk-size with SP before CRLF",
       kPost + "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", "chunked[]!400 ka"},
      {"empty chunk-size", kPost + "Transfer-Encoding: chunked\r\n\r\n\r\n", "chunked[]!400 ka"},
      {"bare LF chunk line", kPost + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
       "chunked[]!400 ka"},
      {"bare LF after data", kPost + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
       "chunked[hello]!400 ka"},
      {"data longer than chunk-size",
       kPost + "Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", "chunked[hel]!400 ka"},
      {"long chunk extension",
       kPost + "Transfer-Encoding: chunked\r\n\r\n5;a=" + std::string(5000, 'x') + "\r\nhello",
       "chunked[]!400 ka"},
      {"many small chunks with extensions",
       [&] {
         std::string s = kPost + "Transfer-Encoding: chunked\r\n\r\n";
         for (int i = 0; i < 20; ++i) s += "1;e=" + std::string(1000, 'x') + "\r\na\r\n";
         return s;
       }(),
       "chunked[aaaaaaaaaaaaaaaa]!400 ka"},
      {"chunk extension with bare LF",
       kPost + "Transfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n", "chunked[]!400 ka"},
      {"chunk extension with CR in quotes",
       kPost + "Transfer-Encoding: chunked\r\n\r\n5;a=\"b\rc\"\r\nhello\r\n0\r\n\r\n",
       "chunked[]!400 ka"},
      {"chunk extension without name",
       kPost + "Transfer-Encoding: chunked\r\n\r\n5;=b\r\nhello\r\n0\r\n\r\n", "chunked[]!400 ka"},
      {"obs-fold in trailer", kPost + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n",
       "chunked[]!400 ka"},
      {"SP before colon in trailer", kPost + "Transfer-Encoding: chunked\r\n\r\n0\r\nX : a\r\n\r\n",
       "chunked[]!400 ka"},
      {"bare LF in trailer", kPost + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\r\n",
       "chunked[]!400 ka"},
      {"NUL in trailer", kPost + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: \0\r\n\r\n"s,
       "chunked[]!400 ka"},
      // Pipelining: a request hidden in a body stays body; one after a body is the next.
      {"request hidden in a CL body",
       kPost + "Content-Length: 32\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", "len:32 ka"},
      {"request hidden in chunk data",
       kPost + "Transfer-Encoding: chunked\r\n\r\n20\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n\r\n"
               "0\r\n\r\n",
       "chunked[GET /admin HTTP/1.1\r\nHost: a\r\n\r\n] ka"},
      {"request after a chunked body",
       kPost + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
       "chunked[] ka +rest[GET /admin HTTP/1.1\r\n\r\n]"},
      {"request after a CL body", kPost + "Content-Length: 2\r\n\r\nhiGET /x HTTP/1.1\r\n\r\n",
       "len:2 ka +rest[GET /x HTTP/1.1\r\n\r\n]"},
      // Host and the request-line
      {"duplicate Host", kGet + "Host: b\r\n\r\n", "400"},
      {"duplicate Host, other case", kGet + "hOST: a\r\n\r\n", "400"},
      {"no Host in HTTP/1.1", "GET / HTTP/1.1\r\nX: a\r\n\r\n", "400"},
      {"absolute-form vs Host conflict", "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"absolute-form vs Host, port differs", "GET http://a:81/ HTTP/1.1\r\nHost: a\r\n\r\n",
       "400"},
      {"absolute-form vs Host, case differs", "GET http://A/ HTTP/1.1\r\nHost: a\r\n\r\n",
       "none ka"},
      {"CONNECT vs Host conflict", "CONNECT a:443 HTTP/1.1\r\nHost: b:443\r\n\r\n", "400"},
      {"two SPs after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"two SPs before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"HTAB as separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
      {"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", "400"},
      {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "505"},
      {"Connection: content-length does not drop framing",
       kPost + "Connection: content-length\r\nContent-Length: 2\r\n\r\nhi", "len:2 ka"},
  };
  EXPECT_GE(cases.size(), 40u);
  RecordProperty("smuggling_cases", static_cast<int>(cases.size()));
  checkCases(cases);
}

TEST(Http1RequestTest, HeadViewsAndHopByHop) {
  const std::string in =
      "POST http://svc.ns:8080/a?b HTTP/1.1\r\n"
      "Host: SVC.ns:8080\r\n"
      "X-Keep:  v  w \t\r\n"
      "Connection: keep-alive, X-Secret, ,Upgrade\r\n"
      "X-Secret: s\r\n"
      "Keep-Alive: timeout=5\r\n"
      "Proxy-Connection: close\r\n"
      "TE: trailers\r\n"
      "Upgrade: h2c\r\n"
      "Content-Length: 0\r\n"
      "\r\n";
  RequestParser p;
  ASSERT_EQ(p.parse(in), ParseStatus::kDone);
  EXPECT_EQ(p.headLength(), in.size());
  const RequestHead& h = p.head();
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.target, "http://svc.ns:8080/a?b");
  EXPECT_EQ(h.form, TargetForm::kAbsolute);
  EXPECT_EQ(h.authority, "svc.ns:8080");
  EXPECT_EQ(h.version, Version::kHttp11);
  EXPECT_TRUE(h.upgrade_requested);
  EXPECT_EQ(h.upgrade, "h2c");
  ASSERT_EQ(h.headers.size(), 9u);
  std::vector<std::string> kept;
  std::vector<std::string> dropped;
  for (const HeaderField& f : h.headers) {
    (f.hop_by_hop ? dropped : kept).push_back(std::string(f.name) + "=" + std::string(f.value));
  }
  EXPECT_EQ(kept,
            (std::vector<std::string>{"Host=SVC.ns:8080", "X-Keep=v  w", "Content-Length=0"}));
  EXPECT_EQ(dropped,
            (std::vector<std::string>{"Connection=keep-alive, X-Secret, ,Upgrade", "X-Secret=s",
                                      "Keep-Alive=timeout=5", "Proxy-Connection=close",
                                      "TE=trailers", "Upgrade=h2c"}));
  // Views point into the caller's buffer.
  EXPECT_GE(h.headers[0].name.data(), in.data());
  EXPECT_LT(h.headers[0].name.data(), in.data() + in.size());
}

TEST(Http1RequestTest, ResetParsesThePipelinedNextRequest) {
  const std::string in = kGet + "\r\n" + "DELETE /x HTTP/1.1\r\nHost: b\r\n\r\n";
  RequestParser p;
  ASSERT_EQ(p.parse(in), ParseStatus::kDone);
  EXPECT_EQ(p.head().method, "GET");
  // Sticky until reset().
  EXPECT_EQ(p.parse(in), ParseStatus::kDone);
  const size_t first = p.headLength();
  p.reset();
  ASSERT_EQ(p.parse(std::string_view(in).substr(first)), ParseStatus::kDone);
  EXPECT_EQ(p.head().method, "DELETE");
  EXPECT_EQ(p.head().authority, "b");
  EXPECT_EQ(first + p.headLength(), in.size());
}

TEST(Http1RequestTest, ShrunkBufferIsAnErrorNotACrash) {
  RequestParser p;
  ASSERT_EQ(p.parse("GET / HTTP/1.1\r\nHost: a"), ParseStatus::kNeedMore);
  ASSERT_EQ(p.parse("GET"), ParseStatus::kError);
  EXPECT_EQ(p.error().status, 400);
}

TEST(Http1RequestTest, ErrorReasonsNameTheProblem) {
  RequestParser p;
  ASSERT_EQ(p.parse(kPost + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ParseStatus::kError);
  EXPECT_EQ(p.error().status, 400);
  EXPECT_EQ(p.error().reason, "both Transfer-Encoding and Content-Length");
  p.reset();
  ASSERT_EQ(p.parse(kGet + "X: a\nY: b\r\n\r\n"), ParseStatus::kError);
  EXPECT_EQ(p.error().reason, "bare LF: lines must end with CRLF");
  p.reset();
  ASSERT_EQ(p.parse(kGet + " X: a\r\n\r\n"), ParseStatus::kError);
  EXPECT_EQ(p.error().reason, "obs-fold: a field line starts with whitespace");
}

TEST(Http1ChunkedTest, DataIsAViewOfTheInput) {
  const std::string in = "5\r\nhello\r\n0\r\n\r\nNEXT";
  ChunkedDecoder d;
  ChunkedDecoder::Result r = d.decode(in);
  ASSERT_EQ(r.status, ChunkedDecoder::Status::kData);
  EXPECT_EQ(r.data, "hello");
  EXPECT_EQ(r.data.data(), in.data() + 3);
  EXPECT_EQ(r.consumed, 8u);
  r = d.decode(std::string_view(in).substr(8));
  ASSERT_EQ(r.status, ChunkedDecoder::Status::kDone);
  EXPECT_EQ(8 + r.consumed, in.size() - 4);
  EXPECT_EQ(d.bodyBytes(), 5u);
  // Sticky.
  EXPECT_EQ(d.decode("x").status, ChunkedDecoder::Status::kDone);
  d.reset();
  EXPECT_EQ(d.decode("x").status, ChunkedDecoder::Status::kError);
  EXPECT_EQ(d.error().status, 400);
}

TEST(Http1ChunkedTest, LargestChunkSizeIsAccepted) {
  ChunkedDecoder d;
  const ChunkedDecoder::Result r = d.decode("0000000000ffffffffffffffff\r\nab");
  ASSERT_EQ(r.status, ChunkedDecoder::Status::kData);
  EXPECT_EQ(r.data, "ab");
  EXPECT_EQ(d.bodyBytes(), ~uint64_t{0});
}

// ---------------------------------------------------------------------------------------
// Responses

std::string responseOutcome(std::string_view input, const RequestContext& req, Feed feed) {
  ResponseParser p;
  std::string buf;
  ParseStatus st = ParseStatus::kNeedMore;
  if (feed.piece == 0) {
    buf = std::string(input);
    st = p.parse(buf, req);
  } else {
    for (size_t at = 0; at < input.size() && st == ParseStatus::kNeedMore; at += feed.piece) {
      buf.append(input.substr(at, feed.piece));
      st = p.parse(buf, req);
    }
  }
  if (st == ParseStatus::kNeedMore) return "need-more";
  if (st == ParseStatus::kError) {
    EXPECT_FALSE(p.error().reason.empty());
    return absl::StrCat(p.error().status);
  }
  std::string out = absl::StrCat(p.head().status, " ");
  if (p.head().informational) out += "info ";
  Limits limits;
  ChunkedDecoder unused(limits);
  (void)unused;
  return out + framingOutcome(p.head().framing, input.substr(p.headLength()), feed, limits);
}

TEST(Http1ResponseTest, Table) {
  const RequestContext get;
  RequestContext head;
  head.head = true;
  RequestContext connect;
  connect.connect = true;
  RequestContext upgrade;
  upgrade.upgrade_requested = true;
  struct RCase {
    const char* name;
    std::string input;
    RequestContext req;
    std::string want;
  };
  const std::vector<RCase> cases = {
      {"200 CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", get, "200 len:2 ka"},
      {"200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
       get, "200 chunked[hi] ka"},
      {"200 close-delimited", "HTTP/1.1 200 OK\r\n\r\nall of it", get, "200 close-delimited close"},
      {"HTTP/1.0 200 no length", "HTTP/1.0 200 OK\r\n\r\nx", get, "200 close-delimited close"},
      {"HTTP/1.0 keep-alive",
       "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", get,
       "200 len:0 ka"},
      {"no reason phrase", "HTTP/1.1 204\r\n\r\n", get, "204 none ka"},
      {"empty reason phrase", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", get, "404 len:0 ka"},
      {"HEAD response with CL", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", head,
       "200 none ka"},
      {"204 with CL ignored", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", get,
       "204 none ka"},
      {"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", get, "304 none ka"},
      {"100 Continue", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", get,
       "100 info none ka +rest[HTTP/1.1 200 OK\r\n]"},
      {"103 Early Hints", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", get,
       "103 info none ka"},
      {"101 after upgrade request",
       "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
       upgrade, "101 tunnel close"},
      {"101 without upgrade request", "HTTP/1.1 101 Switching Protocols\r\n\r\n", get, "502"},
      {"200 to CONNECT", "HTTP/1.1 200 Connection established\r\n\r\n", connect,
       "200 tunnel close"},
      {"407 to CONNECT", "HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n", connect, "407 len:0 ka"},
      {"TE and CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
       get, "502"},
      {"TE and CL on 204",
       "HTTP/1.1 204 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", get, "502"},
      {"two CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", get, "502"},
      {"bad CL", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nhi", get, "502"},
      {"gzip TE", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", get, "502"},
      {"TE in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", get, "502"},
      {"HTTP/2 status-line", "HTTP/2 200\r\n\r\n", get, "502"},
      {"status out of range", "HTTP/1.1 099 X\r\n\r\n", get, "502"},
      {"status 600", "HTTP/1.1 600 X\r\n\r\n", get, "502"},
      {"status not digits", "HTTP/1.1 2x0 X\r\n\r\n", get, "502"},
      {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", get, "502"},
      {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", get, "502"},
      {"NUL in reason", "HTTP/1.1 200 O\0K\r\n\r\n"s, get, "502"},
      {"leading CRLF", "\r\nHTTP/1.1 200 OK\r\n\r\n", get, "502"},
      {"garbage", "<html>\r\n\r\n", get, "502"},
      {"bad chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", get,
       "200 chunked[]!400 ka"},
  };
  for (const RCase& c : cases) {
    const std::string whole = responseOutcome(c.input, c.req, Feed{0});
    EXPECT_EQ(whole, c.want) << c.name;
    for (size_t piece : {1, 2, 5}) {
      EXPECT_EQ(responseOutcome(c.input, c.req, Feed{piece}), whole) << c.name << " " << piece;
    }
  }
}

TEST(Http1ResponseTest, ChunkedDecoderReportsUpstreamErrorsAs502) {
  ChunkedDecoder d;
  d.setErrorStatus(502, 502);
  EXPECT_EQ(d.decode("5\r\nhelloXX").status, ChunkedDecoder::Status::kData);
  EXPECT_EQ(d.decode("XX").status, ChunkedDecoder::Status::kError);
  EXPECT_EQ(d.error().status, 502);
}

// ---------------------------------------------------------------------------------------
// No allocation per request: parsers and decoder reused across many requests.

// The counter works: an allocation made while counting is seen (else the test below
// could not fail).
int* volatile g_escape = nullptr;
TEST(Http1AllocationTest, CounterSeesAllocations) {
  meshd::testing::startCountingAllocations();
  g_escape = new int(7);
  const size_t allocations = meshd::testing::stopCountingAllocations();
  delete g_escape;
  EXPECT_GE(allocations, 1u);
}

TEST(Http1AllocationTest, NoAllocationPerRequest) {
  const std::string get =
      "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: svc.ns.svc.cluster.local\r\n"
      "User-Agent: test\r\nAccept: */*\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n";
  const std::string post =
      kPost + "Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n";
  const std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
  RequestParser req;
  ResponseParser res;
  ChunkedDecoder dec;
  size_t done = 0;
  meshd::testing::startCountingAllocations();
  for (int i = 0; i < 1000; ++i) {
    req.reset();
    done += req.parse(get) == ParseStatus::kDone;
    req.reset();
    done += req.parse(post) == ParseStatus::kDone;
    dec.reset();
    std::string_view body = std::string_view(post).substr(req.headLength());
    while (true) {
      const ChunkedDecoder::Result r = dec.decode(body);
      body.remove_prefix(r.consumed);
      if (r.status != ChunkedDecoder::Status::kData) {
        done += r.status == ChunkedDecoder::Status::kDone;
        break;
      }
    }
    res.reset();
    done += res.parse(resp, RequestContext()) == ParseStatus::kDone;
  }
  const size_t allocations = meshd::testing::stopCountingAllocations();
  EXPECT_EQ(done, 4000u);
  EXPECT_EQ(allocations, 0u);
}

}  // namespace
}  // namespace meshd::proxy::http1
