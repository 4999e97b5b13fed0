// The event loop the tunnel drives itself through (docs/design/0004-identity-mtls.md, "The
// node-to-node tunnel"). The tunnel never blocks and never owns a thread: it registers fds,
// timers and "flush later" requests with a Loop, and is called back from the loop's thread.
// The proxy's worker threads can implement this interface over their own epoll; EpollLoop
// is the standalone implementation (one thread, one edge-triggered epoll) the tests and the
// daemon use.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/scoped_fd.h"

namespace meshd::tunnel {

// Receives the events of one fd (EPOLLIN/EPOLLOUT/EPOLLRDHUP/EPOLLHUP/EPOLLERR bits).
class IoHandler {
 public:
  virtual void onIo(uint32_t events) = 0;

 protected:
  ~IoHandler() = default;
};

// Called by Loop::wakeAt() and Loop::flushLater().
class Task {
 public:
  virtual void run() = 0;
  // Set by the Loop while the task waits in its flushLater() queue (O(1) coalescing).
  bool flush_queued = false;

 protected:
  ~Task() = default;
};

class Loop {
 public:
  virtual ~Loop() = default;
  // Registers `fd` edge-triggered for `events` (EPOLLIN|EPOLLOUT|EPOLLRDHUP are the usual
  // set; the loop adds EPOLLET). The handler must outlive the registration.
  virtual absl::Status add(int fd, uint32_t events, IoHandler* handler) = 0;
  virtual absl::Status modify(int fd, uint32_t events, IoHandler* handler) = 0;
  // Unregisters `fd` (before it is closed). Events already collected for it in the current
  // batch may still be delivered: handlers are freed after the batch (see Task) and ignore
  // events once closed.
  virtual void remove(int fd) = 0;
  // Monotonic milliseconds, as of the current batch of events.
  virtual uint64_t nowMs() const = 0;
  // Runs `task` once at or after `at_ms` (nowMs() clock). One pending wake per task: a new
  // call replaces the previous deadline. cancel() before the task is destroyed.
  virtual void wakeAt(Task* task, uint64_t at_ms) = 0;
  virtual void cancel(Task* task) = 0;
  // Runs `task` once after the current batch of events (coalesced: several calls in one
  // batch run it once). Also cancelled by cancel().
  virtual void flushLater(Task* task) = 0;
};

// One thread, one epoll. run() on the thread that owns it; post() from anywhere.
class EpollLoop final : public Loop {
 public:
  static absl::StatusOr<std::unique_ptr<EpollLoop>> create();
  ~EpollLoop() override;

  // Runs until stop() (thread-safe). Functions posted before stop() run before it returns.
  void run();
  void stop();
  // Thread-safe: runs `fn` on the loop's thread (soon, in order).
  void post(std::function<void()> fn);
  // Thread-safe: post() and wait until `fn` ran. Not from the loop's thread.
  void runSync(std::function<void()> fn);

  absl::Status add(int fd, uint32_t events, IoHandler* handler) override;
  absl::Status modify(int fd, uint32_t events, IoHandler* handler) override;
  void remove(int fd) override;
  uint64_t nowMs() const override { return now_ms_; }
  void wakeAt(Task* task, uint64_t at_ms) override;
  void cancel(Task* task) override;
  void flushLater(Task* task) override;

 private:
  EpollLoop(ScopedFd epoll, ScopedFd wake);
  void updateClock();
  void runPosted();
  void runTimers();
  void runFlushes();

  struct WakeTag final : IoHandler {
    void onIo(uint32_t) override {}
  };

  ScopedFd epoll_;
  ScopedFd wake_;
  WakeTag wake_tag_;
  uint64_t now_ms_ = 0;
  bool stop_ = false;
  std::mutex mu_;
  std::vector<std::function<void()>> posted_;  // guarded by mu_
  bool stop_requested_ = false;                // guarded by mu_
  // wakeAt(): ordered by deadline, and each task's entry for O(log n) re-arm and cancel
  // (one per connection and one per connecting stream).
  std::multimap<uint64_t, Task*> timers_;
  absl::flat_hash_map<Task*, std::multimap<uint64_t, Task*>::iterator> timer_of_;
  std::vector<Task*> due_;
  std::vector<Task*> flush_;
  std::vector<Task*> flush_batch_;
};

}  // namespace meshd::tunnel
