// Readiness as /readyz and meshd_ready report it: programs attached AND the
// last reconcile succeeded. Written by the daemon's startup and by the state
// updater thread after every reconcile; read by the telemetry thread and the
// API. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace meshd::telemetry {

class Readiness {
 public:
  struct Snapshot {
    int programs_attached = 0;
    bool reconciled = false;  // at least one reconcile finished
    bool last_ok = false;     // the last reconcile succeeded
    std::string last_error;   // its error text when it failed
    uint64_t reconcile_ok = 0;
    uint64_t reconcile_error = 0;
    double last_seconds = 0;  // duration of the last reconcile
  };

  void setProgramsAttached(int count);
  void recordReconcile(const absl::Status& status, double seconds);

  // OK when ready; otherwise Unavailable with the reason for the operator
  // ("no BPF programs attached", "last reconcile failed: ...").
  absl::Status ready() const;
  Snapshot snapshot() const;

 private:
  mutable absl::Mutex mu_;
  Snapshot s_ ABSL_GUARDED_BY(mu_);
};

}  // namespace meshd::telemetry
