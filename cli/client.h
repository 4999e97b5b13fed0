// meshctl's connection to meshd's gRPC API on its unix socket.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "meshd.grpc.pb.h"

namespace meshd::cli {

class MeshdClient {
 public:
  explicit MeshdClient(std::string socket_path);

  // Each call returns meshd's answer, or meshd's error with its code and
  // message as meshd wrote them. When meshd cannot be reached the error is
  // Unavailable: "cannot reach meshd at <socket>: <reason>; is meshd running
  // (meshd --api-socket <socket>)?".
  absl::StatusOr<api::v1::ApplyResponse> apply(const api::v1::ApplyRequest& req);
  absl::StatusOr<api::v1::DeleteResponse> remove(const api::v1::DeleteRequest& req);
  absl::StatusOr<api::v1::GetResponse> get(const api::v1::GetRequest& req);
  absl::StatusOr<api::v1::StatusResponse> status();
  absl::StatusOr<api::v1::BpfResponse> bpf(const api::v1::BpfRequest& req);

 private:
  // Fails early with a clear reason when the socket file is missing or not writable.
  absl::Status checkSocket() const;
  absl::Status translate(const grpc::Status& s) const;
  template <typename Req, typename Resp>
  absl::StatusOr<Resp> call(grpc::Status (api::v1::Meshd::Stub::*method)(grpc::ClientContext*,
                                                                         const Req&, Resp*),
                            const Req& req);

  const std::string socket_path_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<api::v1::Meshd::Stub> stub_;
};

}  // namespace meshd::cli
