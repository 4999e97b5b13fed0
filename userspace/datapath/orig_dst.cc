#include "datapath/orig_dst.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace meshd::datapath {
namespace {

// ::ffff:0:0/96: the first 12 bytes of a v4-mapped IPv6 address.
constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

}  // namespace

absl::StatusOr<OrigDstTablePtr> OrigDstTable::fromMapFd(int map_fd) {
  ScopedFd fd(fcntl(map_fd, F_DUPFD_CLOEXEC, 0));
  if (!fd.valid()) {
    return errnoError(errno, absl::StrCat("duplicating the mesh_orig_dst map fd ", map_fd));
  }
  return OrigDstTablePtr(new OrigDstTable(std::move(fd)));
}

mesh_orig_dst_key OrigDstTable::keyOf(const IpAddress& client, uint16_t client_port) {
  mesh_orig_dst_key key{};
  key.port = htons(client_port);
  if (client.family == AF_INET6 &&
      std::memcmp(client.bytes.data(), kV4MappedPrefix, sizeof(kV4MappedPrefix)) == 0) {
    std::memcpy(key.addr, client.bytes.data() + 12, 4);
    key.family = MESH_AF_INET;
    return key;
  }
  client.toAbi(key.addr);
  key.family = client.family == AF_INET6 ? MESH_AF_INET6 : MESH_AF_INET;
  return key;
}

std::optional<OrigDst> OrigDstTable::take(const IpAddress& client, uint16_t client_port) const {
  if (client.family != AF_INET && client.family != AF_INET6) return std::nullopt;
  const mesh_orig_dst_key key = keyOf(client, client_port);
  mesh_orig_dst val{};
  if (bpf_map_lookup_and_delete_elem(fd_.get(), &key, &val) != 0) return std::nullopt;
  OrigDst out;
  out.vip = IpAddress::fromAbi(val.family == MESH_AF_INET6 ? AF_INET6 : AF_INET, val.vip);
  out.port = ntohs(val.vip_port);
  out.svc_id = val.svc_id;
  return out;
}

std::optional<OrigDst> OrigDstTable::take(const sockaddr_storage& peer) const {
  IpAddress client;
  uint16_t port = 0;
  if (peer.ss_family == AF_INET) {
    const auto* s4 = reinterpret_cast<const sockaddr_in*>(&peer);
    client.family = AF_INET;
    std::memcpy(client.bytes.data(), &s4->sin_addr, 4);
    port = ntohs(s4->sin_port);
  } else if (peer.ss_family == AF_INET6) {
    const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&peer);
    client.family = AF_INET6;
    std::memcpy(client.bytes.data(), &s6->sin6_addr, 16);
    port = ntohs(s6->sin6_port);
  } else {
    return std::nullopt;
  }
  return take(client, port);
}

}  // namespace meshd::datapath
