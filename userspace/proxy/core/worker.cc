#include "proxy/core/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>

#include "common/status.h"
#include "proxy/core/h2.h"
#include "proxy/core/session.h"

namespace meshd::proxy {
namespace {

// Timers (request, head, connect, idle) are checked this often; the granularity of every
// timeout. A timer wheel can replace the scan when connection counts make it matter.
constexpr uint64_t kSweepMs = 50;
constexpr int kMaxEvents = 256;

uint64_t monotonicUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

void setNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Buffer

namespace {
std::atomic<uint64_t> g_buffer_growths{0};
}  // namespace

uint64_t Buffer::growths() { return g_buffer_growths.load(std::memory_order_relaxed); }

ssize_t Buffer::readFrom(int fd, size_t max) {
  reserveTail(max);
  const ssize_t n = ::read(fd, data_.get() + end_, max);
  if (n > 0) end_ += static_cast<size_t>(n);
  return n;
}

ssize_t Buffer::writeTo(int fd) {
  const ssize_t n = ::send(fd, data_.get() + begin_, size(), MSG_NOSIGNAL);
  if (n > 0) consume(static_cast<size_t>(n));
  return n;
}

void Buffer::reserveTail(size_t n) {
  if (cap_ - end_ >= n) return;
  if (begin_ > 0) {
    std::memmove(data_.get(), data_.get() + begin_, size());
    end_ -= begin_;
    begin_ = 0;
    if (cap_ - end_ >= n) return;
  }
  g_buffer_growths.fetch_add(1, std::memory_order_relaxed);
  const size_t cap = std::max(cap_ * 2, end_ + n);
  std::unique_ptr<char[]> bigger(new char[cap]);
  if (end_ > 0) std::memcpy(bigger.get(), data_.get(), end_);
  data_ = std::move(bigger);
  cap_ = cap;
}

// ---------------------------------------------------------------------------------------
// UpstreamConn

UpstreamConn::UpstreamConn(Worker& w, int fd_in, const SocketAddress& a, size_t in_capacity,
                           size_t out_capacity)
    : worker(w), fd(fd_in), addr(a), in(in_capacity), out(out_capacity) {}

void UpstreamConn::onEvent(uint32_t events) {
  if (dead) return;
  if (connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    connecting = false;
    if (err == 0 && !(events & EPOLLERR)) {
      connected_once = true;
    } else {
      failed = true;
      error = err != 0 ? err : ECONNREFUSED;
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) readable = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) hup = true;
  if (events & EPOLLOUT) writable = true;
  if (owner != nullptr) {
    owner->drive();
  } else {
    worker.onPooledEvent(this);
  }
}

// ---------------------------------------------------------------------------------------
// Worker

Worker::Worker(const ProxyOptions& options, Router& router, OriginalDst& original_dst,
               Observer* observer, ScopedFd listener)
    : options_(options),
      router_(router),
      original_dst_(original_dst),
      observer_(observer),
      listener_(std::move(listener)),
      in_limit_(std::max(options.max_buffer_bytes, options.limits.max_head_bytes + 1)) {
  listener_tag_.worker = this;
  listener_tag_.listener = true;
  wake_tag_.worker = this;
  wake_tag_.listener = false;
}

absl::StatusOr<std::unique_ptr<Worker>> Worker::create(const ProxyOptions& options, Router& router,
                                                       OriginalDst& original_dst,
                                                       Observer* observer, ScopedFd listener) {
  std::unique_ptr<Worker> w(
      new Worker(options, router, original_dst, observer, std::move(listener)));
  w->epoll_ = ScopedFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!w->epoll_.valid()) return errnoError(errno, "epoll_create1 for a proxy worker");
  w->wake_ = ScopedFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!w->wake_.valid()) return errnoError(errno, "eventfd for a proxy worker");
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: accept until EAGAIN each time anyway
  ev.data.ptr = static_cast<EventHandler*>(&w->listener_tag_);
  if (::epoll_ctl(w->epoll_.get(), EPOLL_CTL_ADD, w->listener_.get(), &ev) != 0) {
    return errnoError(errno, "epoll_ctl ADD of the proxy listener");
  }
  ev.data.ptr = static_cast<EventHandler*>(&w->wake_tag_);
  if (::epoll_ctl(w->epoll_.get(), EPOLL_CTL_ADD, w->wake_.get(), &ev) != 0) {
    return errnoError(errno, "epoll_ctl ADD of the proxy worker's eventfd");
  }
  uint64_t seed[2];
  if (::getrandom(seed, sizeof(seed), 0) != static_cast<ssize_t>(sizeof(seed))) {
    return errnoError(errno, "getrandom for x-request-id generation");
  }
  w->rng_[0] = seed[0] | 1;
  w->rng_[1] = seed[1];
  return w;
}

