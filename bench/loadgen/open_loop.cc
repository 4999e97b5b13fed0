#include "open_loop.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/scoped_fd.h"
#include "common/status.h"
#include "http_response_parser.h"

namespace meshd::loadgen {

namespace {

using Nanos = int64_t;
constexpr Nanos kNsPerSec = 1'000'000'000;
// Pause between reconnect attempts after a failed connect, so a dead server does not turn
// the loop into a busy spin.
constexpr Nanos kReconnectBackoff = 10'000'000;
// Lateness is judged on the last kLagWindow dispatches, taking the smallest: a single
// scheduling hiccup at the very end is not "fell behind".
constexpr size_t kLagWindow = 10;
constexpr uint64_t kNoRequest = std::numeric_limits<uint64_t>::max();

Nanos nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<Nanos>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

struct Conn {
  enum class State { kClosed, kConnecting, kIdle, kBusy };
  ScopedFd fd;
  State state = State::kClosed;
  HttpResponseParser parser;
  size_t written = 0;             // bytes of the current request written
  uint64_t request = kNoRequest;  // index of the in-flight request
  Nanos intended = 0;             // its intended send time
  Nanos idle_since = 0;           // when the connection last became free
  Nanos retry_at = 0;             // kClosed: when to reconnect
  bool want_out = false;          // EPOLLOUT registered
};

class Generator {
 public:
  explicit Generator(const OpenLoopConfig& cfg)
      : cfg_(cfg),
        request_(absl::StrCat("GET ", cfg.path, " HTTP/1.1\r\nHost: ", cfg.host,
                              "\r\nUser-Agent: meshd-openloop\r\n\r\n")),
        conns_(static_cast<size_t>(cfg.connections)),
        buf_(64 * 1024) {
    warmup_count_ = static_cast<uint64_t>(std::ceil(cfg.warmup_s * cfg.rate - 1e-9));
    total_ = warmup_count_ + static_cast<uint64_t>(std::llround(cfg.duration_s * cfg.rate));
  }

  absl::StatusOr<OpenLoopResult> run();

 private:
  Nanos intended(uint64_t i) const {
    return t0_ + static_cast<Nanos>(static_cast<double>(i) * 1e9 / cfg_.rate);
  }
  bool measured(uint64_t i) const { return i >= warmup_count_ && i != kNoRequest; }

  void startConnect(size_t idx, Nanos now);
  void onConnected(size_t idx, Nanos now);
  void onEvent(size_t idx, uint32_t events);
  void readResponse(size_t idx);
  void writeRequest(size_t idx);
  void dispatch();
  void complete(size_t idx, Nanos now);
  // Closes the connection; a request in flight on it counts as an error. Reconnects at
  // `retry_at`.
  void closeConn(size_t idx, Nanos retry_at);
  void setWantOut(size_t idx, bool want);
  void makeIdle(size_t idx, Nanos now);

