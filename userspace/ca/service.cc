#include "ca/service.h"

#include <grpc/grpc_security_constants.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>

#include "identity/text.h"
#include "identity/x509.h"
#include "spdlog/spdlog.h"
#include "telemetry/exposition.h"

namespace meshd::ca {
namespace {

using identity::cat;

// The peer's certificate chain as gRPC saw it, leaf first: the leaf from x509_pem_cert, the
// rest from x509_pem_cert_chain (on the server side OpenSSL's peer chain lacks the leaf; it is
// skipped where present). Parsed with meshd's own code.
absl::StatusOr<identity::CertChain> peerChain(const grpc::AuthContext& auth) {
  auto property = [&auth](const char* name) -> std::string_view {
    std::vector<grpc::string_ref> values = auth.FindPropertyValues(name);
    if (values.empty()) return {};
    return std::string_view(values[0].data(), values[0].size());
  };
  const std::string_view leaf_pem = property(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (leaf_pem.empty()) return absl::NotFoundError("no client certificate");
  absl::StatusOr<identity::CertChain> leaf =
      identity::parseCertChainPem(leaf_pem, "peer certificate");
  if (!leaf.ok()) return leaf.status();
  identity::CertChain chain;
  chain.push_back(std::move(leaf->front()));
  const std::string_view rest_pem = property(GRPC_X509_PEM_CERT_CHAIN_PROPERTY_NAME);
  if (!rest_pem.empty()) {
    absl::StatusOr<identity::CertChain> rest = identity::parseCertChainPem(rest_pem, "peer chain");
    if (!rest.ok()) return rest.status();
    for (identity::X509Ptr& c : *rest) {
      if (X509_cmp(c.get(), chain.front().get()) != 0) chain.push_back(std::move(c));
    }
  }
  return chain;
}

constexpr int kMaxCaMessageBytes = 1 << 20;
constexpr int64_t kMaxValiditySeconds = int64_t{10} * 365 * 24 * 3600;

}  // namespace

std::string_view refusalName(Refusal r) {
  switch (r) {
    case Refusal::kNoClientCert:
      return "no_client_cert";
    case Refusal::kBadClientCert:
      return "bad_client_cert";
    case Refusal::kNotNodeCredential:
      return "not_node_credential";
    case Refusal::kNotOnNode:
      return "identity_not_on_node";
    case Refusal::kBadRequest:
      return "bad_request";
    case Refusal::kBadCsr:
      return "bad_csr";
    case Refusal::kWeakKey:
      return "weak_key";
    case Refusal::kInternal:
      return "internal";
  }
  return "internal";
}

std::string CertificateService::metricsText() const {
  telemetry::ExpositionWriter w;
  w.family("meshd_ca_certificates_issued_total", "Workload certificates issued",
           telemetry::MetricType::kCounter);
  w.sample(static_cast<double>(issued()));
  w.family("meshd_ca_refusals_total", "CreateCertificate calls refused, by reason",
           telemetry::MetricType::kCounter);
  for (size_t r = 0; r < kRefusalCount; ++r) {
    w.sample({{"reason", std::string(refusalName(static_cast<Refusal>(r)))}},
             static_cast<double>(refused(static_cast<Refusal>(r))));
  }
  return w.text();
}

size_t CertificateService::loggedRefusals() const {
  absl::MutexLock lock(&log_mu_);
  return logged_.size();
}

grpc::Status CertificateService::refuse(std::string_view caller, Refusal r, grpc::StatusCode code,
                                        std::string message) {
  refused_[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  bool first = false;
  {
    absl::MutexLock lock(&log_mu_);
    if (logged_.size() < kMaxLoggedRefusals) {
      first = logged_.emplace(std::string(caller), r).second;
    }
  }
  if (first) {
    spdlog::warn("CA: refused {} ({}): {} (logged once per caller and reason)", caller,
                 refusalName(r), message);
  }
  return grpc::Status(code, cat(refusalName(r), ": ", message));
}

grpc::Status CertificateService::CreateCertificate(grpc::ServerContext* context,
                                                   const v1::CreateCertificateRequest* request,
                                                   v1::CreateCertificateResponse* response) {
  // 1. Who is calling: a node agent, by its client certificate.
  std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  absl::StatusOr<identity::CertChain> chain =
      auth ? peerChain(*auth) : absl::NotFoundError("no auth context");
  if (!chain.ok()) {
    return refuse(context->peer(), Refusal::kNoClientCert, grpc::StatusCode::PERMISSION_DENIED,
                  std::string(chain.status().message()));
  }
  // gRPC has checked the chain against the bundle already; meshd's own check adds the SVID
  // rules (one SPIFFE ID, trust domain, key strength, not a CA).
  identity::PeerVerifyResult peer =
      identity::verifyPeer(*chain, ca_.trustBundle(), ca_.trustDomain(), absl::Now());
  if (!peer.ok()) {
    return refuse(identity::subjectOf(chain->front().get()), Refusal::kBadClientCert,
                  grpc::StatusCode::PERMISSION_DENIED,
                  cat(identity::reasonName(*peer.rejected), ": ", peer.detail));
  }
  const std::string caller = peer.id.toString();
  absl::StatusOr<std::string_view> node = identity::nodeName(identity::view(peer.id));
  if (!node.ok()) {
    return refuse(
        caller, Refusal::kNotNodeCredential, grpc::StatusCode::PERMISSION_DENIED,
        cat("the client certificate is not a node credential: ", node.status().message()));
  }

  // 2. What it asks for.
  absl::StatusOr<identity::SpiffeId> id = identity::makeWorkloadId(
      ca_.trustDomain(), request->namespace_(), request->service_account());
  if (!id.ok()) {
    return refuse(caller, Refusal::kBadRequest, grpc::StatusCode::INVALID_ARGUMENT,
                  std::string(id.status().message()));
  }
  if (request->validity_duration() < 0 || request->validity_duration() > kMaxValiditySeconds) {
    return refuse(caller, Refusal::kBadRequest, grpc::StatusCode::INVALID_ARGUMENT,
                  cat("validity_duration ", request->validity_duration(),
                      " s is negative or absurd (0 = the CA's default)"));
  }
  if (!placement_.hasWorkload(*node, request->namespace_(), request->service_account())) {
    return refuse(caller, Refusal::kNotOnNode, grpc::StatusCode::PERMISSION_DENIED,
                  cat("no workload of namespace ", request->namespace_(), " with service account ",
                      request->service_account(), " is placed on node ", *node, ": ",
                      id->toString(), " is not this node's to ask for"));
  }

  // 3. Sign.
  identity::SignRefusal why = identity::SignRefusal::kInternal;
  absl::StatusOr<identity::IssuedCertificate> issued =
      ca_.sign(request->csr(), *id, absl::Seconds(request->validity_duration()), &why);
  if (!issued.ok()) {
    switch (why) {
      case identity::SignRefusal::kBadCsr:
        return refuse(caller, Refusal::kBadCsr, grpc::StatusCode::INVALID_ARGUMENT,
                      std::string(issued.status().message()));
      case identity::SignRefusal::kWeakKey:
        return refuse(caller, Refusal::kWeakKey, grpc::StatusCode::INVALID_ARGUMENT,
                      std::string(issued.status().message()));
      case identity::SignRefusal::kInternal:
        return refuse(caller, Refusal::kInternal, grpc::StatusCode::INTERNAL,
                      std::string(issued.status().message()));
    }
  }
  response->set_cert_chain(issued->cert_chain_pem);
  response->set_trust_bundle(issued->trust_bundle_pem);
  response->set_not_before(absl::ToUnixSeconds(issued->not_before));
  response->set_not_after(absl::ToUnixSeconds(issued->not_after));
  issued_.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("CA: issued {} to {} until {}", id->toString(), caller,
                absl::FormatTime(issued->not_after));
  return grpc::Status::OK;
}

CaServer::CaServer(std::unique_ptr<CertificateService> service,
                   std::unique_ptr<grpc::Server> server, int port)
    : service_(std::move(service)), server_(std::move(server)), port_(port) {}

CaServer::~CaServer() { shutdown(); }

void CaServer::shutdown() {
  if (stopped_) return;
  stopped_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
}

absl::StatusOr<CaServerPtr> CaServer::start(const CaServerOptions& options,
                                            const identity::CertificateAuthority& ca,
                                            const WorkloadPlacement& placement) {
  // The CA's own serving certificate, issued by itself.
  absl::StatusOr<identity::SpiffeId> self =
      identity::parseSpiffeId(cat(identity::kSpiffePrefix, ca.trustDomain(), "/meshd/ca"));
  if (!self.ok()) return self.status();
  absl::StatusOr<identity::KeyAndCsr> kc = identity::makeKeyAndCsr(*self);
  if (!kc.ok()) return kc.status();
  absl::StatusOr<identity::IssuedCertificate> serving =
      ca.signServing(kc->csr_pem, *self, options.server_names, options.serving_cert_ttl);
  if (!serving.ok()) return serving.status();

  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = ca.trustBundle().pem();
  ssl.pem_key_cert_pairs.push_back({kc->key_pem, serving->cert_chain_pem});

  auto service = std::make_unique<CertificateService>(ca, placement);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::SslServerCredentials(ssl), &port);
  builder.RegisterService(service.get());
  builder.SetMaxReceiveMessageSize(kMaxCaMessageBytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    if (server) server->Shutdown();
    return absl::UnavailableError(
        cat("cannot listen on ", options.listen, " (address in use, or not HOST:PORT?)"));
  }
  spdlog::info("CA: serving {} on {} (port {}) as {} until {}", "meshd.ca.v1.CertificateService",
               options.listen, port, self->toString(), absl::FormatTime(serving->not_after));
  return CaServerPtr(new CaServer(std::move(service), std::move(server), port));
}

}  // namespace meshd::ca
