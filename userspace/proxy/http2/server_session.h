// ServerSession: the application-facing end of an HTTP/2 connection (h2c with prior
// knowledge now, ALPN "h2" under TLS later), sans-I/O. See session_base.h for the
// feed/produce model, flow control and errors, and docs/design/0003-l7-proxy.md
// ("HTTP/2 codec (as built)") for the protections.
//
//   core                          ServerSession                      client
//   read(fd) ──bytes──▶ feed() ──▶ ServerHandler::onRequest/onData/...
//   router   ──────────▶ submitResponse/submitData/submitTrailers
//   write(fd) ◀─bytes── produce()
//
// The client's connection preface is expected as the first bytes fed (the core's
// detection, matchPreface(), has only peeked at them).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proxy/http2/session_base.h"
#include "proxy/http2/types.h"

namespace meshd::proxy::http2 {

// A request head. All views point into the stream's storage and stay valid until
// onStreamClosed() for that stream.
struct RequestHeaders {
  std::string_view method;
  std::string_view scheme;     // empty for CONNECT
  std::string_view authority;  // :authority, or Host when the client sent no :authority
  std::string_view path;       // empty for CONNECT
  // The regular fields in the order received (names lower-case; `cookie` may appear
  // several times, RFC 9113 §8.2.3). Only `te` is marked hop_by_hop.
  absl::Span<const HeaderField> headers;
};

// Events of a server session. Called from inside feed() (and onSendReady from
// produce()). A handler may call the session's submit methods from inside a callback.
class ServerHandler {
 public:
  virtual ~ServerHandler() = default;
  // A request head arrived; `end_stream`: it has no body. Not called for requests we
  // refused ourselves (431, nghttp2's checks).
  virtual void onRequest(int32_t stream_id, const RequestHeaders& request, bool end_stream) = 0;
  // Body bytes (call consume() once they are passed on). The end of the body comes as
  // end_stream on onRequest, as an onData with end_stream (and possibly no bytes), or as
  // onTrailers.
  virtual void onData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream) = 0;
  // The request's trailer section, which ends it. Views valid during the call only.
  virtual void onTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers) = 0;
  // The stream is gone (error_code 0: completed both ways; otherwise the RST_STREAM or
  // GOAWAY code). Called once for every stream onRequest() was called for.
  virtual void onStreamClosed(int32_t stream_id, uint32_t error_code) = 0;
  // The stream's send queue, once full, has drained: submitData() takes bytes again.
  virtual void onSendReady(int32_t stream_id) { (void)stream_id; }
};

class ServerSession final : public detail::SessionBase {
 public:
  // The session queues our SETTINGS at once (produce() has output before any input).
  // `handler` and `clock` must outlive the session. InvalidArgument for limits outside
  // what HTTP/2 allows (windows over 2^31-1, frame size outside 16384..16777215).
  static absl::StatusOr<std::unique_ptr<ServerSession>> create(ServerHandler& handler,
                                                               const Limits& limits = Limits(),
                                                               const Clock& clock = steadyClock());

  // Submits the final response head, `status` 200..599 (no 1xx: the proxy does not relay
  // interim responses yet; HTTP/2 has no 101). Hop-by-hop fields and `te` are dropped
  // and names lower-cased. With !end_stream, send the body with submitData() and end it
  // there or with submitTrailers(). FailedPrecondition when the stream is not open or
  // already answered; InvalidArgument for a bad status.
  absl::Status submitResponse(int32_t stream_id, uint16_t status,
                              absl::Span<const HeaderField> headers, bool end_stream);

  // Premature resets counted in the current window (see Limits::max_premature_resets).
  uint32_t prematureResets() const { return premature_resets_; }

 private:
  ServerSession(ServerHandler& handler, const Limits& limits, const Clock& clock);
  void deliverHead(detail::Stream& stream, bool end_stream) override;
  void deliverData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream) override;
  void deliverTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers) override;
  void deliverClosed(int32_t stream_id, uint32_t error_code) override;
  void deliverSendReady(int32_t stream_id) override;
  void onPeerReset(detail::Stream& stream) override;

  ServerHandler& handler_;
  uint32_t premature_resets_ = 0;
  uint64_t window_start_ms_ = 0;
};

}  // namespace meshd::proxy::http2
