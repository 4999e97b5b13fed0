#include "resources/decode.h"

#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "mesh_abi.h"
#include "re2/re2.h"

namespace meshd::resources {
namespace {

// Upper bound of a TrafficPolicy connection limit (see decodeTrafficPolicy).
constexpr int64_t kMaxConnectionLimit = 1 << 24;
// Connects a second (and bucket size) a connect-rate bucket may allow: far above what
// one node can open, low enough that the kernel's nanosecond arithmetic cannot overflow.
constexpr int64_t kMaxConnectRate = 1000000;
// Outlier detection bounds (decodeOutlierDetection). A threshold above 1000
// failures in a row would never trip in practice; ejections are whole
// milliseconds up to a day (mesh_svc holds u32 milliseconds).
constexpr int64_t kMaxConsecutiveFailures = 1000;
constexpr int64_t kMaxEjectionMs = 24 * 3'600'000;
// Request-level bounds: retries after the first try (a typo guard: more than 100 tries of one
// request is never useful), per-try timeouts and fault delays (a day), retry back-off (an hour).
constexpr int64_t kMaxRetryAttempts = 100;
constexpr int64_t kMaxRequestDurationMs = 24 * 3'600'000;
constexpr int64_t kMaxBackoffMs = 3'600'000;

using json = nlohmann::json;

// JSON text of a value for messages. error_handler_t::replace: dump() throws
// on a string that is not valid UTF-8, and such a string can reach here.
std::string dumpForMessage(const json& v) {
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string describe(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return absl::StrCat("a boolean (", v.get<bool>() ? "true" : "false", ")");
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return absl::StrCat("an integer (", dumpForMessage(v), ")");
    case json::value_t::number_float:
      return absl::StrCat("a number (", dumpForMessage(v), ")");
    case json::value_t::string:
      return absl::StrCat("a string (", dumpForMessage(v), ")");
    case json::value_t::array:
      return "a list";
    case json::value_t::object:
      return "a mapping";
    default:
      return "an unsupported value";
  }
}

class Decoder {
 public:
  std::vector<Problem>& problems() { return problems_; }

  void fail(std::string path, std::string reason, bool at_key = false) {
    problems_.push_back({std::move(path), std::move(reason), at_key, {}});
  }

  // Reports every field of `obj` that is not in `allowed`, at its key.
  void allowOnly(const json& obj, absl::string_view path,
                 std::initializer_list<absl::string_view> allowed) {
    for (const auto& [k, v] : obj.items()) {
      bool ok = false;
      for (auto a : allowed) ok = ok || a == k;
      if (!ok) {
        fail(childPath(path, k),
             absl::StrCat("unknown field (allowed here: ", absl::StrJoin(allowed, ", "), ")"),
             true);
      }
    }
  }

  // The field's value, or null when absent or null (null counts as absent,
  // as in Kubernetes). Reports a missing required field.
  const json* get(const json& obj, absl::string_view path, absl::string_view field, bool required) {
    auto it = obj.find(field);
    if (it == obj.end() || it->is_null()) {
      if (required) fail(childPath(path, field), "required field is missing");
      return nullptr;
    }
    return &*it;
  }

  const json* object(const json& v, const std::string& path) {
    if (v.is_object()) return &v;
    fail(path, absl::StrCat("expected a mapping, got ", describe(v)));
    return nullptr;
  }
  const json* array(const json& v, const std::string& path) {
    if (v.is_array()) return &v;
    fail(path, absl::StrCat("expected a list, got ", describe(v)));
    return nullptr;
  }
  std::optional<std::string> string(const json& v, const std::string& path) {
    if (v.is_string()) return v.get<std::string>();
    fail(path, absl::StrCat("expected a string, got ", describe(v)));
    return std::nullopt;
  }
  std::optional<bool> boolean(const json& v, const std::string& path) {
    if (v.is_boolean()) return v.get<bool>();
    fail(path, absl::StrCat("expected true or false, got ", describe(v)));
    return std::nullopt;
  }
  std::optional<int64_t> integer(const json& v, const std::string& path, int64_t lo, int64_t hi,
                                 absl::string_view what) {
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(hi) || static_cast<int64_t>(u) < lo) {
        fail(path, absl::StrCat(what, " ", u, " is out of range [", lo, ", ", hi, "]"));
        return std::nullopt;
      }
      return static_cast<int64_t>(u);
    }
    if (v.is_number_integer()) {
      int64_t i = v.get<int64_t>();
      if (i < lo || i > hi) {
        fail(path, absl::StrCat(what, " ", i, " is out of range [", lo, ", ", hi, "]"));
        return std::nullopt;
      }
      return i;
    }
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::isfinite(d) && std::floor(d) == d) {
        fail(path,
             absl::StrCat(what, " ", dumpForMessage(v), " is out of range [", lo, ", ", hi, "]"));
      } else {
        fail(path, absl::StrCat("expected an integer, got ", describe(v)));
      }
      return std::nullopt;
    }
    fail(path, absl::StrCat("expected an integer, got ", describe(v)));
    return std::nullopt;
  }

  // Field accessors: absent -> nullopt (reported when required).
  const json* getObject(const json& obj, absl::string_view path, absl::string_view field,
                        bool required) {
    const json* v = get(obj, path, field, required);
    return v ? object(*v, childPath(path, field)) : nullptr;
  }
  const json* getArray(const json& obj, absl::string_view path, absl::string_view field,
                       bool required) {
    const json* v = get(obj, path, field, required);
    return v ? array(*v, childPath(path, field)) : nullptr;
  }
  std::optional<std::string> getString(const json& obj, absl::string_view path,
                                       absl::string_view field, bool required) {
    const json* v = get(obj, path, field, required);
    if (!v) return std::nullopt;
    return string(*v, childPath(path, field));
  }
  std::optional<bool> getBool(const json& obj, absl::string_view path, absl::string_view field) {
    const json* v = get(obj, path, field, false);
    if (!v) return std::nullopt;
    return boolean(*v, childPath(path, field));
  }
  std::optional<int64_t> getInt(const json& obj, absl::string_view path, absl::string_view field,
                                bool required, int64_t lo, int64_t hi, absl::string_view what) {
    const json* v = get(obj, path, field, required);
    if (!v) return std::nullopt;
    return integer(*v, childPath(path, field), lo, hi, what);
  }

  // A duration string ("30s", "1m30s", "250ms") of whole milliseconds within
  // [lo_ms, hi_ms]. Returns milliseconds.
  std::optional<uint32_t> durationMs(const json& obj, absl::string_view path,
                                     absl::string_view field, int64_t lo_ms, int64_t hi_ms) {
    const json* v = get(obj, path, field, false);
    if (!v) return std::nullopt;
    const std::string fpath = childPath(path, field);
    if (!v->is_string()) {
      fail(fpath, absl::StrCat("expected a duration such as \"30s\", \"1m30s\" or \"250ms\", got ",
                               describe(*v)));
      return std::nullopt;
    }
    const std::string text = v->get<std::string>();
    const std::optional<int64_t> ns = parseDuration(text);
    if (!ns) {
      fail(fpath, absl::StrCat("\"", text,
                               "\" is not a duration (a number and a unit ns, us, ms, s, m or h, "
                               "e.g. \"30s\", \"1m30s\" or \"250ms\")"));
      return std::nullopt;
    }
    if (*ns % 1'000'000 != 0) {
      fail(fpath, absl::StrCat("\"", text, "\" is not a whole number of milliseconds"));
      return std::nullopt;
    }
    const int64_t ms = *ns / 1'000'000;
    if (ms < lo_ms || ms > hi_ms) {
      fail(fpath, absl::StrCat(field, " ", text, " is out of range [", formatDurationMs(lo_ms),
                               ", ", formatDurationMs(hi_ms), "]"));
      return std::nullopt;
    }
    return static_cast<uint32_t>(ms);
  }

  // A mapping of string -> string (labels, annotations, selector).
  void stringMap(const json& obj, absl::string_view path, absl::string_view field) {
    const json* m = getObject(obj, path, field, false);
    if (!m) return;
    std::string mpath = childPath(path, field);
    for (const auto& [k, v] : m->items()) {
      if (!v.is_string()) {
        fail(childPath(mpath, k), absl::StrCat("expected a string, got ", describe(v),
                                               " (quote values like \"1\" or \"true\")"));
      }
    }
  }

 private:
  std::vector<Problem> problems_;
};

std::optional<state::Protocol> protocol(Decoder& d, const json& obj, absl::string_view path) {
  auto p = d.getString(obj, path, "protocol", false);
  if (!p) return state::Protocol::kTcp;
  if (*p == "TCP") return state::Protocol::kTcp;
  if (*p == "UDP") return state::Protocol::kUdp;
  d.fail(childPath(path, "protocol"),
         *p == "SCTP" ? "SCTP is not supported (use TCP or UDP)"
                      : absl::StrCat("unknown protocol \"", *p, "\" (use TCP or UDP)"));
  return std::nullopt;
}

std::optional<IpAddress> address(Decoder& d, const json& v, const std::string& path) {
  auto s = d.string(v, path);
  if (!s) return std::nullopt;
  auto ip = IpAddress::parse(*s);
  if (!ip.ok()) {
    d.fail(path, std::string(ip.status().message()));
    return std::nullopt;
  }
  return *ip;
}

std::string familyName(int family) { return family == AF_INET6 ? "IPv6" : "IPv4"; }

struct KindInfo {
  absl::string_view kind;
  absl::string_view api_version;
  absl::string_view older_api_version;  // also accepted; "" = none
};
const KindInfo kKinds[] = {
    {kKindService, "v1", ""},
    {kKindEndpointSlice, "discovery.k8s.io/v1", ""},
    {kKindTrafficPolicy, "meshd.io/v1alpha1", ""},
    {kKindHttpRoute, "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"},
    {kKindGrpcRoute, "gateway.networking.k8s.io/v1", ""},
    {kKindWorkload, "meshd.io/v1alpha1", ""},
    {kKindPeerAuthentication, "meshd.io/v1alpha1", ""},
    {kKindAuthorizationPolicy, "meshd.io/v1alpha1", ""},
    {kKindRateLimitPolicy, "meshd.io/v1alpha1", ""},
    {kKindNode, "v1", ""},
};

void decodeMetadata(Decoder& d, const json& doc, absl::string_view kind, ResourceKey& key) {
  const json* md = d.getObject(doc, "", "metadata", true);
  if (!md) return;
  d.allowOnly(*md, "metadata",
              {"name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
               "creationTimestamp"});
  if (auto name = d.getString(*md, "metadata", "name", true)) {
    // Services name DNS labels (they become DNS names); other kinds allow subdomains.
    if (kind == kKindService) {
      if (!isDns1123Label(*name)) {
        d.fail("metadata.name",
               absl::StrCat("\"", *name,
                            "\" is not a valid Service name (DNS-1123 label: at most 63 "
                            "lowercase letters, digits and '-', starting with a letter and "
                            "ending with a letter or digit)"));
      } else if (!absl::ascii_isalpha(static_cast<unsigned char>((*name)[0]))) {
        d.fail("metadata.name", absl::StrCat("\"", *name,
                                             "\" is not a valid Service name (must start with "
                                             "a letter)"));
      }
    } else if (!isDns1123Subdomain(*name)) {
      d.fail("metadata.name",
             absl::StrCat("\"", *name,
                          "\" is not a valid name (DNS-1123 subdomain: lowercase letters, "
                          "digits, '-' and '.', at most 253, starting and ending with a "
                          "letter or digit)"));
    }
  }
  if (auto ns = d.getString(*md, "metadata", "namespace", false)) {
    if (!isDns1123Label(*ns)) {
      d.fail("metadata.namespace",
             absl::StrCat("\"", *ns,
                          "\" is not a valid namespace (DNS-1123 label: at most 63 lowercase "
                          "letters, digits and '-')"));
    }
  }
  (void)key;
  d.stringMap(*md, "metadata", "labels");
  d.stringMap(*md, "metadata", "annotations");
  d.getString(*md, "metadata", "uid", false);
  d.getString(*md, "metadata", "resourceVersion", false);
  d.getString(*md, "metadata", "creationTimestamp", false);
  d.getInt(*md, "metadata", "generation", false, 0, INT64_MAX, "generation");
}

