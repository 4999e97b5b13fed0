#include "cli/render.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "yaml-cpp/yaml.h"

namespace meshd::cli {
namespace {

struct Column {
  const char* header;
  const char* key;
};

// The fixed layouts. Keys are the JSON fields userspace/api/views.cc writes.
const std::vector<Column>* columnsFor(std::string_view view) {
  static const std::vector<Column> kServices = {
      {"NAMESPACE", "namespace"},
      {"NAME", "name"},
      {"VIP", "vip"},
      {"PORT", "port"},
      {"PROTOCOL", "protocol"},
      {"ALGORITHM", "algorithm"},
      {"BACKENDS", "backends"},
      {"LIVE", "liveConnections"},
      {"MAX-CONN", "maxConnections"},
      {"MAX-PER-BACKEND", "maxConnectionsPerBackend"},
  };
  static const std::vector<Column> kBackends = {
      {"NAMESPACE", "namespace"},
      {"SERVICE", "service"},
      {"FRONTEND", "frontend"},
      {"BACKEND", "backend"},
      {"WEIGHT", "weight"},
      {"LIVE", "liveConnections"},
      {"LIMIT", "limit"},
      {"TOTAL", "totalConnections"},
      {"FAILED", "connectFailures"},
      {"CONSEC-FAIL", "consecutiveFailures"},
      {"EJECTED-FOR", "ejectedFor"},
      {"SRTT", "srtt"},
      {"NODE", "node"},
      {"TARGET", "target"},
  };
  static const std::vector<Column> kPolicies = {
      {"NAMESPACE", "namespace"},
      {"NAME", "name"},
      {"TARGET", "target"},
      {"ALGORITHM", "algorithm"},
      {"MAGLEV-SIZE", "maglevTableSize"},
      {"WEIGHTS", "weights"},
  };
  static const std::vector<Column> kEndpointSlices = {
      {"NAMESPACE", "namespace"},     {"NAME", "name"},   {"SERVICE", "service"},
      {"ADDRESSTYPE", "addressType"}, {"PORTS", "ports"}, {"READY", "ready"},
      {"ENDPOINTS", "endpoints"},
  };
  static const std::vector<Column> kResources = {
      {"KIND", "kind"},
      {"NAMESPACE", "namespace"},
      {"NAME", "name"},
      {"SOURCE", "source"},
  };
  if (view == "services") return &kServices;
  if (view == "backends") return &kBackends;
  if (view == "policies") return &kPolicies;
  if (view == "endpointslices") return &kEndpointSlices;
  if (view == "resources") return &kResources;
  return nullptr;
}

void emitYaml(YAML::Emitter& out, const Json& v) {
  switch (v.type()) {
    case Json::value_t::object:
      out << YAML::BeginMap;
      for (auto it = v.begin(); it != v.end(); ++it) {
        out << YAML::Key << it.key() << YAML::Value;
        emitYaml(out, it.value());
      }
      out << YAML::EndMap;
      break;
    case Json::value_t::array:
      out << YAML::BeginSeq;
      for (const Json& e : v) emitYaml(out, e);
      out << YAML::EndSeq;
      break;
    case Json::value_t::string: {
      // Quote strings YAML would read as another type ("true", "1", "null");
      // yaml-cpp itself quotes strings that are not valid plain scalars.
      const std::string& s = v.get_ref<const std::string&>();
      static const char* const kTyped[] = {"true", "false", "True", "False", "TRUE", "FALSE",
                                           "yes",  "no",    "Yes",  "No",    "on",   "off",
                                           "null", "Null",  "NULL", "~"};
      bool needs_quotes =
          s.empty() ||
          (std::string_view("0123456789.-+").find(s[0]) != std::string_view::npos &&
           s.find_first_not_of("0123456789.-+_eExXoOabcdefABCDEF") == std::string::npos);
      for (const char* t : kTyped) needs_quotes = needs_quotes || s == t;
      if (needs_quotes) out << YAML::DoubleQuoted;
      out << s;
      break;
    }
    case Json::value_t::boolean:
      out << v.get<bool>();
      break;
    case Json::value_t::null:
      out << YAML::Null;
      break;
    default:  // numbers
      out << v.dump();
      break;
  }
}

}  // namespace

std::string renderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(headers.size());
  for (size_t i = 0; i < headers.size(); ++i) width[i] = headers[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t i = 0; i < headers.size(); ++i) {
      const std::string cell = i < cells.size() ? cells[i] : "";
      l += cell;
      if (i + 1 < headers.size()) l += std::string(width[i] - cell.size() + 3, ' ');
    }
    l.erase(l.find_last_not_of(' ') + 1);
    out += l;
    out += '\n';
  };
  line(headers);
  for (const auto& row : rows) line(row);
  return out;
}

