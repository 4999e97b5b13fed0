// Tests of the HTTP/2 codec (userspace/proxy/http2). No sockets: sessions are wired back
// to back in memory, each side's produce() output fed to the other.
//
//   ServerSession  ◀──bytes──▶  raw nghttp2 client (RawPeer), or hand-made frames
//   ClientSession  ◀──bytes──▶  raw nghttp2 server (RawPeer)
//   ClientSession  ◀──bytes──▶  ServerSession
//
// Hand-made frames (frame(), hpackLiteral()) carry what a well-behaved nghttp2 peer would
// never send: floods, invalid fields, rapid resets.
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "counting_new.h"
#include "gtest/gtest.h"
#include "proxy/http2/client_session.h"
#include "proxy/http2/grpc.h"
#include "proxy/http2/server_session.h"
#include "proxy/http2/types.h"

namespace meshd::proxy::http2 {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

absl::Span<const uint8_t> bytes(std::string_view s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

Fields copyFields(absl::Span<const HeaderField> fields) {
  Fields out;
  for (const HeaderField& f : fields) out.emplace_back(std::string(f.name), std::string(f.value));
  return out;
}

std::string find(const Fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields) {
    if (n == name) return v;
  }
  return "<absent>";
}

class FakeClock final : public Clock {
 public:
  uint64_t nowMs() const override { return now; }
  uint64_t now = 1'000'000;
};

// ---- hand-made frames --------------------------------------------------------------

enum : uint8_t {
  kData = 0,
  kHeaders = 1,
  kRstStream = 3,
  kSettings = 4,
  kPing = 6,
  kGoaway = 7,
  kWindowUpdate = 8,
  kContinuation = 9
};
enum : uint8_t { kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4 };

std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string f;
  f.push_back(static_cast<char>(payload.size() >> 16));
  f.push_back(static_cast<char>(payload.size() >> 8));
  f.push_back(static_cast<char>(payload.size()));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) f.push_back(static_cast<char>(stream >> shift));
  f.append(payload);
  return f;
}

std::string u32(uint32_t v) {
  std::string s;
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>(v >> shift));
  return s;
}

// HPACK integer with an N-bit prefix (RFC 7541 §5.1).
void hpackInt(std::string* out, uint8_t first, int prefix_bits, size_t v) {
  size_t max = (1u << prefix_bits) - 1;
  if (v < max) {
    out->push_back(static_cast<char>(first | v));
    return;
  }
  out->push_back(static_cast<char>(first | max));
  v -= max;
  while (v >= 128) {
    out->push_back(static_cast<char>(0x80 | (v & 0x7f)));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// A header block of literal fields without indexing and without Huffman: any bytes go,
// so invalid names can be sent.
std::string hpackLiteral(const Fields& fields) {
  std::string out;
  for (const auto& [n, v] : fields) {
    out.push_back(0x00);
    hpackInt(&out, 0, 7, n.size());
    out.append(n);
    hpackInt(&out, 0, 7, v.size());
    out.append(v);
  }
  return out;
}

const Fields kGet = {
    {":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/"}};

// The client side of a connection made by hand: preface + empty SETTINGS.
std::string clientStart() { return std::string(kClientPreface) + frame(kSettings, 0, 0, ""); }

struct Frame {
  uint8_t type;
  uint8_t flags;
  uint32_t stream;
  std::string payload;
};

// Splits a server's output into frames.
std::vector<Frame> parseFrames(std::string_view data) {
  std::vector<Frame> frames;
  while (data.size() >= 9) {
    auto b = [&](size_t i) { return static_cast<uint8_t>(data[i]); };
    size_t len = (size_t{b(0)} << 16) | (size_t{b(1)} << 8) | b(2);
    if (data.size() < 9 + len) break;
    Frame f{b(3), b(4),
            ((uint32_t{b(5)} << 24) | (uint32_t{b(6)} << 16) | (uint32_t{b(7)} << 8) | b(8)) &
                0x7fffffffu,
            std::string(data.substr(9, len))};
    frames.push_back(std::move(f));
    data.remove_prefix(9 + len);
  }
  return frames;
}

uint32_t payloadU32(const Frame& f, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(f.payload[at + i]);
  return v;
}

// The GOAWAY error code in `frames`, or -1.
int64_t goawayCode(const std::vector<Frame>& frames) {
  for (const Frame& f : frames) {
    if (f.type == kGoaway) return payloadU32(f, 4);
  }
  return -1;
}

// The RST_STREAM error code for `stream`, or -1.
int64_t rstCode(const std::vector<Frame>& frames, uint32_t stream) {
  for (const Frame& f : frames) {
    if (f.type == kRstStream && f.stream == stream) return payloadU32(f, 0);
  }
  return -1;
}

// ---- recording handlers ------------------------------------------------------------

struct StreamLog {
  std::string method, scheme, authority, path;
  uint16_t status = 0;
  Fields headers, trailers;
  std::string body;
  bool head_end = false;
  bool ended = false;  // end_stream seen (head, data or trailers)
  bool closed = false;
  uint32_t close_code = 0;
};

class RecordingServer : public ServerHandler {
 public:
  void onRequest(int32_t id, const RequestHeaders& req, bool end_stream) override {
    StreamLog& s = streams[id];
    s.method = std::string(req.method);
    s.scheme = std::string(req.scheme);
    s.authority = std::string(req.authority);
    s.path = std::string(req.path);
    s.headers = copyFields(req.headers);
    s.head_end = s.ended = end_stream;
    ++requests;
    order.push_back(id);
    if (on_request) on_request(id, end_stream);
  }
  void onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) override {
    StreamLog& s = streams[id];
    s.body.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (end_stream) s.ended = true;
    if (auto_consume && !data.empty()) {
      EXPECT_TRUE(session->consume(id, data.size()).ok());
    }
    if (end_stream && on_end) on_end(id);
  }
  void onTrailers(int32_t id, absl::Span<const HeaderField> trailers) override {
    streams[id].trailers = copyFields(trailers);
    streams[id].ended = true;
    if (on_end) on_end(id);
  }
  void onStreamClosed(int32_t id, uint32_t code) override {
    EXPECT_FALSE(streams[id].closed) << "closed twice: " << id;
    streams[id].closed = true;
    streams[id].close_code = code;
  }
  void onSendReady(int32_t id) override {
    if (on_ready) on_ready(id);
  }

  ServerSession* session = nullptr;
  bool auto_consume = true;
  std::map<int32_t, StreamLog> streams;
  std::vector<int32_t> order;
  int requests = 0;
  std::function<void(int32_t, bool)> on_request;
  std::function<void(int32_t)> on_end;
  std::function<void(int32_t)> on_ready;
};

class RecordingClient : public ClientHandler {
 public:
  void onResponse(int32_t id, uint16_t status, absl::Span<const HeaderField> headers,
                  bool end_stream) override {
    StreamLog& s = streams[id];
    s.status = status;
    s.headers = copyFields(headers);
    s.head_end = s.ended = end_stream;
  }
  void onData(int32_t id, absl::Span<const uint8_t> data, bool end_stream) override {
    StreamLog& s = streams[id];
    s.body.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (end_stream) s.ended = true;
    if (auto_consume && !data.empty()) {
      EXPECT_TRUE(session->consume(id, data.size()).ok());
    }
  }
  void onTrailers(int32_t id, absl::Span<const HeaderField> trailers) override {
    streams[id].trailers = copyFields(trailers);
    streams[id].ended = true;
  }
  void onStreamClosed(int32_t id, uint32_t code) override {
    EXPECT_FALSE(streams[id].closed) << "closed twice: " << id;
    streams[id].closed = true;
    streams[id].close_code = code;
  }
  void onGoaway(int32_t last) override { goaway_last = last; }
  void onSendReady(int32_t id) override {
    if (on_ready) on_ready(id);
  }

  ClientSession* session = nullptr;
  bool auto_consume = true;
  std::map<int32_t, StreamLog> streams;
  int32_t goaway_last = -1;
  std::function<void(int32_t)> on_ready;
};

// ---- a raw nghttp2 peer ------------------------------------------------------------

class RawPeer {
 public:
  explicit RawPeer(bool server, std::vector<nghttp2_settings_entry> settings = {}) {
    nghttp2_session_callbacks* cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, &RawPeer::onHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &RawPeer::onFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &RawPeer::onData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, &RawPeer::onClose);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, &RawPeer::onBeginHeaders);
    nghttp2_option* opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_max_send_header_block_length(opt, 1 << 20);
    if (server) {
      nghttp2_session_server_new2(&session_, cb, this, opt);
    } else {
      nghttp2_session_client_new2(&session_, cb, this, opt);
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  }
  ~RawPeer() { nghttp2_session_del(session_); }
  nghttp2_session* session() { return session_; }

  std::string take() {
    std::string out;
    for (;;) {
      const uint8_t* data;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    return out;
  }
  ssize_t give(std::string_view in) {
    return nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(in.data()),
                                    in.size());
  }

  // Client: submits a request; `body` (if any) is sent from an owned copy.
  int32_t request(const Fields& headers, std::string body = "", bool with_body = false) {
    std::vector<nghttp2_nv> nv = toNv(headers);
    int32_t id;
    if (with_body) {
      auto src = std::make_unique<std::string>(std::move(body));
      nghttp2_data_provider prd{};
      prd.source.ptr = src.get();
      prd.read_callback = &RawPeer::readBody;
      id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), &prd, nullptr);
      bodies_.push_back(std::move(src));
    } else {
      id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), nullptr, nullptr);
    }
    return id;
  }
  // Server: answers stream `id`.
  void respond(int32_t id, const Fields& headers, std::string body, bool with_body = true) {
    std::vector<nghttp2_nv> nv = toNv(headers);
    if (!with_body) {
      nghttp2_submit_response(session_, id, nv.data(), nv.size(), nullptr);
      return;
    }
    auto src = std::make_unique<std::string>(std::move(body));
    nghttp2_data_provider prd{};
    prd.source.ptr = src.get();
    prd.read_callback = &RawPeer::readBody;
    nghttp2_submit_response(session_, id, nv.data(), nv.size(), &prd);
    bodies_.push_back(std::move(src));
  }

  std::map<int32_t, StreamLog> streams;
  std::vector<int32_t> complete_requests;  // server: requests whose END_STREAM arrived
  int64_t goaway_code = -1;
  int32_t goaway_last = -1;

 private:
  static std::vector<nghttp2_nv> toNv(const Fields& fields) {
    std::vector<nghttp2_nv> nv;
    for (const auto& [n, v] : fields) {
      nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                    NGHTTP2_NV_FLAG_NONE});
    }
    return nv;
  }
  static RawPeer& self(void* u) { return *static_cast<RawPeer*>(u); }
  static int onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* u) {
    StreamLog& s = self(u).streams[frame->hd.stream_id];
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && s.status >= 200) s.trailers.clear();
    return 0;
  }
  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* u) {
    StreamLog& s = self(u).streams[frame->hd.stream_id];
    std::string n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    bool trailer =
        frame->headers.cat == NGHTTP2_HCAT_HEADERS && (s.status >= 200 || !s.method.empty());
    if (n == ":status") {
      s.status = static_cast<uint16_t>(std::stoi(v));
    } else if (n == ":method") {
      s.method = v;
    } else if (n == ":path") {
      s.path = v;
    } else if (n == ":authority") {
      s.authority = v;
    } else if (n == ":scheme") {
      s.scheme = v;
    } else {
      (trailer ? s.trailers : s.headers).emplace_back(n, v);
    }
    return 0;
  }
  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* u) {
    RawPeer& p = self(u);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      p.goaway_code = frame->goaway.error_code;
      p.goaway_last = frame->goaway.last_stream_id;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      p.streams[frame->hd.stream_id].ended = true;
      p.complete_requests.push_back(frame->hd.stream_id);
    }
    return 0;
  }
  static int onData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                    void* u) {
    self(u).streams[id].body.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }
  static int onClose(nghttp2_session*, int32_t id, uint32_t code, void* u) {
    StreamLog& s = self(u).streams[id];
    s.closed = true;
    s.close_code = code;
    return 0;
  }
  static ssize_t readBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* body = static_cast<std::string*>(source->ptr);
    size_t n = std::min(length, body->size());
    std::memcpy(buf, body->data(), n);
    body->erase(0, n);
    if (body->empty()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  nghttp2_session* session_ = nullptr;
  std::vector<std::unique_ptr<std::string>> bodies_;
};

