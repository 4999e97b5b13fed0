// Request framing for mesh-echo's tiny HTTP/1.1 server. It is a lab workload, not
// meshd's HTTP parser (that lives in userspace/l7/http1): it frames requests well
// enough to answer GET/HEAD with keep-alive and to reject what it does not handle.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace meshd::tools {

struct RequestHead {
  std::string method;
  std::string target;
  int minorVersion = 1;      // HTTP/1.<minorVersion>
  size_t headBytes = 0;      // bytes of request line + headers + the blank line
  size_t contentLength = 0;  // body bytes that follow the head (to be skipped)
  bool keepAlive = true;     // whether the connection stays open after the response
};

// Bound on a request head; the lab never sends more than a few hundred bytes, and an
// unbounded buffer would let one client exhaust the echo server's memory.
constexpr size_t kMaxRequestHead = 16 * 1024;

// Parses the request head at the start of `buf`. Returns nullopt when `buf` does not yet
// hold a complete head (read more), the head when it does, and InvalidArgument naming the
// problem when the head is malformed, too large, or uses Transfer-Encoding (not supported).
absl::StatusOr<std::optional<RequestHead>> parseRequestHead(std::string_view buf,
                                                            size_t max_head = kMaxRequestHead);

}  // namespace meshd::tools
