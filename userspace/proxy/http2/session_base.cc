#include "proxy/http2/session_base.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "proxy/http2/stream.h"

namespace meshd::proxy::http2::detail {
namespace {

constexpr uint32_t kMaxWindow = (1u << 31) - 1;

bool equalsLower(std::string_view a, std::string_view lower) {
  return absl::EqualsIgnoreCase(absl::string_view(a.data(), a.size()),
                                absl::string_view(lower.data(), lower.size()));
}

// Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2), and `host` (the
// :authority carries it).
bool dropField(const HeaderField& f, bool allow_te) {
  std::string_view n = f.name;
  if (n.empty() || n[0] == ':') return true;
  if (equalsLower(n, "te")) return !(allow_te && equalsLower(f.value, "trailers"));
  if (f.hop_by_hop) return true;
  return equalsLower(n, "connection") || equalsLower(n, "keep-alive") ||
         equalsLower(n, "proxy-connection") || equalsLower(n, "transfer-encoding") ||
         equalsLower(n, "upgrade") || equalsLower(n, "host");
}

int pseudoIndex(std::string_view name) {
  if (name == ":method") return kMethod;
  if (name == ":scheme") return kScheme;
  if (name == ":authority") return kAuthority;
  if (name == ":path") return kPath;
  if (name == ":status") return kStatus;
  if (name == ":protocol") return kProtocol;
  return -1;
}

nghttp2_nv makeNv(std::string_view name, std::string_view value) {
  nghttp2_nv nv;
  nv.name = reinterpret_cast<uint8_t*>(const_cast<char*>(name.data()));
  nv.namelen = name.size();
  nv.value = reinterpret_cast<uint8_t*>(const_cast<char*>(value.data()));
  nv.valuelen = value.size();
  nv.flags = NGHTTP2_NV_FLAG_NONE;  // nghttp2 copies names and values
  return nv;
}

}  // namespace

struct SessionBase::NvScratch {
  std::vector<nghttp2_nv> nv;
  std::string bytes;
};

void HeaderBlock::materialize() {
  views.clear();
  for (const Field& f : fields) {
    std::string_view name = view(f.name);
    views.push_back(HeaderField{name, view(f.value), name == "te"});
  }
}

// The nghttp2 callbacks: each forwards to the SessionBase passed as user_data.
struct Callbacks {
  static SessionBase& self(void* user_data) { return *static_cast<SessionBase*>(user_data); }