ServiceSpec decodeService(Decoder& d, const json& doc) {
  ServiceSpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", true);
  if (!spec) return out;
  d.allowOnly(*spec, "spec", {"type", "clusterIP", "clusterIPs", "ports", "selector"});
  if (auto type = d.getString(*spec, "spec", "type", false); type && *type != "ClusterIP") {
    d.fail("spec.type", absl::StrCat("type ", *type,
                                     " is not supported yet: meshd balances ClusterIP services "
                                     "only (remove the field or set ClusterIP)"));
  }
  d.stringMap(*spec, "spec", "selector");

  // Cluster IPs: clusterIPs (dual stack) and/or clusterIP, which must agree.
  bool headless = false;
  bool ips_ok = true;
  std::vector<std::pair<IpAddress, std::string>> ips;  // address, path
  auto take = [&](const json& v, const std::string& path, bool first) {
    auto s = d.string(v, path);
    if (!s) {
      ips_ok = false;
      return;
    }
    if (*s == "None") {
      if (!first) {
        d.fail(path, "\"None\" (headless) must be the only cluster IP");
        ips_ok = false;
      }
      headless = true;
      return;
    }
    if (s->empty()) {
      d.fail(path,
             "empty: meshd does not allocate cluster IPs; set an address (or \"None\" for a "
             "headless service)");
      ips_ok = false;
      return;
    }
    if (auto ip = address(d, v, path)) {
      ips.emplace_back(*ip, path);
    } else {
      ips_ok = false;
    }
  };
  const json* cluster_ips = d.getArray(*spec, "spec", "clusterIPs", false);
  const json* cluster_ip = d.get(*spec, "spec", "clusterIP", false);
  if (cluster_ips) {
    if (cluster_ips->empty() || cluster_ips->size() > 2) {
      d.fail("spec.clusterIPs", "must list one or two addresses (one per IP family)");
      ips_ok = false;
    }
    for (size_t i = 0; i < cluster_ips->size(); ++i) {
      take((*cluster_ips)[i], indexPath("spec.clusterIPs", i), i == 0);
    }
    if (ips.size() == 2 && ips[0].first.family == ips[1].first.family) {
      d.fail(ips[1].second, "the two cluster IPs must be of different families (IPv4 and IPv6)");
    }
    if (cluster_ip && ips_ok && !cluster_ips->empty()) {
      auto s = d.string(*cluster_ip, "spec.clusterIP");
      if (s && (*cluster_ips)[0].is_string() && *s != (*cluster_ips)[0].get<std::string>()) {
        d.fail("spec.clusterIP", absl::StrCat("\"", *s, "\" must equal spec.clusterIPs[0] (",
                                              dumpForMessage((*cluster_ips)[0]), ")"));
      }
    }
  } else if (cluster_ip) {
    take(*cluster_ip, "spec.clusterIP", true);
  } else {
    d.fail("spec.clusterIP",
           "required field is missing: meshd does not allocate cluster IPs; set an address (or "
           "\"None\" for a headless service)");
  }
  for (auto& [ip, path] : ips) out.cluster_ips.push_back(ip);

  const json* ports = d.getArray(*spec, "spec", "ports", !headless);
  if (ports) {
    if (ports->empty() && !headless) d.fail("spec.ports", "must list at least one port");
    absl::flat_hash_map<std::string, std::string> names;                  // name -> path
    absl::flat_hash_map<std::pair<uint16_t, uint8_t>, std::string> seen;  // port/proto -> path
    for (size_t i = 0; i < ports->size(); ++i) {
      std::string path = indexPath("spec.ports", i);
      const json* p = d.object((*ports)[i], path);
      if (!p) continue;
      d.allowOnly(*p, path, {"name", "port", "targetPort", "protocol", "appProtocol"});
      ServicePort sp;
      bool ok = true;
      if (auto name = d.getString(*p, path, "name", false)) {
        sp.name = *name;
        if (!name->empty() && !isDns1123Label(*name)) {
          d.fail(childPath(path, "name"),
                 absl::StrCat("\"", *name,
                              "\" is not a valid port name (DNS-1123 label: lowercase letters, "
                              "digits and '-')"));
        }
      }
      if (ports->size() > 1 && sp.name.empty()) {
        d.fail(childPath(path, "name"),
               "required when a Service has more than one port (as in Kubernetes)");
      }
      if (!sp.name.empty()) {
        auto [it, inserted] = names.emplace(sp.name, path);
        if (!inserted) {
          d.fail(childPath(path, "name"),
                 absl::StrCat("duplicate port name \"", sp.name, "\" (also ", it->second, ")"));
        }
      }
      auto port = d.getInt(*p, path, "port", true, 1, 65535, "port");
      ok = ok && port.has_value();
      if (port) sp.port = static_cast<uint16_t>(*port);
      auto proto = protocol(d, *p, path);
      ok = ok && proto.has_value();
      if (proto) sp.protocol = *proto;
      if (const json* tp = d.get(*p, path, "targetPort", false)) {
        std::string tpath = childPath(path, "targetPort");
        if (tp->is_string()) {
          std::string s = tp->get<std::string>();
          if (isIanaServiceName(s)) {
            sp.target_port_name = s;
          } else {
            d.fail(tpath, absl::StrCat("\"", s,
                                       "\" is neither a port number nor a port name (names are "
                                       "at most 15 lowercase letters, digits and '-', with at "
                                       "least one letter; write numbers without quotes)"));
          }
        } else if (auto n = d.integer(*tp, tpath, 1, 65535, "targetPort")) {
          sp.target_port = static_cast<uint16_t>(*n);
        }
      } else if (port) {
        sp.target_port = sp.port;  // Kubernetes' default: targetPort = port
      }
      d.getString(*p, path, "appProtocol", false);
      if (ok) {
        auto [it, inserted] =
            seen.emplace(std::make_pair(sp.port, static_cast<uint8_t>(sp.protocol)), path);
        if (!inserted) {
          d.fail(childPath(path, "port"),
                 absl::StrCat("duplicate port ", sp.port, "/", protocolName(sp.protocol), " (also ",
                              it->second, ")"));
        }
      }
      out.ports.push_back(std::move(sp));
    }
  }
  return out;
}

EndpointSliceSpec decodeEndpointSlice(Decoder& d, const json& doc) {
  EndpointSliceSpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"});
  const std::string label_path = childPath("metadata.labels", kServiceNameLabel);
  const json* md =
      doc.contains("metadata") && doc["metadata"].is_object() ? &doc["metadata"] : nullptr;
  if (md) {
    const json* labels =
        md->contains("labels") && (*md)["labels"].is_object() ? &(*md)["labels"] : nullptr;
    if (!labels || !labels->contains(kServiceNameLabel)) {
      d.fail(label_path,
             "required label is missing: it names the Service these endpoints belong to");
    } else if (const json& v = (*labels)[kServiceNameLabel]; v.is_string()) {
      out.service_name = v.get<std::string>();
      if (!isDns1123Label(out.service_name)) {
        d.fail(label_path, absl::StrCat("\"", out.service_name, "\" is not a valid Service name"));
      }
    }  // a non-string value is reported by the metadata checks
  }
  if (auto at = d.getString(doc, "", "addressType", true)) {
    if (*at == "IPv4") {
      out.address_type = AF_INET;
    } else if (*at == "IPv6") {
      out.address_type = AF_INET6;
    } else if (*at == "FQDN") {
      d.fail("addressType", "FQDN endpoints are not supported (use IPv4 or IPv6)");
    } else {
      d.fail("addressType", absl::StrCat("unknown address type \"", *at, "\" (use IPv4 or IPv6)"));
    }
  }
  if (const json* eps = d.getArray(doc, "", "endpoints", false)) {
    for (size_t i = 0; i < eps->size(); ++i) {
      std::string path = indexPath("endpoints", i);
      const json* e = d.object((*eps)[i], path);
      if (!e) continue;
      d.allowOnly(*e, path,
                  {"addresses", "conditions", "nodeName", "zone", "targetRef", "hostname"});
      EndpointSpec ep;
      if (const json* addrs = d.getArray(*e, path, "addresses", true)) {
        std::string apath = childPath(path, "addresses");
        if (addrs->empty() || addrs->size() > 100) {
          d.fail(apath, "must list between 1 and 100 addresses");
        }
        for (size_t j = 0; j < addrs->size(); ++j) {
          std::string ipath = indexPath(apath, j);
          auto ip = address(d, (*addrs)[j], ipath);
          if (!ip) continue;
          if (out.address_type != 0 && ip->family != out.address_type) {
            d.fail(ipath,
                   absl::StrCat(ip->toString(), " is ", familyName(ip->family),
                                " but the slice's addressType is ", familyName(out.address_type)));
            continue;
          }
          ep.addresses.push_back(*ip);
        }
      }
      if (const json* c = d.getObject(*e, path, "conditions", false)) {
        std::string cpath = childPath(path, "conditions");
        d.allowOnly(*c, cpath, {"ready", "serving", "terminating"});
        if (auto ready = d.getBool(*c, cpath, "ready")) ep.ready = *ready;
        d.getBool(*c, cpath, "serving");
        d.getBool(*c, cpath, "terminating");
      }
      if (auto n = d.getString(*e, path, "nodeName", false)) ep.node_name = *n;
      d.getString(*e, path, "zone", false);
      d.getString(*e, path, "hostname", false);
      if (const json* t = d.getObject(*e, path, "targetRef", false)) {
        std::string tpath = childPath(path, "targetRef");
        d.allowOnly(
            *t, tpath,
            {"kind", "name", "namespace", "uid", "apiVersion", "resourceVersion", "fieldPath"});
        auto kind = d.getString(*t, tpath, "kind", false);
        auto name = d.getString(*t, tpath, "name", false);
        auto ns = d.getString(*t, tpath, "namespace", false);
        for (auto f : {"uid", "apiVersion", "resourceVersion", "fieldPath"}) {
          d.getString(*t, tpath, f, false);
        }
        if (name) {
          ep.target_ref =
              absl::StrCat(kind.value_or("Pod"), "/", ns.value_or(""), ns ? "/" : "", *name);
        }
      }
      out.endpoints.push_back(std::move(ep));
    }
  }
  if (const json* ports = d.getArray(doc, "", "ports", false)) {
    absl::flat_hash_map<std::string, std::string> names;
    for (size_t i = 0; i < ports->size(); ++i) {
      std::string path = indexPath("ports", i);
      const json* p = d.object((*ports)[i], path);
      if (!p) continue;
      d.allowOnly(*p, path, {"name", "port", "protocol", "appProtocol"});
      EndpointSliceSpec::Port sp;
      if (auto name = d.getString(*p, path, "name", false)) {
        sp.name = *name;
        if (!name->empty() && !isDns1123Label(*name)) {
          d.fail(childPath(path, "name"),
                 absl::StrCat("\"", *name, "\" is not a valid port name (DNS-1123 label)"));
        }
      }
      auto [it, inserted] = names.emplace(sp.name, path);
      if (!inserted) {
        d.fail(childPath(path, "name"),
               absl::StrCat("duplicate port name \"", sp.name, "\" (also ", it->second, ")"));
      }
      if (auto port = d.getInt(*p, path, "port", true, 1, 65535, "port")) {
        sp.port = static_cast<uint16_t>(*port);
      }
      if (auto proto = protocol(d, *p, path)) sp.protocol = *proto;
      d.getString(*p, path, "appProtocol", false);
      out.ports.push_back(std::move(sp));
    }
  }
  return out;
}

// spec.connectionLimits.<field>: {perSecond, burst}. perSecond is required in the
// block; burst defaults to perSecond (one second's worth of connects at once).
state::ConnectRate connectRate(Decoder& d, const json& limits, const std::string& path,
                               const char* field) {
  state::ConnectRate out;
  const json* r = d.getObject(limits, path, field, false);
  if (!r) return out;
  const std::string rpath = childPath(path, field);
  d.allowOnly(*r, rpath, {"perSecond", "burst"});
  if (auto v = d.getInt(*r, rpath, "perSecond", true, 1, kMaxConnectRate, "perSecond")) {
    out.per_second = static_cast<uint32_t>(*v);
  }
  if (auto v = d.getInt(*r, rpath, "burst", false, 1, kMaxConnectRate, "burst")) {
    out.burst = static_cast<uint32_t>(*v);
  } else {
    out.burst = out.per_second;
  }
  return out;
}

// spec.outlierDetection: absent fields keep the defaults (state::OutlierDetection).
void decodeOutlierDetection(Decoder& d, const json& od, state::OutlierDetection& out,
                            state::L7OutlierSettings& l7, bool& request_level) {
  const std::string opath = "spec.outlierDetection";
  d.allowOnly(od, opath,
              {"enabled", "consecutiveFailures", "consecutive5xxErrors", "consecutiveGatewayErrors",
               "baseEjectionTime", "maxEjectionTime", "maxEjectionPercent"});
  // The L7 signals (the proxied path): 0 turns one off, as in Istio.
  if (auto v = d.getInt(od, opath, "consecutive5xxErrors", false, 0, kMaxConsecutiveFailures,
                        "consecutive5xxErrors")) {
    l7.consecutive_5xx = static_cast<uint32_t>(*v);
    request_level = request_level || *v != 0;
  }
  if (auto v = d.getInt(od, opath, "consecutiveGatewayErrors", false, 0, kMaxConsecutiveFailures,
                        "consecutiveGatewayErrors")) {
    l7.consecutive_gateway_errors = static_cast<uint32_t>(*v);
    request_level = request_level || *v != 0;
  }
  const std::optional<bool> enabled = d.getBool(od, opath, "enabled");
  if (const json* cf = d.get(od, opath, "consecutiveFailures", false);
      cf && cf->is_number_integer() && cf->get<int64_t>() == 0) {
    d.fail(childPath(opath, "consecutiveFailures"),
           absl::StrCat("consecutiveFailures 0 is out of range [1, ", kMaxConsecutiveFailures,
                        "] (use enabled: false to turn detection off)"));
  } else if (auto v = d.getInt(od, opath, "consecutiveFailures", false, 1, kMaxConsecutiveFailures,
                               "consecutiveFailures")) {
    out.consecutive_failures = static_cast<uint32_t>(*v);
  }
  if (auto v = d.durationMs(od, opath, "baseEjectionTime", 1, kMaxEjectionMs)) {
    out.base_ejection_ms = *v;
  }
  const std::optional<uint32_t> max_ms =
      d.durationMs(od, opath, "maxEjectionTime", 1, kMaxEjectionMs);
  if (max_ms) {
    if (*max_ms < out.base_ejection_ms) {
      d.fail(childPath(opath, "maxEjectionTime"),
             absl::StrCat(formatDurationMs(*max_ms), " is shorter than baseEjectionTime (",
                          formatDurationMs(out.base_ejection_ms), ")"));
    }
    out.max_ejection_ms = *max_ms;
  } else {
    // Envoy's rule: unset means 300 s or baseEjectionTime, whichever is larger.
    out.max_ejection_ms = std::max(out.max_ejection_ms, out.base_ejection_ms);
  }
  if (auto v = d.getInt(od, opath, "maxEjectionPercent", false, 0, 100, "maxEjectionPercent")) {
    out.max_ejection_percent = static_cast<uint32_t>(*v);
  }
  if (enabled.has_value() && !*enabled) {
    out.consecutive_failures = 0;
    l7.consecutive_5xx = 0;
    l7.consecutive_gateway_errors = 0;
  }
}

