#include "cli/client.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace meshd::cli {
namespace {

// Applying 10,000 services is the largest request; reconciling it takes seconds.
constexpr auto kCallTimeout = std::chrono::seconds(120);

}  // namespace

MeshdClient::MeshdClient(std::string socket_path) : socket_path_(std::move(socket_path)) {
  grpc::ChannelArguments args;
  // Resource files can be large; meshd's server accepts the same bound.
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(absl::StrCat("unix:", socket_path_),
                                       grpc::InsecureChannelCredentials(), args);
  stub_ = api::v1::Meshd::NewStub(channel_);
}

absl::Status MeshdClient::checkSocket() const {
  auto unreachable = [&](std::string_view reason) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach meshd at ", socket_path_, ": ", std::string(reason),
                     "; is meshd running (meshd --api-socket ", socket_path_, ")?"));
  };
  struct stat st {};
  if (stat(socket_path_.c_str(), &st) != 0) return unreachable(std::strerror(errno));
  if (!S_ISSOCK(st.st_mode)) return unreachable("not a unix socket");
  if (access(socket_path_.c_str(), W_OK) != 0) {
    return unreachable(
        absl::StrCat(std::strerror(errno), " (the socket is mode 0600: run meshctl as root)"));
  }
  return absl::OkStatus();
}

absl::Status MeshdClient::translate(const grpc::Status& s) const {
  if (s.ok()) return absl::OkStatus();
  // UNAVAILABLE before the channel ever became ready means nobody answered;
  // anything else is meshd's own error, passed on as it wrote it.
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE &&
      channel_->GetState(false) != GRPC_CHANNEL_READY) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach meshd at ", socket_path_, ": ", s.error_message(),
                     "; is meshd running (meshd --api-socket ", socket_path_, ")?"));
  }
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

template <typename Req, typename Resp>
absl::StatusOr<Resp> MeshdClient::call(
    grpc::Status (api::v1::Meshd::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
    const Req& req) {
  if (absl::Status s = checkSocket(); !s.ok()) return s;
  Resp resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  grpc::Status st = (stub_.get()->*method)(&ctx, req, &resp);
  if (!st.ok()) return translate(st);
  return resp;
}

absl::StatusOr<api::v1::ApplyResponse> MeshdClient::apply(const api::v1::ApplyRequest& req) {
  return call(&api::v1::Meshd::Stub::Apply, req);
}

absl::StatusOr<api::v1::DeleteResponse> MeshdClient::remove(const api::v1::DeleteRequest& req) {
  return call(&api::v1::Meshd::Stub::Delete, req);
}

absl::StatusOr<api::v1::GetResponse> MeshdClient::get(const api::v1::GetRequest& req) {
  return call(&api::v1::Meshd::Stub::Get, req);
}

absl::StatusOr<api::v1::StatusResponse> MeshdClient::status() {
  return call(&api::v1::Meshd::Stub::Status, api::v1::StatusRequest());
}

absl::StatusOr<api::v1::BpfResponse> MeshdClient::bpf(const api::v1::BpfRequest& req) {
  return call(&api::v1::Meshd::Stub::Bpf, req);
}

}  // namespace meshd::cli
