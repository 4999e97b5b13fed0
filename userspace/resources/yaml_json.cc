#include "resources/yaml_json.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace meshd::resources {
namespace {

TextPos toPos(const YAML::Mark& m) {
  if (m.is_null() || m.line < 0) return {};
  return {m.line + 1, m.column + 1};
}

bool isPlainKey(absl::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

bool allOf(absl::string_view s, bool (*pred)(unsigned char)) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!pred(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Resource text must be valid UTF-8: yaml-cpp passes other bytes through, and
// nlohmann::json::dump() throws on them (the store and the API serialize resources as JSON).
bool isValidUtf8(absl::string_view s) {
  return utf8::isValid(std::string_view(s.data(), s.size()));
}

bool isHex(unsigned char c) { return absl::ascii_isxdigit(c); }
bool isDigit(unsigned char c) { return absl::ascii_isdigit(c); }
bool isOctal(unsigned char c) { return c >= '0' && c <= '7'; }

std::optional<nlohmann::json> parseInteger(absl::string_view s) {
  bool negative = false;
  absl::string_view body = s;
  if (!body.empty() && (body[0] == '-' || body[0] == '+')) {
    negative = body[0] == '-';
    body.remove_prefix(1);
  }
  int base = 10;
  if (body.size() > 2 && body[0] == '0' && (body[1] == 'x' || body[1] == 'o')) {
    base = body[1] == 'x' ? 16 : 8;
    body.remove_prefix(2);
    if (!allOf(body, base == 16 ? isHex : isOctal)) return std::nullopt;
  } else if (!allOf(body, isDigit)) {
    return std::nullopt;
  }
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), v, base);
  if (ec != std::errc() || ptr != body.data() + body.size()) {
    // Too large for 64 bits: keep it as a float so range checks report it.
    return nlohmann::json(negative ? -std::numeric_limits<double>::infinity()
                                   : std::numeric_limits<double>::infinity());
  }
  if (!negative) return nlohmann::json(v);
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + 1) {
    return nlohmann::json(-static_cast<double>(v));
  }
  return nlohmann::json(static_cast<int64_t>(0 - v));
}

std::optional<nlohmann::json> parseFloat(const std::string& s) {
  if (s == ".inf" || s == ".Inf" || s == ".INF" || s == "+.inf" || s == "+.Inf" || s == "+.INF") {
    return nlohmann::json(std::numeric_limits<double>::infinity());
  }
  if (s == "-.inf" || s == "-.Inf" || s == "-.INF") {
    return nlohmann::json(-std::numeric_limits<double>::infinity());
  }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") {
    return nlohmann::json(std::numeric_limits<double>::quiet_NaN());
  }
  // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  size_t int_digits = 0, frac_digits = 0;
  while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i, ++int_digits;
  bool dot = false;
  if (i < s.size() && s[i] == '.') {
    dot = true;
    ++i;
    while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i])))
      ++i, ++frac_digits;
  }
  if (int_digits == 0 && frac_digits == 0) return std::nullopt;
  bool exp = false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    exp = true;
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exp_digits;
    if (exp_digits == 0) return std::nullopt;
  }
  if (i != s.size() || (!dot && !exp)) return std::nullopt;
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() && ec != std::errc::result_out_of_range) return std::nullopt;
  (void)ptr;
  return nlohmann::json(v);
}

class Converter {
 public:
  Converter(SourcePositions& positions, std::vector<ConversionProblem>& problems)
      : positions_(positions), problems_(problems) {}

