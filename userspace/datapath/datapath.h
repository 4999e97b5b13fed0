// Datapath: the loaded mesh BPF object (bpf/*.bpf.c) attached to one cgroup
// subtree, with maps and links pinned so the kernel path outlives meshd.
//
//   <pin_root>/<instance>/<map>          every map of the object
//   <pin_root>/<instance>/links/<prog>   one cgroup link per program, and the
//                                        sk_msg link on mesh_sockhash
//   <pin_root>/<instance>/links/mesh_strict_egress@<ifindex>
//                                        tcx egress links of STRICT (attachStrict)
//
// open() on a host where these pins exist adopts them: the maps are reused
// as they are (entries and counters survive) and each pinned link is switched
// to the freshly loaded program with BPF_LINK_UPDATE, so there is no moment
// without programs and no second attachment.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "datapath/bpf_lb_maps.h"
#include "datapath/ejector.h"
#include "datapath/map_writer.h"
#include "datapath/orig_dst.h"
#include "datapath/policy_maps.h"
#include "datapath/redirect.h"
#include "datapath/sockmap.h"
#include "nlohmann/json.hpp"

struct mesh;  // the bpftool skeleton (mesh.skel.h)
struct bpf_link;

namespace meshd::datapath {

struct DatapathConfig {
  std::string instance = "default";
  std::string cgroup_path;  // absolute path of a cgroup v2 directory (see resolveCgroup)
  std::string pin_root = "/sys/fs/bpf/meshd";
  uint32_t max_services = 65536;
  uint32_t max_backends = 131072;
  uint32_t max_slots = 262144;
  uint32_t max_udp_flows = 65536;     // mesh_udp_rev (LRU: old flows age out)
  uint32_t max_rate_clients = 65536;  // mesh_rate_client (LRU: idle clients age out)
  // mesh_sockhash and mesh_sockmap_pending: two entries per spliced connection.
  // When full, new connections simply take the plain path.
  uint32_t max_sockmap_sockets = 65536;
  // mesh_orig_dst (LRU): redirected connections established but not yet
  // accepted by meshd. When full, the oldest entry goes and that connection is
  // a lookup miss for meshd (it closes it).
  uint32_t max_orig_dst = 65536;
  SockmapMode sockmap = SockmapMode::kAuto;
  // STRICT and L4 authorization (docs/design/0004-identity-mtls.md).
  // skb->mark bits meshd's own sockets carry (SO_MARK): packets with all of
  // them pass the STRICT tc program. Non-zero; default bit 12 (mesh_abi.h
  // says which bits other CNIs and kube-proxy use).
  uint32_t strict_mark = MESH_STRICT_MARK_DEFAULT;
  uint32_t max_strict = 16384;       // mesh_strict: STRICT (address, port) entries
  uint32_t max_strict_pass = 16384;  // mesh_strict_pass (LRU): authorized connects in SYN_SENT
  uint32_t max_identities = 16384;   // mesh_cg_identity: local workload cgroups
  uint32_t max_authz_dsts = 16384;   // mesh_authz_dst: local workload addresses
  uint32_t max_authz_rules = 65536;  // mesh_authz_l4: (identity, address, port) rules
};

struct ProgramInfo {
  std::string name;         // e.g. "mesh_connect4"
  std::string attach_type;  // e.g. "cgroup_inet4_connect"
  uint32_t prog_id = 0;
  uint32_t link_id = 0;
  uint64_t run_cnt = 0;      // needs sysctl kernel.bpf_stats_enabled=1, else 0
  uint64_t run_time_ns = 0;  // idem
};

struct MapInfo {
  std::string name;
  std::string type;  // e.g. "hash", "array", "hash_of_maps"
  uint32_t id = 0;
  uint32_t key_size = 0;
  uint32_t value_size = 0;
  uint32_t max_entries = 0;
  int64_t entries = -1;  // keys present (active ones for mesh_backends); -1 = not countable
  std::string pin_path;
};

class Datapath;
using DatapathPtr = std::unique_ptr<Datapath>;

class Datapath {
 public:
  // Loads the programs, reuses or creates the pinned maps and attaches (or
  // adopts) the links on config.cgroup_path. Fails with FailedPrecondition
  // when pinned maps do not match this build or config (the message says how
  // to reset them), and with the libbpf/kernel errno otherwise. Run preflight()
  // first for friendlier errors about the host.
  // Then the sockmap fast path per config.sockmap: off, or probed
  // (probeSockmap) and switched on when the probe passes. In mode on a failed
  // probe or a kernel without sockmap fails open() with FailedPrecondition;
  // in mode auto it only leaves the fast path off (see sockmap()).
  static absl::StatusOr<DatapathPtr> open(const DatapathConfig& config);

