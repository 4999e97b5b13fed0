// X.509 for meshd's identities (OpenSSL 3): owning pointers for OpenSSL's types, PEM loading
// of certificate chains, private keys and trust bundles, and the verification of a peer's
// X.509-SVID (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md):
//
//   verifyPeer(chain, bundle, "cluster.local", now)
//     -> ok + spiffe://cluster.local/ns/default/sa/web
//     -> or one PeerRejectReason (untrusted_ca, expired, ...) and a message saying what.
//
// The reason codes are stable: they name counters and log lines, and the tunnel (and the CA
// service) refuse peers with them.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "identity/spiffe.h"

namespace meshd::identity {

// --- Owning pointers (free with the matching OpenSSL function) ---
template <typename T, void (*Free)(T*)>
struct OpensslDeleter {
  void operator()(T* p) const { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, OpensslDeleter<X509, X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OpensslDeleter<X509_REQ, X509_REQ_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpensslDeleter<EVP_PKEY, EVP_PKEY_free>>;
using EvpPkeyCtxPtr =
    std::unique_ptr<EVP_PKEY_CTX, OpensslDeleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpensslDeleter<X509_STORE, X509_STORE_free>>;
using X509StoreCtxPtr =
    std::unique_ptr<X509_STORE_CTX, OpensslDeleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, OpensslDeleter<BIO, BIO_free_all>>;
using GeneralNamesPtr =
    std::unique_ptr<GENERAL_NAMES, OpensslDeleter<GENERAL_NAMES, GENERAL_NAMES_free>>;
using Asn1IntegerPtr =
    std::unique_ptr<ASN1_INTEGER, OpensslDeleter<ASN1_INTEGER, ASN1_INTEGER_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpensslDeleter<BIGNUM, BN_free>>;
struct X509StackDeleter {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackDeleter>;

// A new reference to `x` (X509_up_ref).
X509Ptr upRef(X509* x);
EvpPkeyPtr upRef(EVP_PKEY* k);

// Pops OpenSSL's error queue of this thread into one line ("error:...; error:..."); empty
// when the queue was empty. Callers that fail after an OpenSSL call use it so the queue never
// leaks into an unrelated later call.
std::string drainOpensslErrors();

// A certificate chain, leaf (or the issuing CA) first, then the intermediates.
using CertChain = std::vector<X509Ptr>;

// Parses every CERTIFICATE block of `pem`, in order. InvalidArgument naming `source` when a
// block does not parse or there is none.
absl::StatusOr<CertChain> parseCertChainPem(std::string_view pem, std::string_view source);
// The same for a file (NotFound / PermissionDenied... when it cannot be read).
absl::StatusOr<CertChain> loadCertChainFile(const std::string& path);
// One private key (PKCS#8, or traditional EC/RSA PEM; unencrypted).
absl::StatusOr<EvpPkeyPtr> parsePrivateKeyPem(std::string_view pem, std::string_view source);
absl::StatusOr<EvpPkeyPtr> loadPrivateKeyFile(const std::string& path);
// Reads a whole file; errors name the path and errno.
absl::StatusOr<std::string> readFile(const std::string& path);

std::string toPem(X509* cert);
std::string toPem(const CertChain& chain);
std::string privateKeyToPem(EVP_PKEY* key);  // PKCS#8, unencrypted

// Validity of a certificate as absl::Time (UTC).
absl::Time notBefore(const X509* cert);
absl::Time notAfter(const X509* cert);
// "CN=..., O=..." of the subject, for messages.
std::string subjectOf(const X509* cert);

// Key strength: RSA below 2048 bits or EC below 256 bits (P-256) is weak, as are key types
// other than RSA, EC, Ed25519 and Ed448. Returns InvalidArgument saying which and how big.
absl::Status checkKeyStrength(EVP_PKEY* key);

// The roots a peer's chain must lead to. Several during a root rotation (old and new): a
// chain to any of them verifies. Immutable once built; verification from several threads at
// once is fine (X509_STORE locks internally).
class TrustBundle {
 public:
  // Every CERTIFICATE of `pem` is a root; each must be a CA certificate. InvalidArgument
  // naming `source` and the certificate otherwise, or when there is none.
  static absl::StatusOr<TrustBundle> fromPem(std::string_view pem, std::string_view source);
  static absl::StatusOr<TrustBundle> fromFile(const std::string& path);
  static absl::StatusOr<TrustBundle> fromCerts(CertChain roots, std::string_view source);

  const CertChain& roots() const { return roots_; }
  // The roots as PEM, in order (what the CA hands out as the trust bundle).
  std::string pem() const { return toPem(roots_); }
  X509_STORE* store() const { return store_.get(); }

 private:
  TrustBundle(CertChain roots, X509StorePtr store)
      : roots_(std::move(roots)), store_(std::move(store)) {}
  CertChain roots_;
  X509StorePtr store_;
};

// Why a peer certificate was refused. Stable: names of counters and log fields.
enum class PeerRejectReason : uint8_t {
  kUntrustedCa,        // does not chain to the trust bundle (another CA, bad signature)
  kExpired,            // the leaf or a CA of its chain has expired
  kNotYetValid,        // ... is not valid yet
  kNoSpiffeId,         // the leaf has no URI SAN, or its one URI SAN is not spiffe://
  kMultipleSpiffeIds,  // more than one URI SAN (an X.509-SVID has exactly one)
  kWrongTrustDomain,   // a SPIFFE ID of another trust domain
  kWeakKey,            // RSA < 2048 bits, EC < P-256 (leaf or CA), or a weak signature
  kMalformed,          // anything else: no certificate, an invalid SPIFFE ID, a CA leaf, ...
};
inline constexpr size_t kPeerRejectReasonCount = 8;
// "untrusted_ca", "expired", "not_yet_valid", "no_spiffe_id", "multiple_spiffe_ids",
// "wrong_trust_domain", "weak_key", "malformed".
std::string_view reasonName(PeerRejectReason reason);

// What verifyPeer() and spiffeIdOf() found: either the peer's SPIFFE ID, or a reason and a
// message naming the certificate and the problem.
struct PeerVerifyResult {
  std::optional<PeerRejectReason> rejected;  // nullopt: accepted
  std::string detail;                        // on rejection: what is wrong
  SpiffeId id;                               // on acceptance: the peer's identity

  bool ok() const { return !rejected.has_value(); }
  static PeerVerifyResult reject(PeerRejectReason reason, std::string detail) {
    return {reason, std::move(detail), {}};
  }
};

// The SPIFFE ID of an X.509-SVID leaf: its one URI SAN, parsed with parseSpiffeId. Rejects
// with kNoSpiffeId (no URI SAN, or a non-spiffe URI), kMultipleSpiffeIds (two or more URI
// SANs) or kMalformed (an invalid SPIFFE ID, an unreadable SAN extension).
PeerVerifyResult spiffeIdOf(X509* leaf);

// Verifies a peer's chain (leaf first, then the intermediates it sent) at time `now`: it must
// chain to `bundle`, every certificate on the path must be valid at `now` and have a strong
// key, the leaf must not be a CA and must carry exactly one SPIFFE ID, of `trust_domain`.
// Returns the SPIFFE ID or the first problem found, in that order.
PeerVerifyResult verifyPeer(const CertChain& chain, const TrustBundle& bundle,
                            std::string_view trust_domain, absl::Time now);
// The same with OpenSSL's own types (what SSL_get0_peer_certificate and
// SSL_get_peer_cert_chain give: on a server that chain lacks the leaf, on a client it starts
// with it; either is fine, the leaf among the intermediates is harmless). `intermediates`
// may be null. Builds an X509_STORE_CTX per call: once per handshake, not per request.
PeerVerifyResult verifyPeer(X509* leaf, STACK_OF(X509) * intermediates, const TrustBundle& bundle,
                            std::string_view trust_domain, absl::Time now);

}  // namespace meshd::identity