  const OpenLoopConfig& cfg_;
  const std::string request_;
  std::vector<Conn> conns_;
  std::vector<char> buf_;
  std::vector<size_t> idle_;  // indices of kIdle connections
  size_t closed_ = 0;         // connections in kClosed (waiting to reconnect)
  ScopedFd epoll_;
  Nanos t0_ = 0;
  uint64_t warmup_count_ = 0;
  uint64_t total_ = 0;
  uint64_t next_ = 0;  // next request to dispatch
  uint64_t in_flight_ = 0;
  std::array<Nanos, kLagWindow> behind_{};
  std::array<Nanos, kLagWindow> gen_lag_{};
  uint64_t lag_samples_ = 0;
  Nanos waited_ = 0;  // time blocked in epoll since t0
  OpenLoopResult result_;
};

void Generator::setWantOut(size_t idx, bool want) {
  Conn& c = conns_[idx];
  if (c.want_out == want) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  ev.data.u64 = idx;
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
  c.want_out = want;
}

void Generator::startConnect(size_t idx, Nanos now) {
  Conn& c = conns_[idx];
  const sockaddr* sa = reinterpret_cast<const sockaddr*>(&cfg_.target);
  ScopedFd fd(socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    result_.connect_errors++;
    c.retry_at = now + kReconnectBackoff;
    return;
  }
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const int rc = connect(fd.get(), sa, cfg_.target_len);
  if (rc != 0 && errno != EINPROGRESS) {
    result_.connect_errors++;
    c.retry_at = now + kReconnectBackoff;
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT;
  ev.data.u64 = idx;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) {
    result_.connect_errors++;
    c.retry_at = now + kReconnectBackoff;
    return;
  }
  c.fd = std::move(fd);
  c.want_out = true;
  c.state = Conn::State::kConnecting;
  closed_--;
  if (rc == 0) onConnected(idx, now);
}

void Generator::onConnected(size_t idx, Nanos now) {
  setWantOut(idx, false);
  makeIdle(idx, now);
}

void Generator::makeIdle(size_t idx, Nanos now) {
  Conn& c = conns_[idx];
  c.state = Conn::State::kIdle;
  c.request = kNoRequest;
  c.idle_since = now;
  idle_.push_back(idx);
}

void Generator::closeConn(size_t idx, Nanos retry_at) {
  Conn& c = conns_[idx];
  if (c.state == Conn::State::kClosed) return;
  if (c.state == Conn::State::kBusy) {
    in_flight_--;
    if (measured(c.request)) result_.errors++;
  } else if (c.state == Conn::State::kIdle) {
    idle_.erase(std::find(idle_.begin(), idle_.end(), idx));
  }
  c.fd.reset();  // closing removes it from the epoll set
  c.want_out = false;
  c.state = Conn::State::kClosed;
  c.request = kNoRequest;
  c.retry_at = retry_at;
  closed_++;
  result_.reconnects++;
}

void Generator::writeRequest(size_t idx) {
  Conn& c = conns_[idx];
  while (c.written < request_.size()) {
    const ssize_t n =
        send(c.fd.get(), request_.data() + c.written, request_.size() - c.written, MSG_NOSIGNAL);
    if (n > 0) {
      c.written += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      setWantOut(idx, true);
      return;
    } else {
      closeConn(idx, nowNs());
      return;
    }
  }
  setWantOut(idx, false);
}

void Generator::dispatch() {
  while (next_ < total_ && !idle_.empty()) {
    const Nanos t = intended(next_);
    const Nanos now = nowNs();
    if (t > now) return;
    const size_t idx = idle_.back();
    idle_.pop_back();
    Conn& c = conns_[idx];
    c.state = Conn::State::kBusy;
    c.request = next_;
    c.intended = t;
    c.written = 0;
    c.parser.reset();
    behind_[lag_samples_ % kLagWindow] = now - t;
    gen_lag_[lag_samples_ % kLagWindow] = now - std::max(t, c.idle_since);
    lag_samples_++;
    if (measured(next_)) result_.sent++;
    next_++;
    in_flight_++;
    writeRequest(idx);
  }
}

void Generator::complete(size_t idx, Nanos now) {
  Conn& c = conns_[idx];
  if (measured(c.request)) {
    // Microsecond resolution, rounded up so that no latency reads as zero.
    result_.latency_us.record(static_cast<uint64_t>((now - c.intended + 999) / 1000));
    const int status = c.parser.status();
    if (status >= 200 && status < 300) {
      result_.ok++;
    } else {
      result_.non_2xx++;
    }
  }
  in_flight_--;
  c.request = kNoRequest;
  // The connection stays usable only if the response said so and the request was fully
  // written (a server may answer early, e.g. with a 400, before reading all of it).
  if (c.parser.keepAlive() && c.written == request_.size()) {
    setWantOut(idx, false);
    makeIdle(idx, now);
  } else {
    c.state = Conn::State::kIdle;  // not an error: nothing in flight
    idle_.push_back(idx);
    closeConn(idx, now);
  }
}

void Generator::readResponse(size_t idx) {
  while (conns_[idx].state == Conn::State::kBusy || conns_[idx].state == Conn::State::kIdle) {
    Conn& c = conns_[idx];
    const ssize_t n = recv(c.fd.get(), buf_.data(), buf_.size(), 0);
    const Nanos now = nowNs();
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      closeConn(idx, now);
      return;
    }
    if (c.state == Conn::State::kIdle) {
      // EOF on an idle keep-alive connection is the server's right; bytes nobody asked for
      // mean the framing is off. Either way, start afresh.
      closeConn(idx, now);
      return;
    }
    if (n == 0) {
      if (c.parser.finishOnEof() == HttpResponseParser::Result::kComplete) {
        complete(idx, now);
      }
      closeConn(idx, now);
      return;
    }
    size_t consumed = 0;
    switch (c.parser.feed(std::string_view(buf_.data(), static_cast<size_t>(n)), &consumed)) {
      case HttpResponseParser::Result::kNeedMore:
        break;
      case HttpResponseParser::Result::kComplete:
        complete(idx, now);
        // Bytes past the response: the server sent something unsolicited.
        if (consumed < static_cast<size_t>(n)) closeConn(idx, now);
        return;
      case HttpResponseParser::Result::kError:
        closeConn(idx, now);
        return;
    }
  }
}

void Generator::onEvent(size_t idx, uint32_t events) {
  Conn& c = conns_[idx];
  const Nanos now = nowNs();
  if (c.state == Conn::State::kConnecting) {
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
      result_.connect_errors++;
      result_.reconnects--;  // closeConn counts a reconnect; this was no connection
      c.state = Conn::State::kIdle;
      idle_.push_back(idx);
      closeConn(idx, now + kReconnectBackoff);
      return;
    }
    onConnected(idx, now);
    return;
  }
  if ((events & EPOLLOUT) && c.state == Conn::State::kBusy && c.written < request_.size()) {
    writeRequest(idx);
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readResponse(idx);
}

absl::StatusOr<OpenLoopResult> Generator::run() {
  const Nanos start = nowNs();
  epoll_ = ScopedFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return errnoError(errno, "epoll_create1");
  std::vector<epoll_event> events(std::max<size_t>(64, conns_.size()));
  auto poll = [&](Nanos deadline) -> absl::Status {
    const Nanos before = nowNs();
    const Nanos wait = std::max<Nanos>(0, deadline - before);
    timespec ts{static_cast<time_t>(wait / kNsPerSec), static_cast<long>(wait % kNsPerSec)};
    const int n =
        epoll_pwait2(epoll_.get(), events.data(), static_cast<int>(events.size()), &ts, nullptr);
    if (n < 0 && errno != EINTR) return errnoError(errno, "epoll_pwait2");
    waited_ += nowNs() - before;
    for (int i = 0; i < n; i++) onEvent(static_cast<size_t>(events[i].data.u64), events[i].events);
    return absl::OkStatus();
  };

  // Connect everything before the schedule starts: connection setup is not part of any
  // request's latency here (the new-connections workload measures that).
  closed_ = conns_.size();
  for (size_t i = 0; i < conns_.size(); i++) startConnect(i, start);
  const Nanos connect_deadline = start + 5 * kNsPerSec;
  while (idle_.size() + closed_ < conns_.size() && nowNs() < connect_deadline) {
    RETURN_IF_ERROR(poll(connect_deadline));
  }
  if (idle_.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "could not connect any of ", conns_.size(),
        " connections to the target within 5 s: is the server listening on that address?"));
  }

  t0_ = nowNs();
  waited_ = 0;
  const Nanos hard_deadline = intended(total_) + cfg_.drain_timeout.count() * 1'000'000;
  while (true) {
    dispatch();
    Nanos now = nowNs();
    if (next_ >= total_ && in_flight_ == 0) break;
    if (now >= hard_deadline) break;
    Nanos wake = hard_deadline;
    if (next_ < total_ && !idle_.empty()) wake = std::min(wake, intended(next_));
    if (closed_ > 0) {
      for (size_t i = 0; i < conns_.size(); i++) {
        if (conns_[i].state != Conn::State::kClosed) continue;
        if (conns_[i].retry_at <= now) {
          startConnect(i, now);
          // A closed connection that reconnected at once may take a due request now.
          if (conns_[i].state == Conn::State::kIdle) wake = now;
        }
        if (conns_[i].state == Conn::State::kClosed) wake = std::min(wake, conns_[i].retry_at);
      }
    }
    RETURN_IF_ERROR(poll(wake));
  }

  // Whatever is still in flight or was never sent by the deadline got no response.
  for (size_t i = 0; i < conns_.size(); i++) {
    if (conns_[i].state == Conn::State::kBusy && measured(conns_[i].request)) result_.errors++;
  }
  for (uint64_t i = next_; i < total_; i++) {
    if (measured(i)) result_.errors++;
  }
  const size_t window = std::min<uint64_t>(lag_samples_, kLagWindow);
  if (window > 0) {
    result_.behind_schedule_ms = *std::min_element(behind_.begin(), behind_.begin() + window) / 1e6;
    result_.generator_lag_ms = *std::min_element(gen_lag_.begin(), gen_lag_.begin() + window) / 1e6;
  }
  const Nanos end = nowNs();
  result_.loop_busy = end > t0_ ? 1.0 - static_cast<double>(waited_) / (end - t0_) : 0.0;
  result_.elapsed_s = (end - start) / 1e9;
  return std::move(result_);
}

}  // namespace

