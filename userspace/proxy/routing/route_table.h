// The request routing table of the L7 proxy: HTTPRoutes and GRPCRoutes bound to
// Services (GAMMA), compiled into an immutable table the proxy workers read
// concurrently (docs/design/0003-l7-proxy.md, "Routing (as built)").
//
// Built on the control thread from the applied resources and the desired LB
// state (for the backends of each Service port), published as a
// shared_ptr<const RouteTable> and swapped whole. Nothing here locks or
// allocates per request: lookups are a hash probe plus a scan of the matches
// bound to the Service in precedence order; regexes are compiled RE2 objects
// (thread-safe for matching); filters are precomputed data.
//
//   find(vip, port) ─► ServiceRoutes      null: no route, the L4 path serves it
//     match(request) ─► RouteMatch      null: 404
//       rule() ─► Rule                  filters: header edits, redirect, rewrite, mirrors
//         pickBackend(rule, rnd) ─► Cluster        null: 500
//           pickEndpoint(rnd) ─► Endpoint          null: 500 (unresolved) or 503
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "proxy/http1/head_parser.h"
#include "resources/resource.h"
#include "resources/resource_set.h"
#include "state/lb_state.h"

namespace re2 {
class RE2;
}

namespace meshd::proxy::routing {

// What routing looks at. All views into the connection's buffer.
struct Request {
  std::string_view method;
  std::string_view path;       // origin-form, with query ("/a/b?x=1")
  std::string_view authority;  // Host / :authority ("web", "web.default:80", "[fd00::1]:80")
  absl::Span<const http1::HeaderField> headers;
};

// One endpoint of a backend Service port (the Frontend's backends).
struct Endpoint {
  IpAddress address;
  uint16_t port = 0;  // host order: the endpoint's (target) port
  uint32_t weight = 1;
};

// A backend Service port as the proxy connects to it.
struct Cluster {
  std::string name;  // "ns/svc:port" (Service port, not target port); stable across rebuilds
  // The Service and its port exist. When false the backendRef is invalid: requests
  // sent to it get 500 (Gateway API: invalid backendRef). When true but
  // `endpoints` is empty (no ready endpoint): 503.
  bool resolved = false;
  std::vector<Endpoint> endpoints;   // sorted by (address, port), weights > 0
  std::vector<uint64_t> cumulative;  // running sum of endpoint weights
  // The backend Service's request-level policy (its TrafficPolicy; defaults without one):
  // circuit-breaker thresholds and retry budget, L7 outlier detection, peak-EWMA balancing —
  // the settings of the destination, as Istio's DestinationRule. Owned by the table; null
  // only when `resolved` is false.
  const state::RequestPolicy* request_policy = nullptr;

  // Weighted random pick over the endpoints; `random` is any uniformly random
  // 64-bit value. nullptr when there are no endpoints. This is the seam where a
  // latency-aware picker (peak-EWMA P2C over per-endpoint state owned by the
  // worker) replaces weighted random: it gets the same endpoint list.
  const Endpoint* pickEndpoint(uint64_t random) const;
  // The status to answer when no endpoint can be picked: 500 or 503 (see `resolved`).
  int unavailableStatus() const { return resolved ? 503 : 500; }
};

// Header edits of a RequestHeaderModifier / ResponseHeaderModifier. Names are
// lowercase (HTTP field names compare case-insensitively) and unique across the
// three lists.
struct HeaderEdits {
  std::vector<resources::HeaderValue> set;  // replaces every field of that name
  std::vector<resources::HeaderValue> add;  // appended after the existing fields
  std::vector<std::string> remove;          // every field of that name dropped

  bool empty() const { return set.empty() && add.empty() && remove.empty(); }
  // Appends to `out` the fields of `in` with the edits applied: fields named in
  // `remove` or `set` are dropped (in order otherwise), then one field per `set`
  // entry, then the `add` entries. The result views `in` and this object (keep
  // both alive while using it). Allocates nothing when `out` has the capacity
  // (in.size() + set.size() + add.size()).
  void apply(absl::Span<const http1::HeaderField> in, std::vector<http1::HeaderField>& out) const;
};

// A path modifier of a redirect or rewrite, with what it needs precomputed.
struct PathRewrite {
  resources::PathModifierType type = resources::PathModifierType::kReplaceFullPath;
  std::string value;  // the replacement; for ReplacePrefixMatch without its trailing '/'
  // ReplacePrefixMatch: the rule's one PathPrefix match, without its trailing '/'
  // ("/foo/" -> "/foo", "/" -> "").
  std::string prefix;

