#include "tunnel/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace meshd::tunnel {
namespace {

std::string opensslError() {
  unsigned long err = ERR_get_error();
  ERR_clear_error();
  if (err == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(err, buf, sizeof buf);
  return buf;
}

absl::StatusOr<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

constexpr unsigned char kAlpn[] = {2, 'h', '2'};

int selectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpn, sizeof kAlpn, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// After OpenSSL's own chain check, the leaf goes to the connection's PeerVerifier.
int verifyCallback(int preverify_ok, X509_STORE_CTX* store) {
  if (!preverify_ok) return 0;
  if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  ConnVerify* verify = ssl ? connVerify(ssl) : nullptr;
  if (verify == nullptr || verify->verifier == nullptr || !*verify->verifier) return 1;
  absl::Status st =
      (*verify->verifier)(X509_STORE_CTX_get_current_cert(store), X509_STORE_CTX_get0_chain(store));
  if (st.ok()) return 1;
  verify->refused = true;
  verify->refusal = std::string(st.message());
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

}  // namespace

Credentials::~Credentials() {
  X509_free(leaf_);
  sk_X509_pop_free(chain_, X509_free);
  EVP_PKEY_free(key_);
}

absl::StatusOr<std::shared_ptr<const Credentials>> Credentials::fromPem(std::string_view chain_pem,
                                                                        std::string_view key_pem) {
  std::shared_ptr<Credentials> c(new Credentials());
  c->chain_ = sk_X509_new_null();
  BIO* bio = BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size()));
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    if (c->leaf_ == nullptr) {
      c->leaf_ = cert;
    } else {
      sk_X509_push(c->chain_, cert);
    }
  }
  BIO_free(bio);
  ERR_clear_error();  // the end of the PEM stream
  if (c->leaf_ == nullptr) {
    return absl::InvalidArgumentError("tunnel credentials: the chain PEM holds no certificate");
  }
  bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  c->key_ = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (c->key_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tunnel credentials: no private key in the key PEM (", opensslError(), ")"));
  }
  if (X509_check_private_key(c->leaf_, c->key_) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "tunnel credentials: the private key does not match the leaf certificate");
  }
  c->uri_ = firstUriSan(c->leaf_);
  return std::shared_ptr<const Credentials>(std::move(c));
}

absl::StatusOr<std::shared_ptr<const Credentials>> Credentials::fromFiles(
    const std::string& chain_path, const std::string& key_path) {
  absl::StatusOr<std::string> chain = readFile(chain_path);
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> key = readFile(key_path);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::shared_ptr<const Credentials>> c = fromPem(*chain, *key);
  if (!c.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.status().message(), " (", chain_path, ", ", key_path, ")"));
  }
  return c;
}

TrustBundle::~TrustBundle() { X509_STORE_free(store_); }

absl::StatusOr<std::shared_ptr<const TrustBundle>> TrustBundle::fromPem(std::string_view pem) {
  std::shared_ptr<TrustBundle> t(new TrustBundle());
  t->store_ = X509_STORE_new();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(t->store_, cert);
    X509_free(cert);
    ++t->roots_;
  }
  BIO_free(bio);
  ERR_clear_error();
  if (t->roots_ == 0) return absl::InvalidArgumentError("trust bundle: no certificate in the PEM");
  return std::shared_ptr<const TrustBundle>(std::move(t));
}

absl::StatusOr<std::shared_ptr<const TrustBundle>> TrustBundle::fromFile(const std::string& path) {
  absl::StatusOr<std::string> pem = readFile(path);
  if (!pem.ok()) return pem.status();
  absl::StatusOr<std::shared_ptr<const TrustBundle>> t = fromPem(*pem);
  if (!t.ok())
    return absl::InvalidArgumentError(absl::StrCat(t.status().message(), " (", path, ")"));
  return t;
}

Identity::Identity(std::string name, std::shared_ptr<const Credentials> credentials)
    : name_(std::move(name)), current_(std::move(credentials)) {}

void Identity::rotate(std::shared_ptr<const Credentials> credentials) {
  std::lock_guard<std::mutex> lock(mu_);
  current_ = std::move(credentials);
}

std::shared_ptr<const Credentials> Identity::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

std::string firstUriSan(X509* cert) {
  std::string out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_URI) {
      const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
      out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                 static_cast<size_t>(ASN1_STRING_length(uri)));
      break;
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

