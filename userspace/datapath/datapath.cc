#include "datapath/datapath.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/net.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "datapath/abi_names.h"
#include "datapath/map_ops.h"
#include "mesh.skel.h"

namespace meshd::datapath {
namespace {

namespace fs = std::filesystem;

struct MapRef {
  const char* name;
  bpf_map* map;
};

struct ProgRef {
  bpf_program* prog;
  bpf_link** link;  // the skeleton's slot: mesh::destroy() closes it
};

// Every map and program, through the skeleton's fields (no name lookups).
std::vector<MapRef> mapsOf(struct mesh* s) {
  return {{"mesh_services", s->maps.mesh_services},
          {"mesh_slots", s->maps.mesh_slots},
          {"mesh_backends", s->maps.mesh_backends},
          {"mesh_backend_state", s->maps.mesh_backend_state},
          {"mesh_maglev", s->maps.mesh_maglev},
          {"mesh_sock", s->maps.mesh_sock},
          {"mesh_udp_rev", s->maps.mesh_udp_rev},
          {"mesh_stats", s->maps.mesh_stats},
          {"mesh_svc_state", s->maps.mesh_svc_state},
          {"mesh_rate_client", s->maps.mesh_rate_client},
          {"mesh_drain", s->maps.mesh_drain},
          {"mesh_config", s->maps.mesh_config},
          {"mesh_sockhash", s->maps.mesh_sockhash},
          {"mesh_sockmap_pending", s->maps.mesh_sockmap_pending},
          {"mesh_orig_dst", s->maps.mesh_orig_dst},
          {"mesh_strict", s->maps.mesh_strict},
          {"mesh_strict_pass", s->maps.mesh_strict_pass},
          {"mesh_cg_identity", s->maps.mesh_cg_identity},
          {"mesh_authz_dst", s->maps.mesh_authz_dst},
          {"mesh_authz_l4", s->maps.mesh_authz_l4}};
}

// The programs attached to the cgroup (the sk_msg program is attached to
// mesh_sockhash instead: Datapath::attachSkMsg).
std::vector<ProgRef> progsOf(struct mesh* s) {
  return {{s->progs.mesh_connect4, &s->links.mesh_connect4},
          {s->progs.mesh_connect6, &s->links.mesh_connect6},
          {s->progs.mesh_sendmsg4, &s->links.mesh_sendmsg4},
          {s->progs.mesh_sendmsg6, &s->links.mesh_sendmsg6},
          {s->progs.mesh_getpeername4, &s->links.mesh_getpeername4},
          {s->progs.mesh_getpeername6, &s->links.mesh_getpeername6},
          {s->progs.mesh_recvmsg4, &s->links.mesh_recvmsg4},
          {s->progs.mesh_recvmsg6, &s->links.mesh_recvmsg6},
          {s->progs.mesh_sockops, &s->links.mesh_sockops},
          {s->progs.mesh_sock_release, &s->links.mesh_sock_release}};
}

// BPF_LINK_TYPE_SOCKMAP (Linux 6.10) and the kernel's sockmap link info, which
// the system's <linux/bpf.h> (older than the running kernel) may lack.
constexpr uint32_t kLinkTypeSockmap = 14;

std::string resetHint(const DatapathConfig& c) {
  return absl::StrCat("to start over, stop meshd and remove the pins with `rm -r ", c.pin_root, "/",
                      c.instance,
                      "` (existing connections keep working; new ones are "
                      "not steered until meshd starts again)");
}

absl::StatusOr<bpf_map_info> mapInfoOf(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return errnoError(errno, "reading map info");
  return info;
}

// Reuses a pinned map when its shape matches what this build would create.
absl::Status reusePinnedMap(const DatapathConfig& c, const MapRef& m, const std::string& pin) {
  ScopedFd fd(bpf_obj_get(pin.c_str()));
  if (fd.get() < 0) return errnoError(errno, absl::StrCat("opening pinned map ", pin));
  ASSIGN_OR_RETURN(bpf_map_info info, mapInfoOf(fd.get()));
  std::string why;
  if (info.type != bpf_map__type(m.map)) {
    why = "a different map type";
  } else if (info.key_size != bpf_map__key_size(m.map) ||
             info.value_size != bpf_map__value_size(m.map)) {
    why = absl::StrCat("key/value size ", info.key_size, "/", info.value_size,
                       " where this build uses ", bpf_map__key_size(m.map), "/",
                       bpf_map__value_size(m.map), " (the map ABI changed)");
  } else if (info.max_entries != bpf_map__max_entries(m.map)) {
    why = absl::StrCat("max_entries ", info.max_entries, " where the configuration asks for ",
                       bpf_map__max_entries(m.map));
  } else if (info.map_flags != bpf_map__map_flags(m.map)) {
    why = "different map flags";
  }
  if (!why.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pinned map ", pin, " is incompatible with this meshd: it has ", why, "; ", resetHint(c)));
  }
  int ret = bpf_map__reuse_fd(m.map, fd.get());  // dups the fd
  if (ret != 0) return errnoError(-ret, absl::StrCat("reusing pinned map ", pin));
  return absl::OkStatus();
}

uint64_t cgroupId(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;  // cgroup v2 id == kernfs inode
}

std::string addrText(uint8_t family, const uint32_t addr[4]) {
  return IpAddress::fromAbi(family == MESH_AF_INET6 ? AF_INET6 : AF_INET, addr).toString();
}

std::string_view familyName(uint8_t family) {
  return family == MESH_AF_INET6 ? "ipv6" : family == MESH_AF_INET ? "ipv4" : "unknown";
}

}  // namespace

std::string Datapath::instanceDir() const {
  return absl::StrCat(config_.pin_root, "/", config_.instance);
}

absl::StatusOr<DatapathPtr> Datapath::open(const DatapathConfig& config) {
  if (config.instance.empty() || config.instance.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("instance name \"", config.instance, "\" must be non-empty without '/'"));
  }
  if (config.max_services == 0 || config.max_backends == 0 || config.max_slots == 0 ||
      config.max_udp_flows == 0 || config.max_orig_dst == 0 || config.max_strict == 0 ||
      config.max_strict_pass == 0 || config.max_identities == 0 || config.max_authz_dsts == 0 ||
      config.max_authz_rules == 0) {
    return absl::InvalidArgumentError("datapath map sizes must all be > 0");
  }
  if (config.strict_mark == 0) {
    return absl::InvalidArgumentError(
        "datapath strict_mark must be non-zero (the skb->mark bits of meshd's own sockets)");
  }
  DatapathPtr dp(new Datapath(config));
  bool had_pins = fs::exists(dp->instanceDir());
  absl::Status st = dp->load();
  if (!st.ok()) {
    mesh::destroy(dp->skel_);
    dp->skel_ = nullptr;
    // Pins this call created would hold half a datapath in the kernel.
    if (!had_pins) (void)removePins(config.pin_root, config.instance);
    return st;
  }
  return dp;
}

