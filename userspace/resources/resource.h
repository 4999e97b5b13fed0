// The resources users write (Kubernetes-shaped YAML) as meshd holds them:
// parsed, validated whole, and viewed through typed specs.
//
// Kinds (apiVersion kind):
//   v1                    Service        clusterIP(s) and ports of a service
//   discovery.k8s.io/v1   EndpointSlice  backends of a service (several merge)
//   meshd.io/v1alpha1     TrafficPolicy  load-balancing settings of one Service
//   gateway.networking.k8s.io/v1  HTTPRoute  L7 routing bound to Services (GAMMA);
//                                            v1beta1 is accepted too
//   gateway.networking.k8s.io/v1  GRPCRoute  gRPC routing bound to Services (GAMMA)
//   meshd.io/v1alpha1     Workload            a workload's addresses, node and identity
//   meshd.io/v1alpha1     PeerAuthentication  mTLS mode (Istio's shape)
//   meshd.io/v1alpha1     AuthorizationPolicy who may call a workload (Istio's shape)
//   meshd.io/v1alpha1     RateLimitPolicy     request and connect rate limits of a Service
//   v1                    Node                a node's addresses (its meshd's tunnel peer)
//
// Validation is strict: unknown fields, wrong types, missing required fields,
// bad addresses and out-of-range numbers are errors. Every error is one line
//   "<file>:<line>:<col>: <Kind>/<ns>/<name>: <field.path>: <reason>"
// (line and column 1-based, pointing at the offending YAML node).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/net.h"
#include "nlohmann/json.hpp"
#include "state/lb_state.h"

namespace meshd::resources {

inline constexpr char kKindService[] = "Service";
inline constexpr char kKindEndpointSlice[] = "EndpointSlice";
inline constexpr char kKindTrafficPolicy[] = "TrafficPolicy";
inline constexpr char kKindHttpRoute[] = "HTTPRoute";
inline constexpr char kKindGrpcRoute[] = "GRPCRoute";
inline constexpr char kKindWorkload[] = "Workload";
inline constexpr char kKindPeerAuthentication[] = "PeerAuthentication";
inline constexpr char kKindAuthorizationPolicy[] = "AuthorizationPolicy";
inline constexpr char kKindRateLimitPolicy[] = "RateLimitPolicy";
inline constexpr char kKindNode[] = "Node";
inline constexpr char kDefaultNamespace[] = "default";
// The mesh's root namespace: a PeerAuthentication or AuthorizationPolicy here without a
// selector applies to every workload of the mesh (Istio's rootNamespace, istio-system).
inline constexpr char kMeshRootNamespace[] = "meshd-system";
// The SPIFFE trust domain when the daemon is not told another (Istio's default).
inline constexpr char kDefaultTrustDomain[] = "cluster.local";
// EndpointSlice label naming the Service the slice belongs to.
inline constexpr char kServiceNameLabel[] = "kubernetes.io/service-name";

// One input file (or stdin) as the user gave it.
struct SourceFile {
  std::string name;  // as the user typed it, "-" for stdin
  std::string content;
};

struct ResourceKey {
  std::string kind;
  std::string ns;
  std::string name;

  // "Service/default/web"
  std::string toString() const;
  // Parses "Kind/ns/name" (or "Kind/name", namespace "default"). InvalidArgument otherwise.
  static absl::StatusOr<ResourceKey> parse(std::string_view text);

