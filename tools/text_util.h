// Small string helpers for the lab tools. Debian's abseil is built with its own
// absl::string_view (not an alias of std::string_view), so absl::StrCat/StrSplit do not
// accept std::string_view; these do.
#pragma once

#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace meshd::tools {

template <typename... Args>
std::string strCat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

inline std::vector<std::string_view> split(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const size_t at = s.find(sep);
    if (at == std::string_view::npos) {
      out.push_back(s);
      return out;
    }
    out.push_back(s.substr(0, at));
    s.remove_prefix(at + sep.size());
  }
}

inline std::string_view strip(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

inline bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace meshd::tools