absl::Status Datapath::load() {
  skel_ = mesh::open();
  if (skel_ == nullptr) return errnoError(errno, "opening the embedded mesh BPF object");

  const DatapathConfig& c = config_;
  struct Size {
    bpf_map* map;
    uint32_t n;
  };
  for (const Size& s :
       {Size{skel_->maps.mesh_services, c.max_services}, Size{skel_->maps.mesh_slots, c.max_slots},
        Size{skel_->maps.mesh_maglev, c.max_services},
        Size{skel_->maps.mesh_svc_state, c.max_services},
        Size{skel_->maps.mesh_backends, c.max_backends},
        Size{skel_->maps.mesh_backend_state, c.max_backends},
        Size{skel_->maps.mesh_udp_rev, c.max_udp_flows},
        Size{skel_->maps.mesh_rate_client, c.max_rate_clients},
        Size{skel_->maps.mesh_sockhash, c.max_sockmap_sockets},
        Size{skel_->maps.mesh_sockmap_pending, c.max_sockmap_sockets},
        Size{skel_->maps.mesh_orig_dst, c.max_orig_dst},
        Size{skel_->maps.mesh_strict, c.max_strict},
        Size{skel_->maps.mesh_strict_pass, c.max_strict_pass},
        Size{skel_->maps.mesh_cg_identity, c.max_identities},
        Size{skel_->maps.mesh_authz_dst, c.max_authz_dsts},
        Size{skel_->maps.mesh_authz_l4, c.max_authz_rules}}) {
    int ret = bpf_map__set_max_entries(s.map, s.n);
    if (ret != 0) {
      return errnoError(-ret, absl::StrCat("sizing map ", bpf_map__name(s.map), " to ", s.n));
    }
  }

  skel_->rodata->mesh_strict_mark = c.strict_mark;

  // A kernel without sockmap could not create mesh_sockhash nor load
  // mesh_sk_msg: make the map a plain hash nothing uses and tell the programs
  // (.rodata, so the verifier drops the sockmap code as dead).
  sockmap_supported_ = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, nullptr) == 1 &&
                       libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_MSG, nullptr) == 1;
  if (!sockmap_supported_) {
    skel_->rodata->mesh_sockmap_supported = 0;
    bpf_map__set_type(skel_->maps.mesh_sockhash, BPF_MAP_TYPE_HASH);
    bpf_program__set_autoload(skel_->progs.mesh_sk_msg, false);
  }

  const std::string dir = instanceDir();
  std::error_code ec;
  fs::create_directories(dir + "/links", ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("creating pin directory ", dir, "/links: ", ec.message(),
                     " (is bpffs mounted at ", c.pin_root.substr(0, c.pin_root.rfind('/')), "?)"));
  }

  int reused = 0;
  for (const MapRef& m : mapsOf(skel_)) {
    std::string pin = absl::StrCat(dir, "/", m.name);
    if (fs::exists(pin)) {
      RETURN_IF_ERROR(reusePinnedMap(c, m, pin));
      ++reused;
    } else {
      int ret = bpf_map__set_pin_path(m.map, pin.c_str());  // libbpf pins it at load
      if (ret != 0) return errnoError(-ret, absl::StrCat("setting pin path ", pin));
    }
  }
  adopted_ = reused > 0;

  // drain.bpf.c needs bpf_sock_destroy (6.5+); without it everything else
  // still loads and terminateConnections() says what is missing.
  if (btf* vmlinux = btf__load_vmlinux_btf();
      vmlinux == nullptr ||
      btf__find_by_name_kind(vmlinux, "bpf_sock_destroy", BTF_KIND_FUNC) < 0) {
    terminate_unavailable_ =
        "this kernel has no bpf_sock_destroy kfunc (Linux 6.5+ with BTF), so connections to "
        "removed backends cannot be ended at once; they drain instead";
    bpf_program__set_autoload(skel_->progs.mesh_drain_tcp, false);
    btf__free(vmlinux);
  } else {
    btf__free(vmlinux);
  }

  int ret = mesh::load(skel_);
  if (ret != 0) {
    return errnoError(-ret,
                      "loading the mesh BPF programs and maps into the kernel (libbpf printed "
                      "the verifier log or the failing map above)");
  }

  ScopedFd cg(::open(c.cgroup_path.c_str(), O_RDONLY | O_DIRECTORY));
  if (cg.get() < 0) {
    return errnoError(errno, absl::StrCat("opening cgroup ", c.cgroup_path,
                                          " (does the cgroup v2 directory exist?)"));
  }
  const uint64_t cg_id = cgroupId(c.cgroup_path);

  for (const ProgRef& p : progsOf(skel_)) {
    std::string pin = absl::StrCat(dir, "/links/", bpf_program__name(p.prog));
    if (fs::exists(pin)) {
      bpf_link* link = bpf_link__open(pin.c_str());
      if (link == nullptr) return errnoError(errno, absl::StrCat("opening pinned link ", pin));
      *p.link = link;
      bpf_link_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len) != 0) {
        return errnoError(errno, absl::StrCat("reading pinned link ", pin));
      }
      if (info.type != BPF_LINK_TYPE_CGROUP || info.cgroup.cgroup_id != cg_id) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pinned link ", pin, " is attached to cgroup id ", info.cgroup.cgroup_id, ", not to ",
            c.cgroup_path, " (id ", cg_id, ") as configured; ", resetHint(c)));
      }
      // Atomic switch to the new program: the old one runs until this returns.
      ret = bpf_link__update_program(link, p.prog);
      if (ret != 0) {
        return errnoError(-ret, absl::StrCat("switching pinned link ", pin, " to the new program"));
      }
    } else {
      bpf_link* link = bpf_program__attach_cgroup(p.prog, cg.get());
      if (link == nullptr) {
        return errnoError(errno, absl::StrCat("attaching ", bpf_program__name(p.prog),
                                              " to cgroup ", c.cgroup_path));
      }
      *p.link = link;
      ret = bpf_link__pin(link, pin.c_str());
      if (ret != 0) return errnoError(-ret, absl::StrCat("pinning link ", pin));
    }
  }

  if (sockmap_supported_) RETURN_IF_ERROR(attachSkMsg());

  LbMapFds fds;
  fds.services = bpf_map__fd(skel_->maps.mesh_services);
  fds.slots = bpf_map__fd(skel_->maps.mesh_slots);
  fds.backends = bpf_map__fd(skel_->maps.mesh_backends);
  fds.backend_state = bpf_map__fd(skel_->maps.mesh_backend_state);
  fds.maglev = bpf_map__fd(skel_->maps.mesh_maglev);
  fds.stats = bpf_map__fd(skel_->maps.mesh_stats);
  fds.svc_state = bpf_map__fd(skel_->maps.mesh_svc_state);
  fds.forget_prog = bpf_program__fd(skel_->progs.mesh_backend_forget);
  fds.max_services = c.max_services;
  fds.max_slots = c.max_slots;
  fds.max_backends = c.max_backends;
  maps_ = std::make_unique<BpfLbMaps>(fds);
  PolicyMapFds pfds;
  pfds.strict = bpf_map__fd(skel_->maps.mesh_strict);
  pfds.cg_identity = bpf_map__fd(skel_->maps.mesh_cg_identity);
  pfds.authz_dst = bpf_map__fd(skel_->maps.mesh_authz_dst);
  pfds.authz_l4 = bpf_map__fd(skel_->maps.mesh_authz_l4);
  pfds.stats = bpf_map__fd(skel_->maps.mesh_stats);
  policy_ = std::make_unique<PolicyMaps>(pfds);
  RETURN_IF_ERROR(adoptStrictLinks());
  ASSIGN_OR_RETURN(orig_dst_, OrigDstTable::fromMapFd(bpf_map__fd(skel_->maps.mesh_orig_dst)));
  ASSIGN_OR_RETURN(ejector_,
                   KernelEjector::fromProgFd(bpf_program__fd(skel_->progs.mesh_backend_eject)));

  // An adopted mesh_config keeps redirecting L7 services while meshd
  // restarts: start from what it holds (the flags are decided again below).
  const uint32_t zero = 0;
  if (adopted_ &&
      bpf_map_lookup_elem(bpf_map__fd(skel_->maps.mesh_config), &zero, &config_value_) != 0) {
    return errnoError(errno, "reading the pinned mesh_config");
  }
  return startSockmap();
}

