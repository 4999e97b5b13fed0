#include "http_response_parser.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace meshd::loadgen {

namespace {

// Debian's abseil has its own string_view type (not std::string_view), so the few string
// helpers needed here are local.
bool isDigit(char c) { return c >= '0' && c <= '9'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::vector<std::string_view> split(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> out;
  while (true) {
    const size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + sep.size());
  }
}

// RFC 9110 token characters (header field names).
bool isTokenChar(char c) {
  if (isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Parses a Content-Length value: 1*DIGIT, at most 18 digits (no overflow).
std::optional<uint64_t> parseLength(std::string_view v) {
  if (v.empty() || v.size() > 18) return std::nullopt;
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

// Parses a chunk-size line: 1*HEXDIG [ ";" extensions ]. 15 hex digits at most, so the
// size fits in 60 bits.
std::optional<uint64_t> parseChunkSize(std::string_view line) {
  const size_t semi = line.find(';');
  std::string_view digits = trim(line.substr(0, semi));
  if (digits.empty() || digits.size() > 15) return std::nullopt;
  uint64_t n = 0;
  for (char c : digits) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    n = (n << 4) | static_cast<uint64_t>(d);
  }
  return n;
}

}  // namespace

void HttpResponseParser::reset() {
  state_ = State::kHead;
  head_.clear();
  line_.clear();
  remaining_ = 0;
  status_ = 0;
  keep_alive_ = true;
  started_ = false;
  error_.clear();
}

HttpResponseParser::Result HttpResponseParser::fail(std::string message) {
  state_ = State::kFailed;
  error_ = std::move(message);
  return Result::kError;
}

bool HttpResponseParser::takeLine(std::string_view data, size_t* pos, bool* too_long) {
  *too_long = false;
  const size_t nl = data.find('\n', *pos);
  const size_t end = nl == std::string_view::npos ? data.size() : nl + 1;
  line_.append(data.substr(*pos, end - *pos));
  *pos = end;
  if (line_.size() > kMaxLineBytes) {
    *too_long = true;
    return false;
  }
  return nl != std::string_view::npos;
}

bool HttpResponseParser::parseHead(std::string_view head) {
  std::vector<std::string_view> lines = split(head, "\r\n");
  // Status line: HTTP/1.x SP 3DIGIT [SP reason].
  std::string_view sl = lines[0];
  if (sl.size() < 12 || sl.substr(0, 7) != "HTTP/1." || (sl[7] != '0' && sl[7] != '1') ||
      sl[8] != ' ' || (sl.size() > 12 && sl[12] != ' ')) {
    fail("malformed status line (is the target an HTTP/1.1 server?)");
    return false;
  }
  if (!isDigit(sl[9]) || !isDigit(sl[10]) || !isDigit(sl[11]) || sl[9] == '0') {
    fail("malformed status code");
    return false;
  }
  const int code = (sl[9] - '0') * 100 + (sl[10] - '0') * 10 + (sl[11] - '0');
  const bool http10 = sl[7] == '0';
  status_ = code;
  keep_alive_ = !http10;

  std::optional<uint64_t> content_length;
  bool chunked = false;
  bool has_te = false;
  for (size_t i = 1; i < lines.size(); i++) {
    std::string_view l = lines[i];
    const size_t colon = l.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      fail("malformed header line");
      return false;
    }
    std::string_view name = l.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), isTokenChar)) {
      fail("invalid header name");
      return false;
    }
    std::string_view value = trim(l.substr(colon + 1));
    if (iequals(name, "content-length")) {
      std::optional<uint64_t> n = parseLength(value);
      if (!n || (content_length && *content_length != *n)) {
        fail("invalid or conflicting Content-Length");
        return false;
      }
      content_length = n;
    } else if (iequals(name, "transfer-encoding")) {
      has_te = true;
      // Chunked only if it is the final coding; anything else is delimited by close.
      std::vector<std::string_view> codings = split(value, ",");
      chunked = iequals(trim(codings.back()), "chunked");
    } else if (iequals(name, "connection")) {
      for (std::string_view opt : split(value, ",")) {
        opt = trim(opt);
        if (iequals(opt, "close")) keep_alive_ = false;
        if (http10 && iequals(opt, "keep-alive")) keep_alive_ = true;
      }
    }
  }

  if (code < 200 || code == 204 || code == 304) {
    // No body (1xx interim responses are skipped by the caller).
    state_ = State::kDone;
  } else if (has_te) {
    // RFC 9112 6.3: Transfer-Encoding overrides Content-Length; such a message may be an
    // attempt at smuggling, so do not reuse the connection after it.
    if (content_length) keep_alive_ = false;
    state_ = chunked ? State::kChunkSize : State::kBodyUntilClose;
  } else if (content_length) {
    remaining_ = *content_length;
    state_ = remaining_ == 0 ? State::kDone : State::kBodyLength;
  } else {
    state_ = State::kBodyUntilClose;
  }
  if (state_ == State::kBodyUntilClose) keep_alive_ = false;
  return true;
}

