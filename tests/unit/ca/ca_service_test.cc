// The CA service (userspace/ca) over real gRPC with mTLS on 127.0.0.1 (port 0), with the
// test PKI: the CA issues from the test intermediate; node agents call with the node-n1 /
// node-n2 credentials.
//
//   test client --mTLS (node-n1.chain.pem, trusts bundle.pem)--> CaServer 127.0.0.1:<port>
//                                                                  placement: client on n1,
//                                                                             server on n2
#include <grpcpp/grpcpp.h>
#include <openssl/pem.h>

#include <fstream>
#include <iterator>
#include <string>

#include "ca.grpc.pb.h"
#include "ca/placement.h"
#include "ca/service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "identity/ca.h"
#include "identity/x509.h"

namespace meshd::ca {
namespace {

using ::testing::HasSubstr;

const std::string kDir = MESHD_TEST_CERTS_DIR;
std::string path(const std::string& name) { return kDir + "/" + name; }
std::string read(const std::string& name) { return *identity::readFile(path(name)); }

// The CA's clock: fixed, so lifetimes are asserted exactly, and real (the CA's own serving
// certificate is issued with it and TLS handshakes check it against the real time).
const absl::Time kNow = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));

constexpr char kPlacement[] = R"(
- {name: client-1, namespace: default, serviceAccount: client, node: n1}
- {name: server-1, namespace: default, serviceAccount: server, node: n2}
)";

class CaServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    identity::CaOptions o;
    o.trust_domain = "cluster.local";
    o.root_cert_file = path("bundle.pem");
    o.key_file = path("intermediate.key");
    o.cert_chain_file = path("intermediate.crt");
    o.clock = [] { return kNow; };
    auto ca = identity::CertificateAuthority::create(o);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    auto placement = StaticWorkloadPlacement::fromYaml(kPlacement, "placement.yaml");
    ASSERT_TRUE(placement.ok()) << placement.status();
    placement_ = std::make_unique<StaticWorkloadPlacement>(std::move(*placement));
    CaServerOptions so;
    so.listen = "127.0.0.1:0";
    auto server = CaServer::start(so, *ca_, *placement_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    if (server_) server_->shutdown();
  }

  // A stub presenting `cert` (a chain file of the test PKI, or none) with its key.
  std::unique_ptr<v1::CertificateService::Stub> stub(const std::string& cert) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = read("bundle.pem");
    if (!cert.empty()) {
      o.pem_cert_chain = read(cert + ".chain.pem");
      o.pem_private_key = read(cert + ".key");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("meshd-ca");
    auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(server_->port()),
                                             grpc::SslCredentials(o), args);
    return v1::CertificateService::NewStub(channel);
  }

  grpc::Status call(const std::string& cert, const std::string& ns, const std::string& sa,
                    const std::string& csr, v1::CreateCertificateResponse* response,
                    int64_t validity = 3600) {
    v1::CreateCertificateRequest request;
    request.set_csr(csr);
    request.set_namespace_(ns);
    request.set_service_account(sa);
    request.set_validity_duration(validity);
    grpc::ClientContext context;
    // Generous: only there so a broken server cannot hang the test.
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return stub(cert)->CreateCertificate(&context, request, response);
  }

  std::string csr() {
    auto kc = identity::makeKeyAndCsr(*identity::makeWorkloadId("cluster.local", "x", "y"));
    return kc->csr_pem;
  }

  identity::CertificateAuthorityPtr ca_;
  std::unique_ptr<StaticWorkloadPlacement> placement_;
  CaServerPtr server_;
};

TEST_F(CaServiceTest, NodeGetsACertificateForItsWorkload) {
  v1::CreateCertificateResponse response;
  grpc::Status s = call("node-n1", "default", "client", csr(), &response);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();

  auto chain = identity::parseCertChainPem(response.cert_chain(), "response");
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ(chain->size(), 2u);
  auto bundle = identity::TrustBundle::fromPem(response.trust_bundle(), "response bundle");
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->roots().size(), 2u);
  identity::PeerVerifyResult r = identity::verifyPeer(*chain, *bundle, "cluster.local", kNow);
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.id.toString(), "spiffe://cluster.local/ns/default/sa/client");
  EXPECT_EQ(identity::notAfter(chain->front().get()), kNow + absl::Hours(1));
  // Backdated for clock skew, but not before the issuer (made when the test PKI was built).
  const absl::Time not_before =
      std::max(kNow - identity::kClockSkewBackdate, identity::notBefore(ca_->issuer()));
  EXPECT_EQ(identity::notBefore(chain->front().get()), not_before);
  EXPECT_EQ(response.not_after(), absl::ToUnixSeconds(kNow + absl::Hours(1)));
  EXPECT_EQ(response.not_before(), absl::ToUnixSeconds(not_before));

  // Default lifetime when none is asked for.
  s = call("node-n2", "default", "server", csr(), &response, 0);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.not_after(), absl::ToUnixSeconds(kNow + absl::Hours(24)));
  EXPECT_EQ(server_->service().issued(), 2u);
}