absl::Status Datapath::attachProxySockops(const std::string& proxy_cgroup) {
  const fs::path proxy = fs::path(proxy_cgroup).lexically_normal();
  const fs::path steered = fs::path(config_.cgroup_path).lexically_normal();
  auto within = [](const fs::path& inner, const fs::path& outer) {
    auto [o, i] = std::mismatch(outer.begin(), outer.end(), inner.begin(), inner.end());
    return o == outer.end();
  };
  if (within(steered, proxy) || within(proxy, steered)) {
    return absl::FailedPreconditionError(
        absl::StrCat("meshd's cgroup ", proxy.string(), " is ",
                     within(proxy, steered) ? "inside" : "an ancestor of (or the same as)",
                     " the steered cgroup ", steered.string(),
                     ": run meshd in a cgroup of its own outside the subtree it steers"));
  }
  ScopedFd cg(::open(proxy.c_str(), O_RDONLY | O_DIRECTORY));
  if (cg.get() < 0) {
    return errnoError(errno, absl::StrCat("opening meshd's cgroup ", proxy.string()));
  }
  const uint64_t cg_id = cgroupId(proxy.string());
  bpf_program* prog = skel_->progs.mesh_sockops;
  const std::string pin = absl::StrCat(instanceDir(), "/links/mesh_sockops_proxy");
  if (fs::exists(pin)) {
    bpf_link* link = bpf_link__open(pin.c_str());
    if (link == nullptr) return errnoError(errno, absl::StrCat("opening pinned link ", pin));
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    const bool same = bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len) == 0 &&
                      info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cg_id;
    if (same) {
      if (int ret = bpf_link__update_program(link, prog); ret != 0) {
        bpf_link__destroy(link);
        return errnoError(-ret, absl::StrCat("switching pinned link ", pin, " to the new program"));
      }
      proxy_sockops_link_ = link;
      proxy_cgroup_ = proxy.string();
      return absl::OkStatus();
    }
    // meshd runs in another cgroup than the one its predecessor spliced: move the link.
    (void)bpf_link__unpin(link);
    (void)bpf_link__detach(link);
    bpf_link__destroy(link);
  }
  bpf_link* link = bpf_program__attach_cgroup(prog, cg.get());
  if (link == nullptr) {
    return errnoError(errno,
                      absl::StrCat("attaching mesh_sockops to meshd's cgroup ", proxy.string()));
  }
  if (int ret = bpf_link__pin(link, pin.c_str()); ret != 0) {
    bpf_link__destroy(link);
    return errnoError(-ret, absl::StrCat("pinning link ", pin));
  }
  proxy_sockops_link_ = link;
  proxy_cgroup_ = proxy.string();
  return absl::OkStatus();
}

