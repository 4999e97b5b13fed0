#include "identity/spiffe.h"

#include <array>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "identity/text.h"

namespace meshd::identity {
namespace {

using Code = SpiffeParseError::Code;

constexpr size_t kQuoteLimit = 256;  // bytes of a rejected input quoted in its error

bool isTrustDomainChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

bool isPathChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

// The code of a URI delimiter the spec forbids anywhere in a SPIFFE ID, if `c` is one.
bool forbiddenDelimiter(char c, Code* code) {
  switch (c) {
    case '?':
      *code = Code::kQuery;
      return true;
    case '#':
      *code = Code::kFragment;
      return true;
    case '%':
      *code = Code::kPercentEncoding;
      return true;
    default:
      return false;
  }
}

bool fail(SpiffeParseError* error, Code code, size_t offset, char byte = 0) {
  *error = SpiffeParseError{code, offset, byte};
  return false;
}

// Checks the path (empty, or "/seg/seg...") starting at `begin` in `text`.
bool checkPath(std::string_view text, size_t begin, SpiffeParseError* error) {
  size_t i = begin;
  while (i < text.size()) {
    // text[i] == '/': a segment follows.
    const size_t seg = i + 1;
    size_t j = seg;
    for (; j < text.size() && text[j] != '/'; ++j) {
      const char c = text[j];
      Code code;
      if (forbiddenDelimiter(c, &code)) return fail(error, code, j, c);
      if (!isPathChar(c)) return fail(error, Code::kPathBadChar, j, c);
    }
    const std::string_view segment = text.substr(seg, j - seg);
    if (segment.empty()) {
      return fail(error, j == text.size() ? Code::kTrailingSlash : Code::kEmptySegment, i);
    }
    if (segment == "." || segment == "..") return fail(error, Code::kDotSegment, seg);
    i = j;
  }
  return true;
}

std::string quoteByte(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f && c != '\'' && c != '\\') return cat("'", std::string(1, c), "'");
  return absl::StrFormat("'\\x%02x'", u);
}

bool isSegmentValid(std::string_view s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (char c : s) {
    if (!isPathChar(c)) return false;
  }
  return true;
}

absl::Status checkSegment(std::string_view what, std::string_view s) {
  if (isSegmentValid(s)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      cat(what, " \"", escape(s),
          "\" is not a valid SPIFFE path segment (non-empty, [A-Za-z0-9._-], not . or ..)"));
}

// Splits a path into exactly `n` segments (after the leading '/'); false when the count
// differs. Paths from the parser have no empty segments.
template <size_t n>
bool splitPath(std::string_view path, std::array<std::string_view, n>* out) {
  if (path.empty() || path[0] != '/') return false;
  size_t k = 0;
  size_t i = 1;
  while (true) {
    const size_t slash = path.find('/', i);
    const std::string_view seg =
        path.substr(i, slash == std::string_view::npos ? std::string_view::npos : slash - i);
    if (k == n) return false;
    (*out)[k++] = seg;
    if (slash == std::string_view::npos) break;
    i = slash + 1;
  }
  return k == n;
}

}  // namespace

std::string SpiffeId::toString() const { return cat(kSpiffePrefix, trust_domain, path); }
std::string SpiffeId::principal() const { return cat(trust_domain, path); }

bool parseSpiffeIdView(std::string_view text, SpiffeIdView* out, SpiffeParseError* error) {
  if (text.empty()) return fail(error, Code::kEmpty, 0);
  if (text.size() > kMaxSpiffeIdBytes) return fail(error, Code::kTooLong, kMaxSpiffeIdBytes);
  constexpr std::string_view kScheme = "spiffe:";
  if (text.substr(0, kScheme.size()) != kScheme) return fail(error, Code::kBadScheme, 0);
  if (text.substr(kScheme.size(), 2) != "//")
    return fail(error, Code::kNotHierarchical, kScheme.size());
  const size_t td_begin = kSpiffePrefix.size();
  size_t i = td_begin;
  for (; i < text.size() && text[i] != '/'; ++i) {
    const char c = text[i];
    Code code;
    if (forbiddenDelimiter(c, &code)) return fail(error, code, i, c);
    if (c == '@') return fail(error, Code::kUserinfo, i, c);
    if (c == ':') return fail(error, Code::kPort, i, c);
    if (c >= 'A' && c <= 'Z') return fail(error, Code::kTrustDomainUppercase, i, c);
    if (!isTrustDomainChar(c)) return fail(error, Code::kTrustDomainBadChar, i, c);
  }
  if (i == td_begin) return fail(error, Code::kEmptyTrustDomain, td_begin);
  if (i - td_begin > kMaxTrustDomainBytes) {
    return fail(error, Code::kTrustDomainTooLong, td_begin + kMaxTrustDomainBytes);
  }
  if (!checkPath(text, i, error)) return false;
  out->trust_domain = text.substr(td_begin, i - td_begin);
  out->path = text.substr(i);
  return true;
}