// Moves bytes both ways until neither side has anything to send. Returns false when a
// side failed (the failure is left in *status).
template <typename A, typename B>
bool pump(A& a, B& b, absl::Status* status = nullptr, int max_rounds = 10000);

std::string takeAll(detail::SessionBase& s) {
  std::string out;
  s.produce(out);
  return out;
}
std::string takeAll(RawPeer& p) { return p.take(); }
absl::Status giveAll(detail::SessionBase& s, std::string_view in) { return s.feed(bytes(in)); }
absl::Status giveAll(RawPeer& p, std::string_view in) {
  ssize_t rv = p.give(in);
  return rv < 0 ? absl::InternalError(nghttp2_strerror(static_cast<int>(rv))) : absl::OkStatus();
}

template <typename A, typename B>
bool pump(A& a, B& b, absl::Status* status, int max_rounds) {
  for (int i = 0; i < max_rounds; ++i) {
    std::string ab = takeAll(a);
    std::string ba = takeAll(b);
    if (ab.empty() && ba.empty()) return true;
    if (!ab.empty()) {
      absl::Status s = giveAll(b, ab);
      if (!s.ok()) {
        if (status) *status = s;
        return false;
      }
    }
    if (!ba.empty()) {
      absl::Status s = giveAll(a, ba);
      if (!s.ok()) {
        if (status) *status = s;
        return false;
      }
    }
  }
  ADD_FAILURE() << "pump: no quiescence after " << max_rounds << " rounds";
  return false;
}

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

struct ServerFixture {
  explicit ServerFixture(Limits limits = Limits()) {
    auto s = ServerSession::create(handler, limits, clock);
    EXPECT_TRUE(s.ok()) << s.status();
    session = std::move(*s);
    handler.session = session.get();
  }
  FakeClock clock;
  RecordingServer handler;
  std::unique_ptr<ServerSession> session;
};

// ---- preface detection -------------------------------------------------------------

TEST(Http2PrefaceTest, Matches) {
  std::string p(kClientPreface);
  EXPECT_EQ(matchPreface(bytes("")), PrefaceMatch::kPartial);
  EXPECT_EQ(matchPreface(bytes("PRI * HT")), PrefaceMatch::kPartial);
  EXPECT_EQ(matchPreface(bytes(p)), PrefaceMatch::kComplete);
  EXPECT_EQ(matchPreface(bytes(p + "\x00\x00")), PrefaceMatch::kComplete);
  EXPECT_EQ(matchPreface(bytes("GET / HTTP/1.1\r\n")), PrefaceMatch::kMismatch);
  EXPECT_EQ(matchPreface(bytes("PRI * HTTP/1.1")), PrefaceMatch::kMismatch);
  EXPECT_TRUE(looksLikeH2Preface(bytes("PRI")));
  EXPECT_FALSE(looksLikeH2Preface(bytes("POST")));
}

