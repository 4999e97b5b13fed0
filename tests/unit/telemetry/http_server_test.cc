#include "telemetry/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "telemetry/meshd_metrics.h"

namespace meshd::telemetry {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Sends `request` to 127.0.0.1:port and returns everything the server sent
// until it closed the connection.
std::string roundTrip(uint16_t port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
  EXPECT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

std::string get(uint16_t port, const std::string& path) {
  return roundTrip(port, "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\n\r\n");
}

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = HttpServer::start("127.0.0.1:0",
                                    makeAdminHandler(
                                        [this]() -> absl::Status {
                                          if (ready_.load()) return absl::OkStatus();
                                          return absl::UnavailableError("no BPF programs attached");
                                        },
                                        [] { return std::string("meshd_ready 1\n"); }));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_NE(server_->port(), 0);
  }

  std::atomic<bool> ready_{false};
  HttpServerPtr server_;
};

TEST_F(AdminServerTest, Healthz) {
  const std::string r = get(server_->port(), "/healthz");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(r, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\n\r\nok\n"));
}

TEST_F(AdminServerTest, ReadyzFollowsReadiness) {
  std::string r = get(server_->port(), "/readyz");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 503 Service Unavailable\r\n"));
  EXPECT_THAT(r, HasSubstr("not ready: no BPF programs attached"));
  ready_ = true;
  r = get(server_->port(), "/readyz?verbose=1");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
}

TEST_F(AdminServerTest, MetricsContentType) {
  const std::string r = get(server_->port(), "/metrics");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(r, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(r, HasSubstr("Content-Length: 14\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\n\r\nmeshd_ready 1\n"));
}

TEST_F(AdminServerTest, UnknownPathIs404) {
  EXPECT_THAT(get(server_->port(), "/nope"), StartsWith("HTTP/1.1 404 Not Found\r\n"));
}

TEST_F(AdminServerTest, MalformedRequestIs400) {
  EXPECT_THAT(roundTrip(server_->port(), "HELLO\r\n\r\n"), StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(roundTrip(server_->port(), "GET /healthz HTTP/9\r\n\r\n"),
              StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(roundTrip(server_->port(), "GET /healthz HTTP/1.1\r\nno colon\r\n\r\n"),
              StartsWith("HTTP/1.1 400 "));
  // Garbage without a CRLF yet is refused at once, not after the timeout.
  EXPECT_THAT(roundTrip(server_->port(), std::string("\x16\x03\x01\x00\xa5", 5)),
              StartsWith("HTTP/1.1 400 "));
}

TEST_F(AdminServerTest, OnlyGet) {
  const std::string r = roundTrip(server_->port(), "POST /metrics HTTP/1.1\r\n\r\n");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 405 "));
  EXPECT_THAT(r, HasSubstr("Allow: GET\r\n"));
}

TEST_F(AdminServerTest, OversizedRequestRefused) {
  std::string req = "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n";
  EXPECT_THAT(roundTrip(server_->port(), req), StartsWith("HTTP/1.1 431 "));
}

TEST_F(AdminServerTest, StopIsIdempotentAndClosesThePort) {
  const uint16_t port = server_->port();
  server_->stop();
  server_->stop();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  server_.reset();
  EXPECT_NE(connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
  close(fd);
}

TEST(HttpParseTest, Table) {
  struct Case {
    std::string in;
    HttpParse::State state;
    std::string path;
  };
  using S = HttpParse::State;
  const Case cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", S::kComplete, "/"},
      {"GET /metrics?a=b HTTP/1.0\r\nHost: x\r\n\r\n", S::kComplete, "/metrics"},
      {"GET /metrics HTTP/1.1\r\nHost: x\r\n", S::kIncomplete, ""},
      {"GET /met", S::kIncomplete, ""},
      {"GET  / HTTP/1.1\r\n\r\n", S::kBad, ""},
      {"GET metrics HTTP/1.1\r\n\r\n", S::kBad, ""},
      {"G(T / HTTP/1.1\r\n\r\n", S::kBad, ""},
      {"GET / HTTP/2.0\r\n\r\n", S::kBad, ""},
      {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", S::kBad, ""},
      {"GET / HTTP/1.1\r\n folded\r\n\r\n", S::kBad, ""},
      {"GET /\x01 HTTP/1.1\r\n\r\n", S::kBad, ""},
      {"GET / HTTP/1.1\r\nA: \x7f\r\n\r\n", S::kBad, ""},
  };
  for (const Case& c : cases) {
    HttpParse p = parseHttpRequestHead(c.in, 8192);
    EXPECT_EQ(p.state, c.state) << c.in;
    if (c.state == S::kComplete) {
      EXPECT_EQ(p.head.path, c.path) << c.in;
    }
  }
  EXPECT_EQ(parseHttpRequestHead(std::string(100, 'a'), 64).state, S::kTooLarge);
}

TEST(ListenAddressTest, Parse) {
  auto a = parseListenAddress("0.0.0.0:15020");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "0.0.0.0");
  EXPECT_EQ(a->port, 15020);
  auto b = parseListenAddress("[::1]:0");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_FALSE(parseListenAddress("15020").ok());
  EXPECT_FALSE(parseListenAddress("localhost:80").ok());
  EXPECT_FALSE(parseListenAddress("1.2.3.4:70000").ok());
  EXPECT_FALSE(parseListenAddress("[::1]80").ok());
}

}  // namespace
}  // namespace meshd::telemetry
