// Types shared by the HTTP/2 codec of the L7 proxy (docs/design/0003-l7-proxy.md,
// "HTTP/2 codec (as built)"): limits, error codes, the clock the rapid-reset window is
// measured with, and the connection-preface check the core uses for protocol detection.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"
#include "proxy/http1/head_parser.h"

namespace meshd::proxy::http2 {

// Header fields are the HTTP/1.1 codec's views, so one router matches both protocols.
// In HTTP/2 `hop_by_hop` is only ever set on `te` (nghttp2 refuses every other
// connection-specific field, RFC 9113 §8.2.2).
using HeaderField = http1::HeaderField;

// HTTP/2 error codes (RFC 9113 §7), as carried by RST_STREAM and GOAWAY.
enum ErrorCode : uint32_t {
  kNoError = 0x0,
  kProtocolError = 0x1,
  kInternalError = 0x2,
  kFlowControlError = 0x3,
  kSettingsTimeout = 0x4,
  kStreamClosed = 0x5,
  kFrameSizeError = 0x6,
  kRefusedStream = 0x7,
  kCancel = 0x8,
  kCompressionError = 0x9,
  kConnectError = 0xa,
  kEnhanceYourCalm = 0xb,
  kInadequateSecurity = 0xc,
  kHttp11Required = 0xd,
};

// Per-connection limits. Defaults are chosen for a sidecar-less mesh proxy that must stay
// bounded per connection; where Envoy has an equivalent its default is named.
struct Limits {
  // SETTINGS_MAX_CONCURRENT_STREAMS we announce (server) / the most streams we open
  // (client, also capped by the peer's setting). Envoy's default is 2^31-1 (unbounded);
  // nginx's is 128. 100 is RFC 9113 §6.5.2's recommended minimum and bounds the
  // per-connection stream state.
  uint32_t max_concurrent_streams = 100;
  // Received header list size (RFC 9113 §6.5.2: name + value + 32 per field), announced
  // as SETTINGS_MAX_HEADER_LIST_SIZE. Over it the request is answered 431 (server) or
  // the stream reset (client); decoding continues so the HPACK state stays in sync.
  // Envoy's max_request_headers_kb default is 60; HTTP/1.1 uses 60 KiB too.
  uint32_t max_header_list_size = 64 * 1024;
  // Fields in one header or trailer section (Envoy's max_request_headers_count: 100).
  uint32_t max_headers = 100;
  // Receive windows. Bytes are only re-opened when the caller consume()s them, so these
  // bound what a fast peer can push into the proxy ahead of a slow other side: 256 KiB per
  // stream, 1 MiB per connection (Envoy: 256 MiB and 1 MiB; its stream window relies on
  // its own buffer watermarks, ours is the watermark).
  uint32_t initial_stream_window = 256 * 1024;
  uint32_t initial_connection_window = 1024 * 1024;
  // Largest frame payload we accept (SETTINGS_MAX_FRAME_SIZE; RFC minimum and default).
  uint32_t max_frame_size = 16384;
  // HPACK dynamic table we let the peer use (SETTINGS_HEADER_TABLE_SIZE; RFC default).
  uint32_t header_table_size = 4096;
  // CONTINUATION frames after one HEADERS frame (nghttp2 option; its default is 8): with
  // max_frame_size this bounds a header block's wire size (CVE-2024-27316 family).
  uint32_t max_continuations = 8;
  // Queued SETTINGS ACK and PING ACK frames (nghttp2 option, default 1000; Envoy's
  // max_outbound_control_frames is 1000): a peer that floods PING/SETTINGS without
  // reading our output is a connection error.
  uint32_t max_outbound_ack = 1000;
  // Entries in one SETTINGS frame (nghttp2 option, default 32).
  uint32_t max_settings = 32;
  // nghttp2's own RST_STREAM token bucket (server; defaults 1000 burst, 33/s refill).
  uint32_t stream_reset_burst = 1000;
  uint32_t stream_reset_rate = 33;
  // Ours (CVE-2023-44487, as Envoy's and nginx's fixes): RST_STREAMs from the client on
  // requests we have not answered yet. Reaching `max_premature_resets` within one window
  // of `premature_reset_window_ms` is GOAWAY ENHANCE_YOUR_CALM. 200 lets a client cancel
  // a full set of max_concurrent_streams twice per window, which a legitimate client
  // (gRPC deadlines, hedging) stays below; the attack runs thousands per second.
  uint32_t max_premature_resets = 200;
  uint64_t premature_reset_window_ms = 10'000;
  // Bytes submitData() queues per stream before it accepts only part of the data (the
  // rest waits for ServerHandler/ClientHandler::onSendReady()).
  uint32_t max_stream_send_buffer = 64 * 1024;
};

// The time source of the premature-reset window, in milliseconds of a monotonic clock.
// Tests pass a fake one.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual uint64_t nowMs() const = 0;
};
// The process's steady clock (a static instance; never null).
const Clock& steadyClock();

// The client connection preface's first 24 bytes (RFC 9113 §3.4).
inline constexpr char kClientPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
inline constexpr size_t kClientPrefaceSize = sizeof(kClientPreface) - 1;

enum class PrefaceMatch : uint8_t {
  kComplete,  // the input starts with the full preface
  kPartial,   // the input is a (possibly empty) proper prefix of it: read more
  kMismatch,  // not prior-knowledge HTTP/2
};
// Classifies the first bytes a client sent, for the core's protocol detection.
PrefaceMatch matchPreface(absl::Span<const uint8_t> data);
// True when `data` is the preface or could still become it (kComplete or kPartial).
inline bool looksLikeH2Preface(absl::Span<const uint8_t> data) {
  return matchPreface(data) != PrefaceMatch::kMismatch;
}

// The RFC 9113 name of an error code ("ENHANCE_YOUR_CALM"), or "UNKNOWN".
const char* errorCodeName(uint32_t code);

}  // namespace meshd::proxy::http2