// A percentage 0..100 (integer or fraction, as Istio's Percent.value) in parts per million.
std::optional<uint32_t> percentPerMillion(Decoder& d, const json& obj, const std::string& path,
                                          absl::string_view field) {
  const json* v = d.get(obj, path, field, false);
  if (!v) return std::nullopt;
  const std::string fpath = childPath(path, field);
  if (!v->is_number()) {
    d.fail(fpath, absl::StrCat("expected a percentage 0..100, got ", describe(*v)));
    return std::nullopt;
  }
  const double p = v->get<double>();
  if (!std::isfinite(p) || p < 0 || p > 100) {
    d.fail(fpath, absl::StrCat(field, " ", dumpForMessage(*v), " is out of range [0, 100]"));
    return std::nullopt;
  }
  return static_cast<uint32_t>(std::llround(p * 10'000));
}

// spec.requestLimits: Envoy's circuit-breaker thresholds (unset fields keep the defaults).
void decodeRequestLimits(Decoder& d, const json& rl, state::RequestLimits& out) {
  const std::string rpath = "spec.requestLimits";
  d.allowOnly(rl, rpath, {"maxPendingRequests", "maxRequests", "maxRetries", "retryBudget"});
  if (auto v = d.getInt(rl, rpath, "maxPendingRequests", false, 1, kMaxConnectionLimit,
                        "maxPendingRequests")) {
    out.max_pending_requests = static_cast<uint32_t>(*v);
  }
  if (auto v = d.getInt(rl, rpath, "maxRequests", false, 1, kMaxConnectionLimit, "maxRequests")) {
    out.max_requests = static_cast<uint32_t>(*v);
  }
  // 0 is allowed here: no retry at a time (retries off for the Service's cluster).
  if (auto v = d.getInt(rl, rpath, "maxRetries", false, 0, kMaxConnectionLimit, "maxRetries")) {
    out.max_retries = static_cast<uint32_t>(*v);
  }
  if (const json* rb = d.getObject(rl, rpath, "retryBudget", false)) {
    const std::string bpath = childPath(rpath, "retryBudget");
    d.allowOnly(*rb, bpath, {"percent", "minRetryConcurrency"});
    out.retry_budget = true;
    if (auto v = d.getInt(*rb, bpath, "percent", false, 0, 100, "percent")) {
      out.budget_percent = static_cast<uint32_t>(*v);
    }
    if (auto v = d.getInt(*rb, bpath, "minRetryConcurrency", false, 0, kMaxConnectionLimit,
                          "minRetryConcurrency")) {
      out.min_retry_concurrency = static_cast<uint32_t>(*v);
    }
  }
}

constexpr char kRetryOnHelp[] =
    "connect-failure, refused-stream, reset, 5xx, gateway-error, retriable-status-codes, "
    "cancelled, deadline-exceeded, resource-exhausted, internal, unavailable, or an HTTP status "
    "code";

// spec.retries: Istio's VirtualService retries (attempts, perTryTimeout, retryOn — a list or
// Istio's comma-separated string, where numbers are retriable status codes) plus Envoy's
// retriableStatusCodes and back-off.
void decodeRetries(Decoder& d, const json& r, state::RetrySettings& out) {
  const std::string rpath = "spec.retries";
  d.allowOnly(r, rpath,
              {"attempts", "perTryTimeout", "retryOn", "retriableStatusCodes", "backoff"});
  if (auto v = d.getInt(r, rpath, "attempts", false, 0, kMaxRetryAttempts, "attempts")) {
    out.attempts = static_cast<uint32_t>(*v);
  }
  if (auto v = d.durationMs(r, rpath, "perTryTimeout", 1, kMaxRequestDurationMs)) {
    out.per_try_timeout_ms = *v;
  }
  std::vector<uint16_t> codes;
  bool codes_given = false;
  auto statusCode = [&](const json& v, const std::string& path) {
    if (auto c = d.integer(v, path, 100, 599, "status code")) {
      codes.push_back(static_cast<uint16_t>(*c));
    }
  };
  if (const json* rc = d.getArray(r, rpath, "retriableStatusCodes", false)) {
    const std::string cpath = childPath(rpath, "retriableStatusCodes");
    codes_given = true;
    if (rc->empty()) d.fail(cpath, "must list at least one status code (or leave it out)");
    for (size_t i = 0; i < rc->size(); ++i) statusCode((*rc)[i], indexPath(cpath, i));
  }
  if (const json* on = d.get(r, rpath, "retryOn", false)) {
    const std::string opath = childPath(rpath, "retryOn");
    uint32_t bits = 0;
    bool ok = true;
    auto condition = [&](absl::string_view name, const std::string& path) {
      const std::string trimmed(absl::StripAsciiWhitespace(name));
      if (trimmed.empty()) {
        d.fail(path, "empty condition");
        ok = false;
        return;
      }
      if (std::all_of(trimmed.begin(), trimmed.end(),
                      [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
        int code = 0;
        if (trimmed.size() != 3 || !absl::SimpleAtoi(trimmed, &code) || code < 100 || code > 599) {
          d.fail(path, absl::StrCat("\"", trimmed, "\" is not an HTTP status code (100..599)"));
          ok = false;
          return;
        }
        codes.push_back(static_cast<uint16_t>(code));
        codes_given = true;
        bits |= state::kRetryOnRetriableStatusCodes;
        return;
      }
      const uint32_t bit = retryOnBit(trimmed);
      if (bit == 0) {
        d.fail(path,
               absl::StrCat("unknown retry condition \"", trimmed, "\" (use ", kRetryOnHelp, ")"));
        ok = false;
        return;
      }
      bits |= bit;
    };
    if (on->is_string()) {
      const std::string text = on->get<std::string>();
      for (absl::string_view part : absl::StrSplit(text, ',')) condition(part, opath);
    } else if (on->is_array()) {
      if (on->empty())
        d.fail(opath, "must list at least one condition (attempts: 0 turns retries off)");
      for (size_t i = 0; i < on->size(); ++i) {
        const std::string ipath = indexPath(opath, i);
        if (auto s = d.string((*on)[i], ipath)) {
          condition(*s, ipath);
        } else {
          ok = false;
        }
      }
    } else {
      d.fail(opath, absl::StrCat("expected a list of conditions or a comma-separated string, got ",
                                 describe(*on)));
      ok = false;
    }
    if (ok) {
      if (codes_given) bits |= state::kRetryOnRetriableStatusCodes;
      if ((bits & state::kRetryOnRetriableStatusCodes) != 0 && !codes_given) {
        d.fail(opath,
               "retriable-status-codes needs the codes: list them in retriableStatusCodes or as "
               "numbers in retryOn");
      }
      out.retry_on = bits;
    }
  } else if (codes_given) {
    out.retry_on |= state::kRetryOnRetriableStatusCodes;
  }
  if (codes_given) {
    std::sort(codes.begin(), codes.end());
    codes.erase(std::unique(codes.begin(), codes.end()), codes.end());
    out.retriable_status_codes = std::move(codes);
  }
  if (const json* b = d.getObject(r, rpath, "backoff", false)) {
    const std::string bpath = childPath(rpath, "backoff");
    d.allowOnly(*b, bpath, {"baseInterval", "maxInterval"});
    if (auto v = d.durationMs(*b, bpath, "baseInterval", 1, kMaxBackoffMs)) {
      out.base_interval_ms = *v;
    }
    if (auto v = d.durationMs(*b, bpath, "maxInterval", 1, kMaxBackoffMs)) {
      if (*v < out.base_interval_ms) {
        d.fail(childPath(bpath, "maxInterval"),
               absl::StrCat(formatDurationMs(*v), " is shorter than baseInterval (",
                            formatDurationMs(out.base_interval_ms), ")"));
      }
      out.max_interval_ms = *v;
    } else {
      // Envoy's default: 10 x baseInterval.
      out.max_interval_ms = static_cast<uint32_t>(std::min<uint64_t>(
          uint64_t{out.base_interval_ms} * state::RetrySettings::kMaxIntervalFactor,
          kMaxBackoffMs * state::RetrySettings::kMaxIntervalFactor));
    }
  }
}

// spec.faultInjection: Istio's HTTPFaultInjection (delay and/or abort, each with a percentage,
// unset = 100%).
void decodeFaultInjection(Decoder& d, const json& f, state::FaultInjection& out) {
  const std::string fpath = "spec.faultInjection";
  d.allowOnly(f, fpath, {"delay", "abort"});
  const json* delay = d.getObject(f, fpath, "delay", false);
  const json* abort = d.getObject(f, fpath, "abort", false);
  // (A delay or abort that is not a mapping was reported already.)
  auto given = [&](const char* k) { return f.contains(k) && !f[k].is_null(); };
  if (!given("delay") && !given("abort")) {
    d.fail(fpath, "needs a delay, an abort or both");
  }
  if (delay) {
    const std::string dpath = childPath(fpath, "delay");
    d.allowOnly(*delay, dpath, {"fixedDelay", "percentage"});
    if (!delay->contains("fixedDelay"))
      d.fail(childPath(dpath, "fixedDelay"), "required field is missing");
    if (auto v = d.durationMs(*delay, dpath, "fixedDelay", 1, kMaxRequestDurationMs)) {
      out.delay_ms = *v;
    }
    out.delay_per_million =
        percentPerMillion(d, *delay, dpath, "percentage").value_or(state::FaultInjection::kMillion);
  }
  if (abort) {
    const std::string apath = childPath(fpath, "abort");
    d.allowOnly(*abort, apath, {"httpStatus", "grpcStatus", "percentage"});
    const bool http = abort->contains("httpStatus");
    const bool grpc = abort->contains("grpcStatus");
    if (http == grpc) {
      d.fail(apath, "needs exactly one of httpStatus and grpcStatus");
    }
    if (auto v = d.getInt(*abort, apath, "httpStatus", false, 200, 599, "httpStatus")) {
      out.abort_http_status = static_cast<uint16_t>(*v);
    }
    if (auto g = d.getString(*abort, apath, "grpcStatus", false)) {
      const int code = grpcCodeFromName(*g);
      if (code <= 0) {
        d.fail(childPath(apath, "grpcStatus"),
               code == 0 ? std::string("OK is not an error status")
                         : absl::StrCat("unknown gRPC status \"", *g,
                                        "\" (use a code name such as UNAVAILABLE, "
                                        "DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED)"));
      } else {
        out.abort_grpc_status = code;
      }
    }
    out.abort_per_million =
        percentPerMillion(d, *abort, apath, "percentage").value_or(state::FaultInjection::kMillion);
  }
}

TrafficPolicySpec decodeTrafficPolicy(Decoder& d, const json& doc) {
  TrafficPolicySpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", true);
  if (!spec) return out;
  d.allowOnly(*spec, "spec",
              {"targetRef", "loadBalancer", "connectionLimits", "outlierDetection", "draining",
               "requestLimits", "retries", "faultInjection"});
  if (const json* od = d.getObject(*spec, "spec", "outlierDetection", false)) {
    decodeOutlierDetection(d, *od, out.outlier, out.request.outlier, out.request_level);
  }
  out.request.outlier.base_ejection_ms = out.outlier.base_ejection_ms;
  out.request.outlier.max_ejection_ms = out.outlier.max_ejection_ms;
  out.request.outlier.max_ejection_percent = out.outlier.max_ejection_percent;
  if (const json* rl = d.getObject(*spec, "spec", "requestLimits", false)) {
    decodeRequestLimits(d, *rl, out.request.limits);
    out.request_level = true;
  }
  if (const json* r = d.getObject(*spec, "spec", "retries", false)) {
    decodeRetries(d, *r, out.request.retries);
    out.request_level = true;
  }
  if (const json* f = d.getObject(*spec, "spec", "faultInjection", false)) {
    decodeFaultInjection(d, *f, out.request.fault);
    out.request_level = true;
  }
  if (const json* dr = d.getObject(*spec, "spec", "draining", false)) {
    d.allowOnly(*dr, "spec.draining", {"terminateConnections"});
    if (auto v = d.getBool(*dr, "spec.draining", "terminateConnections")) {
      out.terminate_removed = *v;
    }
  }
  if (const json* cl = d.getObject(*spec, "spec", "connectionLimits", false)) {
    // Unset = unlimited. 2^24 bounds what a node could hold open (and catches
    // a mistyped extra digit); 0 is rejected rather than meaning "refuse all".
    const std::string cpath = "spec.connectionLimits";
    d.allowOnly(
        *cl, cpath,
        {"maxConnections", "maxConnectionsPerBackend", "connectRate", "connectRatePerClient"});
    if (auto v = d.getInt(*cl, cpath, "maxConnections", false, 1, kMaxConnectionLimit,
                          "maxConnections")) {
      out.max_connections = static_cast<uint32_t>(*v);
    }
    if (auto v = d.getInt(*cl, cpath, "maxConnectionsPerBackend", false, 1, kMaxConnectionLimit,
                          "maxConnectionsPerBackend")) {
      out.max_connections_per_backend = static_cast<uint32_t>(*v);
    }
    out.connect_rate = connectRate(d, *cl, cpath, "connectRate");
    out.client_connect_rate = connectRate(d, *cl, cpath, "connectRatePerClient");
  }
  if (const json* t = d.getObject(*spec, "spec", "targetRef", true)) {
    const std::string tpath = "spec.targetRef";
    d.allowOnly(*t, tpath, {"group", "kind", "name"});
    if (auto g = d.getString(*t, tpath, "group", false); g && !g->empty()) {
      d.fail(childPath(tpath, "group"),
             absl::StrCat("group \"", *g, "\" is not supported (use \"\" for core Services)"));
    }
    if (auto k = d.getString(*t, tpath, "kind", true); k && *k != kKindService) {
      d.fail(
          childPath(tpath, "kind"),
          absl::StrCat("kind \"", *k, "\" is not supported (a TrafficPolicy targets a Service)"));
    }
    if (auto n = d.getString(*t, tpath, "name", true)) {
      out.target_service = *n;
      if (!isDns1123Label(*n)) {
        d.fail(childPath(tpath, "name"), absl::StrCat("\"", *n, "\" is not a valid Service name"));
      }
    }
  }
  const json* lb = d.getObject(*spec, "spec", "loadBalancer", false);
  if (!lb) return out;
  const std::string lpath = "spec.loadBalancer";
  d.allowOnly(*lb, lpath, {"algorithm", "maglev", "weights"});
  if (auto a = d.getString(*lb, lpath, "algorithm", false)) {
    bool found = false;
    for (auto algo : {state::LbAlgorithm::kRandom, state::LbAlgorithm::kWeightedRandom,
                      state::LbAlgorithm::kMaglev, state::LbAlgorithm::kLeastConnections,
                      state::LbAlgorithm::kLeastLatency}) {
      if (*a == algorithmName(algo)) {
        out.algorithm = algo;
        found = true;
      }
    }
    if (!found) {
      d.fail(childPath(lpath, "algorithm"),
             absl::StrCat("unknown algorithm \"", *a,
                          "\" (use Random, WeightedRandom, Maglev, LeastConnections or "
                          "LeastLatency)"));
    }
  }
  out.request.peak_ewma = out.algorithm == state::LbAlgorithm::kLeastLatency;
  const bool maglev = out.algorithm == state::LbAlgorithm::kMaglev;
  if (maglev) out.maglev_table_size = MESH_MAGLEV_DEFAULT_SIZE;
  if (const json* m = d.getObject(*lb, lpath, "maglev", false)) {
    const std::string mpath = childPath(lpath, "maglev");
    d.allowOnly(*m, mpath, {"tableSize"});
    if (!maglev) {
      d.fail(mpath, absl::StrCat("maglev settings need algorithm: Maglev (algorithm is ",
                                 algorithmName(out.algorithm), ")"));
    }
    if (auto size = d.getInt(*m, mpath, "tableSize", false, 3, MESH_MAGLEV_MAX_SIZE, "tableSize")) {
      if (!isPrime(static_cast<uint32_t>(*size))) {
        d.fail(childPath(mpath, "tableSize"),
               absl::StrCat(*size,
                            " is not a prime (Maglev needs a prime table size, e.g. 16381 "
                            "or 65537)"));
      } else if (maglev) {
        out.maglev_table_size = static_cast<uint32_t>(*size);
      }
    }
  }
  if (const json* ws = d.getArray(*lb, lpath, "weights", false)) {
    const std::string wpath = childPath(lpath, "weights");
    if (out.algorithm == state::LbAlgorithm::kRandom && !ws->empty()) {
      d.fail(wpath, "weights have no effect with algorithm Random (use WeightedRandom)");
    }
    absl::flat_hash_map<IpAddress, std::string> seen;
    for (size_t i = 0; i < ws->size(); ++i) {
      std::string path = indexPath(wpath, i);
      const json* w = d.object((*ws)[i], path);
      if (!w) continue;
      d.allowOnly(*w, path, {"address", "weight"});
      std::optional<IpAddress> ip;
      if (const json* a = d.get(*w, path, "address", true)) {
        ip = address(d, *a, childPath(path, "address"));
      }
      auto weight = d.getInt(*w, path, "weight", true, 1, 10000, "weight");
      if (!ip || !weight) continue;
      auto [it, inserted] = seen.emplace(*ip, path);
      if (!inserted) {
        d.fail(childPath(path, "address"),
               absl::StrCat(ip->toString(), " is listed twice (also ", it->second, ")"));
        continue;
      }
      out.weights.emplace_back(*ip, static_cast<uint32_t>(*weight));
    }
  }
  return out;
}

// --- Gateway API routes ----------------------------------------------------
// Limits and rules of the Gateway API CRDs (gateway.networking.k8s.io v1):
// MaxItems and CEL rules of HTTPRoute/GRPCRoute, so that what kubectl would
// refuse, meshd refuses too, with the field's position.
constexpr size_t kMaxParentRefs = 32;
constexpr size_t kMaxHostnames = 16;
constexpr size_t kMaxRules = 16;
constexpr size_t kMaxHttpMatchesPerRule = 64;
constexpr size_t kMaxGrpcMatchesPerRule = 8;
constexpr size_t kMaxMatchesPerRoute = 128;
constexpr size_t kMaxFilters = 16;
constexpr size_t kMaxBackendRefs = 16;
constexpr size_t kMaxHeaderMatches = 16;  // also query params and each header-modifier list
constexpr size_t kMaxPathLength = 1024;
constexpr size_t kMaxHeaderValueLength = 4096;
constexpr size_t kMaxHeaderNameLength = 256;
constexpr int64_t kMaxBackendWeight = 1000000;

bool isTchar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos;
}

bool isHeaderName(absl::string_view s) {
  if (s.empty() || s.size() > kMaxHeaderNameLength) return false;
  return std::all_of(s.begin(), s.end(), isTchar);
}

// The Gateway API header value pattern ^[!-~]+([\t ]?[!-~]+)*$: printable
// ASCII, single inner SP/HTAB; never CR, LF or NUL (no header injection).
bool isHeaderValue(absl::string_view s) {
  if (s.empty() || s.size() > kMaxHeaderValueLength) return false;
  auto visible = [](char c) { return c >= '!' && c <= '~'; };
  if (!visible(s.front()) || !visible(s.back())) return false;
  for (size_t i = 1; i < s.size(); ++i) {
    const char c = s[i];
    if (visible(c)) continue;
    if ((c == ' ' || c == '\t') && visible(s[i - 1])) continue;
    return false;
  }
  return true;
}

// Gateway API Hostname: a DNS-1123 subdomain, optionally "*." first; no IPs.
bool isRouteHostname(absl::string_view s, bool allow_wildcard) {
  if (s.empty() || s.size() > 253) return false;
  absl::string_view rest = s;
  if (allow_wildcard && absl::ConsumePrefix(&rest, "*.")) {
    if (rest.empty()) return false;
  }
  if (!isDns1123Subdomain(std::string_view(rest.data(), rest.size()))) return false;
  return !IpAddress::parse(std::string_view(s.data(), s.size())).ok();
}

// An RE2 pattern of at most `max_len` bytes (the CRD's MaxLength of the field).
void checkRegex(Decoder& d, const std::string& path, const std::string& pattern,
                size_t max_len = kMaxPathLength) {
  if (pattern.size() > max_len) {
    d.fail(path, absl::StrCat("regular expression longer than ", max_len, " bytes"));
    return;
  }
  RE2::Options opts;
  opts.set_log_errors(false);
  RE2 re(pattern, opts);
  if (!re.ok()) {
    d.fail(path,
           absl::StrCat("\"", pattern, "\" is not a valid RE2 regular expression: ", re.error()));
  }
}

// Checks a list's size against a CRD MaxItems.
const json* getList(Decoder& d, const json& obj, absl::string_view path, absl::string_view field,
                    size_t max_items, bool required = false) {
  const json* a = d.getArray(obj, path, field, required);
  if (a && a->size() > max_items) {
    d.fail(childPath(path, field),
           absl::StrCat("at most ", max_items, " items are allowed, got ", a->size()));
  }
  return a;
}

// Exact and PathPrefix values (the CRD's CEL rules on HTTPPathMatch, shared by
// the path modifiers' values).
std::optional<std::string> checkPathValue(absl::string_view v) {
  if (v.empty() || v.front() != '/') return "must be an absolute path starting with '/'";
  if (v.size() > kMaxPathLength) return absl::StrCat("longer than ", kMaxPathLength, " bytes");
  for (absl::string_view bad : {"//", "/./", "/../", "%2f", "%2F", "#"}) {
    if (absl::StrContains(v, bad)) return absl::StrCat("must not contain '", bad, "'");
  }
  if (absl::EndsWith(v, "/..") || absl::EndsWith(v, "/.")) {
    return "must not end with '/.' or '/..'";
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const char c = v[i];
    if (c == '%') {
      if (i + 2 >= v.size() || !absl::ascii_isxdigit(static_cast<unsigned char>(v[i + 1])) ||
          !absl::ascii_isxdigit(static_cast<unsigned char>(v[i + 2]))) {
        return "'%' must be followed by two hex digits";
      }
      i += 2;
      continue;
    }
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        absl::string_view("-/._~!$&'()*+,;=:@").find(c) == absl::string_view::npos) {
      return absl::StrCat("character '", escapeControl(absl::string_view(&c, 1)),
                          "' is not allowed in a path (percent-encode it)");
    }
  }
  return std::nullopt;
}

void decodeParentRefs(Decoder& d, const json& spec, const ResourceKey& key,
                      std::vector<RouteParentRef>& out) {
  const json* refs = getList(d, spec, "spec", "parentRefs", kMaxParentRefs);
  if (!refs) {
    d.fail("spec.parentRefs",
           "required field is missing: meshd binds a route to Services (GAMMA); add a parentRef "
           "{group: \"\", kind: Service, name: <service>}");
    return;
  }
  if (refs->empty()) d.fail("spec.parentRefs", "must name at least one Service");
  for (size_t i = 0; i < refs->size(); ++i) {
    const std::string path = indexPath("spec.parentRefs", i);
    const json* r = d.object((*refs)[i], path);
    if (!r) continue;
    d.allowOnly(*r, path, {"group", "kind", "name", "namespace", "port", "sectionName"});
    RouteParentRef ref;
    auto group = d.getString(*r, path, "group", false);
    auto kind = d.getString(*r, path, "kind", false);
    if (kind.value_or("Gateway") != kKindService) {
      d.fail(childPath(path, kind ? "kind" : "name"),
             absl::StrCat("parentRef kind ", kind.value_or("Gateway"), kind ? "" : " (the default)",
                          " is not supported: meshd binds routes to Services, the GAMMA way "
                          "(set group: \"\" and kind: Service)"));
    } else if (!group || (*group != "" && *group != "core")) {
      d.fail(childPath(path, group ? "group" : "kind"),
             absl::StrCat(
                 "a Service parentRef needs group \"\" (the core group); group ",
                 group ? absl::StrCat("\"", *group, "\"") : "defaults to gateway.networking.k8s.io",
                 " has no Service"));
    }
    if (auto n = d.getString(*r, path, "name", true)) {
      ref.name = *n;
      if (!isDns1123Label(*n)) {
        d.fail(childPath(path, "name"), absl::StrCat("\"", *n, "\" is not a valid Service name"));
      }
    }
    if (auto ns = d.getString(*r, path, "namespace", false); ns && *ns != key.ns) {
      d.fail(childPath(path, "namespace"),
             absl::StrCat("a parentRef in another namespace (\"", *ns, "\", the route is in \"",
                          key.ns,
                          "\") is a GAMMA consumer route, not supported yet: put the route in "
                          "the Service's namespace"));
    }
    if (auto p = d.getInt(*r, path, "port", false, 1, 65535, "port")) {
      ref.port = static_cast<uint16_t>(*p);
    }
    if (auto s = d.getString(*r, path, "sectionName", false)) {
      ref.section_name = *s;
      if (!isDns1123Label(*s)) {
        d.fail(childPath(path, "sectionName"),
               absl::StrCat("\"", *s, "\" is not a valid Service port name"));
      }
    }
    out.push_back(std::move(ref));
  }
}

void decodeHostnames(Decoder& d, const json& spec, std::vector<std::string>& out) {
  const json* hs = getList(d, spec, "spec", "hostnames", kMaxHostnames);
  if (!hs) return;
  for (size_t i = 0; i < hs->size(); ++i) {
    const std::string path = indexPath("spec.hostnames", i);
    auto h = d.string((*hs)[i], path);
    if (!h) continue;
    if (!isRouteHostname(*h, true)) {
      d.fail(path, absl::StrCat("\"", *h,
                                "\" is not a valid hostname (lowercase DNS name, optionally "
                                "starting with \"*.\"; IP addresses are not allowed)"));
      continue;
    }
    out.push_back(*h);
  }
}

// Service port references: backendRefs[] (with weight) and mirror backendRefs.
void decodeServicePortRef(Decoder& d, const json& r, const std::string& path,
                          const ResourceKey& key, ServicePortRef& out) {
  auto group = d.getString(r, path, "group", false);
  if (group && *group != "" && *group != "core") {
    d.fail(childPath(path, "group"),
           absl::StrCat("group \"", *group, "\" is not supported (use \"\" for core Services)"));
  }
  if (auto kind = d.getString(r, path, "kind", false); kind && *kind != kKindService) {
    d.fail(childPath(path, "kind"),
           absl::StrCat("kind \"", *kind, "\" is not supported (meshd routes to Services)"));
  }
  if (auto n = d.getString(r, path, "name", true)) {
    out.name = *n;
    if (!isDns1123Label(*n)) {
      d.fail(childPath(path, "name"), absl::StrCat("\"", *n, "\" is not a valid Service name"));
    }
  }
  if (auto ns = d.getString(r, path, "namespace", false); ns && *ns != key.ns) {
    d.fail(childPath(path, "namespace"),
           absl::StrCat("a backend in another namespace (\"", *ns, "\", the route is in \"", key.ns,
                        "\") needs a ReferenceGrant, not supported yet"));
  }
  if (const json* p = d.get(r, path, "port", false)) {
    if (auto v = d.integer(*p, childPath(path, "port"), 1, 65535, "port")) {
      out.port = static_cast<uint16_t>(*v);
    }
  } else {
    d.fail(childPath(path, "port"), "required field is missing: a Service backend needs a port");
  }
}

void decodeHeaderModifier(Decoder& d, const json& m, const std::string& path, HeaderModifier& out) {
  d.allowOnly(m, path, {"set", "add", "remove"});
  absl::flat_hash_map<std::string, std::string> seen;  // lowercase name -> path
  auto note = [&](const std::string& name, const std::string& npath) {
    auto [it, inserted] = seen.emplace(absl::AsciiStrToLower(name), npath);
    if (!inserted) {
      d.fail(npath, absl::StrCat("header \"", name, "\" is also modified at ", it->second,
                                 " (one action per header name)"));
    }
  };
  for (absl::string_view list : {"set", "add"}) {
    const json* a = getList(d, m, path, list, kMaxHeaderMatches);
    if (!a) continue;
    const std::string lpath = childPath(path, list);
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string hpath = indexPath(lpath, i);
      const json* h = d.object((*a)[i], hpath);
      if (!h) continue;
      d.allowOnly(*h, hpath, {"name", "value"});
      HeaderValue hv;
      auto name = d.getString(*h, hpath, "name", true);
      auto value = d.getString(*h, hpath, "value", true);
      if (name) {
        if (!isHeaderName(*name)) {
          d.fail(childPath(hpath, "name"),
                 absl::StrCat("\"", *name, "\" is not a valid header name"));
        } else {
          note(*name, childPath(hpath, "name"));
        }
        hv.name = *name;
      }
      if (value) {
        if (!isHeaderValue(*value)) {
          d.fail(childPath(hpath, "value"),
                 "must be 1-4096 printable ASCII characters, with single spaces or tabs "
                 "between words");
        }
        hv.value = *value;
      }
      (list == "set" ? out.set : out.add).push_back(std::move(hv));
    }
  }
  if (const json* a = getList(d, m, path, "remove", kMaxHeaderMatches)) {
    const std::string lpath = childPath(path, "remove");
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string npath = indexPath(lpath, i);
      auto name = d.string((*a)[i], npath);
      if (!name) continue;
      if (!isHeaderName(*name)) {
        d.fail(npath, absl::StrCat("\"", *name, "\" is not a valid header name"));
        continue;
      }
      note(*name, npath);
      out.remove.push_back(*name);
    }
  }
}