std::string renderExplain(const Json& data) {
  std::string out;
  auto limit = [](const Json& v) { return v.is_null() ? std::string("none") : v.dump(); };
  for (const Json& e : data) {
    absl::StrAppend(&out, "Service ", e.value("namespace", ""), "/", e.value("service", ""), " ",
                    e.value("frontend", ""), " (", e.value("algorithm", ""), ")\n");
    absl::StrAppend(&out, "  verdict:     ", e.value("verdict", ""), "\n");
    absl::StrAppend(&out, "  connections: ", e.value("liveConnections", int64_t{0}),
                    " live; limits: ", limit(e["maxConnections"]), " per service, ",
                    limit(e["maxConnectionsPerBackend"]), " per backend\n");
    absl::StrAppend(&out, "  refused:     ", e.value("refusedAtServiceLimit", uint64_t{0}),
                    " at the service limit, ", e.value("refusedAtBackendLimits", uint64_t{0}),
                    " with every backend tried full; rerouted from full backends: ",
                    e.value("reroutedFromFullBackends", uint64_t{0}), "\n");
    auto rate = [](const Json& v) {
      return v.is_object()
                 ? absl::StrCat(v.value("perSecond", 0u), "/s burst ", v.value("burst", 0u))
                 : std::string("none");
    };
    absl::StrAppend(&out, "  connect rate: ", rate(e["connectRate"]), " per service (",
                    e.value("refusedByConnectRate", uint64_t{0}), " refused), ",
                    rate(e["connectRatePerClient"]), " per client (",
                    e.value("refusedByClientConnectRate", uint64_t{0}), " refused)\n");
    if (const uint64_t authz = e.value("refusedByAuthz", uint64_t{0}); authz != 0) {
      absl::StrAppend(&out, "  authorization: ", authz,
                      " connects refused by AuthorizationPolicy in the kernel (same-node clients, "
                      "L4 rules)\n");
    }
    if (e.contains("outlierDetection")) {
      const Json& od = e["outlierDetection"];
      if (od.value("enabled", false)) {
        absl::StrAppend(&out, "  outliers:    eject after ", od.value("consecutiveFailures", 0),
                        " failed connects in a row for ", od.value("baseEjectionTime", ""),
                        " x times ejected (at most ", od.value("maxEjectionTime", ""), "), up to ",
                        od.value("maxEjectionPercent", 0), "% of backends (at least one)\n");
      } else {
        absl::StrAppend(&out, "  outliers:    detection off\n");
      }
      absl::StrAppend(&out, "  ejections:   ", e.value("ejectedNow", int64_t{0}), " ejected now, ",
                      e.value("ejections", uint64_t{0}), " made, ",
                      e.value("ejectionsSkipped", uint64_t{0}),
                      " not made at maxEjectionPercent; refused with every backend tried ejected: ",
                      e.value("refusedAllEjected", uint64_t{0}), "\n");
    }
    if (e.contains("requestLevel")) {
      const Json& r = e["requestLevel"];
      absl::StrAppend(&out, "  requests:    ", r.value("activeRequests", uint64_t{0}), " active, ",
                      r.value("pendingRequests", uint64_t{0}), " pending, ",
                      r.value("activeRetries", uint64_t{0}),
                      " retries in flight (L7 proxy, node-wide); refused 503 UO: ",
                      r.value("pendingOverflow", uint64_t{0}), " at maxPendingRequests, ",
                      r.value("requestOverflow", uint64_t{0}),
                      " at maxRequests; retries not made: ", r.value("retryOverflow", uint64_t{0}),
                      "\n");
      absl::StrAppend(&out, "  L7 outliers: ", r.value("l7EjectedNow", uint64_t{0}),
                      " ejected now, ", r.value("l7Ejections", uint64_t{0}), " made, ",
                      r.value("l7EjectionsSkipped", uint64_t{0}),
                      " not made at maxEjectionPercent (consecutive 5xx / gateway errors)\n");
    }
    absl::StrAppend(&out, "  backends:\n");
    for (const Json& b : e["backends"]) {
      std::string outlier;
      if (b.value("ejected", false)) {
        const Json& left = b["ejectedFor"];
        absl::StrAppend(&outlier, "  EJECTED (",
                        left.is_string() ? left.get<std::string>() + " left" : "returning", ")");
      }
      if (b.value("consecutiveFailures", 0) > 0) {
        absl::StrAppend(&outlier, "  failures in a row ", b.value("consecutiveFailures", 0));
      }
      if (b.contains("srtt") && b["srtt"].is_string()) {
        absl::StrAppend(&outlier, "  srtt ", b["srtt"].get<std::string>());
      }
      absl::StrAppend(&out, "    ", b.value("backend", ""), "  live ",
                      b.value("liveConnections", int64_t{0}), "/", limit(b["limit"]),
                      b.value("atLimit", false) ? "  FULL" : "", "  connect failures ",
                      b.value("connectFailures", uint64_t{0}), outlier, "\n");
    }
    std::vector<std::string> node;
    for (const auto& [reason, n] : e["nodeWideRefusals"].items())
      node.push_back(absl::StrCat(reason, " ", n.dump()));
    absl::StrAppend(&out, "  node-wide kernel counters (all services): ",
                    node.empty() ? "none" : absl::StrJoin(node, ", "), "\n");
  }
  return out;
}

