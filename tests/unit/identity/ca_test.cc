// The certificate authority (userspace/identity/ca.h) with the test PKI as a bring-your-own
// CA and with a generated self-signed root in a temporary directory; a fake clock fixes
// "now", so lifetimes are asserted exactly.
#include "identity/ca.h"

#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::identity {
namespace {

using ::testing::HasSubstr;

const std::string kDir = MESHD_TEST_CERTS_DIR;
constexpr char kTd[] = "cluster.local";
std::string path(const std::string& name) { return kDir + "/" + name; }

// A fixed instant inside the test PKI's validity (made at build time, 10 years), an hour on
// so that notBefore is not bounded by the issuer's own notBefore.
const absl::Time kNow = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now())) + absl::Hours(1);

CaOptions byoIntermediate() {
  CaOptions o;
  o.trust_domain = kTd;
  o.root_cert_file = path("bundle.pem");
  o.key_file = path("intermediate.key");
  o.cert_chain_file = path("intermediate.crt");
  o.clock = [] { return kNow; };
  return o;
}

CertificateAuthorityPtr makeCa(CaOptions o) {
  absl::StatusOr<CertificateAuthorityPtr> ca = CertificateAuthority::create(std::move(o));
  EXPECT_TRUE(ca.ok()) << ca.status();
  return ca.ok() ? std::move(*ca) : nullptr;
}

SpiffeId workload(const char* ns, const char* sa) { return *makeWorkloadId(kTd, ns, sa); }

// A CSR signed by `key` (for keys the workload helper would not make).
std::string csrFor(EVP_PKEY* key) {
  X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key);
  X509_REQ_sign(req.get(), key, EVP_sha256());
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::vector<std::string> uriSans(X509* x) {
  std::vector<std::string> out;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names.get(), i);
    if (n->type != GEN_URI) continue;
    const ASN1_IA5STRING* s = n->d.uniformResourceIdentifier;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
  }
  return out;
}

TEST(Ca, IssuesAnSvidFromTheIntermediate) {
  CertificateAuthorityPtr ca = makeCa(byoIntermediate());
  ASSERT_TRUE(ca);
  EXPECT_FALSE(ca->selfSigned());
  EXPECT_THAT(ca->describe(), HasSubstr("(intermediate)"));
  // The CSR asks for another identity (and carries its own SAN): the CA ignores that.
  absl::StatusOr<KeyAndCsr> kc = makeKeyAndCsr(workload("evil", "admin"));
  ASSERT_TRUE(kc.ok()) << kc.status();
  absl::StatusOr<IssuedCertificate> issued =
      ca->sign(kc->csr_pem, workload("default", "web"), absl::ZeroDuration());
  ASSERT_TRUE(issued.ok()) << issued.status();

  absl::StatusOr<CertChain> chain = parseCertChainPem(issued->cert_chain_pem, "issued");
  ASSERT_TRUE(chain.ok());
  ASSERT_EQ(chain->size(), 2u);  // leaf + intermediate, no root
  X509* leaf = chain->at(0).get();
  EXPECT_EQ(X509_cmp(chain->at(1).get(), ca->issuer()), 0);
  EXPECT_EQ(issued->trust_bundle_pem, ca->trustBundle().pem());

  absl::StatusOr<TrustBundle> bundle = TrustBundle::fromPem(issued->trust_bundle_pem, "bundle");
  ASSERT_TRUE(bundle.ok());
  EXPECT_EQ(bundle->roots().size(), 2u);
  PeerVerifyResult r = verifyPeer(*chain, *bundle, kTd, kNow);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.id.toString(), "spiffe://cluster.local/ns/default/sa/web");
  EXPECT_EQ(uriSans(leaf), std::vector<std::string>{"spiffe://cluster.local/ns/default/sa/web"});

  // Lifetime: default 24 h from now, backdated by the skew allowance.
  EXPECT_EQ(notAfter(leaf), kNow + absl::Hours(24));
  EXPECT_EQ(notBefore(leaf), kNow - kClockSkewBackdate);
  EXPECT_EQ(issued->not_after, kNow + absl::Hours(24));
  // Extensions.
  EXPECT_EQ(X509_check_ca(leaf), 0);
  EXPECT_EQ(X509_get_key_usage(leaf),
            static_cast<uint32_t>(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT));
  EXPECT_EQ(X509_get_extended_key_usage(leaf),
            static_cast<uint32_t>(XKU_SSL_SERVER | XKU_SSL_CLIENT));
  int critical = -1;
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf, NID_subject_alt_name, &critical, nullptr)));
  EXPECT_EQ(critical, 1);  // the subject is empty
  EXPECT_EQ(X509_NAME_entry_count(X509_get_subject_name(leaf)), 0);
  EXPECT_EQ(X509_check_private_key(leaf, kc->key.get()), 1);
}

