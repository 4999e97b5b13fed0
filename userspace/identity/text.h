// String helpers of meshd_identity. Debian 12's abseil has its own absl::string_view (not
// std::string_view), so absl::StrCat does not take std::string_view: cat() converts it.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace meshd::identity {

inline absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

namespace internal {
template <typename T>
decltype(auto) alpha(const T& v) {
  if constexpr (std::is_convertible_v<const T&, std::string_view> &&
                !std::is_convertible_v<const T&, absl::string_view>) {
    return av(v);
  } else {
    return (v);
  }
}
}  // namespace internal

// absl::StrCat accepting std::string_view too.
template <typename... A>
std::string cat(const A&... a) {
  return absl::StrCat(internal::alpha(a)...);
}

// C-style hex escaping of arbitrary bytes, for quoting untrusted input in messages.
inline std::string escape(std::string_view s) { return absl::CHexEscape(av(s)); }

}  // namespace meshd::identity
