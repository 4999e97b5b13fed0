// Host checks meshd runs before touching the kernel: privileges, kernel BTF,
// cgroup v2 and bpffs. Each failure is one error that names what is missing
// and how to fix it.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace meshd::datapath {

struct HostPaths {
  std::string cgroup2_mount;  // e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified (hybrid hosts)
  std::string bpffs_mount;    // /sys/fs/bpf
};

// Checks, in order: CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN in the effective
// set (FailedPrecondition naming the missing ones), /sys/kernel/btf/vmlinux
// readable, a cgroup2 mount in /proc/mounts, and bpffs at /sys/fs/bpf (mounted
// here when absent; FailedPrecondition when that fails).
absl::StatusOr<HostPaths> preflight();

// Whether STRICT (PeerAuthentication) can be enforced in this kernel: the
// tc program attaches with a tcx link (BPF_TCX_EGRESS, Linux 6.6+), found in
// the kernel's BTF (enum bpf_attach_type). FailedPrecondition naming what is
// missing. Optional: meshd runs without it, STRICT is then not enforced in
// the kernel. (The connect hook needs no extra helper for STRICT: same-node
// connects it authorizes are let through by their 4-tuple, mesh_strict_pass,
// not by a socket mark, which a packet loses when it leaves the pod's
// network namespace.)
absl::Status strictSupported();

// First cgroup2 mount point listed in `proc_mounts` (the text of /proc/mounts).
// NotFound (with how to mount one) when there is none.
absl::StatusOr<std::string> findCgroup2Mount(absl::string_view proc_mounts);

// True when `proc_mounts` lists a bpf filesystem mounted at `path`.
bool isBpffsMounted(absl::string_view proc_mounts, absl::string_view path);

// Resolves a --cgroup argument: absolute paths are taken as they are, relative
// ones are relative to the cgroup2 mount ("" means the mount itself). Fails
// with NotFound when the directory does not exist and FailedPrecondition when
// it is not on cgroup v2. Returns the absolute path.
absl::StatusOr<std::string> resolveCgroup(const HostPaths& paths, absl::string_view arg);

}  // namespace meshd::datapath