  // Detaches the instance's pinned links (also for a process still holding
  // them), then removes the link and map pins and the instance directory.
  // Absent pins are fine.
  static absl::Status removePins(const std::string& pin_root, const std::string& instance);

  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  LbMapWriter& maps() { return *maps_; }
  // True when open() found this instance's pinned maps and reused them.
  bool adopted() const { return adopted_; }
  const DatapathConfig& config() const { return config_; }
  // The fast path's state after open() (or the last setSockmapActive()).
  const SockmapState& sockmap() const { return sockmap_; }
  // Switches sockops' insertion into mesh_sockhash (mesh_config) at run time.
  // FailedPrecondition when the kernel cannot splice; errno of the map write.
  absl::Status setSockmapActive(bool active);
  std::string instanceDir() const;

  // Splices the app↔meshd hop of redirected connections: attaches the sockops
  // program also to meshd's own cgroup `proxy_cgroup` (outside the steered
  // subtree), so meshd's accepted sockets join their client in mesh_sockhash at
  // PASSIVE_ESTABLISHED. Pinned as links/mesh_sockops_proxy and adopted on
  // restart; a pinned link on another cgroup is replaced. FailedPrecondition when
  // `proxy_cgroup` is the steered cgroup, an ancestor of it or inside it (its
  // own connects would then be steered, or the whole host's sockets seen).
  absl::Status attachProxySockops(const std::string& proxy_cgroup);
  // The cgroup attachProxySockops() attached to ("" = none).
  const std::string& proxySockopsCgroup() const { return proxy_cgroup_; }

  // Points connects to L7 services at meshd's listener (mesh_config): IPv4
  // VIPs to v4:port, IPv6 VIPs to v6:port (host order). port 0 (or no address
  // of a VIP's family) turns the redirect off: such services take the L4 path
  // and MESH_STAT_L7_NO_TARGET counts it. InvalidArgument when v4 is not an
  // IPv4 address, v6 not an IPv6 one (v4-mapped included), or either is the
  // unspecified address; the errno of the map write otherwise.
  absl::Status setRedirectTarget(std::optional<IpAddress> v4, std::optional<IpAddress> v6,
                                 uint16_t port);
  // What mesh_config holds now (adopted from the pins until the first
  // setRedirectTarget()).
  RedirectTarget redirectTarget() const;
  // Original destinations of redirected connections (mesh_orig_dst), for the
  // proxy's accept path. Shared and thread-safe: it holds its own map fd, so
  // it may outlive this Datapath.
  const OrigDstTablePtr& origDstTable() const { return orig_dst_; }
  // L7 outlier ejections into the kernel's ejection state (mesh_backend_eject). Shared and
  // thread-safe: it holds its own program fd, so it may outlive this Datapath.
  const BackendEjectorPtr& ejector() const { return ejector_; }

