// Datapath::terminateConnections: the hard cut for removed backends, with the
// TCP socket iterator of bpf/drain.bpf.c.
//
// A TCP iterator walks the sockets of the network namespace of the thread
// that opens it, so one helper thread enters each namespace the meshed
// processes live in (found through the cgroup tree: cgroup.procs ->
// /proc/<pid>/ns/net) and reads the iterator there. The thread's namespace
// change dies with it; meshd's other threads never move.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "datapath/datapath.h"
#include "datapath/map_ops.h"
#include "mesh.skel.h"

namespace meshd::datapath {
namespace {

namespace fs = std::filesystem;

// One /proc/<pid>/ns/net path per distinct network namespace of the processes
// in `cgroup` and its descendants.
std::vector<std::string> namespacesUnder(const std::string& cgroup) {
  std::map<std::pair<dev_t, ino_t>, std::string> seen;
  auto visit = [&](const fs::path& dir) {
    std::ifstream procs(dir / "cgroup.procs");
    pid_t pid;
    while (procs >> pid) {
      std::string ns = absl::StrCat("/proc/", pid, "/ns/net");
      struct stat st {};
      if (stat(ns.c_str(), &st) == 0) seen.emplace(std::make_pair(st.st_dev, st.st_ino), ns);
    }
  };
  std::error_code ec;
  visit(cgroup);
  for (auto it = fs::recursive_directory_iterator(cgroup, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory(ec)) visit(it->path());
  }
  std::vector<std::string> out;
  out.reserve(seen.size());
  for (auto& [key, path] : seen) out.push_back(std::move(path));
  return out;
}

// In a thread of its own: for each namespace, enter it and read the iterator
// to the end (the program does its work while the iterator is read).
absl::Status runIteratorIn(const std::vector<std::string>& namespaces, int link_fd) {
  absl::Status result;
  std::thread worker([&] {
    for (const std::string& ns : namespaces) {
      ScopedFd nsfd(::open(ns.c_str(), O_RDONLY | O_CLOEXEC));
      if (nsfd.get() < 0) continue;  // the process exited: its sockets went with it
      if (setns(nsfd.get(), CLONE_NEWNET) != 0) {
        result = errnoError(errno, absl::StrCat("entering network namespace ", ns));
        return;
      }
      ScopedFd iter(bpf_iter_create(link_fd));
      if (iter.get() < 0) {
        result = errnoError(errno, absl::StrCat("creating the TCP socket iterator in ", ns));
        return;
      }
      char buf[256];
      ssize_t n;
      while ((n = read(iter.get(), buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
      }
      if (n < 0) {
        result = errnoError(errno, absl::StrCat("running the TCP socket iterator in ", ns));
        return;
      }
    }
  });
  worker.join();
  return result;
}

}  // namespace

absl::StatusOr<uint64_t> Datapath::terminateConnections(absl::Span<const mesh_drain_key> pairs) {
  if (!terminate_unavailable_.empty()) {
    return absl::FailedPreconditionError(terminate_unavailable_);
  }
  if (pairs.empty()) return 0;
  if (skel_->links.mesh_drain_tcp == nullptr) {
    bpf_link* link = bpf_program__attach_iter(skel_->progs.mesh_drain_tcp, nullptr);
    if (link == nullptr) {
      return errnoError(errno, "attaching the TCP socket iterator (mesh_drain_tcp)");
    }
    skel_->links.mesh_drain_tcp = link;  // mesh::destroy() closes it
  }
  const int map_fd = bpf_map__fd(skel_->maps.mesh_drain);
  std::vector<uint8_t> ones(pairs.size(), 1);
  RETURN_IF_ERROR(mapops::updateBatch(map_fd, "mesh_drain", pairs.data(), ones.data(),
                                      static_cast<uint32_t>(pairs.size())));
  ASSIGN_OR_RETURN(std::vector<uint64_t> before, maps_->readStats());
  absl::Status ran = runIteratorIn(namespacesUnder(config_.cgroup_path),
                                   bpf_link__fd(skel_->links.mesh_drain_tcp));
  absl::Status cleared =
      mapops::deleteBatch(map_fd, "mesh_drain", pairs.data(), sizeof(mesh_drain_key),
                          static_cast<uint32_t>(pairs.size()));
  RETURN_IF_ERROR(ran);
  RETURN_IF_ERROR(cleared);
  ASSIGN_OR_RETURN(std::vector<uint64_t> after, maps_->readStats());
  return after[MESH_STAT_DRAIN_DESTROYED] - before[MESH_STAT_DRAIN_DESTROYED];
}

}  // namespace meshd::datapath
