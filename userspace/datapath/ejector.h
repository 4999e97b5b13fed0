// L7 outlier ejections into the kernel's ejection state: the proxy's outlier detection
// (consecutive 5xx / gateway errors per endpoint) ejects a backend in mesh_backend_state
// exactly as sockops does for connect failures (bpf/eject.bpf.c runs the same
// mesh_outlier_eject_for), so connect() skips it too and both detectors share one
// ejection state and one maxEjectionPercent cap per service.
//
//   proxy worker: L7Outlier::record -> EjectionSink::eject -> BackendEjector::eject
//     -> BPF_PROG_TEST_RUN(mesh_backend_eject, {VIP:port, backend addr:port, ms})
//     -> mesh_services[VIP:port] -> its slots -> the backend id with that address
//     -> claim, count against the service's cap, ejected_until_ns = now + ms
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/net.h"
#include "common/scoped_fd.h"

namespace meshd::datapath {

enum class EjectResult : uint8_t {
  kEjected,            // ejected now
  kAlreadyEjected,     // ejected already (by sockops or an earlier L7 ejection)
  kSkippedMaxPercent,  // not ejected: the service is at its maxEjectionPercent cap
  kNoService,          // no TCP frontend at that VIP:port in the maps
  kNoBackend,          // the address:port is not a backend of that frontend
};

// "ejected", "already_ejected", "skipped_max_percent", "no_service", "no_backend".
std::string_view ejectResultName(EjectResult result);

class BackendEjector {
 public:
  virtual ~BackendEjector() = default;
  // Ejects the backend `backend` (TCP; host-order port) of the Service frontend `frontend`
  // (its VIP and Service port) for `ms` milliseconds (0: the service's own ejection time for
  // the backend's next ejection). Thread-safe, does not block beyond one syscall. Fails with
  // the errno of the syscall.
  virtual absl::StatusOr<EjectResult> eject(const SocketAddress& frontend,
                                            const SocketAddress& backend, uint32_t ms) = 0;
};
using BackendEjectorPtr = std::shared_ptr<BackendEjector>;

// Over the kernel: runs mesh_backend_eject (BPF_PROG_TYPE_SYSCALL) with BPF_PROG_TEST_RUN. Keeps
// its own duplicate of the program's fd, so it may outlive the Datapath that loaded it.
class KernelEjector : public BackendEjector {
 public:
  // Over the loaded program `prog_fd` (the caller's; duplicated). Fails with dup()'s errno.
  static absl::StatusOr<BackendEjectorPtr> fromProgFd(int prog_fd);

  absl::StatusOr<EjectResult> eject(const SocketAddress& frontend, const SocketAddress& backend,
                                    uint32_t ms) override;

 private:
  explicit KernelEjector(ScopedFd fd) : fd_(std::move(fd)) {}
  ScopedFd fd_;
};

}  // namespace meshd::datapath