Worker::~Worker() {
  for (Session* s : sessions_) delete s;
  for (auto& [addr, conns] : pool_) {
    for (UpstreamConn* c : conns) delete c;
  }
  for (Session* s : dead_sessions_) delete s;
  for (UpstreamConn* c : dead_upstreams_) delete c;
  for (auto& [addr, conns] : h2_pool_) {
    for (H2Upstream* c : conns) delete c;
  }
  for (H2Upstream* c : dead_h2_) delete c;
}

void Worker::requestStop() {
  stop_requested_ = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

void Worker::updateClock() {
  now_us_ = monotonicUs();
  if (now_us_ >= offset_next_us_) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const uint64_t real =
        static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
    now_us_ = monotonicUs();
    unix_offset_us_ = real - std::min(real, now_us_);
    offset_next_us_ = now_us_ + 1'000'000;
  }
}

void Worker::run() {
  epoll_event events[kMaxEvents];
  updateClock();
  last_sweep_ms_ = nowMs();
  while (!stopping_ && !stop_requested_) {
    int timeout = (sessions_.empty() && pooled_count_ == 0 && h2_count_ == 0)
                      ? -1
                      : static_cast<int>(kSweepMs);
    timeout = waitTimeoutMs(timeout);
    if (!again_.empty()) timeout = 0;
    const int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, timeout);
    updateClock();
    for (int i = 0; i < n; ++i) {
      static_cast<EventHandler*>(events[i].data.ptr)->onEvent(events[i].events);
    }
    if (!timers_.empty() && timers_.front().at <= nowMs()) fireTimers();
    if (!again_.empty()) {
      again_batch_.clear();
      again_batch_.swap(again_);
      for (size_t i = 0; i < again_batch_.size(); ++i) {
        Session* s = again_batch_[i];
        if (s == nullptr) continue;  // closed meanwhile
        s->queued = false;
        s->drive();
      }
      again_batch_.clear();
    }
    if (nowMs() >= last_sweep_ms_ + kSweepMs) {
      last_sweep_ms_ = nowMs();
      sweep();
    }
    flushDirty();
    for (Session* s : dead_sessions_) delete s;
    dead_sessions_.clear();
    for (UpstreamConn* c : dead_upstreams_) delete c;
    dead_upstreams_.clear();
    for (H2Upstream* c : dead_h2_) delete c;
    dead_h2_.clear();
  }
  // Shutdown: close everything this worker owns.
  while (!sessions_.empty()) sessions_.back()->abort();
  for (auto& [addr, conns] : pool_) {
    for (UpstreamConn* c : conns) {
      c->pooled = false;
      destroy(c);
    }
    conns.clear();
  }
  pool_.clear();
  std::vector<H2Upstream*> h2;
  for (auto& [addr, conns] : h2_pool_) h2.insert(h2.end(), conns.begin(), conns.end());
  for (H2Upstream* c : h2) destroy(c, http2::kCancel, false);
  h2_pool_.clear();
  for (Session* s : dead_sessions_) delete s;
  dead_sessions_.clear();
  for (UpstreamConn* c : dead_upstreams_) delete c;
  dead_upstreams_.clear();
  for (H2Upstream* c : dead_h2_) delete c;
  dead_h2_.clear();
  listener_.reset();
}

