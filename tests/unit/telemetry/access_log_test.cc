// The JSON access log: the formatter (every field, the escaping table, null and "-"
// values, addresses, timestamps) and the writer (lines from several threads all written
// whole, the periodic flush, write errors, dropping instead of blocking), read back with
// nlohmann::json.
#include "telemetry/access_log.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace meshd::telemetry {
namespace {

SocketAddress addr(std::string_view text) { return *SocketAddress::parse(text); }

AccessLogEntry fullEntry() {
  AccessLogEntry e;
  e.start_unix_us = 1'700'000'000'123'456;  // 2023-11-14T22:13:20.123456Z
  e.method = "GET";
  e.path = "/api/v1/items?limit=5";
  e.protocol = "HTTP/1.1";
  e.response_code = 200;
  e.response_flags = "";
  e.bytes_received = 123;
  e.bytes_sent = 4567;
  e.duration_us = 12'999;  // 12 ms: whole milliseconds, truncated (Envoy's %DURATION%)
  e.user_agent = "curl/8.0";
  e.request_id = "6f1c2a9e-8d4b-4b7a-9f3e-2c1d0e9b8a7f";
  e.authority = "web.default:8080";
  e.upstream_host = addr("10.1.0.7:8080");
  e.upstream_cluster = "default/web:8080";
  e.downstream_local = addr("10.96.0.10:80");
  e.downstream_remote = addr("10.1.0.3:51234");
  e.attempts = 2;
  return e;
}

std::string format(const AccessLogEntry& e) {
  std::string out;
  formatAccessLogJson(e, out);
  return out;
}

std::string jsonString(std::string_view s) {
  std::string out;
  appendJsonString(out, s);
  return out;
}

TEST(AccessLogFormatTest, EveryFieldInIstiosKeysAndTypes) {
  EXPECT_EQ(format(fullEntry()),
            "{\"start_time\":\"2023-11-14T22:13:20.123Z\",\"method\":\"GET\","
            "\"path\":\"/api/v1/items?limit=5\",\"protocol\":\"HTTP/1.1\",\"response_code\":200,"
            "\"response_flags\":\"-\",\"bytes_received\":123,\"bytes_sent\":4567,\"duration\":12,"
            "\"user_agent\":\"curl/8.0\",\"request_id\":\"6f1c2a9e-8d4b-4b7a-9f3e-2c1d0e9b8a7f\","
            "\"authority\":\"web.default:8080\",\"upstream_host\":\"10.1.0.7:8080\","
            "\"upstream_cluster\":\"default/web:8080\","
            "\"downstream_local_address\":\"10.96.0.10:80\","
            "\"downstream_remote_address\":\"10.1.0.3:51234\",\"attempts\":2}\n");
}

TEST(AccessLogFormatTest, MissingValuesAreNullFlagsDashAndGrpcStatusOnlyForGrpc) {
  AccessLogEntry e;  // an opaque connection that never reached an upstream
  e.start_unix_us = 0;
  e.protocol = "tcp";
  e.response_flags = "UF";
  e.downstream_remote = addr("10.1.0.3:40000");
  const nlohmann::json j = nlohmann::json::parse(format(e));
  EXPECT_EQ(j["start_time"], "1970-01-01T00:00:00.000Z");
  for (const char* key : {"method", "path", "user_agent", "request_id", "authority",
                          "upstream_host", "upstream_cluster", "downstream_local_address"}) {
    EXPECT_TRUE(j.at(key).is_null()) << key;
  }
  EXPECT_EQ(j["response_flags"], "UF");
  EXPECT_EQ(j["response_code"], 0);
  EXPECT_EQ(j["protocol"], "tcp");
  EXPECT_EQ(j["attempts"], 1);
  EXPECT_FALSE(j.contains("grpc_status"));

  AccessLogEntry g = fullEntry();
  g.protocol = "HTTP/2";
  g.grpc = true;
  EXPECT_TRUE(nlohmann::json::parse(format(g)).at("grpc_status").is_null());  // none seen
  g.grpc_status = "14";
  g.response_flags = "UF,URX";
  const nlohmann::json gj = nlohmann::json::parse(format(g));
  EXPECT_EQ(gj["grpc_status"], "14");
  EXPECT_EQ(gj["response_flags"], "UF,URX");
}

TEST(AccessLogFormatTest, ProtocolNamesAreEnvoys) {
  EXPECT_EQ(accessLogProtocol("http/1.1"), "HTTP/1.1");
  EXPECT_EQ(accessLogProtocol("http/2"), "HTTP/2");
  EXPECT_EQ(accessLogProtocol("grpc"), "HTTP/2");
  EXPECT_EQ(accessLogProtocol("tcp"), "tcp");
}