absl::Status Datapath::attachSkMsg() {
  bpf_program* prog = skel_->progs.mesh_sk_msg;
  const int map_fd = bpf_map__fd(skel_->maps.mesh_sockhash);
  const std::string pin = absl::StrCat(instanceDir(), "/links/", bpf_program__name(prog));
  if (fs::exists(pin)) {
    bpf_link* link = bpf_link__open(pin.c_str());
    if (link == nullptr) return errnoError(errno, absl::StrCat("opening pinned link ", pin));
    skel_->links.mesh_sk_msg = link;
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len) != 0) {
      return errnoError(errno, absl::StrCat("reading pinned link ", pin));
    }
    if (info.type != kLinkTypeSockmap) {
      return absl::FailedPreconditionError(absl::StrCat("pinned link ", pin, " has type ",
                                                        info.type, ", not a sockmap link; ",
                                                        resetHint(config_)));
    }
    int ret = bpf_link__update_program(link, prog);
    if (ret != 0) {
      return errnoError(-ret, absl::StrCat("switching pinned link ", pin, " to the new program"));
    }
    return absl::OkStatus();
  }
  // A link (Linux 6.10+) can be pinned, listed and updated like the cgroup
  // links. Older kernels: a plain attachment, which lives as long as the
  // (pinned) map; a restarted meshd attaching again replaces it (a sockmap
  // holds one sk_msg program), so it never runs twice.
  ScopedFd link_fd(bpf_link_create(bpf_program__fd(prog), map_fd, BPF_SK_MSG_VERDICT, nullptr));
  if (link_fd.valid()) {
    if (bpf_obj_pin(link_fd.get(), pin.c_str()) != 0) {
      return errnoError(errno, absl::StrCat("pinning link ", pin));
    }
    bpf_link* link = bpf_link__open(pin.c_str());
    if (link == nullptr) return errnoError(errno, absl::StrCat("opening pinned link ", pin));
    skel_->links.mesh_sk_msg = link;
    return absl::OkStatus();
  }
  if (bpf_prog_attach(bpf_program__fd(prog), map_fd, BPF_SK_MSG_VERDICT, 0) != 0) {
    return errnoError(errno, "attaching mesh_sk_msg to mesh_sockhash (BPF_SK_MSG_VERDICT)");
  }
  return absl::OkStatus();
}