std::optional<PathModifier> decodePathModifier(Decoder& d, const json& parent,
                                               const std::string& ppath) {
  const json* m = d.getObject(parent, ppath, "path", false);
  if (!m) return std::nullopt;
  const std::string path = childPath(ppath, "path");
  d.allowOnly(*m, path, {"type", "replaceFullPath", "replacePrefixMatch"});
  auto type = d.getString(*m, path, "type", true);
  if (!type) return std::nullopt;
  PathModifier out;
  const char* field = nullptr;
  if (*type == "ReplaceFullPath") {
    out.type = PathModifierType::kReplaceFullPath;
    field = "replaceFullPath";
  } else if (*type == "ReplacePrefixMatch") {
    out.type = PathModifierType::kReplacePrefixMatch;
    field = "replacePrefixMatch";
  } else {
    d.fail(childPath(path, "type"), absl::StrCat("unknown path modifier type \"", *type,
                                                 "\" (use ReplaceFullPath or ReplacePrefixMatch)"));
    return std::nullopt;
  }
  const char* other =
      out.type == PathModifierType::kReplaceFullPath ? "replacePrefixMatch" : "replaceFullPath";
  if (d.get(*m, path, other, false)) {
    d.fail(childPath(path, other), absl::StrCat("not allowed with type ", *type), true);
  }
  auto v = d.getString(*m, path, field, true);
  if (!v) return std::nullopt;
  // replacePrefixMatch may be "" (the prefix is removed).
  if (!(v->empty() && out.type == PathModifierType::kReplacePrefixMatch)) {
    if (auto bad = checkPathValue(*v)) d.fail(childPath(path, field), *bad);
  }
  out.value = *v;
  return out;
}

