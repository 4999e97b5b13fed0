#include "tools/endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

#include "tools/text_util.h"

namespace meshd::tools {

uint16_t Endpoint::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  return 0;
}

std::string Endpoint::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr, buf, sizeof(buf));
    return strCat(buf, ":", port());
  }
  if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr, buf, sizeof(buf));
    return strCat("[", buf, "]:", port());
  }
  return "<unset>";
}

absl::StatusOr<Endpoint> Endpoint::fromHostPort(std::string_view host, uint16_t port) {
  Endpoint ep;
  const std::string h(host);
  auto* sin = reinterpret_cast<sockaddr_in*>(&ep.addr);
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ep.addr);
  if (inet_pton(AF_INET, h.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    ep.len = sizeof(sockaddr_in);
    return ep;
  }
  if (inet_pton(AF_INET6, h.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    ep.len = sizeof(sockaddr_in6);
    return ep;
  }
  return absl::InvalidArgumentError(strCat("'", host, "' is not an IPv4 or IPv6 address"));
}

absl::StatusOr<Endpoint> Endpoint::parse(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find("]:");
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(strCat("'", text, "' is not [ADDR]:PORT"));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return absl::InvalidArgumentError(
          strCat("'", text, "' is not ADDR:PORT (write IPv6 as [ADDR]:PORT)"));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() ||
      port == 0 || port > 65535) {
    return absl::InvalidArgumentError(strCat("bad port in '", text, "'"));
  }
  return fromHostPort(host, static_cast<uint16_t>(port));
}

Endpoint Endpoint::fromSockaddr(const sockaddr* sa, socklen_t len) {
  Endpoint ep;
  std::memcpy(&ep.addr, sa, std::min<size_t>(len, sizeof(ep.addr)));
  ep.len = len;
  return ep;
}

namespace {

// Folds ::ffff:a.b.c.d to a.b.c.d so dual-stack peers compare with IPv4 targets.
Endpoint unmapped(const Endpoint& ep) {
  if (ep.family() != AF_INET6) return ep;
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ep.addr);
  if (!IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) return ep;
  Endpoint out;
  auto* sin = reinterpret_cast<sockaddr_in*>(&out.addr);
  sin->sin_family = AF_INET;
  sin->sin_port = sin6->sin6_port;
  std::memcpy(&sin->sin_addr, &sin6->sin6_addr.s6_addr[12], 4);
  out.len = sizeof(sockaddr_in);
  return out;
}

}  // namespace

bool sameEndpoint(const Endpoint& a_in, const Endpoint& b_in) {
  const Endpoint a = unmapped(a_in);
  const Endpoint b = unmapped(b_in);
  if (a.family() != b.family() || a.port() != b.port()) return false;
  if (a.family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(&a.addr)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(&b.addr)->sin_addr.s_addr;
  }
  if (a.family() == AF_INET6) {
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(&a.addr)->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(&b.addr)->sin6_addr,
                       sizeof(in6_addr)) == 0;
  }
  return false;
}

}  // namespace meshd::tools