  static int onBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    SessionBase& s = self(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS || s.failed()) return 0;
    int32_t id = frame->hd.stream_id;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      Stream* st = s.acquireStream();
      st->id = id;
      nghttp2_session_set_stream_user_data(session, id, st);
      return 0;
    }
    Stream* st = s.findStream(id);
    if (st == nullptr) return 0;
    if (st->head_delivered) {
      st->in_trailers = true;
      st->trailers.clear();
    } else {
      st->head.clear();  // a final response after 1xx
    }
    return 0;
  }

  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                      void* user_data) {
    SessionBase& s = self(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS || s.failed()) return 0;
    Stream* st = s.findStream(frame->hd.stream_id);
    if (st == nullptr) return 0;
    HeaderBlock& b = st->in_trailers ? st->trailers : st->head;
    if (b.too_large) return 0;  // keep decoding (HPACK state), keep nothing
    b.list_size += namelen + valuelen + 32;
    if (b.list_size > s.limits_.max_header_list_size) {
      b.too_large = true;
      return 0;
    }
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    auto append = [&b](std::string_view bytes) {
      HeaderBlock::Span span{static_cast<uint32_t>(b.arena.size()),
                             static_cast<uint32_t>(bytes.size())};
      b.arena.append(bytes);
      return span;
    };
    if (!n.empty() && n[0] == ':') {
      int p = pseudoIndex(n);
      if (p < 0) return 0;  // nghttp2 already refused unknown pseudo-headers
      b.pseudo[p] = append(v);
      b.has_pseudo[p] = true;
      return 0;
    }
    if (b.fields.size() >= s.limits_.max_headers) {
      b.too_large = true;
      return 0;
    }
    HeaderBlock::Field f;
    f.name = append(n);
    f.value = append(v);
    b.fields.push_back(f);
    return 0;
  }

  // Fields nghttp2 would silently drop (characters outside the RFC 9113 §8.2.1 field-name
  // grammar): reset the stream instead, a proxy must not pass on a different message.
  static int onInvalidHeader(nghttp2_session*, const nghttp2_frame*, const uint8_t* name,
                             size_t namelen, const uint8_t*, size_t, uint8_t, void* user_data) {
    self(user_data).last_error_ = absl::StrCat(
        "invalid header field name '",
        absl::CEscape(absl::string_view(reinterpret_cast<const char*>(name), namelen)), "'");
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }

  static int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    SessionBase& s = self(user_data);
    int32_t id = frame->hd.stream_id;
    switch (frame->hd.type) {
      case NGHTTP2_DATA: {
        if (s.failed() || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
        Stream* st = s.findStream(id);
        if (st != nullptr && st->head_delivered && !st->refused) s.deliverData(id, {}, true);
        return 0;
      }
      case NGHTTP2_HEADERS: {
        if (s.failed()) return 0;
        Stream* st = s.findStream(id);
        if (st == nullptr) return 0;
        bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
        if (st->in_trailers) {
          st->in_trailers = false;
          if (st->refused) return 0;
          if (st->trailers.too_large) {
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, kInternalError);
            return 0;
          }
          st->trailers.materialize();
          s.deliverTrailers(id, st->trailers.views);
          st->trailers.clear();
          return 0;
        }
        if (!st->head.too_large) st->head.materialize();
        s.deliverHead(*st, end_stream);
        return 0;
      }
      case NGHTTP2_RST_STREAM: {
        Stream* st = s.findStream(id);
        if (st != nullptr && !s.failed()) s.onPeerReset(*st);
        return 0;
      }
      case NGHTTP2_GOAWAY:
        s.goaway_received_ = true;
        if (!s.failed()) s.deliverGoaway(frame->goaway.last_stream_id);
        return 0;
      default:
        return 0;
    }
  }

  static int onDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user_data) {
    SessionBase& s = self(user_data);
    Stream* st = s.findStream(stream_id);
    if (st == nullptr || st->refused || !st->head_delivered || s.failed()) {
      // Nobody will pass these on: give the window back at once.
      nghttp2_session_consume(session, stream_id, len);
      return 0;
    }
    st->unconsumed += len;
    s.deliverData(stream_id, absl::MakeConstSpan(data, len), false);
    return 0;
  }

  static int onStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    SessionBase& s = self(user_data);
    Stream* st = s.findStream(stream_id);
    if (st == nullptr) return 0;
    if (st->unconsumed > 0) nghttp2_session_consume_connection(session, st->unconsumed);
    st->unconsumed = 0;
    if (st->notify_close) s.deliverClosed(stream_id, error_code);
    nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
    s.removeUnsent(stream_id);
    s.releaseStream(st);
    return 0;
  }

  static int onFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    SessionBase& s = self(user_data);
    if (frame->hd.type == NGHTTP2_HEADERS) s.removeUnsent(frame->hd.stream_id);
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != 0) {
      if (s.error_code_ == 0) s.error_code_ = frame->goaway.error_code;
      if (!s.failed() && !s.local_goaway_) {
        // A connection error nghttp2 found itself (its protocol checks, its floods).
        std::string_view debug(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                               frame->goaway.opaque_data_len);
        std::string_view why = !debug.empty()           ? debug
                               : !s.last_error_.empty() ? std::string_view(s.last_error_)
                                                        : std::string_view("protocol error");
        std::string message =
            absl::StrCat("http2: connection error ", errorCodeName(frame->goaway.error_code), ": ",
                         absl::string_view(why.data(), why.size()));
        s.failure_ = frame->goaway.error_code == kEnhanceYourCalm
                         ? absl::ResourceExhaustedError(message)
                         : absl::InvalidArgumentError(message);
      }
    }
    return 0;
  }

  // A HEADERS frame that could not be sent: for a request, the stream never existed.
  static int onFrameNotSend(nghttp2_session*, const nghttp2_frame* frame, int, void* user_data) {
    SessionBase& s = self(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Stream* st = s.removeUnsent(frame->hd.stream_id);
    if (st == nullptr) return 0;
    if (st->notify_close) s.deliverClosed(st->id, kRefusedStream);
    s.releaseStream(st);
    return 0;
  }

  static int onError(nghttp2_session*, int, const char* msg, size_t len, void* user_data) {
    self(user_data).last_error_.assign(msg, len);
    return 0;
  }

  static int onInvalidFrame(nghttp2_session*, const nghttp2_frame* frame, int lib_error_code,
                            void* user_data) {
    SessionBase& s = self(user_data);
    s.last_error_ = absl::StrCat("invalid frame (type ", frame->hd.type, ", stream ",
                                 frame->hd.stream_id, "): ", nghttp2_strerror(lib_error_code));
    return 0;
  }

  static ssize_t readBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* user_data) {
    SessionBase& s = self(user_data);
    Stream* st = static_cast<Stream*>(source->ptr);
    size_t n = std::min(length, st->queued());
    if (n > 0) std::memcpy(buf, st->send_buf.data() + st->send_off, n);
    st->send_off += n;
    if (st->queued() == 0) {
      st->send_buf.clear();  // keeps the capacity
      st->send_off = 0;
    }
    if (st->want_ready && st->queued() <= s.limits_.max_stream_send_buffer / 2) {
      st->want_ready = false;
      s.ready_.push_back(stream_id);
    }
    if (st->queued() == 0) {
      if (st->send_end) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->send_trailers) {
          *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          std::vector<nghttp2_nv>& nv = s.nv_->nv;
          nv.clear();
          size_t off = 0;
          for (auto [nlen, vlen] : st->out_trailer_lens) {
            std::string_view all = st->out_trailer_bytes;
            nv.push_back(makeNv(all.substr(off, nlen), all.substr(off + nlen, vlen)));
            off += nlen + vlen;
          }
          if (nghttp2_submit_trailer(session, stream_id, nv.data(), nv.size()) != 0) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
          }
        }
      } else if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  }
};