absl::Status Datapath::writeConfig() {
  const uint32_t zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.mesh_config), &zero, &config_value_, BPF_ANY) !=
      0) {
    return errnoError(errno, "writing mesh_config");
  }
  return absl::OkStatus();
}

absl::Status Datapath::setRedirectTarget(std::optional<IpAddress> v4, std::optional<IpAddress> v6,
                                         uint16_t port) {
  RETURN_IF_ERROR(validateRedirectTarget(RedirectTarget{v4, v6, port}));
  mesh_config next = config_value_;
  next.redirect_port = htons(port);
  next.redirect_ip4 = 0;
  std::memset(next.redirect_ip6, 0, sizeof(next.redirect_ip6));
  if (v4.has_value()) std::memcpy(&next.redirect_ip4, v4->bytes.data(), 4);
  if (v6.has_value()) v6->toAbi(next.redirect_ip6);
  const mesh_config prev = config_value_;
  config_value_ = next;
  absl::Status st = writeConfig();
  if (!st.ok()) config_value_ = prev;
  return st;
}

RedirectTarget Datapath::redirectTarget() const {
  static constexpr uint32_t kZero[4] = {};
  RedirectTarget t;
  t.port = ntohs(config_value_.redirect_port);
  if (config_value_.redirect_ip4 != 0) {
    const uint32_t a[4] = {config_value_.redirect_ip4, 0, 0, 0};
    t.v4 = IpAddress::fromAbi(AF_INET, a);
  }
  if (std::memcmp(config_value_.redirect_ip6, kZero, sizeof(kZero)) != 0) {
    t.v6 = IpAddress::fromAbi(AF_INET6, config_value_.redirect_ip6);
  }
  return t;
}

absl::Status Datapath::startSockmap() {
  sockmap_ = SockmapState{};
  sockmap_.mode = config_.sockmap;
  // Off until the probe passed: sockops must not insert meanwhile.
  config_value_.flags = 0;
  RETURN_IF_ERROR(writeConfig());
  if (config_.sockmap == SockmapMode::kOff) return absl::OkStatus();
  absl::Status probe;
  if (!sockmap_supported_) {
    probe = absl::FailedPreconditionError(
        "the kernel has no BPF_MAP_TYPE_SOCKHASH or BPF_PROG_TYPE_SK_MSG (it needs "
        "CONFIG_BPF_STREAM_PARSER=y)");
  } else {
    probe =
        probeSockmap(bpf_map__fd(skel_->maps.mesh_sockhash), [this]() -> absl::StatusOr<uint64_t> {
          ASSIGN_OR_RETURN(std::vector<uint64_t> stats, maps_->readStats());
          return stats[MESH_STAT_SOCKMAP_BYTES];
        });
  }
  if (!probe.ok()) {
    sockmap_.reason = std::string(probe.message());
    if (config_.sockmap == SockmapMode::kOn) {
      return absl::FailedPreconditionError(
          absl::StrCat("sockmap is unavailable and --sockmap=on requires it: ", sockmap_.reason,
                       " (use --sockmap=auto to run without the fast path)"));
    }
    return absl::OkStatus();
  }
  config_value_.flags = MESH_CONFIG_F_SOCKMAP;
  RETURN_IF_ERROR(writeConfig());
  sockmap_.active = true;
  return absl::OkStatus();
}

