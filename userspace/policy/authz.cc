#include "policy/authz.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace meshd::policy {

using resources::AuthzAction;
using resources::AuthzConditionKey;
using resources::IpBlock;
using resources::MtlsMode;

namespace {

constexpr std::string_view kSpiffe = "spiffe://";

absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string_view stripSpiffe(std::string_view p) {
  return p.starts_with(kSpiffe) ? p.substr(kSpiffe.size()) : p;
}

// A string field: `in` needs one match (when set), `not_in` needs none.
struct StrField {
  std::vector<std::string> in, not_in;
  bool set() const { return !in.empty() || !not_in.empty(); }
};

// value null = the attribute is absent: matches no pattern.
bool fieldMatches(const StrField& f, const std::string_view* value, bool ci) {
  if (!f.in.empty()) {
    if (value == nullptr) return false;
    bool any = false;
    for (const std::string& p : f.in) {
      if (matchPattern(p, *value, ci)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  if (value != nullptr) {
    for (const std::string& p : f.not_in) {
      if (matchPattern(p, *value, ci)) return false;
    }
  }
  return true;
}

bool ipMatches(const std::vector<IpBlock>& in, const std::vector<IpBlock>& not_in,
               const IpAddress& ip) {
  const bool present = ip.family != 0;
  if (!in.empty()) {
    if (!present) return false;
    bool any = false;
    for (const IpBlock& b : in) any = any || b.contains(ip);
    if (!any) return false;
  }
  if (present) {
    for (const IpBlock& b : not_in) {
      if (b.contains(ip)) return false;
    }
  }
  return true;
}

bool portMatches(const std::vector<uint16_t>& in, const std::vector<uint16_t>& not_in,
                 uint16_t port) {
  if (!in.empty() && std::find(in.begin(), in.end(), port) == in.end()) return false;
  return std::find(not_in.begin(), not_in.end(), port) == not_in.end();
}

struct CSource {
  StrField principals, namespaces;
  std::vector<IpBlock> ip, not_ip;
};

struct COperation {
  std::vector<uint16_t> ports, not_ports;
  StrField methods, paths, hosts;
};

struct CCondition {
  AuthzConditionKey key = AuthzConditionKey::kSourceNamespace;
  std::string header;  // lowercase
  StrField values;
  std::vector<IpBlock> ip, not_ip;
  std::vector<uint16_t> ports, not_ports;
};

struct CRule {
  std::vector<CSource> from;
  std::vector<COperation> to;
  std::vector<CCondition> when;
};

// The first value of a header (names compared case-insensitively); null when absent.
const std::string_view* findHeader(absl::Span<const proxy::http1::HeaderField> headers,
                                   std::string_view name) {
  for (const proxy::http1::HeaderField& f : headers) {
    if (absl::EqualsIgnoreCase(av(f.name), av(name))) return &f.value;
  }
  return nullptr;
}

// A field that needs HTTP: unknown on an L4-only request, where it fails an ALLOW rule and
// is ignored in a DENY rule (fail closed).
bool httpField(const StrField& f, const std::string_view* value, bool ci, const Request& r,
               bool deny) {
  if (!f.set()) return true;
  if (!r.http) return deny;
  return fieldMatches(f, value, ci);
}

bool sourceMatches(const CSource& s, const Request& r) {
  std::string_view principal = stripSpiffe(r.principal);
  if (!fieldMatches(s.principals, principal.empty() ? nullptr : &principal, false)) return false;
  if (!fieldMatches(s.namespaces, r.ns.empty() ? nullptr : &r.ns, false)) return false;
  return ipMatches(s.ip, s.not_ip, r.ip);
}

bool operationMatches(const COperation& o, const Request& r, bool deny) {
  if (!portMatches(o.ports, o.not_ports, r.port)) return false;
  std::string_view path = r.path.substr(0, r.path.find('?'));
  if (!httpField(o.methods, &r.method, false, r, deny)) return false;
  if (!httpField(o.paths, &path, false, r, deny)) return false;
  if (!o.hosts.set()) return true;
  if (!r.http) return deny;
  // The Host as sent, else without its port ("web:8080" matches hosts: ["web"]).
  if (fieldMatches(o.hosts, &r.host, true)) return true;
  const size_t colon = r.host.rfind(':');
  if (colon == std::string_view::npos || r.host.find(']', colon) != std::string_view::npos) {
    return false;
  }
  const std::string_view bare = r.host.substr(0, colon);
  return fieldMatches(o.hosts, &bare, true);
}

bool conditionMatches(const CCondition& c, const Request& r, bool deny) {
  switch (c.key) {
    case AuthzConditionKey::kRequestHeader:
      if (!r.http) return deny;
      return fieldMatches(c.values, findHeader(r.headers, c.header), false);
    case AuthzConditionKey::kSourceNamespace:
      return fieldMatches(c.values, r.ns.empty() ? nullptr : &r.ns, false);
    case AuthzConditionKey::kSourcePrincipal: {
      std::string_view principal = stripSpiffe(r.principal);
      return fieldMatches(c.values, principal.empty() ? nullptr : &principal, false);
    }
    case AuthzConditionKey::kSourceIp:
      return ipMatches(c.ip, c.not_ip, r.ip);
    case AuthzConditionKey::kDestinationPort:
      return portMatches(c.ports, c.not_ports, r.port);
  }
  return false;
}

bool ruleMatches(const CRule& rule, const Request& r, bool deny) {
  if (!rule.from.empty()) {
    bool any = false;
    for (const CSource& s : rule.from) {
      if (sourceMatches(s, r)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  if (!rule.to.empty()) {
    bool any = false;
    for (const COperation& o : rule.to) {
      if (operationMatches(o, r, deny)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  for (const CCondition& c : rule.when) {
    if (!conditionMatches(c, r, deny)) return false;
  }
  return true;
}

std::vector<std::string> principals(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  out.reserve(in.size());
  for (const std::string& p : in) out.emplace_back(stripSpiffe(p));
  return out;
}

CRule compileRule(const resources::AuthzRule& in) {
  CRule out;
  for (const auto& s : in.from) {
    CSource c;
    c.principals = {principals(s.principals), principals(s.not_principals)};
    c.namespaces = {s.namespaces, s.not_namespaces};
    c.ip = s.ip_blocks;
    c.not_ip = s.not_ip_blocks;
    out.from.push_back(std::move(c));
  }
  for (const auto& o : in.to) {
    COperation c;
    c.ports = o.ports;
    c.not_ports = o.not_ports;
    c.methods = {o.methods, o.not_methods};
    c.paths = {o.paths, o.not_paths};
    c.hosts = {o.hosts, o.not_hosts};
    out.to.push_back(std::move(c));
  }
  for (const auto& w : in.when) {
    CCondition c;
    c.key = w.key;
    c.header = w.header;
    if (w.key == AuthzConditionKey::kSourcePrincipal) {
      c.values = {principals(w.values), principals(w.not_values)};
    } else {
      c.values = {w.values, w.not_values};
    }
    c.ip = w.ip_values;
    c.not_ip = w.not_ip_values;
    c.ports = w.port_values;
    c.not_ports = w.not_port_values;
    out.when.push_back(std::move(c));
  }
  return out;
}

}  // namespace

struct CompiledPolicy {
  std::string name;  // "ns/name"
  std::string ns;
  AuthzAction action = AuthzAction::kAllow;
  std::optional<resources::Labels> selector;
  std::vector<CRule> rules;

  bool selects(const Workload& w) const {
    if (ns != w.ns && ns != resources::kMeshRootNamespace) return false;
    return !selector || resources::selectorMatches(*selector, w.labels);
  }
  bool matches(const Request& r) const {
    const bool deny = action == AuthzAction::kDeny;
    for (const CRule& rule : rules) {
      if (ruleMatches(rule, r, deny)) return true;
    }
    return false;
  }
};

const std::string& nameOf(const CompiledPolicy& p) { return p.name; }

bool dependsOnSourceIp(const CompiledPolicy& p) {
  for (const CRule& rule : p.rules) {
    for (const CSource& s : rule.from) {
      if (!s.ip.empty() || !s.not_ip.empty()) return true;
    }
    for (const CCondition& c : rule.when) {
      if (c.key == AuthzConditionKey::kSourceIp) return true;
    }
  }
  return false;
}

bool matchPattern(std::string_view pattern, std::string_view value, bool ci) {
  const absl::string_view p = av(pattern), v = av(value);
  if (p == "*") return !v.empty();
  if (p.size() > 1 && p.front() == '*') {
    return ci ? absl::EndsWithIgnoreCase(v, p.substr(1)) : absl::EndsWith(v, p.substr(1));
  }
  if (p.size() > 1 && p.back() == '*') {
    const absl::string_view prefix = p.substr(0, p.size() - 1);
    return ci ? absl::StartsWithIgnoreCase(v, prefix) : absl::StartsWith(v, prefix);
  }
  return ci ? absl::EqualsIgnoreCase(v, p) : v == p;
}

Decision evaluate(const Workload& w, const Request& r) {
  for (const CompiledPolicy* p : w.deny) {
    if (p->matches(r)) return Decision{false, &p->name};
  }
  if (w.allow.empty()) return Decision{true, nullptr};
  for (const CompiledPolicy* p : w.allow) {
    if (p->matches(r)) return Decision{true, &p->name};
  }
  return Decision{false, nullptr};
}

MtlsMode effectiveMtlsMode(const Workload& w, uint16_t port) {
  auto it = std::lower_bound(w.port_mtls.begin(), w.port_mtls.end(), port,
                             [](const auto& e, uint16_t p) { return e.first < p; });
  if (it != w.port_mtls.end() && it->first == port) return it->second;
  return w.mtls;
}

Authorizer::~Authorizer() = default;

absl::StatusOr<std::shared_ptr<const Authorizer>> Authorizer::build(
    const resources::ResourceSet& set, std::string_view trust_domain) {
  std::shared_ptr<Authorizer> a(new Authorizer());
  // Key order: (namespace, name), so evaluation order and "first by name" are deterministic.
  for (const resources::Resource* r : set.list(resources::kKindAuthorizationPolicy)) {
    ASSIGN_OR_RETURN(resources::AuthorizationPolicySpec spec,
                     resources::authorizationPolicySpec(*r));
    auto p = std::make_unique<CompiledPolicy>();
    p->name = absl::StrCat(r->key.ns, "/", r->key.name);
    p->ns = r->key.ns;
    p->action = spec.action;
    p->selector = std::move(spec.selector);
    for (const auto& rule : spec.rules) p->rules.push_back(compileRule(rule));
    a->policies_.push_back(std::move(p));
  }
  struct PeerAuthn {
    std::string ns;
    resources::PeerAuthenticationSpec spec;
  };
  std::vector<PeerAuthn> peer_authns;
  for (const resources::Resource* r : set.list(resources::kKindPeerAuthentication)) {
    ASSIGN_OR_RETURN(resources::PeerAuthenticationSpec spec, resources::peerAuthenticationSpec(*r));
    peer_authns.push_back({r->key.ns, std::move(spec)});
  }
  for (const resources::Resource* r : set.list(resources::kKindWorkload)) {
    ASSIGN_OR_RETURN(resources::WorkloadSpec spec, resources::workloadSpec(*r));
    auto w = std::make_unique<Workload>();
    w->ns = r->key.ns;
    w->name = r->key.name;
    w->service_account = spec.service_account;
    w->principal = resources::spiffeId(trust_domain, w->ns, spec.service_account);
    w->node = spec.node;
    w->labels = std::move(spec.labels);
    w->addresses = spec.addresses;
    for (const auto& p : a->policies_) {
      if (!p->selects(*w)) continue;
      (p->action == AuthzAction::kDeny ? w->deny : w->allow).push_back(p.get());
    }
    // PeerAuthentication: the first (by name) of each level.
    const resources::PeerAuthenticationSpec *mesh = nullptr, *nsw = nullptr, *wl = nullptr;
    for (const PeerAuthn& pa : peer_authns) {
      if (pa.spec.selector) {
        if (pa.ns == w->ns && wl == nullptr &&
            resources::selectorMatches(*pa.spec.selector, w->labels)) {
          wl = &pa.spec;
        }
      } else if (pa.ns == w->ns && nsw == nullptr) {
        nsw = &pa.spec;
      } else if (pa.ns == resources::kMeshRootNamespace && mesh == nullptr) {
        mesh = &pa.spec;
      }
    }
    MtlsMode mode = MtlsMode::kPermissive;
    for (const auto* level : {mesh, nsw, wl}) {
      if (level != nullptr && level->mode != MtlsMode::kUnset) mode = level->mode;
    }
    w->mtls = mode;
    if (wl != nullptr) {
      for (const auto& [port, m] : wl->port_level) {
        if (m != MtlsMode::kUnset) w->port_mtls.emplace_back(port, m);
      }
    }
    for (const IpAddress& ip : spec.addresses) a->by_address_.emplace(ip, w.get());
    a->workloads_.push_back(std::move(w));
  }
  return std::shared_ptr<const Authorizer>(std::move(a));
}

const Workload* Authorizer::workloadByAddress(const IpAddress& addr) const {
  auto it = by_address_.find(addr);
  return it == by_address_.end() ? nullptr : it->second;
}

const Workload* Authorizer::workload(std::string_view ns, std::string_view name) const {
  for (const auto& w : workloads_) {
    if (w->ns == ns && w->name == name) return w.get();
  }
  return nullptr;
}

}  // namespace meshd::policy
