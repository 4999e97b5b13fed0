// libFuzzer target for the L7 proxy's HTTP/2 server session (userspace/proxy/http2):
// arbitrary bytes after the client connection preface, fed in pieces, to a ServerSession
// whose handler answers every request (head, body, and trailers or a reset), passes
// received bytes on (consume) and reads the output — or, for some inputs, never reads it
// (the flood paths). The first input byte picks small or default limits, whether output
// is read, and seeds the split points; the rest is the byte stream.
// Checks, besides "no crash, hang or leak" (ASan) and bounded memory (-rss_limit_mb):
//  - handler events are coherent: every stream reported closed was reported opened, once;
//    data, trailers and closes only for opened streams; no event after close;
//  - streams open never exceed max_concurrent_streams (+1: the stream being refused);
//  - once feed() fails it keeps failing with the same error.
// A broken invariant is __builtin_trap(), which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "proxy/http2/server_session.h"
#include "proxy/http2/types.h"

namespace meshd::proxy::http2 {
namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

class FixedClock final : public Clock {
 public:
  uint64_t nowMs() const override { return now; }
  uint64_t now = 0;
};

class Answering final : public ServerHandler {
 public:
  void onRequest(int32_t id, const RequestHeaders& r, bool end_stream) override {
    check(open.insert(id).second);
    check(!r.method.empty());
    (void)end_stream;
    static constexpr HeaderField kHead[] = {{"content-type", "application/grpc", false},
                                            {"x-answer", "1", false}};
    switch (id % 4) {
      case 1:
        (void)session->submitResponse(id, 200, kHead, false);
        (void)session->submitData(id, absl::MakeConstSpan(kBody, sizeof(kBody)), false);
        (void)session->submitTrailers(id, kTrailers);
        break;
      case 3:
        if (id % 8 == 3) {
          (void)session->resetStream(id, kCancel);
        } else {
          (void)session->submitResponse(id, 204, {}, true);
        }
        break;
    }
  }
  void onData(int32_t id, absl::Span<const uint8_t> data, bool) override {
    check(open.count(id) == 1);
    if (!data.empty()) check(session->consume(id, data.size()).ok());
  }
  void onTrailers(int32_t id, absl::Span<const HeaderField>) override {
    check(open.count(id) == 1);
  }
  void onStreamClosed(int32_t id, uint32_t) override { check(open.erase(id) == 1); }

  ServerSession* session = nullptr;
  std::set<int32_t> open;
  static constexpr uint8_t kBody[] = {0, 0, 0, 0, 2, 'h', 'i'};
  static constexpr HeaderField kTrailers[] = {{"grpc-status", "0", false}};
};

}  // namespace
}  // namespace meshd::proxy::http2

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace meshd::proxy::http2;
  if (size == 0) return 0;
  const uint8_t config = data[0];
  Limits limits;
  if (config & 0x80) {
    limits.max_concurrent_streams = 4;
    limits.max_header_list_size = 512;
    limits.max_headers = 8;
    limits.initial_stream_window = 1024;
    limits.max_continuations = 2;
    limits.max_outbound_ack = 16;
    limits.max_premature_resets = 8;
    limits.max_stream_send_buffer = 64;
  }
  const bool read_output = (config & 0x40) == 0;
  FixedClock clock;
  Answering handler;
  auto created = ServerSession::create(handler, limits, clock);
  check(created.ok());
  ServerSession& session = **created;
  handler.session = &session;

  std::string input(kClientPreface);
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);
  uint32_t state = config;
  std::string out;
  absl::Status failure;
  size_t at = 0;
  while (at < input.size()) {
    state = state * 1103515245u + 12345u;
    size_t piece = 1 + ((state >> 16) % 64);
    if (piece > input.size() - at) piece = input.size() - at;
    absl::Status st = session.feed(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(input.data()) + at, piece));
    at += piece;
    if (!failure.ok()) check(st == failure);
    if (!st.ok()) failure = st;
    check(session.openStreams() <= limits.max_concurrent_streams + 1);
    clock.now += 7;
    if (read_output) {
      out.clear();
      session.produce(out, 1 << 20);
    }
  }
  out.clear();
  session.produce(out);
  return 0;
}
