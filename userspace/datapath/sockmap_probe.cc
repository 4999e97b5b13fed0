// probeSockmap(): the start-up check of the sockmap fast path (sockmap.h).
// Kept apart from sockmap.cc because it needs <linux/tcp.h>'s full tcp_info
// (tcpi_bytes_received), which clashes with <netinet/tcp.h>.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "datapath/sockmap.h"
#include "mesh_abi.h"

namespace meshd::datapath {
namespace {

constexpr char kPayload[] = "meshd sockmap probe";
constexpr int kTimeoutMs = 1000;

// The key sockops would build for `fd`: its own address first (network order).
absl::StatusOr<mesh_sock_key> keyOf(int fd) {
  sockaddr_in local{}, remote{};
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    return errnoError(errno, "sockmap probe: getsockname");
  }
  len = sizeof(remote);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &len) != 0) {
    return errnoError(errno, "sockmap probe: getpeername");
  }
  mesh_sock_key key{};
  key.local[0] = local.sin_addr.s_addr;
  key.remote[0] = remote.sin_addr.s_addr;
  key.local_port = local.sin_port;
  key.remote_port = remote.sin_port;
  key.family = MESH_AF_INET;
  return key;
}

// Sends kPayload on `from` and reads it back on `to`.
absl::Status roundTrip(int from, int to, const char* direction) {
  const size_t n = sizeof(kPayload) - 1;
  ssize_t w = send(from, kPayload, n, MSG_NOSIGNAL);
  if (w != static_cast<ssize_t>(n)) {
    return errnoError(w < 0 ? errno : EIO,
                      absl::StrCat("sockmap probe: send ", direction, " on a spliced socket"));
  }
  std::string got;
  while (got.size() < n) {
    pollfd p{to, POLLIN, 0};
    int r = poll(&p, 1, kTimeoutMs);
    if (r == 0) {
      return absl::DeadlineExceededError(absl::StrCat("sockmap probe: ", got.size(), " of ", n,
                                                      " bytes sent ", direction, " arrived within ",
                                                      kTimeoutMs, " ms"));
    }
    if (r < 0) return errnoError(errno, "sockmap probe: poll");
    char buf[64];
    ssize_t rd = recv(to, buf, sizeof(buf), MSG_DONTWAIT);
    if (rd <= 0) {
      return errnoError(rd < 0 ? errno : EPIPE,
                        absl::StrCat("sockmap probe: recv ", direction, " on a spliced socket"));
    }
    got.append(buf, rd);
  }
  if (got != std::string(kPayload, n)) {
    return absl::DataLossError(
        absl::StrCat("sockmap probe: the bytes sent ", direction, " arrived changed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> tcpBytesReceived(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) {
    return errnoError(errno, "sockmap probe: getsockopt(TCP_INFO)");
  }
  return info.tcpi_bytes_received;
}

}  // namespace

absl::Status probeSockmap(int sockhash_fd,
                          const std::function<absl::StatusOr<uint64_t>()>& spliced_bytes) {
  ScopedFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener.valid()) return errnoError(errno, "sockmap probe: socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      listen(listener.get(), 1) != 0 ||
      getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return errnoError(errno, "sockmap probe: listening on 127.0.0.1 (is lo up?)");
  }
  ScopedFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client.valid()) return errnoError(errno, "sockmap probe: socket");
  if (connect(client.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return errnoError(errno, "sockmap probe: connecting over 127.0.0.1");
  }
  ScopedFd server(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!server.valid()) return errnoError(errno, "sockmap probe: accept");

  ASSIGN_OR_RETURN(mesh_sock_key client_key, keyOf(client.get()));
  ASSIGN_OR_RETURN(mesh_sock_key server_key, keyOf(server.get()));
  ASSIGN_OR_RETURN(uint64_t before, spliced_bytes());

  // From here on both sockets must leave the map whatever happens.
  struct Entries {
    int map;
    mesh_sock_key keys[2];
    int n = 0;
    ~Entries() {
      for (int i = 0; i < n; ++i) (void)bpf_map_delete_elem(map, &keys[i]);
    }
  } entries{sockhash_fd, {client_key, server_key}};
  for (int fd : {client.get(), server.get()}) {
    uint64_t value = static_cast<uint64_t>(fd);
    if (bpf_map_update_elem(sockhash_fd, &entries.keys[entries.n], &value, BPF_NOEXIST) != 0) {
      return errnoError(errno,
                        "sockmap probe: adding a TCP socket to mesh_sockhash (the kernel needs "
                        "CONFIG_BPF_STREAM_PARSER and TCP sockmap support, Linux 4.18+)");
    }
    ++entries.n;
  }

  RETURN_IF_ERROR(roundTrip(client.get(), server.get(), "client->server"));
  RETURN_IF_ERROR(roundTrip(server.get(), client.get(), "server->client"));

  for (int fd : {client.get(), server.get()}) {
    ASSIGN_OR_RETURN(uint64_t tcp_bytes, tcpBytesReceived(fd));
    if (tcp_bytes != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sockmap probe: the probe bytes crossed TCP (", tcp_bytes,
          " bytes received by TCP): sk_msg did not redirect them (is mesh_sk_msg attached to "
          "mesh_sockhash?)"));
    }
  }
  ASSIGN_OR_RETURN(uint64_t after, spliced_bytes());
  const uint64_t sent = 2 * (sizeof(kPayload) - 1);
  if (after < before + sent) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sockmap probe: sockmap_bytes grew by ", after - before, ", expected at least ", sent,
        " (mesh_sk_msg did not count the redirected bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace meshd::datapath