TEST(Http2LimitsTest, RejectsImpossibleLimits) {
  RecordingServer h;
  Limits l;
  l.initial_stream_window = 1u << 31;
  EXPECT_EQ(ServerSession::create(h, l).status().code(), absl::StatusCode::kInvalidArgument);
  l = Limits();
  l.max_frame_size = 1000;
  EXPECT_EQ(ServerSession::create(h, l).status().code(), absl::StatusCode::kInvalidArgument);
  l = Limits();
  l.max_concurrent_streams = 0;
  EXPECT_EQ(ServerSession::create(h, l).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- ServerSession against a raw nghttp2 client ---------------------------------------

TEST(Http2ServerTest, RequestAndResponseWithBodies) {
  ServerFixture f;
  RawPeer client(false);
  f.handler.on_end = [&](int32_t id) {
    HeaderField h[] = {{"Content-Type", "text/plain", false}, {"connection", "close", true}};
    ASSERT_TRUE(f.session->submitResponse(id, 201, h, false).ok());
    std::string body = "echo:" + f.handler.streams[id].body;
    auto n = f.session->submitData(id, bytes(body), true);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, body.size());
  };
  int32_t id = client.request({{":method", "POST"},
                               {":scheme", "http"},
                               {":authority", "svc.ns:8080"},
                               {":path", "/items?x=1"},
                               {"content-type", "application/json"},
                               {"te", "trailers"},
                               {"cookie", "a=1"},
                               {"cookie", "b=2"}},
                              "{\"k\":1}", true);
  ASSERT_TRUE(pump(*f.session, client));

  const StreamLog& req = f.handler.streams[id];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.scheme, "http");
  EXPECT_EQ(req.authority, "svc.ns:8080");
  EXPECT_EQ(req.path, "/items?x=1");
  EXPECT_EQ(req.body, "{\"k\":1}");
  EXPECT_FALSE(req.head_end);
  EXPECT_TRUE(req.ended);
  EXPECT_EQ((Fields{{"content-type", "application/json"},
                    {"te", "trailers"},
                    {"cookie", "a=1"},
                    {"cookie", "b=2"}}),
            req.headers);
  EXPECT_TRUE(req.closed);
  EXPECT_EQ(req.close_code, kNoError);

  const StreamLog& resp = client.streams[id];
  EXPECT_EQ(resp.status, 201);
  EXPECT_EQ(find(resp.headers, "content-type"), "text/plain");  // lower-cased
  EXPECT_EQ(find(resp.headers, "connection"), "<absent>");      // hop-by-hop dropped
  EXPECT_EQ(resp.body, "echo:{\"k\":1}");
  EXPECT_TRUE(resp.closed);
  EXPECT_EQ(f.session->openStreams(), 0u);
}

TEST(Http2ServerTest, HostStandsInForMissingAuthority) {
  ServerFixture f;
  RawPeer client(false);
  int32_t id =
      client.request({{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"host", "h.test"}});
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_EQ(f.handler.streams[id].authority, "h.test");
  EXPECT_TRUE(f.handler.streams[id].head_end);
}

TEST(Http2ServerTest, HundredConcurrentStreams) {
  ServerFixture f;
  RawPeer client(false);
  ASSERT_TRUE(pump(*f.session, client));  // SETTINGS exchanged
  std::vector<int32_t> ids;
  for (int i = 0; i < 100; ++i) {
    ids.push_back(client.request({{":method", "GET"},
                                  {":scheme", "http"},
                                  {":authority", "a"},
                                  {":path", absl::StrCat("/", i)}}));
  }
  ASSERT_TRUE(pump(*f.session, client));
  ASSERT_EQ(f.handler.requests, 100);
  EXPECT_EQ(f.session->openStreams(), 100u);  // all open at once, none answered yet
  for (int32_t id : ids) {
    std::string body = f.handler.streams[id].path;
    ASSERT_TRUE(f.session->submitResponse(id, 200, {}, false).ok());
    ASSERT_TRUE(f.session->submitData(id, bytes(body), true).ok());
  }
  ASSERT_TRUE(pump(*f.session, client));
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(client.streams[ids[i]].status, 200);
    EXPECT_EQ(client.streams[ids[i]].body, absl::StrCat("/", i));
  }
  EXPECT_EQ(f.session->openStreams(), 0u);
}

TEST(Http2ServerTest, StreamsOverTheLimitAreRefused) {
  Limits l;
  l.max_concurrent_streams = 3;
  ServerFixture f(l);
  // Before the client acknowledged our SETTINGS, nghttp2 refuses the streams over the
  // limit with REFUSED_STREAM (safe to retry elsewhere).
  std::string in = clientStart();
  std::string block = hpackLiteral(kGet);
  for (uint32_t id = 1; id <= 9; id += 2) in += frame(kHeaders, kEndHeaders, id, block);
  ASSERT_TRUE(f.session->feed(bytes(in)).ok());
  EXPECT_EQ(f.handler.requests, 3);
  auto frames = parseFrames(takeAll(*f.session));
  EXPECT_EQ(rstCode(frames, 7), kRefusedStream);
  EXPECT_EQ(rstCode(frames, 9), kRefusedStream);
}

TEST(Http2ServerTest, GrpcStyleTrailersBothWays) {
  ServerFixture f;
  RawPeer client(false);
  f.handler.on_end = [&](int32_t id) {
    HeaderField h[] = {{"content-type", "application/grpc", false}};
    ASSERT_TRUE(f.session->submitResponse(id, 200, h, false).ok());
    ASSERT_TRUE(f.session->submitData(id, bytes(std::string("\0\0\0\0\2hi", 7)), false).ok());
    HeaderField t[] = {{"grpc-status", "0", false}, {"grpc-message", "ok", false}};
    ASSERT_TRUE(f.session->submitTrailers(id, t).ok());
    EXPECT_FALSE(f.session->submitData(id, bytes("late"), true).ok());  // body ended
  };
  // The request with trailers of its own: nghttp2's client sends them via
  // submit_trailer once the body is out, so hand-make this one.
  Fields head = {{":method", "POST"},
                 {":scheme", "http"},
                 {":authority", "g"},
                 {":path", "/pkg.Svc/Call"},
                 {"content-type", "application/grpc"},
                 {"te", "trailers"}};
  std::string in =
      clientStart() + frame(kHeaders, kEndHeaders, 1, hpackLiteral(head)) +
      frame(kData, 0, 1, std::string("\0\0\0\0\1x", 6)) +
      frame(kHeaders, kEndHeaders | kEndStream, 1, hpackLiteral({{"x-checksum", "42"}}));
  ASSERT_TRUE(f.session->feed(bytes(in)).ok());
  const StreamLog& req = f.handler.streams[1];
  EXPECT_EQ(req.body, std::string("\0\0\0\0\1x", 6));
  EXPECT_EQ(req.trailers, (Fields{{"x-checksum", "42"}}));
  EXPECT_EQ(find(req.headers, "te"), "trailers");
  // Parse the answer with a raw client that shares no state: decode via RawPeer.
  auto frames = parseFrames(takeAll(*f.session));
  int headers_frames = 0;
  bool data = false, trailers_end = false;
  for (const Frame& fr : frames) {
    if (fr.stream != 1) continue;
    if (fr.type == kHeaders) {
      ++headers_frames;
      if (headers_frames == 2) trailers_end = fr.flags & kEndStream;
      if (headers_frames == 1) {
        EXPECT_FALSE(fr.flags & kEndStream);
      }
    }
    if (fr.type == kData) {
      data = true;
      EXPECT_EQ(fr.payload, std::string("\0\0\0\0\2hi", 7));
      EXPECT_FALSE(fr.flags & kEndStream);  // the trailers end the stream
    }
  }
  EXPECT_EQ(headers_frames, 2);
  EXPECT_TRUE(data);
  EXPECT_TRUE(trailers_end);
}