TEST(AccessLogFormatTest, AddressesAsEnvoyPrintsThem) {
  struct Case {
    std::string_view in, out;
  } cases[] = {
      {"10.0.0.1:80", "\"10.0.0.1:80\""},
      {"[::1]:80", "\"[::1]:80\""},
      {"[fd00:10:96::a]:8080", "\"[fd00:10:96::a]:8080\""},
      {"[::ffff:10.1.2.3]:443", "\"10.1.2.3:443\""},  // a dual-stack listener's IPv4 peer
  };
  for (const Case& c : cases) {
    std::string out;
    appendJsonAddress(out, addr(c.in));
    EXPECT_EQ(out, c.out) << c.in;
  }
  std::string out;
  appendJsonAddress(out, SocketAddress());
  EXPECT_EQ(out, "null");
}

TEST(AccessLogFormatTest, StartTimeIsRfc3339UtcWithMilliseconds) {
  struct Case {
    uint64_t us;
    std::string_view out;
  } cases[] = {
      {0, "\"1970-01-01T00:00:00.000Z\""},
      {999, "\"1970-01-01T00:00:00.000Z\""},
      {951'782'400'001'000, "\"2000-02-29T00:00:00.001Z\""},  // leap day of a /400 year
      {1'709'251'199'999'999, "\"2024-02-29T23:59:59.999Z\""},
      {4'107'542'400'000'000, "\"2100-03-01T00:00:00.000Z\""},  // 2100: no Feb 29
      {1'764'045'407'250'000, "\"2025-11-25T04:36:47.250Z\""},
  };
  for (const Case& c : cases) {
    std::string out;
    appendJsonTime(out, c.us);
    EXPECT_EQ(out, c.out) << c.us;
  }
}

TEST(AccessLogFormatTest, EscapingTable) {
  struct Case {
    std::string in;
    std::string out;  // without the quotes
  } cases[] = {
      {"plain /path?a=b&c=d", "plain /path?a=b&c=d"},
      {"say \"hi\"", "say \\\"hi\\\""},
      {"back\\slash", "back\\\\slash"},
      {"tab\tnl\ncr\rbs\bff\f", "tab\\tnl\\ncr\\rbs\\bff\\f"},
      {std::string("nul\0x", 5), "nul\\u0000x"},
      {"\x01\x1f\x7f", "\\u0001\\u001f\\u007f"},
      {"</script>", "</script>"},
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      {"\xff", "\\ufffd"},                                   // never valid in UTF-8
      {"a\x80z", "a\\ufffdz"},                               // stray continuation byte
      {"\xc3", "\\ufffd"},                                   // cut short at the end
      {"\xc3(", "\\ufffd("},                                 // cut short by ASCII
      {"\xc0\xaf", "\\ufffd\\ufffd"},                        // overlong '/'
      {"\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd"},             // overlong, 3 bytes
      {"\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"},             // UTF-16 surrogate D800
      {"\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"},  // past U+10FFFF
      {"\xf0\x9f\x98", "\\ufffd\\ufffd\\ufffd"},             // 4-byte sequence cut short
      {"\xef\xbf\xbd", "\xef\xbf\xbd"},                      // U+FFFD itself is valid
  };
  for (const Case& c : cases) {
    const std::string quoted = jsonString(c.in);
    EXPECT_EQ(quoted, "\"" + c.out + "\"") << c.in;
    // Every output is valid JSON (nlohmann rejects invalid UTF-8 and raw control bytes).
    nlohmann::json parsed;
    ASSERT_NO_THROW(parsed = nlohmann::json::parse(quoted)) << quoted;
    if (c.out.find("\\ufffd") == std::string::npos) {
      EXPECT_EQ(parsed.get<std::string>(), c.in);  // lossless when valid
    }
  }
}

TEST(AccessLogFormatTest, EveryByteValueGivesValidJson) {
  // All 256 single bytes, and each after a lead byte: no input breaks the line.
  for (int a = 0; a < 256; ++a) {
    for (int b : {-1, 0x80, 0xbf, 0x78}) {
      std::string in(1, static_cast<char>(a));
      if (b >= 0) in.push_back(static_cast<char>(b));
      const std::string line = format([&] {
        AccessLogEntry e = fullEntry();
        e.user_agent = in;
        return e;
      }());
      ASSERT_EQ(line.find('\n'), line.size() - 1) << a;
      EXPECT_TRUE(nlohmann::json::accept(line)) << a << " " << b;
    }
  }
}

// ---------------------------------------------------------------------------------------
// The writer

class AccessLogWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshd_access_log_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/access.log";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::vector<std::string> lines() const {
    std::ifstream in(path_);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  std::string dir_, path_;
};

TEST_F(AccessLogWriterTest, LinesFromManyThreadsAreAllWrittenWhole) {
  AccessLog::Options o;
  o.flush_bytes = 4096;  // many queued chunks
  o.shards = 3;          // fewer shards than threads: shared slots too
  // All lines fit in the queue bound: a flusher starved of CPU (a loaded machine) must
  // not turn into drops here; dropping has its own test below.
  o.max_queued_bytes = 64 << 20;
  auto log = AccessLog::open(path_, o);
  ASSERT_TRUE(log.ok()) << log.status();
  constexpr int kThreads = 6;
  constexpr int kPerThread = 5000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      AccessLogEntry e = fullEntry();
      std::string id;
      for (int i = 0; i < kPerThread; ++i) {
        id = std::to_string(t) + "-" + std::to_string(i);
        e.request_id = id;
        e.user_agent = "agent \"quoted\" \xff";
        (*log)->log(e);
      }
    });
  }
  for (auto& th : threads) th.join();
  (*log)->flush();
  const AccessLogStats s = (*log)->stats();
  EXPECT_EQ(s.lines, uint64_t{kThreads} * kPerThread);
  EXPECT_EQ(s.write_errors, 0u);
  EXPECT_EQ(s.lost_lines, 0u);

  std::set<std::string> ids;
  const auto got = lines();
  ASSERT_EQ(got.size(), size_t{kThreads} * kPerThread);
  uint64_t bytes = 0;
  for (const std::string& l : got) {
    bytes += l.size() + 1;
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(l)) << l;
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["user_agent"], "agent \"quoted\" \xef\xbf\xbd");
    ids.insert(j["request_id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), size_t{kThreads} * kPerThread);  // each line exactly once
  EXPECT_EQ(s.bytes_written, bytes);
}

TEST_F(AccessLogWriterTest, TheFlusherWritesIdleBuffersPeriodically) {
  AccessLog::Options o;
  o.flush_interval_ms = 20;
  auto log = AccessLog::open(path_, o);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->log(fullEntry());  // far below flush_bytes: only the periodic flush writes it
  // Waits (bounded, to avoid a hang) for the flusher; flush() is never called.
  for (int i = 0; i < 500 && lines().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(lines().size(), 1u);
  EXPECT_EQ(lines()[0] + "\n", format(fullEntry()));
}

TEST_F(AccessLogWriterTest, DestructionWritesWhatIsBufferedAndAppends) {
  {
    std::ofstream pre(path_);
    pre << "{\"earlier\":true}\n";
  }
  {
    auto log = AccessLog::open(path_);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 3; ++i) (*log)->log(fullEntry());
  }
  const auto got = lines();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0], "{\"earlier\":true}");  // O_APPEND: never truncated
}