TEST(Ca, SerialsAreRandom128Bit) {
  CertificateAuthorityPtr ca = makeCa(byoIntermediate());
  ASSERT_TRUE(ca);
  absl::StatusOr<KeyAndCsr> kc = makeKeyAndCsr(workload("default", "web"));
  ASSERT_TRUE(kc.ok());
  std::set<std::string> serials;
  for (int i = 0; i < 16; ++i) {
    absl::StatusOr<IssuedCertificate> issued =
        ca->sign(kc->csr_pem, workload("default", "web"), absl::Hours(1));
    ASSERT_TRUE(issued.ok());
    CertChain chain = *parseCertChainPem(issued->cert_chain_pem, "x");
    BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(chain[0].get()), nullptr));
    EXPECT_LE(BN_num_bits(bn.get()), 128);
    EXPECT_FALSE(BN_is_negative(bn.get()));
    EXPECT_FALSE(BN_is_zero(bn.get()));
    char* hex = BN_bn2hex(bn.get());
    serials.insert(hex);
    OPENSSL_free(hex);
  }
  EXPECT_EQ(serials.size(), 16u);
}

TEST(Ca, TtlDefaultCapAndIssuerBound) {
  CaOptions o = byoIntermediate();
  o.default_ttl = absl::Hours(2);
  o.max_ttl = absl::Hours(48);
  CertificateAuthorityPtr ca = makeCa(o);
  ASSERT_TRUE(ca);
  absl::StatusOr<KeyAndCsr> kc = makeKeyAndCsr(workload("default", "web"));
  ASSERT_TRUE(kc.ok());
  const SpiffeId id = workload("default", "web");
  EXPECT_EQ(ca->sign(kc->csr_pem, id, absl::ZeroDuration())->not_after, kNow + absl::Hours(2));
  EXPECT_EQ(ca->sign(kc->csr_pem, id, absl::Minutes(30))->not_after, kNow + absl::Minutes(30));
  EXPECT_EQ(ca->sign(kc->csr_pem, id, absl::Hours(24 * 30))->not_after, kNow + absl::Hours(48));

  // An hour before the intermediate expires, a 24 h request ends with the intermediate.
  CertChain inter = *loadCertChainFile(path("intermediate.crt"));
  const absl::Time issuer_end = notAfter(inter[0].get());
  CertChain root = *loadCertChainFile(path("root.crt"));
  ASSERT_LE(issuer_end - absl::Hours(1), notAfter(root[0].get()));
  CaOptions late = byoIntermediate();
  late.clock = [issuer_end] { return issuer_end - absl::Hours(1); };
  CertificateAuthorityPtr late_ca = makeCa(late);
  ASSERT_TRUE(late_ca);
  EXPECT_EQ(late_ca->sign(kc->csr_pem, id, absl::Hours(24))->not_after, issuer_end);

  // A minute after the intermediate was made, notBefore is not set before the issuer's.
  const absl::Time issuer_start = notBefore(inter[0].get());
  CaOptions early = byoIntermediate();
  early.clock = [issuer_start] { return issuer_start + absl::Minutes(1); };
  CertificateAuthorityPtr early_ca = makeCa(early);
  ASSERT_TRUE(early_ca);
  EXPECT_EQ(early_ca->sign(kc->csr_pem, id, absl::Hours(1))->not_before, issuer_start);
}