  nlohmann::json convert(const YAML::Node& node, const std::string& path, TextPos key_pos,
                         int depth) {
    TextPos value_pos = toPos(node.Mark());
    if (value_pos.line == 0) value_pos = key_pos;
    positions_.add(path, {key_pos, value_pos});
    if (++nodes_ > kMaxNodesPerDocument) {
      if (!too_large_reported_) {
        too_large_reported_ = true;
        problems_.push_back({path,
                             absl::StrCat("document expands to more than ", kMaxNodesPerDocument,
                                          " nodes (YAML aliases?); split it up"),
                             false,
                             {}});
      }
      return nullptr;
    }
    if (depth > kMaxDepth) {
      problems_.push_back(
          {path, absl::StrCat("nested deeper than ", kMaxDepth, " levels"), false, {}});
      return nullptr;
    }
    switch (node.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        return nullptr;
      case YAML::NodeType::Scalar: {
        if (!isValidUtf8(node.Scalar())) {
          // Kept as a string so no follow-on "missing"/"wrong type" errors pile up;
          // the problem alone rejects the document.
          problems_.push_back({path, "is not valid UTF-8 text", false, value_pos});
          return node.Scalar();
        }
        const std::string& tag = node.Tag();
        // "!" = quoted (non-plain) scalar; "?" = plain, type resolved from the text.
        if (tag == "!" || tag == "tag:yaml.org,2002:str") return node.Scalar();
        return resolvePlainScalar(node.Scalar());
      }
      case YAML::NodeType::Sequence: {
        nlohmann::json out = nlohmann::json::array();
        size_t i = 0;
        for (const auto& item : node) {
          out.push_back(convert(item, indexPath(path, i), {}, depth + 1));
          ++i;
        }
        return out;
      }
      case YAML::NodeType::Map: {
        nlohmann::json out = nlohmann::json::object();
        absl::flat_hash_map<std::string, TextPos> seen;
        for (const auto& kv : node) {
          TextPos kpos = toPos(kv.first.Mark());
          if (!kv.first.IsScalar()) {
            problems_.push_back({path, "mapping keys must be plain strings", false, kpos});
            continue;
          }
          const std::string& key = kv.first.Scalar();
          if (!isValidUtf8(key)) {
            problems_.push_back({path, "mapping key is not valid UTF-8 text", false, kpos});
            continue;
          }
          std::string child = childPath(path, key);
          auto [it, inserted] = seen.emplace(key, kpos);
          if (!inserted) {
            // Points at the second occurrence, not at the field's (first) position.
            problems_.push_back(
                {child,
                 absl::StrCat("duplicate key \"", key, "\" (first at line ", it->second.line, ")"),
                 true, kpos});
            continue;
          }
          out[key] = convert(kv.second, child, kpos, depth + 1);
        }
        return out;
      }
    }
    return nullptr;
  }

 private:
  SourcePositions& positions_;
  std::vector<ConversionProblem>& problems_;
  size_t nodes_ = 0;
  bool too_large_reported_ = false;
};

}  // namespace

std::string childPath(absl::string_view parent, absl::string_view key) {
  std::string out(parent);
  if (isPlainKey(key)) {
    if (!out.empty()) out += '.';
    out.append(key.data(), key.size());
  } else {
    absl::StrAppend(&out, "[\"", key, "\"]");
  }
  return out;
}

std::string indexPath(absl::string_view parent, size_t index) {
  return absl::StrCat(parent, "[", index, "]");
}

absl::string_view SourcePositions::parent(absl::string_view path) {
  if (path.empty()) return path;
  size_t cut;
  if (path.size() >= 2 && path.substr(path.size() - 2) == "\"]") {
    cut = path.rfind("[\"");
  } else if (path.back() == ']') {
    cut = path.rfind('[');
  } else {
    cut = path.rfind('.');
  }
  if (cut == absl::string_view::npos) return path.substr(0, 0);
  return path.substr(0, cut);
}

std::optional<TextPos> SourcePositions::find(absl::string_view path, bool at_key) const {
  absl::string_view p = path;
  bool exact = true;
  while (true) {
    auto it = entries_.find(p);
    if (it != entries_.end()) {
      const Entry& e = it->second;
      if (exact && at_key && e.key.line != 0) return e.key;
      if (e.value.line != 0) return e.value;
      if (e.key.line != 0) return e.key;
    }
    if (p.empty()) return std::nullopt;
    p = parent(p);
    exact = false;
  }
}

nlohmann::json resolvePlainScalar(const std::string& text) {
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  if (auto i = parseInteger(text)) return *i;
  if (auto f = parseFloat(text)) return *f;
  return text;
}

nlohmann::json yamlToJson(const YAML::Node& node, SourcePositions& positions,
                          std::vector<ConversionProblem>& problems) {
  Converter c(positions, problems);
  try {
    return c.convert(node, "", {}, 0);
  } catch (const std::exception& e) {
    // yaml-cpp's iterators can throw on malformed trees; never let it escape.
    problems.push_back({"", absl::StrCat("cannot read document: ", e.what()), false, {}});
    return nullptr;
  }
}

}  // namespace meshd::resources