TEST(Http2ServerTest, TrailersReachARealClient) {
  ServerFixture f;
  RawPeer client(false);
  f.handler.on_request = [&](int32_t id, bool) {
    HeaderField h[] = {{"content-type", "application/grpc", false}};
    ASSERT_TRUE(f.session->submitResponse(id, 200, h, false).ok());
    ASSERT_TRUE(f.session->submitData(id, bytes("payload"), false).ok());
    HeaderField t[] = {{"grpc-status", "14", false}, {"grpc-message", "no%20upstream", false}};
    ASSERT_TRUE(f.session->submitTrailers(id, t).ok());
  };
  int32_t id = client.request(kGet);
  ASSERT_TRUE(pump(*f.session, client));
  const StreamLog& r = client.streams[id];
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "payload");
  EXPECT_EQ(find(r.trailers, "grpc-status"), "14");
  EXPECT_EQ(find(r.trailers, "grpc-message"), "no%20upstream");
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.close_code, kNoError);
}

// A client uploading 1 MiB to a server whose handler does not pass bytes on: the client
// stalls at the stream window; each consume() lets exactly that much more through.
TEST(Http2ServerTest, RequestBodyFlowControlFollowsConsume) {
  Limits l;
  l.initial_stream_window = 65535;
  l.initial_connection_window = 1 << 20;
  ServerFixture f(l);
  f.handler.auto_consume = false;
  RawPeer client(false);
  const std::string body = pattern(1 << 20);
  int32_t id = client.request(
      {{":method", "PUT"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/up"}}, body, true);
  ASSERT_TRUE(pump(*f.session, client));
  size_t consumed = 0;
  int rounds = 0;
  while (!f.handler.streams[id].ended) {
    size_t received = f.handler.streams[id].body.size();
    size_t outstanding = received - consumed;
    ASSERT_LE(outstanding, l.initial_stream_window);
    ASSERT_GT(outstanding, 0u);
    // The client has data left but may not send it: its window is used up.
    EXPECT_LE(nghttp2_session_get_stream_remote_window_size(client.session(), id), 0);
    ASSERT_TRUE(pump(*f.session, client));  // nothing moves without consume()
    ASSERT_EQ(f.handler.streams[id].body.size(), received);
    ASSERT_EQ(f.session->consume(id, outstanding + 1).code(), absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(f.session->consume(id, outstanding).ok());
    consumed += outstanding;
    ASSERT_TRUE(pump(*f.session, client));
    ASSERT_LT(++rounds, 1000);
  }
  EXPECT_GT(rounds, 10);  // it really did stall, repeatedly
  EXPECT_EQ(f.handler.streams[id].body, body);
  EXPECT_TRUE(f.session->consume(id, 1).ok());  // closed stream: nothing to give back
}

// Bytes delivered but never consumed on a stream that then closes go back to the
// connection window; and a 431-refused request's body is dropped and credited at once.
// With a one-window connection, a leak would stall the next upload for good.
TEST(Http2ServerTest, ClosedAndRefusedStreamsGiveTheConnectionWindowBack) {
  Limits l;
  l.initial_stream_window = 65535;
  l.initial_connection_window = 65535;
  l.max_header_list_size = 4096;
  ServerFixture f(l);
  f.handler.auto_consume = false;
  RawPeer client(false);
  const Fields put = {
      {":method", "PUT"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/up"}};
  int32_t a = client.request(put, pattern(100000), true);
  ASSERT_TRUE(pump(*f.session, client));
  ASSERT_EQ(f.handler.streams[a].body.size(), 65535u);  // stalled, nothing consumed
  ASSERT_TRUE(f.session->resetStream(a, kCancel).ok());
  Fields big = put;
  big.emplace_back("x-big", pattern(5000));
  int32_t refused = client.request(big, pattern(100000), true);
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_EQ(client.streams[refused].status, 431);
  f.handler.auto_consume = true;
  int32_t b = client.request(put, pattern(200000), true);
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_TRUE(f.handler.streams[b].ended);
  EXPECT_EQ(f.handler.streams[b].body, pattern(200000));
}

// The server sends 1 MiB through its bounded per-stream queue, refilling on onSendReady.
TEST(Http2ServerTest, ResponseBodyThroughBoundedQueue) {
  Limits l;
  l.max_stream_send_buffer = 10000;
  ServerFixture f(l);
  RawPeer client(false);
  const std::string body = pattern(1 << 20);
  size_t sent = 0;
  int ready_calls = 0;
  auto push = [&](int32_t id) {
    while (sent < body.size()) {
      size_t chunk = std::min<size_t>(4096, body.size() - sent);
      auto n = f.session->submitData(id, bytes(std::string_view(body).substr(sent, chunk)),
                                     sent + chunk == body.size());
      ASSERT_TRUE(n.ok()) << n.status();
      ASSERT_LE(*n, chunk);
      sent += *n;
      if (*n < chunk) return;  // queue full: wait for onSendReady
    }
  };
  f.handler.on_request = [&](int32_t id, bool) {
    ASSERT_TRUE(f.session->submitResponse(id, 200, {}, false).ok());
    push(id);
  };
  f.handler.on_ready = [&](int32_t id) {
    ++ready_calls;
    push(id);
  };
  int32_t id = client.request(kGet);
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_GT(ready_calls, 50);
  EXPECT_EQ(client.streams[id].body.size(), body.size());
  EXPECT_TRUE(client.streams[id].body == body);
  EXPECT_TRUE(client.streams[id].closed);
}

TEST(Http2ServerTest, ClientResetReachesHandler) {
  ServerFixture f;
  RawPeer client(false);
  int32_t id = client.request(kGet);
  ASSERT_TRUE(pump(*f.session, client));
  ASSERT_EQ(f.handler.requests, 1);
  nghttp2_submit_rst_stream(client.session(), NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_TRUE(f.handler.streams[id].closed);
  EXPECT_EQ(f.handler.streams[id].close_code, kCancel);
  EXPECT_EQ(f.session->prematureResets(), 1u);
  EXPECT_EQ(f.session->submitResponse(id, 200, {}, true).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Http2ServerTest, ServerResetReachesClient) {
  ServerFixture f;
  RawPeer client(false);
  int32_t id = client.request(kGet);
  ASSERT_TRUE(pump(*f.session, client));
  ASSERT_TRUE(f.session->resetStream(id, kRefusedStream).ok());
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_TRUE(client.streams[id].closed);
  EXPECT_EQ(client.streams[id].close_code, kRefusedStream);
  EXPECT_TRUE(f.handler.streams[id].closed);
  EXPECT_EQ(f.session->resetStream(id, kCancel).code(), absl::StatusCode::kNotFound);
}

TEST(Http2ServerTest, GracefulGoawayLetsOpenStreamsFinish) {
  ServerFixture f;
  RawPeer client(false);
  int32_t id = client.request(kGet);
  ASSERT_TRUE(pump(*f.session, client));
  f.session->goaway();
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_EQ(client.goaway_code, kNoError);
  EXPECT_EQ(client.goaway_last, id);
  EXPECT_FALSE(f.session->shouldClose());  // the stream is still open
  ASSERT_TRUE(f.session->submitResponse(id, 204, {}, true).ok());
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_EQ(client.streams[id].status, 204);
  EXPECT_TRUE(f.session->shouldClose());
}

// CVE-2023-44487: HEADERS + RST_STREAM, 1000 times, in one read.
TEST(Http2ServerTest, RapidResetIsEnhanceYourCalm) {
  Limits l;
  l.max_premature_resets = 100;
  ServerFixture f(l);
  std::string in = clientStart();
  std::string block = hpackLiteral(kGet);
  for (uint32_t i = 0; i < 1000; ++i) {
    uint32_t id = 2 * i + 1;
    in += frame(kHeaders, kEndHeaders | kEndStream, id, block);
    in += frame(kRstStream, 0, id, u32(kCancel));
  }
  absl::Status st = f.session->feed(bytes(in));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_NE(st.message().find("CVE-2023-44487"), std::string::npos) << st;
  EXPECT_LE(f.handler.requests, 100);
  EXPECT_EQ(f.session->connectionErrorCode(), kEnhanceYourCalm);
  EXPECT_EQ(goawayCode(parseFrames(takeAll(*f.session))), kEnhanceYourCalm);
  EXPECT_TRUE(f.session->shouldClose());
  // Later input is not read.
  EXPECT_FALSE(f.session->feed(bytes(frame(kHeaders, kEndHeaders, 3001, block))).ok());
  EXPECT_LE(f.handler.requests, 100);
}

// Resets spread over windows do not add up; answered streams do not count.
TEST(Http2ServerTest, ResetsBelowTheRateAreFine) {
  Limits l;
  l.max_premature_resets = 100;
  l.premature_reset_window_ms = 10'000;
  ServerFixture f(l);
  std::string block = hpackLiteral(kGet);
  ASSERT_TRUE(f.session->feed(bytes(clientStart())).ok());
  uint32_t id = 1;
  auto burst = [&](int n) {
    std::string in;
    for (int i = 0; i < n; ++i, id += 2) {
      in += frame(kHeaders, kEndHeaders | kEndStream, id, block);
      in += frame(kRstStream, 0, id, u32(kCancel));
    }
    return f.session->feed(bytes(in));
  };
  ASSERT_TRUE(burst(90).ok());
  f.clock.now += 10'000;
  ASSERT_TRUE(burst(90).ok());
  // Answered streams reset by the client are not premature.
  f.handler.on_request = [&](int32_t sid, bool) {
    ASSERT_TRUE(f.session->submitResponse(sid, 200, {}, false).ok());
  };
  ASSERT_TRUE(burst(50).ok());
  EXPECT_EQ(f.session->prematureResets(), 90u);
  takeAll(*f.session);
  EXPECT_FALSE(f.session->shouldClose());
}

// CVE-2024-27316 family: a header block that never ends.
TEST(Http2ServerTest, ContinuationFloodIsAConnectionError) {
  ServerFixture f;
  std::string in = clientStart();
  in += frame(kHeaders, 0, 1, hpackLiteral(kGet));
  std::string piece = hpackLiteral({{"x-flood", std::string(1000, 'a')}});
  for (int i = 0; i < 10000; ++i) in += frame(kContinuation, 0, 1, piece);
  absl::Status st = f.session->feed(bytes(in));
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("CONTINUATION"), std::string::npos) << st;
  EXPECT_EQ(f.handler.requests, 0);
  EXPECT_EQ(f.session->connectionErrorCode(), kEnhanceYourCalm);
  // nghttp2 treats it as fatal: close at once, nothing more is written.
  EXPECT_TRUE(f.session->shouldClose());
  EXPECT_FALSE(f.session->wantsWrite());
}

TEST(Http2ServerTest, SettingsFloodWithoutReadingIsAConnectionError) {
  ServerFixture f;
  std::string in = clientStart();
  for (int i = 0; i < 5000; ++i) in += frame(kSettings, 0, 0, "");
  absl::Status st = f.session->feed(bytes(in));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(f.session->connectionErrorCode(), kEnhanceYourCalm) << st;
  EXPECT_TRUE(f.session->shouldClose());
  EXPECT_FALSE(f.session->wantsWrite());  // the peer does not read: no GOAWAY either
}

TEST(Http2ServerTest, PingFloodWithoutReadingIsAConnectionError) {
  ServerFixture f;
  std::string in = clientStart();
  for (int i = 0; i < 5000; ++i) in += frame(kPing, 0, 0, "12345678");
  absl::Status st = f.session->feed(bytes(in));
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("PING"), std::string::npos) << st;
  EXPECT_EQ(f.session->connectionErrorCode(), kEnhanceYourCalm);
}

// The same PINGs are fine when the client reads the answers.
TEST(Http2ServerTest, PingsReadInTimeAreFine) {
  ServerFixture f;
  ASSERT_TRUE(f.session->feed(bytes(clientStart())).ok());
  for (int round = 0; round < 10; ++round) {
    std::string in;
    for (int i = 0; i < 500; ++i) in += frame(kPing, 0, 0, "12345678");
    ASSERT_TRUE(f.session->feed(bytes(in)).ok());
    EXPECT_FALSE(takeAll(*f.session).empty());
  }
}

TEST(Http2ServerTest, SettingsWithTooManyEntriesIsAConnectionError) {
  ServerFixture f;
  std::string payload;
  for (int i = 0; i < 40; ++i) payload += std::string("\0\3", 2) + u32(100);
  std::string in = std::string(kClientPreface) + frame(kSettings, 0, 0, payload);
  absl::Status st = f.session->feed(bytes(in));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("too many setting entries"), std::string::npos) << st;
  EXPECT_EQ(goawayCode(parseFrames(takeAll(*f.session))), kEnhanceYourCalm);
  EXPECT_EQ(f.session->connectionErrorCode(), kEnhanceYourCalm);
  EXPECT_TRUE(f.session->shouldClose());
}

// Connection errors nghttp2 finds itself are returned by the feed() that read them.
TEST(Http2ServerTest, ProtocolErrorsAreReportedByFeed) {
  struct Case {
    const char* what;
    std::string frames;
    uint32_t code;
  };
  const Case cases[] = {
      {"DATA on stream 0", frame(kData, 0, 0, "x"), kProtocolError},
      {"HEADERS on an even stream", frame(kHeaders, kEndHeaders, 2, hpackLiteral(kGet)),
       kProtocolError},
      {"PING of 7 bytes", frame(kPing, 0, 0, "1234567"), kFrameSizeError},
      {"frame over max_frame_size", frame(kData, 0, 1, std::string(20000, 'x')), kFrameSizeError},
      {"zero WINDOW_UPDATE on the connection", frame(kWindowUpdate, 0, 0, u32(0)), kProtocolError},
      {"CONTINUATION without HEADERS", frame(kContinuation, kEndHeaders, 1, ""), kProtocolError},
      {"HPACK garbage", frame(kHeaders, kEndHeaders, 1, "\xff\xff\xff\xff\xff"), kCompressionError},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ServerFixture f;
    absl::Status st = f.session->feed(bytes(clientStart() + c.frames));
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(f.session->connectionErrorCode(), c.code) << st;
    EXPECT_EQ(goawayCode(parseFrames(takeAll(*f.session))), c.code);
    EXPECT_TRUE(f.session->shouldClose());
  }
}

TEST(Http2ServerTest, OversizedHeaderListIsAnswered431) {
  Limits l;
  l.max_header_list_size = 16 * 1024;
  ServerFixture f(l);
  RawPeer client(false);
  Fields big = kGet;
  for (int i = 0; i < 8; ++i) big.emplace_back(absl::StrCat("x-big-", i), pattern(3000));
  int32_t id = client.request(big);
  int32_t ok_id = client.request(kGet);
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_EQ(client.streams[id].status, 431);
  EXPECT_TRUE(client.streams[id].closed);
  EXPECT_EQ(f.handler.streams.count(id), 0u);  // never reached the handler
  // The connection (and its HPACK state) carries on.
  EXPECT_EQ(f.handler.requests, 1);
  EXPECT_EQ(f.handler.streams[ok_id].path, "/");
}

TEST(Http2ServerTest, TooManyFieldsIsAnswered431) {
  Limits l;
  l.max_headers = 10;
  ServerFixture f(l);
  RawPeer client(false);
  Fields many = kGet;
  for (int i = 0; i < 11; ++i) many.emplace_back(absl::StrCat("x-", i), "v");
  int32_t id = client.request(many);
  ASSERT_TRUE(pump(*f.session, client));
  EXPECT_EQ(client.streams[id].status, 431);
  EXPECT_EQ(f.handler.requests, 0);
}

// RFC 9113 §8.2.1, §8.2.2, §8.3: malformed requests are stream (or connection) errors and
// never reach the handler; the connection serves the next request.
TEST(Http2ServerTest, MalformedRequestsAreRefused) {
  struct Case {
    const char* what;
    Fields fields;
  };
  const Case cases[] = {
      {"uppercase name",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"X-Foo", "1"}}},
      {"connection",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"connection", "keep-alive"}}},
      {"transfer-encoding",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"transfer-encoding", "chunked"}}},
      {"keep-alive",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"keep-alive", "5"}}},
      {"upgrade",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"upgrade", "h2c"}}},
      {"te other than trailers",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"te", "gzip"}}},
      {"missing :path", {{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}}},
      {"missing :method", {{":scheme", "http"}, {":authority", "a"}, {":path", "/"}}},
      {"unknown pseudo-header",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {":foo", "x"}}},
      {"pseudo-header after a field",
       {{":method", "GET"}, {":scheme", "http"}, {"x", "1"}, {":authority", "a"}, {":path", "/"}}},
      {"duplicate :path",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {":path", "/b"}}},
      {"response pseudo-header",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {":status", "200"}}},
      {"space in name",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"x y", "1"}}},
      {"CR LF in value",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"x", "a\r\nb: c"}}},
      {"NUL in value",
       {{":method", "GET"},
        {":scheme", "http"},
        {":authority", "a"},
        {":path", "/"},
        {"x", std::string("a\0b", 3)}}},
      {"empty :path",
       {{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", ""}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ServerFixture f;
    std::string in =
        clientStart() + frame(kHeaders, kEndHeaders | kEndStream, 1, hpackLiteral(c.fields));
    absl::Status st = f.session->feed(bytes(in));
    auto frames = parseFrames(takeAll(*f.session));
    EXPECT_EQ(f.handler.requests, 0);
    int64_t rst = rstCode(frames, 1);
    int64_t goaway = goawayCode(frames);
    EXPECT_TRUE(rst == kProtocolError || goaway == kProtocolError)
        << "rst " << rst << " goaway " << goaway << " status " << st;
    if (st.ok()) {
      // A stream error: the next request on the connection is served.
      ASSERT_TRUE(
          f.session->feed(bytes(frame(kHeaders, kEndHeaders | kEndStream, 3, hpackLiteral(kGet))))
              .ok());
      EXPECT_EQ(f.handler.requests, 1);
    }
  }
}

TEST(Http2ServerTest, BadPrefaceIsAConnectionError) {
  ServerFixture f;
  absl::Status st = f.session->feed(bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("preface"), std::string::npos) << st;
  EXPECT_TRUE(f.session->shouldClose());
}

// Steady state: once the pools are warm, the codec allocates nothing of its own per
// request (nghttp2 allocates through malloc, which this counter does not see; the raw
// client runs outside the counted sections).
TEST(Http2ServerTest, NoAllocationPerRequestOnceWarm) {
  struct Handler : ServerHandler {
    void onRequest(int32_t id, const RequestHeaders& r, bool) override {
      static constexpr HeaderField h[] = {{"content-type", "text/plain", false}};
      ok &= r.path == "/p" && session->submitResponse(id, 200, h, false).ok();
      ok &= session->submitData(id, bytes("hello"), true).ok();
    }
    void onData(int32_t, absl::Span<const uint8_t>, bool) override {}
    void onTrailers(int32_t, absl::Span<const HeaderField>) override {}
    void onStreamClosed(int32_t, uint32_t) override { ++closed; }
    ServerSession* session = nullptr;
    bool ok = true;
    int closed = 0;
  } handler;
  auto s = ServerSession::create(handler);
  ASSERT_TRUE(s.ok());
  handler.session = s->get();
  RawPeer client(false);
  std::string out;
  out.reserve(1 << 16);
  size_t allocations = 0;
  for (int i = 0; i < 200; ++i) {
    client.request({{":method", "GET"},
                    {":scheme", "http"},
                    {":authority", "a"},
                    {":path", "/p"},
                    {"user-agent", "test"},
                    {"accept", "*/*"}});
    std::string in = client.take();
    if (i >= 100) meshd::testing::startCountingAllocations();
    ASSERT_TRUE((*s)->feed(bytes(in)).ok());
    out.clear();
    (*s)->produce(out);
    if (i >= 100) allocations += meshd::testing::stopCountingAllocations();
    ASSERT_GE(client.give(out), 0);
  }
  EXPECT_TRUE(handler.ok);
  EXPECT_EQ(handler.closed, 200);
  EXPECT_EQ(allocations, 0u);
}

// ---- ClientSession against a raw nghttp2 server ---------------------------------------

struct ClientFixture {
  explicit ClientFixture(Limits limits = Limits()) {
    auto s = ClientSession::create(handler, limits, clock);
    EXPECT_TRUE(s.ok()) << s.status();
    session = std::move(*s);
    handler.session = session.get();
  }
  FakeClock clock;
  RecordingClient handler;
  std::unique_ptr<ClientSession> session;
};

RequestHeaders makeRequest(std::string_view method, std::string_view path,
                           absl::Span<const HeaderField> headers = {}) {
  RequestHeaders r;
  r.method = method;
  r.scheme = "http";
  r.authority = "up.test";
  r.path = path;
  r.headers = headers;
  return r;
}

TEST(Http2ClientTest, RequestAndResponseWithBodies) {
  ClientFixture c;
  RawPeer server(true);
  HeaderField h[] = {{"Content-Type", "text/plain", false},
                     {"Host", "ignored", false},
                     {"Connection", "x", true},
                     {"TE", "trailers", true},
                     {"X-Req", "1", false}};
  auto id = c.session->submitRequest(makeRequest("POST", "/u", h), false);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(c.session->submitData(*id, bytes("up"), true).ok());
  ASSERT_TRUE(pump(*c.session, server));
  const StreamLog& req = server.streams[*id];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.authority, "up.test");
  EXPECT_EQ(req.body, "up");
  EXPECT_EQ(req.headers,
            (Fields{{"content-type", "text/plain"}, {"te", "trailers"}, {"x-req", "1"}}));
  server.respond(*id, {{":status", "200"}, {"x-resp", "r"}}, "down");
  ASSERT_TRUE(pump(*c.session, server));
  const StreamLog& resp = c.handler.streams[*id];
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.headers, (Fields{{"x-resp", "r"}}));
  EXPECT_EQ(resp.body, "down");
  EXPECT_TRUE(resp.ended);
  EXPECT_TRUE(resp.closed);
  EXPECT_EQ(resp.close_code, kNoError);
}

