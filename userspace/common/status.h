// Status helpers shared by all of meshd: RETURN_IF_ERROR / ASSIGN_OR_RETURN in the
// manner of absl-using codebases, and errno-carrying errors for syscalls and libbpf.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace meshd {

// Returns an error for a failed syscall or libbpf call. `err` is a positive errno
// (libbpf returns negative values: pass -ret). `what` says what was being done.
absl::Status errnoError(int err, std::string_view what);

}  // namespace meshd

#define MESHD_CONCAT_INNER_(a, b) a##b
#define MESHD_CONCAT_(a, b) MESHD_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status meshd_status_ = (expr);         \
    if (!meshd_status_.ok()) return meshd_status_; \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(*tmp)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(MESHD_CONCAT_(meshd_statusor_, __LINE__), lhs, expr)
