#include "datapath/preflight.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace meshd::datapath {
namespace {

constexpr char kBtfPath[] = "/sys/kernel/btf/vmlinux";
constexpr char kBpffsPath[] = "/sys/fs/bpf";

// CAP_BPF is 39; older <linux/capability.h> may lack the name.
constexpr int kCapBpf = 39;

absl::StatusOr<std::string> readFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return errnoError(errno, absl::StrCat("reading ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status checkCapabilities() {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) {
    return errnoError(errno, "reading this process's capabilities (capget)");
  }
  auto has = [&](int cap) { return (data[cap / 32].effective >> (cap % 32)) & 1; };
  std::vector<std::string> missing;
  if (!has(kCapBpf)) missing.push_back("CAP_BPF");
  if (!has(CAP_NET_ADMIN)) missing.push_back("CAP_NET_ADMIN");
  if (!has(CAP_SYS_ADMIN)) missing.push_back("CAP_SYS_ADMIN");
  if (missing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "meshd lacks ", absl::StrJoin(missing, ", "),
      " (loading BPF programs, attaching them to cgroups and reading map ids need "
      "CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN): run it as root or grant these capabilities"));
}

// The fields of one /proc/mounts line (device, mount point, type, ...), with the
// kernel's octal escapes undone: it writes ' ', '\t', '\n' and '\\' inside a
// field as \040, \011, \012 and \134 (fs/proc_namespace.c, mangle()).
std::vector<std::string> mountFields(absl::string_view line) {
  std::vector<std::string> fields;
  for (absl::string_view raw : absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
    std::string f;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 3 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '3' &&
          raw[i + 2] >= '0' && raw[i + 2] <= '7' && raw[i + 3] >= '0' && raw[i + 3] <= '7') {
        f += static_cast<char>((raw[i + 1] - '0') * 64 + (raw[i + 2] - '0') * 8 +
                               (raw[i + 3] - '0'));
        i += 3;
      } else {
        f += raw[i];
      }
    }
    fields.push_back(std::move(f));
  }
  return fields;
}

}  // namespace

absl::StatusOr<std::string> findCgroup2Mount(absl::string_view proc_mounts) {
  for (absl::string_view line : absl::StrSplit(proc_mounts, '\n')) {
    std::vector<std::string> f = mountFields(line);
    if (f.size() >= 3 && f[2] == "cgroup2") return f[1];
  }
  return absl::NotFoundError(
      "cgroup v2 is not mounted (no cgroup2 entry in /proc/mounts): mount it, e.g. "
      "`mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified`, "
      "or boot with systemd.unified_cgroup_hierarchy=1");
}

bool isBpffsMounted(absl::string_view proc_mounts, absl::string_view path) {
  for (absl::string_view line : absl::StrSplit(proc_mounts, '\n')) {
    std::vector<std::string> f = mountFields(line);
    if (f.size() >= 3 && f[2] == "bpf" && f[1] == path) return true;
  }
  return false;
}

absl::StatusOr<HostPaths> preflight() {
  RETURN_IF_ERROR(checkCapabilities());
  if (access(kBtfPath, R_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no kernel BTF at ", kBtfPath, " (", std::strerror(errno),
        "): meshd needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's kernels are)"));
  }
  // BPF_PROG_TYPE_SYSCALL (Linux 5.14+): meshd runs mesh_backend_forget (freeing a backend
  // id) and mesh_backend_eject (L7 outlier ejections into the kernel's ejection state) as
  // syscall programs with BPF_PROG_TEST_RUN, the only race-free way to update state sockops
  // changes concurrently.
  if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SYSCALL, nullptr) != 1) {
    return absl::FailedPreconditionError(
        "the kernel cannot load BPF_PROG_TYPE_SYSCALL programs (syscall programs, Linux 5.14+), "
        "which meshd needs to update backend ejection state atomically "
        "(mesh_backend_forget, mesh_backend_eject): run a newer kernel");
  }
  ASSIGN_OR_RETURN(std::string mounts, readFile("/proc/mounts"));
  HostPaths paths;
  ASSIGN_OR_RETURN(paths.cgroup2_mount, findCgroup2Mount(mounts));
  paths.bpffs_mount = kBpffsPath;
  if (!isBpffsMounted(mounts, kBpffsPath)) {
    mkdir(kBpffsPath, 0700);
    if (mount("bpf", kBpffsPath, "bpf", 0, "mode=0700") != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("bpffs is not mounted at ", kBpffsPath, " and mounting it failed (",
                       std::strerror(errno), "): run `mount -t bpf bpf ", kBpffsPath,
                       "` (in a container, mount the host's ", kBpffsPath, ")"));
    }
  }
  return paths;
}

absl::Status strictSupported() {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (vmlinux == nullptr) {
    return absl::FailedPreconditionError(
        "STRICT mTLS cannot be enforced in the kernel: no kernel BTF to check for tcx links "
        "(CONFIG_DEBUG_INFO_BTF=y)");
  }
  bool found = false;
  const int id = btf__find_by_name_kind(vmlinux, "bpf_attach_type", BTF_KIND_ENUM);
  if (id > 0) {
    const btf_type* t = btf__type_by_id(vmlinux, id);
    const struct btf_enum* e = btf_enum(t);
    for (int i = 0; i < btf_vlen(t) && !found; ++i) {
      found = std::string(btf__name_by_offset(vmlinux, e[i].name_off)) == "BPF_TCX_EGRESS";
    }
  }
  btf__free(vmlinux);
  if (!found) {
    return absl::FailedPreconditionError(
        "STRICT mTLS cannot be enforced in the kernel: it has no tcx links (BPF_TCX_EGRESS, "
        "Linux 6.6+) to attach the STRICT program to workload interfaces; run a newer kernel");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> resolveCgroup(const HostPaths& paths, absl::string_view arg) {
  std::string path;
  if (!arg.empty() && arg.front() == '/') {
    path = std::string(arg);
  } else if (arg.empty()) {
    path = paths.cgroup2_mount;
  } else {
    path = absl::StrCat(paths.cgroup2_mount, "/", arg);
  }
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("cgroup ", path,
                                            " does not exist: create it (mkdir) or pass an "
                                            "existing cgroup v2 directory, absolute or relative "
                                            "to ",
                                            paths.cgroup2_mount));
  }
  struct statfs fs {};
  if (statfs(path.c_str(), &fs) != 0) return errnoError(errno, absl::StrCat("statfs ", path));
  if (fs.f_type != CGROUP2_SUPER_MAGIC) {
    return absl::FailedPreconditionError(absl::StrCat(
        path,
        " is not on cgroup v2 (BPF programs attach to cgroup v2 only): use a directory under ",
        paths.cgroup2_mount));
  }
  return path;
}

}  // namespace meshd::datapath
