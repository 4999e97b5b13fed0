#include "telemetry/access_log.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace meshd::telemetry {

namespace {

constexpr char kHex[] = "0123456789abcdef";

void appendUint(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, static_cast<size_t>(end - buf));
}

void appendDigits(char* at, unsigned v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    at[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

// Bytes a JSON string can carry as they are (printable ASCII but '"' and '\\').
constexpr std::array<bool, 256> kPlain = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x7f; ++c) t[static_cast<size_t>(c)] = c != '"' && c != '\\';
  return t;
}();

void appendStringOrNull(std::string& out, std::string_view value) {
  if (value.empty()) {
    out.append("null");
  } else {
    appendJsonString(out, value);
  }
}

size_t countLines(std::string_view s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

uint64_t nextInstance() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

std::string_view accessLogProtocol(std::string_view record_protocol) {
  if (record_protocol == "http/1.1") return "HTTP/1.1";
  if (record_protocol == "http/2" || record_protocol == "grpc") return "HTTP/2";
  return record_protocol;
}

void appendJsonString(std::string& out, std::string_view value) {
  out.push_back('"');
  size_t i = 0;
  while (i < value.size()) {
    // A run of bytes that need no escaping.
    size_t run = i;
    while (run < value.size() && kPlain[static_cast<unsigned char>(value[run])]) ++run;
    out.append(value.data() + i, run - i);
    i = run;
    if (i == value.size()) break;
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x80) {
      const size_t n = utf8::sequenceLength(value, i);
      if (n == 0) {
        out.append("\\ufffd");
        ++i;
      } else {
        out.append(value.data() + i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default: {  // other control bytes and DEL
        const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
        out.append(esc, sizeof(esc));
      }
    }
    ++i;
  }
  out.push_back('"');
}

void appendJsonAddress(std::string& out, const SocketAddress& address) {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (address.ip.family != AF_INET && address.ip.family != AF_INET6) {
    out.append("null");
    return;
  }
  const uint8_t* bytes = address.ip.bytes.data();
  int family = address.ip.family;
  if (family == AF_INET6 && std::equal(kMapped, kMapped + 12, bytes)) {
    family = AF_INET;
    bytes += 12;
  }
  char ip[INET6_ADDRSTRLEN + 2] = {0};
  size_t len = 0;
  if (family == AF_INET) {
    // By hand: glibc's inet_ntop formats IPv4 with sprintf (a third of a line's cost).
    char* at = ip;
    for (int i = 0; i < 4; ++i) {
      if (i != 0) *at++ = '.';
      at = std::to_chars(at, ip + sizeof(ip), bytes[i]).ptr;
    }
    len = static_cast<size_t>(at - ip);
  } else {
    ip[0] = '[';
    inet_ntop(AF_INET6, bytes, ip + 1, INET6_ADDRSTRLEN);
    len = std::strlen(ip);
    ip[len++] = ']';
  }
  out.push_back('"');
  out.append(ip, len);
  out.push_back(':');
  appendUint(out, address.port);
  out.push_back('"');
}

void appendJsonTime(std::string& out, uint64_t unix_us) {
  // Civil date from days since 1970-01-01 (proleptic Gregorian; eras of 400 years).
  const uint64_t secs = unix_us / 1'000'000;
  const auto ms = static_cast<unsigned>(unix_us / 1000 % 1000);
  const auto sod = static_cast<unsigned>(secs % 86400);
  const int64_t z = static_cast<int64_t>(secs / 86400) + 719468;
  const int64_t era = z / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned day = doy - (153 * mp + 2) / 5 + 1;
  const unsigned month = mp < 10 ? mp + 3 : mp - 9;
  const auto year = static_cast<unsigned>(static_cast<int64_t>(yoe) + era * 400 + (month <= 2));
  // "YYYY-MM-DDTHH:MM:SS.mmmZ"
  char buf[26] = "\"0000-00-00T00:00:00.000Z";
  appendDigits(buf + 1, year % 10000, 4);
  appendDigits(buf + 6, month, 2);
  appendDigits(buf + 9, day, 2);
  appendDigits(buf + 12, sod / 3600, 2);
  appendDigits(buf + 15, sod / 60 % 60, 2);
  appendDigits(buf + 18, sod % 60, 2);
  appendDigits(buf + 21, ms, 3);
  out.append(buf, 25);
  out.push_back('"');
}

void formatAccessLogJson(const AccessLogEntry& e, std::string& out) {
  out.append("{\"start_time\":");
  appendJsonTime(out, e.start_unix_us);
  out.append(",\"method\":");
  appendStringOrNull(out, e.method);
  out.append(",\"path\":");
  appendStringOrNull(out, e.path);
  out.append(",\"protocol\":");
  appendStringOrNull(out, e.protocol);
  out.append(",\"response_code\":");
  appendUint(out, e.response_code);
  out.append(",\"response_flags\":");
  appendJsonString(out, e.response_flags.empty() ? std::string_view("-") : e.response_flags);
  out.append(",\"bytes_received\":");
  appendUint(out, e.bytes_received);
  out.append(",\"bytes_sent\":");
  appendUint(out, e.bytes_sent);
  out.append(",\"duration\":");
  appendUint(out, e.duration_us / 1000);
  out.append(",\"user_agent\":");
  appendStringOrNull(out, e.user_agent);
  out.append(",\"request_id\":");
  appendStringOrNull(out, e.request_id);
  out.append(",\"authority\":");
  appendStringOrNull(out, e.authority);
  out.append(",\"upstream_host\":");
  appendJsonAddress(out, e.upstream_host);
  out.append(",\"upstream_cluster\":");
  appendStringOrNull(out, e.upstream_cluster);
  out.append(",\"downstream_local_address\":");
  appendJsonAddress(out, e.downstream_local);
  out.append(",\"downstream_remote_address\":");
  appendJsonAddress(out, e.downstream_remote);
  if (e.grpc) {
    out.append(",\"grpc_status\":");
    appendStringOrNull(out, e.grpc_status);
  }
  out.append(",\"attempts\":");
  appendUint(out, e.attempts);
  out.append("}\n");
}

// ---------------------------------------------------------------------------------------
// AccessLog

// A worker's chunk between two log() calls. The worker takes it with exchange(nullptr)
// and puts it back with a compare-exchange; the flusher steals idle ones the same way.
// Whoever finds the slot empty uses another chunk, so no one ever waits.
struct alignas(64) AccessLog::Shard {
  std::atomic<std::string*> slot{nullptr};
  std::atomic<uint64_t> lines{0};
};

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::open(const std::string& path,
                                                           Options options) {
  if (path.empty()) return absl::InvalidArgumentError("access log: empty path");
  if (options.shards == 0) options.shards = 1;
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::Status(absl::ErrnoToStatusCode(errno),
                        absl::StrCat("opening access log ", path, ": ", std::strerror(errno),
                                     " (is the directory there and writable?)"));
  }
  return std::unique_ptr<AccessLog>(new AccessLog(path, fd, std::move(options)));
}

AccessLog::AccessLog(std::string path, int fd, Options options)
    : path_(std::move(path)),
      fd_(fd),
      options_(std::move(options)),
      shards_(new Shard[options_.shards]),
      instance_(nextInstance()) {
  flusher_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  flusher_.join();
  writeOut(true);
  ::close(fd_);
  for (unsigned i = 0; i < options_.shards; ++i) delete shards_[i].slot.load();
  for (std::string* c : queued_) delete c;
  for (std::string* c : free_) delete c;
}

std::string* AccessLog::takeChunk() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!free_.empty()) {
      std::string* c = free_.back();
      free_.pop_back();
      return c;
    }
  }
  auto* c = new std::string();
  c->reserve(options_.flush_bytes + 16 * 1024);
  return c;
}

