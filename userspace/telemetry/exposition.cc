#include "telemetry/exposition.h"

#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "fmt/format.h"

namespace meshd::telemetry {
namespace {

bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool isDigit(char c) { return c >= '0' && c <= '9'; }

// The text format escapes backslash and newline everywhere, and the double
// quote inside label values only.
std::string escape(std::string_view text, bool quotes) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

bool ExpositionWriter::validMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = isAlpha(c) || c == '_' || c == ':' || (i > 0 && isDigit(c));
    if (!ok) return false;
  }
  return true;
}

bool ExpositionWriter::validLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = isAlpha(c) || c == '_' || (i > 0 && isDigit(c));
    if (!ok) return false;
  }
  return true;
}

std::string ExpositionWriter::escapeLabelValue(std::string_view value) {
  return escape(value, /*quotes=*/true);
}

std::string ExpositionWriter::escapeHelp(std::string_view help) {
  return escape(help, /*quotes=*/false);
}

std::string ExpositionWriter::formatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Integral values up to 2^53 are exact in a double: print them as integers
  // so counters read naturally ("42", not "42.0" or "4.2e+01").
  if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return fmt::format("{}", value);  // shortest round-trip representation
}

void ExpositionWriter::family(std::string_view name, std::string_view help, MetricType type) {
  assert(validMetricName(name));
  assert(type != MetricType::kCounter || name.ends_with("_total"));
  current_ = std::string(name);
  absl::StrAppend(&out_, "# HELP ", current_, " ", escapeHelp(help), "\n");
  const char* type_name = type == MetricType::kCounter ? "counter"
                          : type == MetricType::kGauge ? "gauge"
                                                       : "histogram";
  absl::StrAppend(&out_, "# TYPE ", current_, " ", type_name, "\n");
}

void ExpositionWriter::sample(const Labels& labels, double value) {
  assert(!current_.empty());
  writeSample(current_, labels, nullptr, value);
}

void ExpositionWriter::histogram(const Labels& labels, const std::vector<double>& bounds,
                                 const std::vector<uint64_t>& cumulative, double sum,
                                 uint64_t count) {
  assert(!current_.empty() && bounds.size() == cumulative.size());
  const std::string bucket = current_ + "_bucket";
  for (size_t i = 0; i < bounds.size(); ++i) {
    const std::string le = formatValue(bounds[i]);
    writeSample(bucket, labels, &le, static_cast<double>(cumulative[i]));
  }
  const std::string inf = "+Inf";
  writeSample(bucket, labels, &inf, static_cast<double>(count));
  writeSample(current_ + "_sum", labels, nullptr, sum);
  writeSample(current_ + "_count", labels, nullptr, static_cast<double>(count));
}

void ExpositionWriter::writeSample(std::string_view name, const Labels& labels,
                                   const std::string* le, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [label_name, label_value] : labels) {
      assert(validLabelName(label_name));
      if (!first) out_ += ',';
      first = false;
      absl::StrAppend(&out_, label_name, "=\"", escapeLabelValue(label_value), "\"");
    }
    if (le != nullptr) absl::StrAppend(&out_, first ? "" : ",", "le=\"", *le, "\"");
    out_ += '}';
  } else if (le != nullptr) {
    absl::StrAppend(&out_, "{le=\"", *le, "\"}");
  }
  absl::StrAppend(&out_, " ", formatValue(value), "\n");
}

}  // namespace meshd::telemetry
