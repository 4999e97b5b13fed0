// YAML -> JSON conversion that remembers where every node was (internal to
// resources/). Scalars are resolved as Kubernetes users expect from YAML 1.2's
// core schema: quoted scalars are strings; plain ones are null, bool, integer,
// float or string.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "resources/source_positions.h"
#include "yaml-cpp/yaml.h"

namespace meshd::resources {

struct ConversionProblem {
  std::string path;
  std::string reason;
  bool at_key = false;
  TextPos pos;  // when set, overrides the position looked up from `path`
};

// Bounds the work one document can cause: YAML aliases can make a small file
// expand into an exponentially large tree ("billion laughs").
inline constexpr size_t kMaxNodesPerDocument = 200000;
inline constexpr int kMaxDepth = 64;

// Converts `node`, recording positions into `positions` and problems
// (duplicate keys, non-scalar keys, size bounds) into `problems`. Never throws.
nlohmann::json yamlToJson(const YAML::Node& node, SourcePositions& positions,
                          std::vector<ConversionProblem>& problems);

// Resolves a plain (unquoted) scalar: null, bool, integer, float or string.
nlohmann::json resolvePlainScalar(const std::string& text);

}  // namespace meshd::resources
