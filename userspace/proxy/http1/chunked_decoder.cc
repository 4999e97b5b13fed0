#include "proxy/http1/chunked_decoder.h"

#include <algorithm>

#include "proxy/http1/chars.h"

namespace meshd::proxy::http1 {

ChunkedDecoder::ChunkedDecoder(const Limits& limits) : limits_(limits) {}

void ChunkedDecoder::reset() {
  state_ = State::kSizeFirst;
  size_ = remaining_ = body_bytes_ = 0;
  size_digits_ = line_bytes_ = extension_bytes_ = trailer_bytes_ = trailer_fields_ = 0;
  error_ = ParseError();
}

ChunkedDecoder::Result ChunkedDecoder::fail(size_t consumed, uint16_t status,
                                            std::string_view reason) {
  state_ = State::kError;
  error_ = ParseError{status, reason};
  return Result{Status::kError, consumed, {}};
}

ChunkedDecoder::Result ChunkedDecoder::decode(std::string_view in) {
  if (state_ == State::kDone) return Result{Status::kDone, 0, {}};
  if (state_ == State::kError) return Result{Status::kError, 0, {}};
  size_t i = 0;
  while (i < in.size()) {
    if (state_ == State::kData) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - i));
      remaining_ -= n;
      if (remaining_ == 0) state_ = State::kDataCr;
      return Result{Status::kData, i + n, in.substr(i, n)};
    }
    const char c = in[i++];
    const bool size_line = state_ <= State::kSizeLf;
    if (size_line && ++line_bytes_ > limits_.max_chunk_line_bytes) {
      return fail(i, bad_status_, "chunk-size line longer than the configured limit");
    }
    if (size_line && state_ >= State::kExtNameStart && state_ != State::kSizeLf &&
        ++extension_bytes_ > limits_.max_chunk_extension_bytes) {
      return fail(i, bad_status_, "chunk extensions larger than the configured limit");
    }
    switch (state_) {
      case State::kSizeFirst:
      case State::kSize: {
        const int h = chars::hexValue(c);
        if (h >= 0) {
          if (size_digits_ > 0 || h != 0) ++size_digits_;
          if (size_digits_ > 16) return fail(i, bad_status_, "chunk-size overflows 64 bits");
          size_ = (size_ << 4) | static_cast<uint64_t>(h);
          state_ = State::kSize;
          break;
        }
        if (state_ == State::kSizeFirst) return fail(i, bad_status_, "chunk-size is not hex");
        if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (c == ';') {
          state_ = State::kExtNameStart;
        } else if (chars::ows(c)) {
          state_ = State::kSizeBws;
        } else {
          return fail(i, bad_status_, "invalid byte after chunk-size");
        }
        break;
      }
      case State::kSizeBws:
        if (c == ';') {
          state_ = State::kExtNameStart;
        } else if (!chars::ows(c)) {
          return fail(i, bad_status_, "invalid byte after chunk-size");
        }
        break;
      case State::kExtNameStart:
        if (chars::tchar(c)) {
          state_ = State::kExtName;
        } else if (!chars::ows(c)) {
          return fail(i, bad_status_, "chunk extension name is not a token");
        }
        break;
      case State::kExtName:
        if (chars::tchar(c)) break;
        if (c == '=') {
          state_ = State::kExtValueStart;
        } else if (c == ';') {
          state_ = State::kExtNameStart;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (chars::ows(c)) {
          state_ = State::kExtAfterName;
        } else {
          return fail(i, bad_status_, "invalid byte in chunk extension");
        }
        break;
      case State::kExtAfterName:
        if (c == '=') {
          state_ = State::kExtValueStart;
        } else if (c == ';') {
          state_ = State::kExtNameStart;
        } else if (!chars::ows(c)) {
          return fail(i, bad_status_, "invalid byte in chunk extension");
        }
        break;
      case State::kExtValueStart:
        if (chars::tchar(c)) {
          state_ = State::kExtValueToken;
        } else if (c == '"') {
          state_ = State::kExtQuoted;
        } else if (!chars::ows(c)) {
          return fail(i, bad_status_, "invalid chunk extension value");
        }
        break;
      case State::kExtValueToken:
        if (chars::tchar(c)) break;
        if (c == ';') {
          state_ = State::kExtNameStart;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (chars::ows(c)) {
          state_ = State::kExtAfterValue;
        } else {
          return fail(i, bad_status_, "invalid chunk extension value");
        }
        break;
      case State::kExtQuoted:
        if (c == '"') {
          state_ = State::kExtAfterValue;
        } else if (c == '\\') {
          state_ = State::kExtQuotedPair;
        } else if (!chars::kQdtext[static_cast<uint8_t>(c)]) {
          return fail(i, bad_status_, "invalid byte in quoted chunk extension value");
        }
        break;
      case State::kExtQuotedPair:
        if (!chars::fieldValue(c)) {
          return fail(i, bad_status_, "invalid byte in quoted chunk extension value");
        }
        state_ = State::kExtQuoted;
        break;
      case State::kExtAfterValue:
        if (c == ';') {
          state_ = State::kExtNameStart;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
        } else if (!chars::ows(c)) {
          return fail(i, bad_status_, "invalid byte in chunk extension");
        }
        break;
      case State::kSizeLf:
        if (c != '\n') return fail(i, bad_status_, "bare CR in chunk-size line");
        line_bytes_ = 0;
        size_digits_ = 0;
        if (size_ == 0) {
          state_ = State::kTrailerLineStart;
        } else {
          body_bytes_ += size_;  // cannot wrap in practice: each chunk is received first
          remaining_ = size_;
          size_ = 0;
          state_ = State::kData;
        }
        break;
      case State::kDataCr:
        if (c != '\r') return fail(i, bad_status_, "chunk data not followed by CRLF");
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return fail(i, bad_status_, "chunk data not followed by CRLF");
        state_ = State::kSizeFirst;
        break;
      case State::kTrailerLineStart:
      case State::kTrailerName:
      case State::kTrailerValue:
      case State::kTrailerLf:
      case State::kTrailerEndLf:
        if (++trailer_bytes_ > limits_.max_head_bytes) {
          return fail(i, too_large_status_, "trailer section larger than the configured limit");
        }
        switch (state_) {
          case State::kTrailerLineStart:
            if (c == '\r') {
              state_ = State::kTrailerEndLf;
            } else if (chars::tchar(c)) {
              if (++trailer_fields_ > limits_.max_headers) {
                return fail(i, too_large_status_, "more trailer fields than the configured limit");
              }
              state_ = State::kTrailerName;
            } else if (chars::ows(c)) {
              return fail(i, bad_status_, "obs-fold in trailer section");
            } else if (c == '\n') {
              return fail(i, bad_status_, "bare LF in trailer section");
            } else {
              return fail(i, bad_status_, "invalid byte in trailer field name");
            }
            break;
          case State::kTrailerName:
            if (c == ':') {
              state_ = State::kTrailerValue;
            } else if (chars::ows(c)) {
              return fail(i, bad_status_, "whitespace between trailer field name and ':'");
            } else if (!chars::tchar(c)) {
              return fail(i, bad_status_, "invalid byte in trailer field name");
            }
            break;
          case State::kTrailerValue:
            if (c == '\r') {
              state_ = State::kTrailerLf;
            } else if (!chars::fieldValue(c)) {
              return fail(i, bad_status_, "control byte in trailer field value");
            }
            break;
          case State::kTrailerLf:
            if (c != '\n') return fail(i, bad_status_, "bare CR in trailer section");
            state_ = State::kTrailerLineStart;
            break;
          default:  // kTrailerEndLf
            if (c != '\n') return fail(i, bad_status_, "bare CR in trailer section");
            state_ = State::kDone;
            return Result{Status::kDone, i, {}};
        }
        break;
      case State::kData:
      case State::kDone:
      case State::kError:
        break;  // handled above
    }
  }
  return Result{Status::kNeedMore, i, {}};
}

}  // namespace meshd::proxy::http1