absl::Status resolveTarget(const std::string& target, OpenLoopConfig* cfg) {
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == target.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("target \"", target, "\" is not HOST:PORT (IPv6 as [ADDR]:PORT)"));
  }
  std::string host = target.substr(0, colon);
  const std::string port = target.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve target \"", target, "\": ", gai_strerror(rc)));
  }
  std::memcpy(&cfg->target, res->ai_addr, res->ai_addrlen);
  cfg->target_len = res->ai_addrlen;
  freeaddrinfo(res);
  return absl::OkStatus();
}

absl::StatusOr<OpenLoopResult> runOpenLoop(const OpenLoopConfig& cfg) {
  if (!(cfg.rate > 0) || !(cfg.duration_s > 0) || cfg.warmup_s < 0 || cfg.connections < 1) {
    return absl::InvalidArgumentError(
        "need --rate > 0, --duration > 0, --warmup >= 0 and --connections >= 1");
  }
  if (cfg.target_len == 0) return absl::InvalidArgumentError("no target address");
  if (cfg.path.empty() || cfg.path[0] != '/' ||
      cfg.path.find_first_of(" \r\n") != std::string::npos ||
      cfg.host.find_first_of(" \r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        "--path must start with '/' and neither --path nor --host may contain spaces or line "
        "breaks");
  }
  Generator gen(cfg);
  return gen.run();
}

}  // namespace meshd::loadgen
