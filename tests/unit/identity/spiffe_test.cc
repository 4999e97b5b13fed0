// SPIFFE ID parser (userspace/identity/spiffe.h): table tests of valid and rejected IDs
// (each rejection's code, offset and message), the workload and node path forms, Istio
// principal matching, and the no-allocation check of parseSpiffeIdView.
#include "identity/spiffe.h"

#include <string>
#include <vector>

#include "counting_new.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::identity {
namespace {

using Code = SpiffeParseError::Code;
using ::testing::HasSubstr;

struct Valid {
  std::string text;
  std::string td;
  std::string path;
};

TEST(SpiffeParse, AcceptsValidIds) {
  const std::vector<Valid> cases = {
      {"spiffe://cluster.local/ns/default/sa/web", "cluster.local", "/ns/default/sa/web"},
      {"spiffe://example.org", "example.org", ""},
      {"spiffe://a", "a", ""},
      {"spiffe://td-1_x.y/A/b.c/d-e_f/..x/.y", "td-1_x.y", "/A/b.c/d-e_f/..x/.y"},
      {"spiffe://1.2.3.4/x", "1.2.3.4", "/x"},
      {"spiffe://cluster.local/meshd/node/n1", "cluster.local", "/meshd/node/n1"},
      {"spiffe://" + std::string(255, 'a') + "/x", std::string(255, 'a'), "/x"},
      {"spiffe://t/" + std::string(2048 - 11, 'p'), "t", "/" + std::string(2048 - 11, 'p')},
  };
  for (const Valid& c : cases) {
    SCOPED_TRACE(c.text.substr(0, 80));
    absl::StatusOr<SpiffeId> id = parseSpiffeId(c.text);
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_EQ(id->trust_domain, c.td);
    EXPECT_EQ(id->path, c.path);
    EXPECT_EQ(id->toString(), c.text);
  }
}

struct Invalid {
  std::string text;
  Code code;
  size_t offset;
  std::string message;  // a substring of the error
};

TEST(SpiffeParse, RejectsWithTheReasonAndWhere) {
  const std::vector<Invalid> cases = {
      {"", Code::kEmpty, 0, "empty"},
      {"spiffe://t/" + std::string(2048 - 10, 'p'), Code::kTooLong, 2048, "2049 bytes long"},
      {"SPIFFE://td/x", Code::kBadScheme, 0, "scheme is not \"spiffe\""},
      {"Spiffe://td/x", Code::kBadScheme, 0, "scheme"},
      {"https://td/x", Code::kBadScheme, 0, "scheme"},
      {"spiffe", Code::kBadScheme, 0, "scheme"},
      {"spiffe:td/x", Code::kNotHierarchical, 7, "\"//\" expected"},
      {"spiffe:/td/x", Code::kNotHierarchical, 7, "\"//\" expected"},
      {"spiffe://", Code::kEmptyTrustDomain, 9, "trust domain is empty at 9"},
      {"spiffe:///ns/x", Code::kEmptyTrustDomain, 9, "trust domain is empty"},
      {"spiffe://" + std::string(256, 'a'), Code::kTrustDomainTooLong, 264, "longer than 255"},
      {"spiffe://user@td/x", Code::kUserinfo, 13, "userinfo ('@') is not allowed at 13"},
      {"spiffe://td:443/x", Code::kPort, 11, "a port (':') is not allowed at 11"},
      {"spiffe://td?q=1", Code::kQuery, 11, "a query ('?')"},
      {"spiffe://td/x?q=1", Code::kQuery, 13, "a query ('?') is not allowed at 13"},
      {"spiffe://td/x#f", Code::kFragment, 13, "a fragment ('#')"},
      {"spiffe://td#f", Code::kFragment, 11, "a fragment"},
      {"spiffe://td/a%20b", Code::kPercentEncoding, 13, "percent-encoding ('%')"},
      {"spiffe://t%41/x", Code::kPercentEncoding, 10, "percent-encoding"},
      {"spiffe://clusterAlocal/x", Code::kTrustDomainUppercase, 16,
       "trust domain has uppercase character 'A' at 16"},
      {"spiffe://Td/x", Code::kTrustDomainUppercase, 9, "uppercase character 'T' at 9"},
      {"spiffe://t+d/x", Code::kTrustDomainBadChar, 10, "trust domain has character '+' at 10"},
      {"spiffe://t d/x", Code::kTrustDomainBadChar, 10, "character ' ' at 10"},
      {std::string("spiffe://t\0d/x", 14), Code::kTrustDomainBadChar, 10, "'\\x00' at 10"},
      {"spiffe://t\xc3\xa9/x", Code::kTrustDomainBadChar, 10, "'\\xc3' at 10"},
      {"spiffe://td/", Code::kTrailingSlash, 11, "path ends with '/' at 11"},
      {"spiffe://td/a/", Code::kTrailingSlash, 13, "ends with '/'"},
      {"spiffe://td//a", Code::kEmptySegment, 11, "empty segment (\"//\") at 11"},
      {"spiffe://td/a//b", Code::kEmptySegment, 13, "empty segment"},
      {"spiffe://td/./a", Code::kDotSegment, 12, "\".\" or \"..\" segment at 12"},
      {"spiffe://td/a/..", Code::kDotSegment, 14, "\"..\" segment"},
      {"spiffe://td/a/b c", Code::kPathBadChar, 15, "path has character ' ' at 15"},
      {"spiffe://td/a:b", Code::kPathBadChar, 13, "character ':' at 13"},
      {"spiffe://td/a~b", Code::kPathBadChar, 13, "character '~'"},
      {"spiffe://td/a@b", Code::kPathBadChar, 13, "character '@'"},
      {"spiffe://td/\xff", Code::kPathBadChar, 12, "'\\xff' at 12"},
      {"spiffe://td/a\\b", Code::kPathBadChar, 13, "'\\x5c' at 13"},
  };
  for (const Invalid& c : cases) {
    SCOPED_TRACE(c.text.substr(0, 80));
    SpiffeIdView v;
    SpiffeParseError e;
    ASSERT_FALSE(parseSpiffeIdView(c.text, &v, &e));
    EXPECT_EQ(e.code, c.code);
    EXPECT_EQ(e.offset, c.offset);
    absl::StatusOr<SpiffeId> id = parseSpiffeId(c.text);
    ASSERT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(id.status().message()), HasSubstr("invalid SPIFFE ID \""));
    EXPECT_THAT(std::string(id.status().message()), HasSubstr(c.message));
  }
}

