// X.509-SVID loading and verification (userspace/identity/x509.h) with the committed test
// PKI (scripts/gen-test-certs.sh, built into MESHD_TEST_CERTS_DIR): every certificate of it
// is verified and the good ones pass, the bad ones fail with their reason.
#include "identity/x509.h"

#include <openssl/ec.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::identity {
namespace {

using ::testing::HasSubstr;

const std::string kDir = MESHD_TEST_CERTS_DIR;
constexpr char kTd[] = "cluster.local";

std::string path(const std::string& name) { return kDir + "/" + name; }

CertChain chain(const std::string& name) {
  absl::StatusOr<CertChain> c = loadCertChainFile(path(name));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : CertChain{};
}

TrustBundle bundle(const std::string& name = "bundle.pem") {
  absl::StatusOr<TrustBundle> b = TrustBundle::fromFile(path(name));
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

// Mid-2026: inside the 10-year validity of the good certificates (made at build time).
absl::Time now() { return absl::Now(); }

TEST(X509Load, ChainsKeysAndBundles) {
  EXPECT_EQ(chain("client.chain.pem").size(), 2u);
  EXPECT_EQ(chain("client.crt").size(), 1u);
  EXPECT_EQ(bundle().roots().size(), 2u);
  absl::StatusOr<EvpPkeyPtr> key = loadPrivateKeyFile(path("client.key"));
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_TRUE(checkKeyStrength(key->get()).ok());

  // PEM round trip.
  CertChain c = chain("client.chain.pem");
  absl::StatusOr<CertChain> again = parseCertChainPem(toPem(c), "again");
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 2u);
  EXPECT_EQ(X509_cmp(again->at(0).get(), c[0].get()), 0);
  absl::StatusOr<EvpPkeyPtr> key2 = parsePrivateKeyPem(privateKeyToPem(key->get()), "k");
  ASSERT_TRUE(key2.ok());
  EXPECT_EQ(EVP_PKEY_eq(key->get(), key2->get()), 1);
}

TEST(X509Load, ErrorsNameTheSource) {
  absl::StatusOr<CertChain> none = parseCertChainPem("hello", "x.pem");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("x.pem: no PEM CERTIFICATE block"));

