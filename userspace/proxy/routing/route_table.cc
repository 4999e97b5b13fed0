#include "proxy/routing/route_table.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "re2/re2.h"

namespace meshd::proxy::routing {
namespace {

using resources::PathMatchType;
using resources::PathModifierType;
using resources::RouteFilterType;
using resources::ValueMatchType;

absl::string_view sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string lower(std::string_view s) { return absl::AsciiStrToLower(sv(s)); }

std::string_view stripTrailingSlash(std::string_view s) {
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  return s;
}

// Element-wise prefix match: "/foo" matches "/foo", "/foo/", "/foo/bar", not
// "/foobar". `prefix` has no trailing '/' ("" matches every path).
bool prefixMatches(std::string_view prefix, std::string_view path) {
  if (path.size() < prefix.size() || path.substr(0, prefix.size()) != prefix) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '/' || prefix.empty();
}

re2::StringPiece piece(std::string_view s) { return re2::StringPiece(s.data(), s.size()); }

bool valueMatches(const RouteMatch::Condition& c, std::string_view value) {
  if (c.regex) return RE2::FullMatch(piece(value), *c.regex);
  return value == c.value;
}

std::shared_ptr<const RE2> compile(const std::string& pattern) {
  RE2::Options opts;
  opts.set_log_errors(false);
  auto re = std::make_shared<const RE2>(pattern, opts);
  return re->ok() ? re : nullptr;  // validated by resources; defensive
}

HeaderEdits headerEdits(const resources::HeaderModifier& m) {
  HeaderEdits e;
  for (const auto& h : m.set) e.set.push_back({lower(h.name), h.value});
  for (const auto& h : m.add) e.add.push_back({lower(h.name), h.value});
  for (const auto& n : m.remove) e.remove.push_back(lower(n));
  return e;
}

// The rule's edits followed by a backendRef's: a name the backendRef edits is
// taken out of the rule's lists first, so each name keeps one action.
void appendEdits(HeaderEdits& to, const HeaderEdits& from) {
  auto drop = [&](const std::string& name) {
    auto same = [&](const resources::HeaderValue& h) { return h.name == name; };
    to.set.erase(std::remove_if(to.set.begin(), to.set.end(), same), to.set.end());
    to.add.erase(std::remove_if(to.add.begin(), to.add.end(), same), to.add.end());
    to.remove.erase(std::remove(to.remove.begin(), to.remove.end(), name), to.remove.end());
  };
  for (const auto& h : from.set) drop(h.name);
  for (const auto& h : from.add) drop(h.name);
  for (const auto& n : from.remove) drop(n);
  to.set.insert(to.set.end(), from.set.begin(), from.set.end());
  to.add.insert(to.add.end(), from.add.begin(), from.add.end());
  to.remove.insert(to.remove.end(), from.remove.begin(), from.remove.end());
}

PathRewrite pathRewrite(const resources::PathModifier& m, std::string_view rule_prefix) {
  PathRewrite p;
  p.type = m.type;
  if (m.type == PathModifierType::kReplacePrefixMatch) {
    p.value = std::string(stripTrailingSlash(m.value));
    p.prefix = std::string(stripTrailingSlash(rule_prefix));
  } else {
    p.value = m.value;
  }
  return p;
}

bool isGrpcContentType(std::string_view v) {
  constexpr absl::string_view kGrpc = "application/grpc";
  if (v.size() < kGrpc.size() || !absl::EqualsIgnoreCase(sv(v.substr(0, kGrpc.size())), kGrpc)) {
    return false;
  }
  return v.size() == kGrpc.size() || v[kGrpc.size()] == '+' || v[kGrpc.size()] == ';';
}

}  // namespace

// ---------------------------------------------------------------------------

const Endpoint* Cluster::pickEndpoint(uint64_t random) const {
  if (endpoints.empty() || cumulative.back() == 0) return nullptr;
  const uint64_t r = random % cumulative.back();
  auto it = std::upper_bound(cumulative.begin(), cumulative.end(), r);
  return &endpoints[static_cast<size_t>(it - cumulative.begin())];
}

void HeaderEdits::apply(absl::Span<const http1::HeaderField> in,
                        std::vector<http1::HeaderField>& out) const {
  auto named = [](const auto& list, std::string_view name, auto key) {
    for (const auto& e : list) {
      if (absl::EqualsIgnoreCase(sv(key(e)), sv(name))) return true;
    }
    return false;
  };
  for (const http1::HeaderField& f : in) {
    if (named(remove, f.name, [](const std::string& n) -> std::string_view { return n; }) ||
        named(set, f.name,
              [](const resources::HeaderValue& h) -> std::string_view { return h.name; })) {
      continue;
    }
    out.push_back(f);
  }
  for (const auto& h : set) out.push_back({h.name, h.value, false});
  for (const auto& h : add) out.push_back({h.name, h.value, false});
}

void PathRewrite::apply(std::string_view path_and_query, std::string& out) const {
  const size_t q = path_and_query.find('?');
  const std::string_view path = path_and_query.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? "" : path_and_query.substr(q);
  if (type == PathModifierType::kReplaceFullPath) {
    out.append(value);
  } else if (prefixMatches(prefix, path)) {
    const std::string_view rest = path.substr(prefix.size());  // "" or "/..."
    const size_t before = out.size();
    out.append(value);
    out.append(rest);
    if (out.size() == before) out.push_back('/');
  } else {
    out.append(path);
  }
  out.append(query);
}

void Redirect::appendLocation(const Request& req, std::string_view request_scheme,
                              uint16_t listener_port, std::string& out) const {
  const std::string_view out_scheme = scheme.empty() ? request_scheme : std::string_view(scheme);
  uint16_t out_port = listener_port;
  if (port) {
    out_port = *port;
  } else if (!scheme.empty()) {
    out_port = scheme == "https" ? 443 : 80;
  }
  out.append(out_scheme);
  out.append("://");
  if (hostname.empty()) {
    out.append(authorityHost(req.authority));
  } else {
    out.append(hostname);
  }
  const bool default_port =
      (out_scheme == "http" && out_port == 80) || (out_scheme == "https" && out_port == 443);
  if (!default_port) absl::StrAppend(&out, ":", out_port);
  if (path) {
    path->apply(req.path, out);
  } else {
    out.append(req.path);
  }
}

const BackendRef* pickBackendRef(const Rule& rule, uint64_t random) {
  if (rule.cumulative.empty() || rule.cumulative.back() == 0) return nullptr;
  const uint64_t r = random % rule.cumulative.back();
  // The first backend whose running sum exceeds r: weight-0 backends add nothing
  // to the sum, so they are never chosen.
  auto it = std::upper_bound(rule.cumulative.begin(), rule.cumulative.end(), r);
  return &rule.backends[static_cast<size_t>(it - rule.cumulative.begin())];
}

const Cluster* pickBackend(const Rule& rule, uint64_t random) {
  const BackendRef* b = pickBackendRef(rule, random);
  return b ? b->cluster : nullptr;
}

std::string_view authorityHost(std::string_view authority) {
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    return close == std::string_view::npos ? authority : authority.substr(0, close + 1);
  }
  const size_t colon = authority.rfind(':');
  return colon == std::string_view::npos ? authority : authority.substr(0, colon);
}

