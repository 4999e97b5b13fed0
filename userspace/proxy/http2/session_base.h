// The part of the HTTP/2 codec both ends share (server_session.h, client_session.h): one
// nghttp2 session driven sans-I/O. Bytes read from the socket go to feed(); what to
// write comes out of produce(); every event reaches a handler interface, synchronously,
// from inside feed() or produce().
//
// Streams live in a pool owned by the session and reused across streams: header bytes
// are copied into a per-stream arena whose capacity is kept, so in the steady state a
// request costs no allocation of ours (nghttp2 allocates its own per-stream state).
//
// Flow control is the caller's: received DATA re-opens the peer's window only when the
// caller consume()s it (nghttp2's automatic WINDOW_UPDATE is off), so a slow other side
// stops a fast peer after Limits::initial_stream_window bytes per stream and
// Limits::initial_connection_window per connection.
//
// Sending a body: submitData() copies into the stream's bounded queue (at most
// Limits::max_stream_send_buffer bytes); nghttp2 pulls from it as the peer's window
// allows. When the queue was full, the handler's onSendReady() says when it has drained.
//
// A connection error (our limits, nghttp2's protocol checks, its flood protections)
// makes feed() return a non-OK status; a GOAWAY is then queued when the protocol allows
// it: keep calling produce() until wantsWrite() is false, then close the socket.
// shouldClose() says when both directions are done.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "proxy/http2/types.h"

struct nghttp2_session;

namespace meshd::proxy::http2 {
namespace detail {

struct Stream;
struct Callbacks;

class SessionBase {
 public:
  SessionBase(const SessionBase&) = delete;
  SessionBase& operator=(const SessionBase&) = delete;

  // Processes bytes received from the peer. Handler callbacks run from inside. Returns
  // OK, or the connection error that ended the session (it names what the peer did); the
  // same error is returned by every later call, which reads nothing. The session never
  // keeps pointers into `data`.
  absl::Status feed(absl::Span<const uint8_t> data);

  // True when produce() has bytes to give.
  bool wantsWrite() const;
  // Appends up to `max_bytes` bytes to send to `out` and returns how many. Data-provider
  // reads and onSendReady() run from inside. With enough capacity reserved in `out`
  // (one buffer per connection, reused), this allocates nothing.
  size_t produce(std::string& out, size_t max_bytes = SIZE_MAX);
  // True when the session neither reads nor writes any more (GOAWAY exchanged and all
  // streams closed, or a connection error whose GOAWAY has been produced): close.
  bool shouldClose() const;

  // Tells the session `n` bytes of `stream_id`'s received DATA have been passed on, which
  // re-opens that much of the peer's stream and connection windows. Consuming more than
  // was delivered is InvalidArgument; a stream already closed is OK (its unconsumed bytes
  // were returned to the connection window when it closed).
  absl::Status consume(int32_t stream_id, size_t n);

  // Queues body bytes of the message we send on `stream_id` (after the response or
  // request head was submitted without end_stream). Returns how many bytes were taken,
  // up to the queue's free space; the rest must be resubmitted after onSendReady().
  // `end_stream` takes effect only when all of `data` was taken. FailedPrecondition when
  // the stream has no open body (unknown stream, head not submitted, already ended).
  absl::StatusOr<size_t> submitData(int32_t stream_id, absl::Span<const uint8_t> data,
                                    bool end_stream);
  // Ends the body of `stream_id` with a trailer section, sent after the queued data.
  // Hop-by-hop fields are dropped and names lower-cased. FailedPrecondition as above.
  absl::Status submitTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers);
  // Sends RST_STREAM with `error_code`. NotFound when the stream is not open.
  absl::Status resetStream(int32_t stream_id, uint32_t error_code);
  // kNoError: graceful GOAWAY (streams already started finish; no new ones). Any other
  // code: GOAWAY with that code and the session closes once it is sent.
  void goaway(uint32_t error_code = kNoError);

  // Streams open in the session (ours and the peer's).
  size_t openStreams() const;
  // True once a GOAWAY was received from the peer.
  bool goawayReceived() const { return goaway_received_; }
  // The error code of the connection error (0 while there is none).
  uint32_t connectionErrorCode() const { return error_code_; }
  const Limits& limits() const { return limits_; }

