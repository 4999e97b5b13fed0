#include "api/service.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"

namespace meshd::api {
namespace {

absl::StatusOr<resources::ResourceKey> keyFromRef(const v1::ResourceRef& ref) {
  const std::string& kind = ref.kind();
  if (kind != resources::kKindService && kind != resources::kKindEndpointSlice &&
      kind != resources::kKindTrafficPolicy && kind != resources::kKindHttpRoute &&
      kind != resources::kKindGrpcRoute && kind != resources::kKindWorkload &&
      kind != resources::kKindPeerAuthentication && kind != resources::kKindAuthorizationPolicy &&
      kind != resources::kKindRateLimitPolicy && kind != resources::kKindNode) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown kind \"", kind,
                     "\"; expected Service, EndpointSlice, TrafficPolicy, HTTPRoute, GRPCRoute, "
                     "Workload, PeerAuthentication, AuthorizationPolicy, RateLimitPolicy or Node"));
  }
  if (ref.name().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(kind, ": a name is required"));
  }
  return resources::ResourceKey{
      kind, ref.namespace_().empty() ? resources::kDefaultNamespace : ref.namespace_(), ref.name()};
}

void toRef(const resources::ResourceKey& key, v1::ResourceRef* ref) {
  ref->set_kind(key.kind);
  ref->set_namespace_(key.ns);
  ref->set_name(key.name);
}

absl::StatusOr<std::vector<resources::Resource>> parseRequestFiles(
    const google::protobuf::RepeatedPtrField<v1::SourceFile>& files) {
  std::vector<resources::SourceFile> sources;
  sources.reserve(files.size());
  for (const v1::SourceFile& f : files) sources.push_back({f.name(), f.content()});
  auto parsed = resources::parseFiles(sources);
  if (!parsed.ok()) return parsed.status();
  if (parsed->empty()) {
    return absl::InvalidArgumentError("the given files contain no resources");
  }
  return parsed;
}

// Checks whether something accepts connections on the unix socket `path`.
bool socketIsLive(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof(sun.sun_path) - 1);
  const bool live = connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) == 0;
  close(fd);
  return live;
}

absl::Status prepareSocketPath(const std::string& path) {
  sockaddr_un sun{};
  if (path.empty() || path.size() >= sizeof(sun.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("API socket path \"", path, "\" must be 1..",
                                                   sizeof(sun.sun_path) - 1, " bytes"));
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(parent, ec)) {
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        return absl::PermissionDeniedError(absl::StrCat("creating the API socket's directory ",
                                                        parent.string(), ": ", ec.message()));
      }
      chmod(parent.c_str(), 0755);
    }
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("API socket path ", path,
                       " exists and is not a socket; remove it or choose another "
                       "--api-socket"));
    }
    if (socketIsLive(path)) {
      return absl::AlreadyExistsError(
          absl::StrCat("another meshd is serving on ", path,
                       "; stop it, or give this instance its own --api-socket"));
    }
    if (unlink(path.c_str()) != 0) {
      return errnoError(errno, absl::StrCat("removing the stale API socket ", path));
    }
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status toGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status MeshdService::Apply(grpc::ServerContext*, const v1::ApplyRequest* req,
                                 v1::ApplyResponse* resp) {
  if (req->files().empty()) return toGrpc(absl::InvalidArgumentError("no files given"));
  auto parsed = parseRequestFiles(req->files());
  if (!parsed.ok()) return toGrpc(parsed.status());
  auto results = control_.apply(std::move(*parsed), req->dry_run());
  if (!results.ok()) return toGrpc(results.status());
  for (const AppliedResource& r : *results) {
    v1::ApplyResult* out = resp->add_results();
    toRef(r.key, out->mutable_ref());
    out->set_action(r.action);
  }
  return grpc::Status::OK;
}

grpc::Status MeshdService::Delete(grpc::ServerContext*, const v1::DeleteRequest* req,
                                  v1::DeleteResponse* resp) {
  if (req->refs().empty() == req->files().empty()) {
    return toGrpc(absl::InvalidArgumentError(
        "name what to delete either by files or by kind and name, not both or neither"));
  }
  std::vector<resources::ResourceKey> keys;
  for (const v1::ResourceRef& ref : req->refs()) {
    auto key = keyFromRef(ref);
    if (!key.ok()) return toGrpc(key.status());
    keys.push_back(std::move(*key));
  }
  if (!req->files().empty()) {
    auto parsed = parseRequestFiles(req->files());
    if (!parsed.ok()) return toGrpc(parsed.status());
    for (resources::Resource& r : *parsed) keys.push_back(std::move(r.key));
  }
  auto deleted = control_.remove(std::move(keys));
  if (!deleted.ok()) return toGrpc(deleted.status());
  for (const resources::ResourceKey& key : *deleted) toRef(key, resp->add_deleted());
  return grpc::Status::OK;
}