TEST(Ca, RefusesBadCsrsAndWeakKeys) {
  CertificateAuthorityPtr ca = makeCa(byoIntermediate());
  ASSERT_TRUE(ca);
  const SpiffeId id = workload("default", "web");
  SignRefusal why{};
  absl::StatusOr<IssuedCertificate> r = ca->sign("not a csr", id, absl::Hours(1), &why);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(why, SignRefusal::kBadCsr);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("CSR is not a PEM CERTIFICATE REQUEST"));

  // A CSR whose signature does not match (the key swapped after signing).
  EvpPkeyPtr a(EVP_EC_gen("P-256"));
  EvpPkeyPtr b(EVP_EC_gen("P-256"));
  X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), a.get());
  X509_REQ_sign(req.get(), a.get(), EVP_sha256());
  X509_REQ_set_pubkey(req.get(), b.get());
  BioPtr pem(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(pem.get(), req.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(pem.get(), &data);
  r = ca->sign(std::string(data, static_cast<size_t>(n)), id, absl::Hours(1), &why);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(why, SignRefusal::kBadCsr);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("signature does not verify"));

  absl::StatusOr<EvpPkeyPtr> rsa1024 = loadPrivateKeyFile(path("rsa1024.key"));
  ASSERT_TRUE(rsa1024.ok());
  r = ca->sign(csrFor(rsa1024->get()), id, absl::Hours(1), &why);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(why, SignRefusal::kWeakKey);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("RSA with 1024 bits"));
  EvpPkeyPtr p224(EVP_EC_gen("P-224"));
  r = ca->sign(csrFor(p224.get()), id, absl::Hours(1), &why);
  EXPECT_EQ(why, SignRefusal::kWeakKey);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("EC with 224 bits"));
  // RSA 2048 is fine.
  EvpPkeyPtr rsa2048(EVP_RSA_gen(2048));
  EXPECT_TRUE(ca->sign(csrFor(rsa2048.get()), id, absl::Hours(1)).ok());

  EXPECT_FALSE(ca->sign(std::string(kMaxCsrBytes + 1, 'x'), id, absl::Hours(1), &why).ok());
  EXPECT_EQ(why, SignRefusal::kBadCsr);
}

TEST(Ca, IssuesFromARootDirectly) {
  CaOptions o;
  o.trust_domain = kTd;
  o.root_cert_file = path("bundle.pem");
  o.key_file = path("root2.key");  // the second root of the bundle issues
  o.clock = [] { return kNow; };
  CertificateAuthorityPtr ca = makeCa(o);
  ASSERT_TRUE(ca);
  EXPECT_THAT(ca->describe(), HasSubstr("(a root)"));
  absl::StatusOr<KeyAndCsr> kc = makeKeyAndCsr(workload("default", "web"));
  absl::StatusOr<IssuedCertificate> issued =
      ca->sign(kc->csr_pem, workload("default", "web"), absl::Hours(1));
  ASSERT_TRUE(issued.ok());
  CertChain chain = *parseCertChainPem(issued->cert_chain_pem, "x");
  EXPECT_EQ(chain.size(), 1u);
  EXPECT_TRUE(verifyPeer(chain, ca->trustBundle(), kTd, kNow).ok());
  // Only root2 is needed to trust it.
  absl::StatusOr<TrustBundle> root2 = TrustBundle::fromFile(path("root2.crt"));
  EXPECT_TRUE(verifyPeer(chain, *root2, kTd, kNow).ok());
}

TEST(Ca, ConfigurationErrors) {
  struct Case {
    std::string name;
    CaOptions options;
    std::string message;
  };
  std::vector<Case> cases;
  {
    CaOptions o = byoIntermediate();
    o.key_file = path("client.key");
    cases.push_back({"wrong key", o, "client.key is not the key of"});
  }
  {
    CaOptions o = byoIntermediate();
    o.cert_chain_file.clear();
    cases.push_back({"intermediate key without chain", o, "is the key of none of the roots"});
  }
  {
    CaOptions o = byoIntermediate();
    o.root_cert_file = path("other-root.crt");
    cases.push_back({"chain to another root", o, "does not verify against the roots"});
  }
  {
    CaOptions o = byoIntermediate();
    o.cert_chain_file = path("client.crt");
    o.key_file = path("client.key");
    cases.push_back({"leaf as issuer", o, "is not a CA that may sign"});
  }
  {
    CaOptions o = byoIntermediate();
    o.self_signed_dir = "/tmp/x";
    cases.push_back({"both modes", o, "configure exactly one CA"});
  }
  {
    CaOptions o;
    cases.push_back({"no mode", o, "configure exactly one CA"});
  }
  {
    CaOptions o = byoIntermediate();
    o.trust_domain = "Bad";
    cases.push_back({"bad trust domain", o, "has character 'B'"});
  }
  {
    CaOptions o = byoIntermediate();
    o.key_file = path("nope.key");
    cases.push_back({"missing key", o, "nope.key"});
  }
  {
    CaOptions o = byoIntermediate();
    o.default_ttl = absl::Hours(24 * 8);
    cases.push_back({"ttl above max", o, "must be positive and at most the maximum"});
  }
  for (Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<CertificateAuthorityPtr> ca = CertificateAuthority::create(std::move(c.options));
    ASSERT_FALSE(ca.ok());
    EXPECT_THAT(std::string(ca.status().message()), HasSubstr(c.message));
  }
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "meshd-ca-test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Ca, SelfSignedRootPersists) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/ca";
  CaOptions o;
  o.trust_domain = kTd;
  o.self_signed_dir = dir;
  o.clock = [] { return kNow; };
  CertificateAuthorityPtr first = makeCa(o);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->selfSigned());
  EXPECT_THAT(first->describe(), HasSubstr("SELF-SIGNED"));
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/root-key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EVP_PKEY* root_key = X509_get0_pubkey(first->issuer());
  EXPECT_EQ(EVP_PKEY_get_base_id(root_key), EVP_PKEY_EC);
  EXPECT_EQ(EVP_PKEY_get_bits(root_key), 256);

  // A restart keeps the root: certificates issued before still verify.
  absl::StatusOr<KeyAndCsr> kc = makeKeyAndCsr(workload("default", "web"));
  absl::StatusOr<IssuedCertificate> issued =
      first->sign(kc->csr_pem, workload("default", "web"), absl::ZeroDuration());
  ASSERT_TRUE(issued.ok());
  CertificateAuthorityPtr second = makeCa(o);
  ASSERT_TRUE(second);
  EXPECT_EQ(X509_cmp(first->issuer(), second->issuer()), 0);
  CertChain chain = *parseCertChainPem(issued->cert_chain_pem, "x");
  EXPECT_EQ(chain.size(), 1u);
  PeerVerifyResult r = verifyPeer(chain, second->trustBundle(), kTd, kNow);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(notAfter(chain[0].get()), kNow + absl::Hours(24));

  // Another trust domain on the same directory is refused.
  CaOptions other = o;
  other.trust_domain = "other.domain";
  absl::StatusOr<CertificateAuthorityPtr> bad = CertificateAuthority::create(other);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("root of trust domain \"cluster.local\""));

  // Half a pair is refused (never silently replaced).
  std::filesystem::remove(dir + "/root-cert.pem");
  bad = CertificateAuthority::create(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("has root-key.pem but not root-cert.pem"));
}