void Worker::acceptAll() {
  while (true) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    const int fd = ::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN, or EMFILE & co (level-triggered: retried on the next wakeup)
    }
    counters.accepted.fetch_add(1, std::memory_order_relaxed);
    setNoDelay(fd);
    const SocketAddress peer = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    const std::optional<SocketAddress> orig = original_dst_.lookup(fd, peer);
    if (!orig.has_value()) {
      counters.orig_dst_unknown.fetch_add(1, std::memory_order_relaxed);
      ::close(fd);
      continue;
    }
    SocketAddress upstream;
    std::string_view cluster;
    uint64_t via = 0;
    if (!router_.routeConnectionFrom(*orig, peer, upstream, cluster, via)) {
      counters.no_route.fetch_add(1, std::memory_order_relaxed);
      ::close(fd);
      continue;
    }
    auto* s = new Session(*this, fd, peer, *orig, cluster, upstream, via);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = static_cast<EventHandler*>(s);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      delete s;  // closes fd
      continue;
    }
    s->index = sessions_.size();
    sessions_.push_back(s);
    s->start();
    s->drive();
  }
}

int Worker::openUpstreamSocket(const SocketAddress& addr, uint64_t via, int* err,
                               bool* connecting) {
  if (via != 0) {
    if (options_.connector == nullptr) {
      *err = ENETUNREACH;
      return -1;
    }
    counters.upstream_connects.fetch_add(1, std::memory_order_relaxed);
    *connecting = false;
    return options_.connector->open(addr, via, err);
  }
  const int fd = ::socket(addr.ip.family == AF_INET6 ? AF_INET6 : AF_INET,
                          SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  setNoDelay(fd);
  if (options_.upstream_mark != 0 && ::setsockopt(fd, SOL_SOCKET, SO_MARK, &options_.upstream_mark,
                                                  sizeof(options_.upstream_mark)) != 0) {
    *err = errno;  // EPERM without CAP_NET_ADMIN: meshd has it (checked at start-up)
    ::close(fd);
    return -1;
  }
  counters.upstream_connects.fetch_add(1, std::memory_order_relaxed);
  sockaddr_storage ss;
  const socklen_t len = addr.toSockaddr(&ss);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  if (rc != 0 && errno != EINPROGRESS) {
    *err = errno;
    ::close(fd);
    return -1;
  }
  *connecting = rc != 0;
  return fd;
}

UpstreamConn* Worker::connect(const SocketAddress& addr, uint64_t via, int* err) {
  bool connecting = false;
  const int fd = openUpstreamSocket(addr, via, err, &connecting);
  if (fd < 0) return nullptr;
  auto* c = new UpstreamConn(*this, fd, addr, in_limit_, options_.max_buffer_bytes);
  c->via = via;
  c->connecting = connecting;
  c->connected_once = !connecting;
  c->writable = !connecting;
  c->deadline_ms = nowMs() + options_.connect_timeout_ms;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = static_cast<EventHandler*>(c);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    *err = errno;
    delete c;
    return nullptr;
  }
  return c;
}

void Worker::learnMaxStreams(const SocketAddress& addr, uint32_t max_streams) {
  h2_max_streams_[addr] = max_streams;
}

H2Upstream* Worker::acquireH2(const SocketAddress& addr, uint64_t via, int* err) {
  std::vector<H2Upstream*>& conns = h2_pool_[UpstreamKey{addr, via}];
  auto learned = h2_max_streams_.find(addr);
  const uint32_t assumed = learned == h2_max_streams_.end()
                               ? options_.h2_limits.max_concurrent_streams
                               : std::max<uint32_t>(1, learned->second);
  for (H2Upstream* c : conns) {
    if (c->usable(assumed)) return c;
  }
  bool connecting = false;
  const int fd = openUpstreamSocket(addr, via, err, &connecting);
  if (fd < 0) return nullptr;
  auto* c = new H2Upstream(*this, fd, addr, connecting);
  c->via = via;
  c->deadline_ms = nowMs() + options_.connect_timeout_ms;
  if (absl::Status st = c->init(options_.h2_limits); !st.ok()) {
    *err = EINVAL;  // limits were validated at Proxy::start; not expected
    delete c;
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = static_cast<EventHandler*>(c);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    *err = errno;
    delete c;
    return nullptr;
  }
  conns.push_back(c);
  ++h2_count_;
  return c;
}

