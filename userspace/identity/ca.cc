#include "identity/ca.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/status.h"
#include "identity/text.h"
#include "spdlog/spdlog.h"

namespace meshd::identity {
namespace {

constexpr char kRootCertFile[] = "root-cert.pem";
constexpr char kRootKeyFile[] = "root-key.pem";

std::string withErrors(std::string what) {
  std::string errors = drainOpensslErrors();
  if (!errors.empty()) absl::StrAppend(&what, " (", errors, ")");
  return what;
}

absl::Status opensslError(std::string what) {
  return absl::InternalError(withErrors(std::move(what)));
}

bool setTime(ASN1_TIME* field, absl::Time t) {
  return ASN1_TIME_set(field, absl::ToTimeT(t)) != nullptr;
}

// A random positive 128-bit serial (RFC 5280: positive, at most 20 octets; unpredictable
// serials are what CAs use since the MD5 collision attacks).
absl::Status setRandomSerial(X509* x) {
  BignumPtr bn(BN_new());
  do {
    if (!bn || BN_rand(bn.get(), 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
      return opensslError("drawing a serial number");
    }
  } while (BN_is_zero(bn.get()));
  if (BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x)) == nullptr) {
    return opensslError("setting the serial number");
  }
  return absl::OkStatus();
}

absl::Status addExt(X509* x, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) return opensslError(cat("making extension ", OBJ_nid2sn(nid), "=", value));
  const int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return opensslError(cat("adding extension ", OBJ_nid2sn(nid)));
  return absl::OkStatus();
}

// subjectAltName with the one URI (and DNS names, for the CA's serving certificate), built
// directly rather than through the config-string parser.
absl::Status addSan(X509* x, std::string_view uri, const std::vector<std::string>& dns_names,
                    bool critical) {
  GeneralNamesPtr names(GENERAL_NAMES_new());
  if (!names) return opensslError("building the subjectAltName");
  auto push = [&](int type, std::string_view value) {
    GENERAL_NAME* name = GENERAL_NAME_new();
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    if (name == nullptr || ia5 == nullptr ||
        ASN1_STRING_set(ia5, value.data(), static_cast<int>(value.size())) != 1) {
      GENERAL_NAME_free(name);
      ASN1_IA5STRING_free(ia5);
      return false;
    }
    GENERAL_NAME_set0_value(name, type, ia5);
    sk_GENERAL_NAME_push(names.get(), name);
    return true;
  };
  if (!push(GEN_URI, uri)) return opensslError("building the subjectAltName");
  for (const std::string& dns : dns_names) {
    if (!push(GEN_DNS, dns)) return opensslError("building the subjectAltName");
  }
  if (X509_add1_ext_i2d(x, NID_subject_alt_name, names.get(), critical ? 1 : 0,
                        X509V3_ADD_DEFAULT) != 1) {
    return opensslError("adding the subjectAltName");
  }
  return absl::OkStatus();
}

const EVP_MD* digestFor(EVP_PKEY* key) {
  const int id = EVP_PKEY_get_base_id(key);
  return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
}

absl::Status signCert(X509* x, EVP_PKEY* key) {
  if (X509_sign(x, key, digestFor(key)) <= 0) return opensslError("signing the certificate");
  return absl::OkStatus();
}

bool isSelfSigned(X509* x) { return X509_check_issued(x, x) == X509_V_OK; }