bool RouteMatch::matches(const Request& req, std::string_view host, std::string_view path,
                         std::string_view query) const {
  if (!hostname_.empty()) {
    if (hostname_[0] == '*') {
      // "*.example.com" matches "a.example.com" and "a.b.example.com", not "example.com".
      const std::string_view suffix = std::string_view(hostname_).substr(1);  // ".example.com"
      if (host.size() <= suffix.size() || !absl::EndsWithIgnoreCase(sv(host), sv(suffix))) {
        return false;
      }
    } else if (!absl::EqualsIgnoreCase(sv(host), hostname_)) {
      return false;
    }
  }
  switch (path_type_) {
    case PathMatchType::kExact:
      if (path != path_) return false;
      break;
    case PathMatchType::kPathPrefix:
      if (!prefixMatches(path_, path)) return false;
      break;
    case PathMatchType::kRegularExpression:
      if (!path_regex_ || !RE2::FullMatch(piece(path), *path_regex_)) return false;
      break;
  }
  if (!method_.empty() && req.method != method_) return false;
  if (grpc_) {
    if (req.method != "POST") return false;
    bool grpc_type = false;
    for (const auto& f : req.headers) {
      if (absl::EqualsIgnoreCase(sv(f.name), "content-type"))
        grpc_type = isGrpcContentType(f.value);
    }
    if (!grpc_type) return false;
  }
  // Headers: some field line of that name has a matching value.
  for (const Condition& c : headers_) {
    bool found = false;
    for (const auto& f : req.headers) {
      if (absl::EqualsIgnoreCase(sv(f.name), c.name) && valueMatches(c, f.value)) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  // Query parameters: the first parameter of that name (the spec's recommendation).
  for (const Condition& c : query_) {
    bool found = false;
    std::string_view rest = query;
    while (!rest.empty()) {
      const size_t amp = rest.find('&');
      const std::string_view pair = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
      const size_t eq = pair.find('=');
      const std::string_view name = pair.substr(0, eq);
      if (name != c.name) continue;
      const std::string_view value =
          eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
      found = valueMatches(c, value);
      break;
    }
    if (!found) return false;
  }
  return true;
}

std::string RouteMatch::describe() const {
  static constexpr const char* kPathType[] = {"Exact", "PathPrefix", "RegularExpression"};
  std::string out = absl::StrCat(rule_->route, " rules[", rule_->index, "].matches[", match_index_,
                                 "] host=", hostname_.empty() ? "*" : hostname_);
  if (grpc_) absl::StrAppend(&out, " grpc");
  absl::StrAppend(&out, " path=", kPathType[static_cast<int>(path_type_)], ":",
                  path_type_ == PathMatchType::kPathPrefix && path_.empty() ? "/" : path_);
  if (!method_.empty()) absl::StrAppend(&out, " method=", method_);
  if (!headers_.empty()) absl::StrAppend(&out, " headers=", headers_.size());
  if (!query_.empty()) absl::StrAppend(&out, " query=", query_.size());
  return out;
}

const RouteMatch* ServiceRoutes::match(const Request& req) const {
  const std::string_view host = authorityHost(req.authority);
  const size_t q = req.path.find('?');
  const std::string_view path = req.path.substr(0, q);
  const std::string_view query =
      q == std::string_view::npos ? std::string_view() : req.path.substr(q + 1);
  for (const RouteMatch& m : entries_) {
    if (m.matches(req, host, path, query)) return &m;
  }
  return nullptr;
}

const ServiceRoutes* RouteTable::find(const IpAddress& vip, uint16_t port) const {
  auto it = by_vip_.find(VipPort{vip, port});
  return it == by_vip_.end() ? nullptr : it->second;
}

const Cluster* RouteTable::cluster(std::string_view name) const {
  auto it = cluster_by_name_.find(sv(name));
  return it == cluster_by_name_.end() ? nullptr : it->second;
}

// ---------------------------------------------------------------------------
// Building.

class RouteTableBuilder {
 public:
  RouteTableBuilder(const state::DesiredLbState& lb) : lb_(lb) {}

  absl::Status addHttpRoute(const resources::Resource& r) {
    ASSIGN_OR_RETURN(resources::HttpRouteSpec spec, resources::httpRouteSpec(r));
    Route route = newRoute(r, spec.parent_refs, spec.hostnames);
    for (size_t ri = 0; ri < spec.rules.size(); ++ri) {
      const resources::HttpRouteRule& src = spec.rules[ri];
      // ReplacePrefixMatch is only valid with exactly one PathPrefix match.
      const std::string_view prefix =
          src.matches.size() == 1 ? std::string_view(src.matches[0].path.value) : "";
      Rule* rule = newRule(route, ri, src.name, false, src.filters, src.backend_refs, prefix);
      rule->request_timeout_ms = src.timeouts.request_ms;
      rule->backend_request_timeout_ms = src.timeouts.backend_request_ms;
      for (size_t mi = 0; mi < src.matches.size(); ++mi) {
        const resources::HttpRouteMatch& m = src.matches[mi];
        RouteMatch e = baseEntry(route, rule, mi);
        e.path_type_ = m.path.type;
        switch (m.path.type) {
          case PathMatchType::kExact:
            e.path_ = m.path.value;
            break;
          case PathMatchType::kPathPrefix:
            e.path_ = std::string(stripTrailingSlash(m.path.value));
            break;
          case PathMatchType::kRegularExpression:
            e.path_ = m.path.value;
            e.path_regex_ = compile(m.path.value);
            break;
        }
        e.method_ = m.method;
        for (const auto& h : m.headers) e.headers_.push_back(condition(h, true));
        for (const auto& q : m.query_params) e.query_.push_back(condition(q, false));
        route.entries.push_back(std::move(e));
      }
    }
    expandHostnames(route);
    routes_.push_back(std::move(route));
    return absl::OkStatus();
  }

  absl::Status addGrpcRoute(const resources::Resource& r) {
    ASSIGN_OR_RETURN(resources::GrpcRouteSpec spec, resources::grpcRouteSpec(r));
    Route route = newRoute(r, spec.parent_refs, spec.hostnames);
    for (size_t ri = 0; ri < spec.rules.size(); ++ri) {
      const resources::GrpcRouteRule& src = spec.rules[ri];
      Rule* rule = newRule(route, ri, src.name, true, src.filters, src.backend_refs, "");
      // No matches: every gRPC request.
      const size_t n = std::max<size_t>(src.matches.size(), 1);
      for (size_t mi = 0; mi < n; ++mi) {
        RouteMatch e = baseEntry(route, rule, mi);
        e.grpc_ = true;
        e.path_type_ = PathMatchType::kPathPrefix;  // "" = every path
        if (mi < src.matches.size()) {
          const resources::GrpcRouteMatch& m = src.matches[mi];
          for (const auto& h : m.headers) e.headers_.push_back(condition(h, true));
          if (m.method) grpcPath(*m.method, e);
        }
        route.entries.push_back(std::move(e));
      }
    }
    expandHostnames(route);
    routes_.push_back(std::move(route));
    return absl::OkStatus();
  }

  std::shared_ptr<const RouteTable> finish() {
    // Every (ns, service, port) some route binds, with its routes. Dual-stack
    // Services have one frontend per family; they share one ServiceRoutes.
    using SvcPort = std::tuple<std::string, std::string, uint16_t>;
    std::map<SvcPort, std::vector<const Route*>> bound;
    std::map<SvcPort, std::vector<IpAddress>> vips;
    for (const state::Frontend& f : lb_.frontends) {
      if (f.protocol != state::Protocol::kTcp) continue;
      const SvcPort key{f.ns, f.service, f.port};
      bool any = false;
      for (const Route& route : routes_) {
        if (route.ns != f.ns) continue;
        for (const auto& p : route.parents) {
          if (p.binds(f.service, f.port, f.port_name)) {
            auto& list = bound[key];
            if (std::find(list.begin(), list.end(), &route) == list.end()) list.push_back(&route);
            any = true;
            break;
          }
        }
      }
      if (any) vips[key].push_back(f.vip);
    }
    // Every L7 TCP frontend's own cluster (also those without routes: a request-level
    // TrafficPolicy alone makes a Service L7), with its request policy.
    for (const state::Frontend& f : lb_.frontends) {
      if (f.protocol != state::Protocol::kTcp || !f.l7) continue;
      table_->cluster_by_vip_[RouteTable::VipPort{f.vip, f.port}] =
          cluster(f.ns, resources::ServicePortRef{f.service, f.port});
    }
    for (auto& [key, routes] : bound) {
      auto svc = std::make_unique<ServiceRoutes>();
      svc->service_ = absl::StrCat(std::get<0>(key), "/", std::get<1>(key), ":", std::get<2>(key));
      svc->request_policy_ = policy(std::get<0>(key), std::get<1>(key), std::get<2>(key));
      for (const Route* route : routes) {
        svc->entries_.insert(svc->entries_.end(), route->entries.begin(), route->entries.end());
      }
      std::stable_sort(svc->entries_.begin(), svc->entries_.end(), precedes);
      for (const IpAddress& vip : vips[key]) {
        table_->by_vip_[RouteTable::VipPort{vip, std::get<2>(key)}] = svc.get();
      }
      table_->services_.push_back(std::move(svc));
    }
    return std::move(table_);
  }

 private:
  struct Route {
    std::string kind, ns, name;
    std::vector<resources::RouteParentRef> parents;
    std::vector<std::string> hostnames;  // empty = any
    int64_t created_ns = std::numeric_limits<int64_t>::max();
    std::vector<RouteMatch> entries;
  };

  // Precedence (Gateway API; "continuing on ties"):
  //  1. characters in a matching non-wildcard hostname, then in a matching
  //     hostname (routes with hostnames before routes without);
  //  2. GRPCRoute matches before HTTPRoute matches (they only ever match gRPC
  //     requests, so a gRPC request meets its GRPCRoute first);
  //  3. gRPC: characters in the matching service, then method, then header count;
  //     HTTP: Exact path > RegularExpression (longer pattern first; the spec
  //     leaves regex placement to the implementation) > PathPrefix (longer
  //     first), then a method match, then header count, then query count;
  //  4. the oldest route (creationTimestamp; routes without one last), then the
  //     route's "ns/name" alphabetically, then rule order, then match order.
  static bool precedes(const RouteMatch& a, const RouteMatch& b) {
    auto key = [](const RouteMatch& m) {
      const bool wildcard = !m.hostname_.empty() && m.hostname_[0] == '*';
      const size_t exact_host = wildcard ? 0 : m.hostname_.size();
      int path_rank = 0;
      if (m.path_type_ == PathMatchType::kExact) path_rank = 2;
      if (m.path_type_ == PathMatchType::kRegularExpression) path_rank = 1;
      const size_t k1 = m.grpc_ ? m.service_len_ : static_cast<size_t>(path_rank);
      const size_t k2 = m.grpc_ ? m.method_len_ : m.path_.size();
      const size_t k3 = m.grpc_ ? m.headers_.size() : (m.method_.empty() ? 0 : 1);
      const size_t k4 = m.grpc_ ? 0 : m.headers_.size();
      const size_t k5 = m.grpc_ ? 0 : m.query_.size();
      // Larger is better for these: negate by comparing b's against a's below.
      return std::make_tuple(exact_host, m.hostname_.size(), m.grpc_ ? 1 : 0, k1, k2, k3, k4, k5);
    };
    const auto ka = key(a);
    const auto kb = key(b);
    if (ka != kb) return ka > kb;
    return std::tie(a.created_ns_, a.route_order_, a.rule_->route, a.rule_->index, a.match_index_) <
           std::tie(b.created_ns_, b.route_order_, b.rule_->route, b.rule_->index, b.match_index_);
  }

  Route newRoute(const resources::Resource& r, std::vector<resources::RouteParentRef> parents,
                 const std::vector<std::string>& hostnames) {
    Route route;
    route.kind = r.key.kind;
    route.ns = r.key.ns;
    route.name = r.key.name;
    route.parents = std::move(parents);
    route.hostnames = hostnames;
    if (const auto md = r.object.find("metadata"); md != r.object.end() && md->is_object()) {
      if (const auto ts = md->find("creationTimestamp"); ts != md->end() && ts->is_string()) {
        absl::Time t;
        std::string err;
        if (absl::ParseTime(absl::RFC3339_full, ts->get<std::string>(), &t, &err)) {
          route.created_ns = absl::ToUnixNanos(t);
        }
      }
    }
    return route;
  }

  // One entry per (match, hostname): precedence depends on which hostname matched.
  static void expandHostnames(Route& route) {
    if (route.hostnames.empty()) return;
    std::vector<RouteMatch> out;
    out.reserve(route.entries.size() * route.hostnames.size());
    for (const RouteMatch& e : route.entries) {
      for (const std::string& h : route.hostnames) {
        out.push_back(e);
        out.back().hostname_ = h;
      }
    }
    route.entries = std::move(out);
  }

  RouteMatch baseEntry(const Route& route, const Rule* rule, size_t match_index) {
    RouteMatch e;
    e.rule_ = rule;
    e.match_index_ = match_index;
    e.created_ns_ = route.created_ns;
    e.route_order_ = absl::StrCat(route.ns, "/", route.name);
    return e;
  }

  static RouteMatch::Condition condition(const resources::ValueMatch& v, bool header) {
    RouteMatch::Condition c;
    c.name = header ? lower(v.name) : v.name;
    if (v.type == ValueMatchType::kRegularExpression) {
      c.regex = compile(v.value);
    } else {
      c.value = v.value;
    }
    return c;
  }

  // A GRPCRoute method match as a path match on "/<service>/<method>".
  static void grpcPath(const resources::GrpcMethodMatch& m, RouteMatch& e) {
    e.service_len_ = m.service.size();
    e.method_len_ = m.method.size();
    if (m.type == ValueMatchType::kExact && !m.service.empty() && !m.method.empty()) {
      e.path_type_ = PathMatchType::kExact;
      e.path_ = absl::StrCat("/", m.service, "/", m.method);
      return;
    }
    if (m.type == ValueMatchType::kExact && m.method.empty()) {
      e.path_type_ = PathMatchType::kPathPrefix;  // "/svc" element-wise: "/svc/<any>"
      e.path_ = absl::StrCat("/", m.service);
      return;
    }
    std::string service = m.service.empty()                  ? "[^/]+"
                          : m.type == ValueMatchType::kExact ? RE2::QuoteMeta(m.service)
                                                             : absl::StrCat("(?:", m.service, ")");
    std::string method = m.method.empty()                   ? "[^/]+"
                         : m.type == ValueMatchType::kExact ? RE2::QuoteMeta(m.method)
                                                            : absl::StrCat("(?:", m.method, ")");
    e.path_type_ = PathMatchType::kRegularExpression;
    e.path_ = absl::StrCat("/", service, "/", method);
    e.path_regex_ = compile(e.path_);
  }

  // The request policy of the TCP frontend ns/service:port (one copy per Service port, shared
  // by its frontends of both families), or the defaults when there is no such frontend.
  const state::RequestPolicy* policy(const std::string& ns, const std::string& service,
                                     uint16_t port) {
    const std::string name = absl::StrCat(ns, "/", service, ":", port);
    if (auto it = policy_by_name_.find(name); it != policy_by_name_.end()) return it->second;
    auto p = std::make_unique<state::RequestPolicy>();
    for (const state::Frontend& f : lb_.frontends) {
      if (f.ns == ns && f.service == service && f.port == port &&
          f.protocol == state::Protocol::kTcp) {
        *p = f.request;
        break;
      }
    }
    const state::RequestPolicy* out = p.get();
    policy_by_name_.emplace(name, out);
    table_->policies_.push_back(std::move(p));
    return out;
  }

  const Cluster* cluster(const std::string& ns, const resources::ServicePortRef& ref) {
    const std::string name = absl::StrCat(ns, "/", ref.name, ":", ref.port);
    if (auto it = table_->cluster_by_name_.find(name); it != table_->cluster_by_name_.end()) {
      return it->second;
    }
    auto c = std::make_unique<Cluster>();
    c->name = name;
    for (const state::Frontend& f : lb_.frontends) {
      if (f.ns != ns || f.service != ref.name || f.port != ref.port ||
          f.protocol != state::Protocol::kTcp) {
        continue;
      }
      c->resolved = true;
      for (const state::Backend& b : f.backends) {
        if (b.weight == 0) continue;
        c->endpoints.push_back(Endpoint{b.address, b.port, b.weight});
      }
    }
    std::sort(c->endpoints.begin(), c->endpoints.end(), [](const Endpoint& a, const Endpoint& b) {
      return std::tie(a.address, a.port) < std::tie(b.address, b.port);
    });
    c->endpoints.erase(std::unique(c->endpoints.begin(), c->endpoints.end(),
                                   [](const Endpoint& a, const Endpoint& b) {
                                     return a.address == b.address && a.port == b.port;
                                   }),
                       c->endpoints.end());
    uint64_t sum = 0;
    for (const Endpoint& e : c->endpoints) c->cumulative.push_back(sum += e.weight);
    if (c->resolved) c->request_policy = policy(ns, ref.name, ref.port);
    const Cluster* out = c.get();
    table_->cluster_by_name_.emplace(name, out);
    table_->clusters_.push_back(std::move(c));
    return out;
  }

  Rule* newRule(Route& route, size_t index, const std::string& name, bool grpc,
                const std::vector<resources::RouteFilter>& filters,
                const std::vector<resources::RouteBackendRef>& backends, std::string_view prefix) {
    auto rule = std::make_unique<Rule>();
    rule->route = absl::StrCat(route.kind, "/", route.ns, "/", route.name);
    rule->index = index;
    rule->name = name;
    rule->grpc = grpc;
    for (const resources::RouteFilter& f : filters) {
      switch (f.type) {
        case RouteFilterType::kRequestHeaderModifier:
          rule->request_headers = headerEdits(f.headers);
          break;
        case RouteFilterType::kResponseHeaderModifier:
          rule->response_headers = headerEdits(f.headers);
          break;
        case RouteFilterType::kRequestRedirect: {
          Redirect r;
          r.scheme = f.redirect.scheme;
          r.hostname = f.redirect.hostname;
          if (f.redirect.path) r.path = pathRewrite(*f.redirect.path, prefix);
          r.port = f.redirect.port;
          r.status_code = f.redirect.status_code;
          rule->redirect = std::move(r);
          break;
        }
        case RouteFilterType::kUrlRewrite: {
          UrlRewrite u;
          u.hostname = f.rewrite.hostname;
          if (f.rewrite.path) u.path = pathRewrite(*f.rewrite.path, prefix);
          rule->rewrite = std::move(u);
          break;
        }
        case RouteFilterType::kRequestMirror:
          rule->mirrors.push_back(Mirror{cluster(route.ns, f.mirror.backend), f.mirror.numerator,
                                         f.mirror.denominator});
          break;
      }
    }
    uint64_t sum = 0;
    for (const resources::RouteBackendRef& b : backends) {
      BackendRef ref;
      ref.cluster = cluster(route.ns, b.service);
      ref.weight = b.weight;
      ref.request_headers = rule->request_headers;
      ref.response_headers = rule->response_headers;
      for (const resources::RouteFilter& f : b.filters) {
        if (f.type == RouteFilterType::kRequestHeaderModifier) {
          appendEdits(ref.request_headers, headerEdits(f.headers));
        } else if (f.type == RouteFilterType::kResponseHeaderModifier) {
          appendEdits(ref.response_headers, headerEdits(f.headers));
        }
      }
      rule->backends.push_back(std::move(ref));
      rule->cumulative.push_back(sum += b.weight);
    }
    Rule* out = rule.get();
    table_->rules_.push_back(std::move(rule));
    return out;
  }

  const state::DesiredLbState& lb_;
  absl::flat_hash_map<std::string, const state::RequestPolicy*> policy_by_name_;
  std::shared_ptr<RouteTable> table_ = std::shared_ptr<RouteTable>(new RouteTable());
  std::vector<Route> routes_;
};

const Cluster* RouteTable::serviceCluster(const IpAddress& vip, uint16_t port) const {
  auto it = cluster_by_vip_.find(VipPort{vip, port});
  return it == cluster_by_vip_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<const RouteTable>> RouteTable::build(
    const resources::ResourceSet& set, const state::DesiredLbState& lb) {
  RouteTableBuilder b(lb);
  for (const auto* r : set.list(resources::kKindHttpRoute)) RETURN_IF_ERROR(b.addHttpRoute(*r));
  for (const auto* r : set.list(resources::kKindGrpcRoute)) RETURN_IF_ERROR(b.addGrpcRoute(*r));
  return b.finish();
}

}  // namespace meshd::proxy::routing
