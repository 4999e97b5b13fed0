// SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md): our own
// parser, the two path forms meshd gives meaning to, and Istio's principal matching.
//
//   spiffe://cluster.local/ns/default/sa/web     a workload: namespace + service account
//   spiffe://cluster.local/meshd/node/n1         a node agent (meshd on node n1)
//
// The parser is strict (it accepts what the spec allows and nothing else): scheme "spiffe"
// in lower case, then "//", a non-empty trust domain of [a-z0-9._-] (at most 255 bytes), no
// userinfo, port, query, fragment or percent-encoding, and a path of non-empty segments of
// [A-Za-z0-9._-] that are not "." or "..", without a trailing slash; the whole ID at most
// 2048 bytes. parseSpiffeIdView() does not allocate; parseSpiffeId() allocates only the
// result (and, on failure, the error message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace meshd::identity {

inline constexpr std::string_view kSpiffePrefix = "spiffe://";
// Limits of the SPIFFE ID spec: implementations must accept IDs up to 2048 bytes and should
// refuse longer ones; a trust domain name is at most 255 bytes (a DNS name's limit).
inline constexpr size_t kMaxSpiffeIdBytes = 2048;
inline constexpr size_t kMaxTrustDomainBytes = 255;

// A parsed ID. `path` is empty or starts with '/' ("/ns/default/sa/web").
struct SpiffeId {
  std::string trust_domain;
  std::string path;

  // "spiffe://<trust_domain><path>".
  std::string toString() const;
  // Istio's principal: the ID without the scheme, "<trust_domain><path>".
  std::string principal() const;
  bool operator==(const SpiffeId&) const = default;
};

// The same, as views into the parsed text (valid as long as that text is).
struct SpiffeIdView {
  std::string_view trust_domain;
  std::string_view path;

  SpiffeId toOwned() const { return {std::string(trust_domain), std::string(path)}; }
};

// What is wrong with a rejected ID: a code, the byte offset in the input where it was found
// and the offending byte (when there is one). No allocation.
struct SpiffeParseError {
  enum class Code : uint8_t {
    kEmpty,
    kTooLong,          // more than kMaxSpiffeIdBytes
    kBadScheme,        // not "spiffe:" (any case other than lower case included)
    kNotHierarchical,  // "spiffe:" without "//"
    kEmptyTrustDomain,
    kTrustDomainTooLong,
    kUserinfo,         // '@' in the authority
    kPort,             // ':' in the authority
    kQuery,            // '?'
    kFragment,         // '#'
    kPercentEncoding,  // '%'
    kTrustDomainUppercase,
    kTrustDomainBadChar,
    kEmptySegment,  // "//" in the path
    kDotSegment,    // "." or ".."
    kTrailingSlash,
    kPathBadChar,
  };
  Code code;
  size_t offset;  // byte offset of the problem in the input
  char byte;      // the offending byte, for the *Char, *Uppercase and delimiter codes
};

// Parses `text` as a SPIFFE ID. On success fills `*out` (views into `text`) and returns true;
// otherwise fills `*error`. Never allocates.
bool parseSpiffeIdView(std::string_view text, SpiffeIdView* out, SpiffeParseError* error);

// Describes `error` for `text` in words, e.g. `invalid SPIFFE ID "spiffe://Foo/x": trust
// domain has uppercase character 'F' at 9` (the input is escaped and, past 256 bytes, cut).
std::string describe(const SpiffeParseError& error, std::string_view text);

// Parses `text`; InvalidArgument with describe()'s message when it is not a SPIFFE ID.
absl::StatusOr<SpiffeId> parseSpiffeId(std::string_view text);

// Checks a trust domain name alone ("cluster.local"): InvalidArgument naming the problem.
absl::Status validateTrustDomain(std::string_view trust_domain);

// Workload identities: path "/ns/<namespace>/sa/<service account>".
struct WorkloadIdentity {
  std::string_view ns;
  std::string_view service_account;
};
// The workload named by `id`, or InvalidArgument saying why the path is not of that form.
absl::StatusOr<WorkloadIdentity> workloadIdentity(const SpiffeIdView& id);
// spiffe://<td>/ns/<ns>/sa/<sa>; InvalidArgument when a part is not a valid SPIFFE segment
// (or the trust domain is invalid).
absl::StatusOr<SpiffeId> makeWorkloadId(std::string_view trust_domain, std::string_view ns,
                                        std::string_view service_account);

// Node identities: path "/meshd/node/<node>". Returns the node name or InvalidArgument.
absl::StatusOr<std::string_view> nodeName(const SpiffeIdView& id);
absl::StatusOr<SpiffeId> makeNodeId(std::string_view trust_domain, std::string_view node);

inline SpiffeIdView view(const SpiffeId& id) { return {id.trust_domain, id.path}; }

// Istio principal matching (AuthorizationPolicy source.principals): `pattern` is compared
// with "<trust_domain><path>" (the ID without "spiffe://"): "*" matches any identity,
// "prefix*" a prefix, "*suffix" a suffix, anything else the exact principal. No allocation.
bool principalMatches(std::string_view pattern, const SpiffeIdView& id);

}  // namespace meshd::identity