TEST(SpiffeParse, LongInputIsQuotedCut) {
  const std::string text = "spiffe://t/" + std::string(3000, 'p');
  absl::StatusOr<SpiffeId> id = parseSpiffeId(text);
  ASSERT_FALSE(id.ok());
  EXPECT_LT(id.status().message().size(), 400u);
  EXPECT_THAT(std::string(id.status().message()), HasSubstr("...\""));
}

TEST(SpiffeParse, ViewDoesNotAllocate) {
  const std::string ok = "spiffe://cluster.local/ns/default/sa/web";
  const std::string bad = "spiffe://cluster.local/ns/default/sa/web/";
  SpiffeIdView v;
  SpiffeParseError e;
  meshd::testing::startCountingAllocations();
  const bool ok_parsed = parseSpiffeIdView(ok, &v, &e);
  const bool bad_parsed = parseSpiffeIdView(bad, &v, &e);
  const bool matched = principalMatches("cluster.local/ns/default/*", v);
  const size_t allocations = meshd::testing::stopCountingAllocations();
  EXPECT_TRUE(ok_parsed);
  EXPECT_FALSE(bad_parsed);
  EXPECT_TRUE(matched);
  EXPECT_EQ(allocations, 0u);
}

TEST(SpiffeParse, AllocationCounterSeesAnAllocation) {
  meshd::testing::startCountingAllocations();
  absl::StatusOr<SpiffeId> id = parseSpiffeId("spiffe://cluster.local/ns/default/sa/a-long-name-x");
  const size_t allocations = meshd::testing::stopCountingAllocations();
  ASSERT_TRUE(id.ok());
  EXPECT_GE(allocations, 1u);
}