absl::Status Datapath::setSockmapActive(bool active) {
  if (active && !sockmap_supported_) {
    return absl::FailedPreconditionError(
        "the kernel has no BPF_MAP_TYPE_SOCKHASH or BPF_PROG_TYPE_SK_MSG");
  }
  const uint32_t prev = config_value_.flags;
  config_value_.flags = active ? MESH_CONFIG_F_SOCKMAP : 0;
  if (absl::Status st = writeConfig(); !st.ok()) {
    config_value_.flags = prev;
    return st;
  }
  sockmap_.active = active;
  if (active) sockmap_.reason.clear();
  return absl::OkStatus();
}

Datapath::~Datapath() {
  maps_.reset();
  policy_.reset();
  // Closes our fds only: pinned maps and links stay in the kernel.
  if (proxy_sockops_link_ != nullptr) bpf_link__destroy(proxy_sockops_link_);  // pinned: stays
  if (skel_ != nullptr) mesh::destroy(skel_);
}

absl::Status Datapath::removePins(const std::string& pin_root, const std::string& instance) {
  if (instance.empty() || instance.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("bad instance name \"", instance, "\""));
  }
  std::string dir = absl::StrCat(pin_root, "/", instance);
  std::error_code ec;
  // Detach each link explicitly: dropping the last pin frees the link only
  // when the bpffs inode is released (after an RCU grace period), so without
  // this the programs would linger briefly after we return.
  for (const auto& entry : fs::directory_iterator(dir + "/links", ec)) {
    ScopedFd fd(bpf_obj_get(entry.path().c_str()));
    if (fd.get() >= 0 && bpf_link_detach(fd.get()) != 0 && errno != EINVAL) {
      return errnoError(errno, absl::StrCat("detaching pinned link ", entry.path().string()));
    }
  }
  ec.clear();
  fs::remove_all(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("removing pins under ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ProgramInfo>> Datapath::programs() {
  std::vector<ProgramInfo> out;
  std::vector<ProgRef> progs = progsOf(skel_);
  if (sockmap_supported_) progs.push_back({skel_->progs.mesh_sk_msg, &skel_->links.mesh_sk_msg});
  for (const ProgRef& p : progs) {
    ProgramInfo pi;
    pi.name = bpf_program__name(p.prog);
    const char* at = libbpf_bpf_attach_type_str(bpf_program__expected_attach_type(p.prog));
    pi.attach_type = at ? at : "unknown";
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(p.prog), &info, &len) != 0) {
      return errnoError(errno, absl::StrCat("reading info of program ", pi.name));
    }
    pi.prog_id = info.id;
    pi.run_cnt = info.run_cnt;
    pi.run_time_ns = info.run_time_ns;
    if (*p.link != nullptr) {
      bpf_link_info li{};
      len = sizeof(li);
      if (bpf_obj_get_info_by_fd(bpf_link__fd(*p.link), &li, &len) == 0) pi.link_id = li.id;
    }
    out.push_back(std::move(pi));
  }
  return out;
}

absl::StatusOr<std::vector<MapInfo>> Datapath::mapInfo() {
  std::vector<MapInfo> out;
  for (const MapRef& m : mapsOf(skel_)) {
    int fd = bpf_map__fd(m.map);
    ASSIGN_OR_RETURN(bpf_map_info info, mapInfoOf(fd));
    MapInfo mi;
    mi.name = m.name;
    const char* t = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(info.type));
    mi.type = t ? t : "unknown";
    mi.id = info.id;
    mi.key_size = info.key_size;
    mi.value_size = info.value_size;
    mi.max_entries = info.max_entries;
    mi.pin_path = absl::StrCat(instanceDir(), "/", m.name);
    if (m.map == skel_->maps.mesh_backends) {
      ASSIGN_OR_RETURN(LbMapContents all, maps_->readAll());
      mi.entries = static_cast<int64_t>(all.backends.size());
    } else if (info.type == BPF_MAP_TYPE_HASH || info.type == BPF_MAP_TYPE_LRU_HASH ||
               info.type == BPF_MAP_TYPE_HASH_OF_MAPS || info.type == BPF_MAP_TYPE_SOCKHASH) {
      ASSIGN_OR_RETURN(uint64_t n, mapops::countEntries(fd, m.name));
      mi.entries = static_cast<int64_t>(n);
    }
    out.push_back(std::move(mi));
  }
  return out;
}

