#include "proxy/http2/client_session.h"

#include <nghttp2/nghttp2.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "proxy/http2/stream.h"

namespace meshd::proxy::http2 {

using detail::Stream;

absl::StatusOr<std::unique_ptr<ClientSession>> ClientSession::create(ClientHandler& handler,
                                                                     const Limits& limits,
                                                                     const Clock& clock) {
  if (absl::Status s = validate(limits); !s.ok()) return s;
  std::unique_ptr<ClientSession> session(new ClientSession(handler, limits, clock));
  if (absl::Status s = session->init(/*server=*/false); !s.ok()) return s;
  return session;
}

ClientSession::ClientSession(ClientHandler& handler, const Limits& limits, const Clock& clock)
    : SessionBase(limits, clock), handler_(handler) {}

uint32_t ClientSession::peerMaxConcurrentStreams() const {
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

bool ClientSession::canOpenStream() const {
  if (failed() || goawayReceived() || shouldClose()) return false;
  uint32_t peer =
      nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  if (open_ >= limits_.max_concurrent_streams || open_ >= peer) return false;
  return nghttp2_session_get_next_stream_id(session_) <= (1u << 31) - 1;
}

absl::StatusOr<int32_t> ClientSession::submitRequest(const RequestHeaders& request,
                                                     bool end_stream) {
  if (!canOpenStream()) {
    return absl::UnavailableError(
        "http2: submitRequest: this upstream connection takes no new stream now (concurrent "
        "stream limit reached, GOAWAY, or connection error): use another connection");
  }
  bool connect = request.method == "CONNECT";
  if (request.method.empty() || request.authority.empty() ||
      (!connect && (request.scheme.empty() || request.path.empty()))) {
    return absl::InvalidArgumentError(
        "http2: submitRequest: :method and :authority are required, and :scheme and :path "
        "except for CONNECT");
  }
  std::pair<std::string_view, std::string_view> pseudo[4];
  size_t n = 0;
  pseudo[n++] = {":method", request.method};
  if (!connect) pseudo[n++] = {":scheme", request.scheme};
  pseudo[n++] = {":authority", request.authority};
  if (!connect) pseudo[n++] = {":path", request.path};
  buildNv(absl::MakeConstSpan(pseudo, n), request.headers, /*allow_te=*/true);
  Stream* st = acquireStream();
  int32_t id = submitHead(*st, /*request=*/true, end_stream);
  if (id < 0) {
    releaseStream(st);
    return absl::InternalError(absl::StrCat("http2: submitRequest: ", nghttp2_strerror(id)));
  }
  st->id = id;
  st->notify_close = true;
  addUnsent(st);
  ++open_;
  return id;
}

void ClientSession::deliverHead(Stream& st, bool end_stream) {
  if (st.head.too_large) {
    // The upstream's response head is over our limit: the handler learns it from
    // onStreamClosed(kInternalError) and answers 502.
    st.refused = true;
    st.head_delivered = true;
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, st.id, kInternalError);
    return;
  }
  std::string_view status_text = st.head.pseudoValue(detail::kStatus);
  uint16_t status = 0;
  for (char c : status_text) status = static_cast<uint16_t>(status * 10 + (c - '0'));
  if (status < 200) {
    st.head.clear();  // interim (1xx): wait for the final head
    return;
  }
  st.head_delivered = true;
  handler_.onResponse(st.id, status, st.head.views, end_stream);
}

void ClientSession::deliverData(int32_t stream_id, absl::Span<const uint8_t> data,
                                bool end_stream) {
  handler_.onData(stream_id, data, end_stream);
}

void ClientSession::deliverTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers) {
  handler_.onTrailers(stream_id, trailers);
}

void ClientSession::deliverClosed(int32_t stream_id, uint32_t error_code) {
  --open_;
  handler_.onStreamClosed(stream_id, error_code);
}

void ClientSession::deliverSendReady(int32_t stream_id) { handler_.onSendReady(stream_id); }

void ClientSession::deliverGoaway(int32_t last_stream_id) { handler_.onGoaway(last_stream_id); }

}  // namespace meshd::proxy::http2
