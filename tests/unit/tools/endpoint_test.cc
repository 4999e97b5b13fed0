#include "tools/endpoint.h"

#include <netinet/in.h>

#include "gtest/gtest.h"

namespace meshd::tools {
namespace {

TEST(EndpointTest, ParsesV4AndV6) {
  auto v4 = Endpoint::parse("10.96.0.10:80");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->family(), AF_INET);
  EXPECT_EQ(v4->port(), 80);
  EXPECT_EQ(v4->toString(), "10.96.0.10:80");

  auto v6 = Endpoint::parse("[fd00::1]:9000");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->family(), AF_INET6);
  EXPECT_EQ(v6->port(), 9000);
  EXPECT_EQ(v6->toString(), "[fd00::1]:9000");
}

TEST(EndpointTest, RejectsMalformed) {
  for (const char* bad : {"10.96.0.10", "10.96.0.10:", "10.96.0.10:0", "10.96.0.10:65536",
                          "10.96.0.10:8x", "fd00::1:80", "[fd00::1]80", "host:80", ":80"}) {
    EXPECT_FALSE(Endpoint::parse(bad).ok()) << bad;
  }
}

TEST(EndpointTest, MappedV6EqualsV4) {
  auto v4 = Endpoint::parse("10.0.0.1:80");
  auto mapped = Endpoint::parse("[::ffff:10.0.0.1]:80");
  auto other_port = Endpoint::parse("10.0.0.1:81");
  auto other_addr = Endpoint::parse("10.0.0.2:80");
  ASSERT_TRUE(v4.ok() && mapped.ok() && other_port.ok() && other_addr.ok());
  EXPECT_TRUE(sameEndpoint(*v4, *mapped));
  EXPECT_FALSE(sameEndpoint(*v4, *other_port));
  EXPECT_FALSE(sameEndpoint(*v4, *other_addr));
}

}  // namespace
}  // namespace meshd::tools
