#include "identity/x509.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "identity/text.h"

namespace meshd::identity {
namespace {

BioPtr memBio(std::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string bioToString(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

absl::Time asn1ToTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

std::string withErrors(std::string what) {
  std::string errors = drainOpensslErrors();
  if (!errors.empty()) absl::StrAppend(&what, " (", errors, ")");
  return what;
}

// X509_V_ERR_* -> our reason.
PeerRejectReason reasonOfVerifyError(int err) {
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CRL_HAS_EXPIRED:
      return PeerRejectReason::kExpired;
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_CRL_NOT_YET_VALID:
      return PeerRejectReason::kNotYetValid;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
      return PeerRejectReason::kUntrustedCa;
    case X509_V_ERR_EE_KEY_TOO_SMALL:
    case X509_V_ERR_CA_KEY_TOO_SMALL:
    case X509_V_ERR_CA_MD_TOO_WEAK:
      return PeerRejectReason::kWeakKey;
    default:
      return PeerRejectReason::kMalformed;
  }
}

// How long a chain may be: leaf + intermediates. Bounds the work an attacker's chain costs.
constexpr int kMaxVerifyDepth = 8;

}  // namespace

X509Ptr upRef(X509* x) {
  X509_up_ref(x);
  return X509Ptr(x);
}

EvpPkeyPtr upRef(EVP_PKEY* k) {
  EVP_PKEY_up_ref(k);
  return EvpPkeyPtr(k);
}

std::string drainOpensslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

absl::StatusOr<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return errnoError(errno, cat("opening ", path));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return errnoError(errno, cat("reading ", path));
  return data;
}

absl::StatusOr<CertChain> parseCertChainPem(std::string_view pem, std::string_view source) {
  ERR_clear_error();
  BioPtr bio = memBio(pem);
  CertChain chain;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) {
      const unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();  // the end: no further PEM block
        break;
      }
      return absl::InvalidArgumentError(withErrors(cat(source, ": certificate ", chain.size() + 1,
                                                       " is not a valid PEM X.509 certificate")));
    }
    chain.push_back(std::move(cert));
  }
  if (chain.empty()) {
    return absl::InvalidArgumentError(cat(source, ": no PEM CERTIFICATE block"));
  }
  return chain;
}

absl::StatusOr<CertChain> loadCertChainFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, readFile(path));
  return parseCertChainPem(pem, path);
}

absl::StatusOr<EvpPkeyPtr> parsePrivateKeyPem(std::string_view pem, std::string_view source) {
  ERR_clear_error();
  BioPtr bio = memBio(pem);
  // A null passphrase callback + empty user data: an encrypted key fails instead of
  // prompting on the terminal.
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(
      bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(
        withErrors(cat(source, ": not an unencrypted PEM private key (PKCS#8, EC or RSA)")));
  }
  return key;
}

absl::StatusOr<EvpPkeyPtr> loadPrivateKeyFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, readFile(path));
  return parsePrivateKeyPem(pem, path);
}

std::string toPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  return bioToString(bio.get());
}

std::string toPem(const CertChain& chain) {
  std::string out;
  for (const X509Ptr& c : chain) out += toPem(c.get());
  return out;
}

std::string privateKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  return bioToString(bio.get());
}

absl::Time notBefore(const X509* cert) { return asn1ToTime(X509_get0_notBefore(cert)); }
absl::Time notAfter(const X509* cert) { return asn1ToTime(X509_get0_notAfter(cert)); }

std::string subjectOf(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  std::string s = bioToString(bio.get());
  return s.empty() ? "(empty subject)" : s;
}

absl::Status checkKeyStrength(EVP_PKEY* key) {
  if (key == nullptr) return absl::InvalidArgumentError("no public key");
  const int bits = EVP_PKEY_get_bits(key);
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      if (bits < 2048) {
        return absl::InvalidArgumentError(
            cat("weak key: RSA with ", bits, " bits (at least 2048 required)"));
      }
      return absl::OkStatus();
    case EVP_PKEY_EC:
      if (bits < 256) {
        return absl::InvalidArgumentError(
            cat("weak key: EC with ", bits, " bits (P-256 or larger required)"));
      }
      return absl::OkStatus();
    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          cat("unsupported key type ", OBJ_nid2sn(EVP_PKEY_get_base_id(key)),
              " (RSA >= 2048, EC >= P-256, Ed25519 or Ed448 required)"));
  }
}

absl::StatusOr<TrustBundle> TrustBundle::fromCerts(CertChain roots, std::string_view source) {
  if (roots.empty()) return absl::InvalidArgumentError(cat(source, ": no root certificate"));
  X509StorePtr store(X509_STORE_new());
  for (size_t i = 0; i < roots.size(); ++i) {
    X509* r = roots[i].get();
    if (X509_check_ca(r) == 0) {
      return absl::InvalidArgumentError(
          cat(source, ": certificate ", i + 1, " (", subjectOf(r), ") is not a CA certificate"));
    }
    if (X509_STORE_add_cert(store.get(), r) != 1) {
      return absl::InvalidArgumentError(
          withErrors(cat(source, ": cannot add certificate ", i + 1, " (", subjectOf(r), ")")));
    }
  }
  return TrustBundle(std::move(roots), std::move(store));
}

absl::StatusOr<TrustBundle> TrustBundle::fromPem(std::string_view pem, std::string_view source) {
  ASSIGN_OR_RETURN(CertChain roots, parseCertChainPem(pem, source));
  return fromCerts(std::move(roots), source);
}

absl::StatusOr<TrustBundle> TrustBundle::fromFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, readFile(path));
  return fromPem(pem, path);
}

