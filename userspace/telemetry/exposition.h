// The Prometheus text exposition format, version 0.0.4 (what /metrics serves).
// Our own writer: Debian has no prometheus-cpp. Families are written in the
// order they are added; each starts with its HELP and TYPE lines.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace meshd::telemetry {

// The content type Prometheus expects for this format.
inline constexpr std::string_view kExpositionContentType =
    "text/plain; version=0.0.4; charset=utf-8";

enum class MetricType { kCounter, kGauge, kHistogram };

using Labels = std::vector<std::pair<std::string, std::string>>;

class ExpositionWriter {
 public:
  // Starts a metric family: "# HELP name help" and "# TYPE name type". Counter
  // names must end in "_total" (the convention Prometheus checks); a name
  // that is not a valid metric name, or a counter without "_total", is a
  // programming error and aborts in debug builds.
  void family(std::string_view name, std::string_view help, MetricType type);

  // One sample of the family started last. Label names must be valid label
  // names; label values are escaped here.
  void sample(const Labels& labels, double value);
  void sample(double value) { sample({}, value); }

  // One histogram of the (kHistogram) family started last: a `_bucket` sample per
  // upper bound with the cumulative count (`le` added after `labels`), the `+Inf`
  // bucket (= count), then `_sum` and `_count`. `cumulative` has one count per bound.
  void histogram(const Labels& labels, const std::vector<double>& bounds,
                 const std::vector<uint64_t>& cumulative, double sum, uint64_t count);

  // The text so far. Ends with a newline when anything was written.
  const std::string& text() const { return out_; }

  // Escapes a label value: backslash, double quote and newline become \\, \"
  // and \n. Everything else (including UTF-8) passes as is.
  static std::string escapeLabelValue(std::string_view value);
  // Escapes HELP text: backslash and newline only (quotes are literal there).
  static std::string escapeHelp(std::string_view help);
  // Formats a sample value: integers without a decimal point, other values
  // in the shortest form that reads back exactly, and NaN, +Inf, -Inf.
  static std::string formatValue(double value);
  // [a-zA-Z_:][a-zA-Z0-9_:]*
  static bool validMetricName(std::string_view name);
  // [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved).
  static bool validLabelName(std::string_view name);

 private:
  void writeSample(std::string_view name, const Labels& labels, const std::string* le,
                   double value);

  std::string out_;
  std::string current_;  // name of the family being written
};

}  // namespace meshd::telemetry
