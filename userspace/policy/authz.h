// Authorization (Istio's AuthorizationPolicy semantics) and the effective mTLS mode
// (Istio's PeerAuthentication resolution), compiled from the applied resources.
//
// An Authorizer is built on the updater thread from a ResourceSet and is immutable
// afterwards: every Workload resource becomes a policy::Workload holding pointers to the
// compiled policies that select it (DENY and ALLOW lists) and its resolved mTLS modes.
// evaluate() then walks those lists with string views only: no allocation, no lock.
//
// Semantics (docs/resources.md "AuthorizationPolicy"; docs/design/0004-identity-mtls.md,
// "Authorization and rate limits"):
//  - a policy selects the workloads of its namespace whose labels include
//    selector.matchLabels (no selector: all of them); a policy in the root namespace
//    (meshd-system) selects workloads of every namespace;
//  - DENY policies first: any match denies; then, if any ALLOW policy selects the
//    workload, one of them must match, else the request is allowed;
//  - a policy matches when one of its rules matches; a rule matches when one of its `from`
//    sources (none = any), one of its `to` operations (none = any) and all of its `when`
//    conditions match; a source/operation/condition matches when every field it sets does:
//    X lists need one value to match, notX lists need none to match;
//  - strings: "abc" exact, "abc*" prefix, "*abc" suffix, "*" any present value — a missing
//    attribute (no principal, no such header) matches nothing, not even "*" (so
//    `principals: ["*"]` requires an authenticated peer, as in Istio);
//  - L4-only requests (Request::http false; the kernel and the tunnel): a field that needs
//    HTTP (methods, paths, hosts and their notX, request.headers[...]) makes its rule NOT
//    match in an ALLOW policy and is ignored (treated as matching) in a DENY policy, as
//    Istio's ztunnel does: fail closed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "proxy/http1/head_parser.h"
#include "resources/resource.h"
#include "resources/resource_set.h"

namespace meshd::policy {

// One request (or connection) as authorization sees it. Views; nothing is copied.
struct Request {
  // The peer's SPIFFE ID ("spiffe://cluster.local/ns/a/sa/b", or without "spiffe://");
  // "" = unauthenticated.
  std::string_view principal;
  std::string_view ns;  // the peer's namespace; "" = unknown
  IpAddress ip;         // the peer's address (family 0 = unknown)
  uint16_t port = 0;    // the destination (workload) port
  bool http = false;    // whether the fields below are known
  std::string_view method;
  std::string_view path;  // origin-form; the query (after '?') is ignored
  std::string_view host;  // Host / :authority
  absl::Span<const proxy::http1::HeaderField> headers;
};

struct CompiledPolicy;

struct Decision {
  bool allowed = true;
  // "ns/name" of the policy that decided: the DENY policy that matched, or the ALLOW policy
  // that matched; null when no policy selects the workload (allowed) or when ALLOW policies
  // select it but none matched (denied: Envoy's "no matching policy").
  const std::string* policy = nullptr;
};

// A Workload resource with what applies to it.
struct Workload {
  std::string ns, name;
  std::string service_account;
  std::string principal;  // spiffe://<trust domain>/ns/<ns>/sa/<service account>
  std::string node;
  resources::Labels labels;
  std::vector<IpAddress> addresses;
  std::vector<const CompiledPolicy*> deny, allow;  // in (namespace, name) order
  // PeerAuthentication, resolved (effectiveMtlsMode()).
  resources::MtlsMode mtls = resources::MtlsMode::kPermissive;
  std::vector<std::pair<uint16_t, resources::MtlsMode>> port_mtls;  // sorted; never kUnset
};

// "ns/name" of a compiled policy (the string Decision::policy points at).
const std::string& nameOf(const CompiledPolicy& p);

// Whether the policy's verdict can depend on the peer's address (ipBlocks, notIpBlocks, a
// `source.ip` condition): such a policy cannot be decided from an identity alone (the kernel's
// L4 authorization leaves its workloads to meshd).
bool dependsOnSourceIp(const CompiledPolicy& p);

// Istio's authorization of `r` against the workload's policies. No allocation.
Decision evaluate(const Workload& w, const Request& r);

// The mTLS mode the workload's port gets (Istio's resolution): the workload's
// PeerAuthentication (selector matching, its namespace) overrides the namespace's (no
// selector, its namespace), which overrides the mesh's (no selector, meshd-system); UNSET
// inherits; a port-level mode of the workload policy overrides for that port; PERMISSIVE
// when nothing sets one. Several policies at one level: the first by name wins.
resources::MtlsMode effectiveMtlsMode(const Workload& w, uint16_t port);

class Authorizer {
 public:
  // Compiles every AuthorizationPolicy, PeerAuthentication and Workload of `set`. Fails only
  // when one of them does not validate (the model validated them all before).
  static absl::StatusOr<std::shared_ptr<const Authorizer>> build(
      const resources::ResourceSet& set,
      std::string_view trust_domain = resources::kDefaultTrustDomain);

  ~Authorizer();
  Authorizer(const Authorizer&) = delete;
  Authorizer& operator=(const Authorizer&) = delete;

  // The Workload with this address; null when none.
  const Workload* workloadByAddress(const IpAddress& a) const;
  const Workload* workload(std::string_view ns, std::string_view name) const;
  const std::vector<std::unique_ptr<Workload>>& workloads() const { return workloads_; }
  size_t policyCount() const { return policies_.size(); }

 private:
  Authorizer() = default;
  std::vector<std::unique_ptr<CompiledPolicy>> policies_;
  std::vector<std::unique_ptr<Workload>> workloads_;
  absl::flat_hash_map<IpAddress, const Workload*> by_address_;
};

// Istio string pattern matching ("abc", "abc*", "*abc", "*"); exposed for tests.
bool matchPattern(std::string_view pattern, std::string_view value, bool ignore_case = false);

}  // namespace meshd::policy
