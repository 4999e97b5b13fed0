// libFuzzer target for the SPIFFE ID parser (userspace/identity/spiffe.h): the input is a
// candidate ID (also used as an Istio principal pattern). Checks, besides "no crash, hang or
// leak" (ASan/UBSan/libFuzzer):
//  - parseSpiffeIdView and parseSpiffeId agree;
//  - an accepted ID prints back to the input, re-parses to the same parts, has a trust
//    domain of [a-z0-9._-] and a path that is empty or starts with '/', and its principal
//    matches itself exactly, as "*", and as its own prefix and suffix patterns;
//  - a rejection's offset lies within the input (or at its end) and its message names the
//    input ("invalid SPIFFE ID \"...");
//  - the workload/node path splitters return, and what they return round-trips through
//    makeWorkloadId/makeNodeId;
//  - principalMatches(input, fixed IDs) equals a plain string reference implementation.
// A broken invariant is __builtin_trap(), which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "identity/spiffe.h"

namespace meshd::identity {
namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool referenceMatch(std::string_view pattern, const std::string& principal) {
  if (pattern == "*") return true;
  if (!pattern.empty() && pattern.front() == '*')
    return std::string_view(principal).ends_with(pattern.substr(1));
  if (!pattern.empty() && pattern.back() == '*') {
    return std::string_view(principal).starts_with(pattern.substr(0, pattern.size() - 1));
  }
  return pattern == principal;
}

void fuzzOne(std::string_view data) {
  SpiffeIdView v;
  SpiffeParseError e;
  const bool ok = parseSpiffeIdView(data, &v, &e);
  absl::StatusOr<SpiffeId> owned = parseSpiffeId(data);
  check(ok == owned.ok());
  if (ok) {
    check(owned->trust_domain == v.trust_domain && owned->path == v.path);
    check(owned->toString() == data);
    check(!v.trust_domain.empty() && validateTrustDomain(v.trust_domain).ok());
    check(v.path.empty() || v.path.front() == '/');
    const std::string principal = owned->principal();
    check(principalMatches(principal, v));
    check(principalMatches("*", v));
    check(principalMatches(principal + "*", v));
    check(principalMatches("*" + principal, v));
    if (absl::StatusOr<WorkloadIdentity> w = workloadIdentity(v); w.ok()) {
      absl::StatusOr<SpiffeId> again = makeWorkloadId(v.trust_domain, w->ns, w->service_account);
      check(again.ok() && *again == *owned);
    }
    if (absl::StatusOr<std::string_view> n = nodeName(v); n.ok()) {
      absl::StatusOr<SpiffeId> again = makeNodeId(v.trust_domain, *n);
      check(again.ok() && *again == *owned);
    }
  } else {
    check(e.offset <= data.size());
    const std::string message = describe(e, data);
    check(message.starts_with("invalid SPIFFE ID \""));
    check(owned.status().message() == message);
  }
  for (const SpiffeIdView fixed :
       {SpiffeIdView{"cluster.local", "/ns/default/sa/web"}, SpiffeIdView{"td", ""}}) {
    const std::string principal = std::string(fixed.trust_domain) + std::string(fixed.path);
    check(principalMatches(data, fixed) == referenceMatch(data, principal));
  }
}

}  // namespace
}  // namespace meshd::identity

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  meshd::identity::fuzzOne(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
