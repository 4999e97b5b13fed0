// Datapath: the STRICT program's tcx links (attachStrict and friends).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "datapath/datapath.h"
#include "datapath/preflight.h"
#include "mesh.skel.h"

namespace meshd::datapath {
namespace {

namespace fs = std::filesystem;

// BPF_TCX_EGRESS and BPF_LINK_TYPE_TCX (Linux 6.6), which the system's
// <linux/bpf.h> and libbpf 1.1 predate.
constexpr int kAttachTcxEgress = 47;
constexpr uint32_t kLinkTypeTcx = 11;
constexpr char kPinPrefix[] = "mesh_strict_egress@";

struct TcxLinkInfo {
  uint32_t type = 0;
  uint32_t ifindex = 0;  // 0 once the device is gone (the link is defunct)
  uint32_t attach_type = 0;
};

// Type, ifindex and attach type of a link (the tcx member of the kernel's
// bpf_link_info union, { __u32 ifindex; __u32 attach_type; }).
absl::StatusOr<TcxLinkInfo> tcxInfo(int fd) {
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return errnoError(errno, "reading link info");
  TcxLinkInfo out;
  out.type = info.type;
  const auto* u = reinterpret_cast<const uint8_t*>(&info) + offsetof(bpf_link_info, raw_tracepoint);
  std::memcpy(&out.ifindex, u, 4);
  std::memcpy(&out.attach_type, u + 4, 4);
  return out;
}

}  // namespace

std::string Datapath::strictLinkPin(int ifindex) const {
  return absl::StrCat(instanceDir(), "/links/", kPinPrefix, ifindex);
}

absl::Status Datapath::adoptStrictLinks() {
  const int prog_fd = bpf_program__fd(skel_->progs.mesh_strict_egress);
  for (int ifindex : strictInterfaces()) {
    const std::string pin = strictLinkPin(ifindex);
    ScopedFd fd(bpf_obj_get(pin.c_str()));
    absl::StatusOr<TcxLinkInfo> info =
        fd.valid() ? tcxInfo(fd.get()) : absl::StatusOr<TcxLinkInfo>(absl::NotFoundError(pin));
    const bool alive =
        info.ok() && info->type == kLinkTypeTcx && info->ifindex == static_cast<uint32_t>(ifindex);
    if (alive && bpf_link_update(fd.get(), prog_fd, nullptr) == 0) continue;
    // The workload's device went away (or the pin is not ours): forget it.
    ::unlink(pin.c_str());
  }
  return absl::OkStatus();
}

absl::Status Datapath::attachStrict(int host_ifindex) {
  char name[IF_NAMESIZE] = {};
  if (host_ifindex <= 0 || if_indextoname(static_cast<unsigned>(host_ifindex), name) == nullptr) {
    return absl::NotFoundError(absl::StrCat("attaching STRICT: no interface with ifindex ",
                                            host_ifindex, " in meshd's network namespace"));
  }
  const int prog_fd = bpf_program__fd(skel_->progs.mesh_strict_egress);
  const std::string pin = strictLinkPin(host_ifindex);
  if (fs::exists(pin)) {
    ScopedFd fd(bpf_obj_get(pin.c_str()));
    if (fd.valid()) {
      absl::StatusOr<TcxLinkInfo> info = tcxInfo(fd.get());
      if (info.ok() && info->type == kLinkTypeTcx &&
          info->ifindex == static_cast<uint32_t>(host_ifindex) &&
          bpf_link_update(fd.get(), prog_fd, nullptr) == 0) {
        return absl::OkStatus();
      }
      (void)bpf_link_detach(fd.get());
    }
    ::unlink(pin.c_str());  // stale: the index now names another device
  }
  ScopedFd link(bpf_link_create(prog_fd, host_ifindex,
                                static_cast<bpf_attach_type>(kAttachTcxEgress), nullptr));
  if (!link.valid()) {
    const int err = errno;
    if (absl::Status support = strictSupported(); !support.ok()) return support;
    return errnoError(err, absl::StrCat("attaching mesh_strict_egress at tcx egress of ", name,
                                        " (ifindex ", host_ifindex, ")"));
  }
  if (bpf_obj_pin(link.get(), pin.c_str()) != 0) {
    const int err = errno;
    (void)bpf_link_detach(link.get());
    return errnoError(err, absl::StrCat("pinning link ", pin));
  }
  return absl::OkStatus();
}

absl::Status Datapath::detachStrict(int host_ifindex) {
  const std::string pin = strictLinkPin(host_ifindex);
  ScopedFd fd(bpf_obj_get(pin.c_str()));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::OkStatus();
    return errnoError(errno, absl::StrCat("opening pinned link ", pin));
  }
  // Detach now (a defunct link gives an error that does not matter), then unpin.
  (void)bpf_link_detach(fd.get());
  if (::unlink(pin.c_str()) != 0 && errno != ENOENT) {
    return errnoError(errno, absl::StrCat("removing pin ", pin));
  }
  return absl::OkStatus();
}

std::vector<int> Datapath::strictInterfaces() const {
  std::vector<int> out;
  std::error_code ec;
  const std::string_view prefix = kPinPrefix;
  for (const auto& entry : fs::directory_iterator(instanceDir() + "/links", ec)) {
    const std::string name = entry.path().filename().string();
    int ifindex = 0;
    if (name.rfind(prefix, 0) == 0 &&
        absl::SimpleAtoi(absl::string_view(name).substr(prefix.size()), &ifindex)) {
      out.push_back(ifindex);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace meshd::datapath
