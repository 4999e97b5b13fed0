#include "common/net.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/str_cat.h"

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

}  // namespace meshd