TEST(Http2ClientTest, OversizedResponseHeadResetsTheStream) {
  Limits l;
  l.max_header_list_size = 8 * 1024;
  ClientFixture c(l);
  RawPeer server(true);
  auto id = c.session->submitRequest(makeRequest("GET", "/"), true);
  auto ok_id = c.session->submitRequest(makeRequest("GET", "/ok"), true);
  ASSERT_TRUE(id.ok() && ok_id.ok());
  ASSERT_TRUE(pump(*c.session, server));
  server.respond(*id, {{":status", "200"}, {"x-big", pattern(10000)}}, "body");
  server.respond(*ok_id, {{":status", "200"}}, "fine");
  ASSERT_TRUE(pump(*c.session, server));
  const StreamLog& r = c.handler.streams[*id];
  EXPECT_EQ(r.status, 0);  // onResponse never called
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.close_code, kInternalError);
  EXPECT_EQ(c.handler.streams[*ok_id].body, "fine");  // the connection carries on
}

TEST(Http2ClientTest, RespectsServerMaxConcurrentStreams) {
  ClientFixture c;
  RawPeer server(true, {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 2}});
  ASSERT_TRUE(pump(*c.session, server));
  ASSERT_TRUE(c.session->canOpenStream());
  auto a = c.session->submitRequest(makeRequest("GET", "/a"), true);
  auto b = c.session->submitRequest(makeRequest("GET", "/b"), true);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(c.session->canOpenStream());
  EXPECT_EQ(c.session->submitRequest(makeRequest("GET", "/c"), true).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(pump(*c.session, server));
  server.respond(*a, {{":status", "204"}}, "", false);
  ASSERT_TRUE(pump(*c.session, server));
  EXPECT_TRUE(c.handler.streams[*a].closed);
  EXPECT_TRUE(c.session->canOpenStream());
}

