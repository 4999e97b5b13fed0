// The certificate authority: signs short-lived X.509-SVIDs for workloads from CSRs.
//
// Two ways to get its signing key:
//  - bring your own (as Linkerd allows): the root(s) as PEM (the trust bundle handed out),
//    the issuing CA's key, and optionally a chain whose first certificate is the issuing
//    intermediate (then further intermediates). Without a chain the first root whose key
//    matches issues directly.
//  - standalone: a self-signed EC P-256 root generated on first start and kept in a
//    directory (root-cert.pem, root-key.pem 0600) so a restart keeps the same trust.
//
// Issued leaves: exactly one URI SAN (the SPIFFE ID the caller decided, never what the CSR
// asked for), an empty subject (so the SAN is critical, RFC 5280 4.2.1.6), CA:false,
// keyUsage digitalSignature + keyEncipherment, EKU serverAuth + clientAuth, a random 128-bit
// serial, notBefore = now - kClockSkewBackdate (bounded by the issuer's notBefore) and
// notAfter = now + ttl (bounded by max_ttl and by the issuer's notAfter).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "identity/spiffe.h"
#include "identity/x509.h"

namespace meshd::identity {

// How far notBefore is set back from the moment of signing. A peer whose clock runs behind
// the CA's would otherwise see a fresh certificate as "not yet valid" and refuse the first
// handshakes after every rotation; NTP-synchronised nodes disagree by far less than this,
// while a minute of backdating costs nothing (the lifetime is hours). Istio backdates
// similarly.
inline constexpr absl::Duration kClockSkewBackdate = absl::Minutes(5);
inline constexpr absl::Duration kDefaultWorkloadTtl = absl::Hours(24);
inline constexpr absl::Duration kDefaultMaxWorkloadTtl = absl::Hours(24 * 7);
// Lifetime of a generated self-signed root.
inline constexpr absl::Duration kSelfSignedRootLifetime = absl::Hours(24 * 365 * 10);
// Largest CSR accepted (a P-256 or RSA-4096 CSR is 0.5-2 KiB).
inline constexpr size_t kMaxCsrBytes = 64 * 1024;

struct CaOptions {
  std::string trust_domain = "cluster.local";
  // Bring your own: all three of root_cert_file and key_file (+ optional cert_chain_file).
  std::string root_cert_file;   // root(s) PEM: the trust bundle (old + new during a rotation)
  std::string key_file;         // the issuing CA's private key
  std::string cert_chain_file;  // issuing intermediate first, then further intermediates
  // Or standalone: a self-signed root generated into / loaded from this directory.
  std::string self_signed_dir;
  absl::Duration default_ttl = kDefaultWorkloadTtl;  // when a request asks for none
  absl::Duration max_ttl = kDefaultMaxWorkloadTtl;   // longer requests are cut to this
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

// What sign() returns: PEM texts ready to hand to the workload.
struct IssuedCertificate {
  std::string cert_chain_pem;    // leaf, then the intermediates up to (not incl.) the root
  std::string trust_bundle_pem;  // the roots
  absl::Time not_before;
  absl::Time not_after;
};

// Why sign() refused (its Status says it in words).
enum class SignRefusal : uint8_t {
  kBadCsr,    // not a PEM CSR, too big, or its signature does not verify
  kWeakKey,   // the CSR's key is RSA < 2048 / EC < P-256 / another type
  kInternal,  // the CA could not sign (expired issuer, OpenSSL failure)
};

class CertificateAuthority;
using CertificateAuthorityPtr = std::unique_ptr<CertificateAuthority>;

class CertificateAuthority {
 public:
  // Loads (bring your own) or loads/generates (self_signed_dir) the signing CA. Checks that
  // the key matches the issuing certificate, that it is a CA valid now with a strong key, and
  // that the issuing chain leads to the roots. InvalidArgument / NotFound naming the file
  // and the problem otherwise; exactly one of the two modes must be configured.
  static absl::StatusOr<CertificateAuthorityPtr> create(CaOptions options);

