// The redirect target of L7 services (mesh_config.redirect_*): meshd's
// outbound listener as pods reach it. See orig_dst.h for the other half.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/net.h"

namespace meshd::datapath {

// Where the connect hook sends connections to L7 services (MESH_SVC_F_L7).
// port 0, or no address of a VIP's family, leaves those on the L4 path.
struct RedirectTarget {
  std::optional<IpAddress> v4;  // for IPv4 VIPs (also v4-mapped ones on AF_INET6 sockets)
  std::optional<IpAddress> v6;  // for IPv6 VIPs
  uint16_t port = 0;            // host order; 0 = redirect off

  bool enabled() const { return port != 0 && (v4.has_value() || v6.has_value()); }
  // "10.0.0.1:15001, [fd00::1]:15001", or "off".
  std::string toString() const;
  friend bool operator==(const RedirectTarget&, const RedirectTarget&) = default;
};

// OK when v4 is a specified IPv4 address and v6 a specified IPv6 one that is
// not v4-mapped (each optional). InvalidArgument naming the address otherwise.
absl::Status validateRedirectTarget(const RedirectTarget& target);

// Parses meshd's --redirect-address: "IP" or "IP,IP" (at most one IPv4 and
// one IPv6, in either order; "" = none) with the listener's port (host
// order). InvalidArgument naming the offending part.
absl::StatusOr<RedirectTarget> parseRedirectTarget(std::string_view addresses, uint16_t port);

}  // namespace meshd::datapath
