// Decoding of one resource document (JSON) into its typed spec, collecting
// every problem with its field path. The validators and the typed views are
// the same code, so what validates is exactly what the views can read.
// Internal to resources/.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "resources/resource.h"
#include "resources/source_positions.h"

namespace meshd::resources {

struct Problem {
  std::string path;  // field path, "" for the document
  std::string reason;
  bool at_key = false;  // point at the field's key (unknown/duplicate field) rather than its value
  TextPos pos;          // when set, overrides the position looked up from `path`
};

struct Decoded {
  ResourceKey key;  // best effort: "?" for a missing kind or name
  std::vector<Problem> problems;
  std::variant<std::monostate, ServiceSpec, EndpointSliceSpec, TrafficPolicySpec, HttpRouteSpec,
               GrpcRouteSpec, WorkloadSpec, PeerAuthenticationSpec, AuthorizationPolicySpec,
               RateLimitPolicySpec, NodeSpec>
      spec;
};

Decoded decodeDocument(const nlohmann::json& doc);

// `text` with control characters escaped ("\\n", "\\x01"), so that a problem
// quoting user text (a YAML key "a\\nb") stays on one line.
std::string escapeControl(absl::string_view text);

// One line in the standard form for a problem about a resource.
std::string formatProblem(const ResourceKey& key, const std::string& source,
                          const SourcePositions* positions, int doc_line, const Problem& p);

}  // namespace meshd::resources
