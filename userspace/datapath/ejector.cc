#include "datapath/ejector.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "mesh_abi.h"

namespace meshd::datapath {

std::string_view ejectResultName(EjectResult result) {
  switch (result) {
    case EjectResult::kEjected:
      return "ejected";
    case EjectResult::kAlreadyEjected:
      return "already_ejected";
    case EjectResult::kSkippedMaxPercent:
      return "skipped_max_percent";
    case EjectResult::kNoService:
      return "no_service";
    case EjectResult::kNoBackend:
      return "no_backend";
  }
  return "unknown";
}

absl::StatusOr<BackendEjectorPtr> KernelEjector::fromProgFd(int prog_fd) {
  ScopedFd fd(fcntl(prog_fd, F_DUPFD_CLOEXEC, 0));
  if (!fd.valid()) {
    return errnoError(errno,
                      absl::StrCat("duplicating the mesh_backend_eject program fd ", prog_fd));
  }
  return BackendEjectorPtr(new KernelEjector(std::move(fd)));
}

absl::StatusOr<EjectResult> KernelEjector::eject(const SocketAddress& frontend,
                                                 const SocketAddress& backend, uint32_t ms) {
  mesh_backend_eject_ctx ctx{};
  frontend.ip.toAbi(ctx.svc.addr);
  ctx.svc.port = htons(frontend.port);
  ctx.svc.proto = MESH_PROTO_TCP;
  ctx.svc.family = static_cast<__u8>(frontend.ip.family);
  backend.ip.toAbi(ctx.addr);
  ctx.port = htons(backend.port);
  ctx.family = static_cast<__u8>(backend.ip.family);
  ctx.duration_ms = ms;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
  if (bpf_prog_test_run_opts(fd_.get(), &opts) != 0) {
    return errnoError(errno, absl::StrCat("ejecting backend ", backend.toString(), " of ",
                                          frontend.toString(), " (running mesh_backend_eject)"));
  }
  switch (opts.retval) {
    case MESH_EJECT_DONE:
      return EjectResult::kEjected;
    case MESH_EJECT_ALREADY:
      return EjectResult::kAlreadyEjected;
    case MESH_EJECT_SKIPPED:
      return EjectResult::kSkippedMaxPercent;
    case MESH_EJECT_NO_SERVICE:
      return EjectResult::kNoService;
    default:
      return EjectResult::kNoBackend;
  }
}

}  // namespace meshd::datapath