TEST(Http2ClientTest, TrailersAndInterimResponses) {
  ClientFixture c;
  RawPeer server(true);
  auto id = c.session->submitRequest(makeRequest("GET", "/g"), true);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(pump(*c.session, server));
  // 103 Early Hints, then the final head, a body and trailers.
  std::vector<nghttp2_nv> interim = {{(uint8_t*)":status", (uint8_t*)"103", 7, 3, 0}};
  nghttp2_submit_headers(server.session(), NGHTTP2_FLAG_NONE, *id, nullptr, interim.data(), 1,
                         nullptr);
  ASSERT_TRUE(pump(*c.session, server));
  EXPECT_EQ(c.handler.streams.count(*id), 0u);  // 1xx not reported
  std::vector<nghttp2_nv> head = {{(uint8_t*)":status", (uint8_t*)"200", 7, 3, 0}};
  nghttp2_submit_headers(server.session(), NGHTTP2_FLAG_NONE, *id, nullptr, head.data(), 1,
                         nullptr);
  std::vector<nghttp2_nv> trailers = {{(uint8_t*)"grpc-status", (uint8_t*)"0", 11, 1, 0}};
  nghttp2_submit_headers(server.session(), NGHTTP2_FLAG_END_STREAM, *id, nullptr, trailers.data(),
                         1, nullptr);
  ASSERT_TRUE(pump(*c.session, server));
  const StreamLog& r = c.handler.streams[*id];
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.head_end);
  EXPECT_EQ(r.trailers, (Fields{{"grpc-status", "0"}}));
  EXPECT_TRUE(r.closed);
}

