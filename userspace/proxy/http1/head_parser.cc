#include "proxy/http1/head_parser.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "proxy/http1/chars.h"

namespace meshd::proxy::http1 {

namespace {

using chars::equalsIgnoreCase;
using chars::equalsLower;
using chars::ows;

constexpr size_t kMaxConnectionOptions = 64;

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && ows(s.back())) s.remove_suffix(1);
  return s;
}

// uri-host [ ":" port ] (RFC 3986 §3.2.2-3): reg-name/IPv4 or a bracketed IP literal; a
// port, when present, is 1-5 digits up to 65535. No userinfo.
bool validAuthority(std::string_view s, bool require_port) {
  size_t i = 0;
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (size_t k = 1; k < close; ++k) {
      const char c = s[k];
      if (!(chars::hexValue(c) >= 0 || c == ':' || c == '.')) return false;
    }
    i = close + 1;
  } else {
    while (i < s.size() && chars::kRegName[static_cast<uint8_t>(s[i])]) ++i;
    if (i == 0) return false;
  }
  if (i == s.size()) return !require_port;
  if (s[i] != ':') return false;
  const std::string_view port = s.substr(i + 1);
  if (port.empty() || port.size() > 5) return false;
  uint32_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  return value <= 65535;
}

// Content-Length = 1*DIGIT (RFC 9110 §8.6): no sign, no inner space, no list. Leading
// zeros are digits (the proxy re-emits the number it parsed). False on overflow.
bool parseContentLength(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

enum class TransferCoding { kChunked, kChunkedNotFinal, kUnsupported, kMalformed };

// Transfer-Encoding's value: we accept exactly "chunked" (case-insensitive, RFC 9112 §7).
// Elements are tokens separated by OWS "," OWS; parameters and empty elements are refused.
TransferCoding parseTransferEncoding(std::string_view value) {
  bool last_chunked = false;
  bool other = false;
  size_t elements = 0;
  bool chunked_seen = false;
  while (true) {
    const size_t comma = value.find(',');
    const std::string_view element = trimOws(value.substr(0, comma));
    if (element.empty()) return TransferCoding::kMalformed;
    for (char c : element) {
      if (!chars::tchar(c)) return TransferCoding::kMalformed;
    }
    ++elements;
    last_chunked = equalsLower(element, "chunked");
    if (last_chunked) {
      if (chunked_seen) return TransferCoding::kChunkedNotFinal;  // chunked applied twice
      chunked_seen = true;
    } else {
      other = true;
    }
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  if (!last_chunked) return TransferCoding::kChunkedNotFinal;
  return other ? TransferCoding::kUnsupported : TransferCoding::kChunked;
}

}  // namespace

namespace detail {

HeadParserBase::HeadParserBase(const Limits& limits)
    : limits_(limits),
      fields_(new FieldSpan[std::max<size_t>(limits.max_headers, 1)]),
      views_(new HeaderField[std::max<size_t>(limits.max_headers, 1)]),
      known_(new Known[std::max<size_t>(limits.max_headers, 1)]) {
  // Offsets are 32-bit: a head is never near 4 GiB.
  limits_.max_head_bytes = std::min<size_t>(limits_.max_head_bytes, 1u << 30);
}

void HeadParserBase::resetBase() {
  field_count_ = 0;
  line_start_ = 0;
  scan_ = 0;
  head_length_ = 0;
  seen_start_line_ = false;
  skipped_empty_line_ = false;
  status_ = ParseStatus::kNeedMore;
  error_ = ParseError();
  connection_ = ConnectionOptions();
}

ParseStatus HeadParserBase::fail(uint16_t status, std::string_view reason) {
  error_ = ParseError{status, reason};
  status_ = ParseStatus::kError;
  return status_;
}

ParseStatus HeadParserBase::run(std::string_view data, uint16_t bad_status,
                                uint16_t too_large_status) {
  if (status_ != ParseStatus::kNeedMore) return status_;
  if (data.size() < scan_) return fail(bad_status, "parser misuse: buffer shorter than before");
  const size_t max = limits_.max_head_bytes;
  while (true) {
    // Only LFs that end a line within the limit count; a line ending past it means the
    // head is too large, whatever else is wrong with it (so the verdict does not depend
    // on how the bytes were split).
    const size_t limit = std::min(data.size(), max);
    const char* lf_ptr = nullptr;
    if (scan_ < limit) {
      lf_ptr = static_cast<const char*>(std::memchr(data.data() + scan_, '\n', limit - scan_));
    }
    if (lf_ptr == nullptr) {
      if (data.size() > max) return fail(too_large_status, "head larger than the configured limit");
      scan_ = limit;
      return ParseStatus::kNeedMore;
    }
    const size_t lf = static_cast<size_t>(lf_ptr - data.data());
    const size_t begin = line_start_;
    line_start_ = scan_ = lf + 1;
    if (lf == begin || data[lf - 1] != '\r') {
      return fail(bad_status, "bare LF: lines must end with CRLF");
    }
    const size_t end = lf - 1;
    if (std::memchr(data.data() + begin, '\r', end - begin) != nullptr) {
      return fail(bad_status, "bare CR inside a line");
    }
    if (!seen_start_line_) {
      if (end == begin) {
        if (allowLeadingEmptyLine() && !skipped_empty_line_) {
          skipped_empty_line_ = true;
          continue;
        }
        return fail(bad_status, "empty line before the start line");
      }
      if (!startLine(data, begin, end)) return status_;
      seen_start_line_ = true;
      continue;
    }
    if (end == begin) {
      head_length_ = lf + 1;
      return endOfHead(data);
    }
    if (!fieldLine(data, begin, end, bad_status, too_large_status)) return status_;
  }
}

bool HeadParserBase::fieldLine(std::string_view data, size_t begin, size_t end, uint16_t bad_status,
                               uint16_t too_large_status) {
  if (ows(data[begin])) {
    fail(bad_status, "obs-fold: a field line starts with whitespace");
    return false;
  }
  size_t i = begin;
  while (i < end && chars::tchar(data[i])) ++i;
  if (i == end) {
    fail(bad_status, "field line without ':'");
    return false;
  }
  if (data[i] != ':') {
    fail(bad_status,
         ows(data[i]) ? "whitespace between field name and ':'" : "invalid byte in field name");
    return false;
  }
  if (i == begin) {
    fail(bad_status, "empty field name");
    return false;
  }
  size_t v = i + 1;
  size_t e = end;
  while (v < e && ows(data[v])) ++v;
  while (e > v && ows(data[e - 1])) --e;
  for (size_t k = v; k < e; ++k) {
    if (!chars::fieldValue(data[k])) {
      fail(bad_status, data[k] == '\0' ? "NUL byte in field value" : "control byte in field value");
      return false;
    }
  }
  if (field_count_ >= limits_.max_headers) {
    fail(too_large_status, "more header fields than the configured limit");
    return false;
  }
  fields_[field_count_] = FieldSpan{static_cast<uint32_t>(begin), static_cast<uint32_t>(i - begin),
                                    static_cast<uint32_t>(v), static_cast<uint32_t>(e - v)};
  known_[field_count_] = classify(data.substr(begin, i - begin));
  ++field_count_;
  return true;
}

HeadParserBase::Known HeadParserBase::classify(std::string_view name) const {
  switch (name.size()) {
    case 2:
      if (equalsLower(name, "te")) return Known::kTe;
      break;
    case 4:
      if (equalsLower(name, "host")) return Known::kHost;
      break;
    case 6:
      if (equalsLower(name, "expect")) return Known::kExpect;
      break;
    case 7:
      if (equalsLower(name, "upgrade")) return Known::kUpgrade;
      break;
    case 10:
      if (equalsLower(name, "connection")) return Known::kConnection;
      if (equalsLower(name, "keep-alive")) return Known::kKeepAlive;
      break;
    case 14:
      if (equalsLower(name, "content-length")) return Known::kContentLength;
      if (equalsLower(name, "content_length")) return Known::kFramingLookalike;
      break;
    case 16:
      if (equalsLower(name, "proxy-connection")) return Known::kProxyConnection;
      break;
    case 17:
      if (equalsLower(name, "transfer-encoding")) return Known::kTransferEncoding;
      if (equalsLower(name, "transfer_encoding")) return Known::kFramingLookalike;
      break;
    default:
      break;
  }
  return Known::kOther;
}

bool HeadParserBase::materialize(std::string_view data, uint16_t bad_status) {
  for (size_t i = 0; i < field_count_; ++i) {
    views_[i] = HeaderField{fieldName(data, i), fieldValue(data, i), false};
    switch (known_[i]) {
      case Known::kConnection:
      case Known::kProxyConnection:
      case Known::kKeepAlive:
      case Known::kTe:
      case Known::kTransferEncoding:
      case Known::kUpgrade:
        views_[i].hop_by_hop = true;
        break;
      default:
        break;
    }
  }
  size_t options = 0;
  for (size_t i = 0; i < field_count_; ++i) {
    if (known_[i] != Known::kConnection) continue;
    std::string_view value = views_[i].value;
    while (true) {
      const size_t comma = value.find(',');
      const std::string_view option = trimOws(value.substr(0, comma));
      if (!option.empty()) {  // empty list elements are allowed (RFC 9110 §5.6.1.2)
        for (char c : option) {
          if (!chars::tchar(c)) {
            fail(bad_status, "Connection option is not a token");
            return false;
          }
        }
        if (++options > kMaxConnectionOptions) {
          fail(bad_status, "too many Connection options");
          return false;
        }
        if (equalsLower(option, "close")) connection_.close = true;
        if (equalsLower(option, "keep-alive")) connection_.keep_alive = true;
        if (equalsLower(option, "upgrade")) connection_.upgrade = true;
        // Fields named by Connection are hop-by-hop (RFC 9110 §7.6.1), except Host and
        // Content-Length: dropping those would change routing or framing at the next hop.
        for (size_t j = 0; j < field_count_; ++j) {
          if (known_[j] == Known::kHost || known_[j] == Known::kContentLength) continue;
          if (equalsIgnoreCase(views_[j].name, option)) views_[j].hop_by_hop = true;
        }
      }
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
  }
  return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Requests

RequestParser::RequestParser(const Limits& limits) : HeadParserBase(limits) {}

void RequestParser::reset() {
  resetBase();
  head_ = RequestHead();
  method_off_ = method_len_ = target_off_ = target_len_ = 0;
}

ParseStatus RequestParser::parse(std::string_view data) { return run(data, 400, 431); }

bool RequestParser::startLine(std::string_view data, size_t begin, size_t end) {
  // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
  size_t i = begin;
  while (i < end && chars::tchar(data[i])) ++i;
  if (i == begin) {
    fail(400, "request-line: method is not a token");
    return false;
  }
  if (i == end || data[i] != ' ') {
    fail(400, "request-line: method not followed by a single SP");
    return false;
  }
  const size_t t = i + 1;
  if (t < end && data[t] == ' ') {
    fail(400, "request-line: more than one SP");
    return false;
  }
  size_t j = t;
  while (j < end && chars::kTarget[static_cast<uint8_t>(data[j])]) ++j;
  if (j == end) {
    fail(400, "request-line: no HTTP version");
    return false;
  }
  if (data[j] != ' ') {
    fail(400, "request-line: invalid byte in request-target");
    return false;
  }
  if (j == t) {
    fail(400, "request-line: empty request-target");
    return false;
  }
  const std::string_view version = data.substr(j + 1, end - (j + 1));
  if (version == "HTTP/1.1") {
    head_.version = Version::kHttp11;
  } else if (version == "HTTP/1.0") {
    head_.version = Version::kHttp10;
  } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && version[5] >= '0' &&
             version[5] <= '9' && version[6] == '.' && version[7] >= '0' && version[7] <= '9') {
    fail(505, "HTTP version not supported (only HTTP/1.0 and HTTP/1.1)");
    return false;
  } else if (!version.empty() && version[0] == ' ') {
    fail(400, "request-line: more than one SP");
    return false;
  } else {
    fail(400, "request-line: malformed HTTP version");
    return false;
  }
  method_off_ = begin;
  method_len_ = i - begin;
  target_off_ = t;
  target_len_ = j - t;
  return checkTarget(data);
}

bool RequestParser::checkTarget(std::string_view data) {
  const std::string_view method = data.substr(method_off_, method_len_);
  const std::string_view target = data.substr(target_off_, target_len_);
  if (method == "CONNECT") {
    if (!validAuthority(target, /*require_port=*/true)) {
      fail(400, "request-target: CONNECT needs authority-form (host:port)");
      return false;
    }
    head_.form = TargetForm::kAuthority;
    return true;
  }
  if (target == "*") {
    if (method != "OPTIONS") {
      fail(400, "request-target: asterisk-form is only for OPTIONS");
      return false;
    }
    head_.form = TargetForm::kAsterisk;
    return true;
  }
  if (target[0] == '/') {
    head_.form = TargetForm::kOrigin;
    return true;
  }
  // absolute-form: http(s)://authority[/path][?query]
  const size_t sep = target.find("://");
  if (sep == std::string_view::npos || !(equalsLower(target.substr(0, sep), "http") ||
                                         equalsLower(target.substr(0, sep), "https"))) {
    fail(400, "request-target: not origin-form or an http(s) absolute-form");
    return false;
  }
  const std::string_view rest = target.substr(sep + 3);
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
  if (authority.find('@') != std::string_view::npos) {
    fail(400, "request-target: userinfo in absolute-form");
    return false;
  }
  if (!validAuthority(authority, /*require_port=*/false)) {
    fail(400, "request-target: invalid authority in absolute-form");
    return false;
  }
  head_.form = TargetForm::kAbsolute;
  return true;
}

ParseStatus RequestParser::endOfHead(std::string_view data) {
  if (!materialize(data, 400)) return status_;
  head_.method = data.substr(method_off_, method_len_);
  head_.target = data.substr(target_off_, target_len_);
  head_.headers = absl::MakeConstSpan(views_.get(), field_count_);
  head_.connect = head_.method == "CONNECT";
  const bool http11 = head_.version == Version::kHttp11;

  size_t cl = 0, te = 0, host = 0, upgrade = 0;
  size_t cl_i = 0, te_i = 0, host_i = 0, upgrade_i = 0;
  for (size_t i = 0; i < field_count_; ++i) {
    switch (known_[i]) {
      case Known::kContentLength:
        ++cl;
        cl_i = i;
        break;
      case Known::kTransferEncoding:
        ++te;
        te_i = i;
        break;
      case Known::kHost:
        ++host;
        host_i = i;
        break;
      case Known::kUpgrade:
        ++upgrade;
        upgrade_i = i;
        break;
      case Known::kFramingLookalike:
        return fail(400, "field name spelled like a framing field with '_'");
      case Known::kExpect:
        // RFC 9110 §10.1.1: only 100-continue is defined; a server ignores Expect in
        // HTTP/1.0 requests.
        if (!http11) break;
        if (!equalsLower(views_[i].value, "100-continue")) {
          return fail(417, "Expect other than 100-continue");
        }
        head_.expect_continue = true;
        break;
      default:
        break;
    }
  }

  // Host (RFC 9112 §3.2): exactly one in HTTP/1.1, valid, and equal to the authority of an
  // absolute-form or authority-form target.
  if (host > 1) return fail(400, "more than one Host field");
  if (http11 && host == 0) return fail(400, "HTTP/1.1 request without Host");
  if (host == 1 && !validAuthority(views_[host_i].value, /*require_port=*/false)) {
    return fail(400, "invalid Host");
  }
  if (head_.form == TargetForm::kAbsolute || head_.form == TargetForm::kAuthority) {
    std::string_view authority = head_.target;
    if (head_.form == TargetForm::kAbsolute) {
      authority = authority.substr(authority.find("://") + 3);
      authority = authority.substr(0, authority.find_first_of("/?"));
    }
    if (host == 1 && !equalsIgnoreCase(views_[host_i].value, authority)) {
      return fail(400, "Host differs from the request-target's authority");
    }
    head_.authority = authority;
  } else if (host == 1) {
    head_.authority = views_[host_i].value;
  }

  // Framing (RFC 9112 §6.1, §6.3), stricter where two parsers could disagree.
  Framing& f = head_.framing;
  if (te > 0) {
    if (!http11) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (cl > 0) return fail(400, "both Transfer-Encoding and Content-Length");
    if (te > 1) return fail(400, "more than one Transfer-Encoding field");
    if (head_.connect) return fail(400, "CONNECT with a body");
    switch (parseTransferEncoding(views_[te_i].value)) {
      case TransferCoding::kChunked:
        break;
      case TransferCoding::kChunkedNotFinal:
        return fail(400, "Transfer-Encoding does not end in a single chunked");
      case TransferCoding::kUnsupported:
        return fail(501, "transfer-coding other than chunked");
      case TransferCoding::kMalformed:
        return fail(400, "malformed Transfer-Encoding");
    }
    f.body = BodyKind::kChunked;
  } else if (cl > 0) {
    if (cl > 1) return fail(400, "more than one Content-Length field");
    if (!parseContentLength(views_[cl_i].value, &f.content_length)) {
      return fail(400, "invalid Content-Length");
    }
    if (head_.connect && f.content_length > 0) return fail(400, "CONNECT with a body");
    f.body = BodyKind::kContentLength;
  } else {
    f.body = BodyKind::kNone;
  }

  if (upgrade > 1) return fail(400, "more than one Upgrade field");
  if (upgrade == 1 && http11 && connection_.upgrade) {
    if (views_[upgrade_i].value.empty()) return fail(400, "empty Upgrade");
    head_.upgrade_requested = true;
    head_.upgrade = views_[upgrade_i].value;
  }
  f.keep_alive = http11 ? !connection_.close : (connection_.keep_alive && !connection_.close);
  status_ = ParseStatus::kDone;
  return status_;
}

// ---------------------------------------------------------------------------------------
// Responses

ResponseParser::ResponseParser(const Limits& limits) : HeadParserBase(limits) {}

void ResponseParser::reset() {
  resetBase();
  head_ = ResponseHead();
  reason_off_ = reason_len_ = 0;
}

ParseStatus ResponseParser::parse(std::string_view data, const RequestContext& request) {
  request_ = request;
  return run(data, 502, 502);
}

bool ResponseParser::startLine(std::string_view data, size_t begin, size_t end) {
  // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4). The SP
  // before an empty reason is optional here: servers omit it and nothing depends on it.
  const std::string_view line = data.substr(begin, end - begin);
  if (line.size() < 12 || line[8] != ' ') {
    fail(502, "upstream: malformed status-line");
    return false;
  }
  const std::string_view version = line.substr(0, 8);
  if (version == "HTTP/1.1") {
    head_.version = Version::kHttp11;
  } else if (version == "HTTP/1.0") {
    head_.version = Version::kHttp10;
  } else {
    fail(502, "upstream: unsupported HTTP version");
    return false;
  }
  uint16_t code = 0;
  for (size_t k = 9; k < 12; ++k) {
    if (line[k] < '0' || line[k] > '9') {
      fail(502, "upstream: malformed status code");
      return false;
    }
    code = static_cast<uint16_t>(code * 10 + (line[k] - '0'));
  }
  if (code < 100 || code > 599) {
    fail(502, "upstream: status code out of range");
    return false;
  }
  head_.status = code;
  if (line.size() > 12) {
    if (line[12] != ' ') {
      fail(502, "upstream: malformed status-line");
      return false;
    }
    for (size_t k = 13; k < line.size(); ++k) {
      if (!chars::fieldValue(line[k])) {
        fail(502, "upstream: control byte in reason-phrase");
        return false;
      }
    }
    reason_off_ = begin + 13;
    reason_len_ = line.size() - 13;
  }
  return true;
}

ParseStatus ResponseParser::endOfHead(std::string_view data) {
  if (!materialize(data, 502)) return status_;
  head_.reason = data.substr(reason_off_, reason_len_);
  head_.headers = absl::MakeConstSpan(views_.get(), field_count_);
  const bool http11 = head_.version == Version::kHttp11;
  const uint16_t code = head_.status;

  size_t cl = 0, te = 0;
  size_t cl_i = 0, te_i = 0;
  for (size_t i = 0; i < field_count_; ++i) {
    if (known_[i] == Known::kContentLength) {
      ++cl;
      cl_i = i;
    } else if (known_[i] == Known::kTransferEncoding) {
      ++te;
      te_i = i;
    } else if (known_[i] == Known::kFramingLookalike) {
      return fail(502, "upstream: field name spelled like a framing field with '_'");
    }
  }
  // Conflicts are upstream protocol errors even where the status says "no body": the
  // proxy never guesses which field a later hop would believe.
  if (te > 0 && cl > 0) return fail(502, "upstream: both Transfer-Encoding and Content-Length");
  if (cl > 1) return fail(502, "upstream: more than one Content-Length field");
  if (te > 1) return fail(502, "upstream: more than one Transfer-Encoding field");
  uint64_t length = 0;
  if (cl == 1 && !parseContentLength(views_[cl_i].value, &length)) {
    return fail(502, "upstream: invalid Content-Length");
  }
  if (te == 1) {
    if (!http11) return fail(502, "upstream: Transfer-Encoding in an HTTP/1.0 response");
    if (parseTransferEncoding(views_[te_i].value) != TransferCoding::kChunked) {
      return fail(502, "upstream: transfer-coding other than chunked");
    }
  }

  Framing& f = head_.framing;
  f.keep_alive = http11 ? !connection_.close : (connection_.keep_alive && !connection_.close);
  if (code == 101) {
    if (!request_.upgrade_requested || !http11) {
      return fail(502, "upstream: 101 without an upgrade request");
    }
    f.body = BodyKind::kTunnel;
    f.keep_alive = false;
  } else if (code < 200) {
    head_.informational = true;
    f.body = BodyKind::kNone;
    f.keep_alive = true;
  } else if (request_.connect && code < 300) {
    f.body = BodyKind::kTunnel;
    f.keep_alive = false;
  } else if (request_.head || code == 204 || code == 304) {
    f.body = BodyKind::kNone;
  } else if (te == 1) {
    f.body = BodyKind::kChunked;
  } else if (cl == 1) {
    f.body = BodyKind::kContentLength;
    f.content_length = length;
  } else {
    f.body = BodyKind::kCloseDelimited;
    f.keep_alive = false;
  }
  status_ = ParseStatus::kDone;
  return status_;
}

}  // namespace meshd::proxy::http1