struct FilterContext {
  bool grpc = false;
  bool backend = false;  // a backendRef's filters
};

void decodeFilters(Decoder& d, const json& obj, const std::string& opath, const ResourceKey& key,
                   FilterContext ctx, std::vector<RouteFilter>& out) {
  const json* fs = getList(d, obj, opath, "filters", kMaxFilters);
  if (!fs) return;
  const std::string fpath = childPath(opath, "filters");
  absl::flat_hash_map<std::string, std::string> once;  // type -> first path
  std::string redirect_path, rewrite_path;
  for (size_t i = 0; i < fs->size(); ++i) {
    const std::string path = indexPath(fpath, i);
    const json* f = d.object((*fs)[i], path);
    if (!f) continue;
    d.allowOnly(*f, path,
                {"type", "requestHeaderModifier", "responseHeaderModifier", "requestRedirect",
                 "urlRewrite", "requestMirror", "extensionRef", "cors"});
    auto type = d.getString(*f, path, "type", true);
    if (!type) continue;
    struct TypeInfo {
      absl::string_view type, field;
      RouteFilterType value;
      bool repeatable, http_only, backend_ok;
    };
    static constexpr TypeInfo kTypes[] = {
        {"RequestHeaderModifier", "requestHeaderModifier", RouteFilterType::kRequestHeaderModifier,
         false, false, true},
        {"ResponseHeaderModifier", "responseHeaderModifier",
         RouteFilterType::kResponseHeaderModifier, false, false, true},
        {"RequestRedirect", "requestRedirect", RouteFilterType::kRequestRedirect, false, true,
         false},
        {"URLRewrite", "urlRewrite", RouteFilterType::kUrlRewrite, false, true, false},
        {"RequestMirror", "requestMirror", RouteFilterType::kRequestMirror, true, false, false},
    };
    const TypeInfo* info = nullptr;
    for (const auto& t : kTypes) {
      if (t.type == *type) info = &t;
    }
    const std::string tpath = childPath(path, "type");
    if (*type == "ExtensionRef" || *type == "CORS" || *type == "ExternalAuth") {
      d.fail(tpath, absl::StrCat("filter type ", *type, " is not supported by meshd yet"));
      continue;
    }
    if (!info || (ctx.grpc && info->http_only)) {
      d.fail(tpath, absl::StrCat("unknown filter type \"", *type, "\" (use ",
                                 ctx.grpc ? "RequestHeaderModifier, ResponseHeaderModifier or "
                                            "RequestMirror"
                                          : "RequestHeaderModifier, ResponseHeaderModifier, "
                                            "RequestRedirect, URLRewrite or RequestMirror",
                                 ")"));
      continue;
    }
    if (ctx.backend && !info->backend_ok) {
      d.fail(tpath, absl::StrCat("filter type ", *type,
                                 " on a backendRef is not supported by meshd yet (put it on "
                                 "the rule)"));
      continue;
    }
    // Exactly the field the type names.
    for (absl::string_view field :
         {"requestHeaderModifier", "responseHeaderModifier", "requestRedirect", "urlRewrite",
          "requestMirror", "extensionRef", "cors"}) {
      if (field != info->field && f->contains(std::string(field))) {
        d.fail(childPath(path, field), absl::StrCat("not allowed with type ", *type), true);
      }
    }
    if (!info->repeatable) {
      auto [it, inserted] = once.emplace(*type, path);
      if (!inserted) {
        d.fail(tpath, absl::StrCat(*type, " filter cannot be repeated (also ", it->second, ")"));
      }
    }
    const json* body = d.getObject(*f, path, info->field, true);
    if (!body) continue;
    const std::string bpath = childPath(path, info->field);
    RouteFilter rf;
    rf.type = info->value;
    switch (info->value) {
      case RouteFilterType::kRequestHeaderModifier:
      case RouteFilterType::kResponseHeaderModifier:
        decodeHeaderModifier(d, *body, bpath, rf.headers);
        break;
      case RouteFilterType::kRequestRedirect: {
        redirect_path = path;
        d.allowOnly(*body, bpath, {"scheme", "hostname", "path", "port", "statusCode"});
        if (auto s = d.getString(*body, bpath, "scheme", false)) {
          if (*s != "http" && *s != "https") {
            d.fail(childPath(bpath, "scheme"),
                   absl::StrCat("unknown scheme \"", *s, "\" (use http or https)"));
          }
          rf.redirect.scheme = *s;
        }
        if (auto h = d.getString(*body, bpath, "hostname", false)) {
          if (!isRouteHostname(*h, false)) {
            d.fail(childPath(bpath, "hostname"),
                   absl::StrCat("\"", *h, "\" is not a valid hostname (lowercase DNS name)"));
          }
          rf.redirect.hostname = *h;
        }
        rf.redirect.path = decodePathModifier(d, *body, bpath);
        if (auto p = d.getInt(*body, bpath, "port", false, 1, 65535, "port")) {
          rf.redirect.port = static_cast<uint16_t>(*p);
        }
        if (const json* sc = d.get(*body, bpath, "statusCode", false)) {
          const std::string spath = childPath(bpath, "statusCode");
          if (auto v = d.integer(*sc, spath, 100, 599, "statusCode")) {
            if (*v != 301 && *v != 302 && *v != 303 && *v != 307 && *v != 308) {
              d.fail(spath, absl::StrCat("statusCode ", *v,
                                         " is not a redirect status (use 301, 302, 303, 307 or "
                                         "308)"));
            }
            rf.redirect.status_code = static_cast<int>(*v);
          }
        }
        break;
      }
      case RouteFilterType::kUrlRewrite:
        rewrite_path = path;
        d.allowOnly(*body, bpath, {"hostname", "path"});
        if (auto h = d.getString(*body, bpath, "hostname", false)) {
          if (!isRouteHostname(*h, false)) {
            d.fail(childPath(bpath, "hostname"),
                   absl::StrCat("\"", *h, "\" is not a valid hostname (lowercase DNS name)"));
          }
          rf.rewrite.hostname = *h;
        }
        rf.rewrite.path = decodePathModifier(d, *body, bpath);
        break;
      case RouteFilterType::kRequestMirror: {
        d.allowOnly(*body, bpath, {"backendRef", "percent", "fraction"});
        if (const json* b = d.getObject(*body, bpath, "backendRef", true)) {
          const std::string rpath = childPath(bpath, "backendRef");
          d.allowOnly(*b, rpath, {"group", "kind", "name", "namespace", "port"});
          decodeServicePortRef(d, *b, rpath, key, rf.mirror.backend);
        }
        const json* pct = d.get(*body, bpath, "percent", false);
        const json* frac = d.getObject(*body, bpath, "fraction", false);
        if (pct && frac) {
          d.fail(childPath(bpath, "fraction"), "only one of percent or fraction may be given");
        } else if (pct) {
          if (auto v = d.integer(*pct, childPath(bpath, "percent"), 0, 100, "percent")) {
            rf.mirror.numerator = static_cast<uint32_t>(*v);
            rf.mirror.denominator = 100;
          }
        } else if (frac) {
          const std::string xpath = childPath(bpath, "fraction");
          d.allowOnly(*frac, xpath, {"numerator", "denominator"});
          auto num = d.getInt(*frac, xpath, "numerator", true, 0, INT32_MAX, "numerator");
          auto den = d.getInt(*frac, xpath, "denominator", false, 1, INT32_MAX, "denominator");
          const int64_t denominator = den.value_or(100);
          if (num && *num > denominator) {
            d.fail(childPath(xpath, "numerator"),
                   absl::StrCat("numerator ", *num, " is greater than denominator ", denominator));
          } else if (num) {
            rf.mirror.numerator = static_cast<uint32_t>(*num);
            rf.mirror.denominator = static_cast<uint32_t>(denominator);
          }
        }
        break;
      }
    }
    out.push_back(std::move(rf));
  }
  if (!redirect_path.empty() && !rewrite_path.empty()) {
    d.fail(
        rewrite_path + ".type",
        absl::StrCat("URLRewrite cannot be combined with RequestRedirect (", redirect_path, ")"));
  }
}

void decodeBackendRefs(Decoder& d, const json& rule, const std::string& rpath,
                       const ResourceKey& key, bool grpc, std::vector<RouteBackendRef>& out) {
  const json* bs = getList(d, rule, rpath, "backendRefs", kMaxBackendRefs);
  if (!bs) return;
  const std::string bpath = childPath(rpath, "backendRefs");
  for (size_t i = 0; i < bs->size(); ++i) {
    const std::string path = indexPath(bpath, i);
    const json* b = d.object((*bs)[i], path);
    if (!b) continue;
    d.allowOnly(*b, path, {"group", "kind", "name", "namespace", "port", "weight", "filters"});
    RouteBackendRef ref;
    decodeServicePortRef(d, *b, path, key, ref.service);
    if (auto w = d.getInt(*b, path, "weight", false, 0, kMaxBackendWeight, "weight")) {
      ref.weight = static_cast<uint32_t>(*w);
    }
    decodeFilters(d, *b, path, key, FilterContext{grpc, true}, ref.filters);
    out.push_back(std::move(ref));
  }
}

// headers[] of an HTTPRoute or GRPCRoute match.
void decodeHeaderMatches(Decoder& d, const json& m, const std::string& mpath,
                         absl::string_view field, std::vector<ValueMatch>& out) {
  const json* hs = getList(d, m, mpath, field, kMaxHeaderMatches);
  if (!hs) return;
  const bool query = field == "queryParams";
  const std::string lpath = childPath(mpath, field);
  absl::flat_hash_map<std::string, std::string> seen;
  for (size_t i = 0; i < hs->size(); ++i) {
    const std::string path = indexPath(lpath, i);
    const json* h = d.object((*hs)[i], path);
    if (!h) continue;
    d.allowOnly(*h, path, {"type", "name", "value"});
    ValueMatch vm;
    if (auto t = d.getString(*h, path, "type", false)) {
      if (*t == "RegularExpression") {
        vm.type = ValueMatchType::kRegularExpression;
      } else if (*t != "Exact") {
        d.fail(childPath(path, "type"),
               absl::StrCat("unknown match type \"", *t, "\" (use Exact or RegularExpression)"));
      }
    }
    if (auto n = d.getString(*h, path, "name", true)) {
      vm.name = *n;
      if (!isHeaderName(*n)) {
        d.fail(childPath(path, "name"),
               absl::StrCat("\"", *n, "\" is not a valid ", query ? "query parameter" : "header",
                            " name"));
      } else {
        // Header names compare case-insensitively, query parameter names exactly.
        auto [it, inserted] = seen.emplace(query ? *n : absl::AsciiStrToLower(*n), path);
        if (!inserted) {
          d.fail(childPath(path, "name"), absl::StrCat("\"", *n, "\" is also matched at ",
                                                       it->second, " (one condition per name)"));
        }
      }
    }
    if (auto v = d.getString(*h, path, "value", true)) {
      vm.value = *v;
      const std::string vpath = childPath(path, "value");
      if (vm.type == ValueMatchType::kRegularExpression) {
        checkRegex(d, vpath, *v, query ? kMaxPathLength : kMaxHeaderValueLength);
      } else if (query ? (v->empty() || v->size() > kMaxPathLength) : !isHeaderValue(*v)) {
        d.fail(vpath, query ? "must be 1-1024 characters"
                            : "must be 1-4096 printable ASCII characters, with single spaces or "
                              "tabs between words");
      }
    }
    out.push_back(std::move(vm));
  }
}

