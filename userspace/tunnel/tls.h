// TLS material and contexts of the node-to-node tunnel (docs/design/0004-identity-mtls.md,
// "The node-to-node tunnel"): credentials (a leaf, its intermediates and key), the trust
// bundle, a rotating Identity, and the TLS 1.3-only SSL_CTX both ends use.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace meshd::tunnel {

using SpiffeIdString = std::string;

// Decides on the peer once OpenSSL has verified its chain against the trust bundle
// (validity dates included): `leaf` is the peer's certificate, `chain` the verified chain
// (leaf first, root last). Non-OK refuses the handshake (counted as kVerifierRefused).
// Called on the loop's thread, during the handshake. For a resumed session (no chain
// check: the ticket vouches for a chain verified within the ticket lifetime, 1 h) it is
// called again after the handshake with the session's leaf and `chain` = null (a ticket
// carries the leaf, not the chain: verifiers check the leaf's identity only, the chain was
// verified when the session was established), and the leaf's notAfter is re-checked.
using PeerVerifier = std::function<absl::Status(X509* leaf, STACK_OF(X509) * chain)>;

// One identity's credentials: the leaf certificate, the intermediates to send with it, and
// the private key. Immutable; shared by the connections that present it.
class Credentials {
 public:
  // `chain_pem`: the leaf first, then its intermediates. `key_pem`: the leaf's key (PKCS#8
  // or traditional). InvalidArgument naming what is wrong (no certificate, key mismatch).
  static absl::StatusOr<std::shared_ptr<const Credentials>> fromPem(std::string_view chain_pem,
                                                                    std::string_view key_pem);
  static absl::StatusOr<std::shared_ptr<const Credentials>> fromFiles(const std::string& chain_path,
                                                                      const std::string& key_path);
  ~Credentials();
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;

  X509* leaf() const { return leaf_; }
  STACK_OF(X509) * intermediates() const { return chain_; }
  EVP_PKEY* key() const { return key_; }
  // The leaf's first URI SAN ("" when it has none); for logs and pool keys.
  const std::string& uri() const { return uri_; }

 private:
  Credentials() = default;
  X509* leaf_ = nullptr;
  STACK_OF(X509) * chain_ = nullptr;
  EVP_PKEY* key_ = nullptr;
  std::string uri_;
};

// The roots a peer's chain must end in (several during a root rotation).
class TrustBundle {
 public:
  // Every certificate in `pem` becomes a trusted root. InvalidArgument when there is none.
  static absl::StatusOr<std::shared_ptr<const TrustBundle>> fromPem(std::string_view pem);
  static absl::StatusOr<std::shared_ptr<const TrustBundle>> fromFile(const std::string& path);
  ~TrustBundle();
  TrustBundle(const TrustBundle&) = delete;
  TrustBundle& operator=(const TrustBundle&) = delete;
  X509_STORE* store() const { return store_; }
  size_t roots() const { return roots_; }

 private:
  TrustBundle() = default;
  X509_STORE* store_ = nullptr;
  size_t roots_ = 0;
};

// A workload's (or node's) identity with rotating credentials. Thread-safe. New TLS
// connections present current(); live ones keep the credentials they started with.
class Identity {
 public:
  Identity(std::string name, std::shared_ptr<const Credentials> credentials);
  void rotate(std::shared_ptr<const Credentials> credentials);
  std::shared_ptr<const Credentials> current() const;
  const std::string& name() const { return name_; }

 private:
  const std::string name_;
  mutable std::mutex mu_;
  std::shared_ptr<const Credentials> current_;
};

// The first URI SAN of `cert` (GENERAL_NAME API), or "" when it has none.
std::string firstUriSan(X509* cert);

// Why a handshake failed (counters and the once-per-peer log).
enum class HandshakeFailure : uint8_t {
  kNoPeerCert,       // the client sent no certificate (server side)
  kUntrusted,        // the chain does not end in the trust bundle
  kExpired,          // a certificate of the chain has expired
  kNotYetValid,      // a certificate of the chain is not valid yet
  kVerifierRefused,  // the PeerVerifier said no (e.g. wrong trust domain)
  kProtocolVersion,  // the peer offered no TLS 1.3
  kNoSharedCipher,   // no cipher suite or group in common
  kNoAlpn,           // the peer did not agree on ALPN "h2"
  kPeerAlert,        // the peer refused us (its alert)
  kTimeout,          // no handshake within the limit
  kOther,            // I/O error, protocol error, peer closed
};
inline constexpr size_t kHandshakeFailureCount = 11;
const char* handshakeFailureName(HandshakeFailure failure);

// The SSL_CTX settings both ends use: TLS 1.3 only; cipher suites TLS_AES_128_GCM_SHA256,
// TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256; groups X25519, P-256; ALPN "h2";
// no compression, no renegotiation; peer verification against `trust` (the server
// requires a client certificate). Certificates are set per connection (SSL_use_cert_and_key)
// so rotation needs no new context. The verify callback calls the PeerVerifier that
// ConnVerify (SSL app data) names.
struct ConnVerify {
  const PeerVerifier* verifier = nullptr;
  bool refused = false;  // the verifier said no
  std::string refusal;   // its message
  void* conn = nullptr;  // the tunnel connection (for the session-ticket callback)
};
// The ConnVerify of `ssl` (SSL app data), or nullptr.
inline ConnVerify* connVerify(const SSL* ssl) {
  return static_cast<ConnVerify*>(SSL_get_app_data(ssl));
}
absl::StatusOr<SSL_CTX*> makeTunnelContext(bool server, const TrustBundle& trust);
// Classifies a failed handshake from the error queue, the verify result and `verify`.
HandshakeFailure classifyHandshakeFailure(SSL* ssl, unsigned long err, const ConnVerify& verify);
// Applies `creds` to `ssl` (leaf, key and intermediates). InternalError on failure.
absl::Status useCredentials(SSL* ssl, const Credentials& creds);

}  // namespace meshd::tunnel