  const std::string broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  absl::StatusOr<CertChain> bad = parseCertChainPem(toPem(chain("client.crt")) + broken, "y.pem");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("y.pem: certificate 2 is not a valid PEM X.509 certificate"));

  absl::StatusOr<EvpPkeyPtr> key = parsePrivateKeyPem("nope", "k.pem");
  ASSERT_FALSE(key.ok());
  EXPECT_THAT(std::string(key.status().message()), HasSubstr("k.pem: not an unencrypted PEM"));

  absl::StatusOr<CertChain> missing = loadCertChainFile(path("does-not-exist.pem"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does-not-exist.pem"));

  absl::StatusOr<TrustBundle> leaf_as_root = TrustBundle::fromFile(path("client.crt"));
  ASSERT_FALSE(leaf_as_root.ok());
  EXPECT_THAT(std::string(leaf_as_root.status().message()), HasSubstr("is not a CA certificate"));
}

TEST(X509Verify, GoodCertificatesPass) {
  const TrustBundle b = bundle();
  struct Case {
    const char* file;
    const char* id;
  };
  for (const Case& c :
       {Case{"client.chain.pem", "spiffe://cluster.local/ns/default/sa/client"},
        Case{"server.chain.pem", "spiffe://cluster.local/ns/default/sa/server"},
        Case{"server-root2.chain.pem", "spiffe://cluster.local/ns/default/sa/server"},
        Case{"node-n1.chain.pem", "spiffe://cluster.local/meshd/node/n1"},
        Case{"node-n2.chain.pem", "spiffe://cluster.local/meshd/node/n2"}}) {
    SCOPED_TRACE(c.file);
    PeerVerifyResult r = verifyPeer(chain(c.file), b, kTd, now());
    ASSERT_TRUE(r.ok()) << reasonName(*r.rejected) << ": " << r.detail;
    EXPECT_EQ(r.id.toString(), c.id);
  }
}

TEST(X509Verify, RootRotation) {
  // Old bundle (root only): root2's certificates are not trusted yet; the rotation bundle
  // (root + root2) trusts both; the new bundle (root2 only) no longer trusts root's.
  const TrustBundle old_bundle = bundle("root.crt");
  const TrustBundle new_bundle = bundle("root2.crt");
  const TrustBundle both = bundle("bundle.pem");
  EXPECT_EQ(verifyPeer(chain("server-root2.chain.pem"), old_bundle, kTd, now()).rejected,
            PeerRejectReason::kUntrustedCa);
  EXPECT_TRUE(verifyPeer(chain("server-root2.chain.pem"), both, kTd, now()).ok());
  EXPECT_TRUE(verifyPeer(chain("client.chain.pem"), both, kTd, now()).ok());
  EXPECT_TRUE(verifyPeer(chain("client.chain.pem"), old_bundle, kTd, now()).ok());
  EXPECT_EQ(verifyPeer(chain("client.chain.pem"), new_bundle, kTd, now()).rejected,
            PeerRejectReason::kUntrustedCa);
}

TEST(X509Verify, BadCertificatesFailWithTheirReason) {
  const TrustBundle b = bundle();
  struct Case {
    const char* file;
    PeerRejectReason reason;
    const char* detail;
  };
  const Case cases[] = {
      {"other-ca.chain.pem", PeerRejectReason::kUntrustedCa, "unable to get local issuer"},
      {"client.crt", PeerRejectReason::kUntrustedCa, "depth 0"},  // intermediate not sent
      {"other-root.crt", PeerRejectReason::kUntrustedCa, "self-signed"},
      {"expired.chain.pem", PeerRejectReason::kExpired, "certificate has expired"},
      {"not-yet-valid.chain.pem", PeerRejectReason::kNotYetValid, "not yet valid"},
      {"wrong-td.chain.pem", PeerRejectReason::kWrongTrustDomain,
       "spiffe://evil.example/ns/default/sa/client of trust domain \"evil.example\"; expected "
       "\"cluster.local\""},
      {"no-spiffe.chain.pem", PeerRejectReason::kNoSpiffeId, "has no URI SAN"},
      {"two-uris.chain.pem", PeerRejectReason::kMultipleSpiffeIds, "has 2 URI SANs"},
      {"rsa1024.chain.pem", PeerRejectReason::kWeakKey, "key too weak"},
      {"intermediate.crt", PeerRejectReason::kMalformed, "is a CA certificate"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    PeerVerifyResult r = verifyPeer(chain(c.file), b, kTd, now());
    ASSERT_FALSE(r.ok()) << r.id.toString();
    EXPECT_EQ(*r.rejected, c.reason) << reasonName(*r.rejected) << ": " << r.detail;
    EXPECT_THAT(r.detail, HasSubstr(c.detail));
  }
  EXPECT_EQ(verifyPeer(CertChain{}, b, kTd, now()).rejected, PeerRejectReason::kMalformed);
  // The trust domain must match exactly.
  EXPECT_EQ(verifyPeer(chain("client.chain.pem"), b, "cluster.locals", now()).rejected,
            PeerRejectReason::kWrongTrustDomain);
}

// The OpenSSL-typed overload, with the peer chain as a TLS client sees it (leaf included)
// and as a server sees it (intermediates only).
TEST(X509Verify, OpensslTypes) {
  const TrustBundle b = bundle();
  CertChain c = chain("client.chain.pem");
  X509StackPtr with_leaf(sk_X509_new_null());
  X509StackPtr without_leaf(sk_X509_new_null());
  sk_X509_push(with_leaf.get(), upRef(c[0].get()).release());
  sk_X509_push(with_leaf.get(), upRef(c[1].get()).release());
  sk_X509_push(without_leaf.get(), upRef(c[1].get()).release());
  for (STACK_OF(X509) * s : {with_leaf.get(), without_leaf.get()}) {
    PeerVerifyResult r = verifyPeer(c[0].get(), s, b, kTd, now());
    ASSERT_TRUE(r.ok()) << r.detail;
    EXPECT_EQ(r.id.toString(), "spiffe://cluster.local/ns/default/sa/client");
  }
  EXPECT_EQ(verifyPeer(c[0].get(), nullptr, b, kTd, now()).rejected,
            PeerRejectReason::kUntrustedCa);
  EXPECT_EQ(verifyPeer(nullptr, nullptr, b, kTd, now()).rejected, PeerRejectReason::kMalformed);
}

TEST(X509Verify, TimeIsTheCallersClock) {
  const TrustBundle b = bundle();
  const absl::Time in_2020 =
      absl::FromCivil(absl::CivilSecond(2020, 1, 1, 12, 0, 0), absl::UTCTimeZone());
  const absl::Time after_2020 =
      absl::FromCivil(absl::CivilSecond(2020, 1, 3, 0, 0, 0), absl::UTCTimeZone());
  // The expired certificate was valid 2020-01-01..02, but its CAs were made at build time:
  // in 2020 they are not valid yet.
  EXPECT_EQ(verifyPeer(chain("expired.chain.pem"), b, kTd, in_2020).rejected,
            PeerRejectReason::kNotYetValid);
  EXPECT_EQ(verifyPeer(chain("expired.chain.pem"), b, kTd, after_2020).rejected,
            PeerRejectReason::kNotYetValid);
  // 11 years on, the good certificates have expired.
  EXPECT_EQ(
      verifyPeer(chain("client.chain.pem"), b, kTd, now() + absl::Hours(24 * 365 * 11)).rejected,
      PeerRejectReason::kExpired);
  const CertChain expired = chain("expired.crt");
  const X509Ptr& leaf = expired.front();
  EXPECT_EQ(notBefore(leaf.get()),
            absl::FromCivil(absl::CivilSecond(2020, 1, 1, 0, 0, 0), absl::UTCTimeZone()));
  EXPECT_EQ(notAfter(leaf.get()),
            absl::FromCivil(absl::CivilSecond(2020, 1, 2, 0, 0, 0), absl::UTCTimeZone()));
}

TEST(X509Verify, SpiffeIdOfLeaf) {
  PeerVerifyResult r = spiffeIdOf(chain("node-n1.crt").front().get());
  ASSERT_TRUE(r.ok()) << r.detail;
  absl::StatusOr<std::string_view> node = nodeName(view(r.id));
  ASSERT_TRUE(node.ok());
  EXPECT_EQ(*node, "n1");
  EXPECT_EQ(spiffeIdOf(chain("intermediate.crt").front().get()).rejected,
            PeerRejectReason::kNoSpiffeId);  // a DNS SAN only
  EXPECT_EQ(spiffeIdOf(chain("root.crt").front().get()).rejected,
            PeerRejectReason::kNoSpiffeId);  // no SAN at all
}

TEST(X509Keys, Strength) {
  absl::StatusOr<EvpPkeyPtr> rsa = loadPrivateKeyFile(path("rsa1024.key"));
  ASSERT_TRUE(rsa.ok());
  EXPECT_THAT(std::string(checkKeyStrength(rsa->get()).message()),
              HasSubstr("RSA with 1024 bits (at least 2048 required)"));
  EvpPkeyPtr p224(EVP_EC_gen("P-224"));
  ASSERT_TRUE(p224);
  EXPECT_THAT(std::string(checkKeyStrength(p224.get()).message()),
              HasSubstr("EC with 224 bits (P-256 or larger required)"));
  EvpPkeyPtr p384(EVP_EC_gen("P-384"));
  EXPECT_TRUE(checkKeyStrength(p384.get()).ok());
}

TEST(X509Verify, ReasonNames) {
  EXPECT_EQ(reasonName(PeerRejectReason::kUntrustedCa), "untrusted_ca");
  EXPECT_EQ(reasonName(PeerRejectReason::kExpired), "expired");
  EXPECT_EQ(reasonName(PeerRejectReason::kNotYetValid), "not_yet_valid");
  EXPECT_EQ(reasonName(PeerRejectReason::kNoSpiffeId), "no_spiffe_id");
  EXPECT_EQ(reasonName(PeerRejectReason::kMultipleSpiffeIds), "multiple_spiffe_ids");
  EXPECT_EQ(reasonName(PeerRejectReason::kWrongTrustDomain), "wrong_trust_domain");
  EXPECT_EQ(reasonName(PeerRejectReason::kWeakKey), "weak_key");
  EXPECT_EQ(reasonName(PeerRejectReason::kMalformed), "malformed");
}

}  // namespace
}  // namespace meshd::identity
