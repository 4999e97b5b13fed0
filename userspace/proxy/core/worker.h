// Internal to meshd_proxy_core: one worker = one thread, one edge-triggered epoll, one
// SO_REUSEPORT listener, its downstream sessions and its upstream connection pool. Nothing
// here is shared with another worker.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/net.h"
#include "common/scoped_fd.h"
#include "proxy/core/buffer.h"
#include "proxy/core/proxy.h"

namespace meshd::proxy {

class Worker;
class Session;
class H2Upstream;

// Receives the epoll events of one file descriptor (epoll_event.data.ptr).
class EventHandler {
 public:
  virtual void onEvent(uint32_t events) = 0;

 protected:
  ~EventHandler() = default;
};

// One connection to an upstream. Owned by a Session while it carries that session's
// exchange (or opaque relay), otherwise idle in its worker's pool.
// What the upstream pools are keyed by: the endpoint and how it is reached
// (RouteDecision::via).
struct UpstreamKey {
  SocketAddress addr;
  uint64_t via = 0;
  friend bool operator==(const UpstreamKey&, const UpstreamKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const UpstreamKey& k) {
    return H::combine(std::move(h), k.addr, k.via);
  }
};

class UpstreamConn final : public EventHandler {
 public:
  UpstreamConn(Worker& worker, int fd, const SocketAddress& addr, size_t in_capacity,
               size_t out_capacity);
  void onEvent(uint32_t events) override;

  Worker& worker;
  ScopedFd fd;
  SocketAddress addr;
  uint64_t via = 0;
  Buffer in;   // bytes from the upstream, not yet passed on
  Buffer out;  // bytes for the upstream, not yet written
  Session* owner = nullptr;
  bool connecting = true;
  bool connected_once = false;
  bool failed = false;  // connect failed, or a read/write error (errno in `error`)
  int error = 0;
  bool readable = false;
  bool writable = false;
  // The peer hung up or errored (EPOLLRDHUP/HUP/ERR seen): read until 0 or EAGAIN. Until
  // then a short read means the receive queue is empty (edge-triggered epoll reports
  // whatever arrives later as a new event), which saves one read() per message.
  bool hup = false;
  bool eof = false;
  bool write_shut = false;
  bool pooled = false;
  bool dead = false;
  uint64_t deadline_ms = 0;  // connect deadline; idle expiry while pooled
  uint32_t exchanges = 0;    // requests carried so far (> 0: a reused connection)
};

struct WorkerCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> orig_dst_unknown{0};
  std::atomic<uint64_t> no_route{0};
  std::atomic<uint64_t> upstream_connects{0};
  std::atomic<uint64_t> upstream_reused{0};
  std::atomic<uint64_t> opaque{0};
  std::atomic<uint64_t> http{0};
  std::atomic<uint64_t> http2{0};
};

class Worker {
 public:
  // Takes the bound, listening socket. Fails if epoll or eventfd cannot be created.
  static absl::StatusOr<std::unique_ptr<Worker>> create(const ProxyOptions& options, Router& router,
                                                        OriginalDst& original_dst,
                                                        Observer* observer, ScopedFd listener);
  ~Worker();

  // The thread body: runs until requestStop(), then closes every connection.
  void run();
  // Thread-safe.
  void requestStop();

  WorkerCounters counters;

  // --- for Session and UpstreamConn (worker thread only) ---
  const ProxyOptions& options() const { return options_; }
  Router& router() { return router_; }
  Observer* observer() { return observer_; }
  uint64_t nowMs() const { return now_us_ / 1000; }
  uint64_t nowUs() const { return now_us_; }
  // Wall-clock time (µs since the Unix epoch) of nowUs(): the monotonic clock plus a
  // realtime offset re-read about once a second (no clock call per request).
  uint64_t unixUs() const { return now_us_ + unix_offset_us_; }
  // Bytes a connection may buffer from one side before it stops reading (a whole head
  // must fit), and bytes queued towards one side before it stops moving data there.
  size_t inLimit() const { return in_limit_; }
  size_t outLimit() const { return options_.max_buffer_bytes; }

