// Incremental, zero-copy decoder of the chunked transfer coding (RFC 9112 §7.1).
//
// decode(in) consumes a prefix of `in` and stops at the first chunk data it finds,
// returning it as a view into `in` (no copy), at the end of the body, at an error, or
// when `in` is used up. The caller drops the consumed bytes and calls again with what
// follows (any split of the byte stream gives the same data and the same verdict).
// Bytes after kDone belong to the next message on the connection.
//
// Strictness: chunk-size is 1*HEXDIG, overflow-checked against 64 bits; the size line
// (extensions included) is bounded; chunk extensions must follow the grammar
// (BWS ";" BWS token [BWS "=" BWS (token / quoted-string)]) and their total size per body
// is bounded; every line ends in CRLF (bare CR or LF is an error); chunk data must be
// followed by CRLF; trailer fields follow the head rules and limits (token name, no
// whitespace before ':', no obs-fold, no controls in values). Trailers are validated
// and dropped: the proxy does not forward them (docs/design/0003-l7-proxy.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/http1/head_parser.h"

namespace meshd::proxy::http1 {

class ChunkedDecoder {
 public:
  enum class Status : uint8_t {
    kNeedMore,  // all of `in` consumed; feed more
    kData,      // `data` is chunk data (a view into `in`); `consumed` includes it
    kDone,      // last-chunk and trailer section consumed; `consumed` ends the body
    kError,     // error() says why (400, or 431 for an oversized trailer section)
  };
  struct Result {
    Status status = Status::kNeedMore;
    size_t consumed = 0;
    std::string_view data;
  };

  explicit ChunkedDecoder(const Limits& limits = Limits());

  Result decode(std::string_view in);
  const ParseError& error() const { return error_; }
  // Sum of chunk sizes seen so far.
  uint64_t bodyBytes() const { return body_bytes_; }
  // Ready for a new body.
  void reset();

  // The response-side variant: errors are reported as 502 (an upstream broke framing).
  void setErrorStatus(uint16_t bad, uint16_t too_large) {
    bad_status_ = bad;
    too_large_status_ = too_large;
  }

 private:
  enum class State : uint8_t {
    kSizeFirst,
    kSize,
    kSizeBws,       // BWS after the size, before ';'
    kExtNameStart,  // after ';' (BWS allowed)
    kExtName,
    kExtAfterName,  // BWS after a name, before '=' or ';'
    kExtValueStart,
    kExtValueToken,
    kExtQuoted,
    kExtQuotedPair,
    kExtAfterValue,  // BWS after a value, before ';'
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailerLineStart,
    kTrailerName,
    kTrailerValue,
    kTrailerLf,
    kTrailerEndLf,
    kDone,
    kError,
  };

  Result fail(size_t consumed, uint16_t status, std::string_view reason);

  Limits limits_;
  State state_ = State::kSizeFirst;
  uint64_t size_ = 0;
  uint64_t remaining_ = 0;
  uint64_t body_bytes_ = 0;
  size_t size_digits_ = 0;  // significant hex digits
  size_t line_bytes_ = 0;
  size_t extension_bytes_ = 0;
  size_t trailer_bytes_ = 0;
  size_t trailer_fields_ = 0;
  uint16_t bad_status_ = 400;
  uint16_t too_large_status_ = 431;
  ParseError error_;
};

}  // namespace meshd::proxy::http1