  // Signs a leaf for `identity` with the public key of `csr_pem`, valid for `ttl` (zero:
  // the default TTL). Only the CSR's key and signature are used: its subject and requested
  // extensions are ignored. On failure sets *why (when given).
  absl::StatusOr<IssuedCertificate> sign(std::string_view csr_pem, const SpiffeId& identity,
                                         absl::Duration ttl, SignRefusal* why = nullptr) const;

  // The CA's own serving certificate (the CA service's TLS server side): `identity` as URI
  // SAN plus `dns_names` (what gRPC clients check the target name against), valid for `ttl`
  // bounded by the issuer only (not by max_ttl).
  absl::StatusOr<IssuedCertificate> signServing(std::string_view csr_pem, const SpiffeId& identity,
                                                const std::vector<std::string>& dns_names,
                                                absl::Duration ttl) const;

  const TrustBundle& trustBundle() const { return bundle_; }
  const std::string& trustDomain() const { return options_.trust_domain; }
  bool selfSigned() const { return self_signed_; }
  X509* issuer() const { return issuer_.get(); }
  // One line for the log: who issues, under which root(s), whether self-signed.
  std::string describe() const;

 private:
  absl::StatusOr<IssuedCertificate> issue(std::string_view csr_pem, const SpiffeId& identity,
                                          const std::vector<std::string>& dns_names,
                                          absl::Duration ttl, SignRefusal* why) const;
  CertificateAuthority(CaOptions options, TrustBundle bundle, X509Ptr issuer, EvpPkeyPtr key,
                       CertChain chain_tail, bool self_signed);

  CaOptions options_;
  TrustBundle bundle_;
  X509Ptr issuer_;
  EvpPkeyPtr key_;
  CertChain chain_tail_;  // the issuer and its intermediates, without roots
  bool self_signed_;
};

// --- Workload side ---

// A fresh EC P-256 key and a CSR for `id` (URI SAN requested; the CA decides anyway).
struct KeyAndCsr {
  EvpPkeyPtr key;
  std::string key_pem;  // PKCS#8
  std::string csr_pem;
};
absl::StatusOr<KeyAndCsr> makeKeyAndCsr(const SpiffeId& id);

// When to renew a certificate valid [not_before, not_after): once half its lifetime has
// passed, plus jitter of up to a tenth of the lifetime so that the workloads of a node
// (issued together) do not all renew at the same moment - Istio renews at 50% with jitter,
// Linkerd at 70%. `jitter` in [0, 1) picks where in that window (renewJitter() draws one).
// Renewal does not drop connections: the new certificate is used by new handshakes only
// (RotatingCertificate below); established TLS sessions keep the certificate they began
// with, which stays valid until its notAfter, long after the renewal.
absl::Time renewAt(absl::Time not_before, absl::Time not_after, double jitter);
absl::Time renewAt(const X509* cert, double jitter);
double renewJitter();

// A certificate + key in use, replaced whole on rotation. Readers (a TLS context choosing
// the certificate for a new handshake) take a reference that stays valid however many
// rotations happen while they hold it.
struct Svid {
  CertChain chain;  // leaf first
  EvpPkeyPtr key;
  SpiffeId id;
  absl::Time not_before;
  absl::Time not_after;
};
class RotatingCertificate {
 public:
  std::shared_ptr<const Svid> current() const { return current_.load(std::memory_order_acquire); }
  void replace(std::shared_ptr<const Svid> next) {
    current_.store(std::move(next), std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const Svid>> current_;
};
// Builds an Svid from what sign() returned and the key that made the CSR; checks the leaf's
// public key is that key's.
absl::StatusOr<std::shared_ptr<const Svid>> makeSvid(const IssuedCertificate& issued,
                                                     EvpPkeyPtr key);

}  // namespace meshd::identity
