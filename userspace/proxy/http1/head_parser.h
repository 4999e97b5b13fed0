// Strict, incremental, allocation-free HTTP/1.1 head parsers (RFC 9112) for the L7
// proxy: RequestParser for what clients send, ResponseParser for what upstreams answer.
// Every strictness decision, and why, is in docs/design/0003-l7-proxy.md
// ("HTTP/1.1 parser").
//
// Usage: keep the bytes of the message received so far in one buffer and call
// parse(buffer) after each read. The buffer must start with the message's first byte
// and keep the bytes given before (it may move: the parser keeps offsets, not
// pointers, until the head is complete). Work is resumed where the previous call
// stopped, so a head fed byte by byte costs the same as one fed whole, and the result
// depends only on the bytes, never on how they were split.
//
// When parse() returns kDone, head() holds string_views into that last buffer: they
// stay valid while the caller keeps the buffer unchanged. headLength() is the number
// of head bytes; what follows is the body (see framing) or the next request.
// Each parser allocates its field table once, in its constructor; parsing allocates
// nothing. reset() readies it for the next message on the connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/types/span.h"

namespace meshd::proxy::http1 {

struct Limits {
  // Head bytes (request- or status-line, fields, the empty line; a tolerated leading
  // CRLF counts). Envoy's default max_request_headers_kb is 60.
  size_t max_head_bytes = 60 * 1024;
  // Field lines in a head (and in a trailer section). Envoy's default is 100.
  size_t max_headers = 100;
  // Bytes of one chunk-size line, chunk extensions and CRLF included.
  size_t max_chunk_line_bytes = 4096;
  // Bytes of chunk extensions over a whole chunked body (bounds the work a client can
  // cause with tiny chunks carrying long extensions).
  size_t max_chunk_extension_bytes = 16 * 1024;
};

enum class ParseStatus : uint8_t { kNeedMore, kDone, kError };

// Why a message was refused: the HTTP status to answer with (400, 417, 431, 501, 505
// for requests; 502 for every response error) and a short reason naming what was
// wrong. `reason` points to a string literal.
struct ParseError {
  uint16_t status = 0;
  std::string_view reason;
};

enum class Version : uint8_t { kHttp10, kHttp11 };

enum class BodyKind : uint8_t {
  kNone,            // no body: the next byte starts the next message
  kContentLength,   // exactly `content_length` bytes
  kChunked,         // the chunked coding (ChunkedDecoder)
  kCloseDelimited,  // responses only: everything until the upstream closes
  kTunnel,          // responses only: 101 or a 2xx to CONNECT; bytes flow both ways raw
};

struct HeaderField {
  std::string_view name;
  std::string_view value;  // leading and trailing OWS removed
  // A hop-by-hop field the proxy must not forward: Connection, Proxy-Connection,
  // Keep-Alive, TE, Transfer-Encoding, Upgrade, and every field named in Connection.
  bool hop_by_hop = false;
};

// How the message's body is delimited and what the connection does afterwards.
struct Framing {
  BodyKind body = BodyKind::kNone;
  uint64_t content_length = 0;  // kContentLength only
  // The connection can carry another message after this one.
  bool keep_alive = false;
};

enum class TargetForm : uint8_t { kOrigin, kAbsolute, kAuthority, kAsterisk };

struct RequestHead {
  std::string_view method;
  std::string_view target;
  Version version = Version::kHttp11;
  TargetForm form = TargetForm::kOrigin;
  // The authority the request is for: the absolute-form target's (which must then equal
  // Host), CONNECT's authority-form target, otherwise Host's value.
  std::string_view authority;
  absl::Span<const HeaderField> headers;
  Framing framing;
  bool expect_continue = false;  // Expect: 100-continue (HTTP/1.1 only)
  bool connect = false;          // CONNECT: a tunnel once the upstream answers 2xx
  // Upgrade offered (Upgrade field + "upgrade" Connection option, HTTP/1.1 only):
  // `upgrade` is the Upgrade field's value, e.g. "websocket".
  bool upgrade_requested = false;
  std::string_view upgrade;
};

struct ResponseHead {
  Version version = Version::kHttp11;
  uint16_t status = 0;
  std::string_view reason;
  absl::Span<const HeaderField> headers;
  Framing framing;
  // 1xx other than 101: the final response follows on the same connection (parse it
  // after reset()); framing.body is kNone.
  bool informational = false;
};

// What the response is an answer to (it decides body rules: RFC 9112 §6.3).
struct RequestContext {
  bool head = false;               // a HEAD request: no response body whatever the fields say
  bool connect = false;            // CONNECT: a 2xx opens a tunnel
  bool upgrade_requested = false;  // a 101 is only valid when an upgrade was offered
};

namespace detail {

// The field table and line loop shared by both parsers; offsets, not pointers, until the
// head is complete (the caller's buffer may move between calls).
class HeadParserBase {
 public:
  explicit HeadParserBase(const Limits& limits);

