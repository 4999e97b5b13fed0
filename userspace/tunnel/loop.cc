#include "tunnel/loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>

#include "absl/strings/str_cat.h"

namespace meshd::tunnel {
namespace {

uint64_t monotonicMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
}

absl::Status errnoStatus(const char* what, int err) {
  return absl::InternalError(absl::StrCat("tunnel loop: ", what, ": ", strerror(err)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<EpollLoop>> EpollLoop::create() {
  ScopedFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll.valid()) return errnoStatus("epoll_create1", errno);
  ScopedFd wake(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake.valid()) return errnoStatus("eventfd", errno);
  std::unique_ptr<EpollLoop> loop(new EpollLoop(std::move(epoll), std::move(wake)));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = static_cast<IoHandler*>(&loop->wake_tag_);
  if (epoll_ctl(loop->epoll_.get(), EPOLL_CTL_ADD, loop->wake_.get(), &ev) != 0) {
    return errnoStatus("epoll_ctl(eventfd)", errno);
  }
  return loop;
}

EpollLoop::EpollLoop(ScopedFd epoll, ScopedFd wake)
    : epoll_(std::move(epoll)), wake_(std::move(wake)), now_ms_(monotonicMs()) {}

EpollLoop::~EpollLoop() = default;

void EpollLoop::updateClock() { now_ms_ = monotonicMs(); }

absl::Status EpollLoop::add(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events | EPOLLET;
  ev.data.ptr = handler;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return errnoStatus("epoll_ctl(ADD)", errno);
  return absl::OkStatus();
}

absl::Status EpollLoop::modify(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events | EPOLLET;
  ev.data.ptr = handler;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return errnoStatus("epoll_ctl(MOD)", errno);
  return absl::OkStatus();
}

void EpollLoop::remove(int fd) { epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

void EpollLoop::wakeAt(Task* task, uint64_t at_ms) {
  auto it = timer_of_.find(task);
  if (it != timer_of_.end()) {
    if (it->second->first == at_ms) return;
    timers_.erase(it->second);
    it->second = timers_.emplace(at_ms, task);
    return;
  }
  timer_of_.emplace(task, timers_.emplace(at_ms, task));
}

void EpollLoop::cancel(Task* task) {
  auto it = timer_of_.find(task);
  if (it != timer_of_.end()) {
    timers_.erase(it->second);
    timer_of_.erase(it);
  }
  if (task->flush_queued) {
    task->flush_queued = false;
    std::replace(flush_.begin(), flush_.end(), task, static_cast<Task*>(nullptr));
    std::replace(flush_batch_.begin(), flush_batch_.end(), task, static_cast<Task*>(nullptr));
  }
  std::replace(due_.begin(), due_.end(), task, static_cast<Task*>(nullptr));
}

void EpollLoop::flushLater(Task* task) {
  if (task->flush_queued) return;
  task->flush_queued = true;
  flush_.push_back(task);
}

void EpollLoop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    posted_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
}

void EpollLoop::runSync(std::function<void()> fn) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  post([&] {
    fn();
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_one();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
}

void EpollLoop::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested_ = true;
  }
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);
}

void EpollLoop::runPosted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(posted_);
    if (stop_requested_) stop_ = true;
  }
  for (auto& fn : batch) fn();
}

void EpollLoop::runTimers() {
  // Collect first: a task may re-arm itself or cancel others (cancel() clears its entry in
  // due_).
  due_.clear();
  while (!timers_.empty() && timers_.begin()->first <= now_ms_) {
    Task* task = timers_.begin()->second;
    timers_.erase(timers_.begin());
    timer_of_.erase(task);
    due_.push_back(task);
  }
  for (size_t i = 0; i < due_.size(); ++i) {
    if (Task* t = due_[i]) {
      due_[i] = nullptr;
      t->run();
    }
  }
  due_.clear();
}

void EpollLoop::runFlushes() {
  // Flushes may queue more flushes (a flush that frees an object queues its reaper).
  for (int round = 0; round < 8 && !flush_.empty(); ++round) {
    flush_batch_.swap(flush_);
    for (size_t i = 0; i < flush_batch_.size(); ++i) {
      if (Task* t = flush_batch_[i]) {
        flush_batch_[i] = nullptr;
        t->flush_queued = false;
        t->run();
      }
    }
    flush_batch_.clear();
  }
}

void EpollLoop::run() {
  epoll_event events[128];
  while (!stop_) {
    int timeout = -1;
    if (!flush_.empty()) {
      timeout = 0;
    } else if (!timers_.empty()) {
      uint64_t next = timers_.begin()->first;
      updateClock();
      timeout = next <= now_ms_ ? 0 : static_cast<int>(std::min<uint64_t>(next - now_ms_, 1000));
    }
    int n = epoll_wait(epoll_.get(), events, 128, timeout);
    updateClock();
    bool woken = false;
    for (int i = 0; i < n; ++i) {
      auto* handler = static_cast<IoHandler*>(events[i].data.ptr);
      if (handler == &wake_tag_) {
        woken = true;
        continue;
      }
      handler->onIo(events[i].events);
    }
    runFlushes();
    // Posted functions run between batches: one may destroy handlers the batch still named.
    if (woken) {
      uint64_t v;
      (void)!read(wake_.get(), &v, sizeof v);
      runPosted();
      runFlushes();
    }
    runTimers();
    runFlushes();
  }
  runPosted();
}

}  // namespace meshd::tunnel
