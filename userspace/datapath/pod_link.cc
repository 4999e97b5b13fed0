// hostIfindexOfPod: the node-side end of a pod's veth, through netlink inside
// the pod's network namespace.
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "datapath/datapath.h"

namespace meshd::datapath {
namespace {

// A NETLINK_ROUTE socket created inside the namespace at `netns_path`: a
// socket keeps the namespace it was created in, so only its creation needs the
// short-lived thread (setns changes the calling thread's namespace only).
absl::StatusOr<ScopedFd> netlinkIn(const std::string& netns_path) {
  ScopedFd ns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("pod network namespace ", netns_path, " does not exist"));
    }
    return errnoError(errno, absl::StrCat("opening pod network namespace ", netns_path));
  }
  int fd = -1, err = 0;
  std::thread t([&] {
    if (setns(ns.get(), CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) err = errno;
  });
  t.join();
  if (fd < 0) {
    return errnoError(err, absl::StrCat("opening a netlink socket in ", netns_path));
  }
  return ScopedFd(fd);
}

}  // namespace

absl::StatusOr<int> hostIfindexOfPod(const std::string& netns_path, const std::string& ifname) {
  if (ifname.empty() || ifname.size() >= IF_NAMESIZE) {
    return absl::InvalidArgumentError(absl::StrCat("bad interface name \"", ifname, "\""));
  }
  ASSIGN_OR_RETURN(ScopedFd nl, netlinkIn(netns_path));
  struct {
    nlmsghdr nh;
    ifinfomsg ifi;
    char attrs[RTA_SPACE(IF_NAMESIZE)];
  } req{};
  req.nh.nlmsg_type = RTM_GETLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST;
  req.nh.nlmsg_seq = 1;
  req.ifi.ifi_family = AF_UNSPEC;
  auto* rta = reinterpret_cast<rtattr*>(req.attrs);
  rta->rta_type = IFLA_IFNAME;
  rta->rta_len = RTA_LENGTH(ifname.size() + 1);
  std::memcpy(RTA_DATA(rta), ifname.c_str(), ifname.size() + 1);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg)) + RTA_ALIGN(rta->rta_len);
  if (send(nl.get(), &req, req.nh.nlmsg_len, 0) < 0) {
    return errnoError(errno, absl::StrCat("netlink RTM_GETLINK ", ifname, " in ", netns_path));
  }
  alignas(nlmsghdr) char buf[16384];
  const ssize_t n = recv(nl.get(), buf, sizeof(buf), 0);
  if (n < 0) return errnoError(errno, absl::StrCat("netlink reply for ", ifname));
  auto* nh = reinterpret_cast<nlmsghdr*>(buf);
  if (!NLMSG_OK(nh, static_cast<uint32_t>(n))) {
    return absl::InternalError(
        absl::StrCat("short netlink reply for ", ifname, " in ", netns_path));
  }
  if (nh->nlmsg_type == NLMSG_ERROR) {
    const int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;
    if (err == ENODEV) {
      return absl::NotFoundError(
          absl::StrCat("no interface ", ifname, " in pod network namespace ", netns_path));
    }
    return errnoError(err, absl::StrCat("netlink RTM_GETLINK ", ifname, " in ", netns_path));
  }
  if (nh->nlmsg_type != RTM_NEWLINK) {
    return absl::InternalError(absl::StrCat("unexpected netlink reply type ", nh->nlmsg_type));
  }
  auto* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(nh));
  int len = static_cast<int>(nh->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof(*ifi)));
  int link = 0;
  bool other_netns = false;
  for (rtattr* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == IFLA_LINK && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
      std::memcpy(&link, RTA_DATA(a), sizeof(link));
    } else if (a->rta_type == IFLA_LINK_NETNSID) {
      other_netns = true;
    }
  }
  if (link <= 0 || link == ifi->ifi_index) {
    return absl::FailedPreconditionError(
        absl::StrCat("interface ", ifname, " in ", netns_path,
                     " has no peer link (IFLA_LINK): STRICT needs a veth CNI"));
  }
  if (!other_netns) {
    return absl::FailedPreconditionError(
        absl::StrCat("the peer of ", ifname, " in ", netns_path,
                     " is in the same network namespace (no IFLA_LINK_NETNSID): expected a veth "
                     "whose host end is in meshd's namespace"));
  }
  return link;
}

}  // namespace meshd::datapath
