// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. Shared
// by resource validation (yaml-cpp passes any byte through; nlohmann::json::dump() throws on
// invalid text) and the access log's JSON escaping (invalid bytes become U+FFFD).
#pragma once

#include <cstddef>
#include <string_view>

namespace meshd::utf8 {

// The length (2-4) of the valid multi-byte sequence starting at s[i] (a byte >= 0x80), or 0
// when the bytes there are not one (a lone continuation byte, an overlong form, a surrogate,
// a code point above U+10FFFF, or a sequence cut off by the end of `s`).
inline size_t sequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const auto cont = [&](size_t k, unsigned char lo = 0x80, unsigned char hi = 0xbf) {
    return k < s.size() && b(k) >= lo && b(k) <= hi;
  };
  const unsigned char c = b(i);
  if (c >= 0xc2 && c <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (c == 0xe0) return cont(i + 1, 0xa0, 0xbf) && cont(i + 2) ? 3 : 0;  // overlong
  if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
    return cont(i + 1) && cont(i + 2) ? 3 : 0;
  }
  if (c == 0xed) return cont(i + 1, 0x80, 0x9f) && cont(i + 2) ? 3 : 0;  // surrogates
  if (c == 0xf0) return cont(i + 1, 0x90, 0xbf) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (c == 0xf4)
    return cont(i + 1, 0x80, 0x8f) && cont(i + 2) && cont(i + 3) ? 4 : 0;  // > U+10FFFF
  return 0;
}

// Whether all of `s` is valid UTF-8.
inline bool isValid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = sequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace meshd::utf8