absl::StatusOr<nlohmann::json> Datapath::dumpMap(std::string_view name_sv) {
  using nlohmann::json;
  const absl::string_view name(name_sv.data(), name_sv.size());
  json out = json::array();
  if (name == "mesh_services") {
    ASSIGN_OR_RETURN(auto raw, mapops::readEntries(bpf_map__fd(skel_->maps.mesh_services), name));
    for (size_t i = 0; i < raw.size(); ++i) {
      mesh_svc_key k;
      mesh_svc v;
      std::memcpy(&k, raw.key(i), sizeof(k));
      std::memcpy(&v, raw.value(i), sizeof(v));
      out.push_back({{"vip", addrText(k.family, k.addr)},
                     {"port", ntohs(k.port)},
                     {"proto", protoName(k.proto)},
                     {"family", familyName(k.family)},
                     {"svc_id", v.svc_id},
                     {"slot_count", v.slot_count},
                     {"algo", algoName(v.algo)},
                     {"maglev_size", v.maglev_size},
                     {"flags", v.flags}});
    }
  } else if (name == "mesh_slots") {
    ASSIGN_OR_RETURN(auto raw, mapops::readEntries(bpf_map__fd(skel_->maps.mesh_slots), name));
    for (size_t i = 0; i < raw.size(); ++i) {
      mesh_slot_key k;
      mesh_slot v;
      std::memcpy(&k, raw.key(i), sizeof(k));
      std::memcpy(&v, raw.value(i), sizeof(v));
      out.push_back({{"svc_id", k.svc_id},
                     {"slot", k.slot},
                     {"backend_id", v.backend_id},
                     {"weight", v.weight},
                     {"alias_threshold", v.alias_threshold},
                     {"alias_slot", v.alias_slot}});
    }
  } else if (name == "mesh_backends") {
    ASSIGN_OR_RETURN(LbMapContents all, maps_->readAll());
    for (const auto& [id, b] : all.backends) {
      out.push_back({{"id", id},
                     {"address", addrText(b.family, b.addr)},
                     {"port", ntohs(b.port)},
                     {"proto", protoName(b.proto)},
                     {"flags", b.flags}});
    }
  } else if (name == "mesh_backend_state") {
    ASSIGN_OR_RETURN(auto raw,
                     mapops::readEntries(bpf_map__fd(skel_->maps.mesh_backend_state), name));
    for (size_t i = 0; i < raw.size(); ++i) {
      uint32_t id;
      mesh_backend_state v;
      std::memcpy(&id, raw.key(i), 4);
      std::memcpy(&v, raw.value(i), sizeof(v));
      if (v.live_conns == 0 && v.total_conns == 0 && v.connect_failures == 0) continue;
      out.push_back({{"id", id},
                     {"live_conns", v.live_conns},
                     {"total_conns", v.total_conns},
                     {"connect_failures", v.connect_failures}});
    }
  } else if (name == "mesh_svc_state") {
    ASSIGN_OR_RETURN(auto raw, mapops::readEntries(bpf_map__fd(skel_->maps.mesh_svc_state), name));
    for (size_t i = 0; i < raw.size(); ++i) {
      uint32_t id;
      mesh_svc_state v;
      std::memcpy(&id, raw.key(i), 4);
      std::memcpy(&v, raw.value(i), sizeof(v));
      if (v.live_conns == 0 && v.refused_service == 0 && v.refused_backend == 0 &&
          v.rerouted == 0 && v.refused_authz == 0)
        continue;
      out.push_back({{"svc_id", id},
                     {"live_conns", v.live_conns},
                     {"refused_service", v.refused_service},
                     {"refused_backend", v.refused_backend},
                     {"rerouted", v.rerouted},
                     {"refused_authz", v.refused_authz}});
    }
  } else if (name == "mesh_maglev") {
    ASSIGN_OR_RETURN(LbMapContents all, maps_->readAll());
    for (const auto& [svc_id, table] : all.maglev) {
      std::map<uint32_t, uint32_t> per_backend;
      for (uint32_t b : table) ++per_backend[b];
      json counts = json::object();
      for (const auto& [b, n] : per_backend) counts[std::to_string(b)] = n;
      // The table itself can have 131071 entries: show its shape instead.
      out.push_back({{"svc_id", svc_id}, {"size", table.size()}, {"entries_per_backend", counts}});
    }
  } else if (name == "mesh_udp_rev") {
    ASSIGN_OR_RETURN(auto raw, mapops::readEntries(bpf_map__fd(skel_->maps.mesh_udp_rev), name));
    for (size_t i = 0; i < raw.size(); ++i) {
      mesh_udp_rev_key k;
      mesh_udp_rev v;
      std::memcpy(&k, raw.key(i), sizeof(k));
      std::memcpy(&v, raw.value(i), sizeof(v));
      out.push_back({{"socket_cookie", k.cookie},
                     {"backend", addrText(k.family, k.addr)},
                     {"backend_port", ntohs(k.port)},
                     {"vip", addrText(v.family, v.vip)},
                     {"vip_port", ntohs(v.vip_port)}});
    }
  } else if (name == "mesh_stats") {
    ASSIGN_OR_RETURN(std::vector<uint64_t> stats, maps_->readStats());
    out = json::object();
    for (uint32_t i = 0; i < stats.size(); ++i) out[std::string(statName(i))] = stats[i];
  } else if (name == "mesh_sockhash") {
    ASSIGN_OR_RETURN(auto raw, mapops::readEntries(bpf_map__fd(skel_->maps.mesh_sockhash), name));
    for (size_t i = 0; i < raw.size(); ++i) {
      mesh_sock_key k;
      uint64_t cookie = 0;
      std::memcpy(&k, raw.key(i), sizeof(k));
      std::memcpy(&cookie, raw.value(i), std::min<size_t>(sizeof(cookie), raw.value_size));
      out.push_back({{"local", addrText(k.family, k.local)},
                     {"local_port", ntohs(k.local_port)},
                     {"remote", addrText(k.family, k.remote)},
                     {"remote_port", ntohs(k.remote_port)},
                     {"family", familyName(k.family)},
                     {"socket_cookie", cookie}});
    }
  } else if (name == "mesh_orig_dst") {
    ASSIGN_OR_RETURN(auto raw, mapops::readEntries(bpf_map__fd(skel_->maps.mesh_orig_dst), name));
    for (size_t i = 0; i < raw.size(); ++i) {
      mesh_orig_dst_key k;
      mesh_orig_dst v;
      std::memcpy(&k, raw.key(i), sizeof(k));
      std::memcpy(&v, raw.value(i), sizeof(v));
      out.push_back({{"client", addrText(k.family, k.addr)},
                     {"client_port", ntohs(k.port)},
                     {"vip", addrText(v.family, v.vip)},
                     {"vip_port", ntohs(v.vip_port)},
                     {"svc_id", v.svc_id}});
    }
  } else if (name == "mesh_config") {
    // The kernel's copy, not config_value_: what the programs see.
    mesh_config c{};
    const uint32_t zero = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.mesh_config), &zero, &c) != 0) {
      return errnoError(errno, "reading mesh_config");
    }
    const uint32_t v4[4] = {c.redirect_ip4, 0, 0, 0};
    out = {{"flags", c.flags},
           {"sockmap", (c.flags & MESH_CONFIG_F_SOCKMAP) != 0},
           {"redirect_ipv4", addrText(MESH_AF_INET, v4)},
           {"redirect_ipv6", addrText(MESH_AF_INET6, c.redirect_ip6)},
           {"redirect_port", ntohs(c.redirect_port)}};
  } else if (name == "mesh_strict") {
    ASSIGN_OR_RETURN(PolicyCounters c, policy_->counters());
    for (const StrictCounter& e : c.strict) {
      out.push_back({{"addr", e.entry.addr.toString()},
                     {"port", e.entry.port},
                     {"syn_dropped", e.syn_dropped}});
    }
  } else if (name == "mesh_cg_identity" || name == "mesh_authz_dst" || name == "mesh_authz_l4") {
    ASSIGN_OR_RETURN(KernelPolicy p, policy_->read());
    auto verdict = [](AuthzVerdict v) { return v == AuthzVerdict::kAllow ? "allow" : "deny"; };
    if (name == "mesh_cg_identity") {
      for (const auto& [cg, id] : p.identities)
        out.push_back({{"cgroup_id", cg}, {"identity", id}});
    } else if (name == "mesh_authz_dst") {
      for (const AuthzDst& d : p.dsts) {
        out.push_back({{"addr", d.addr.toString()},
                       {"governed", d.governed},
                       {"default", verdict(d.default_verdict)},
                       {"strict_pass", d.strict_pass}});
      }
    } else {
      for (const AuthzRule& r : p.rules) {
        out.push_back({{"identity", r.src_id},
                       {"addr", r.addr.toString()},
                       {"port", r.port},
                       {"verdict", verdict(r.verdict)}});
      }
    }
  } else if (name == "mesh_sock") {
    return absl::InvalidArgumentError(
        "mesh_sock is per-socket storage: the kernel cannot list it (see mesh_backend_state for "
        "connection counts)");
  } else {
    return absl::NotFoundError(
        absl::StrCat("no map named \"", name,
                     "\"; maps: mesh_services, mesh_slots, mesh_backends, "
                     "mesh_backend_state, mesh_svc_state, mesh_maglev, mesh_udp_rev, mesh_stats, "
                     "mesh_sockhash, mesh_orig_dst, mesh_config, mesh_strict, mesh_cg_identity, "
                     "mesh_authz_dst, mesh_authz_l4, mesh_sock"));
  }
  return out;
}

}  // namespace meshd::datapath
