// The one thread that mutates the state model. Everything that changes the
// Model (API handlers, watchers) hands it a function: post() queues it, run()
// queues it and blocks until it has run, returning its result. Functions run
// one at a time, in the order they were queued.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace meshd::state {

class Updater {
 public:
  // Starts the thread.
  Updater();
  // stop()s.
  ~Updater();
  Updater(const Updater&) = delete;
  Updater& operator=(const Updater&) = delete;

  // Queues fn. Unavailable once stop() has begun.
  absl::Status post(std::function<void()> fn);

  // Runs fn on the updater thread and returns its result. fn must return
  // absl::Status or absl::StatusOr<T>; when the updater is stopping, fn does
  // not run and the result is Unavailable. Called on the updater thread itself
  // (from inside a posted function), runs fn inline instead of deadlocking.
  template <typename F>
  std::invoke_result_t<F&> run(F fn) {
    using R = std::invoke_result_t<F&>;
    static_assert(std::is_constructible_v<R, absl::Status>,
                  "Updater::run needs a function returning absl::Status or absl::StatusOr<T>");
    if (onUpdaterThread()) return fn();
    auto promise = std::make_shared<std::promise<R>>();
    std::future<R> result = promise->get_future();
    absl::Status queued =
        post([promise, fn = std::move(fn)]() mutable { promise->set_value(fn()); });
    if (!queued.ok()) return R(queued);
    return result.get();
  }

  // Runs what is already queued, then stops the thread. Idempotent. Called
  // from a queued function it only marks the updater stopping (the thread
  // cannot join itself); the destructor must then run on another thread.
  void stop();

  bool onUpdaterThread() const { return std::this_thread::get_id() == thread_id_; }

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::thread thread_;
  std::thread::id thread_id_;
};

}  // namespace meshd::state
