// Incremental HTTP/1.1 response parser for the load generator: finds where one response
// ends on a keep-alive connection. It validates the framing (status line, header syntax,
// Content-Length, chunked encoding) strictly, since a framing mistake would silently
// misattribute bytes to the next request's latency; it does not keep header values or
// the body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace meshd::loadgen {

class HttpResponseParser {
 public:
  enum class Result { kNeedMore, kComplete, kError };

  // Bounds on what is buffered: a response head and a chunk-size line.
  static constexpr size_t kMaxHeadBytes = 64 * 1024;
  static constexpr size_t kMaxLineBytes = 4096;

  // Prepares for the next response on the connection.
  void reset();

  // Consumes bytes of the response. Returns kComplete once the last byte of the response
  // was consumed, with *consumed = the bytes of `data` that belong to it (the rest would
  // belong to a response nobody asked for); kNeedMore when all of `data` was consumed
  // and more is needed; kError on malformed framing (see error()).
  Result feed(std::string_view data, size_t* consumed);

  // The peer closed the connection. Returns kComplete if the body was delimited by the
  // close (no Content-Length, not chunked), else kError ("closed mid-response").
  Result finishOnEof();

  // Valid after kComplete: the final (non-1xx) status code, and whether the connection
  // may carry another request (HTTP/1.1 without "Connection: close", or 1.0 with
  // keep-alive, and a body not delimited by close).
  int status() const { return status_; }
  bool keepAlive() const { return keep_alive_; }
  // True once any byte of the response arrived (a close before that is not a parse error
  // but a connection the server dropped between requests).
  bool started() const { return started_; }
  const std::string& error() const { return error_; }

 private:
  enum class State {
    kHead,
    kBodyLength,
    kChunkSize,
    kChunkData,
    kChunkDataEnd,
    kTrailers,
    kBodyUntilClose,
    kDone,
    kFailed
  };

  Result fail(std::string message);
  // Parses head_ (status line and headers, without the final CRLF CRLF) and chooses the
  // body framing. Returns false (after fail()) on malformed input.
  bool parseHead(std::string_view head);
  // Extracts one CRLF-terminated line into line_ from data; returns false if incomplete.
  bool takeLine(std::string_view data, size_t* pos, bool* too_long);

  State state_ = State::kHead;
  std::string head_;
  std::string line_;
  uint64_t remaining_ = 0;
  int status_ = 0;
  bool keep_alive_ = true;
  bool started_ = false;
  std::string error_;
};

}  // namespace meshd::loadgen
