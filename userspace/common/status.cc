#include "common/status.h"

namespace meshd {

absl::Status errnoError(int err, std::string_view what) {
  // Debian's abseil is built with its own string_view (ABSL_OPTION_USE_STD_STRING_VIEW
  // 0), which StrCat cannot take from a std::string_view directly.
  std::string msg = absl::StrCat(absl::string_view(what.data(), what.size()), ": ",
                                 std::strerror(err), " (errno ", err, ")");
  switch (err) {
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    case E2BIG:
    case ENOSPC:
    case ENOMEM:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace meshd