HttpResponseParser::Result HttpResponseParser::feed(std::string_view data, size_t* consumed) {
  size_t pos = 0;
  if (!data.empty()) started_ = true;
  bool too_long = false;
  while (true) {
    switch (state_) {
      case State::kHead: {
        // Look for CRLF CRLF, starting 3 bytes back in case it straddles two reads.
        const size_t old = head_.size();
        head_.append(data.substr(pos));
        const size_t end = head_.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
        if (end == std::string::npos) {
          if (head_.size() > kMaxHeadBytes) return fail("response head exceeds 64 KiB");
          *consumed = data.size();
          return Result::kNeedMore;
        }
        if (end > kMaxHeadBytes) return fail("response head exceeds 64 KiB");
        pos += end + 4 - old;  // head_[old] is data[pos]
        std::string head = head_.substr(0, end);
        head_.clear();
        if (!parseHead(head)) return Result::kError;
        if (status_ < 200) {
          // An interim response (100 Continue, 103 Early Hints): the real one follows.
          state_ = State::kHead;
          status_ = 0;
          keep_alive_ = true;
        }
        break;
      }
      case State::kBodyLength: {
        const uint64_t take = std::min<uint64_t>(remaining_, data.size() - pos);
        pos += take;
        remaining_ -= take;
        if (remaining_ == 0) {
          state_ = State::kDone;
          break;
        }
        *consumed = pos;
        return Result::kNeedMore;
      }
      case State::kChunkSize: {
        if (!takeLine(data, &pos, &too_long)) {
          if (too_long) return fail("chunk-size line too long");
          *consumed = pos;
          return Result::kNeedMore;
        }
        if (line_.size() < 2 || line_[line_.size() - 2] != '\r')
          return fail("chunk-size line not CRLF-terminated");
        std::optional<uint64_t> n =
            parseChunkSize(std::string_view(line_).substr(0, line_.size() - 2));
        line_.clear();
        if (!n) return fail("malformed chunk size");
        remaining_ = *n;
        state_ = remaining_ == 0 ? State::kTrailers : State::kChunkData;
        break;
      }
      case State::kChunkData: {
        const uint64_t take = std::min<uint64_t>(remaining_, data.size() - pos);
        pos += take;
        remaining_ -= take;
        if (remaining_ == 0) {
          state_ = State::kChunkDataEnd;
          break;
        }
        *consumed = pos;
        return Result::kNeedMore;
      }
      case State::kChunkDataEnd:
      case State::kTrailers: {
        // kChunkDataEnd: the CRLF after chunk data. kTrailers: trailer fields, then an
        // empty line ends the message.
        if (!takeLine(data, &pos, &too_long)) {
          if (too_long) return fail("trailer line too long");
          *consumed = pos;
          return Result::kNeedMore;
        }
        const bool empty = line_ == "\r\n";
        if (line_.size() < 2 || line_[line_.size() - 2] != '\r')
          return fail("line not CRLF-terminated");
        line_.clear();
        if (state_ == State::kChunkDataEnd) {
          if (!empty) return fail("missing CRLF after chunk data");
          state_ = State::kChunkSize;
        } else if (empty) {
          state_ = State::kDone;
        }
        break;
      }
      case State::kBodyUntilClose:
        *consumed = data.size();
        return Result::kNeedMore;
      case State::kDone:
        *consumed = pos;
        return Result::kComplete;
      case State::kFailed:
        return Result::kError;
    }
  }
}

HttpResponseParser::Result HttpResponseParser::finishOnEof() {
  if (state_ == State::kBodyUntilClose || state_ == State::kDone) {
    state_ = State::kDone;
    return Result::kComplete;
  }
  if (state_ == State::kFailed) return Result::kError;
  return fail(started_ ? "connection closed mid-response" : "connection closed before a response");
}

}  // namespace meshd::loadgen
