#include "telemetry/health.h"

#include "absl/strings/str_cat.h"

namespace meshd::telemetry {

void Readiness::setProgramsAttached(int count) {
  absl::MutexLock lock(&mu_);
  s_.programs_attached = count;
}

void Readiness::recordReconcile(const absl::Status& status, double seconds) {
  absl::MutexLock lock(&mu_);
  s_.reconciled = true;
  s_.last_ok = status.ok();
  s_.last_error = status.ok() ? "" : std::string(status.message());
  s_.last_seconds = seconds;
  ++(status.ok() ? s_.reconcile_ok : s_.reconcile_error);
}

absl::Status Readiness::ready() const {
  absl::MutexLock lock(&mu_);
  if (s_.programs_attached == 0) {
    return absl::UnavailableError("no BPF programs attached");
  }
  if (!s_.reconciled) return absl::UnavailableError("maps not reconciled yet");
  if (!s_.last_ok) {
    return absl::UnavailableError(absl::StrCat("last reconcile failed: ", s_.last_error));
  }
  return absl::OkStatus();
}

Readiness::Snapshot Readiness::snapshot() const {
  absl::MutexLock lock(&mu_);
  return s_;
}

}  // namespace meshd::telemetry
