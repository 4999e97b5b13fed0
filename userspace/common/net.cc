#include "common/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace meshd {

absl::StatusOr<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  IpAddress a;
  // inet_pton stops at a NUL: without this, "10.0.0.1\0junk" would parse.
  if (s.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("an IP address cannot contain a NUL byte");
  }
  if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET;
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET6;
    return a;
  }
  return absl::InvalidArgumentError(absl::StrCat("\"", s, "\" is not an IPv4 or IPv6 address"));
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (family != AF_INET && family != AF_INET6) return "<unset>";
  inet_ntop(family, bytes.data(), buf, sizeof(buf));
  return buf;
}

void IpAddress::toAbi(uint32_t out[4]) const { std::memcpy(out, bytes.data(), 16); }

IpAddress IpAddress::fromAbi(int family, const uint32_t in[4]) {
  IpAddress a;
  a.family = family;
  std::memcpy(a.bytes.data(), in, 16);
  if (family == AF_INET) std::memset(a.bytes.data() + 4, 0, 12);
  return a;
}

SocketAddress SocketAddress::fromSockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddress a;
  if (sa == nullptr) return a;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    a.ip.family = AF_INET;
    std::memcpy(a.ip.bytes.data(), &in->sin_addr, 4);
    a.port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    a.ip.family = AF_INET6;
    std::memcpy(a.ip.bytes.data(), &in6->sin6_addr, 16);
    a.port = ntohs(in6->sin6_port);
  }
  return a;
}

absl::StatusOr<SocketAddress> SocketAddress::parse(std::string_view text) {
  const std::string t(text);  // for messages (Debian's abseil has its own string_view)
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find("]:");
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", t, "\" is not [ipv6]:port (missing \"]:\")"));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", t, "\" is not address:port (missing \":port\")"));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", t, "\" is ambiguous: write an IPv6 address as [addr]:port"));
    }
  }
  SocketAddress a;
  ASSIGN_OR_RETURN(a.ip, IpAddress::parse(host));
  uint32_t p = 0;
  if (port.empty() || port.size() > 5) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in \"", t, "\""));
  }
  for (char c : port) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(absl::StrCat("bad port in \"", t, "\""));
    }
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (p > 65535) return absl::InvalidArgumentError(absl::StrCat("port over 65535 in \"", t, "\""));
  a.port = static_cast<uint16_t>(p);
  return a;
}

socklen_t SocketAddress::toSockaddr(sockaddr_storage* out) const {
  std::memset(out, 0, sizeof(*out));
  if (ip.family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
    in6->sin6_family = AF_INET6;
    std::memcpy(&in6->sin6_addr, ip.bytes.data(), 16);
    in6->sin6_port = htons(port);
    return sizeof(sockaddr_in6);
  }
  auto* in = reinterpret_cast<sockaddr_in*>(out);
  in->sin_family = AF_INET;
  std::memcpy(&in->sin_addr, ip.bytes.data(), 4);
  in->sin_port = htons(port);
  return sizeof(sockaddr_in);
}

std::string SocketAddress::toString() const {
  if (ip.family == AF_INET6) return absl::StrCat("[", ip.toString(), "]:", port);
  return absl::StrCat(ip.toString(), ":", port);
}

}  // namespace meshd
