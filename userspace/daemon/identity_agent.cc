#include "daemon/identity_agent.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "ca.grpc.pb.h"
#include "common/status.h"
#include "identity/ca.h"
#include "identity/spiffe.h"
#include "spdlog/spdlog.h"

namespace meshd::daemon {

struct IdentityAgent::Rpc {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<ca::v1::CertificateService::Stub> stub;
};

namespace {

absl::string_view sv(std::string_view v) { return {v.data(), v.size()}; }

absl::Status withFlag(const absl::Status& s, std::string_view flag) {
  return absl::Status(s.code(), absl::StrCat(sv(flag), ": ", s.message()));
}

}  // namespace

IdentityAgent::IdentityAgent(IdentityAgentOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<IdentityAgent>> IdentityAgent::start(IdentityAgentOptions options) {
  std::unique_ptr<IdentityAgent> a(new IdentityAgent(std::move(options)));
  RETURN_IF_ERROR(a->init());
  a->thread_ = std::thread([p = a.get()] { p->run(); });
  return a;
}

absl::Status IdentityAgent::init() {
  if (options_.ca_address.empty()) return absl::InvalidArgumentError("--ca-address is required");
  if (options_.node_name.empty()) {
    return absl::InvalidArgumentError(
        "--node-name is required with --ca-address (the node credential names it)");
  }
  for (auto [flag, value] :
       {std::pair<const char*, const std::string*>{"--node-cert", &options_.node_cert},
        {"--node-key", &options_.node_key},
        {"--trust-bundle", &options_.trust_bundle}}) {
    if (value->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " is required with --ca-address"));
    }
  }
  auto pem = identity::readFile(options_.trust_bundle);
  if (!pem.ok()) return withFlag(pem.status(), "--trust-bundle");
  bundle_pem_ = *pem;
  auto bundle = identity::TrustBundle::fromPem(bundle_pem_, options_.trust_bundle);
  if (!bundle.ok()) return withFlag(bundle.status(), "--trust-bundle");
  bundle_ = std::make_shared<const identity::TrustBundle>(std::move(*bundle));
  auto tb = tunnel::TrustBundle::fromPem(bundle_pem_);
  if (!tb.ok()) return withFlag(tb.status(), "--trust-bundle");
  tunnel_bundle_ = *tb;

  auto chain_pem = identity::readFile(options_.node_cert);
  if (!chain_pem.ok()) return withFlag(chain_pem.status(), "--node-cert");
  node_chain_pem_ = *chain_pem;
  auto key_pem = identity::readFile(options_.node_key);
  if (!key_pem.ok()) return withFlag(key_pem.status(), "--node-key");
  node_key_pem_ = *key_pem;
  auto chain = identity::parseCertChainPem(node_chain_pem_, options_.node_cert);
  if (!chain.ok()) return withFlag(chain.status(), "--node-cert");
  const identity::PeerVerifyResult v =
      identity::verifyPeer(*chain, *bundle_, options_.trust_domain, absl::Now());
  if (!v.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--node-cert ", options_.node_cert, ": ",
                                                   sv(identity::reasonName(*v.rejected)), ": ",
                                                   v.detail));
  }
  auto node = identity::nodeName(identity::view(v.id));
  if (!node.ok() || *node != options_.node_name) {
    return absl::InvalidArgumentError(
        absl::StrCat("--node-cert ", options_.node_cert, ": ", v.id.toString(),
                     " is not this node's credential (expected spiffe://", options_.trust_domain,
                     "/meshd/node/", options_.node_name, ")"));
  }
  auto creds = tunnel::Credentials::fromPem(node_chain_pem_, node_key_pem_);
  if (!creds.ok()) return withFlag(creds.status(), "--node-cert/--node-key");
  node_identity_ = std::make_shared<tunnel::Identity>(v.id.toString(), *creds);

  grpc::SslCredentialsOptions so;
  so.pem_root_certs = bundle_pem_;
  so.pem_cert_chain = node_chain_pem_;
  so.pem_private_key = node_key_pem_;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(options_.ca_server_name);
  rpc_ = std::make_unique<Rpc>();
  rpc_->channel = grpc::CreateCustomChannel(options_.ca_address, grpc::SslCredentials(so), args);
  rpc_->stub = ca::v1::CertificateService::NewStub(rpc_->channel);
  spdlog::info("node agent: {} asks meshd-ca at {} for its workloads' certificates",
               v.id.toString(), options_.ca_address);
  return absl::OkStatus();
}

IdentityAgent::~IdentityAgent() { stop(); }

void IdentityAgent::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    // A call under way (the CA slow or unreachable) ends now instead of at its deadline.
    if (in_flight_ != nullptr) static_cast<grpc::ClientContext*>(in_flight_)->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const WorkloadCredential> IdentityAgent::credential(std::string_view ns,
                                                                    std::string_view sa) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_pair(std::string(ns), std::string(sa));
  auto it = slots_.find(key);
  if (it == slots_.end()) {
    Slot slot;
    slot.cred = std::make_shared<WorkloadCredential>();
    slot.cred->ns = key.first;
    slot.cred->service_account = key.second;
    slot.cred->spiffe_id = absl::StrCat(sv(identity::kSpiffePrefix), options_.trust_domain, "/ns/",
                                        key.first, "/sa/", key.second);
    it = slots_.emplace(std::move(key), std::move(slot)).first;
    cv_.notify_all();
  }
  it->second.retained = true;
  return it->second.cred;
}

