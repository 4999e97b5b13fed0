#include "state/updater.h"

namespace meshd::state {

Updater::Updater() {
  // thread_id_ is written before any task can observe it: the thread blocks
  // on mu_ until the constructor releases it.
  std::unique_lock lock(mu_);
  thread_ = std::thread([this] { loop(); });
  thread_id_ = thread_.get_id();
}

Updater::~Updater() { stop(); }

absl::Status Updater::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::UnavailableError("meshd is shutting down: change not applied");
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
  return absl::OkStatus();
}

void Updater::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable() && !onUpdaterThread()) thread_.join();
}

void Updater::loop() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    std::function<void()> fn = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    fn();
    lock.lock();
  }
}

}  // namespace meshd::state