TEST(Http2ClientTest, ServerResetAndClientReset) {
  ClientFixture c;
  RawPeer server(true);
  auto a = c.session->submitRequest(makeRequest("GET", "/a"), true);
  auto b = c.session->submitRequest(makeRequest("GET", "/b"), true);
  ASSERT_TRUE(pump(*c.session, server));
  nghttp2_submit_rst_stream(server.session(), NGHTTP2_FLAG_NONE, *a, NGHTTP2_REFUSED_STREAM);
  ASSERT_TRUE(c.session->resetStream(*b, kCancel).ok());
  ASSERT_TRUE(pump(*c.session, server));
  EXPECT_TRUE(c.handler.streams[*a].closed);
  EXPECT_EQ(c.handler.streams[*a].close_code, kRefusedStream);
  EXPECT_TRUE(c.handler.streams[*b].closed);
  EXPECT_EQ(c.handler.streams[*b].close_code, kCancel);
  EXPECT_TRUE(server.streams[*b].closed);
  EXPECT_EQ(server.streams[*b].close_code, kCancel);
}

TEST(Http2ClientTest, GoawayStopsNewStreams) {
  ClientFixture c;
  RawPeer server(true);
  auto a = c.session->submitRequest(makeRequest("GET", "/a"), true);
  ASSERT_TRUE(pump(*c.session, server));
  nghttp2_submit_goaway(server.session(), NGHTTP2_FLAG_NONE, *a, NGHTTP2_NO_ERROR, nullptr, 0);
  ASSERT_TRUE(pump(*c.session, server));
  EXPECT_EQ(c.handler.goaway_last, *a);
  EXPECT_FALSE(c.session->canOpenStream());
  EXPECT_EQ(c.session->submitRequest(makeRequest("GET", "/b"), true).status().code(),
            absl::StatusCode::kUnavailable);
  server.respond(*a, {{":status", "200"}}, "last");
  ASSERT_TRUE(pump(*c.session, server));
  EXPECT_EQ(c.handler.streams[*a].body, "last");
  EXPECT_TRUE(c.session->shouldClose());
}

// Response body flow control on the upstream side: a slow downstream stops the upstream.
TEST(Http2ClientTest, ResponseFlowControlFollowsConsume) {
  Limits l;
  l.initial_stream_window = 65535;
  ClientFixture c(l);
  c.handler.auto_consume = false;
  RawPeer server(true);
  auto id = c.session->submitRequest(makeRequest("GET", "/big"), true);
  ASSERT_TRUE(pump(*c.session, server));
  const std::string body = pattern(300000);
  server.respond(*id, {{":status", "200"}}, body);
  size_t consumed = 0;
  for (int round = 0; !c.handler.streams[*id].ended; ++round) {
    ASSERT_TRUE(pump(*c.session, server));
    size_t outstanding = c.handler.streams[*id].body.size() - consumed;
    ASSERT_LE(outstanding, l.initial_stream_window);
    ASSERT_TRUE(c.session->consume(*id, outstanding).ok());
    consumed += outstanding;
    ASSERT_LT(round, 1000);
  }
  EXPECT_EQ(c.handler.streams[*id].body, body);
}

// ---- ClientSession against ServerSession ---------------------------------------------