void AccessLog::queueChunk(std::string* chunk) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (queued_bytes_ + chunk->size() > options_.max_queued_bytes) {
      lost_lines_.fetch_add(countLines(*chunk), std::memory_order_relaxed);
      chunk->clear();
      free_.push_back(chunk);
      return;
    }
    queued_bytes_ += chunk->size();
    queued_.push_back(chunk);
    wake = chunk->size() >= options_.flush_bytes;
  }
  if (wake) cv_.notify_one();
}

void AccessLog::log(const AccessLogEntry& entry) {
  // This thread's shard, per AccessLog instance (tests run several in one process).
  thread_local uint64_t cached_instance = 0;
  thread_local unsigned cached_shard = 0;
  if (cached_instance != instance_) {
    cached_instance = instance_;
    cached_shard = next_shard_.fetch_add(1, std::memory_order_relaxed) % options_.shards;
  }
  Shard& shard = shards_[cached_shard];
  std::string* chunk = shard.slot.exchange(nullptr, std::memory_order_acquire);
  if (chunk == nullptr) chunk = takeChunk();
  formatAccessLogJson(entry, *chunk);
  shard.lines.fetch_add(1, std::memory_order_relaxed);
  if (chunk->size() >= options_.flush_bytes) {
    queueChunk(chunk);
    return;
  }
  std::string* expected = nullptr;
  if (!shard.slot.compare_exchange_strong(expected, chunk, std::memory_order_release,
                                          std::memory_order_relaxed)) {
    queueChunk(chunk);  // another thread of this shard parked one meanwhile
  }
}

