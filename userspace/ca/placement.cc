#include "ca/placement.h"

#include <yaml-cpp/yaml.h>

#include "common/status.h"
#include "identity/spiffe.h"
#include "identity/text.h"
#include "identity/x509.h"

namespace meshd::ca {
namespace {

using identity::cat;

std::string key(std::string_view node, std::string_view ns, std::string_view sa) {
  return cat(node, std::string_view("\0", 1), ns, std::string_view("\0", 1), sa);
}

std::string where(std::string_view source, const YAML::Mark& m) {
  return cat(source, ":", m.line + 1, ":", m.column + 1);
}

}  // namespace

StaticWorkloadPlacement::StaticWorkloadPlacement(const std::vector<Entry>& entries) {
  for (const Entry& e : entries) placed_.insert(key(e.node, e.ns, e.service_account));
}

absl::StatusOr<StaticWorkloadPlacement> StaticWorkloadPlacement::fromYaml(std::string_view yaml,
                                                                          std::string_view source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(cat(where(source, e.mark), ": ", e.msg));
  }
  std::vector<Entry> entries;
  if (root.IsNull()) return StaticWorkloadPlacement(entries);
  if (!root.IsSequence()) {
    return absl::InvalidArgumentError(
        cat(where(source, root.Mark()),
            ": expected a list of workloads ({name, namespace, serviceAccount, node})"));
  }
  for (const YAML::Node& item : root) {
    if (!item.IsMap()) {
      return absl::InvalidArgumentError(cat(where(source, item.Mark()), ": a workload is a map"));
    }
    Entry e;
    e.service_account = "default";
    for (const auto& kv : item) {
      const std::string k = kv.first.Scalar();
      if (!kv.second.IsScalar()) {
        return absl::InvalidArgumentError(
            cat(where(source, kv.second.Mark()), ": ", k, " must be a string"));
      }
      const std::string v = kv.second.Scalar();
      if (k == "name")
        e.name = v;
      else if (k == "namespace")
        e.ns = v;
      else if (k == "serviceAccount")
        e.service_account = v;
      else if (k == "node")
        e.node = v;
      else {
        return absl::InvalidArgumentError(cat(where(source, kv.first.Mark()), ": unknown field \"",
                                              k,
                                              "\" (known: name, namespace, serviceAccount, node)"));
      }
    }
    for (const auto& [field, value] : {std::pair<const char*, const std::string*>{"name", &e.name},
                                       {"namespace", &e.ns},
                                       {"node", &e.node}}) {
      if (value->empty()) {
        return absl::InvalidArgumentError(
            cat(where(source, item.Mark()), ": workload without ", field));
      }
    }
    // The parts must make a valid SPIFFE ID and node name.
    absl::StatusOr<identity::SpiffeId> id =
        identity::makeWorkloadId("placeholder", e.ns, e.service_account);
    absl::StatusOr<identity::SpiffeId> node = identity::makeNodeId("placeholder", e.node);
    for (const absl::Status& s : {id.status(), node.status()}) {
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            cat(where(source, item.Mark()), ": workload ", e.name, ": ", s.message()));
      }
    }
    entries.push_back(std::move(e));
  }
  return StaticWorkloadPlacement(entries);
}

absl::StatusOr<StaticWorkloadPlacement> StaticWorkloadPlacement::fromFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, identity::readFile(path));
  return fromYaml(text, path);
}

bool StaticWorkloadPlacement::hasWorkload(std::string_view node, std::string_view ns,
                                          std::string_view service_account) const {
  return placed_.contains(key(node, ns, service_account));
}

}  // namespace meshd::ca
