// IP addresses as meshd passes them around: family + 16 bytes, network order; and
// socket addresses (address + port) for the proxy's listeners and upstreams.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace meshd {

struct IpAddress {
  int family = 0;                   // AF_INET or AF_INET6; 0 = unset
  std::array<uint8_t, 16> bytes{};  // network order; IPv4 in bytes[0..3], rest zero

  // Parses "10.0.0.1" or "fd00::1". Fails with InvalidArgument naming the text.
  static absl::StatusOr<IpAddress> parse(std::string_view text);
  std::string toString() const;
  bool isV4() const { return family == 2; }
  // Copies into the ABI's __u32[4] layout (network order).
  void toAbi(uint32_t out[4]) const;
  static IpAddress fromAbi(int family, const uint32_t in[4]);

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const IpAddress& a) {
    return H::combine(std::move(h), a.family, a.bytes);
  }
};

// An IP address and a TCP/UDP port. `port` is in host order; `ip.bytes` in network order.
struct SocketAddress {
  IpAddress ip;
  uint16_t port = 0;

  // From a kernel sockaddr (AF_INET / AF_INET6); anything else gives an unset address.
  static SocketAddress fromSockaddr(const sockaddr* sa, socklen_t len);
  // Parses "10.0.0.1:80" or "[fd00::1]:80". Fails with InvalidArgument naming the text.
  static absl::StatusOr<SocketAddress> parse(std::string_view text);
  // Fills `out` and returns the length to pass to bind()/connect().
  socklen_t toSockaddr(sockaddr_storage* out) const;
  // "10.0.0.1:80", "[fd00::1]:80".
  std::string toString() const;
  bool valid() const { return ip.family != 0; }

  friend bool operator==(const SocketAddress&, const SocketAddress&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const SocketAddress& a) {
    return H::combine(std::move(h), a.ip, a.port);
  }
};

}  // namespace meshd
