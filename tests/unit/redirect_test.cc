// --redirect-address parsing (datapath/redirect.h) and the mesh_orig_dst key
// of a peer address (OrigDstTable::keyOf): the kernel folds v4-mapped IPv6
// into IPv4, so must the lookup.
#include "datapath/redirect.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "datapath/orig_dst.h"
#include "gtest/gtest.h"

namespace meshd::datapath {
namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

TEST(ParseRedirectTarget, OneOrTwoFamiliesInEitherOrder) {
  auto t = parseRedirectTarget("10.0.0.1", 15001);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, (RedirectTarget{ip("10.0.0.1"), std::nullopt, 15001}));
  EXPECT_EQ(t->toString(), "10.0.0.1:15001");

  t = parseRedirectTarget("fd00::1,10.0.0.1", 15001);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, (RedirectTarget{ip("10.0.0.1"), ip("fd00::1"), 15001}));
  EXPECT_EQ(t->toString(), "10.0.0.1:15001, [fd00::1]:15001");

  t = parseRedirectTarget("fd00::1", 15001);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, (RedirectTarget{std::nullopt, ip("fd00::1"), 15001}));
}

TEST(ParseRedirectTarget, EmptyIsOff) {
  auto t = parseRedirectTarget("", 15001);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->enabled());
  EXPECT_EQ(t->toString(), "off");
}

TEST(ParseRedirectTarget, BadInputNamesWhatIsWrong) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"10.0.0.1,10.0.0.2", "two IPv4"},
      {"fd00::1,fd00::2", "two IPv6"},
      {"10.0.0.1,fd00::1,10.0.0.3", "at most two"},
      {"node1", "\"node1\" is not an IPv4 or IPv6 address"},
      {"10.0.0.1,", "is not an IPv4 or IPv6 address"},
      {"0.0.0.0", "0.0.0.0 is not an address pods can reach"},
      {"::", ":: is not an address pods can reach"},
      {"::ffff:10.0.0.1", "v4-mapped"},
  };
  for (const Case& c : cases) {
    auto t = parseRedirectTarget(c.text, 15001);
    ASSERT_FALSE(t.ok()) << c.text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(t.status().message().find(c.says), std::string::npos)
        << c.text << ": " << t.status().message();
    EXPECT_NE(t.status().message().find("--redirect-address"), std::string::npos) << c.text;
  }
}

TEST(ValidateRedirectTarget, FamiliesMustMatchTheirSlot) {
  EXPECT_FALSE(validateRedirectTarget({ip("fd00::1"), std::nullopt, 1}).ok());
  EXPECT_FALSE(validateRedirectTarget({std::nullopt, ip("10.0.0.1"), 1}).ok());
  EXPECT_TRUE(validateRedirectTarget({ip("10.0.0.1"), ip("fd00::1"), 0}).ok());
}

TEST(OrigDstKey, Ipv4) {
  mesh_orig_dst_key k = OrigDstTable::keyOf(ip("10.0.7.2"), 40000);
  EXPECT_EQ(k.family, MESH_AF_INET);
  EXPECT_EQ(k.port, htons(40000));
  EXPECT_EQ(k.addr[0], inet_addr("10.0.7.2"));
  EXPECT_EQ(k.addr[1] | k.addr[2] | k.addr[3], 0u);
  EXPECT_EQ(k._pad, 0);
}

TEST(OrigDstKey, V4MappedFoldsToIpv4) {
  mesh_orig_dst_key mapped = OrigDstTable::keyOf(ip("::ffff:10.0.7.2"), 40000);
  mesh_orig_dst_key plain = OrigDstTable::keyOf(ip("10.0.7.2"), 40000);
  EXPECT_EQ(std::memcmp(&mapped, &plain, sizeof(plain)), 0);
}

TEST(OrigDstKey, Ipv6) {
  mesh_orig_dst_key k = OrigDstTable::keyOf(ip("fd00:7::2"), 1);
  EXPECT_EQ(k.family, MESH_AF_INET6);
  in6_addr a{};
  inet_pton(AF_INET6, "fd00:7::2", &a);
  EXPECT_EQ(std::memcmp(k.addr, &a, 16), 0);
  EXPECT_EQ(k.port, htons(1));
}

}  // namespace
}  // namespace meshd::datapath
