// The CA service (proto/ca.proto) and its mTLS gRPC server. Handlers authenticate the caller
// from its client certificate with meshd's own X.509/SPIFFE code (not gRPC's peer identity
// helpers), check the workload's placement, and sign through CertificateAuthority.
//
//   node agent (n1) --mTLS, spiffe://td/meshd/node/n1--> meshd-ca :15012
//     CreateCertificate{csr, ns=default, sa=web}
//       -> is default/web placed on n1?  yes: sign  |  no: PERMISSION_DENIED
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ca.grpc.pb.h"
#include "ca/placement.h"
#include "identity/ca.h"

namespace grpc {
class Server;
}

namespace meshd::ca {

// Why a request was refused; stable names (counters, logs).
enum class Refusal : uint8_t {
  kNoClientCert,       // no client certificate seen (cannot happen with the mTLS server)
  kBadClientCert,      // the client certificate fails meshd's own verification
  kNotNodeCredential,  // a valid SVID, but not spiffe://<td>/meshd/node/<node>
  kNotOnNode,          // the workload is not placed on the caller's node
  kBadRequest,         // namespace / service account / validity not valid
  kBadCsr,             // CSR does not parse or its signature does not verify
  kWeakKey,            // CSR key RSA < 2048 / EC < P-256
  kInternal,           // the CA could not sign
};
inline constexpr size_t kRefusalCount = 8;
// "no_client_cert", "bad_client_cert", "not_node_credential", "identity_not_on_node",
// "bad_request", "bad_csr", "weak_key", "internal".
std::string_view refusalName(Refusal r);

class CertificateService final : public v1::CertificateService::Service {
 public:
  CertificateService(const identity::CertificateAuthority& ca, const WorkloadPlacement& placement)
      : ca_(ca), placement_(placement) {}

  grpc::Status CreateCertificate(grpc::ServerContext* context,
                                 const v1::CreateCertificateRequest* request,
                                 v1::CreateCertificateResponse* response) override;

  uint64_t issued() const { return issued_.load(std::memory_order_relaxed); }
  uint64_t refused(Refusal r) const {
    return refused_[static_cast<size_t>(r)].load(std::memory_order_relaxed);
  }
  // The counters in Prometheus text: meshd_ca_certificates_issued_total and
  // meshd_ca_refusals_total{reason} (every reason, zeros included).
  std::string metricsText() const;
  // How many (caller, reason) pairs have been logged (each once).
  size_t loggedRefusals() const;

 private:
  grpc::Status refuse(std::string_view caller, Refusal r, grpc::StatusCode code,
                      std::string message);

  const identity::CertificateAuthority& ca_;
  const WorkloadPlacement& placement_;
  std::atomic<uint64_t> issued_{0};
  std::array<std::atomic<uint64_t>, kRefusalCount> refused_{};
  mutable absl::Mutex log_mu_;
  // (caller, reason) already logged. Callers are verified node identities or the subject of
  // a certificate; bounded by kMaxLoggedRefusals anyway.
  absl::flat_hash_set<std::pair<std::string, Refusal>> logged_ ABSL_GUARDED_BY(log_mu_);
};

// Largest set of (caller, reason) pairs remembered for log-once.
inline constexpr size_t kMaxLoggedRefusals = 10000;

struct CaServerOptions {
  std::string listen = "0.0.0.0:15012";  // HOST:PORT; port 0 picks one
  // DNS names in the CA's own serving certificate: clients check the target name (or their
  // ssl target name override) against them.
  std::vector<std::string> server_names = {"meshd-ca"};
  absl::Duration serving_cert_ttl = absl::Hours(24 * 365);
};

class CaServer;
using CaServerPtr = std::unique_ptr<CaServer>;

class CaServer {
 public:
  // Issues the CA's own serving certificate (spiffe://<td>/meshd/ca + server_names) and
  // serves CertificateService on `listen` with mTLS: the client must present a certificate
  // chaining to the trust bundle (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY).
  // Unavailable when the address cannot be bound.
  static absl::StatusOr<CaServerPtr> start(const CaServerOptions& options,
                                           const identity::CertificateAuthority& ca,
                                           const WorkloadPlacement& placement);
  ~CaServer();
  void shutdown();
  int port() const { return port_; }
  CertificateService& service() { return *service_; }

 private:
  CaServer(std::unique_ptr<CertificateService> service, std::unique_ptr<grpc::Server> server,
           int port);
  std::unique_ptr<CertificateService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_;
  bool stopped_ = false;
};

}  // namespace meshd::ca