// Rule names (Gateway API SectionName) and their uniqueness within a route.
void decodeRuleName(Decoder& d, const json& rule, const std::string& rpath,
                    absl::flat_hash_map<std::string, std::string>& names, std::string& out) {
  auto n = d.getString(rule, rpath, "name", false);
  if (!n) return;
  if (!isDns1123Subdomain(*n)) {
    d.fail(childPath(rpath, "name"), absl::StrCat("\"", *n, "\" is not a valid rule name"));
  }
  auto [it, inserted] = names.emplace(*n, rpath);
  if (!inserted) {
    d.fail(childPath(rpath, "name"),
           absl::StrCat("rule name \"", *n, "\" is also used by ", it->second));
  }
  out = *n;
}

// Routes order by metadata.creationTimestamp (the Gateway API's precedence), so it
// must be a time.
void checkCreationTimestamp(Decoder& d, const json& doc) {
  auto md = doc.find("metadata");
  if (md == doc.end() || !md->is_object()) return;
  auto ts = md->find("creationTimestamp");
  if (ts == md->end() || !ts->is_string()) return;
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, ts->get<std::string>(), &t, &err)) {
    d.fail("metadata.creationTimestamp",
           absl::StrCat("\"", ts->get<std::string>(),
                        "\" is not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z)"));
  }
}

HttpRouteSpec decodeHttpRoute(Decoder& d, const json& doc, const ResourceKey& key) {
  HttpRouteSpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", true);
  if (!spec) return out;
  d.allowOnly(*spec, "spec", {"parentRefs", "hostnames", "rules"});
  decodeParentRefs(d, *spec, key, out.parent_refs);
  decodeHostnames(d, *spec, out.hostnames);
  const json* rules = getList(d, *spec, "spec", "rules", kMaxRules);
  if (rules && rules->empty()) {
    d.fail("spec.rules", "must list at least one rule (omit the field for the default rule)");
  }
  size_t total_matches = 0;
  absl::flat_hash_map<std::string, std::string> names;
  for (size_t ri = 0; rules && ri < rules->size(); ++ri) {
    const std::string rpath = indexPath("spec.rules", ri);
    const json* rule = d.object((*rules)[ri], rpath);
    if (!rule) continue;
    d.allowOnly(*rule, rpath, {"name", "matches", "filters", "backendRefs", "timeouts"});
    HttpRouteRule r;
    decodeRuleName(d, *rule, rpath, names, r.name);
    const json* matches = getList(d, *rule, rpath, "matches", kMaxHttpMatchesPerRule);
    const std::string mspath = childPath(rpath, "matches");
    for (size_t mi = 0; matches && mi < matches->size(); ++mi) {
      const std::string mpath = indexPath(mspath, mi);
      const json* m = d.object((*matches)[mi], mpath);
      if (!m) continue;
      d.allowOnly(*m, mpath, {"path", "headers", "queryParams", "method"});
      HttpRouteMatch hm;
      if (const json* p = d.getObject(*m, mpath, "path", false)) {
        const std::string ppath = childPath(mpath, "path");
        d.allowOnly(*p, ppath, {"type", "value"});
        if (auto t = d.getString(*p, ppath, "type", false)) {
          if (*t == "Exact") {
            hm.path.type = PathMatchType::kExact;
          } else if (*t == "RegularExpression") {
            hm.path.type = PathMatchType::kRegularExpression;
          } else if (*t != "PathPrefix") {
            d.fail(childPath(ppath, "type"),
                   absl::StrCat("unknown path match type \"", *t,
                                "\" (use Exact, PathPrefix or RegularExpression)"));
          }
        }
        if (auto v = d.getString(*p, ppath, "value", false)) {
          hm.path.value = *v;
          const std::string vpath = childPath(ppath, "value");
          if (hm.path.type == PathMatchType::kRegularExpression) {
            checkRegex(d, vpath, *v);
          } else if (auto bad = checkPathValue(*v)) {
            d.fail(vpath, *bad);
          }
        }
      }
      decodeHeaderMatches(d, *m, mpath, "headers", hm.headers);
      decodeHeaderMatches(d, *m, mpath, "queryParams", hm.query_params);
      if (auto meth = d.getString(*m, mpath, "method", false)) {
        static constexpr absl::string_view kMethods[] = {
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
        if (std::find(std::begin(kMethods), std::end(kMethods), *meth) == std::end(kMethods)) {
          d.fail(childPath(mpath, "method"),
                 absl::StrCat("unknown method \"", *meth,
                              "\" (use GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or "
                              "PATCH)"));
        }
        hm.method = *meth;
      }
      r.matches.push_back(std::move(hm));
    }
    if (r.matches.empty()) r.matches.emplace_back();  // the CRD default: PathPrefix "/"
    total_matches += r.matches.size();
    decodeFilters(d, *rule, rpath, key, FilterContext{false, false}, r.filters);
    decodeBackendRefs(d, *rule, rpath, key, false, r.backend_refs);
    for (const RouteFilter& f : r.filters) {
      const std::optional<PathModifier>* pm = nullptr;
      if (f.type == RouteFilterType::kRequestRedirect) {
        pm = &f.redirect.path;
        if (!r.backend_refs.empty()) {
          d.fail(childPath(rpath, "backendRefs"),
                 "a rule with a RequestRedirect filter must not have backendRefs (the "
                 "redirect answers the request)");
        }
      } else if (f.type == RouteFilterType::kUrlRewrite) {
        pm = &f.rewrite.path;
      }
      if (pm && pm->has_value() && (*pm)->type == PathModifierType::kReplacePrefixMatch &&
          (r.matches.size() != 1 || r.matches[0].path.type != PathMatchType::kPathPrefix)) {
        d.fail(matches ? mspath : rpath,
               "ReplacePrefixMatch needs exactly one match, of path type PathPrefix");
      }
    }
    if (const json* t = d.getObject(*rule, rpath, "timeouts", false)) {
      const std::string tpath = childPath(rpath, "timeouts");
      d.allowOnly(*t, tpath, {"request", "backendRequest"});
      for (const char* field : {"request", "backendRequest"}) {
        auto v = d.getString(*t, tpath, field, false);
        if (!v) continue;
        auto ms = parseGatewayDuration(*v);
        if (!ms) {
          d.fail(childPath(tpath, field),
                 absl::StrCat("\"", *v,
                              "\" is not a Gateway API duration (1 to 4 parts of 1-5 digits "
                              "and a unit h, m, s or ms, e.g. \"10s\", \"1m30s\", \"500ms\")"));
          continue;
        }
        (std::string_view(field) == "request" ? r.timeouts.request_ms
                                              : r.timeouts.backend_request_ms) = *ms;
      }
      // The CRD's rule: a request timeout of 0s (disabled) allows any backendRequest.
      if (r.timeouts.request_ms && r.timeouts.backend_request_ms && *r.timeouts.request_ms != 0 &&
          *r.timeouts.backend_request_ms > *r.timeouts.request_ms) {
        d.fail(childPath(tpath, "backendRequest"),
               absl::StrCat("backendRequest ", formatDurationMs(*r.timeouts.backend_request_ms),
                            " cannot be longer than request ",
                            formatDurationMs(*r.timeouts.request_ms)));
      }
    }
    out.rules.push_back(std::move(r));
  }
  if (total_matches > kMaxMatchesPerRoute) {
    d.fail("spec.rules",
           absl::StrCat("at most ", kMaxMatchesPerRoute,
                        " matches are allowed across all rules, got ", total_matches));
  }
  if (!rules) out.rules.emplace_back().matches.emplace_back();  // the CRD default
  return out;
}

GrpcRouteSpec decodeGrpcRoute(Decoder& d, const json& doc, const ResourceKey& key) {
  GrpcRouteSpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", true);
  if (!spec) return out;
  d.allowOnly(*spec, "spec", {"parentRefs", "hostnames", "rules"});
  decodeParentRefs(d, *spec, key, out.parent_refs);
  decodeHostnames(d, *spec, out.hostnames);
  const json* rules = getList(d, *spec, "spec", "rules", kMaxRules);
  size_t total_matches = 0;
  absl::flat_hash_map<std::string, std::string> names;
  for (size_t ri = 0; rules && ri < rules->size(); ++ri) {
    const std::string rpath = indexPath("spec.rules", ri);
    const json* rule = d.object((*rules)[ri], rpath);
    if (!rule) continue;
    d.allowOnly(*rule, rpath, {"name", "matches", "filters", "backendRefs"});
    GrpcRouteRule r;
    decodeRuleName(d, *rule, rpath, names, r.name);
    const json* matches = getList(d, *rule, rpath, "matches", kMaxGrpcMatchesPerRule);
    const std::string mspath = childPath(rpath, "matches");
    for (size_t mi = 0; matches && mi < matches->size(); ++mi) {
      const std::string mpath = indexPath(mspath, mi);
      const json* m = d.object((*matches)[mi], mpath);
      if (!m) continue;
      d.allowOnly(*m, mpath, {"method", "headers"});
      GrpcRouteMatch gm;
      if (const json* mm = d.getObject(*m, mpath, "method", false)) {
        const std::string ppath = childPath(mpath, "method");
        d.allowOnly(*mm, ppath, {"type", "service", "method"});
        GrpcMethodMatch g;
        if (auto t = d.getString(*mm, ppath, "type", false)) {
          if (*t == "RegularExpression") {
            g.type = ValueMatchType::kRegularExpression;
          } else if (*t != "Exact") {
            d.fail(childPath(ppath, "type"), absl::StrCat("unknown method match type \"", *t,
                                                          "\" (use Exact or RegularExpression)"));
          }
        }
        auto svc = d.getString(*mm, ppath, "service", false);
        auto meth = d.getString(*mm, ppath, "method", false);
        if (svc) g.service = *svc;
        if (meth) g.method = *meth;
        if (g.service.empty() && g.method.empty()) {
          d.fail(ppath, "one or both of service and method must be given");
        }
        if (g.type == ValueMatchType::kRegularExpression) {
          if (!g.service.empty()) checkRegex(d, childPath(ppath, "service"), g.service);
          if (!g.method.empty()) checkRegex(d, childPath(ppath, "method"), g.method);
        } else {
          // Function-local statics (compiled once, thread-safe), not LazyRE2: its aggregate
          // initialization trips clang's -Wmissing-field-initializers (the fuzz build).
          static const RE2 kService(R"re((?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*)re");
          static const RE2 kMethod(R"re([A-Za-z_][A-Za-z_0-9]*)re");
          if (!g.service.empty() &&
              (g.service.size() > kMaxPathLength || !RE2::FullMatch(g.service, kService))) {
            d.fail(childPath(ppath, "service"),
                   absl::StrCat("\"", g.service,
                                "\" is not a gRPC service name (dot-separated identifiers, "
                                "e.g. helloworld.Greeter)"));
          }
          if (!g.method.empty() &&
              (g.method.size() > kMaxPathLength || !RE2::FullMatch(g.method, kMethod))) {
            d.fail(childPath(ppath, "method"),
                   absl::StrCat("\"", g.method, "\" is not a gRPC method name (an identifier)"));
          }
        }
        gm.method = std::move(g);
      }
      decodeHeaderMatches(d, *m, mpath, "headers", gm.headers);
      r.matches.push_back(std::move(gm));
    }
    total_matches += r.matches.size();
    decodeFilters(d, *rule, rpath, key, FilterContext{true, false}, r.filters);
    decodeBackendRefs(d, *rule, rpath, key, true, r.backend_refs);
    out.rules.push_back(std::move(r));
  }
  if (total_matches > kMaxMatchesPerRoute) {
    d.fail("spec.rules",
           absl::StrCat("at most ", kMaxMatchesPerRoute,
                        " matches are allowed across all rules, got ", total_matches));
  }
  if (!rules) out.rules.emplace_back();  // one rule matching every gRPC request
  return out;
}

// --- Identity and policy kinds ------------------------------------------------

// Bounds that catch typos rather than limit real use.
constexpr size_t kMaxPolicyRules = 256;
constexpr size_t kMaxPolicyValues = 1024;  // entries of one principals/paths/... list
constexpr int64_t kMaxRequestsPerUnit = 1'000'000'000;

// The selector of a PeerAuthentication or AuthorizationPolicy: {matchLabels: {k: v}}.
// Absent, or no labels: nullopt (the namespace; the mesh in the root namespace).
std::optional<Labels> decodeSelector(Decoder& d, const json& spec) {
  const json* sel = d.getObject(spec, "spec", "selector", false);
  if (!sel) return std::nullopt;
  d.allowOnly(*sel, "spec.selector", {"matchLabels"});
  const json* ml = d.getObject(*sel, "spec.selector", "matchLabels", false);
  if (!ml) return std::nullopt;
  d.stringMap(*sel, "spec.selector", "matchLabels");
  Labels out;
  for (const auto& [k, v] : ml->items()) {
    if (v.is_string()) out.emplace_back(k, v.get<std::string>());
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) return std::nullopt;
  return out;
}

// metadata.labels, sorted (decodeMetadata reported non-string values).
Labels metadataLabels(const json& doc) {
  Labels out;
  auto md = doc.find("metadata");
  if (md == doc.end() || !md->is_object()) return out;
  auto labels = md->find("labels");
  if (labels == md->end() || !labels->is_object()) return out;
  for (const auto& [k, v] : labels->items()) {
    if (v.is_string()) out.emplace_back(k, v.get<std::string>());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// An absolute file system path ("/sys/fs/cgroup/...", "/var/run/netns/x").
void absolutePath(Decoder& d, const json& spec, absl::string_view field, std::string& out) {
  auto v = d.getString(spec, "spec", field, false);
  if (!v) return;
  if (v->empty() || (*v)[0] != '/' || v->find('\0') != std::string::npos) {
    d.fail(childPath("spec", field), absl::StrCat("\"", *v, "\" is not an absolute path"));
    return;
  }
  out = *v;
}

// Kubernetes' Node (cluster-scoped): metadata.name and status.addresses only.
NodeSpec decodeNode(Decoder& d, const json& doc) {
  NodeSpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "status"});
  if (auto md = doc.find("metadata");
      md != doc.end() && md->is_object() && md->contains("namespace")) {
    d.fail("metadata.namespace", "a Node is cluster-scoped: remove metadata.namespace");
  }
  const json* status = d.getObject(doc, "", "status", true);
  if (!status) return out;
  d.allowOnly(*status, "status", {"addresses"});
  const json* as = d.getArray(*status, "status", "addresses", true);
  if (!as) return out;
  if (as->empty()) d.fail("status.addresses", "must list at least one address");
  for (size_t i = 0; i < as->size(); ++i) {
    const std::string path = indexPath("status.addresses", i);
    const json& a = (*as)[i];
    if (!a.is_object()) {
      d.fail(path, absl::StrCat("must be a mapping {type, address}, got ", describe(a)));
      continue;
    }
    d.allowOnly(a, path, {"type", "address"});
    auto type = d.getString(a, path, "type", true);
    auto text = d.getString(a, path, "address", true);
    if (!type || !text) continue;
    NodeAddress na;
    if (*type == "InternalIP") {
      na.type = NodeAddress::Type::kInternalIp;
    } else if (*type == "ExternalIP") {
      na.type = NodeAddress::Type::kExternalIp;
    } else if (*type == "Hostname") {
      na.type = NodeAddress::Type::kHostname;
    } else {
      d.fail(childPath(path, "type"), absl::StrCat("unknown address type \"", *type,
                                                   "\" (use InternalIP, ExternalIP or Hostname)"));
      continue;
    }
    if (na.type == NodeAddress::Type::kHostname) {
      if (!isDns1123Subdomain(*text)) {
        d.fail(childPath(path, "address"), absl::StrCat("\"", *text, "\" is not a valid hostname"));
        continue;
      }
    } else {
      auto ip = IpAddress::parse(*text);
      if (!ip.ok()) {
        d.fail(childPath(path, "address"), std::string(ip.status().message()));
        continue;
      }
      if (na.type == NodeAddress::Type::kInternalIp && !out.internal_ip) out.internal_ip = *ip;
    }
    na.address = *text;
    out.addresses.push_back(std::move(na));
  }
  return out;
}

WorkloadSpec decodeWorkload(Decoder& d, const json& doc) {
  WorkloadSpec out;
  out.labels = metadataLabels(doc);
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", true);
  if (!spec) return out;
  d.allowOnly(*spec, "spec", {"serviceAccount", "addresses", "node", "cgroup", "netns"});
  if (auto sa = d.getString(*spec, "spec", "serviceAccount", false)) {
    if (!isDns1123Subdomain(*sa)) {
      d.fail("spec.serviceAccount",
             absl::StrCat("\"", *sa,
                          "\" is not a valid service account name (DNS-1123 subdomain: "
                          "lowercase letters, digits, '-' and '.')"));
    } else {
      out.service_account = *sa;
    }
  }
  if (const json* as = d.getArray(*spec, "spec", "addresses", true)) {
    if (as->empty()) d.fail("spec.addresses", "must list at least one address");
    absl::flat_hash_map<IpAddress, std::string> seen;
    for (size_t i = 0; i < as->size(); ++i) {
      const std::string path = indexPath("spec.addresses", i);
      auto ip = address(d, (*as)[i], path);
      if (!ip) continue;
      auto [it, inserted] = seen.emplace(*ip, path);
      if (!inserted) {
        d.fail(path, absl::StrCat(ip->toString(), " is listed twice (also ", it->second, ")"));
        continue;
      }
      out.addresses.push_back(*ip);
    }
  }
  if (auto node = d.getString(*spec, "spec", "node", true)) {
    if (node->empty()) {
      d.fail("spec.node", "must not be empty (the name of the node the workload runs on)");
    } else if (!isDns1123Subdomain(*node)) {
      d.fail("spec.node", absl::StrCat("\"", *node, "\" is not a valid node name"));
    }
    out.node = *node;
  }
  absolutePath(d, *spec, "cgroup", out.cgroup);
  absolutePath(d, *spec, "netns", out.netns);
  return out;
}

std::optional<MtlsMode> mtlsMode(Decoder& d, const json& obj, const std::string& path) {
  auto m = d.getString(obj, path, "mode", false);
  if (!m) return MtlsMode::kUnset;
  for (MtlsMode mode :
       {MtlsMode::kUnset, MtlsMode::kDisable, MtlsMode::kPermissive, MtlsMode::kStrict}) {
    if (*m == mtlsModeName(mode)) return mode;
  }
  d.fail(childPath(path, "mode"),
         absl::StrCat("unknown mode \"", *m, "\" (use DISABLE, PERMISSIVE, STRICT or UNSET)"));
  return std::nullopt;
}

PeerAuthenticationSpec decodePeerAuthentication(Decoder& d, const json& doc) {
  PeerAuthenticationSpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", false);
  if (!spec) return out;  // Istio: an empty PeerAuthentication is UNSET (inherits)
  d.allowOnly(*spec, "spec", {"selector", "mtls", "portLevelMtls"});
  out.selector = decodeSelector(d, *spec);
  if (const json* m = d.getObject(*spec, "spec", "mtls", false)) {
    d.allowOnly(*m, "spec.mtls", {"mode"});
    if (auto mode = mtlsMode(d, *m, "spec.mtls")) out.mode = *mode;
  }
  if (const json* pl = d.getObject(*spec, "spec", "portLevelMtls", false)) {
    if (!out.selector && !pl->empty()) {
      d.fail("spec.portLevelMtls",
             "needs spec.selector.matchLabels: a namespace- or mesh-wide PeerAuthentication "
             "cannot set port-level mTLS (as in Istio)");
    }
    for (const auto& [k, v] : pl->items()) {
      const std::string path = childPath("spec.portLevelMtls", k);
      uint32_t port = 0;
      if (!absl::SimpleAtoi(k, &port) || port == 0 || port > 65535 ||
          k.find_first_not_of("0123456789") != std::string::npos) {
        d.fail(path, absl::StrCat("\"", k, "\" is not a port number (1-65535)"), true);
        continue;
      }
      const json* o = d.object(v, path);
      if (!o) continue;
      d.allowOnly(*o, path, {"mode"});
      if (auto mode = mtlsMode(d, *o, path)) {
        out.port_level.emplace_back(static_cast<uint16_t>(port), *mode);
      }
    }
    std::sort(out.port_level.begin(), out.port_level.end());
  }
  return out;
}

// An Istio string pattern: exact, "prefix*", "*suffix" or "*"; '*' nowhere else.
bool isIstioPattern(absl::string_view s) {
  if (s.empty()) return false;
  const size_t star = s.find('*');
  if (star == absl::string_view::npos) return true;
  if (s == "*") return true;
  if (s.find('*', star + 1) != absl::string_view::npos) return false;
  return star == 0 || star == s.size() - 1;
}

// A list of Istio string patterns.
std::vector<std::string> patternList(Decoder& d, const json& obj, const std::string& path,
                                     absl::string_view field) {
  std::vector<std::string> out;
  const json* a = getList(d, obj, path, field, kMaxPolicyValues);
  if (!a) return out;
  const std::string lpath = childPath(path, field);
  if (a->empty()) d.fail(lpath, "must not be empty (remove the field to match anything)");
  for (size_t i = 0; i < a->size(); ++i) {
    const std::string ipath = indexPath(lpath, i);
    auto s = d.string((*a)[i], ipath);
    if (!s) continue;
    if (!isIstioPattern(*s)) {
      d.fail(ipath, absl::StrCat("\"", *s,
                                 "\" is not a valid value (non-empty; '*' only alone, as a "
                                 "prefix \"*abc\" or as a suffix \"abc*\")"));
      continue;
    }
    out.push_back(*s);
  }
  return out;
}

std::vector<IpBlock> ipBlockList(Decoder& d, const json& obj, const std::string& path,
                                 absl::string_view field) {
  std::vector<IpBlock> out;
  const json* a = getList(d, obj, path, field, kMaxPolicyValues);
  if (!a) return out;
  const std::string lpath = childPath(path, field);
  if (a->empty()) d.fail(lpath, "must not be empty (remove the field to match anything)");
  for (size_t i = 0; i < a->size(); ++i) {
    const std::string ipath = indexPath(lpath, i);
    auto s = d.string((*a)[i], ipath);
    if (!s) continue;
    auto b = IpBlock::parse(*s);
    if (!b.ok()) {
      d.fail(ipath, std::string(b.status().message()));
      continue;
    }
    out.push_back(*b);
  }
  return out;
}

// A port as Istio writes it (a string "8080") or an integer.
std::optional<uint16_t> policyPort(Decoder& d, const json& v, const std::string& path) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    uint32_t port = 0;
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos ||
        !absl::SimpleAtoi(s, &port) || port == 0 || port > 65535) {
      d.fail(path, absl::StrCat("\"", s, "\" is not a port number (1-65535)"));
      return std::nullopt;
    }
    return static_cast<uint16_t>(port);
  }
  auto p = d.integer(v, path, 1, 65535, "port");
  if (!p) return std::nullopt;
  return static_cast<uint16_t>(*p);
}