  friend bool operator==(const ResourceKey&, const ResourceKey&) = default;
  friend auto operator<=>(const ResourceKey&, const ResourceKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const ResourceKey& k) {
    return H::combine(std::move(h), k.kind, k.ns, k.name);
  }
};

// Where each field of a parsed document sits in its file. Opaque outside
// resources/; kept so that checks made after parsing (Model::apply's
// cross-resource checks) can still point at a line and column.
class SourcePositions;
using SourcePositionsConstSharedPtr = std::shared_ptr<const SourcePositions>;

struct Resource {
  ResourceKey key;
  nlohmann::json object;  // the document as JSON, as given (namespace not filled in)
  std::string source;     // file name as the user typed it; "" when unknown
  int line = 0;           // 1-based line of the document in `source`; 0 when unknown
  SourcePositionsConstSharedPtr positions;  // null for resources loaded from the store
};

// Parses every YAML document in every file and validates each whole; also
// rejects two documents with the same (kind, namespace, name). Empty documents
// are skipped. On any problem returns InvalidArgument whose message has one
// line per problem (all problems of all files, not just the first).
absl::StatusOr<std::vector<Resource>> parseFiles(absl::Span<const SourceFile> files);

// The same per-document checks for one resource (e.g. JSON loaded from the
// store). Also checks that r.key matches the object's kind/namespace/name.
// InvalidArgument with one line per problem; lines carry file:line:col only
// when r.positions is set.
absl::Status validate(const Resource& r);

// Builds a Resource from a JSON object (no position information), deriving the
// key from kind/metadata. Validates it like validate().
absl::StatusOr<Resource> resourceFromJson(nlohmann::json object, std::string source = "",
                                          int line = 0);

// Formats one problem about a resource in the standard one-line form, using
// the resource's positions when it has them (field path as "spec.ports[0].port";
// "" for the document itself).
std::string formatError(const Resource& r, std::string_view field_path, std::string_view reason);
// "file:line:col" of a field of r (or of the nearest enclosing field that exists),
// "file:line" or "file" when less is known, "" when nothing is.
std::string locate(const Resource& r, std::string_view field_path);

// ---------------------------------------------------------------------------
// Typed views. Each fails with InvalidArgument (same messages as validate())
// when the resource is not of that kind or not valid.

struct ServicePort {
  std::string name;  // "" when unnamed (only allowed for a single-port service)
  uint16_t port = 0;
  state::Protocol protocol = state::Protocol::kTcp;
  // Numeric targetPort; defaults to `port` when targetPort is not given (as in
  // Kubernetes). Unset when targetPort is a name (then target_port_name is set).
  std::optional<uint16_t> target_port;
  std::string target_port_name;
};

struct ServiceSpec {
  std::vector<IpAddress> cluster_ips;  // empty for a headless service (clusterIP: None)
  std::vector<ServicePort> ports;
};

struct EndpointSpec {
  std::vector<IpAddress> addresses;
  bool ready = true;  // conditions.ready; unset means ready
  std::string node_name;
  std::string target_ref;  // "Pod/ns/name" from targetRef, "" when absent
};

struct EndpointSliceSpec {
  std::string service_name;  // metadata.labels["kubernetes.io/service-name"]
  int address_type = 0;      // AF_INET or AF_INET6
  std::vector<EndpointSpec> endpoints;
  struct Port {
    std::string name;  // "" when unnamed
    uint16_t port = 0;
    state::Protocol protocol = state::Protocol::kTcp;
  };
  std::vector<Port> ports;
};

struct TrafficPolicySpec {
  std::string target_service;  // spec.targetRef.name (kind Service, same namespace)
  state::LbAlgorithm algorithm = state::LbAlgorithm::kWeightedRandom;
  uint32_t maglev_table_size = 0;  // prime; set (default 16381) when algorithm is Maglev
  std::vector<std::pair<IpAddress, uint32_t>> weights;  // endpoints not listed weigh 1
  // spec.connectionLimits: live TCP connections, node-wide (0 = unlimited).
  uint32_t max_connections = 0;
  uint32_t max_connections_per_backend = 0;
  state::ConnectRate connect_rate;         // spec.connectionLimits.connectRate
  state::ConnectRate client_connect_rate;  // spec.connectionLimits.connectRatePerClient
  bool terminate_removed = false;          // spec.draining.terminateConnections
  // spec.outlierDetection (defaults when absent; enabled: false -> consecutive_failures 0).
  state::OutlierDetection outlier;
  // Request-level settings for the L7 proxy: spec.requestLimits, spec.retries,
  // spec.faultInjection, spec.outlierDetection.consecutive5xxErrors/consecutiveGatewayErrors
  // (their ejection timing copied from `outlier`); peak_ewma with algorithm LeastLatency.
  // Defaults when absent.
  state::RequestPolicy request;
  // Whether any request-level field is set (requestLimits, retries, faultInjection, or a
  // non-zero consecutive5xxErrors / consecutiveGatewayErrors): the Service then needs L7.
  bool request_level = false;
};

// --- Gateway API routes (HTTPRoute, GRPCRoute), bound to Services as GAMMA
// does (parentRefs of kind Service). Defaults of the CRD are filled in.

// A parentRef: the Service (same namespace as the route) whose traffic the route
// takes over. Unset port and section name = every port of the Service.
struct RouteParentRef {
  std::string name;
  std::optional<uint16_t> port;  // parentRefs[].port
  std::string section_name;      // parentRefs[].sectionName: a Service port name; "" = unset

