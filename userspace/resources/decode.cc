#include "resources/decode.h"

#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mesh_abi.h"

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
};
const KindInfo kKinds[] = {
    {kKindService, "v1"},
    {kKindEndpointSlice, "discovery.k8s.io/v1"},
    {kKindTrafficPolicy, "meshd.io/v1alpha1"},
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
void decodeOutlierDetection(Decoder& d, const json& od, state::OutlierDetection& out) {
  const std::string opath = "spec.outlierDetection";
  d.allowOnly(od, opath,
              {"enabled", "consecutiveFailures", "baseEjectionTime", "maxEjectionTime",
               "maxEjectionPercent"});
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
  if (enabled.has_value() && !*enabled) out.consecutive_failures = 0;
}

TrafficPolicySpec decodeTrafficPolicy(Decoder& d, const json& doc) {
  TrafficPolicySpec out;
  d.allowOnly(doc, "", {"apiVersion", "kind", "metadata", "spec"});
  const json* spec = d.getObject(doc, "", "spec", true);
  if (!spec) return out;
  d.allowOnly(*spec, "spec",
              {"targetRef", "loadBalancer", "connectionLimits", "outlierDetection", "draining"});
  if (const json* od = d.getObject(*spec, "spec", "outlierDetection", false)) {
    decodeOutlierDetection(d, *od, out.outlier);
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
                                  "(discovery.k8s.io/v1) and TrafficPolicy (meshd.io/v1alpha1))"));
    }
  }
  if (api && info && *api != info->api_version) {
    d.fail("apiVersion", absl::StrCat("unknown apiVersion \"", *api, "\" for ", info->kind,
                                      " (use ", info->api_version, ")"));
  }
  if (info) {
    decodeMetadata(d, doc, info->kind, out.key);
    if (info->kind == kKindService) {
      out.spec = decodeService(d, doc);
    } else if (info->kind == kKindEndpointSlice) {
      out.spec = decodeEndpointSlice(d, doc);
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
