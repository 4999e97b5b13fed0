// mesh-echo and mesh-client in one process over loopback: the echo server runs on a
// thread with ports picked by the kernel (port 0), the probes run on the test thread.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tools/echo_server.h"
#include "tools/probe.h"

namespace meshd::tools {
namespace {

class EchoProbeTest : public testing::Test {
 protected:
  void SetUp() override {
    EchoServer::Options options;
    options.name = "pod-a";
    options.bind = "127.0.0.1";
    options.tcpPort = 0;
    options.httpPort = 0;
    options.udpPort = 0;
    auto server = EchoServer::create(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    thread_ = std::thread([this] { run_status_ = server_->run(); });
  }
  void TearDown() override {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_;
  }

  ProbeOptions options(ProbeMode mode, uint16_t port, int count) {
    ProbeOptions o;
    o.mode = mode;
    o.target = *Endpoint::fromHostPort("127.0.0.1", port);
    o.count = count;
    return o;
  }

  EchoServerPtr server_;
  std::thread thread_;
  absl::Status run_status_;
};

TEST_F(EchoProbeTest, TcpNamesEveryConnection) {
  ProbeResult r = runProbes(options(ProbeMode::kTcp, server_->tcpPort(), 50));
  EXPECT_EQ(r.total, 50);
  EXPECT_EQ(r.ok, 50);
  EXPECT_EQ(r.errors, 0);
  EXPECT_EQ(r.peerMismatches, 0);
  ASSERT_EQ(r.counts.size(), 1u);
  EXPECT_EQ(r.counts["pod-a"], 50);
}

TEST_F(EchoProbeTest, HttpAnswersGetWithName) {
  ProbeResult r = runProbes(options(ProbeMode::kHttp, server_->httpPort(), 20));
  EXPECT_EQ(r.ok, 20) << (r.errorSamples.empty() ? "" : r.errorSamples[0]);
  EXPECT_EQ(r.counts["pod-a"], 20);
}

TEST_F(EchoProbeTest, UdpConnectedAndUnconnected) {
  ProbeOptions o = options(ProbeMode::kUdp, server_->udpPort(), 20);
  ProbeResult r = runProbes(o);
  EXPECT_EQ(r.ok, 20) << (r.errorSamples.empty() ? "" : r.errorSamples[0]);
  EXPECT_EQ(r.counts["pod-a"], 20);
  o.udpConnect = true;
  r = runProbes(o);
  EXPECT_EQ(r.ok, 20) << (r.errorSamples.empty() ? "" : r.errorSamples[0]);
}

TEST_F(EchoProbeTest, TcpEchoesBytesAfterName) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  Endpoint ep = *Endpoint::fromHostPort("127.0.0.1", server_->tcpPort());
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&ep.addr), ep.len), 0);
  const std::string payload(100000, 'x');  // larger than one read: exercises buffering
  std::thread writer([&] {
    ASSERT_EQ(send(fd, payload.data(), payload.size(), 0), static_cast<ssize_t>(payload.size()));
    shutdown(fd, SHUT_WR);
  });
  std::string got;
  char buf[8192];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) got.append(buf, n);
  writer.join();
  close(fd);
  EXPECT_EQ(got, "pod-a\n" + payload);
}

TEST_F(EchoProbeTest, HttpHeadersPathReturnsTheHeadAsReceived) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  Endpoint ep = *Endpoint::fromHostPort("127.0.0.1", server_->httpPort());
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&ep.addr), ep.len), 0);
  const std::string head =
      "GET /headers HTTP/1.1\r\nHost: web\r\nX-Test: 1\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(write(fd, head.data(), head.size()), static_cast<ssize_t>(head.size()));
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) got.append(buf, n);
  close(fd);
  const std::string body = "pod-a\n" + head;
  EXPECT_NE(got.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos)
      << got;
  EXPECT_TRUE(got.ends_with("\r\n\r\n" + body)) << got;
}

TEST_F(EchoProbeTest, HoldKeepsConnectionsOpen) {
  ProbeOptions o = options(ProbeMode::kTcp, server_->tcpPort(), 5);
  o.hold = true;
  ProbeResult r = runProbes(o);
  EXPECT_EQ(r.ok, 5);
  ASSERT_EQ(r.heldFds.size(), 5u);
  // Still connected: the echo server answers on a held socket.
  ASSERT_EQ(write(r.heldFds[0], "z", 1), 1);
  char c = 0;
  EXPECT_EQ(read(r.heldFds[0], &c, 1), 1);
  EXPECT_EQ(c, 'z');
  r.closeHeld();
  EXPECT_TRUE(r.heldFds.empty());
}

TEST(ProbeErrorTest, RefusedConnectionsAreErrorsWithErrnoText) {
  // Bind a port and close it so nothing listens there.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  Endpoint ep = *Endpoint::fromHostPort("127.0.0.1", 0);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&ep.addr), ep.len), 0);
  socklen_t len = ep.len;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&ep.addr), &len), 0);
  close(fd);
  ProbeOptions o;
  o.target = ep;
  o.count = 3;
  ProbeResult r = runProbes(o);
  EXPECT_EQ(r.errors, 3);
  EXPECT_EQ(r.ok, 0);
  ASSERT_FALSE(r.errorSamples.empty());
  EXPECT_NE(r.errorSamples[0].find("Connection refused"), std::string::npos) << r.errorSamples[0];
  EXPECT_NE(formatTable(o, r).find("errors 3"), std::string::npos);
  EXPECT_NE(formatJson(o, r).find("\"errors\": 3"), std::string::npos);
}

}  // namespace
}  // namespace meshd::tools
