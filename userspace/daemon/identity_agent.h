// The node agent (docs/design/0004-identity-mtls.md, "Wiring into meshd"): meshd's client of
// meshd-ca. For every identity (namespace, service account) of a Workload on this node it
// keeps one workload certificate: a fresh key and CSR (identity::makeKeyAndCsr), then
// CreateCertificate over mTLS with the node's own credential (--node-cert/--node-key; the CA's
// serving certificate is verified against --trust-bundle and must name "meshd-ca"), then a
// tunnel::Identity the tunnel client presents. Renewed at identity::renewAt (half the
// lifetime plus jitter) by rotate(): new tunnel connections take the new certificate, live
// ones keep theirs. Failures are retried with exponential backoff (1 s .. 60 s) and logged
// once per (identity, reason).
//
// All fetching happens on the agent's own thread, never on a request path: the L7 router only
// reads WorkloadCredential::ready (one atomic load).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "identity/x509.h"
#include "tunnel/tls.h"

namespace meshd::daemon {

// One local identity's credential as the router and the tunnel connector see it. `identity`
// is set once, before `ready` becomes true (release); readers load `ready` (acquire) first.
// Renewals rotate the Identity in place.
struct WorkloadCredential {
  std::string ns, service_account;
  std::string spiffe_id;  // spiffe://<td>/ns/<ns>/sa/<sa>
  std::atomic<bool> ready{false};
  std::shared_ptr<tunnel::Identity> identity;
  // The STRICT-without-credential refusal was logged for this identity (log once).
  mutable std::atomic<bool> strict_refusal_logged{false};
};

// What the L7 config asks of the agent (an interface so router tests need no CA).
class CredentialProvider {
 public:
  virtual ~CredentialProvider() = default;
  // The credential slot of (ns, sa), created (and its first fetch scheduled) on first use;
  // the same object for the provider's life. Updater thread.
  virtual std::shared_ptr<const WorkloadCredential> credential(std::string_view ns,
                                                               std::string_view sa) = 0;
  // The identities of local Workloads now: slots not listed stop being renewed (their
  // certificate stays usable until it expires). Updater thread.
  virtual void retain(const std::set<std::pair<std::string, std::string>>& identities) = 0;
};

struct IdentityAgentOptions {
  std::string ca_address;                   // HOST:PORT of meshd-ca
  std::string ca_server_name = "meshd-ca";  // the DNS name its serving certificate must carry
  std::string node_cert;                    // PEM chain: spiffe://<td>/meshd/node/<node>, first
  std::string node_key;
  std::string trust_bundle;  // PEM roots
  std::string trust_domain = "cluster.local";
  std::string node_name;
  absl::Duration requested_ttl = absl::ZeroDuration();  // 0 = the CA's default
  absl::Duration min_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(60);
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Renewals come at least this long apart: the CA backdates notBefore by 5 minutes, so a
  // very short lifetime would put renewAt in the past and renew in a loop.
  absl::Duration min_renew_interval = absl::Seconds(30);
};

struct IdentityAgentStats {
  uint64_t issued = 0;    // certificates obtained (first ones and renewals)
  uint64_t failures = 0;  // failed attempts (each retried)
  size_t identities = 0;  // slots being kept
  size_t ready = 0;       // slots with a certificate
};

class IdentityAgent final : public CredentialProvider {
 public:
  // Loads and checks the node credential (its SPIFFE ID must be this node's, of the trust
  // domain, and verify against the bundle now) and the bundle; starts the agent's thread.
  // InvalidArgument / NotFound naming the flag and file otherwise.
  static absl::StatusOr<std::unique_ptr<IdentityAgent>> start(IdentityAgentOptions options);
  ~IdentityAgent() override;
  void stop();

  std::shared_ptr<const WorkloadCredential> credential(std::string_view ns,
                                                       std::string_view sa) override;
  void retain(const std::set<std::pair<std::string, std::string>>& identities) override;

  // The node's own credential (the tunnel server presents it).
  std::shared_ptr<tunnel::Identity> nodeIdentity() const { return node_identity_; }
  std::shared_ptr<const tunnel::TrustBundle> tunnelBundle() const { return tunnel_bundle_; }
  const identity::TrustBundle& bundle() const { return *bundle_; }
  std::shared_ptr<const identity::TrustBundle> bundlePtr() const { return bundle_; }
  const std::string& trustDomain() const { return options_.trust_domain; }
  const std::string& nodeName() const { return options_.node_name; }
  IdentityAgentStats stats() const;

 private:
  struct Slot {
    std::shared_ptr<WorkloadCredential> cred;
    absl::Time next = absl::InfinitePast();  // next fetch
    absl::Duration backoff = absl::ZeroDuration();
    std::string last_failure;  // the reason last logged (log once per reason)
    bool retained = true;
  };
  explicit IdentityAgent(IdentityAgentOptions options);
  absl::Status init();
  void run();
  // One CreateCertificate for `cred`; returns when the certificate expires (its renewAt).
  absl::StatusOr<absl::Time> fetch(WorkloadCredential& cred);

  IdentityAgentOptions options_;
  std::shared_ptr<const identity::TrustBundle> bundle_;
  std::shared_ptr<const tunnel::TrustBundle> tunnel_bundle_;
  std::shared_ptr<tunnel::Identity> node_identity_;
  std::string bundle_pem_, node_chain_pem_, node_key_pem_;
  struct Rpc;  // the gRPC channel and stub
  std::unique_ptr<Rpc> rpc_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::map<std::pair<std::string, std::string>, Slot> slots_;  // guarded by mu_
  uint64_t issued_ = 0, failures_ = 0;                         // guarded by mu_
  void* in_flight_ = nullptr;  // the grpc::ClientContext of the call under way; guarded by mu_
  std::thread thread_;
};

}  // namespace meshd::daemon