const char* handshakeFailureName(HandshakeFailure failure) {
  switch (failure) {
    case HandshakeFailure::kNoPeerCert:
      return "no_peer_certificate";
    case HandshakeFailure::kUntrusted:
      return "untrusted";
    case HandshakeFailure::kExpired:
      return "expired";
    case HandshakeFailure::kNotYetValid:
      return "not_yet_valid";
    case HandshakeFailure::kVerifierRefused:
      return "verifier_refused";
    case HandshakeFailure::kProtocolVersion:
      return "protocol_version";
    case HandshakeFailure::kNoSharedCipher:
      return "no_shared_cipher";
    case HandshakeFailure::kNoAlpn:
      return "no_alpn_h2";
    case HandshakeFailure::kPeerAlert:
      return "peer_alert";
    case HandshakeFailure::kTimeout:
      return "timeout";
    case HandshakeFailure::kOther:
      return "other";
  }
  return "other";
}

absl::StatusOr<SSL_CTX*> makeTunnelContext(bool server, const TrustBundle& trust) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) return absl::InternalError(absl::StrCat("SSL_CTX_new: ", opensslError()));
  auto fail = [ctx](const char* what) {
    SSL_CTX_free(ctx);
    return absl::InternalError(absl::StrCat("tunnel TLS context: ", what, ": ", opensslError()));
  };
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    return fail("TLS 1.3 only");
  }
  if (SSL_CTX_set_ciphersuites(
          ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1) {
    return fail("cipher suites");
  }
  if (SSL_CTX_set1_groups_list(ctx, "X25519:P-256") != 1) return fail("groups");
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set1_cert_store(ctx, trust.store());
  // Resumed sessions carry the peer's verified identity for at most this long.
  SSL_CTX_set_timeout(ctx, 3600);
  if (server) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verifyCallback);
    SSL_CTX_set_alpn_select_cb(ctx, selectAlpn, nullptr);
    static const unsigned char kSidCtx[] = "meshd-tunnel";
    SSL_CTX_set_session_id_context(ctx, kSidCtx, sizeof kSidCtx - 1);
    SSL_CTX_set_num_tickets(ctx, 1);
    // Stateless tickets only: no server-side session cache to bound.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verifyCallback);
    if (SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn) != 0) return fail("ALPN");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  }
  return ctx;
}

absl::Status useCredentials(SSL* ssl, const Credentials& creds) {
  if (SSL_use_cert_and_key(ssl, creds.leaf(), creds.key(), creds.intermediates(), 1) != 1) {
    return absl::InternalError(absl::StrCat("SSL_use_cert_and_key: ", opensslError()));
  }
  return absl::OkStatus();
}

HandshakeFailure classifyHandshakeFailure(SSL* ssl, unsigned long err, const ConnVerify& verify) {
  if (verify.refused) return HandshakeFailure::kVerifierRefused;
  long vr = SSL_get_verify_result(ssl);
  int reason = ERR_GET_REASON(err);
  if (ERR_GET_LIB(err) == ERR_LIB_SSL) {
    switch (reason) {
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return HandshakeFailure::kNoPeerCert;
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_NO_PROTOCOLS_AVAILABLE:
      case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        return HandshakeFailure::kProtocolVersion;
      case SSL_R_NO_SHARED_CIPHER:
      case SSL_R_NO_SHARED_GROUPS:
      case SSL_R_NO_SUITABLE_KEY_SHARE:
        return HandshakeFailure::kNoSharedCipher;
      case SSL_R_NO_APPLICATION_PROTOCOL:
      case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
        return HandshakeFailure::kNoAlpn;
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        break;  // below, from the verify result
      case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
      case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
      case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
      case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
        return HandshakeFailure::kPeerAlert;
      default:
        if (vr == X509_V_OK) return HandshakeFailure::kOther;
    }
  }
  switch (vr) {
    case X509_V_OK:
      return HandshakeFailure::kOther;
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return HandshakeFailure::kExpired;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return HandshakeFailure::kNotYetValid;
    case X509_V_ERR_APPLICATION_VERIFICATION:
      return HandshakeFailure::kVerifierRefused;
    default:
      return HandshakeFailure::kUntrusted;
  }
}

}  // namespace meshd::tunnel