void AccessLog::flush() { writeOut(true); }

void AccessLog::run() {
  const auto interval =
      std::chrono::milliseconds(std::max<uint32_t>(1, options_.flush_interval_ms));
  auto next = std::chrono::steady_clock::now() + interval;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    const bool woke = cv_.wait_until(l, next, [&] {
      if (stop_) return true;
      for (const std::string* c : queued_) {
        if (c->size() >= options_.flush_bytes) return true;
      }
      return false;
    });
    if (stop_) break;
    const bool tick = !woke || std::chrono::steady_clock::now() >= next;
    l.unlock();
    writeOut(tick);
    l.lock();
    if (tick) next = std::chrono::steady_clock::now() + interval;
  }
}

void AccessLog::writeOut(bool all) {
  std::lock_guard<std::mutex> w(write_mu_);
  std::vector<std::string*>& batch = batch_;  // reused: no allocation per flush
  batch.clear();
  {
    std::lock_guard<std::mutex> l(mu_);
    batch.swap(queued_);
  }
  if (all) {
    for (unsigned i = 0; i < options_.shards; ++i) {
      std::string* c = shards_[i].slot.exchange(nullptr, std::memory_order_acquire);
      if (c != nullptr) batch.push_back(c);
    }
  }
  size_t written = 0;
  for (std::string* c : batch) {
    if (!c->empty()) writeChunk(*c);
    written += c->size();
    c->clear();
  }
  std::lock_guard<std::mutex> l(mu_);
  queued_bytes_ -= std::min(queued_bytes_, written);
  free_.insert(free_.end(), batch.begin(), batch.end());
  batch.clear();
}

void AccessLog::writeChunk(std::string& chunk) {
  size_t off = 0;
  while (off < chunk.size()) {
    const ssize_t n = ::write(fd_, chunk.data() + off, chunk.size() - off);
    if (n > 0) {
      off += static_cast<size_t>(n);
      bytes_written_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const int err = n < 0 ? errno : EIO;
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    lost_lines_.fetch_add(countLines(std::string_view(chunk).substr(off)),
                          std::memory_order_relaxed);
    if (!error_reported_.exchange(true)) {
      const std::string msg = absl::StrCat(
          "access log ", path_, ": write failed: ", std::strerror(err),
          "; its lines are lost (reported once; later failures are only counted: meshctl status)");
      if (options_.on_error) {
        options_.on_error(msg);
      } else {
        std::fprintf(stderr, "meshd: %s\n", msg.c_str());
      }
    }
    return;
  }
}

AccessLogStats AccessLog::stats() const {
  AccessLogStats s;
  for (unsigned i = 0; i < options_.shards; ++i) {
    s.lines += shards_[i].lines.load(std::memory_order_relaxed);
  }
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  s.write_errors = write_errors_.load(std::memory_order_relaxed);
  s.lost_lines = lost_lines_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace meshd::telemetry
