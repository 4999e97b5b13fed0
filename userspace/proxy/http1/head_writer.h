// Writes the heads the proxy forwards, from what the parsers decided (head_parser.h).
//
// The framing a proxy forwards must be the one it parsed, never the bytes it received:
// Content-Length is written from the parsed number ("005" goes out as "5"), the chunked
// coding as "Transfer-Encoding: chunked", and hop-by-hop fields (Connection and the
// fields it names, Keep-Alive, TE, Transfer-Encoding, Upgrade, Proxy-Connection) are
// dropped. Host is written once, from the request's authority. Upstream requests always
// go out as HTTP/1.1 in origin-form (an absolute-form target is reduced to its path and
// query; CONNECT and OPTIONS * keep their forms).
//
// Writers append to a caller-owned std::string: with enough capacity reserved (one
// buffer per connection, reused), writing allocates nothing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/types/span.h"
#include "proxy/http1/head_parser.h"

namespace meshd::proxy::http1 {

// Fields the proxy adds (x-request-id, traceparent, ...): written after the forwarded
// ones. Names and values must already be valid field-name / field-value text.
struct ExtraField {
  std::string_view name;
  std::string_view value;
};

struct RequestWriteOptions {
  // The proxy's upstream connection goes back to its pool after the response: no
  // Connection header (HTTP/1.1 default). False writes "Connection: close".
  bool upstream_keep_alive = true;
  absl::Span<const ExtraField> extra;
};

// Appends the request head to forward upstream (request-line, fields, CRLF).
void writeRequestHead(const RequestHead& head, const RequestWriteOptions& options,
                      std::string* out);

struct ResponseWriteOptions {
  // The downstream connection stays open after this response. False writes
  // "Connection: close" (and a close-delimited body is always followed by a close).
  bool keep_alive = true;
  absl::Span<const ExtraField> extra;
};

// Appends the response head to send downstream. A 101 keeps "Connection: upgrade" and
// the Upgrade field; a close-delimited body is sent close-delimited.
void writeResponseHead(const ResponseHead& head, const ResponseWriteOptions& options,
                       std::string* out);

// The chunk-size line of one chunk of `size` bytes (> 0), and the last chunk with an
// empty trailer section (trailers are not forwarded).
void writeChunkHeader(uint64_t size, std::string* out);
void writeLastChunk(std::string* out);

}  // namespace meshd::proxy::http1
