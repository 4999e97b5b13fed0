// gRPC over HTTP/2 helpers for the L7 proxy: the grpc-timeout header, content-type
// detection, HTTP status → grpc-status (gRPC's doc/http-grpc-status-mapping.md), and the
// trailers-only error responses meshd sends when it answers a gRPC call itself
// (UNAVAILABLE: no upstream, breaker overflow; DEADLINE_EXCEEDED: timeout). Wire format: gRPC's
// doc/PROTOCOL-HTTP2.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proxy/http2/types.h"

namespace meshd::proxy::http2::grpc {

// gRPC status codes (doc/statuscodes.md).
enum class Code : uint32_t {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "UNAVAILABLE" etc.; "UNKNOWN_CODE" outside 0..16.
const char* codeName(Code code);

// Parses a grpc-timeout value: 1 to 8 ASCII digits then one unit, H M S m u n (hours,
// minutes, seconds, milli-, micro-, nanoseconds), no spaces. Returns milliseconds,
// rounded up (a 1n deadline is 1 ms, not "no time at all"); "0m" is 0. InvalidArgument
// naming what is wrong otherwise.
absl::StatusOr<uint64_t> parseTimeoutMs(std::string_view value);

// True for "application/grpc" and its "+proto", "+json", ...; parameters (";...") are
// allowed; ASCII case-insensitive.
bool isGrpc(std::string_view content_type);

// The grpc-status a client sees when an HTTP response carries no grpc-status (e.g. a
// non-gRPC upstream or intermediary answered): 400 INTERNAL, 401 UNAUTHENTICATED, 403
// PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else
// UNKNOWN.
Code codeFromHttpStatus(uint16_t http_status);

// Appends grpc-message's percent-encoding of `message` (bytes outside 0x20..0x7e, and
// '%', become %XX with upper-case hex; UTF-8 passes as its bytes).
void percentEncodeMessage(std::string_view message, std::string* out);
// Decodes a grpc-message value. The gRPC spec says to keep a malformed %-sequence as it
// is rather than fail, so this always succeeds.
std::string percentDecodeMessage(std::string_view value);

// A trailers-only error response (":status 200" plus the fields below, END_STREAM on the
// one HEADERS frame): build it, then ServerSession::submitResponse(id, 200, fields(),
// true). Holds its own storage; reusing one object allocates nothing once warm.
class TrailersOnly {
 public:
  void build(Code code, std::string_view message);
  // content-type: application/grpc, grpc-status, and grpc-message when a message was
  // given. Views into this object, valid until the next build().
  absl::Span<const HeaderField> fields() const { return absl::MakeConstSpan(fields_, count_); }
  static constexpr uint16_t kHttpStatus = 200;

 private:
  std::string status_;
  std::string message_;
  HeaderField fields_[3];
  size_t count_ = 0;
};

}  // namespace meshd::proxy::http2::grpc
