// Socket addresses for the lab tools: "10.96.0.10:80", "[fd00::1]:80".
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace meshd::tools {

struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;

  int family() const { return addr.ss_family; }
  uint16_t port() const;  // host order
  std::string toString() const;

  // Parses "A.B.C.D:PORT" or "[V6]:PORT". Fails with InvalidArgument naming the text.
  static absl::StatusOr<Endpoint> parse(std::string_view text);
  // Builds an endpoint from an address without a port ("0.0.0.0", "::") and a port.
  static absl::StatusOr<Endpoint> fromHostPort(std::string_view host, uint16_t port);
  static Endpoint fromSockaddr(const sockaddr* sa, socklen_t len);
};

// True when both name the same family, address and port. An IPv4-mapped IPv6 address
// (::ffff:a.b.c.d) compares equal to the IPv4 address: a dual-stack socket reports peers
// that way.
bool sameEndpoint(const Endpoint& a, const Endpoint& b);

}  // namespace meshd::tools