TEST_F(AccessLogWriterTest, OpenFailureNamesThePath) {
  auto log = AccessLog::open(dir_ + "/missing/dir/access.log");
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find(dir_ + "/missing/dir/access.log"), std::string::npos)
      << log.status();
  EXPECT_NE(log.status().message().find("No such file"), std::string::npos) << log.status();
}

TEST(AccessLogErrorTest, WriteErrorsAreCountedAndReportedOnce) {
  std::atomic<int> reports{0};
  std::string message;
  AccessLog::Options o;
  o.on_error = [&](std::string_view m) {
    if (reports.fetch_add(1) == 0) message = std::string(m);
  };
  auto log = AccessLog::open("/dev/full", o);  // every write fails with ENOSPC
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 10; ++i) (*log)->log(fullEntry());
  (*log)->flush();
  for (int i = 0; i < 5; ++i) (*log)->log(fullEntry());
  (*log)->flush();
  const AccessLogStats s = (*log)->stats();
  EXPECT_EQ(s.lines, 15u);
  EXPECT_EQ(s.lost_lines, 15u);
  EXPECT_GE(s.write_errors, 2u);
  EXPECT_EQ(s.bytes_written, 0u);
  EXPECT_EQ(reports.load(), 1);
  EXPECT_NE(message.find("/dev/full"), std::string::npos) << message;
  EXPECT_NE(message.find("No space left"), std::string::npos) << message;
}

TEST(AccessLogErrorTest, ABlockedReaderMakesLinesDropNotTheCallerWait) {
  // A pipe nobody reads: the flusher's write() blocks once the pipe is full; log() keeps
  // returning and, past max_queued_bytes, drops (counts) lines.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  AccessLog::Options o;
  o.flush_bytes = 1024;
  o.max_queued_bytes = 16 * 1024;
  auto log = AccessLog::open("/proc/self/fd/" + std::to_string(p[1]), o);
  ASSERT_TRUE(log.ok()) << log.status();
  ::close(p[1]);
  uint64_t logged = 0;
  // Pipe capacity (64 KiB by default, up to 1 MiB) + the queue bound: ~2.5 M lines of
  // ~450 bytes is far more than both; stops at the first drop.
  while ((*log)->stats().lost_lines == 0 && logged < 2'500'000) {
    (*log)->log(fullEntry());
    ++logged;
  }
  EXPECT_GT((*log)->stats().lost_lines, 0u);
  // Drain the pipe so the flusher and the destructor can finish.
  std::atomic<bool> done{false};
  uint64_t drained = 0;
  std::thread reader([&] {
    char buf[65536];
    for (;;) {
      pollfd pfd{p[0], POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) {
        if (done) break;
        continue;
      }
      const ssize_t n = ::read(p[0], buf, sizeof(buf));
      if (n <= 0) break;
      drained += static_cast<uint64_t>(n);
    }
  });
  log->reset();
  done = true;
  reader.join();
  ::close(p[0]);
  EXPECT_GT(drained, 0u);
}

}  // namespace
}  // namespace meshd::telemetry
