// The L7 proxy's optional access log (meshd --access-log PATH): one JSON object per line
// with the keys of Istio's JSON access-log format (meshConfig.accessLogEncoding: JSON,
// Envoy command operators) where one exists, plus meshd's `attempts`. docs/metrics.md,
// "Access log", has the format, an example and the field table.
//
// Buffering (no lock, no syscall and, once warmed up, no allocation per line):
//
//   worker thread ──format──► its shard's chunk (taken from / returned to an atomic slot)
//        │ chunk ≥ flush_bytes: queued (mutex, once per ~32 KiB)        ▲ 1 s: the flusher
//        ▼                                                              │ takes idle chunks
//   flusher thread ──one write() per chunk (O_APPEND)──► file / pipe ───┘
//
// Workers never call write(): a slow or blocked reader of the file (a full pipe) delays
// only the flusher; past max_queued_bytes waiting, new lines are dropped and counted.
// Write errors (ENOSPC, EPIPE, ...) are counted and logged once; the proxy goes on.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/net.h"

namespace meshd::telemetry {

// One line's data. Views must stay valid during AccessLog::log / formatAccessLogJson.
// Empty strings and unset addresses print as null (Envoy's JSON format for a missing
// value), except response_flags, which prints "-" when empty (as Envoy).
struct AccessLogEntry {
  uint64_t start_unix_us = 0;  // wall clock, µs since the Unix epoch
  std::string_view method;
  std::string_view path;
  std::string_view protocol;  // "HTTP/1.1", "HTTP/2", "tcp" (see accessLogProtocol)
  uint16_t response_code = 0;
  std::string_view response_flags;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t duration_us = 0;  // printed in whole milliseconds (Envoy's %DURATION%)
  std::string_view user_agent;
  std::string_view request_id;
  std::string_view authority;
  SocketAddress upstream_host;
  std::string_view upstream_cluster;
  SocketAddress downstream_local;   // the original destination (the VIP:port dialled)
  SocketAddress downstream_remote;  // the client
  bool grpc = false;                // prints grpc_status (null when none was seen)
  std::string_view grpc_status;
  uint32_t attempts = 1;
};

// Envoy's %PROTOCOL% for meshd's RequestRecord::protocol: "http/1.1" -> "HTTP/1.1",
// "http/2" and "grpc" -> "HTTP/2"; anything else ("tcp") unchanged.
std::string_view accessLogProtocol(std::string_view record_protocol);

// Appends `entry` as one JSON object and '\n' to `out`.
void formatAccessLogJson(const AccessLogEntry& entry, std::string& out);
// Appends `value` as a quoted JSON string: '"', '\\' and control bytes escaped, valid
// UTF-8 copied, each byte of an invalid UTF-8 sequence replaced by \ufffd.
void appendJsonString(std::string& out, std::string_view value);
// Appends "10.0.0.1:80", "[fd00::1]:80" (Envoy's form; IPv4-mapped IPv6 as IPv4), or
// null for an unset address.
void appendJsonAddress(std::string& out, const SocketAddress& address);
// Appends RFC 3339 UTC with milliseconds, quoted: "2026-11-25T04:36:47.123Z".
void appendJsonTime(std::string& out, uint64_t unix_us);

struct AccessLogStats {
  uint64_t lines = 0;          // formatted
  uint64_t bytes_written = 0;  // accepted by write()
  uint64_t write_errors = 0;   // failed write() calls (their chunk is lost)
  uint64_t lost_lines = 0;     // in failed writes, or dropped while too much was queued
};

class AccessLog {
 public:
  struct Options {
    // A worker's chunk is queued for writing once it holds this many bytes; the flusher
    // also writes every chunk at least every flush_interval_ms.
    size_t flush_bytes = 32 * 1024;
    uint32_t flush_interval_ms = 1000;
    // Bytes queued and not yet written past which new lines are dropped (counted).
    size_t max_queued_bytes = 8 * 1024 * 1024;
    // Worker buffers; threads beyond this share one (correct, slightly slower).
    unsigned shards = 16;
    // Told (once, on the flusher thread) about the first failed write; null = stderr.
    std::function<void(std::string_view message)> on_error;
  };

  // Opens `path` for appending (O_WRONLY|O_APPEND|O_CREAT, mode 0644; "/dev/stdout" and
  // "/dev/stderr" are fine) and starts the flusher thread. Fails with the errno of open()
  // naming the path.
  static absl::StatusOr<std::unique_ptr<AccessLog>> open(const std::string& path, Options options);
  static absl::StatusOr<std::unique_ptr<AccessLog>> open(const std::string& path) {
    return open(path, Options());
  }
  // Writes what is buffered, stops the flusher, closes the file. Calls to log() must
  // have ended (the proxy is stopped first).
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Formats one line into this thread's buffer. Any thread; never blocks on I/O.
  void log(const AccessLogEntry& entry);
  // Writes every line logged before the call (by any thread whose log() returned) now.
  void flush();
  AccessLogStats stats() const;
  const std::string& path() const { return path_; }

 private:
  struct Shard;
  AccessLog(std::string path, int fd, Options options);
  std::string* takeChunk();
  void queueChunk(std::string* chunk);
  void run();
  // Writes the queued chunks, then (`all`) every shard's chunk. Flusher thread or flush().
  void writeOut(bool all);
  void writeChunk(std::string& chunk);

  const std::string path_;
  const int fd_;
  const Options options_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<unsigned> next_shard_{0};
  const uint64_t instance_;

  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::atomic<uint64_t> lost_lines_{0};
  std::atomic<bool> error_reported_{false};

  // Full chunks waiting for the flusher and empty ones to reuse. Held briefly, about
  // once per flush_bytes of log per worker; never while formatting or writing.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string*> queued_;
  std::vector<std::string*> free_;
  size_t queued_bytes_ = 0;
  bool stop_ = false;
  // Serialises write() between the flusher and flush() (one write per chunk, in order).
  std::mutex write_mu_;
  std::vector<std::string*> batch_;  // write_mu_: the chunks being written
  std::thread flusher_;
};

using AccessLogPtr = std::unique_ptr<AccessLog>;

}  // namespace meshd::telemetry