std::string cellText(const Json& value) {
  switch (value.type()) {
    case Json::value_t::string:
      return value.get<std::string>();
    case Json::value_t::null:
      return "<none>";
    case Json::value_t::array: {
      if (value.empty()) return "<none>";
      std::vector<std::string> parts;
      for (const Json& e : value) {
        if (e.is_structured()) return value.dump();
        parts.push_back(cellText(e));
      }
      return absl::StrJoin(parts, ",");
    }
    case Json::value_t::object:
      return value.dump();
    default:
      return value.dump();
  }
}

std::string renderView(std::string_view view, const Json& data) {
  std::vector<std::string> headers;
  std::vector<std::string> keys;
  if (const auto* cols = columnsFor(view)) {
    for (const Column& c : *cols) {
      headers.push_back(c.header);
      keys.push_back(c.key);
    }
  } else if (data.is_array() && !data.empty() && data[0].is_object()) {
    for (auto it = data[0].begin(); it != data[0].end(); ++it) {
      keys.push_back(it.key());
      std::string h;
      // camelCase -> CAMEL-CASE, like kubectl's headers.
      for (char c : it.key()) {
        if (absl::ascii_isupper(static_cast<unsigned char>(c)) && !h.empty()) h += '-';
        h += absl::ascii_toupper(static_cast<unsigned char>(c));
      }
      headers.push_back(h);
    }
  } else if (!data.is_array()) {
    return renderKeyValues(data);
  }
  std::vector<std::vector<std::string>> rows;
  if (data.is_array()) {
    for (const Json& item : data) {
      std::vector<std::string> row;
      for (const std::string& k : keys) {
        row.push_back(item.is_object() && item.contains(k) ? cellText(item[k]) : "");
      }
      rows.push_back(std::move(row));
    }
  }
  return renderTable(headers, rows);
}

std::string renderKeyValues(const Json& data) {
  std::string out;
  auto walk = [&](auto&& self, const Json& obj, int indent) -> void {
    size_t width = 0;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      if (!it.value().is_object()) width = std::max(width, it.key().size());
    }
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      out += std::string(indent, ' ');
      out += it.key();
      out += ':';
      if (it.value().is_object()) {
        out += '\n';
        self(self, it.value(), indent + 2);
      } else {
        out += std::string(width - it.key().size() + 1, ' ');
        out += cellText(it.value());
        out += '\n';
      }
    }
  };
  if (data.is_object()) {
    walk(walk, data, 0);
  } else {
    out = data.dump(2) + "\n";
  }
  return out;
}

std::string renderJson(const Json& data) { return data.dump(2) + "\n"; }

std::string renderYaml(const Json& data) {
  YAML::Emitter out;
  emitYaml(out, data);
  return std::string(out.c_str()) + "\n";
}

}  // namespace meshd::cli
