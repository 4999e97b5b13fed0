// libFuzzer target for the L7 proxy's HTTP/1.1 codec (userspace/proxy/http1): the
// request and response head parsers and the chunked decoder. The first input byte
// picks small or default limits and seeds the split points; the rest is the byte stream.
// Checks, besides "no crash, hang or leak":
//  - the result depends only on the bytes: fed whole, or in pieces of pseudo-random
//    sizes appended to a growing buffer, the head parsers give the same verdict, head
//    length, start line, fields and framing; the chunked decoder gives the same data,
//    verdict and end of body;
//  - a complete head fits the limit, its views lie inside the buffer, field names are
//    tokens and values carry no CR, LF, NUL or edge whitespace; an error carries a
//    status a proxy may send (400/417/431/501/505 for requests, 502 for responses) and a
//    reason;
//  - decoded chunk data never exceeds the chunk sizes announced.
// A broken invariant is __builtin_trap(), which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/http1/chars.h"
#include "proxy/http1/chunked_decoder.h"
#include "proxy/http1/head_parser.h"

namespace meshd::proxy::http1 {
namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Deterministic piece sizes (1..16) from the seed byte.
struct Splitter {
  uint32_t state;
  size_t next() {
    state = state * 1103515245u + 12345u;
    return 1 + ((state >> 16) % 16);
  }
};

struct HeadResult {
  ParseStatus status = ParseStatus::kNeedMore;
  ParseError error;
  size_t head_length = 0;
  std::string summary;  // start line, fields, framing, flattened
};

void appendField(std::string* out, const HeaderField& f) {
  out->append(f.name);
  out->push_back(':');
  out->append(f.value);
  out->push_back(f.hop_by_hop ? '!' : ';');
}

void appendFraming(std::string* out, const Framing& f) {
  out->append(std::to_string(static_cast<int>(f.body)));
  out->push_back('/');
  out->append(std::to_string(f.content_length));
  out->push_back(f.keep_alive ? 'k' : 'c');
}

void checkHeaders(absl::Span<const HeaderField> headers, std::string_view buf) {
  for (const HeaderField& f : headers) {
    check(!f.name.empty());
    check(f.name.data() >= buf.data() && f.name.data() + f.name.size() <= buf.data() + buf.size());
    check(f.value.data() >= buf.data() &&
          f.value.data() + f.value.size() <= buf.data() + buf.size());
    for (char c : f.name) check(chars::tchar(c));
    for (char c : f.value) check(chars::fieldValue(c));
    if (!f.value.empty()) check(!chars::ows(f.value.front()) && !chars::ows(f.value.back()));
  }
}

template <typename Parse, typename Summarize>
HeadResult runHead(std::string_view input, Splitter* split, Parse parse, Summarize summarize) {
  HeadResult r;
  std::string buf;
  if (split == nullptr) {
    buf.assign(input);
    r.status = parse(buf);
  } else {
    for (size_t at = 0; at < input.size() && r.status == ParseStatus::kNeedMore;) {
      const size_t n = split->next();
      buf.append(input.substr(at, n));
      at += n;
      r.status = parse(buf);
    }
  }
  if (r.status == ParseStatus::kDone) r.summary = summarize(buf, &r);
  return r;
}

bool sameHead(const HeadResult& a, const HeadResult& b) {
  return a.status == b.status && a.error.status == b.error.status &&
         a.error.reason == b.error.reason && a.head_length == b.head_length &&
         a.summary == b.summary;
}

struct BodyResult {
  ChunkedDecoder::Status status = ChunkedDecoder::Status::kNeedMore;
  std::string data;
  size_t consumed = 0;
  uint16_t error = 0;
};

BodyResult runChunked(std::string_view in, const Limits& limits, Splitter* split) {
  ChunkedDecoder d(limits);
  BodyResult r;
  size_t avail = split == nullptr ? in.size() : std::min(in.size(), split->next());
  while (true) {
    const ChunkedDecoder::Result step = d.decode(in.substr(r.consumed, avail - r.consumed));
    check(step.consumed <= avail - r.consumed);
    r.consumed += step.consumed;
    if (step.status == ChunkedDecoder::Status::kData) {
      check(!step.data.empty());
      r.data.append(step.data);
      check(r.data.size() <= d.bodyBytes());
      continue;
    }
    if (step.status == ChunkedDecoder::Status::kNeedMore && avail < in.size()) {
      avail = split == nullptr ? in.size() : std::min(in.size(), avail + split->next());
      continue;
    }
    r.status = step.status;
    if (r.status == ChunkedDecoder::Status::kError) {
      r.error = d.error().status;
      check(!d.error().reason.empty());
      check(r.error == 400 || r.error == 431);
    }
    return r;
  }
}

void checkChunked(std::string_view in, const Limits& limits, uint8_t seed) {
  const BodyResult whole = runChunked(in, limits, nullptr);
  Splitter split{seed};
  const BodyResult pieces = runChunked(in, limits, &split);
  check(whole.status == pieces.status && whole.data == pieces.data && whole.error == pieces.error);
  // The end of a body (and the position of an error) does not depend on the split.
  if (whole.status == ChunkedDecoder::Status::kDone) check(whole.consumed == pieces.consumed);
}

void fuzzRequest(std::string_view input, const Limits& limits, uint8_t seed) {
  RequestParser p1(limits);
  RequestParser p2(limits);
  auto summarize = [](RequestParser* p) {
    return [p](std::string_view buf, HeadResult* r) {
      const RequestHead& h = p->head();
      r->head_length = p->headLength();
      check(r->head_length <= buf.size() && r->head_length <= p->limits().max_head_bytes);
      check(!h.method.empty() && !h.target.empty());
      checkHeaders(h.headers, buf);
      std::string s(h.method);
      s += ' ';
      s.append(h.target);
      s += static_cast<char>('0' + static_cast<int>(h.version));
      s += static_cast<char>('0' + static_cast<int>(h.form));
      s.append(h.authority);
      s += h.expect_continue ? 'e' : '-';
      s += h.connect ? 'c' : '-';
      s += h.upgrade_requested ? 'u' : '-';
      s.append(h.upgrade);
      for (const HeaderField& f : h.headers) appendField(&s, f);
      appendFraming(&s, h.framing);
      return s;
    };
  };
  HeadResult whole = runHead(
      input, nullptr, [&](std::string_view b) { return p1.parse(b); }, summarize(&p1));
  whole.error = p1.error();
  Splitter split{seed};
  HeadResult pieces = runHead(
      input, &split, [&](std::string_view b) { return p2.parse(b); }, summarize(&p2));
  pieces.error = p2.error();
  check(sameHead(whole, pieces));
  if (whole.status == ParseStatus::kError) {
    const uint16_t s = whole.error.status;
    check(s == 400 || s == 417 || s == 431 || s == 501 || s == 505);
    check(!whole.error.reason.empty());
  }
  if (whole.status == ParseStatus::kDone && p1.head().framing.body == BodyKind::kChunked) {
    checkChunked(input.substr(whole.head_length), limits, seed);
  }
}

void fuzzResponse(std::string_view input, const Limits& limits, uint8_t seed) {
  RequestContext ctx;
  ctx.head = seed & 0x10;
  ctx.connect = seed & 0x20;
  ctx.upgrade_requested = seed & 0x40;
  ResponseParser p1(limits);
  ResponseParser p2(limits);
  auto summarize = [](ResponseParser* p) {
    return [p](std::string_view buf, HeadResult* r) {
      const ResponseHead& h = p->head();
      r->head_length = p->headLength();
      check(r->head_length <= buf.size() && r->head_length <= p->limits().max_head_bytes);
      check(h.status >= 100 && h.status <= 599);
      checkHeaders(h.headers, buf);
      std::string s = std::to_string(h.status);
      s.append(h.reason);
      s += h.informational ? 'i' : '-';
      for (const HeaderField& f : h.headers) appendField(&s, f);
      appendFraming(&s, h.framing);
      return s;
    };
  };
  HeadResult whole = runHead(
      input, nullptr, [&](std::string_view b) { return p1.parse(b, ctx); }, summarize(&p1));
  whole.error = p1.error();
  Splitter split{seed};
  HeadResult pieces = runHead(
      input, &split, [&](std::string_view b) { return p2.parse(b, ctx); }, summarize(&p2));
  pieces.error = p2.error();
  check(sameHead(whole, pieces));
  if (whole.status == ParseStatus::kError) check(whole.error.status == 502);
}

}  // namespace
}  // namespace meshd::proxy::http1

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using meshd::proxy::http1::Limits;
  const uint8_t seed = data[0];
  Limits limits;
  if (seed & 0x80) {  // small limits, so every limit is reachable with short inputs
    limits.max_head_bytes = 64 + (seed & 0x0f) * 16;
    limits.max_headers = 1 + (seed & 0x07);
    limits.max_chunk_line_bytes = 8 + (seed & 0x0f);
    limits.max_chunk_extension_bytes = 16 + (seed & 0x0f);
  }
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  meshd::proxy::http1::fuzzRequest(rest, limits, seed);
  meshd::proxy::http1::fuzzResponse(rest, limits, seed);
  meshd::proxy::http1::checkChunked(rest, limits, seed);
  return 0;
}