std::vector<uint16_t> portList(Decoder& d, const json& obj, const std::string& path,
                               absl::string_view field) {
  std::vector<uint16_t> out;
  const json* a = getList(d, obj, path, field, kMaxPolicyValues);
  if (!a) return out;
  const std::string lpath = childPath(path, field);
  if (a->empty()) d.fail(lpath, "must not be empty (remove the field to match anything)");
  for (size_t i = 0; i < a->size(); ++i) {
    if (auto p = policyPort(d, (*a)[i], indexPath(lpath, i))) out.push_back(*p);
  }
  return out;
}

void decodeAuthzSource(Decoder& d, const json& src, const std::string& path, AuthzSource& out) {
  json known = src;  // JWT fields get their own message, not "unknown field"
  for (const char* f : {"requestPrincipals", "notRequestPrincipals"}) {
    if (known.erase(f) != 0) {
      d.fail(childPath(path, f), "is not supported (meshd has no JWT request authentication)",
             true);
    }
  }
  d.allowOnly(
      known, path,
      {"principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks"});
  out.principals = patternList(d, src, path, "principals");
  out.not_principals = patternList(d, src, path, "notPrincipals");
  out.namespaces = patternList(d, src, path, "namespaces");
  out.not_namespaces = patternList(d, src, path, "notNamespaces");
  out.ip_blocks = ipBlockList(d, src, path, "ipBlocks");
  out.not_ip_blocks = ipBlockList(d, src, path, "notIpBlocks");
  if (src.empty()) d.fail(path, "must set at least one field (as in Istio)");
}

void decodeAuthzOperation(Decoder& d, const json& op, const std::string& path,
                          AuthzOperation& out) {
  d.allowOnly(
      op, path,
      {"ports", "notPorts", "methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"});
  out.ports = portList(d, op, path, "ports");
  out.not_ports = portList(d, op, path, "notPorts");
  out.methods = patternList(d, op, path, "methods");
  out.not_methods = patternList(d, op, path, "notMethods");
  out.paths = patternList(d, op, path, "paths");
  out.not_paths = patternList(d, op, path, "notPaths");
  for (const auto* list : {&out.paths, &out.not_paths}) {
    for (const std::string& p : *list) {
      if (p.find('{') != std::string::npos) {
        d.fail(childPath(path, list == &out.paths ? "paths" : "notPaths"),
               absl::StrCat("\"", p, "\": path templates ({*}, {**}) are not supported"));
      }
    }
  }
  out.hosts = patternList(d, op, path, "hosts");
  out.not_hosts = patternList(d, op, path, "notHosts");
  for (auto* list : {&out.hosts, &out.not_hosts}) {
    for (std::string& h : *list) absl::AsciiStrToLower(&h);
  }
  if (op.empty()) d.fail(path, "must set at least one field (as in Istio)");
}