grpc::Status MeshdService::Get(grpc::ServerContext*, const v1::GetRequest* req,
                               v1::GetResponse* resp) {
  const std::string& what = req->what();
  absl::StatusOr<nlohmann::ordered_json> view;
  if (what == "services" || what == "backends") {
    auto frontends = control_.frontends();
    if (!frontends.ok()) return toGrpc(frontends.status());
    view = what == "services"
               ? servicesView(*frontends, req->namespace_(), req->name())
               : backendsView(*frontends, req->namespace_(), req->name(), ViewClock::now());
  } else if (what == "explain") {
    if (req->name().empty()) {
      return toGrpc(absl::InvalidArgumentError("explain needs a service name"));
    }
    auto frontends = control_.frontends();
    if (!frontends.ok()) return toGrpc(frontends.status());
    auto stats = control_.bpf("dump", "mesh_stats");
    if (!stats.ok()) return toGrpc(stats.status());
    auto l7 = control_.l7Clusters();
    if (!l7.ok()) return toGrpc(l7.status());
    view = explainView(*frontends, req->namespace_(), req->name(), *stats, ViewClock::now(), *l7);
  } else if (what == "policies" || what == "endpointslices" || what == "resources") {
    auto all = control_.resources();
    if (!all.ok()) return toGrpc(all.status());
    if (what == "policies") {
      view = policiesView(*all, req->namespace_(), req->name());
    } else if (what == "endpointslices") {
      view = endpointSlicesView(*all, req->namespace_(), req->name());
    } else {
      view = resourcesView(*all, req->namespace_(), req->name());
    }
  } else {
    return toGrpc(absl::InvalidArgumentError(
        absl::StrCat("cannot get \"", what,
                     "\"; expected services, backends, policies, endpointslices or resources")));
  }
  if (!view.ok()) return toGrpc(view.status());
  // A named object that does not exist is an error (kubectl does the same);
  // an empty list is not.
  if (!req->name().empty() && view->empty()) {
    return toGrpc(absl::NotFoundError(absl::StrCat(
        what, " \"", req->name(), "\" not found",
        req->namespace_().empty() ? "" : absl::StrCat(" in namespace ", req->namespace_()))));
  }
  resp->set_json(view->dump());
  return grpc::Status::OK;
}

grpc::Status MeshdService::Status(grpc::ServerContext*, const v1::StatusRequest*,
                                  v1::StatusResponse* resp) {
  auto status = control_.status();
  if (!status.ok()) return toGrpc(status.status());
  resp->set_json(status->dump());
  return grpc::Status::OK;
}

grpc::Status MeshdService::Bpf(grpc::ServerContext*, const v1::BpfRequest* req,
                               v1::BpfResponse* resp) {
  const std::string& what = req->what();
  if (what != "maps" && what != "progs" && what != "dump") {
    return toGrpc(absl::InvalidArgumentError(
        absl::StrCat("unknown bpf request \"", what, "\"; expected maps, progs or dump")));
  }
  if (what == "dump" && req->map().empty()) {
    return toGrpc(absl::InvalidArgumentError("bpf dump needs a map name (see bpf maps)"));
  }
  auto out = control_.bpf(what, req->map());
  if (!out.ok()) return toGrpc(out.status());
  resp->set_json(out->dump());
  return grpc::Status::OK;
}

absl::StatusOr<ApiServerPtr> ApiServer::start(const std::string& socket_path,
                                              MeshdControl& control) {
  RETURN_IF_ERROR(prepareSocketPath(socket_path));
  auto service = std::make_unique<MeshdService>(control);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", socket_path), grpc::InsecureServerCredentials());
  builder.RegisterService(service.get());
  builder.SetMaxReceiveMessageSize(kMaxApiMessageBytes);
  builder.SetMaxSendMessageSize(kMaxApiMessageBytes);
  // Nobody but root may connect: the API changes what the kernel does with
  // every connection on the node. The umask closes the window between bind()
  // and the chmod() below.
  const mode_t old_umask = umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  if (server == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve the API on unix:", socket_path,
        " (gRPC could not bind it; check the directory's permissions and free space)"));
  }
  if (chmod(socket_path.c_str(), 0600) != 0) {
    const int err = errno;
    server->Shutdown();
    return errnoError(err, absl::StrCat("making the API socket ", socket_path, " mode 0600"));
  }
  return ApiServerPtr(new ApiServer(socket_path, std::move(service), std::move(server)));
}

ApiServer::ApiServer(std::string socket_path, std::unique_ptr<MeshdService> service,
                     std::unique_ptr<grpc::Server> server)
    : socket_path_(std::move(socket_path)),
      service_(std::move(service)),
      server_(std::move(server)) {}

ApiServer::~ApiServer() { shutdown(); }

void ApiServer::shutdown() {
  if (stopped_) return;
  stopped_ = true;
  // Running calls get a few seconds to finish (an apply may be reconciling).
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
  unlink(socket_path_.c_str());
}

}  // namespace meshd::api