void Worker::destroy(H2Upstream* c, uint32_t code, bool connect_failed) {
  if (c->dead) return;
  c->dead = true;
  if (c->dirty) {
    for (H2Upstream*& d : h2_dirty_) {
      if (d == c) d = nullptr;
    }
    c->dirty = false;
  }
  auto it = h2_pool_.find(UpstreamKey{c->addr, c->via});
  if (it != h2_pool_.end()) {
    std::vector<H2Upstream*>& v = it->second;
    auto pos = std::find(v.begin(), v.end(), c);
    if (pos != v.end()) {
      *pos = v.back();
      v.pop_back();
      --h2_count_;
    }
  }
  c->fd.reset();
  // Tell every stream; their sessions answer or reset their clients.
  absl::flat_hash_map<int32_t, H2Stream*> streams;
  streams.swap(c->streams);
  for (auto& [id, st] : streams) {
    st->up = nullptr;
    st->conn->upClosed(*st, code, connect_failed);
  }
  dead_h2_.push_back(c);
}

void Worker::flushLater(H2Upstream* c) {
  if (c->dirty || c->dead) return;
  c->dirty = true;
  h2_dirty_.push_back(c);
}

void Worker::flushDirty() {
  // flush() may schedule sessions (onSendReady) but never marks another connection dirty.
  for (size_t i = 0; i < h2_dirty_.size(); ++i) {
    H2Upstream* c = h2_dirty_[i];
    if (c == nullptr) continue;
    c->dirty = false;
    c->flush();
  }
  h2_dirty_.clear();
}