absl::Status writeFileAtomically(const std::string& path, std::string_view data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return errnoError(errno, cat("creating ", tmp));
    if (::chmod(tmp.c_str(), mode) != 0) return errnoError(errno, cat("chmod ", tmp));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) return errnoError(errno, cat("writing ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return errnoError(errno, cat("renaming ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

// A self-signed EC P-256 root for `td`, carrying spiffe://<td> as its URI SAN (the
// trust domain's own SPIFFE ID; it lets a restart notice a changed --trust-domain).
absl::StatusOr<std::pair<X509Ptr, EvpPkeyPtr>> makeSelfSignedRoot(std::string_view td,
                                                                  absl::Time now) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return opensslError("generating the root's EC P-256 key");
  X509Ptr x(X509_new());
  if (!x || X509_set_version(x.get(), X509_VERSION_3) != 1) return opensslError("X509_new");
  RETURN_IF_ERROR(setRandomSerial(x.get()));
  X509_NAME* name = X509_get_subject_name(x.get());
  const std::string cn = cat("meshd self-signed root for ", td);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("meshd"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x.get(), name);
  if (!setTime(X509_getm_notBefore(x.get()), now - kClockSkewBackdate) ||
      !setTime(X509_getm_notAfter(x.get()), now + kSelfSignedRootLifetime)) {
    return opensslError("setting the root's validity");
  }
  X509_set_pubkey(x.get(), key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  RETURN_IF_ERROR(addExt(x.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE"));
  RETURN_IF_ERROR(addExt(x.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign"));
  RETURN_IF_ERROR(addExt(x.get(), &ctx, NID_subject_key_identifier, "hash"));
  RETURN_IF_ERROR(addSan(x.get(), cat(kSpiffePrefix, td), {}, false));
  RETURN_IF_ERROR(signCert(x.get(), key.get()));
  return std::make_pair(std::move(x), std::move(key));
}

// The trust domain a CA certificate names in a spiffe:// URI SAN, if any.
std::optional<std::string> caTrustDomain(X509* x) {
  PeerVerifyResult r = spiffeIdOf(x);
  if (!r.ok()) return std::nullopt;
  return r.id.trust_domain;
}

// Loads the persisted self-signed root from `dir`, or makes one and writes it there.
absl::StatusOr<std::pair<X509Ptr, EvpPkeyPtr>> loadOrMakeSelfSigned(const std::string& dir,
                                                                    std::string_view td,
                                                                    absl::Time now) {
  namespace fs = std::filesystem;
  const std::string cert_path = (fs::path(dir) / kRootCertFile).string();
  const std::string key_path = (fs::path(dir) / kRootKeyFile).string();
  std::error_code ec;
  const bool have_cert = fs::exists(cert_path, ec);
  const bool have_key = fs::exists(key_path, ec);
  if (have_cert != have_key) {
    return absl::FailedPreconditionError(
        cat(dir, " has ", have_cert ? kRootCertFile : kRootKeyFile, " but not ",
            have_cert ? kRootKeyFile : kRootCertFile,
            ": restore the missing file, or remove both to make a new root (every workload "
            "certificate issued under the old one stops being trusted)"));
  }
  if (have_cert) {
    ASSIGN_OR_RETURN(CertChain certs, loadCertChainFile(cert_path));
    ASSIGN_OR_RETURN(EvpPkeyPtr key, loadPrivateKeyFile(key_path));
    if (std::optional<std::string> root_td = caTrustDomain(certs[0].get());
        root_td.has_value() && *root_td != td) {
      return absl::FailedPreconditionError(
          cat(cert_path, " is the root of trust domain \"", *root_td, "\", not \"", td,
              "\": use --trust-domain ", *root_td, " or another --self-signed-dir"));
    }
    return std::make_pair(std::move(certs[0]), std::move(key));
  }
  fs::create_directories(dir, ec);
  if (ec) return absl::FailedPreconditionError(cat("creating ", dir, ": ", ec.message()));
  ::chmod(dir.c_str(), 0700);
  ASSIGN_OR_RETURN(auto root, makeSelfSignedRoot(td, now));
  // Key first: a crash in between leaves a key without a cert, which the check above
  // reports, rather than a cert whose key is lost.
  RETURN_IF_ERROR(writeFileAtomically(key_path, privateKeyToPem(root.second.get()), 0600));
  RETURN_IF_ERROR(writeFileAtomically(cert_path, toPem(root.first.get()), 0644));
  spdlog::info("CA: generated a new self-signed root in {} (trust domain {})", dir, td);
  return root;
}

// Verifies the issuing certificate (with its intermediates) against the bundle at `now`.
absl::Status checkIssuerChain(X509* issuer, const CertChain& chain_tail, const TrustBundle& bundle,
                              absl::Time now, std::string_view source) {
  X509StackPtr rest(sk_X509_new_null());
  for (size_t i = 1; i < chain_tail.size(); ++i)
    sk_X509_push(rest.get(), upRef(chain_tail[i].get()).release());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), bundle.store(), issuer, rest.get()) != 1) {
    return opensslError("setting up the verification of the issuing CA");
  }
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), absl::ToTimeT(now));
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    drainOpensslErrors();
    return absl::InvalidArgumentError(
        cat(source, ": the issuing CA ", subjectOf(issuer),
            " does not verify against the roots: ", X509_verify_cert_error_string(err)));
  }
  return absl::OkStatus();
}

}  // namespace

