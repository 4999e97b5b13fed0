// libFuzzer target for the telemetry server's request-head parser
// (telemetry::parseHttpRequestHead) and its --metrics-address parser
// (telemetry::parseListenAddress). The first input byte picks the head bound
// (so kTooLarge is reached with small inputs); the rest is what a client sent.
// Checks, besides "no crash, hang or leak":
//  - a complete head has a token method, a target starting with '/', a path that
//    is the target up to '?', and fits the bound;
//  - parsing is decided by the head alone: bytes appended after a complete head
//    (a body, the next pipelined request) do not change the result;
//  - an error state always carries a reason (it becomes the 400/431 body);
//  - a parsed listen address formats back ("host:port", "[v6]:port") to an
//    address that parses to the same host and port.
// A broken invariant is __builtin_trap(), which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "telemetry/http_server.h"

namespace meshd::telemetry {
namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool sameParse(const HttpParse& a, const HttpParse& b) {
  return a.state == b.state && a.error == b.error && a.head.method == b.head.method &&
         a.head.target == b.head.target && a.head.path == b.head.path;
}

void fuzzHead(std::string_view data, size_t max_bytes) {
  const HttpParse p = parseHttpRequestHead(data, max_bytes);
  switch (p.state) {
    case HttpParse::State::kIncomplete:
      check(data.find("\r\n\r\n") == std::string_view::npos);
      return;
    case HttpParse::State::kBad:
    case HttpParse::State::kTooLarge:
      check(!p.error.empty());
      break;
    case HttpParse::State::kComplete: {
      const size_t end = data.find("\r\n\r\n");
      check(end != std::string_view::npos && end + 4 <= max_bytes);
      check(!p.head.method.empty() && !p.head.target.empty() && p.head.target[0] == '/');
      check(p.head.target.substr(0, p.head.path.size()) == p.head.path);
      check(p.head.path.size() == p.head.target.size() || p.head.target[p.head.path.size()] == '?');
      check(p.head.path.find('?') == std::string::npos);
      break;
    }
  }
  if (data.find("\r\n\r\n") != std::string_view::npos) {
    std::string more(data);
    more += "GET /next HTTP/1.1\r\n\r\n\x01\xff";
    check(sameParse(p, parseHttpRequestHead(more, max_bytes)));
  }
}

void fuzzListenAddress(std::string_view text) {
  absl::StatusOr<ListenAddress> a = parseListenAddress(text);
  if (!a.ok()) {
    check(a.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  const bool v6 = a->host.find(':') != std::string::npos;
  const std::string again =
      v6 ? absl::StrCat("[", a->host, "]:", a->port) : absl::StrCat(a->host, ":", a->port);
  absl::StatusOr<ListenAddress> b = parseListenAddress(again);
  check(b.ok() && b->host == a->host && b->port == a->port);
}

}  // namespace
}  // namespace meshd::telemetry

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // Bounds from 16 bytes up to 8192 (the server's default) and a bit past it.
  const size_t max_bytes = data[0] == 0xff ? 8192 : 16 + static_cast<size_t>(data[0]) * 33;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  meshd::telemetry::fuzzHead(rest, max_bytes);
  meshd::telemetry::fuzzListenAddress(rest);
  return 0;
}
