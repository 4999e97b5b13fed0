#include "tools/http_request.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "tools/text_util.h"

namespace meshd::tools {
namespace {

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

}  // namespace

absl::StatusOr<std::optional<RequestHead>> parseRequestHead(std::string_view buf, size_t max_head) {
  const size_t end = buf.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (buf.size() > max_head) {
      return absl::InvalidArgumentError(strCat("request head larger than ", max_head, " bytes"));
    }
    return std::nullopt;
  }
  if (end + 4 > max_head) {
    return absl::InvalidArgumentError(strCat("request head larger than ", max_head, " bytes"));
  }

  RequestHead head;
  head.headBytes = end + 4;
  std::vector<std::string_view> lines = split(buf.substr(0, end), "\r\n");

  // Request line: METHOD SP TARGET SP HTTP/1.x, single spaces (RFC 9112 section 3).
  std::vector<std::string_view> parts = split(lines[0], " ");
  if (parts.size() != 3 || !isToken(parts[0]) || parts[1].empty()) {
    return absl::InvalidArgumentError(strCat("malformed request line '", lines[0], "'"));
  }
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
    return absl::InvalidArgumentError(strCat("unsupported HTTP version '", parts[2], "'"));
  }
  head.method = std::string(parts[0]);
  head.target = std::string(parts[1]);
  head.minorVersion = parts[2] == "HTTP/1.1" ? 1 : 0;
  head.keepAlive = head.minorVersion == 1;

  std::optional<size_t> content_length;
  bool saw_close = false;
  bool saw_keep_alive = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || !isToken(line.substr(0, colon))) {
      return absl::InvalidArgumentError(strCat("malformed header line '", line, "'"));
    }
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = strip(line.substr(colon + 1));
    if (equalsIgnoreCase(name, "content-length")) {
      size_t n = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
        return absl::InvalidArgumentError(strCat("bad Content-Length '", value, "'"));
      }
      // Differing duplicates are a request-smuggling vector: refuse them.
      if (content_length.has_value() && *content_length != n) {
        return absl::InvalidArgumentError("conflicting Content-Length headers");
      }
      content_length = n;
    } else if (equalsIgnoreCase(name, "transfer-encoding")) {
      return absl::InvalidArgumentError("Transfer-Encoding is not supported by mesh-echo");
    } else if (equalsIgnoreCase(name, "connection")) {
      for (std::string_view token : split(value, ",")) {
        token = strip(token);
        if (equalsIgnoreCase(token, "close")) saw_close = true;
        if (equalsIgnoreCase(token, "keep-alive")) saw_keep_alive = true;
      }
    }
  }
  // "close" wins over "keep-alive" whatever their order; HTTP/1.0 closes unless asked not to.
  if (saw_close) {
    head.keepAlive = false;
  } else if (saw_keep_alive) {
    head.keepAlive = true;
  }
  head.contentLength = content_length.value_or(0);
  return head;
}

}  // namespace meshd::tools