  // A pooled live connection to `addr`, or a new one (connecting). nullptr if the socket or
  // connect() failed at once (`*err` = errno). `*reused`: it carried requests before.
  // `via`: how it is reached (RouteDecision::via; 0 = a TCP connect).
  UpstreamConn* acquire(const SocketAddress& addr, uint64_t via, int* err, bool* reused);
  // A new connection (connecting) to `addr`, or nullptr with `*err`.
  UpstreamConn* connect(const SocketAddress& addr, uint64_t via, int* err);
  // A pooled HTTP/2 connection to `addr` that takes a new stream, or a new one
  // (connecting; the client preface is queued). nullptr if the socket or connect() failed
  // at once (`*err` = errno).
  H2Upstream* acquireH2(const SocketAddress& addr, uint64_t via, int* err);
  // Closes an HTTP/2 upstream connection now: its streams are told (`code`; connect_failed:
  // the connection was never established). Freed after the current batch of events.
  void destroy(H2Upstream* conn, uint32_t code, bool connect_failed);
  // Remembers the SETTINGS_MAX_CONCURRENT_STREAMS an HTTP/2 endpoint announced: a new
  // connection to it opens at most that many streams before its own SETTINGS arrive (so a
  // burst is not refused with REFUSED_STREAM beyond the endpoint's limit).
  void learnMaxStreams(const SocketAddress& addr, uint32_t max_streams);
  // Flush `conn`'s output once the current batch of events is handled.
  void flushLater(H2Upstream* conn);
  // Back to the pool if it can carry another request, else closed.
  void release(UpstreamConn* conn);
  // Closes it now; freed after the current batch of events.
  void destroy(UpstreamConn* conn);
  void destroy(Session* session);
  // Drive `session` again after this batch (it stopped to let others run).
  void schedule(Session* session);
  // Calls session->onTimer(now_ms) once at or soon after `at_ms` (1 ms resolution, the
  // worker's clock). A session may ask several times; it checks its own deadlines when
  // called (a call may come for a deadline it no longer has). For back-offs, fault delays
  // and per-try timeouts; the coarse ones (idle, headers) stay in the 50 ms sweep.
  void wakeAt(Session* session, uint64_t at_ms);
  void onPooledEvent(UpstreamConn* conn);
  // Writes a random UUIDv4 ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx") into out[0..36).
  void newRequestId(char out[36]);
  // A uniformly random 64-bit value from the worker's generator (xorshift128+; back-off
  // jitter, fault injection): not for secrets.
  uint64_t random();

 private:
  Worker(const ProxyOptions& options, Router& router, OriginalDst& original_dst, Observer* observer,
         ScopedFd listener);
  void acceptAll();
  void sweep();
  void removeFromPool(UpstreamConn* conn);
  // socket() + non-blocking connect() + epoll registration for `handler`; -1 with `*err`.
  // With `via` != 0 the options' connector opens it (connected at once).
  int openUpstreamSocket(const SocketAddress& addr, uint64_t via, int* err, bool* connecting);
  void flushDirty();
  void updateClock();
  void fireTimers();
  // epoll_wait's timeout given the sweep period and the next timer.
  int waitTimeoutMs(int sweep_timeout) const;

  struct Tag final : EventHandler {
    Worker* worker;
    bool listener;
    void onEvent(uint32_t) override {
      if (listener) {
        worker->acceptAll();
      } else {
        worker->stopping_ = true;
      }
    }
  };

  ProxyOptions options_;
  Router& router_;
  OriginalDst& original_dst_;
  Observer* observer_;
  ScopedFd listener_;
  ScopedFd epoll_;
  ScopedFd wake_;
  Tag listener_tag_;
  Tag wake_tag_;
  size_t in_limit_;
  std::atomic<bool> stop_requested_{false};
  bool stopping_ = false;
  uint64_t now_us_ = 0;
  uint64_t unix_offset_us_ = 0;  // CLOCK_REALTIME - CLOCK_MONOTONIC
  uint64_t offset_next_us_ = 0;  // when to re-read it (monotonic)
  uint64_t last_sweep_ms_ = 0;
  uint64_t rng_[2] = {0, 0};

  std::vector<Session*> sessions_;
  absl::flat_hash_map<UpstreamKey, std::vector<UpstreamConn*>> pool_;
  size_t pooled_count_ = 0;
  std::vector<Session*> again_;
  std::vector<Session*> again_batch_;
  std::vector<Session*> dead_sessions_;
  // wakeAt(): a min-heap on `at` (std::push_heap with Later); entries of a destroyed
  // session are cleared (session = nullptr), not removed.
  struct Timer {
    uint64_t at;
    Session* session;
  };
  struct Later {
    bool operator()(const Timer& a, const Timer& b) const { return a.at > b.at; }
  };
  std::vector<Timer> timers_;
  std::vector<UpstreamConn*> dead_upstreams_;
  absl::flat_hash_map<UpstreamKey, std::vector<H2Upstream*>> h2_pool_;
  size_t h2_count_ = 0;
  std::vector<H2Upstream*> h2_dirty_;
  std::vector<H2Upstream*> dead_h2_;
  std::vector<H2Upstream*> h2_expired_;
  absl::flat_hash_map<SocketAddress, uint32_t> h2_max_streams_;  // learnMaxStreams()

  friend class Session;
};

}  // namespace meshd::proxy