CertificateAuthority::CertificateAuthority(CaOptions options, TrustBundle bundle, X509Ptr issuer,
                                           EvpPkeyPtr key, CertChain chain_tail, bool self_signed)
    : options_(std::move(options)),
      bundle_(std::move(bundle)),
      issuer_(std::move(issuer)),
      key_(std::move(key)),
      chain_tail_(std::move(chain_tail)),
      self_signed_(self_signed) {}

absl::StatusOr<CertificateAuthorityPtr> CertificateAuthority::create(CaOptions o) {
  RETURN_IF_ERROR(validateTrustDomain(o.trust_domain));
  if (o.default_ttl <= absl::ZeroDuration() || o.max_ttl < o.default_ttl) {
    return absl::InvalidArgumentError(cat("workload TTL ", absl::FormatDuration(o.default_ttl),
                                          " must be positive and at most the maximum ",
                                          absl::FormatDuration(o.max_ttl)));
  }
  const bool byo = !o.root_cert_file.empty() || !o.key_file.empty() || !o.cert_chain_file.empty();
  const bool standalone = !o.self_signed_dir.empty();
  if (byo == standalone) {
    return absl::InvalidArgumentError(
        "configure exactly one CA: bring your own (root cert + key [+ cert chain]) or a "
        "self-signed directory");
  }
  const absl::Time now = o.clock();
  ERR_clear_error();
  if (standalone) {
    ASSIGN_OR_RETURN(auto root, loadOrMakeSelfSigned(o.self_signed_dir, o.trust_domain, now));
    if (X509_check_private_key(root.first.get(), root.second.get()) != 1) {
      return absl::InvalidArgumentError(withErrors(
          cat(o.self_signed_dir, ": ", kRootKeyFile, " is not the key of ", kRootCertFile)));
    }
    CertChain roots;
    roots.push_back(upRef(root.first.get()));
    ASSIGN_OR_RETURN(TrustBundle bundle,
                     TrustBundle::fromCerts(std::move(roots), o.self_signed_dir));
    if (notAfter(root.first.get()) <= now) {
      return absl::FailedPreconditionError(
          cat(o.self_signed_dir,
              ": the self-signed root has expired; remove the directory's "
              "files to make a new one"));
    }
    return CertificateAuthorityPtr(new CertificateAuthority(
        std::move(o), std::move(bundle), std::move(root.first), std::move(root.second), {}, true));
  }
  if (o.root_cert_file.empty() || o.key_file.empty()) {
    return absl::InvalidArgumentError(
        "bring-your-own CA needs the root certificate(s) and the issuing CA's key");
  }
  ASSIGN_OR_RETURN(TrustBundle bundle, TrustBundle::fromFile(o.root_cert_file));
  ASSIGN_OR_RETURN(EvpPkeyPtr key, loadPrivateKeyFile(o.key_file));
  if (absl::Status s = checkKeyStrength(key.get()); !s.ok()) {
    return absl::InvalidArgumentError(cat(o.key_file, ": ", s.message()));
  }
  X509Ptr issuer;
  CertChain tail;
  std::string issuer_source;
  if (!o.cert_chain_file.empty()) {
    ASSIGN_OR_RETURN(CertChain chain, loadCertChainFile(o.cert_chain_file));
    for (X509Ptr& c : chain) {
      if (!isSelfSigned(c.get())) tail.push_back(std::move(c));  // roots go in the bundle
    }
    if (tail.empty()) {
      return absl::InvalidArgumentError(
          cat(o.cert_chain_file,
              ": no intermediate (only self-signed certificates); leave "
              "the chain out to issue from the root"));
    }
    issuer = upRef(tail[0].get());
    issuer_source = o.cert_chain_file;
    if (X509_check_private_key(issuer.get(), key.get()) != 1) {
      drainOpensslErrors();
      return absl::InvalidArgumentError(cat(o.key_file, " is not the key of ",
                                            subjectOf(issuer.get()), ", the first certificate of ",
                                            o.cert_chain_file));
    }
  } else {
    for (const X509Ptr& r : bundle.roots()) {
      if (X509_check_private_key(r.get(), key.get()) == 1) {
        issuer = upRef(r.get());
        break;
      }
    }
    drainOpensslErrors();
    issuer_source = o.root_cert_file;
    if (!issuer) {
      return absl::InvalidArgumentError(
          cat(o.key_file, " is the key of none of the roots in ", o.root_cert_file,
              " (an intermediate's key needs --cert-chain with that intermediate first)"));
    }
  }
  if (X509_check_ca(issuer.get()) == 0 ||
      (X509_get_extension_flags(issuer.get()) & EXFLAG_KUSAGE &&
       !(X509_get_key_usage(issuer.get()) & KU_KEY_CERT_SIGN))) {
    return absl::InvalidArgumentError(cat(issuer_source, ": ", subjectOf(issuer.get()),
                                          " is not a CA that may sign certificates"));
  }
  RETURN_IF_ERROR(checkIssuerChain(issuer.get(), tail, bundle, now, issuer_source));
  return CertificateAuthorityPtr(new CertificateAuthority(
      std::move(o), std::move(bundle), std::move(issuer), std::move(key), std::move(tail), false));
}

