// ClientSession: one HTTP/2 connection to an upstream (one per pooled connection),
// sans-I/O, the mirror of ServerSession (see session_base.h for feed/produce, flow
// control and errors).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proxy/http2/server_session.h"
#include "proxy/http2/session_base.h"
#include "proxy/http2/types.h"

namespace meshd::proxy::http2 {

// Events of a client session, called from inside feed() (onSendReady from produce()).
class ClientHandler {
 public:
  virtual ~ClientHandler() = default;
  // The final response head (1xx heads are skipped). `headers` stay valid until
  // onStreamClosed() for the stream.
  virtual void onResponse(int32_t stream_id, uint16_t status, absl::Span<const HeaderField> headers,
                          bool end_stream) = 0;
  // Response body bytes (consume() them once passed on); the end as in ServerHandler.
  virtual void onData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream) = 0;
  // The response's trailer section (e.g. grpc-status), which ends it. Views valid during
  // the call only.
  virtual void onTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers) = 0;
  // Called once for every stream submitRequest() opened: error_code 0 when it completed,
  // else the RST_STREAM code (REFUSED_STREAM: the upstream did not process it, safe to
  // retry) or, for streams a GOAWAY cut off, that GOAWAY's code.
  virtual void onStreamClosed(int32_t stream_id, uint32_t error_code) = 0;
  // The upstream sent GOAWAY: streams above `last_stream_id` were not processed (they
  // close with REFUSED_STREAM); open no new stream on this connection.
  virtual void onGoaway(int32_t last_stream_id) = 0;
  virtual void onSendReady(int32_t stream_id) { (void)stream_id; }
};

class ClientSession final : public detail::SessionBase {
 public:
  // Queues the client preface and our SETTINGS. As ServerSession::create().
  static absl::StatusOr<std::unique_ptr<ClientSession>> create(ClientHandler& handler,
                                                               const Limits& limits = Limits(),
                                                               const Clock& clock = steadyClock());

  // True when a new stream may be opened now: no GOAWAY either way, no connection error,
  // fewer streams open than both our Limits::max_concurrent_streams and the upstream's
  // SETTINGS_MAX_CONCURRENT_STREAMS, stream ids not exhausted.
  bool canOpenStream() const;
  // The upstream's SETTINGS_MAX_CONCURRENT_STREAMS (0xffffffff, "unlimited", until its
  // SETTINGS arrived or when it sent none).
  uint32_t peerMaxConcurrentStreams() const;

  // Opens a stream with `request` (method, scheme, authority and path are required except
  // for CONNECT, which has no scheme and path). Hop-by-hop fields and `host` are dropped,
  // `te` is kept only as "trailers", names are lower-cased. Returns the stream id;
  // Unavailable when !canOpenStream() (use another connection), InvalidArgument for a
  // request missing a pseudo-header.
  absl::StatusOr<int32_t> submitRequest(const RequestHeaders& request, bool end_stream);

 private:
  ClientSession(ClientHandler& handler, const Limits& limits, const Clock& clock);
  void deliverHead(detail::Stream& stream, bool end_stream) override;
  void deliverData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream) override;
  void deliverTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers) override;
  void deliverClosed(int32_t stream_id, uint32_t error_code) override;
  void deliverSendReady(int32_t stream_id) override;
  void deliverGoaway(int32_t last_stream_id) override;

  ClientHandler& handler_;
  size_t open_ = 0;  // streams we opened and that are not closed yet
};

}  // namespace meshd::proxy::http2