SessionBase::SessionBase(const Limits& limits, const Clock& clock)
    : limits_(limits), clock_(clock), nv_(std::make_unique<NvScratch>()) {}

SessionBase::~SessionBase() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

absl::Status SessionBase::validate(const Limits& l) {
  if (l.max_concurrent_streams == 0) {
    return absl::InvalidArgumentError("http2 limits: max_concurrent_streams must be > 0");
  }
  if (l.initial_stream_window == 0 || l.initial_stream_window > kMaxWindow) {
    return absl::InvalidArgumentError(absl::StrCat("http2 limits: initial_stream_window ",
                                                   l.initial_stream_window,
                                                   " outside 1..2147483647 (RFC 9113 §6.9.2)"));
  }
  if (l.initial_connection_window < 65535 || l.initial_connection_window > kMaxWindow) {
    return absl::InvalidArgumentError(absl::StrCat("http2 limits: initial_connection_window ",
                                                   l.initial_connection_window,
                                                   " outside 65535..2147483647"));
  }
  if (l.max_frame_size < 16384 || l.max_frame_size > 16777215) {
    return absl::InvalidArgumentError(absl::StrCat("http2 limits: max_frame_size ",
                                                   l.max_frame_size,
                                                   " outside 16384..16777215 (RFC 9113 §6.5.2)"));
  }
  if (l.max_header_list_size == 0 || l.max_headers == 0 || l.max_stream_send_buffer == 0 ||
      l.max_premature_resets == 0 || l.max_outbound_ack == 0 || l.max_settings == 0) {
    return absl::InvalidArgumentError(
        "http2 limits: max_header_list_size, max_headers, max_stream_send_buffer, "
        "max_premature_resets, max_outbound_ack and max_settings must be > 0");
  }
  return absl::OkStatus();
}

