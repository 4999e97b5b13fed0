#include "tools/http_request.h"

#include <string>

#include "gtest/gtest.h"

namespace meshd::tools {
namespace {

struct Case {
  const char* name;
  std::string input;
  enum { kComplete, kIncomplete, kError } want;
  std::string method = "";
  size_t contentLength = 0;
  bool keepAlive = true;
};

class RequestHeadTest : public testing::TestWithParam<Case> {};

TEST_P(RequestHeadTest, Parses) {
  const Case& c = GetParam();
  auto got = parseRequestHead(c.input, 256);
  switch (c.want) {
    case Case::kError:
      EXPECT_FALSE(got.ok()) << "accepted: " << c.input;
      return;
    case Case::kIncomplete:
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_FALSE(got->has_value());
      return;
    case Case::kComplete:
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_TRUE(got->has_value());
      const RequestHead& head = **got;
      EXPECT_EQ(head.method, c.method);
      EXPECT_EQ(head.contentLength, c.contentLength);
      EXPECT_EQ(head.keepAlive, c.keepAlive);
      EXPECT_EQ(head.headBytes, c.input.find("\r\n\r\n") + 4);
      return;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, RequestHeadTest,
    testing::Values(
        Case{"get11", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", Case::kComplete, "GET", 0, true},
        Case{"get10", "GET /x HTTP/1.0\r\n\r\n", Case::kComplete, "GET", 0, false},
        Case{"get10_keepalive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Case::kComplete,
             "GET", 0, true},
        Case{"close", "GET / HTTP/1.1\r\nconnection: close\r\n\r\n", Case::kComplete, "GET", 0,
             false},
        Case{"close_wins", "GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
             Case::kComplete, "GET", 0, false},
        Case{"body", "POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\nhello", Case::kComplete, "POST",
             12, true},
        Case{"same_duplicate_length",
             "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", Case::kComplete,
             "POST", 3, true},
        Case{"pipelined_first", "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", Case::kComplete,
             "GET", 0, true},
        Case{"partial", "GET / HTTP/1.1\r\nHost:", Case::kIncomplete},
        Case{"empty", "", Case::kIncomplete},
        Case{"too_large_incomplete", "GET /" + std::string(300, 'a'), Case::kError},
        Case{"too_large_complete", "GET /" + std::string(300, 'a') + " HTTP/1.1\r\n\r\n",
             Case::kError},
        Case{"bad_version", "GET / HTTP/2.0\r\n\r\n", Case::kError},
        Case{"two_spaces", "GET  / HTTP/1.1\r\n\r\n", Case::kError},
        Case{"no_target", "GET HTTP/1.1\r\n\r\n", Case::kError},
        Case{"bad_method", "G(T / HTTP/1.1\r\n\r\n", Case::kError},
        Case{"header_no_colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", Case::kError},
        Case{"header_space_name", "GET / HTTP/1.1\r\nHo st: a\r\n\r\n", Case::kError},
        Case{"bad_length", "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", Case::kError},
        Case{"negative_length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Case::kError},
        Case{"conflicting_length",
             "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", Case::kError},
        Case{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Case::kError}),
    [](const testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace meshd::tools
