// Where each field of a parsed YAML document sits in its file, keyed by the
// field path the validators use ("spec.ports[0].port",
// "metadata.labels[\"kubernetes.io/service-name\"]"; "" is the document).
// Internal to resources/.
#pragma once

#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace meshd::resources {

struct TextPos {
  int line = 0;  // 1-based; 0 = unknown
  int column = 0;
};

class SourcePositions {
 public:
  struct Entry {
    TextPos key;    // the mapping key naming the field (unset for sequence items / the root)
    TextPos value;  // the field's value node
  };

  void add(std::string path, Entry entry) { entries_.insert_or_assign(std::move(path), entry); }

  // Position for a problem with `path`. With at_key, the position of the key
  // (e.g. an unknown field); otherwise of the value. A path that does not
  // exist (a missing field) resolves to the nearest enclosing field's value.
  std::optional<TextPos> find(absl::string_view path, bool at_key) const;

  // The path one level up: "spec.ports[0].port" -> "spec.ports[0]" -> "spec.ports"
  // -> "spec" -> "". Returns "" for "".
  static absl::string_view parent(absl::string_view path);

 private:
  absl::flat_hash_map<std::string, Entry> entries_;
};

// Path of a child field: "spec" + "ports" -> "spec.ports"; keys that are not
// plain identifiers are quoted: labels["kubernetes.io/service-name"].
std::string childPath(absl::string_view parent, absl::string_view key);
std::string indexPath(absl::string_view parent, size_t index);

}  // namespace meshd::resources