absl::Status SessionBase::init(bool server) {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) {
    return absl::ResourceExhaustedError("http2: out of memory creating nghttp2 callbacks");
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, &Callbacks::onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, &Callbacks::onHeader);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cb, &Callbacks::onInvalidHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &Callbacks::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &Callbacks::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, &Callbacks::onStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, &Callbacks::onFrameSend);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, &Callbacks::onFrameNotSend);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, &Callbacks::onInvalidFrame);
  nghttp2_session_callbacks_set_error_callback2(cb, &Callbacks::onError);

  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cb);
    return absl::ResourceExhaustedError("http2: out of memory creating nghttp2 options");
  }
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_outbound_ack(opt, limits_.max_outbound_ack);
  nghttp2_option_set_max_settings(opt, limits_.max_settings);
  nghttp2_option_set_max_continuations(opt, limits_.max_continuations);
  nghttp2_option_set_peer_max_concurrent_streams(opt, limits_.max_concurrent_streams);
  nghttp2_option_set_no_closed_streams(opt, 1);
  if (server) {
    nghttp2_option_set_stream_reset_rate_limit(opt, limits_.stream_reset_burst,
                                               limits_.stream_reset_rate);
  }
  int rv = server ? nghttp2_session_server_new2(&session_, cb, this, opt)
                  : nghttp2_session_client_new2(&session_, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("http2: creating the nghttp2 session: ", nghttp2_strerror(rv)));
  }

  nghttp2_settings_entry iv[7];
  size_t n = 0;
  iv[n++] = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams};
  iv[n++] = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.initial_stream_window};
  iv[n++] = {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, limits_.max_frame_size};
  iv[n++] = {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.max_header_list_size};
  iv[n++] = {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, limits_.header_table_size};
  iv[n++] = {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1};
  if (!server) iv[n++] = {NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
  rv = nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, n);
  if (rv == 0 && limits_.initial_connection_window > 65535) {
    rv = nghttp2_session_set_local_window_size(
        session_, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(limits_.initial_connection_window));
  }
  if (rv != 0) {
    return absl::InternalError(
        absl::StrCat("http2: queueing our SETTINGS: ", nghttp2_strerror(rv)));
  }
  // The pool's first streams, so the first requests allocate no Stream either.
  size_t prealloc = std::min<size_t>(limits_.max_concurrent_streams, 8);
  for (size_t i = 0; i < prealloc; ++i) releaseStream(acquireStream());
  return absl::OkStatus();
}

absl::Status SessionBase::feed(absl::Span<const uint8_t> data) {
  if (failed()) return failure_;
  ssize_t rv = nghttp2_session_mem_recv(session_, data.data(), data.size());
  if (failed()) return failure_;
  if (rv < 0) {
    uint32_t code = kProtocolError;
    std::string what;
    switch (rv) {
      case NGHTTP2_ERR_FLOODED:
        code = kEnhanceYourCalm;
        what = absl::StrCat("the peer sent PING/SETTINGS faster than it read our answers (over ",
                            limits_.max_outbound_ack, " ACK frames queued)");
        break;
      case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
        code = kEnhanceYourCalm;
        what = absl::StrCat("more than ", limits_.max_continuations,
                            " CONTINUATION frames after one HEADERS frame");
        break;
      case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
        what = "the client connection preface is not \"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\"";
        break;
      case NGHTTP2_ERR_NOMEM:
        code = kInternalError;
        what = "out of memory";
        break;
      default:
        what = nghttp2_strerror(static_cast<int>(rv));
        if (!last_error_.empty()) absl::StrAppend(&what, " (", last_error_, ")");
    }
    if (nghttp2_is_fatal(static_cast<int>(rv))) abort_ = true;  // no GOAWAY: just close
    fail(code, absl::ResourceExhaustedError(
                   absl::StrCat("http2: connection error ", errorCodeName(code), ": ", what)));
    if (code == kProtocolError) failure_ = absl::InvalidArgumentError(failure_.message());
    return failure_;
  }
  serializeControlFrames();
  return failure_;
}