  // Appends the new path of `path_and_query` (origin-form; the query, if any, is
  // kept) to `out`. ReplaceFullPath: the value. ReplacePrefixMatch: the matched
  // prefix, element-wise, replaced (Gateway API table: /foo/bar with prefix /foo
  // and replacement /xyz -> /xyz/bar; replacement "" or "/" -> /bar; /foo -> /);
  // a path the prefix does not match (cannot happen after a match) is kept.
  void apply(std::string_view path_and_query, std::string& out) const;
};

struct Redirect {
  std::string scheme;    // "" = the request's
  std::string hostname;  // "" = the request's host (without port)
  std::optional<PathRewrite> path;
  std::optional<uint16_t> port;
  int status_code = 302;

  // Appends the Location for `req`, which arrived over `request_scheme` ("http"
  // or "https") on `listener_port` (for the mesh: the Service port the client
  // connected to). Port when unset: the scheme's well-known port if the filter
  // sets a scheme, else `listener_port`; it is left out when it is the
  // default for the scheme (http 80, https 443). The query is kept.
  void appendLocation(const Request& req, std::string_view request_scheme, uint16_t listener_port,
                      std::string& out) const;
};

struct UrlRewrite {
  std::string hostname;  // "" = keep the authority
  std::optional<PathRewrite> path;
};

struct Mirror {
  const Cluster* cluster = nullptr;  // never null
  uint32_t numerator = 100;
  uint32_t denominator = 100;  // > 0
  // Whether this request is mirrored: `random` % denominator < numerator.
  bool sampled(uint64_t random) const { return random % denominator < numerator; }
};

struct BackendRef {
  const Cluster* cluster = nullptr;  // never null (unresolved clusters exist too)
  uint32_t weight = 1;
  HeaderEdits request_headers;  // the backendRef's own filters, after the rule's
  HeaderEdits response_headers;
};

// One rule of one route, as the proxy executes it.
struct Rule {
  std::string route;  // "HTTPRoute/ns/name" or "GRPCRoute/ns/name"
  size_t index = 0;   // in the route's rules
  std::string name;   // rules[].name, "" when unset
  bool grpc = false;
  HeaderEdits request_headers;
  HeaderEdits response_headers;
  std::optional<Redirect> redirect;  // set: answer with it, no backend
  std::optional<UrlRewrite> rewrite;
  std::vector<Mirror> mirrors;
  std::vector<BackendRef> backends;  // weight 0 included (never picked)
  std::vector<uint64_t> cumulative;  // running sum of backends' weights
  // Timeouts (rules[].timeouts): nullopt = unset (the proxy's default), 0 = disabled.
  std::optional<uint64_t> request_timeout_ms;
  std::optional<uint64_t> backend_request_timeout_ms;
};

// The backendRef for this request by weight, `random` uniformly random. nullptr
// when the rule has no backendRefs or all weigh 0: the proxy answers 500
// (Gateway API: a rule whose backends are all invalid gets 500).
const BackendRef* pickBackendRef(const Rule& rule, uint64_t random);
// pickBackendRef's cluster, or nullptr.
const Cluster* pickBackend(const Rule& rule, uint64_t random);

// One match of one rule (for one of the route's hostnames), in the precedence
// order of its Service's table.
class RouteMatch {
 public:
  struct Condition {
    std::string name;   // lowercase for headers; exact for query parameters
    std::string value;  // exact value (unused with a regex)
    std::shared_ptr<const re2::RE2> regex;
  };

  const Rule& rule() const { return *rule_; }
  size_t matchIndex() const { return match_index_; }
  // Human-readable summary for proxy-config and tests, e.g.
  // "HTTPRoute/default/web rules[0].matches[1] host=* path=PathPrefix:/api method=GET headers=1".
  std::string describe() const;

  // Whether the request matches: `host` is the authority without port, `path`
  // and `query` the target split at '?'.
  bool matches(const Request& req, std::string_view host, std::string_view path,
               std::string_view query) const;

