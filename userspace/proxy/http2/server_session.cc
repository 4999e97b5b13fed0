#include "proxy/http2/server_session.h"

#include <nghttp2/nghttp2.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "proxy/http2/stream.h"

namespace meshd::proxy::http2 {

using detail::Stream;

absl::StatusOr<std::unique_ptr<ServerSession>> ServerSession::create(ServerHandler& handler,
                                                                     const Limits& limits,
                                                                     const Clock& clock) {
  if (absl::Status s = validate(limits); !s.ok()) return s;
  std::unique_ptr<ServerSession> session(new ServerSession(handler, limits, clock));
  if (absl::Status s = session->init(/*server=*/true); !s.ok()) return s;
  return session;
}

ServerSession::ServerSession(ServerHandler& handler, const Limits& limits, const Clock& clock)
    : SessionBase(limits, clock), handler_(handler) {}

void ServerSession::deliverHead(Stream& st, bool end_stream) {
  st.head_delivered = true;
  if (st.head.too_large) {
    // RFC 9113 §8.2: over SETTINGS_MAX_HEADER_LIST_SIZE the server may answer 431; the
    // request never reaches the handler. Its body (if any) is dropped as it arrives.
    st.refused = true;
    static constexpr HeaderField kNoFields[1] = {};
    (void)submitResponse(st.id, 431, absl::MakeConstSpan(kNoFields, 0), true);
    return;
  }
  RequestHeaders req;
  req.method = st.head.pseudoValue(detail::kMethod);
  req.scheme = st.head.pseudoValue(detail::kScheme);
  req.authority = st.head.pseudoValue(detail::kAuthority);
  req.path = st.head.pseudoValue(detail::kPath);
  req.headers = st.head.views;
  if (req.authority.empty()) {
    for (const HeaderField& f : st.head.views) {
      if (f.name == "host") {
        req.authority = f.value;
        break;
      }
    }
  }
  st.notify_close = true;
  handler_.onRequest(st.id, req, end_stream);
}

void ServerSession::deliverData(int32_t stream_id, absl::Span<const uint8_t> data,
                                bool end_stream) {
  handler_.onData(stream_id, data, end_stream);
}

void ServerSession::deliverTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers) {
  handler_.onTrailers(stream_id, trailers);
}

void ServerSession::deliverClosed(int32_t stream_id, uint32_t error_code) {
  handler_.onStreamClosed(stream_id, error_code);
}

void ServerSession::deliverSendReady(int32_t stream_id) { handler_.onSendReady(stream_id); }

void ServerSession::onPeerReset(Stream& st) {
  if (st.answered) return;
  // A reset of a request we have not answered: the CVE-2023-44487 pattern when it is
  // repeated. Counted per fixed window of the clock.
  uint64_t now = clock_.nowMs();
  if (now - window_start_ms_ >= limits_.premature_reset_window_ms) {
    window_start_ms_ = now;
    premature_resets_ = 0;
  }
  if (++premature_resets_ >= limits_.max_premature_resets) {
    fail(kEnhanceYourCalm,
         absl::ResourceExhaustedError(absl::StrCat(
             "http2: connection error ENHANCE_YOUR_CALM: the client reset ", premature_resets_,
             " streams before they were answered within ", limits_.premature_reset_window_ms,
             " ms (rapid reset, CVE-2023-44487; limit max_premature_resets=",
             limits_.max_premature_resets, ")")));
  }
}

absl::Status ServerSession::submitResponse(int32_t stream_id, uint16_t status,
                                           absl::Span<const HeaderField> headers, bool end_stream) {
  if (status < 200 || status > 599) {
    return absl::InvalidArgumentError(
        absl::StrCat("http2: submitResponse: status ", status, " outside 200..599"));
  }
  Stream* st = findStream(stream_id);
  if (st == nullptr || st->answered) {
    return absl::FailedPreconditionError(
        absl::StrCat("http2: submitResponse on stream ", stream_id,
                     st == nullptr ? ": not open" : ": already answered"));
  }
  char status_text[3] = {static_cast<char>('0' + status / 100),
                         static_cast<char>('0' + status / 10 % 10),
                         static_cast<char>('0' + status % 10)};
  std::pair<std::string_view, std::string_view> pseudo[1] = {
      {":status", std::string_view(status_text, 3)}};
  buildNv(pseudo, headers, /*allow_te=*/false);
  st->answered = true;
  int32_t rv = submitHead(*st, /*request=*/false, end_stream);
  if (rv < 0) {
    st->answered = false;
    st->has_body = false;
    return absl::InternalError(
        absl::StrCat("http2: submitResponse on stream ", stream_id, ": ", nghttp2_strerror(rv)));
  }
  return absl::OkStatus();
}

}  // namespace meshd::proxy::http2