void SessionBase::serializeControlFrames() {
  constexpr size_t kMaxEarly = 64 * 1024;
  if (early_off_ == early_.size()) {
    early_.clear();
    early_off_ = 0;
  }
  if (pending_size_ > 0) {
    early_.append(reinterpret_cast<const char*>(pending_), pending_size_);
    pending_size_ = 0;
  }
  while (!failed() && nghttp2_session_get_outbound_queue_size(session_) > 0 &&
         early_.size() - early_off_ < kMaxEarly) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    for (size_t i = 0; i < ready_.size(); ++i) deliverSendReady(ready_[i]);
    ready_.clear();
    if (n <= 0) break;
    early_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

void SessionBase::fail(uint32_t code, absl::Status status) {
  if (failed()) return;
  failure_ = std::move(status);
  error_code_ = code;
  if (!abort_) nghttp2_session_terminate_session(session_, code);
}

bool SessionBase::wantsWrite() const {
  if (abort_) return false;
  return early_off_ < early_.size() || pending_size_ > 0 ||
         nghttp2_session_want_write(session_) != 0;
}

bool SessionBase::shouldClose() const {
  if (abort_) return true;
  return early_off_ == early_.size() && pending_size_ == 0 &&
         nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0;
}

size_t SessionBase::produce(std::string& out, size_t max_bytes) {
  size_t total = 0;
  if (early_off_ < early_.size() && !abort_) {
    size_t take = std::min(early_.size() - early_off_, max_bytes);
    out.append(early_, early_off_, take);
    early_off_ += take;
    total += take;
  }
  while (total < max_bytes && !abort_) {
    if (pending_size_ == 0) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      for (size_t i = 0; i < ready_.size(); ++i) deliverSendReady(ready_[i]);
      ready_.clear();
      if (n < 0) {
        abort_ = true;
        fail(kInternalError,
             absl::InternalError(
                 absl::StrCat("http2: producing output: ", nghttp2_strerror(static_cast<int>(n)))));
        break;
      }
      if (n == 0) break;
      pending_ = data;
      pending_size_ = static_cast<size_t>(n);
    }
    size_t take = std::min(pending_size_, max_bytes - total);
    out.append(reinterpret_cast<const char*>(pending_), take);
    pending_ += take;
    pending_size_ -= take;
    total += take;
  }
  return total;
}

absl::Status SessionBase::consume(int32_t stream_id, size_t n) {
  Stream* st = findStream(stream_id);
  if (st == nullptr || n == 0) return absl::OkStatus();
  if (n > st->unconsumed) {
    return absl::InvalidArgumentError(absl::StrCat("http2: consume(", stream_id, ", ", n,
                                                   "): only ", st->unconsumed,
                                                   " received bytes are unconsumed"));
  }
  st->unconsumed -= n;
  int rv = nghttp2_session_consume(session_, stream_id, n);
  if (rv != 0) {
    return absl::InternalError(absl::StrCat("http2: consume: ", nghttp2_strerror(rv)));
  }
  return absl::OkStatus();
}

bool SessionBase::hasOpenBody(const Stream& st) const { return st.has_body && !st.send_end; }

absl::StatusOr<size_t> SessionBase::submitData(int32_t stream_id, absl::Span<const uint8_t> data,
                                               bool end_stream) {
  Stream* st = findStream(stream_id);
  if (st == nullptr || !hasOpenBody(*st)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "http2: submitData on stream ", stream_id,
        st == nullptr ? ": not open" : ": no body open (head not submitted, or already ended)"));
  }
  size_t room = limits_.max_stream_send_buffer -
                std::min<size_t>(st->queued(), limits_.max_stream_send_buffer);
  size_t take = std::min(room, data.size());
  if (take > 0) {
    if (st->send_off > 0 && st->send_off >= st->send_buf.size() / 2) {
      st->send_buf.erase(0, st->send_off);  // compact: keep the queue's footprint bounded
      st->send_off = 0;
    }
    st->send_buf.append(reinterpret_cast<const char*>(data.data()), take);
  }
  if (take < data.size()) {
    st->want_ready = true;
  } else if (end_stream) {
    st->send_end = true;
  }
  if (st->deferred && (take > 0 || st->send_end)) {
    st->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return take;
}