TEST(Rotation, RenewAtHalfLifeWithJitter) {
  const absl::Time nb = kNow;
  const absl::Time na = kNow + absl::Hours(24);
  EXPECT_EQ(renewAt(nb, na, 0.0), kNow + absl::Hours(12));
  EXPECT_EQ(renewAt(nb, na, 0.5), kNow + absl::Hours(12) + absl::Minutes(72));
  EXPECT_LT(renewAt(nb, na, 0.999999), kNow + absl::Hours(12) + absl::Minutes(144));
  EXPECT_EQ(renewAt(nb, na, 7.0), kNow + absl::Hours(12) + absl::Minutes(144));  // clamped
  for (int i = 0; i < 100; ++i) {
    const double j = renewJitter();
    EXPECT_GE(j, 0.0);
    EXPECT_LT(j, 1.0);
  }
}

TEST(Rotation, ReadersKeepTheCertificateTheyHold) {
  CertificateAuthorityPtr ca = makeCa(byoIntermediate());
  ASSERT_TRUE(ca);
  RotatingCertificate slot;
  EXPECT_EQ(slot.current(), nullptr);
  auto issue = [&]() {
    absl::StatusOr<KeyAndCsr> kc = makeKeyAndCsr(workload("default", "web"));
    absl::StatusOr<IssuedCertificate> issued =
        ca->sign(kc->csr_pem, workload("default", "web"), absl::ZeroDuration());
    return *makeSvid(*issued, std::move(kc->key));
  };
  slot.replace(issue());
  std::shared_ptr<const Svid> held = slot.current();  // e.g. an established connection's
  ASSERT_TRUE(held);
  EXPECT_EQ(held->id.toString(), "spiffe://cluster.local/ns/default/sa/web");
  slot.replace(issue());
  std::shared_ptr<const Svid> now = slot.current();
  EXPECT_NE(now, held);
  EXPECT_NE(X509_cmp(now->chain[0].get(), held->chain[0].get()), 0);
  EXPECT_EQ(X509_check_private_key(held->chain[0].get(), held->key.get()), 1);  // still intact

  // makeSvid refuses a certificate for another key.
  absl::StatusOr<KeyAndCsr> kc = makeKeyAndCsr(workload("default", "web"));
  absl::StatusOr<IssuedCertificate> issued =
      ca->sign(kc->csr_pem, workload("default", "web"), absl::ZeroDuration());
  EXPECT_FALSE(makeSvid(*issued, EvpPkeyPtr(EVP_EC_gen("P-256"))).ok());
}

}  // namespace
}  // namespace meshd::identity