  // ---- STRICT (PeerAuthentication) and L4 authorization ----
  // The skb->mark bits that let a packet through STRICT (config.strict_mark):
  // meshd's sockets towards local workloads set them with SO_MARK.
  uint32_t strictMark() const { return config_.strict_mark; }
  // Attaches the STRICT program (mesh_strict_egress) at tcx egress of
  // `host_ifindex`, the node-side end of a workload's veth (hostIfindexOfPod),
  // pinned as links/mesh_strict_egress@<ifindex>. Idempotent; an existing pin
  // for that ifindex is switched to this program, or replaced when it is stale
  // (the device went away and the index was reused). FailedPrecondition naming
  // what is missing when the kernel has no tcx (Linux 6.6+); NotFound when no
  // such interface exists.
  absl::Status attachStrict(int host_ifindex);
  // Detaches and unpins it. Absent is fine.
  absl::Status detachStrict(int host_ifindex);
  // The ifindexes with a STRICT link (pins of this instance; links whose
  // device is gone are dropped at open()).
  std::vector<int> strictInterfaces() const;
  // The STRICT and authorization maps (mesh_strict, mesh_cg_identity,
  // mesh_authz_dst, mesh_authz_l4) and their counters.
  PolicyMaps& policy() { return *policy_; }
  // The pin path of the STRICT link on `ifindex`.
  std::string strictLinkPin(int ifindex) const;

  absl::StatusOr<std::vector<ProgramInfo>> programs();
  absl::StatusOr<std::vector<MapInfo>> mapInfo();
  // Entries of one of our maps (by name, e.g. "mesh_services") decoded into
  // JSON: addresses as text, ports in host order, enums by name. NotFound for
  // unknown names; mesh_sock (per-socket storage) cannot be listed.
  absl::StatusOr<nlohmann::json> dumpMap(std::string_view name);

  // The hard cut for removed backends (TrafficPolicy
  // draining.terminateConnections): destroys every TCP connection steered to
  // one of the (svc_id, backend_id) pairs, in each network namespace of the
  // processes under the attached cgroup (drain.bpf.c). Returns how many
  // sockets were destroyed. FailedPrecondition naming the missing kernel
  // feature when the kernel cannot destroy sockets. (drain.cc)
  absl::StatusOr<uint64_t> terminateConnections(absl::Span<const mesh_drain_key> pairs);
  // Empty when terminateConnections() works on this kernel, else why not.
  const std::string& terminateUnavailable() const { return terminate_unavailable_; }

 private:
  explicit Datapath(DatapathConfig config) : config_(std::move(config)) {}
  absl::Status load();
  absl::Status attachSkMsg();
  absl::Status startSockmap();
  // Writes config_value_ (every field) to mesh_config.
  absl::Status writeConfig();
  // Switches pinned STRICT links to the loaded program; unpins dead ones.
  absl::Status adoptStrictLinks();

  DatapathConfig config_;
  struct mesh* skel_ = nullptr;
  std::unique_ptr<BpfLbMaps> maps_;
  std::unique_ptr<PolicyMaps> policy_;
  bool adopted_ = false;
  std::string terminate_unavailable_;
  bool sockmap_supported_ = true;  // the kernel has SOCKHASH and SK_MSG
  SockmapState sockmap_;
  // The last mesh_config written (or adopted): its switches are written whole.
  mesh_config config_value_{};
  OrigDstTablePtr orig_dst_;
  BackendEjectorPtr ejector_;
  bpf_link* proxy_sockops_link_ = nullptr;  // ours (not the skeleton's): destroyed in ~Datapath
  std::string proxy_cgroup_;
};

// The node-side ifindex of a pod's interface: enters the pod's network
// namespace (`netns_path`, e.g. /var/run/netns/<name> or /proc/<pid>/ns/net)
// in a short-lived thread, asks netlink (RTM_GETLINK) for `ifname` and returns
// its IFLA_LINK: for a veth, the peer's ifindex in the peer's namespace.
// Assumes a veth CNI (bridge or routed) whose host end is in meshd's network
// namespace, as in lab/meshlab. NotFound when the namespace or interface does
// not exist; FailedPrecondition when the interface has no peer (not a veth)
// or its peer is in the same namespace. (pod_link.cc)
absl::StatusOr<int> hostIfindexOfPod(const std::string& netns_path,
                                     const std::string& ifname = "eth0");

}  // namespace meshd::datapath