void IdentityAgent::retain(const std::set<std::pair<std::string, std::string>>& identities) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, slot] : slots_) slot.retained = identities.contains(key);
  cv_.notify_all();
}

IdentityAgentStats IdentityAgent::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  IdentityAgentStats s;
  s.issued = issued_;
  s.failures = failures_;
  for (const auto& [key, slot] : slots_) {
    if (!slot.retained) continue;
    ++s.identities;
    if (slot.cred->ready.load(std::memory_order_acquire)) ++s.ready;
  }
  return s;
}

void IdentityAgent::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    Slot* due = nullptr;
    for (auto& [key, slot] : slots_) {
      if (slot.retained && (due == nullptr || slot.next < due->next)) due = &slot;
    }
    if (due == nullptr) {
      cv_.wait(lock);
      continue;
    }
    const absl::Time now = absl::Now();
    if (due->next > now) {
      cv_.wait_for(lock, absl::ToChronoNanoseconds(std::min(due->next - now, absl::Hours(1))));
      continue;
    }
    std::shared_ptr<WorkloadCredential> cred = due->cred;
    lock.unlock();
    absl::StatusOr<absl::Time> renew = fetch(*cred);
    lock.lock();
    // Slots are never erased: `due` is still valid.
    if (renew.ok()) {
      ++issued_;
      if (!due->last_failure.empty()) {
        spdlog::info("node agent: {}: certificate obtained after earlier failures",
                     cred->spiffe_id);
      }
      due->last_failure.clear();
      due->backoff = absl::ZeroDuration();
      due->next = std::max(*renew, absl::Now() + options_.min_renew_interval);
    } else {
      ++failures_;
      due->backoff = due->backoff == absl::ZeroDuration()
                         ? options_.min_backoff
                         : std::min(due->backoff * 2, options_.max_backoff);
      due->next = absl::Now() + due->backoff;
      std::string reason(renew.status().message());
      if (reason != due->last_failure) {
        spdlog::warn("node agent: {}: {} (retrying with backoff; logged once per reason)",
                     cred->spiffe_id, reason);
        due->last_failure = std::move(reason);
      }
    }
  }
}

absl::StatusOr<absl::Time> IdentityAgent::fetch(WorkloadCredential& cred) {
  ASSIGN_OR_RETURN(identity::SpiffeId id,
                   identity::makeWorkloadId(options_.trust_domain, cred.ns, cred.service_account));
  ASSIGN_OR_RETURN(identity::KeyAndCsr kc, identity::makeKeyAndCsr(id));
  ca::v1::CreateCertificateRequest request;
  request.set_csr(kc.csr_pem);
  request.set_namespace_(cred.ns);
  request.set_service_account(cred.service_account);
  request.set_validity_duration(absl::ToInt64Seconds(options_.requested_ttl));
  ca::v1::CreateCertificateResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(options_.rpc_timeout));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::CancelledError("stopping");
    in_flight_ = &context;
  }
  const grpc::Status s = rpc_->stub->CreateCertificate(&context, request, &response);
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_ = nullptr;
  }
  if (!s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("meshd-ca ", options_.ca_address, " CreateCertificate: gRPC status ",
                     static_cast<int>(s.error_code()), ": ", s.error_message()));
  }
  ASSIGN_OR_RETURN(identity::CertChain chain,
                   identity::parseCertChainPem(response.cert_chain(), "meshd-ca response"));
  const identity::PeerVerifyResult v =
      identity::verifyPeer(chain, *bundle_, options_.trust_domain, absl::Now());
  if (!v.ok()) {
    return absl::InternalError(
        absl::StrCat("meshd-ca returned a certificate that does not verify: ",
                     sv(identity::reasonName(*v.rejected)), ": ", v.detail));
  }
  if (!(v.id == id)) {
    return absl::InternalError(absl::StrCat("meshd-ca returned a certificate for ", v.id.toString(),
                                            ", asked for ", id.toString()));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const tunnel::Credentials> creds,
                   tunnel::Credentials::fromPem(response.cert_chain(), kc.key_pem));
  if (cred.identity == nullptr) {
    cred.identity = std::make_shared<tunnel::Identity>(cred.spiffe_id, std::move(creds));
    cred.ready.store(true, std::memory_order_release);
    spdlog::info("node agent: {}: certificate valid until {}", cred.spiffe_id,
                 absl::FormatTime(identity::notAfter(chain[0].get())));
  } else {
    cred.identity->rotate(std::move(creds));
    spdlog::info("node agent: {}: renewed, valid until {}", cred.spiffe_id,
                 absl::FormatTime(identity::notAfter(chain[0].get())));
  }
  return identity::renewAt(chain[0].get(), identity::renewJitter());
}

}  // namespace meshd::daemon