 protected:
  SessionBase(const Limits& limits, const Clock& clock);
  virtual ~SessionBase();

  // Creates the nghttp2 session and queues our SETTINGS.
  absl::Status init(bool server);
  static absl::Status validate(const Limits& limits);

  // Handler dispatch, implemented by each end. `stream.head` holds the header section.
  virtual void deliverHead(Stream& stream, bool end_stream) = 0;
  virtual void deliverData(int32_t stream_id, absl::Span<const uint8_t> data, bool end_stream) = 0;
  virtual void deliverTrailers(int32_t stream_id, absl::Span<const HeaderField> trailers) = 0;
  virtual void deliverClosed(int32_t stream_id, uint32_t error_code) = 0;
  virtual void deliverSendReady(int32_t stream_id) = 0;
  virtual void deliverGoaway(int32_t last_stream_id) { (void)last_stream_id; }
  // A RST_STREAM from the peer on `stream` (the server counts premature resets).
  virtual void onPeerReset(Stream& stream) { (void)stream; }

  Stream* acquireStream();
  void releaseStream(Stream* stream);
  Stream* findStream(int32_t stream_id) const;
  // Builds nghttp2_nv entries in the scratch buffers (names lower-cased, hop-by-hop and
  // connection-specific fields skipped; `te` kept only as "trailers" when `allow_te`).
  // The result is valid until the next call.
  void buildNv(absl::Span<const std::pair<std::string_view, std::string_view>> pseudo,
               absl::Span<const HeaderField> fields, bool allow_te);
  // Submits the head built by buildNv() for `stream`: a request (client; returns the
  // new stream id) or a response (server; returns 0). Unless `end_stream`, a data
  // provider reading the stream's send queue is attached. Negative: nghttp2's error.
  int32_t submitHead(Stream& stream, bool request, bool end_stream);
  bool hasOpenBody(const Stream& stream) const;
  // Ends the session with GOAWAY `code`; feed() returns `status` from now on.
  void fail(uint32_t code, absl::Status status);
  // nghttp2 queues a GOAWAY for the connection errors it finds itself and says so only
  // when the frame is serialized (want_read stays true until it is sent). So after each
  // mem_recv, feed() serializes the queued control frames (not DATA: they are only pulled
  // once this queue is empty) into early_, which makes onFrameSend() see the GOAWAY and
  // feed() return the error at once. Bounded at about 64 KiB per feed().
  void serializeControlFrames();
  void addUnsent(Stream* stream) { unsent_.push_back(stream); }
  Stream* removeUnsent(int32_t stream_id);
  bool failed() const { return !failure_.ok(); }

  nghttp2_session* session_ = nullptr;
  Limits limits_;
  const Clock& clock_;
  // Scratch for submissions (nghttp2 copies what it is given): the nghttp2_nv array and
  // the lower-cased names it points into. Defined in the .cc (nghttp2_nv is an anonymous
  // struct in nghttp2.h and cannot be forward-declared).
  struct NvScratch;
  std::unique_ptr<NvScratch> nv_;

 private:
  friend struct Callbacks;

  std::vector<std::unique_ptr<Stream>> streams_;  // every Stream ever made (the pool)
  std::vector<Stream*> free_;
  absl::Status failure_;
  uint32_t error_code_ = 0;
  bool goaway_received_ = false;
  bool local_goaway_ = false;
  bool abort_ = false;  // nghttp2 failed fatally: close without writing more
  // Control frames serialized by feed() (see serializeControlFrames()), given out by
  // produce() before anything else.
  std::string early_;
  size_t early_off_ = 0;
  // Client streams submitted and not yet serialized (nghttp2 creates its stream, and so
  // its stream user data, only when the HEADERS frame goes out).
  std::vector<Stream*> unsent_;
  std::vector<int32_t> ready_;  // streams to tell onSendReady() after a mem_send
  std::string last_error_;      // nghttp2's description of the last protocol error it saw
  // produce(): the part of nghttp2's last output chunk not yet given out.
  const uint8_t* pending_ = nullptr;
  size_t pending_size_ = 0;
};

}  // namespace detail
}  // namespace meshd::proxy::http2
