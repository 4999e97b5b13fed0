#include "datapath/redirect.h"

#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace meshd::datapath {
namespace {

constexpr uint8_t kZero[16] = {};
constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

std::string RedirectTarget::toString() const {
  if (!enabled()) return "off";
  std::string out;
  if (v4.has_value()) absl::StrAppend(&out, v4->toString(), ":", port);
  if (v6.has_value())
    absl::StrAppend(&out, out.empty() ? "" : ", ", "[", v6->toString(), "]:", port);
  return out;
}

absl::Status validateRedirectTarget(const RedirectTarget& t) {
  if (t.v4.has_value()) {
    if (!t.v4->isV4()) {
      return absl::InvalidArgumentError(absl::StrCat("redirect target ", t.v4->toString(),
                                                     " for IPv4 services is not an IPv4 address"));
    }
    if (std::memcmp(t.v4->bytes.data(), kZero, 4) == 0) {
      return absl::InvalidArgumentError(
          "redirect target 0.0.0.0 is not an address pods can reach: give the node's address");
    }
  }
  if (t.v6.has_value()) {
    if (t.v6->family != AF_INET6) {
      return absl::InvalidArgumentError(absl::StrCat("redirect target ", t.v6->toString(),
                                                     " for IPv6 services is not an IPv6 address"));
    }
    if (std::memcmp(t.v6->bytes.data(), kZero, 16) == 0) {
      return absl::InvalidArgumentError(
          "redirect target :: is not an address pods can reach: give the node's address");
    }
    if (std::memcmp(t.v6->bytes.data(), kV4MappedPrefix, sizeof(kV4MappedPrefix)) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("redirect target ", t.v6->toString(),
                       " is a v4-mapped IPv4 address: give it as the IPv4 address"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RedirectTarget> parseRedirectTarget(std::string_view addresses_sv, uint16_t port) {
  const absl::string_view addresses(addresses_sv.data(), addresses_sv.size());
  RedirectTarget t;
  t.port = port;
  if (addresses.empty()) return t;
  const std::vector<absl::string_view> parts = absl::StrSplit(addresses, ',');
  if (parts.size() > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--redirect-address \"", addresses, "\": at most two addresses (IPv4,IPv6)"));
  }
  for (absl::string_view part : parts) {
    auto ip = IpAddress::parse(std::string_view(part.data(), part.size()));
    if (!ip.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--redirect-address \"", addresses, "\": ", ip.status().message()));
    }
    std::optional<IpAddress>& slot = ip->isV4() ? t.v4 : t.v6;
    if (slot.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("--redirect-address \"", addresses, "\": two ",
                                                     ip->isV4() ? "IPv4" : "IPv6",
                                                     " addresses; give one of each family"));
    }
    slot = *ip;
  }
  absl::Status st = validateRedirectTarget(t);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--redirect-address \"", addresses, "\": ", st.message()));
  }
  return t;
}

}  // namespace meshd::datapath