TEST_F(CaServiceTest, IdentityOfAnotherNodeIsRefused) {
  v1::CreateCertificateResponse response;
  for (int i = 0; i < 2; ++i) {
    grpc::Status s = call("node-n1", "default", "server", csr(), &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("identity_not_on_node"));
    EXPECT_THAT(s.error_message(), HasSubstr("placed on node n1"));
  }
  EXPECT_EQ(server_->service().refused(Refusal::kNotOnNode), 2u);
  EXPECT_EQ(server_->service().loggedRefusals(), 1u);  // once per (node, reason)
  EXPECT_EQ(server_->service().issued(), 0u);
  // Not placed anywhere.
  grpc::Status s = call("node-n2", "default", "client", csr(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(server_->service().loggedRefusals(), 2u);
}

TEST_F(CaServiceTest, WorkloadCertificateIsNotANodeCredential) {
  v1::CreateCertificateResponse response;
  grpc::Status s = call("client", "default", "client", csr(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("not_node_credential"));
  EXPECT_EQ(server_->service().refused(Refusal::kNotNodeCredential), 1u);
}

TEST_F(CaServiceTest, OwnVerificationRefusesWrongTrustDomain) {
  // Chains to the bundle (gRPC's handshake accepts it) but is of trust domain evil.example.
  v1::CreateCertificateResponse response;
  grpc::Status s = call("wrong-td", "default", "client", csr(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("bad_client_cert: wrong_trust_domain"));
  EXPECT_EQ(server_->service().refused(Refusal::kBadClientCert), 1u);
}

TEST_F(CaServiceTest, HandshakeRefusedForAnotherCaOrNoCertificate) {
  v1::CreateCertificateResponse response;
  for (const char* cert : {"other-ca", "expired", ""}) {
    SCOPED_TRACE(cert);
    grpc::Status s = call(cert, "default", "client", csr(), &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  }
  // Refused before any handler ran.
  for (size_t r = 0; r < kRefusalCount; ++r) {
    EXPECT_EQ(server_->service().refused(static_cast<Refusal>(r)), 0u);
  }
  EXPECT_EQ(server_->service().issued(), 0u);
}

TEST_F(CaServiceTest, BadRequestsAreInvalidArgument) {
  v1::CreateCertificateResponse response;
  grpc::Status s = call("node-n1", "default", "client", "garbage", &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("bad_csr"));

  // A 1024-bit RSA key.
  auto weak = identity::loadPrivateKeyFile(path("rsa1024.key"));
  ASSERT_TRUE(weak.ok());
  identity::X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), weak->get());
  X509_REQ_sign(req.get(), weak->get(), EVP_sha256());
  identity::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  s = call("node-n1", "default", "client", std::string(data, static_cast<size_t>(n)), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("weak_key: CSR: weak key: RSA with 1024 bits"));

  s = call("node-n1", "a/b", "client", csr(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("bad_request: namespace \"a/b\""));
  s = call("node-n1", "default", "client", csr(), &response, -5);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(server_->service().refused(Refusal::kBadCsr), 1u);
  EXPECT_EQ(server_->service().refused(Refusal::kWeakKey), 1u);
  EXPECT_EQ(server_->service().refused(Refusal::kBadRequest), 2u);
  const std::string metrics = server_->service().metricsText();
  EXPECT_THAT(metrics, HasSubstr("meshd_ca_refusals_total{reason=\"bad_request\"} 2\n"));
  EXPECT_THAT(metrics, HasSubstr("meshd_ca_refusals_total{reason=\"weak_key\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("meshd_ca_refusals_total{reason=\"identity_not_on_node\"} 0\n"));
  EXPECT_THAT(metrics, HasSubstr("meshd_ca_certificates_issued_total 0\n"));
}

TEST(Placement, YamlErrorsNameWhere) {
  struct Case {
    const char* yaml;
    const char* message;
  };
  const Case cases[] = {
      {"{a: 1}", "f.yaml:1:1: expected a list of workloads"},
      {"- {name: a, namespace: ns, node: n1, zone: z}", "f.yaml:1:38: unknown field \"zone\""},
      {"- {name: a, namespace: ns}", "f.yaml:1:3: workload without node"},
      {"- {name: a, namespace: 'a/b', node: n1}", "namespace \"a/b\" is not a valid"},
      {"- [1]", "f.yaml:1:3: a workload is a map"},
      {"- {name: [x]}", "name must be a string"},
      {"- {name: a\n", "f.yaml:"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.yaml);
    auto p = StaticWorkloadPlacement::fromYaml(c.yaml, "f.yaml");
    ASSERT_FALSE(p.ok());
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(c.message));
  }
  auto p = StaticWorkloadPlacement::fromYaml("- {name: a, namespace: ns, node: n1}", "f.yaml");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->hasWorkload("n1", "ns", "default"));  // serviceAccount defaults to "default"
  EXPECT_FALSE(p->hasWorkload("n1", "ns", "other"));
  EXPECT_FALSE(p->hasWorkload("n2", "ns", "default"));
  EXPECT_FALSE(p->hasWorkload("n1ns", "", "default"));  // no ambiguity in the joined key
  EXPECT_TRUE(StaticWorkloadPlacement::fromYaml("", "f.yaml").ok());
}

TEST(Refusals, Names) {
  EXPECT_EQ(refusalName(Refusal::kNotNodeCredential), "not_node_credential");
  EXPECT_EQ(refusalName(Refusal::kNotOnNode), "identity_not_on_node");
  EXPECT_EQ(refusalName(Refusal::kWeakKey), "weak_key");
  EXPECT_EQ(refusalName(Refusal::kBadCsr), "bad_csr");
}

}  // namespace
}  // namespace meshd::ca