std::string_view reasonName(PeerRejectReason reason) {
  switch (reason) {
    case PeerRejectReason::kUntrustedCa:
      return "untrusted_ca";
    case PeerRejectReason::kExpired:
      return "expired";
    case PeerRejectReason::kNotYetValid:
      return "not_yet_valid";
    case PeerRejectReason::kNoSpiffeId:
      return "no_spiffe_id";
    case PeerRejectReason::kMultipleSpiffeIds:
      return "multiple_spiffe_ids";
    case PeerRejectReason::kWrongTrustDomain:
      return "wrong_trust_domain";
    case PeerRejectReason::kWeakKey:
      return "weak_key";
    case PeerRejectReason::kMalformed:
      return "malformed";
  }
  return "malformed";
}

PeerVerifyResult spiffeIdOf(X509* leaf) {
  int critical = -1;
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf, NID_subject_alt_name, &critical, nullptr)));
  if (!names) {
    drainOpensslErrors();
    if (critical == -1) {
      return PeerVerifyResult::reject(
          PeerRejectReason::kNoSpiffeId,
          cat("certificate ", subjectOf(leaf), " has no subjectAltName (no SPIFFE ID)"));
    }
    return PeerVerifyResult::reject(
        PeerRejectReason::kMalformed,
        cat("certificate ", subjectOf(leaf),
            critical == -2 ? " has several subjectAltName extensions"
                           : " has an unreadable subjectAltName extension"));
  }
  const ASN1_IA5STRING* uri = nullptr;
  int uris = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names.get(), i);
    if (n->type != GEN_URI) continue;
    ++uris;
    uri = n->d.uniformResourceIdentifier;
  }
  if (uris == 0) {
    return PeerVerifyResult::reject(
        PeerRejectReason::kNoSpiffeId,
        cat("certificate ", subjectOf(leaf), " has no URI SAN (no SPIFFE ID)"));
  }
  if (uris > 1) {
    return PeerVerifyResult::reject(PeerRejectReason::kMultipleSpiffeIds,
                                    cat("certificate ", subjectOf(leaf), " has ", uris,
                                        " URI SANs; an X.509-SVID has exactly one SPIFFE ID"));
  }
  const std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                              static_cast<size_t>(ASN1_STRING_length(uri)));
  if (!text.starts_with("spiffe:")) {
    return PeerVerifyResult::reject(
        PeerRejectReason::kNoSpiffeId,
        cat("certificate ", subjectOf(leaf), "'s URI SAN is not a SPIFFE ID"));
  }
  absl::StatusOr<SpiffeId> id = parseSpiffeId(text);
  if (!id.ok()) {
    return PeerVerifyResult::reject(
        PeerRejectReason::kMalformed,
        cat("certificate ", subjectOf(leaf), ": ", id.status().message()));
  }
  return {std::nullopt, "", std::move(*id)};
}

PeerVerifyResult verifyPeer(X509* leaf, STACK_OF(X509) * intermediates, const TrustBundle& bundle,
                            std::string_view trust_domain, absl::Time now) {
  if (leaf == nullptr) {
    return PeerVerifyResult::reject(PeerRejectReason::kMalformed, "no peer certificate");
  }
  ERR_clear_error();
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), bundle.store(), leaf, intermediates) != 1) {
    return PeerVerifyResult::reject(PeerRejectReason::kMalformed,
                                    withErrors("cannot set up the certificate verification"));
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, absl::ToTimeT(now));
  X509_VERIFY_PARAM_set_depth(param, kMaxVerifyDepth);
  // Level 2 (112-bit security): OpenSSL refuses RSA < 2048 and SHA-1 signatures on the
  // path itself; our own check below adds EC < P-256.
  X509_VERIFY_PARAM_set_auth_level(param, 2);
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    X509* at = X509_STORE_CTX_get_current_cert(ctx.get());
    drainOpensslErrors();
    return PeerVerifyResult::reject(
        reasonOfVerifyError(err),
        cat("certificate ", subjectOf(at != nullptr ? at : leaf), " (depth ", depth,
            "): ", X509_verify_cert_error_string(err)));
  }
  // Every certificate on the verified path, root included, must have a strong key.
  STACK_OF(X509)* path = X509_STORE_CTX_get0_chain(ctx.get());
  for (int i = 0; i < sk_X509_num(path); ++i) {
    X509* c = sk_X509_value(path, i);
    if (absl::Status s = checkKeyStrength(X509_get0_pubkey(c)); !s.ok()) {
      return PeerVerifyResult::reject(
          PeerRejectReason::kWeakKey,
          cat("certificate ", subjectOf(c), " (depth ", i, "): ", s.message()));
    }
  }
  if (X509_check_ca(leaf) != 0) {
    return PeerVerifyResult::reject(
        PeerRejectReason::kMalformed,
        cat("certificate ", subjectOf(leaf), " is a CA certificate, not an X.509-SVID leaf"));
  }
  PeerVerifyResult r = spiffeIdOf(leaf);
  if (!r.ok()) return r;
  if (r.id.trust_domain != trust_domain) {
    return PeerVerifyResult::reject(
        PeerRejectReason::kWrongTrustDomain,
        cat("certificate ", subjectOf(leaf), " has SPIFFE ID ", r.id.toString(),
            " of trust domain \"", r.id.trust_domain, "\"; expected \"", trust_domain, "\""));
  }
  return r;
}

PeerVerifyResult verifyPeer(const CertChain& chain, const TrustBundle& bundle,
                            std::string_view trust_domain, absl::Time now) {
  if (chain.empty()) {
    return PeerVerifyResult::reject(PeerRejectReason::kMalformed, "no peer certificate");
  }
  X509StackPtr rest(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) {
    sk_X509_push(rest.get(), upRef(chain[i].get()).release());
  }
  return verifyPeer(chain[0].get(), rest.get(), bundle, trust_domain, now);
}

}  // namespace meshd::identity