absl::Status SessionBase::submitTrailers(int32_t stream_id,
                                         absl::Span<const HeaderField> trailers) {
  Stream* st = findStream(stream_id);
  if (st == nullptr || !hasOpenBody(*st)) {
    return absl::FailedPreconditionError(
        absl::StrCat("http2: submitTrailers on stream ", stream_id,
                     st == nullptr ? ": not open" : ": no body open"));
  }
  st->out_trailer_bytes.clear();
  st->out_trailer_lens.clear();
  for (const HeaderField& f : trailers) {
    if (dropField(f, false)) continue;
    size_t at = st->out_trailer_bytes.size();
    st->out_trailer_bytes.append(f.name);
    for (size_t i = at; i < st->out_trailer_bytes.size(); ++i) {
      st->out_trailer_bytes[i] = absl::ascii_tolower(st->out_trailer_bytes[i]);
    }
    st->out_trailer_bytes.append(f.value);
    st->out_trailer_lens.emplace_back(f.name.size(), f.value.size());
  }
  st->send_end = true;
  st->send_trailers = !st->out_trailer_lens.empty();
  if (st->deferred) {
    st->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return absl::OkStatus();
}

absl::Status SessionBase::resetStream(int32_t stream_id, uint32_t error_code) {
  if (findStream(stream_id) == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("http2: resetStream: stream ", stream_id, " is not open"));
  }
  int rv = nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
  if (rv != 0) {
    return absl::InternalError(absl::StrCat("http2: resetStream: ", nghttp2_strerror(rv)));
  }
  return absl::OkStatus();
}

void SessionBase::goaway(uint32_t error_code) {
  local_goaway_ = true;
  if (error_code != kNoError) {
    if (error_code_ == 0) error_code_ = error_code;
    nghttp2_session_terminate_session(session_, error_code);
    return;
  }
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), kNoError, nullptr, 0);
}

size_t SessionBase::openStreams() const { return streams_.size() - free_.size(); }

Stream* SessionBase::acquireStream() {
  if (free_.empty()) {
    streams_.push_back(std::make_unique<Stream>());
    return streams_.back().get();
  }
  Stream* st = free_.back();
  free_.pop_back();
  return st;
}

void SessionBase::releaseStream(Stream* stream) {
  stream->clear();
  free_.push_back(stream);
}

Stream* SessionBase::findStream(int32_t stream_id) const {
  if (stream_id <= 0) return nullptr;
  auto* st = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_, stream_id));
  if (st != nullptr) return st;
  for (Stream* u : unsent_) {
    if (u->id == stream_id) return u;
  }
  return nullptr;
}

Stream* SessionBase::removeUnsent(int32_t stream_id) {
  for (size_t i = 0; i < unsent_.size(); ++i) {
    if (unsent_[i]->id == stream_id) {
      Stream* st = unsent_[i];
      unsent_[i] = unsent_.back();
      unsent_.pop_back();
      return st;
    }
  }
  return nullptr;
}

void SessionBase::buildNv(absl::Span<const std::pair<std::string_view, std::string_view>> pseudo,
                          absl::Span<const HeaderField> fields, bool allow_te) {
  std::vector<nghttp2_nv>& nv = nv_->nv;
  std::string& names = nv_->bytes;
  nv.clear();
  names.clear();
  size_t need = 0;
  for (const HeaderField& f : fields) need += f.name.size();
  names.reserve(need);  // no reallocation below: nv points into it
  for (const auto& [name, value] : pseudo) nv.push_back(makeNv(name, value));
  for (const HeaderField& f : fields) {
    if (dropField(f, allow_te)) continue;
    size_t at = names.size();
    for (char c : f.name) names.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
    nv.push_back(makeNv(std::string_view(names).substr(at, f.name.size()), f.value));
  }
}

int32_t SessionBase::submitHead(Stream& st, bool request, bool end_stream) {
  nghttp2_data_provider prd;
  prd.source.ptr = &st;
  prd.read_callback = &Callbacks::readBody;
  const nghttp2_data_provider* p = end_stream ? nullptr : &prd;
  st.has_body = !end_stream;
  if (request) {
    return nghttp2_submit_request(session_, nullptr, nv_->nv.data(), nv_->nv.size(), p, &st);
  }
  return nghttp2_submit_response(session_, st.id, nv_->nv.data(), nv_->nv.size(), p);
}

}  // namespace meshd::proxy::http2::detail
