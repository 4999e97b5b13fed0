// The original destination of a connection the connect hook sent to meshd's
// L7 listener (MESH_SVC_F_L7): the VIP:port the app asked for, published by
// sockops in mesh_orig_dst at the client's ACTIVE_ESTABLISHED and keyed by the
// client's own address and port, i.e. by the peer address of meshd's
// accepted socket (docs/design/0003-l7-proxy.md, "Redirect").
//
//   pod: connect(VIP:80) --connect4/6--> node:15001     mesh_sock: VIP, F_L7
//        SYN-ACK: ACTIVE_ESTABLISHED --> mesh_orig_dst[(pod addr, port)] = VIP:80
//   meshd: accept() -> peer (pod addr, port) -> take() -> VIP:80, entry deleted
//
// take() is one BPF syscall on a descriptor of its own (dup'd), without a lock
// or an allocation: proxy worker threads call it concurrently.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/net.h"
#include "common/scoped_fd.h"
#include "mesh_abi.h"

namespace meshd::datapath {

struct OrigDst {
  IpAddress vip;        // what the app connect()ed to; v4-mapped IPv6 is folded into IPv4
  uint16_t port = 0;    // host order
  uint32_t svc_id = 0;  // mesh_svc.svc_id when the app connected

  friend bool operator==(const OrigDst&, const OrigDst&) = default;
};

class OrigDstTable;
using OrigDstTablePtr = std::shared_ptr<const OrigDstTable>;

class OrigDstTable {
 public:
  // A table over the mesh_orig_dst map `map_fd` (which stays the caller's: the
  // table keeps a dup of it). Fails with the errno of dup().
  static absl::StatusOr<OrigDstTablePtr> fromMapFd(int map_fd);

  // The map key of a client address and port (host order): v4-mapped IPv6
  // (::ffff:a.b.c.d) folded into IPv4, as sockops writes it.
  static mesh_orig_dst_key keyOf(const IpAddress& client, uint16_t client_port);

  // Looks the client up and deletes its entry (one BPF_MAP_LOOKUP_AND_DELETE_ELEM,
  // so of two concurrent takes at most one gets it). `client` and
  // `client_port` (host order) are the peer of meshd's accepted socket.
  // nullopt when there is no entry (not a redirected connection, already
  // taken, or evicted from the LRU map), for an address that is neither IPv4
  // nor IPv6, and on a kernel error (the map fd is ours and valid, so only
  // ENOMEM-like failures are possible).
  std::optional<OrigDst> take(const IpAddress& client, uint16_t client_port) const;
  // The same for a peer as getpeername()/accept() return it (AF_INET or
  // AF_INET6; anything else gives nullopt).
  std::optional<OrigDst> take(const sockaddr_storage& peer) const;

  int fd() const { return fd_.get(); }

 private:
  explicit OrigDstTable(ScopedFd fd) : fd_(std::move(fd)) {}
  ScopedFd fd_;
};

}  // namespace meshd::datapath