std::string CertificateAuthority::describe() const {
  if (self_signed_) {
    return cat("SELF-SIGNED root ", subjectOf(issuer_.get()), " (", options_.self_signed_dir,
               "; standalone mode: peers must be given this root, valid until ",
               absl::FormatTime(notAfter(issuer_.get())), ")");
  }
  return cat("issuer ", subjectOf(issuer_.get()),
             chain_tail_.empty() ? " (a root)" : " (intermediate)", ", ", bundle_.roots().size(),
             " root(s) in ", options_.root_cert_file, ", issuer valid until ",
             absl::FormatTime(notAfter(issuer_.get())));
}

absl::StatusOr<IssuedCertificate> CertificateAuthority::sign(std::string_view csr_pem,
                                                             const SpiffeId& identity,
                                                             absl::Duration ttl,
                                                             SignRefusal* why) const {
  if (ttl <= absl::ZeroDuration()) ttl = options_.default_ttl;
  return issue(csr_pem, identity, {}, std::min(ttl, options_.max_ttl), why);
}

absl::StatusOr<IssuedCertificate> CertificateAuthority::signServing(
    std::string_view csr_pem, const SpiffeId& identity, const std::vector<std::string>& dns_names,
    absl::Duration ttl) const {
  return issue(csr_pem, identity, dns_names, ttl, nullptr);
}

