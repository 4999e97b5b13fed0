// meshd's gRPC API (proto/meshd.proto) on a unix socket. Handlers translate
// requests, validate them and call MeshdControl; errors keep their code and
// full message (InvalidArgument -> INVALID_ARGUMENT, NotFound -> NOT_FOUND, ...).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "api/control.h"
#include "meshd.grpc.pb.h"

namespace grpc {
class Server;
}

namespace meshd::api {

// absl and gRPC share the canonical status codes; the message is kept whole.
grpc::Status toGrpc(const absl::Status& s);

class MeshdService final : public v1::Meshd::Service {
 public:
  explicit MeshdService(MeshdControl& control) : control_(control) {}

  grpc::Status Apply(grpc::ServerContext*, const v1::ApplyRequest*, v1::ApplyResponse*) override;
  grpc::Status Delete(grpc::ServerContext*, const v1::DeleteRequest*, v1::DeleteResponse*) override;
  grpc::Status Get(grpc::ServerContext*, const v1::GetRequest*, v1::GetResponse*) override;
  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest*, v1::StatusResponse*) override;
  grpc::Status Bpf(grpc::ServerContext*, const v1::BpfRequest*, v1::BpfResponse*) override;

 private:
  MeshdControl& control_;
};

class ApiServer;
using ApiServerPtr = std::unique_ptr<ApiServer>;

class ApiServer {
 public:
  // Serves `control` on the unix socket `socket_path`: creates the parent
  // directory (0755) when missing, replaces a stale socket file (but fails
  // with AlreadyExists when a live meshd answers on it, and
  // FailedPrecondition when the path is not a socket), and makes the socket
  // 0600 (root only). gRPC's own threads run the handlers.
  static absl::StatusOr<ApiServerPtr> start(const std::string& socket_path, MeshdControl& control);
  ~ApiServer();

  // Stops accepting, waits for running calls, removes the socket file. Idempotent.
  void shutdown();
  const std::string& socketPath() const { return socket_path_; }

 private:
  ApiServer(std::string socket_path, std::unique_ptr<MeshdService> service,
            std::unique_ptr<grpc::Server> server);

  std::string socket_path_;
  std::unique_ptr<MeshdService> service_;
  std::unique_ptr<grpc::Server> server_;
  bool stopped_ = false;
};

// Largest request or response (resource files, dumps of big maps).
inline constexpr int kMaxApiMessageBytes = 64 << 20;

}  // namespace meshd::api