TEST(SpiffeForms, Workload) {
  absl::StatusOr<SpiffeId> id = parseSpiffeId("spiffe://cluster.local/ns/default/sa/web");
  ASSERT_TRUE(id.ok());
  absl::StatusOr<WorkloadIdentity> w = workloadIdentity(view(*id));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->ns, "default");
  EXPECT_EQ(w->service_account, "web");

  for (const char* bad : {"spiffe://td", "spiffe://td/ns/default", "spiffe://td/ns/default/sa",
                          "spiffe://td/ns/default/sa/web/x", "spiffe://td/ns/default/xx/web",
                          "spiffe://td/NS/default/sa/web", "spiffe://td/meshd/node/n1"}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<SpiffeId> b = parseSpiffeId(bad);
    ASSERT_TRUE(b.ok());
    absl::StatusOr<WorkloadIdentity> bw = workloadIdentity(view(*b));
    ASSERT_FALSE(bw.ok());
    EXPECT_THAT(
        std::string(bw.status().message()),
        HasSubstr("is not a workload identity (path /ns/<namespace>/sa/<service-account>)"));
  }

  absl::StatusOr<SpiffeId> made = makeWorkloadId("cluster.local", "prod", "api");
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->toString(), "spiffe://cluster.local/ns/prod/sa/api");
  EXPECT_EQ(made->principal(), "cluster.local/ns/prod/sa/api");
  EXPECT_THAT(std::string(makeWorkloadId("cluster.local", "a/b", "x").status().message()),
              HasSubstr("namespace \"a/b\" is not a valid SPIFFE path segment"));
  EXPECT_THAT(std::string(makeWorkloadId("cluster.local", "a", "..").status().message()),
              HasSubstr("service account \"..\""));
  EXPECT_THAT(std::string(makeWorkloadId("Cluster", "a", "b").status().message()),
              HasSubstr("trust domain \"Cluster\" has character 'C' at 0"));
  EXPECT_FALSE(makeWorkloadId("", "a", "b").ok());
}

TEST(SpiffeForms, Node) {
  absl::StatusOr<SpiffeId> id = parseSpiffeId("spiffe://cluster.local/meshd/node/n1");
  ASSERT_TRUE(id.ok());
  absl::StatusOr<std::string_view> n = nodeName(view(*id));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, "n1");
  for (const char* bad : {"spiffe://td/meshd/node", "spiffe://td/meshd/node/n1/x",
                          "spiffe://td/meshd/nodes/n1", "spiffe://td/ns/default/sa/web"}) {
    SCOPED_TRACE(bad);
    absl::StatusOr<SpiffeId> b = parseSpiffeId(bad);
    ASSERT_TRUE(b.ok());
    EXPECT_THAT(std::string(nodeName(view(*b)).status().message()),
                HasSubstr("is not a node identity (path /meshd/node/<node>)"));
  }
  absl::StatusOr<SpiffeId> made = makeNodeId("td", "worker-1");
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->toString(), "spiffe://td/meshd/node/worker-1");
  EXPECT_FALSE(makeNodeId("td", "").ok());
}

TEST(SpiffePrincipal, IstioMatching) {
  const SpiffeId id{"cluster.local", "/ns/default/sa/web"};
  struct Case {
    const char* pattern;
    bool match;
  };
  const std::vector<Case> cases = {
      {"*", true},
      {"cluster.local/ns/default/sa/web", true},
      {"cluster.local/ns/default/sa/we", false},
      {"cluster.local/ns/default/sa/webx", false},
      {"spiffe://cluster.local/ns/default/sa/web", false},  // principals have no scheme
      {"cluster.local/ns/default/*", true},
      {"cluster.local/ns/default/sa/web*", true},
      {"cluster.local/ns/other/*", false},
      {"clus*", true},
      {"cluster.local*", true},
      {"cluster.localx*", false},
      {"*/sa/web", true},
      {"*web", true},
      {"*local/ns/default/sa/web", true},
      {"*cluster.local/ns/default/sa/web", true},
      {"*xcluster.local/ns/default/sa/web", false},
      {"*/sa/api", false},
      {"", false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.pattern);
    EXPECT_EQ(principalMatches(c.pattern, view(id)), c.match);
  }
  EXPECT_FALSE(principalMatches("x*", SpiffeIdView{"", ""}));
  EXPECT_TRUE(principalMatches("*", SpiffeIdView{"td", ""}));
  EXPECT_TRUE(principalMatches("td", SpiffeIdView{"td", ""}));
}

}  // namespace
}  // namespace meshd::identity