absl::StatusOr<IssuedCertificate> CertificateAuthority::issue(
    std::string_view csr_pem, const SpiffeId& identity, const std::vector<std::string>& dns_names,
    absl::Duration ttl, SignRefusal* why) const {
  auto refuse = [why](SignRefusal r, absl::Status s) {
    if (why != nullptr) *why = r;
    return s;
  };
  if (csr_pem.size() > kMaxCsrBytes) {
    return refuse(SignRefusal::kBadCsr,
                  absl::InvalidArgumentError(cat("CSR of ", csr_pem.size(), " bytes; at most ",
                                                 kMaxCsrBytes, " accepted")));
  }
  if (identity.trust_domain != options_.trust_domain) {
    return refuse(SignRefusal::kInternal,
                  absl::InvalidArgumentError(cat("identity ", identity.toString(),
                                                 " is not of this CA's trust domain ",
                                                 options_.trust_domain)));
  }
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    return refuse(SignRefusal::kBadCsr,
                  absl::InvalidArgumentError(withErrors("CSR is not a PEM CERTIFICATE REQUEST")));
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (pub == nullptr || X509_REQ_verify(req.get(), pub) != 1) {
    return refuse(SignRefusal::kBadCsr,
                  absl::InvalidArgumentError(withErrors(
                      "CSR signature does not verify with its own key (tampered or corrupt)")));
  }
  if (absl::Status s = checkKeyStrength(pub); !s.ok()) {
    return refuse(SignRefusal::kWeakKey, absl::InvalidArgumentError(cat("CSR: ", s.message())));
  }

  const absl::Time now = options_.clock();
  const absl::Time not_before = std::max(now - kClockSkewBackdate, notBefore(issuer_.get()));
  const absl::Time not_after = std::min(now + ttl, notAfter(issuer_.get()));
  if (not_after <= now) {
    return refuse(SignRefusal::kInternal,
                  absl::FailedPreconditionError(cat("the issuing CA ", subjectOf(issuer_.get()),
                                                    " has expired: replace it")));
  }

  X509Ptr x(X509_new());
  if (!x || X509_set_version(x.get(), X509_VERSION_3) != 1) {
    return refuse(SignRefusal::kInternal, opensslError("X509_new"));
  }
  auto build = [&]() -> absl::Status {
    RETURN_IF_ERROR(setRandomSerial(x.get()));
    // Empty subject: the identity is the SAN alone (critical, as RFC 5280 then requires).
    if (X509_set_issuer_name(x.get(), X509_get_subject_name(issuer_.get())) != 1 ||
        X509_set_pubkey(x.get(), pub) != 1 || !setTime(X509_getm_notBefore(x.get()), not_before) ||
        !setTime(X509_getm_notAfter(x.get()), not_after)) {
      return opensslError("filling in the certificate");
    }
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer_.get(), x.get(), nullptr, nullptr, 0);
    RETURN_IF_ERROR(addExt(x.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
    RETURN_IF_ERROR(
        addExt(x.get(), &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment"));
    RETURN_IF_ERROR(addExt(x.get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth"));
    RETURN_IF_ERROR(addExt(x.get(), &ctx, NID_subject_key_identifier, "hash"));
    RETURN_IF_ERROR(addExt(x.get(), &ctx, NID_authority_key_identifier, "keyid:always"));
    RETURN_IF_ERROR(addSan(x.get(), identity.toString(), dns_names, true));
    return signCert(x.get(), key_.get());
  };
  if (absl::Status s = build(); !s.ok()) return refuse(SignRefusal::kInternal, s);

  IssuedCertificate out;
  out.cert_chain_pem = toPem(x.get()) + toPem(chain_tail_);
  out.trust_bundle_pem = bundle_.pem();
  out.not_before = notBefore(x.get());
  out.not_after = notAfter(x.get());
  return out;
}

absl::StatusOr<KeyAndCsr> makeKeyAndCsr(const SpiffeId& id) {
  ERR_clear_error();
  KeyAndCsr out;
  out.key.reset(EVP_EC_gen("P-256"));
  if (!out.key) return opensslError("generating an EC P-256 key");
  X509ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), out.key.get()) != 1) {
    return opensslError("making the CSR");
  }
  GeneralNamesPtr names(GENERAL_NAMES_new());
  GENERAL_NAME* name = GENERAL_NAME_new();
  ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
  const std::string uri = id.toString();
  ASN1_STRING_set(ia5, uri.data(), static_cast<int>(uri.size()));
  GENERAL_NAME_set0_value(name, GEN_URI, ia5);
  sk_GENERAL_NAME_push(names.get(), name);
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  X509V3_add1_i2d(&exts, NID_subject_alt_name, names.get(), 1, X509V3_ADD_DEFAULT);
  const int added = X509_REQ_add_extensions(req.get(), exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  if (added != 1 || X509_REQ_sign(req.get(), out.key.get(), EVP_sha256()) <= 0) {
    return opensslError("signing the CSR");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  out.csr_pem.assign(data, static_cast<size_t>(n));
  out.key_pem = privateKeyToPem(out.key.get());
  return out;
}

absl::Time renewAt(absl::Time not_before, absl::Time not_after, double jitter) {
  jitter = std::clamp(jitter, 0.0, 1.0);
  const absl::Duration lifetime = not_after - not_before;
  return not_before + lifetime * (0.5 + 0.1 * jitter);
}

absl::Time renewAt(const X509* cert, double jitter) {
  return renewAt(notBefore(cert), notAfter(cert), jitter);
}

double renewJitter() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(gen);
}

absl::StatusOr<std::shared_ptr<const Svid>> makeSvid(const IssuedCertificate& issued,
                                                     EvpPkeyPtr key) {
  ASSIGN_OR_RETURN(CertChain chain, parseCertChainPem(issued.cert_chain_pem, "issued chain"));
  if (X509_check_private_key(chain[0].get(), key.get()) != 1) {
    drainOpensslErrors();
    return absl::InvalidArgumentError("the issued certificate is not for this key");
  }
  PeerVerifyResult id = spiffeIdOf(chain[0].get());
  if (!id.ok()) return absl::InvalidArgumentError(id.detail);
  auto svid = std::make_shared<Svid>();
  svid->not_before = notBefore(chain[0].get());
  svid->not_after = notAfter(chain[0].get());
  svid->chain = std::move(chain);
  svid->key = std::move(key);
  svid->id = std::move(id.id);
  return std::shared_ptr<const Svid>(std::move(svid));
}

}  // namespace meshd::identity