UpstreamConn* Worker::acquire(const SocketAddress& addr, uint64_t via, int* err, bool* reused) {
  *reused = false;
  auto it = pool_.find(UpstreamKey{addr, via});
  if (it != pool_.end()) {
    std::vector<UpstreamConn*>& conns = it->second;
    while (!conns.empty()) {
      UpstreamConn* c = conns.back();
      conns.pop_back();
      --pooled_count_;
      c->pooled = false;
      bool alive = !c->failed && !c->eof && c->in.empty();
      // A connection the server closed (or wrote to) while idle is never handed out: the
      // event may not have been processed yet, so ask the socket — when it has been idle
      // for a second or more. Servers close idle connections after seconds, not within
      // the same moment they answered; a keep-alive stream of requests skips the syscall.
      const uint64_t idle_ms = nowMs() + options_.upstream_idle_ms -
                               std::min(c->deadline_ms, nowMs() + options_.upstream_idle_ms);
      if (alive && !c->connecting && !c->hup && idle_ms >= 1000) {
        char byte;
        const ssize_t n = ::recv(c->fd.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        alive = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      } else if (c->hup) {
        alive = false;
      }
      if (alive) {
        *reused = c->exchanges > 0;
        if (!c->connecting) c->writable = true;
        return c;
      }
      destroy(c);
    }
  }
  return connect(addr, via, err);
}

void Worker::release(UpstreamConn* c) {
  c->owner = nullptr;
  if (c->dead || c->failed || c->eof || !c->in.empty() || !c->out.empty() || c->write_shut) {
    destroy(c);
    return;
  }
  c->pooled = true;
  if (!c->connecting) c->deadline_ms = nowMs() + options_.upstream_idle_ms;
  pool_[UpstreamKey{c->addr, c->via}].push_back(c);
  ++pooled_count_;
}

void Worker::onPooledEvent(UpstreamConn* c) {
  // Idle: any byte or EOF from the server means the connection cannot be reused.
  if (c->failed || (c->readable) || c->eof) {
    removeFromPool(c);
    destroy(c);
    return;
  }
  if (!c->connecting && c->connected_once && c->exchanges == 0) {
    c->deadline_ms = nowMs() + options_.upstream_idle_ms;
  }
}

void Worker::removeFromPool(UpstreamConn* c) {
  if (!c->pooled) return;
  c->pooled = false;
  auto it = pool_.find(UpstreamKey{c->addr, c->via});
  if (it == pool_.end()) return;
  std::vector<UpstreamConn*>& v = it->second;
  auto pos = std::find(v.begin(), v.end(), c);
  if (pos != v.end()) {
    *pos = v.back();
    v.pop_back();
    --pooled_count_;
  }
}

void Worker::destroy(UpstreamConn* c) {
  if (c->dead) return;
  removeFromPool(c);
  c->dead = true;
  c->owner = nullptr;
  c->fd.reset();  // also leaves the epoll set
  dead_upstreams_.push_back(c);
}

void Worker::wakeAt(Session* session, uint64_t at_ms) {
  timers_.push_back(Timer{at_ms, session});
  std::push_heap(timers_.begin(), timers_.end(), Later());
  session->timers++;
}

void Worker::fireTimers() {
  const uint64_t now = nowMs();
  while (!timers_.empty() && timers_.front().at <= now) {
    std::pop_heap(timers_.begin(), timers_.end(), Later());
    Session* s = timers_.back().session;
    timers_.pop_back();
    if (s == nullptr) continue;  // destroyed meanwhile
    s->timers--;
    if (!s->dead) s->onTimer(now);
  }
}

int Worker::waitTimeoutMs(int sweep_timeout) const {
  if (timers_.empty()) return sweep_timeout;
  const uint64_t at = timers_.front().at;
  const uint64_t now = nowMs();
  // The clock is read in µs and compared in ms: wait until the next whole millisecond
  // after `at` rather than wake early and spin.
  const uint64_t wait = at <= now ? 0 : at - now;
  if (sweep_timeout < 0 || wait < static_cast<uint64_t>(sweep_timeout)) {
    return static_cast<int>(wait);
  }
  return sweep_timeout;
}

void Worker::destroy(Session* s) {
  if (s->dead) return;
  s->dead = true;
  if (s->timers != 0) {
    for (Timer& t : timers_) {
      if (t.session == s) t.session = nullptr;
    }
    s->timers = 0;
  }
  if (s->queued) {
    for (Session*& q : again_) {
      if (q == s) q = nullptr;
    }
    for (Session*& q : again_batch_) {
      if (q == s) q = nullptr;
    }
  }
  Session* last = sessions_.back();
  last->index = s->index;
  sessions_[s->index] = last;
  sessions_.pop_back();
  dead_sessions_.push_back(s);
}

void Worker::schedule(Session* s) {
  if (s->queued || s->dead) return;
  s->queued = true;
  again_.push_back(s);
}

void Worker::sweep() {
  const uint64_t now = nowMs();
  // Sessions may close (and leave sessions_) while we iterate: walk backwards by index.
  for (size_t i = sessions_.size(); i > 0; --i) {
    if (i - 1 < sessions_.size()) sessions_[i - 1]->sweep(now);
  }
  for (auto& [addr, conns] : pool_) {
    for (size_t i = conns.size(); i > 0; --i) {
      UpstreamConn* c = conns[i - 1];
      if (now >= c->deadline_ms) destroy(c);
    }
  }
  // HTTP/2 upstreams: connect timeout (streams get 503 UF), idle expiry without streams.
  std::vector<H2Upstream*>& expired = h2_expired_;
  expired.clear();
  for (auto& [addr, conns] : h2_pool_) {
    for (H2Upstream* c : conns) {
      if (c->connecting ? now >= c->deadline_ms
                        : (c->streams.empty() && c->idle_since_ms != 0 &&
                           now >= c->idle_since_ms + options_.upstream_idle_ms)) {
        expired.push_back(c);
      }
    }
  }
  for (H2Upstream* c : expired) destroy(c, http2::kCancel, c->connecting);
}

uint64_t Worker::random() {
  // xorshift128+ seeded from getrandom(): ids must be unique, not secret.
  uint64_t s1 = rng_[0];
  const uint64_t s0 = rng_[1];
  rng_[0] = s0;
  s1 ^= s1 << 23;
  rng_[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
  return rng_[1] + s0;
}

void Worker::newRequestId(char out[36]) {
  uint8_t b[16];
  const uint64_t hi = random(), lo = random();
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    b[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // variant 10xx
  constexpr char kHex[] = "0123456789abcdef";
  size_t o = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = kHex[b[i] >> 4];
    out[o++] = kHex[b[i] & 0xf];
  }
}

}  // namespace meshd::proxy
