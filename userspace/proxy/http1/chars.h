// Byte classes of RFC 9110/9112 as 256-entry tables, shared by the head parsers and
// the chunked decoder so that header fields and trailer fields follow the same rules.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace meshd::proxy::http1::chars {

namespace detail {

constexpr bool isTchar(unsigned c) {
  // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`"
  //       / "|" / "~" / DIGIT / ALPHA            (RFC 9110 §5.6.2)
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

constexpr std::array<bool, 256> makeTable(bool (*pred)(unsigned)) {
  std::array<bool, 256> t{};
  for (unsigned c = 0; c < 256; ++c) t[c] = pred(c);
  return t;
}

}  // namespace detail

inline constexpr std::array<bool, 256> kTchar = detail::makeTable(detail::isTchar);

// field-vchar / SP / HTAB: VCHAR (0x21-0x7e), obs-text (0x80-0xff), SP, HTAB. Every other
// control (NUL, CR, LF, DEL, ...) is refused in a field value (RFC 9110 §5.5).
inline constexpr std::array<bool, 256> kFieldValue =
    detail::makeTable([](unsigned c) { return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f); });

// Bytes of a request-target: VCHAR except '#' (a fragment is never part of a
// request-target, RFC 9112 §3.2). obs-text and controls are refused.
inline constexpr std::array<bool, 256> kTarget =
    detail::makeTable([](unsigned c) { return c >= 0x21 && c <= 0x7e && c != '#'; });

// reg-name / IPv4address bytes of a uri-host (RFC 3986 §3.2.2): unreserved, pct-encoded
// and sub-delims.
inline constexpr std::array<bool, 256> kRegName = detail::makeTable([](unsigned c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("-._~%!$&'()*+,;=").find(static_cast<char>(c)) != std::string_view::npos;
});

// qdtext of a quoted-string (RFC 9110 §5.6.4): HTAB, SP, 0x21, 0x23-0x5b, 0x5d-0x7e, obs-text.
inline constexpr std::array<bool, 256> kQdtext = detail::makeTable([](unsigned c) {
  return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
         (c >= 0x5d && c <= 0x7e) || c >= 0x80;
});

inline bool tchar(char c) { return kTchar[static_cast<uint8_t>(c)]; }
inline bool fieldValue(char c) { return kFieldValue[static_cast<uint8_t>(c)]; }
inline bool ows(char c) { return c == ' ' || c == '\t'; }

inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// ASCII case-insensitive equality; `lower_literal` must already be lower case.
inline bool equalsLower(std::string_view s, std::string_view lower_literal) {
  if (s.size() != lower_literal.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (lower(s[i]) != lower_literal[i]) return false;
  }
  return true;
}

inline bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// 0-15 for a hex digit, -1 otherwise.
inline int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace meshd::proxy::http1::chars
