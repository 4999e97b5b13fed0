#include "proxy/http2/grpc.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace meshd::proxy::http2::grpc {

const char* codeName(Code code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  auto i = static_cast<uint32_t>(code);
  return i < sizeof(kNames) / sizeof(kNames[0]) ? kNames[i] : "UNKNOWN_CODE";
}

absl::StatusOr<uint64_t> parseTimeoutMs(std::string_view value) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grpc-timeout \"", absl::CEscape(absl::string_view(value.data(), value.size())),
        "\": ", absl::string_view(why.data(), why.size())));
  };
  if (value.size() < 2) return bad("want 1 to 8 digits and a unit (H, M, S, m, u, n)");
  std::string_view digits = value.substr(0, value.size() - 1);
  if (digits.size() > 8) return bad("more than 8 digits");
  uint64_t n = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return bad("the value must be ASCII digits");
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  switch (value.back()) {
    case 'H':
      return n * 3'600'000;
    case 'M':
      return n * 60'000;
    case 'S':
      return n * 1'000;
    case 'm':
      return n;
    case 'u':
      return (n + 999) / 1'000;
    case 'n':
      return (n + 999'999) / 1'000'000;
    default:
      return bad("unknown unit (want H, M, S, m, u or n)");
  }
}

bool isGrpc(std::string_view content_type) {
  constexpr std::string_view kType = "application/grpc";
  if (content_type.size() < kType.size()) return false;
  if (!absl::EqualsIgnoreCase(absl::string_view(content_type.data(), kType.size()),
                              absl::string_view(kType.data(), kType.size()))) {
    return false;
  }
  if (content_type.size() == kType.size()) return true;
  char next = content_type[kType.size()];
  return next == '+' || next == ';';
}

Code codeFromHttpStatus(uint16_t http_status) {
  switch (http_status) {
    case 400:
      return Code::kInternal;
    case 401:
      return Code::kUnauthenticated;
    case 403:
      return Code::kPermissionDenied;
    case 404:
      return Code::kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code::kUnavailable;
    default:
      return Code::kUnknown;
  }
}

void percentEncodeMessage(std::string_view message, std::string* out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char ch : message) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out->push_back(ch);
    } else {
      out->push_back('%');
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 0xf]);
    }
  }
}

std::string percentDecodeMessage(std::string_view value) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '%' && i + 2 < value.size() && hex(value[i + 1]) >= 0 &&
        hex(value[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(value[i + 1]) * 16 + hex(value[i + 2])));
      i += 2;
    } else {
      out.push_back(value[i]);
    }
  }
  return out;
}

void TrailersOnly::build(Code code, std::string_view message) {
  status_.clear();
  absl::StrAppend(&status_, static_cast<uint32_t>(code));
  message_.clear();
  percentEncodeMessage(message, &message_);
  count_ = 0;
  fields_[count_++] = HeaderField{"content-type", "application/grpc", false};
  fields_[count_++] = HeaderField{"grpc-status", status_, false};
  if (!message_.empty()) fields_[count_++] = HeaderField{"grpc-message", message_, false};
}

}  // namespace meshd::proxy::http2::grpc