TEST(Http2BackToBackTest, ManyStreamsWithBodiesAndTrailers) {
  ServerFixture s;
  ClientFixture c;
  s.handler.on_end = [&](int32_t id) {
    const StreamLog& req = s.handler.streams[id];
    HeaderField h[] = {{"content-type", "application/grpc", false}};
    ASSERT_TRUE(s.session->submitResponse(id, 200, h, false).ok());
    std::string body = "re:" + req.body;
    ASSERT_TRUE(s.session->submitData(id, bytes(body), false).ok());
    HeaderField t[] = {{"grpc-status", "0", false}};
    ASSERT_TRUE(s.session->submitTrailers(id, t).ok());
  };
  std::vector<int32_t> ids;
  HeaderField h[] = {{"content-type", "application/grpc", false}, {"te", "trailers", false}};
  for (int i = 0; i < 100; ++i) {
    auto id = c.session->submitRequest(makeRequest("POST", "/pkg.S/M", h), false);
    ASSERT_TRUE(id.ok()) << i << " " << id.status();
    ASSERT_TRUE(c.session->submitData(*id, bytes(absl::StrCat("m", i)), true).ok());
    ids.push_back(*id);
  }
  EXPECT_FALSE(c.session->canOpenStream());  // our own limit: 100
  ASSERT_TRUE(pump(*c.session, *s.session));
  for (int i = 0; i < 100; ++i) {
    const StreamLog& r = c.handler.streams[ids[i]];
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, absl::StrCat("re:m", i));
    EXPECT_EQ(r.trailers, (Fields{{"grpc-status", "0"}}));
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(find(s.handler.streams[ids[i]].headers, "te"), "trailers");
  }
  EXPECT_EQ(c.session->openStreams(), 0u);
  EXPECT_EQ(s.session->openStreams(), 0u);
  EXPECT_TRUE(c.session->canOpenStream());
}

TEST(Http2BackToBackTest, TrailersOnlyErrorParsesBack) {
  ServerFixture s;
  ClientFixture c;
  grpc::TrailersOnly t;
  s.handler.on_request = [&](int32_t id, bool) {
    t.build(grpc::Code::kUnavailable, "no healthy upstream: 100% down\n\xc3\xa9");
    ASSERT_TRUE(
        s.session->submitResponse(id, grpc::TrailersOnly::kHttpStatus, t.fields(), true).ok());
  };
  HeaderField h[] = {{"content-type", "application/grpc", false}};
  auto id = c.session->submitRequest(makeRequest("POST", "/pkg.S/M", h), true);
  ASSERT_TRUE(pump(*c.session, *s.session));
  const StreamLog& r = c.handler.streams[*id];
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.head_end);  // trailers-only: one HEADERS frame with END_STREAM
  EXPECT_TRUE(grpc::isGrpc(find(r.headers, "content-type")));
  EXPECT_EQ(find(r.headers, "grpc-status"), "14");
  EXPECT_EQ(find(r.headers, "grpc-message"), "no healthy upstream: 100%25 down%0A%C3%A9");
  EXPECT_EQ(grpc::percentDecodeMessage(find(r.headers, "grpc-message")),
            "no healthy upstream: 100% down\n\xc3\xa9");
}

TEST(Http2BackToBackTest, RequestBodyBackpressureEndToEnd) {
  Limits l;
  l.initial_stream_window = 65535;
  ServerFixture s(l);
  ClientFixture c;
  s.handler.auto_consume = false;
  const std::string body = pattern(500000);
  size_t sent = 0;
  auto push = [&](int32_t id) {
    while (sent < body.size()) {
      size_t chunk = std::min<size_t>(8192, body.size() - sent);
      auto n = c.session->submitData(id, bytes(std::string_view(body).substr(sent, chunk)),
                                     sent + chunk == body.size());
      ASSERT_TRUE(n.ok());
      sent += *n;
      if (*n < chunk) return;
    }
  };
  auto id = c.session->submitRequest(makeRequest("PUT", "/x"), false);
  ASSERT_TRUE(id.ok());
  c.handler.on_ready = push;
  push(*id);
  size_t consumed = 0;
  for (int round = 0; !s.handler.streams[*id].ended; ++round) {
    ASSERT_TRUE(pump(*c.session, *s.session));
    size_t outstanding = s.handler.streams[*id].body.size() - consumed;
    ASSERT_LE(outstanding, l.initial_stream_window);
    // What the client holds back stays within its bounded queue.
    ASSERT_TRUE(s.session->consume(*id, outstanding).ok());
    consumed += outstanding;
    ASSERT_LT(round, 1000);
  }
  EXPECT_EQ(s.handler.streams[*id].body, body);
}

// ---- gRPC helpers ------------------------------------------------------------------

TEST(GrpcTest, TimeoutTable) {
  struct Case {
    const char* in;
    int64_t ms;  // -1: invalid
  } cases[] = {
      {"100m", 100},
      {"5S", 5000},
      {"1H", 3'600'000},
      {"2M", 120'000},
      {"0m", 0},
      {"1u", 1},
      {"1000u", 1},
      {"1001u", 2},
      {"1n", 1},
      {"1000000n", 1},
      {"99999999S", 99'999'999'000},
      {"99999999H", 99'999'999LL * 3'600'000},
      {"", -1},
      {"m", -1},
      {"100", -1},
      {"100x", -1},
      {"123456789m", -1},
      {"-1S", -1},
      {"1 S", -1},
      {" 1S", -1},
      {"1.5S", -1},
      {"1s", -1},
      {"1h", -1},
      {"+1S", -1},
  };
  for (const Case& c : cases) {
    auto ms = grpc::parseTimeoutMs(c.in);
    if (c.ms < 0) {
      EXPECT_FALSE(ms.ok()) << c.in;
      EXPECT_EQ(ms.status().code(), absl::StatusCode::kInvalidArgument);
    } else {
      ASSERT_TRUE(ms.ok()) << c.in << " " << ms.status();
      EXPECT_EQ(*ms, static_cast<uint64_t>(c.ms)) << c.in;
    }
  }
}

TEST(GrpcTest, HttpStatusTable) {
  using grpc::Code;
  std::pair<uint16_t, Code> cases[] = {
      {400, Code::kInternal},      {401, Code::kUnauthenticated}, {403, Code::kPermissionDenied},
      {404, Code::kUnimplemented}, {429, Code::kUnavailable},     {502, Code::kUnavailable},
      {503, Code::kUnavailable},   {504, Code::kUnavailable},     {500, Code::kUnknown},
      {418, Code::kUnknown},       {301, Code::kUnknown},
  };
  for (auto [http, code] : cases) {
    EXPECT_EQ(grpc::codeFromHttpStatus(http), code) << http;
  }
  EXPECT_STREQ(grpc::codeName(Code::kResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_STREQ(grpc::codeName(static_cast<Code>(99)), "UNKNOWN_CODE");
}

TEST(GrpcTest, ContentType) {
  EXPECT_TRUE(grpc::isGrpc("application/grpc"));
  EXPECT_TRUE(grpc::isGrpc("application/grpc+proto"));
  EXPECT_TRUE(grpc::isGrpc("Application/GRPC;charset=utf-8"));
  EXPECT_FALSE(grpc::isGrpc("application/grpcx"));
  EXPECT_FALSE(grpc::isGrpc("application/grpc-web"));
  EXPECT_FALSE(grpc::isGrpc("application/json"));
  EXPECT_FALSE(grpc::isGrpc(""));
}

TEST(GrpcTest, MessageEncoding) {
  std::string out;
  grpc::percentEncodeMessage("a b%c\x7f\x01", &out);
  EXPECT_EQ(out, "a b%25c%7F%01");
  EXPECT_EQ(grpc::percentDecodeMessage("a%20b%zz%4"), "a b%zz%4");  // malformed kept
}

TEST(GrpcTest, TrailersOnlyFields) {
  grpc::TrailersOnly t;
  t.build(grpc::Code::kDeadlineExceeded, "");
  EXPECT_EQ(copyFields(t.fields()),
            (Fields{{"content-type", "application/grpc"}, {"grpc-status", "4"}}));
  t.build(grpc::Code::kResourceExhausted, "overflow");
  EXPECT_EQ(copyFields(t.fields()), (Fields{{"content-type", "application/grpc"},
                                            {"grpc-status", "8"},
                                            {"grpc-message", "overflow"}}));
}

}  // namespace
}  // namespace meshd::proxy::http2