 private:
  friend class RouteTableBuilder;

  const Rule* rule_ = nullptr;
  size_t match_index_ = 0;
  std::string hostname_;  // "" any; "a.b" exact; "*.b" suffix (at least one more label)
  resources::PathMatchType path_type_ = resources::PathMatchType::kPathPrefix;
  std::string path_;  // Exact: the path; PathPrefix: without trailing '/'; regex: the pattern
  std::shared_ptr<const re2::RE2> path_regex_;
  std::string method_;  // "" any
  std::vector<Condition> headers_;
  std::vector<Condition> query_;
  bool grpc_ = false;  // also needs POST and content-type application/grpc[+...]
  // Precedence key (see RouteTableBuilder).
  size_t service_len_ = 0;   // gRPC: characters in the matched service
  size_t method_len_ = 0;    // gRPC: characters in the matched method
  int64_t created_ns_ = 0;   // route creationTimestamp (Unix ns); INT64_MAX when absent
  std::string route_order_;  // "ns/name" for the alphabetical tie-break
};

// The routes bound to one Service port.
class ServiceRoutes {
 public:
  // The highest-precedence match for the request, or nullptr: the proxy answers
  // 404 (Gateway API: no matching rule attached to the parent).
  const RouteMatch* match(const Request& req) const;
  // Every match in precedence order.
  absl::Span<const RouteMatch> entries() const { return entries_; }
  const std::string& service() const { return service_; }  // "ns/svc:port"
  // The called Service's request-level policy (its TrafficPolicy; defaults without one):
  // retries and fault injection apply to the requests the client sent to this Service,
  // whichever backendRef a rule picks — as Istio's VirtualService retries/fault. Never null.
  const state::RequestPolicy& requestPolicy() const { return *request_policy_; }

 private:
  friend class RouteTableBuilder;
  std::string service_;
  const state::RequestPolicy* request_policy_ = nullptr;
  std::vector<RouteMatch> entries_;
};

class RouteTable {
 public:
  // Compiles every HTTPRoute and GRPCRoute in `set` against the frontends of
  // `lb` (computeDesiredState of the same set). Routes whose parent Service (or
  // port) does not exist bind nothing; backendRefs whose Service port does not
  // exist become unresolved clusters (500). Fails with InvalidArgument only when
  // a route does not validate (resources::validate).
  static absl::StatusOr<std::shared_ptr<const RouteTable>> build(const resources::ResourceSet& set,
                                                                 const state::DesiredLbState& lb);

  // The routes of the Service port behind vip:port (host order), or nullptr when
  // no route is bound to it (the L4 path serves it). One hash probe.
  const ServiceRoutes* find(const IpAddress& vip, uint16_t port) const;
  // Every cluster by name ("ns/svc:port"); nullptr when absent.
  const Cluster* cluster(std::string_view name) const;
  // The cluster of the Service port behind vip:port (host order) itself, for every TCP
  // frontend marked `l7` (routes bound, or a request-level TrafficPolicy); nullptr otherwise.
  // For an L7 frontend without routes (find() is null) this is where its requests go, with
  // its request policy (retries, faults, limits) applied.
  const Cluster* serviceCluster(const IpAddress& vip, uint16_t port) const;
  size_t serviceCount() const { return by_vip_.size(); }

 private:
  friend class RouteTableBuilder;
  struct VipPort {
    IpAddress vip;
    uint16_t port = 0;
    friend bool operator==(const VipPort&, const VipPort&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const VipPort& k) {
      return H::combine(std::move(h), k.vip, k.port);
    }
  };

  std::vector<std::unique_ptr<Cluster>> clusters_;
  std::vector<std::unique_ptr<Rule>> rules_;
  std::vector<std::unique_ptr<ServiceRoutes>> services_;
  absl::flat_hash_map<std::string, const Cluster*> cluster_by_name_;
  absl::flat_hash_map<VipPort, const ServiceRoutes*> by_vip_;
  absl::flat_hash_map<VipPort, const Cluster*> cluster_by_vip_;
  std::vector<std::unique_ptr<state::RequestPolicy>> policies_;
};

// The host part of an authority: "web:80" -> "web", "[fd00::1]:80" -> "[fd00::1]".
std::string_view authorityHost(std::string_view authority);

}  // namespace meshd::proxy::routing
