// Internal to the HTTP/2 codec (not for the core): the per-stream state SessionBase keeps
// in its pool. Reused across streams; clear() keeps every buffer's capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http2/types.h"

namespace meshd::proxy::http2::detail {

// The pseudo-header fields we keep (nghttp2 has already checked which are allowed where).
enum Pseudo : uint8_t { kMethod, kScheme, kAuthority, kPath, kStatus, kProtocol, kPseudoCount };

// One received header or trailer section: names and values copied into `arena` as
// offsets while the block arrives, turned into views once it is complete (the arena may
// grow, and move, until then).
struct HeaderBlock {
  struct Span {
    uint32_t off = 0;
    uint32_t len = 0;
  };
  struct Field {
    Span name;
    Span value;
  };
  std::string arena;
  std::vector<Field> fields;
  std::vector<HeaderField> views;
  Span pseudo[kPseudoCount];
  bool has_pseudo[kPseudoCount] = {};
  size_t list_size = 0;    // RFC 9113 §6.5.2 size of what was received
  bool too_large = false;  // over max_header_list_size or max_headers: nothing kept

  void clear() {
    arena.clear();
    fields.clear();
    views.clear();
    for (bool& h : has_pseudo) h = false;
    list_size = 0;
    too_large = false;
  }
  std::string_view view(Span s) const { return std::string_view(arena).substr(s.off, s.len); }
  std::string_view pseudoValue(Pseudo p) const {
    return has_pseudo[p] ? view(pseudo[p]) : std::string_view();
  }
  // Fills `views` from `fields` (call once the block is complete).
  void materialize();
};

struct Stream {
  int32_t id = 0;
  HeaderBlock head;             // request (server) or response (client) header section
  HeaderBlock trailers;         // received trailer section (valid during onTrailers only)
  bool head_delivered = false;  // the final head was received and handled
  bool notify_close = false;    // the handler knows the stream: tell it when it closes
  bool in_trailers = false;     // the block being received is a trailer section
  bool refused = false;         // server: answered 431 by us; its DATA is dropped
  bool answered = false;        // server: response head submitted
  size_t unconsumed = 0;        // DATA bytes delivered and not yet consume()d
  // Send side: the body queue nghttp2's data provider reads from.
  bool has_body = false;    // a data provider is attached
  bool send_end = false;    // no more data will be queued (trailers may follow)
  bool deferred = false;    // the provider returned DEFERRED: resume on new data
  bool want_ready = false;  // submitData() took less than offered: call onSendReady
  bool send_trailers = false;
  std::string send_buf;
  size_t send_off = 0;
  // Trailers to send after the body: names (lower-cased) and values back to back.
  std::string out_trailer_bytes;
  std::vector<std::pair<uint32_t, uint32_t>> out_trailer_lens;  // name, value lengths

  size_t queued() const { return send_buf.size() - send_off; }
  void clear() {
    id = 0;
    head.clear();
    trailers.clear();
    head_delivered = notify_close = in_trailers = refused = answered = false;
    unconsumed = 0;
    has_body = send_end = deferred = want_ready = send_trailers = false;
    send_buf.clear();
    send_off = 0;
    out_trailer_bytes.clear();
    out_trailer_lens.clear();
  }
};

}  // namespace meshd::proxy::http2::detail