  size_t headLength() const { return head_length_; }
  const ParseError& error() const { return error_; }
  const Limits& limits() const { return limits_; }

 protected:
  ~HeadParserBase() = default;  // never deleted through the base

  struct FieldSpan {
    uint32_t name_off;
    uint32_t name_len;
    uint32_t value_off;
    uint32_t value_len;
  };
  // Known field names, so each is compared once per line.
  enum class Known : uint8_t {
    kOther,
    kContentLength,
    kTransferEncoding,
    kHost,
    kConnection,
    kProxyConnection,
    kKeepAlive,
    kTe,
    kUpgrade,
    kExpect,
    // transfer_encoding / content_length (any case): a backend that maps '_' to '-' (CGI
    // does) would frame by a field the proxy ignored.
    kFramingLookalike,
  };

  void resetBase();
  ParseStatus fail(uint16_t status, std::string_view reason);
  // Splits complete lines off `data` from where the last call stopped; calls
  // startLine() for the first and fieldLine() for the others, endOfHead() at the empty
  // line. Enforces CRLF endings and the byte and field-count limits.
  ParseStatus run(std::string_view data, uint16_t bad_status, uint16_t too_large_status);
  // Checks one field line (without CRLF) and records it; returns false after fail().
  bool fieldLine(std::string_view data, size_t begin, size_t end, uint16_t bad_status,
                 uint16_t too_large_status);
  Known classify(std::string_view name) const;
  std::string_view fieldName(std::string_view data, size_t i) const {
    return data.substr(fields_[i].name_off, fields_[i].name_len);
  }
  std::string_view fieldValue(std::string_view data, size_t i) const {
    return data.substr(fields_[i].value_off, fields_[i].value_len);
  }
  // Fills views_ for `data`, marks hop-by-hop fields; false after fail() (a bad
  // Connection option).
  bool materialize(std::string_view data, uint16_t bad_status);
  // Connection options seen (computed by materialize()).
  struct ConnectionOptions {
    bool close = false;
    bool keep_alive = false;
    bool upgrade = false;
  };

  virtual bool startLine(std::string_view data, size_t begin, size_t end) = 0;
  virtual ParseStatus endOfHead(std::string_view data) = 0;
  virtual bool allowLeadingEmptyLine() const = 0;

  Limits limits_;
  std::unique_ptr<FieldSpan[]> fields_;
  std::unique_ptr<HeaderField[]> views_;
  std::unique_ptr<Known[]> known_;
  size_t field_count_ = 0;
  size_t line_start_ = 0;  // first byte of the line being read
  size_t scan_ = 0;        // where the search for its LF resumes
  size_t head_length_ = 0;
  bool seen_start_line_ = false;
  bool skipped_empty_line_ = false;
  ParseStatus status_ = ParseStatus::kNeedMore;
  ParseError error_;
  ConnectionOptions connection_;
};

}  // namespace detail

// Parses request heads (server side of the proxy). Errors carry the status to answer
// the client with; after any error the connection must be closed.
class RequestParser final : public detail::HeadParserBase {
 public:
  explicit RequestParser(const Limits& limits = Limits());

  // Returns kNeedMore (feed more bytes of the same message), kDone (head() and
  // headLength() are set) or kError (error() is set). After kDone or kError the result is
  // sticky until reset().
  ParseStatus parse(std::string_view data);
  const RequestHead& head() const { return head_; }
  void reset();

 private:
  bool startLine(std::string_view data, size_t begin, size_t end) override;
  ParseStatus endOfHead(std::string_view data) override;
  bool allowLeadingEmptyLine() const override { return true; }
  bool checkTarget(std::string_view data);

  RequestHead head_;
  // Start-line parts as offsets (the buffer may move before the head is complete).
  size_t method_off_ = 0, method_len_ = 0, target_off_ = 0, target_len_ = 0;
};

// Parses upstream response heads (client side of the proxy). Every error is a 502 for
// the downstream client: the upstream broke the protocol.
class ResponseParser final : public detail::HeadParserBase {
 public:
  explicit ResponseParser(const Limits& limits = Limits());

  // As RequestParser::parse(); `request` says what the response answers.
  ParseStatus parse(std::string_view data, const RequestContext& request);
  const ResponseHead& head() const { return head_; }
  void reset();

 private:
  bool startLine(std::string_view data, size_t begin, size_t end) override;
  ParseStatus endOfHead(std::string_view data) override;
  bool allowLeadingEmptyLine() const override { return false; }

  ResponseHead head_;
  RequestContext request_;
  size_t reason_off_ = 0, reason_len_ = 0;
};

}  // namespace meshd::proxy::http1