std::string describe(const SpiffeParseError& e, std::string_view text) {
  std::string what;
  const std::string at = cat(" at ", e.offset);
  switch (e.code) {
    case Code::kEmpty:
      what = "empty";
      break;
    case Code::kTooLong:
      what = cat(text.size(), " bytes long; at most ", kMaxSpiffeIdBytes, " are allowed");
      break;
    case Code::kBadScheme:
      what = "scheme is not \"spiffe\" (lower case, followed by \"://\")";
      break;
    case Code::kNotHierarchical:
      what = cat("\"//\" expected after \"spiffe:\"", at);
      break;
    case Code::kEmptyTrustDomain:
      what = cat("trust domain is empty", at);
      break;
    case Code::kTrustDomainTooLong:
      what = cat("trust domain is longer than ", kMaxTrustDomainBytes, " bytes");
      break;
    case Code::kUserinfo:
      what = cat("userinfo ('@') is not allowed", at);
      break;
    case Code::kPort:
      what = cat("a port (':') is not allowed", at);
      break;
    case Code::kQuery:
      what = cat("a query ('?') is not allowed", at);
      break;
    case Code::kFragment:
      what = cat("a fragment ('#') is not allowed", at);
      break;
    case Code::kPercentEncoding:
      what = cat("percent-encoding ('%') is not allowed", at);
      break;
    case Code::kTrustDomainUppercase:
      what = cat("trust domain has uppercase character ", quoteByte(e.byte), at,
                 " (trust domains are lower case)");
      break;
    case Code::kTrustDomainBadChar:
      what = cat("trust domain has character ", quoteByte(e.byte), at, " (allowed: a-z 0-9 . - _)");
      break;
    case Code::kEmptySegment:
      what = cat("path has an empty segment (\"//\")", at);
      break;
    case Code::kDotSegment:
      what = cat("path has a \".\" or \"..\" segment", at);
      break;
    case Code::kTrailingSlash:
      what = cat("path ends with '/'", at);
      break;
    case Code::kPathBadChar:
      what = cat("path has character ", quoteByte(e.byte), at, " (allowed: A-Z a-z 0-9 . - _)");
      break;
  }
  const std::string_view shown = text.substr(0, kQuoteLimit);
  return cat("invalid SPIFFE ID \"", escape(shown), text.size() > kQuoteLimit ? "...\"" : "\"",
             ": ", what);
}

absl::StatusOr<SpiffeId> parseSpiffeId(std::string_view text) {
  SpiffeIdView v;
  SpiffeParseError e;
  if (!parseSpiffeIdView(text, &v, &e)) return absl::InvalidArgumentError(describe(e, text));
  return v.toOwned();
}

absl::Status validateTrustDomain(std::string_view td) {
  if (td.empty()) return absl::InvalidArgumentError("trust domain is empty");
  if (td.size() > kMaxTrustDomainBytes) {
    return absl::InvalidArgumentError(
        cat("trust domain is longer than ", kMaxTrustDomainBytes, " bytes"));
  }
  for (size_t i = 0; i < td.size(); ++i) {
    if (!isTrustDomainChar(td[i])) {
      return absl::InvalidArgumentError(cat("trust domain \"", escape(td.substr(0, kQuoteLimit)),
                                            "\" has character ", quoteByte(td[i]), " at ", i,
                                            " (allowed: a-z 0-9 . - _)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<WorkloadIdentity> workloadIdentity(const SpiffeIdView& id) {
  std::array<std::string_view, 4> s;
  if (!splitPath(id.path, &s) || s[0] != "ns" || s[2] != "sa" || !isSegmentValid(s[1]) ||
      !isSegmentValid(s[3])) {
    return absl::InvalidArgumentError(
        cat("spiffe://", id.trust_domain, escape(id.path.substr(0, kQuoteLimit)),
            " is not a workload identity (path /ns/<namespace>/sa/<service-account>)"));
  }
  return WorkloadIdentity{s[1], s[3]};
}

absl::StatusOr<SpiffeId> makeWorkloadId(std::string_view td, std::string_view ns,
                                        std::string_view sa) {
  if (absl::Status s = validateTrustDomain(td); !s.ok()) return s;
  if (absl::Status s = checkSegment("namespace", ns); !s.ok()) return s;
  if (absl::Status s = checkSegment("service account", sa); !s.ok()) return s;
  return SpiffeId{std::string(td), cat("/ns/", ns, "/sa/", sa)};
}

absl::StatusOr<std::string_view> nodeName(const SpiffeIdView& id) {
  std::array<std::string_view, 3> s;
  if (!splitPath(id.path, &s) || s[0] != "meshd" || s[1] != "node" || !isSegmentValid(s[2])) {
    return absl::InvalidArgumentError(cat("spiffe://", id.trust_domain,
                                          escape(id.path.substr(0, kQuoteLimit)),
                                          " is not a node identity (path /meshd/node/<node>)"));
  }
  return s[2];
}

absl::StatusOr<SpiffeId> makeNodeId(std::string_view td, std::string_view node) {
  if (absl::Status s = validateTrustDomain(td); !s.ok()) return s;
  if (absl::Status s = checkSegment("node name", node); !s.ok()) return s;
  return SpiffeId{std::string(td), cat("/meshd/node/", node)};
}

bool principalMatches(std::string_view pattern, const SpiffeIdView& id) {
  const std::string_view td = id.trust_domain;
  const std::string_view path = id.path;
  if (pattern == "*") return true;
  if (!pattern.empty() && pattern.front() == '*') {  // suffix of td+path
    const std::string_view suf = pattern.substr(1);
    if (suf.size() <= path.size()) return path.ends_with(suf);
    return suf.ends_with(path) && td.ends_with(suf.substr(0, suf.size() - path.size()));
  }
  if (!pattern.empty() && pattern.back() == '*') {  // prefix of td+path
    const std::string_view pre = pattern.substr(0, pattern.size() - 1);
    if (pre.size() <= td.size()) return td.starts_with(pre);
    return pre.starts_with(td) && path.starts_with(pre.substr(td.size()));
  }
  return pattern.size() == td.size() + path.size() && pattern.starts_with(td) &&
         pattern.substr(td.size()) == path;
}

}  // namespace meshd::identity