  // Whether this parentRef binds the port `port` (named `port_name`) of the
  // Service `service` in the route's namespace.
  bool binds(std::string_view service, uint16_t port, std::string_view port_name) const;
};

// A backendRef or a mirror's backendRef: a Service port in the route's namespace.
struct ServicePortRef {
  std::string name;
  uint16_t port = 0;
};

enum class PathMatchType : uint8_t { kExact, kPathPrefix, kRegularExpression };
enum class ValueMatchType : uint8_t { kExact, kRegularExpression };

struct HttpPathMatch {
  PathMatchType type = PathMatchType::kPathPrefix;
  std::string value = "/";  // a path, or an RE2 pattern (validated) for kRegularExpression
};

// A header (name case-insensitive) or query parameter (name exact) condition.
struct ValueMatch {
  ValueMatchType type = ValueMatchType::kExact;
  std::string name;
  std::string value;  // the value, or an RE2 pattern (validated)
};

struct HttpRouteMatch {
  HttpPathMatch path;
  std::vector<ValueMatch> headers;
  std::vector<ValueMatch> query_params;
  std::string
      method;  // "" = any; else GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH
};

struct HeaderValue {
  std::string name;
  std::string value;
  friend bool operator==(const HeaderValue&, const HeaderValue&) = default;
};

// RequestHeaderModifier / ResponseHeaderModifier. Names are unique across the
// three lists (case-insensitively), as the spec requires.
struct HeaderModifier {
  std::vector<HeaderValue> set;
  std::vector<HeaderValue> add;
  std::vector<std::string> remove;
};

enum class PathModifierType : uint8_t { kReplaceFullPath, kReplacePrefixMatch };
struct PathModifier {
  PathModifierType type = PathModifierType::kReplaceFullPath;
  std::string value;  // replaceFullPath or replacePrefixMatch
};

struct RequestRedirect {
  std::string scheme;    // "" (the request's), "http" or "https"
  std::string hostname;  // "" = the request's
  std::optional<PathModifier> path;
  std::optional<uint16_t> port;
  int status_code = 302;  // 301, 302, 303, 307 or 308
};

struct UrlRewrite {
  std::string hostname;  // "" = unchanged
  std::optional<PathModifier> path;
};

struct RequestMirror {
  ServicePortRef backend;
  // The share of requests mirrored: numerator / denominator (percent p = p/100;
  // neither given = 100%).
  uint32_t numerator = 100;
  uint32_t denominator = 100;
};

enum class RouteFilterType : uint8_t {
  kRequestHeaderModifier,
  kResponseHeaderModifier,
  kRequestRedirect,
  kUrlRewrite,
  kRequestMirror,
};

// One filter; only the member its type names is meaningful.
struct RouteFilter {
  RouteFilterType type = RouteFilterType::kRequestHeaderModifier;
  HeaderModifier headers;  // kRequestHeaderModifier, kResponseHeaderModifier
  RequestRedirect redirect;
  UrlRewrite rewrite;
  RequestMirror mirror;
};

struct RouteBackendRef {
  ServicePortRef service;
  uint32_t weight = 1;               // 0..1000000; 0 = never picked
  std::vector<RouteFilter> filters;  // header modifiers only (meshd's limit)
};

// rules[].timeouts, in milliseconds; nullopt = unset, 0 = disabled.
struct HttpRouteTimeouts {
  std::optional<uint64_t> request_ms;
  std::optional<uint64_t> backend_request_ms;
};

struct HttpRouteRule {
  std::string name;                     // rules[].name, "" when unset
  std::vector<HttpRouteMatch> matches;  // never empty (default: PathPrefix "/")
  std::vector<RouteFilter> filters;
  std::vector<RouteBackendRef> backend_refs;
  HttpRouteTimeouts timeouts;
};

struct HttpRouteSpec {
  std::vector<RouteParentRef> parent_refs;
  std::vector<std::string> hostnames;  // lowercase; "*.example.com" wildcards allowed
  std::vector<HttpRouteRule> rules;    // never empty (default: one rule matching "/")
};

// GRPCRoute method match. Exact: service and/or method (at least one);
// RegularExpression: RE2 patterns for either ("" = any).
struct GrpcMethodMatch {
  ValueMatchType type = ValueMatchType::kExact;
  std::string service;
  std::string method;
};

struct GrpcRouteMatch {
  std::optional<GrpcMethodMatch> method;  // unset = every service and method
  std::vector<ValueMatch> headers;
};

struct GrpcRouteRule {
  std::string name;
  std::vector<GrpcRouteMatch> matches;  // empty = every gRPC request
  std::vector<RouteFilter> filters;     // header modifiers and mirrors
  std::vector<RouteBackendRef> backend_refs;
};

struct GrpcRouteSpec {
  std::vector<RouteParentRef> parent_refs;
  std::vector<std::string> hostnames;
  std::vector<GrpcRouteRule> rules;
};

// --- Identity and policy (docs/resources.md: Workload, PeerAuthentication,
// AuthorizationPolicy, RateLimitPolicy).

using Labels = std::vector<std::pair<std::string, std::string>>;  // sorted by key

// An address block: "10.0.0.0/8", "fd00::/64", or one address ("10.0.0.1" = /32 or /128).
struct IpBlock {
  IpAddress address;  // bits past prefix_len are zero
  uint8_t prefix_len = 0;