void decodeAuthzCondition(Decoder& d, const json& c, const std::string& path, AuthzCondition& out) {
  d.allowOnly(c, path, {"key", "values", "notValues"});
  if (!c.contains("values") && !c.contains("notValues")) {
    d.fail(path, "needs values or notValues");
  }
  auto key = d.getString(c, path, "key", true);
  const std::string kpath = childPath(path, "key");
  // The values by the key's type: addresses, ports, or string patterns.
  if (key && *key == "source.ip") {
    out.key = AuthzConditionKey::kSourceIp;
    out.ip_values = ipBlockList(d, c, path, "values");
    out.not_ip_values = ipBlockList(d, c, path, "notValues");
    return;
  }
  if (key && *key == "destination.port") {
    out.key = AuthzConditionKey::kDestinationPort;
    out.port_values = portList(d, c, path, "values");
    out.not_port_values = portList(d, c, path, "notValues");
    return;
  }
  out.values = patternList(d, c, path, "values");
  out.not_values = patternList(d, c, path, "notValues");
  if (!key) return;
  if (absl::StartsWith(*key, "request.headers[") && absl::EndsWith(*key, "]")) {
    out.key = AuthzConditionKey::kRequestHeader;
    out.header = key->substr(16, key->size() - 17);
    if (out.header.empty() || !isHeaderName(out.header)) {
      d.fail(kpath, absl::StrCat("\"", *key, "\": \"", out.header, "\" is not a header name"));
    }
    absl::AsciiStrToLower(&out.header);
  } else if (*key == "source.namespace") {
    out.key = AuthzConditionKey::kSourceNamespace;
  } else if (*key == "source.principal") {
    out.key = AuthzConditionKey::kSourcePrincipal;
  } else {
    d.fail(kpath, absl::StrCat("key \"", *key,
                               "\" is not supported (meshd supports request.headers[<name>], "
                               "source.namespace, source.principal, source.ip and "
                               "destination.port)"));
  }
}

AuthorizationPolicySpec decodeAuthorizationPolicy(Decoder& d, const json& doc) {
  AuthorizationPolicySpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", false);
  if (!spec) return out;  // Istio: `spec: {}` (or none) allows nothing
  json known = *spec;
  if (known.erase("provider") != 0) {
    d.fail("spec.provider", "is not supported (CUSTOM authorization is not supported by meshd)",
           true);
  }
  d.allowOnly(known, "spec", {"selector", "action", "rules"});
  out.selector = decodeSelector(d, *spec);
  if (auto a = d.getString(*spec, "spec", "action", false)) {
    if (*a == "ALLOW") {
      out.action = AuthzAction::kAllow;
    } else if (*a == "DENY") {
      out.action = AuthzAction::kDeny;
    } else if (*a == "CUSTOM" || *a == "AUDIT") {
      d.fail("spec.action",
             absl::StrCat("action ", *a, " is not supported by meshd (use ALLOW or DENY)"));
    } else {
      d.fail("spec.action", absl::StrCat("unknown action \"", *a, "\" (use ALLOW or DENY)"));
    }
  }
  const json* rules = getList(d, *spec, "spec", "rules", kMaxPolicyRules);
  if (!rules) return out;
  for (size_t i = 0; i < rules->size(); ++i) {
    const std::string rpath = indexPath("spec.rules", i);
    const json* r = d.object((*rules)[i], rpath);
    if (!r) continue;
    d.allowOnly(*r, rpath, {"from", "to", "when"});
    AuthzRule rule;
    // from[] and to[]: lists of one-key wrappers ({source: ...}, {operation: ...}).
    auto wrapped = [&](const char* list, const char* key, const char* if_empty, auto&& decode) {
      const json* items = getList(d, *r, rpath, list, kMaxPolicyRules);
      if (!items) return;
      const std::string lpath = childPath(rpath, list);
      if (items->empty()) d.fail(lpath, if_empty);
      for (size_t j = 0; j < items->size(); ++j) {
        const std::string epath = indexPath(lpath, j);
        const json* e = d.object((*items)[j], epath);
        if (!e) continue;
        d.allowOnly(*e, epath, {key});
        if (const json* v = d.getObject(*e, epath, key, true)) decode(*v, childPath(epath, key));
      }
    };
    wrapped("from", "source", "must not be empty (remove it to match any source)",
            [&](const json& v, const std::string& path) {
              decodeAuthzSource(d, v, path, rule.from.emplace_back());
            });
    wrapped("to", "operation", "must not be empty (remove it to match any operation)",
            [&](const json& v, const std::string& path) {
              decodeAuthzOperation(d, v, path, rule.to.emplace_back());
            });
    if (const json* when = getList(d, *r, rpath, "when", kMaxPolicyRules)) {
      const std::string wpath = childPath(rpath, "when");
      if (when->empty()) d.fail(wpath, "must not be empty (remove it to match anything)");
      for (size_t j = 0; j < when->size(); ++j) {
        const std::string epath = indexPath(wpath, j);
        const json* e = d.object((*when)[j], epath);
        if (!e) continue;
        decodeAuthzCondition(d, *e, epath, rule.when.emplace_back());
      }
    }
    out.rules.push_back(std::move(rule));
  }
  return out;
}

// {requestsPerUnit, unit, burst}; burst defaults to requestsPerUnit.
RequestRate requestRate(Decoder& d, const json& obj, const std::string& path,
                        absl::string_view field) {
  RequestRate out;
  const json* r = d.getObject(obj, path, field, false);
  if (!r) return out;
  const std::string rpath = childPath(path, field);
  d.allowOnly(*r, rpath, {"requestsPerUnit", "unit", "burst"});
  if (auto v =
          d.getInt(*r, rpath, "requestsPerUnit", true, 1, kMaxRequestsPerUnit, "requestsPerUnit")) {
    out.requests_per_unit = static_cast<uint32_t>(*v);
  }
  if (auto u = d.getString(*r, rpath, "unit", false)) {
    if (*u == "second") {
      out.unit = RateUnit::kSecond;
    } else if (*u == "minute") {
      out.unit = RateUnit::kMinute;
    } else if (*u == "hour") {
      out.unit = RateUnit::kHour;
    } else {
      d.fail(childPath(rpath, "unit"),
             absl::StrCat("unknown unit \"", *u, "\" (use second, minute or hour)"));
    }
  }
  if (auto v = d.getInt(*r, rpath, "burst", false, 1, kMaxRequestsPerUnit, "burst")) {
    out.burst = static_cast<uint32_t>(*v);
  } else {
    out.burst = out.requests_per_unit;
  }
  return out;
}

// spec.targetRef of a policy bound to a Service of its namespace.
void serviceTargetRef(Decoder& d, const json& spec, absl::string_view kind, std::string& out) {
  const json* t = d.getObject(spec, "spec", "targetRef", true);
  if (!t) return;
  const std::string tpath = "spec.targetRef";
  d.allowOnly(*t, tpath, {"group", "kind", "name"});
  if (auto g = d.getString(*t, tpath, "group", false); g && !g->empty()) {
    d.fail(childPath(tpath, "group"),
           absl::StrCat("group \"", *g, "\" is not supported (use \"\" for core Services)"));
  }
  if (auto k = d.getString(*t, tpath, "kind", true); k && *k != kKindService) {
    d.fail(childPath(tpath, "kind"),
           absl::StrCat("kind \"", *k, "\" is not supported (a ", kind, " targets a Service)"));
  }
  if (auto n = d.getString(*t, tpath, "name", true)) {
    out = *n;
    if (!isDns1123Label(*n)) {
      d.fail(childPath(tpath, "name"), absl::StrCat("\"", *n, "\" is not a valid Service name"));
    }
  }
}

RateLimitPolicySpec decodeRateLimitPolicy(Decoder& d, const json& doc) {
  RateLimitPolicySpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", true);
  if (!spec) return out;
  d.allowOnly(*spec, "spec", {"targetRef", "requests", "perClient", "routes", "connections"});
  serviceTargetRef(d, *spec, kKindRateLimitPolicy, out.target_service);
  out.requests = requestRate(d, *spec, "spec", "requests");
  out.per_client = requestRate(d, *spec, "spec", "perClient");
  if (const json* routes = getList(d, *spec, "spec", "routes", kMaxPolicyRules)) {
    for (size_t i = 0; i < routes->size(); ++i) {
      const std::string rpath = indexPath("spec.routes", i);
      const json* r = d.object((*routes)[i], rpath);
      if (!r) continue;
      d.allowOnly(*r, rpath, {"match", "requests", "perClient"});
      RateLimitRoute route;
      if (const json* m = d.getObject(*r, rpath, "match", true)) {
        const std::string mpath = childPath(rpath, "match");
        d.allowOnly(*m, mpath, {"httpRoute", "pathPrefix"});
        if (auto n = d.getString(*m, mpath, "httpRoute", false)) {
          if (!isDns1123Subdomain(*n)) {
            d.fail(childPath(mpath, "httpRoute"),
                   absl::StrCat("\"", *n, "\" is not a valid route name"));
          }
          route.http_route = *n;
        }
        if (auto p = d.getString(*m, mpath, "pathPrefix", false)) {
          if (p->empty() || (*p)[0] != '/') {
            d.fail(childPath(mpath, "pathPrefix"),
                   absl::StrCat("\"", *p, "\" must start with '/'"));
          }
          route.path_prefix = *p;
        }
        if (route.http_route.empty() && route.path_prefix.empty()) {
          d.fail(mpath, "needs httpRoute and/or pathPrefix");
        }
      }
      route.requests = requestRate(d, *r, rpath, "requests");
      route.per_client = requestRate(d, *r, rpath, "perClient");
      if (!r->contains("requests") && !r->contains("perClient")) {
        d.fail(rpath, "needs requests and/or perClient");
      }
      out.routes.push_back(std::move(route));
    }
  }
  if (const json* c = d.getObject(*spec, "spec", "connections", false)) {
    d.allowOnly(*c, "spec.connections", {"connectRate", "connectRatePerClient"});
    out.connect_rate = connectRate(d, *c, "spec.connections", "connectRate");
    out.client_connect_rate = connectRate(d, *c, "spec.connections", "connectRatePerClient");
  }
  if (!spec->contains("requests") && !spec->contains("perClient") && !spec->contains("routes") &&
      !spec->contains("connections")) {
    d.fail("spec", "limits nothing: set requests, perClient, routes or connections");
  }
  return out;
}

ResourceKey bestEffortKey(const json& doc) {
  ResourceKey key{"?", kDefaultNamespace, "?"};
  if (!doc.is_object()) return key;
  if (auto it = doc.find("kind"); it != doc.end() && it->is_string()) key.kind = *it;
  if (auto md = doc.find("metadata"); md != doc.end() && md->is_object()) {
    if (auto n = md->find("name"); n != md->end() && n->is_string()) key.name = *n;
    if (auto n = md->find("namespace"); n != md->end() && n->is_string()) key.ns = *n;
  }
  return key;
}

}  // namespace

Decoded decodeDocument(const json& doc) {
  Decoded out;
  Decoder d;
  out.key = bestEffortKey(doc);
  if (!doc.is_object()) {
    d.fail("", absl::StrCat("a resource must be a mapping with apiVersion, kind and metadata, got ",
                            describe(doc)));
    out.problems = std::move(d.problems());
    return out;
  }
  auto api = d.getString(doc, "", "apiVersion", true);
  auto kind = d.getString(doc, "", "kind", true);
  const KindInfo* info = nullptr;
  if (kind) {
    for (const auto& k : kKinds) {
      if (k.kind == *kind) info = &k;
    }
    if (!info) {
      d.fail("kind", absl::StrCat("unknown kind \"", *kind,
                                  "\" (meshd knows Service (v1), EndpointSlice "
                                  "(discovery.k8s.io/v1), TrafficPolicy (meshd.io/v1alpha1), "
                                  "HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1), "
                                  "Workload, PeerAuthentication, AuthorizationPolicy and "
                                  "RateLimitPolicy (meshd.io/v1alpha1), Node (v1))"));
    }
  }
  if (api && info && *api != info->api_version &&
      (info->older_api_version.empty() || *api != info->older_api_version)) {
    d.fail("apiVersion", absl::StrCat("unknown apiVersion \"", *api, "\" for ", info->kind,
                                      " (use ", info->api_version, ")"));
  }
  if (info) {
    decodeMetadata(d, doc, info->kind, out.key);
    if (info->kind == kKindService) {
      out.spec = decodeService(d, doc);
    } else if (info->kind == kKindEndpointSlice) {
      out.spec = decodeEndpointSlice(d, doc);
    } else if (info->kind == kKindHttpRoute) {
      checkCreationTimestamp(d, doc);
      out.spec = decodeHttpRoute(d, doc, out.key);
    } else if (info->kind == kKindGrpcRoute) {
      checkCreationTimestamp(d, doc);
      out.spec = decodeGrpcRoute(d, doc, out.key);
    } else if (info->kind == kKindWorkload) {
      out.spec = decodeWorkload(d, doc);
    } else if (info->kind == kKindNode) {
      out.spec = decodeNode(d, doc);
    } else if (info->kind == kKindPeerAuthentication) {
      out.spec = decodePeerAuthentication(d, doc);
    } else if (info->kind == kKindAuthorizationPolicy) {
      out.spec = decodeAuthorizationPolicy(d, doc);
    } else if (info->kind == kKindRateLimitPolicy) {
      out.spec = decodeRateLimitPolicy(d, doc);
    } else {
      out.spec = decodeTrafficPolicy(d, doc);
    }
  }
  out.problems = std::move(d.problems());
  return out;
}

std::string formatProblem(const ResourceKey& key, const std::string& source,
                          const SourcePositions* positions, int doc_line, const Problem& p) {
  std::string file = source == "-" ? "<stdin>" : source;
  std::string loc;
  TextPos pos = p.pos;
  if (pos.line == 0 && positions) {
    if (auto found = positions->find(p.path, p.at_key)) pos = *found;
  }
  if (!file.empty()) {
    if (pos.line != 0) {
      loc = absl::StrCat(file, ":", pos.line, ":", pos.column, ": ");
    } else if (doc_line != 0) {
      loc = absl::StrCat(file, ":", doc_line, ": ");
    } else {
      loc = absl::StrCat(file, ": ");
    }
  }
  // One problem, one line: keys and values quoted in the path or the reason can
  // hold control characters.
  return escapeControl(absl::StrCat(loc, key.toString(), ": ", p.path.empty() ? "" : p.path,
                                    p.path.empty() ? "" : ": ", p.reason));
}

std::string escapeControl(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace meshd::resources