  // InvalidArgument naming the text when it is not an address or block (host bits set
  // are an error, as in Kubernetes' CIDR validation: "10.0.0.1/8" is a typo).
  static absl::StatusOr<IpBlock> parse(std::string_view text);
  bool contains(const IpAddress& a) const;
  std::string toString() const;
  friend bool operator==(const IpBlock&, const IpBlock&) = default;
};

struct WorkloadSpec {
  std::string service_account = "default";  // spec.serviceAccount
  std::vector<IpAddress> addresses;         // spec.addresses, at least one, no duplicates
  std::string node;                         // spec.node
  std::string cgroup;                       // spec.cgroup: a cgroup v2 path; "" = unset
  std::string netns;                        // spec.netns: a network namespace path; "" = unset
  Labels labels;                            // metadata.labels
};

// "spiffe://<trust_domain>/ns/<ns>/sa/<service_account>".
std::string spiffeId(std::string_view trust_domain, std::string_view ns,
                     std::string_view service_account);

// Whether every selector label is among `labels` with the same value (empty selector: yes).
bool selectorMatches(const Labels& selector, const Labels& labels);

enum class MtlsMode : uint8_t { kUnset, kDisable, kPermissive, kStrict };
std::string_view mtlsModeName(MtlsMode m);  // "UNSET", "DISABLE", "PERMISSIVE", "STRICT"

struct PeerAuthenticationSpec {
  std::optional<Labels> selector;    // spec.selector.matchLabels; nullopt = no selector
  MtlsMode mode = MtlsMode::kUnset;  // spec.mtls.mode
  std::vector<std::pair<uint16_t, MtlsMode>> port_level;  // spec.portLevelMtls, by port
};

enum class AuthzAction : uint8_t { kAllow, kDeny };

// Istio string patterns: "abc" exact, "abc*" prefix, "*abc" suffix, "*" any non-empty value
// (principals and namespaces: any authenticated peer).
struct AuthzSource {
  std::vector<std::string> principals, not_principals;  // "cluster.local/ns/x/sa/y"
  std::vector<std::string> namespaces, not_namespaces;
  std::vector<IpBlock> ip_blocks, not_ip_blocks;
};

struct AuthzOperation {
  std::vector<uint16_t> ports, not_ports;
  std::vector<std::string> methods, not_methods;  // exact or patterns, case-sensitive
  std::vector<std::string> paths, not_paths;      // the path without the query
  std::vector<std::string> hosts, not_hosts;      // case-insensitive
};

enum class AuthzConditionKey : uint8_t {
  kRequestHeader,  // request.headers[<name>]
  kSourceNamespace,
  kSourcePrincipal,
  kSourceIp,
  kDestinationPort,
};

struct AuthzCondition {
  AuthzConditionKey key = AuthzConditionKey::kSourceNamespace;
  std::string header;  // kRequestHeader: the field name, lowercase
  std::vector<std::string> values, not_values;
  // kSourceIp: values and not_values parsed; kDestinationPort: likewise.
  std::vector<IpBlock> ip_values, not_ip_values;
  std::vector<uint16_t> port_values, not_port_values;
};

struct AuthzRule {
  std::vector<AuthzSource> from;     // any of them (empty = any source)
  std::vector<AuthzOperation> to;    // any of them (empty = any operation)
  std::vector<AuthzCondition> when;  // all of them
};

struct AuthorizationPolicySpec {
  std::optional<Labels> selector;  // nullopt = every workload of the namespace (root: mesh)
  AuthzAction action = AuthzAction::kAllow;
  // Empty: an ALLOW policy allows nothing, a DENY policy denies nothing.
  std::vector<AuthzRule> rules;
};

enum class RateUnit : uint8_t { kSecond, kMinute, kHour };

// A token bucket: `requests_per_unit` tokens a `unit`, holding at most `burst`.
struct RequestRate {
  uint32_t requests_per_unit = 0;  // 0 = unset (no limit)
  RateUnit unit = RateUnit::kSecond;
  uint32_t burst = 0;  // defaults to requests_per_unit
  bool set() const { return requests_per_unit != 0; }
  uint64_t unitNs() const;
  friend bool operator==(const RequestRate&, const RequestRate&) = default;
};

struct RateLimitRoute {
  std::string http_route;   // match.httpRoute: an HTTPRoute (or GRPCRoute) name; "" = any
  std::string path_prefix;  // match.pathPrefix; "" = any
  RequestRate requests;     // the route's bucket (node-wide)
  RequestRate per_client;   // a bucket per client identity
  friend bool operator==(const RateLimitRoute&, const RateLimitRoute&) = default;
};

struct RateLimitPolicySpec {
  std::string target_service;              // spec.targetRef.name (kind Service, same namespace)
  RequestRate requests;                    // spec.requests: the whole Service, node-wide
  RequestRate per_client;                  // spec.perClient: each client identity
  std::vector<RateLimitRoute> routes;      // spec.routes: the first match replaces the above
  state::ConnectRate connect_rate;         // spec.connections.connectRate
  state::ConnectRate client_connect_rate;  // spec.connections.connectRatePerClient
  friend bool operator==(const RateLimitPolicySpec&, const RateLimitPolicySpec&) = default;
};

// Kubernetes' Node, reduced to what meshd uses: status.addresses. The node's meshd is
// reached for the mTLS tunnel at its first InternalIP (docs/resources.md "Node").
struct NodeAddress {
  enum class Type : uint8_t { kInternalIp, kExternalIp, kHostname };
  Type type = Type::kInternalIp;
  std::string address;  // as written (an IP for *IP types, a DNS name for Hostname)
};
struct NodeSpec {
  std::vector<NodeAddress> addresses;
  // The first InternalIP (nullopt when there is none).
  std::optional<IpAddress> internal_ip;
};

absl::StatusOr<ServiceSpec> serviceSpec(const Resource& r);
absl::StatusOr<NodeSpec> nodeSpec(const Resource& r);
absl::StatusOr<WorkloadSpec> workloadSpec(const Resource& r);
absl::StatusOr<PeerAuthenticationSpec> peerAuthenticationSpec(const Resource& r);
absl::StatusOr<AuthorizationPolicySpec> authorizationPolicySpec(const Resource& r);
absl::StatusOr<RateLimitPolicySpec> rateLimitPolicySpec(const Resource& r);
absl::StatusOr<EndpointSliceSpec> endpointSliceSpec(const Resource& r);
absl::StatusOr<TrafficPolicySpec> trafficPolicySpec(const Resource& r);
absl::StatusOr<HttpRouteSpec> httpRouteSpec(const Resource& r);
absl::StatusOr<GrpcRouteSpec> grpcRouteSpec(const Resource& r);

// Helpers shared with the validators, exposed for tests and other callers.
bool isPrime(uint32_t n);
bool isDns1123Label(std::string_view s);
bool isDns1123Subdomain(std::string_view s);
bool isIanaServiceName(std::string_view s);
std::string algorithmName(state::LbAlgorithm a);
// A duration in Go's time.ParseDuration syntax, as Kubernetes writes them:
// one or more decimal numbers (fractions allowed) each with a unit ns, us (or
// µs), ms, s, m or h, e.g. "30s", "1m30s", "1.5h", "250ms"; "0" alone is zero.
// Signs are rejected (every duration here is positive). Returns nanoseconds,
// or nullopt when the text is not such a duration or exceeds ~292 years.
std::optional<int64_t> parseDuration(std::string_view text);
// Milliseconds as the shortest Go-style text: 30000 -> "30s", 90000 -> "1m30s",
// 250 -> "250ms", 0 -> "0s".
std::string formatDurationMs(uint64_t ms);
// A Gateway API Duration (GEP-2257): one to four parts, each 1-5 digits and a
// unit h, m, s or ms ("10s", "1h30m", "500ms", "0s"). Returns milliseconds, or
// nullopt when the text is not one.
std::optional<uint64_t> parseGatewayDuration(std::string_view text);
std::string protocolName(state::Protocol p);
// retryOn condition names ("connect-failure", "5xx", "unavailable", ...) <-> state::RetryOn
// bits. retryOnBit: 0 when the name is unknown.
uint32_t retryOnBit(std::string_view name);
// The names of the bits set, in bit order, comma-separated ("connect-failure,5xx").
std::string retryOnNames(uint32_t bits);
// gRPC status code names (Istio's grpcStatus: "UNAVAILABLE", ...) -> 0..16; -1 when unknown.
int grpcCodeFromName(std::string_view name);
// 0..16 -> "OK".."UNAUTHENTICATED"; "" for anything else.
std::string_view grpcCodeName(int code);

}  // namespace meshd::resources
