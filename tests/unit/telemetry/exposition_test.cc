#include "telemetry/exposition.h"

#include <cmath>
#include <limits>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "telemetry/health.h"
#include "telemetry/meshd_metrics.h"

namespace meshd::telemetry {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ExpositionTest, LabelValueEscaping) {
  EXPECT_EQ(ExpositionWriter::escapeLabelValue("plain"), "plain");
  EXPECT_EQ(ExpositionWriter::escapeLabelValue("a\\b"), "a\\\\b");
  EXPECT_EQ(ExpositionWriter::escapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(ExpositionWriter::escapeLabelValue("two\nlines"), "two\\nlines");
  EXPECT_EQ(ExpositionWriter::escapeLabelValue("\\\"\n"), "\\\\\\\"\\n");
  EXPECT_EQ(ExpositionWriter::escapeLabelValue("ünïcode"), "ünïcode");
}

TEST(ExpositionTest, HelpEscapingKeepsQuotes) {
  EXPECT_EQ(ExpositionWriter::escapeHelp("a \"b\"\\c\nd"), "a \"b\"\\\\c\\nd");
}

TEST(ExpositionTest, ValueFormatting) {
  EXPECT_EQ(ExpositionWriter::formatValue(0), "0");
  EXPECT_EQ(ExpositionWriter::formatValue(42), "42");
  EXPECT_EQ(ExpositionWriter::formatValue(-3), "-3");
  EXPECT_EQ(ExpositionWriter::formatValue(0.25), "0.25");
  EXPECT_EQ(ExpositionWriter::formatValue(1e-7), "1e-07");
  EXPECT_EQ(ExpositionWriter::formatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(ExpositionWriter::formatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(ExpositionWriter::formatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  // Shortest representation that reads back exactly.
  const double third = 1.0 / 3.0;
  EXPECT_EQ(std::stod(ExpositionWriter::formatValue(third)), third);
}

TEST(ExpositionTest, Names) {
  EXPECT_TRUE(ExpositionWriter::validMetricName("meshd_ready"));
  EXPECT_TRUE(ExpositionWriter::validMetricName("a:b_c1"));
  EXPECT_FALSE(ExpositionWriter::validMetricName("1abc"));
  EXPECT_FALSE(ExpositionWriter::validMetricName("a-b"));
  EXPECT_FALSE(ExpositionWriter::validMetricName(""));
  EXPECT_TRUE(ExpositionWriter::validLabelName("service"));
  EXPECT_FALSE(ExpositionWriter::validLabelName("__name"));
  EXPECT_FALSE(ExpositionWriter::validLabelName("a:b"));
}

TEST(ExpositionTest, FamilyAndSamples) {
  ExpositionWriter w;
  w.family("x_requests_total", "Requests.\nSecond line.", MetricType::kCounter);
  w.sample({{"code", "200"}, {"path", "/a\"b"}}, 7);
  w.sample({{"code", "500"}, {"path", "/"}}, 1);
  w.family("x_up", "Up.", MetricType::kGauge);
  w.sample(1);
  EXPECT_EQ(w.text(),
            "# HELP x_requests_total Requests.\\nSecond line.\n"
            "# TYPE x_requests_total counter\n"
            "x_requests_total{code=\"200\",path=\"/a\\\"b\"} 7\n"
            "x_requests_total{code=\"500\",path=\"/\"} 1\n"
            "# HELP x_up Up.\n"
            "# TYPE x_up gauge\n"
            "x_up 1\n");
}

TEST(MeshdMetricsTest, RendersEveryFamilyAndSample) {
  MeshdMetrics m;
  m.version = "0.1.0";
  m.ready = true;
  m.frontends = 2;
  m.backends = 3;
  m.reconcile_ok = 5;
  m.reconcile_error = 1;
  m.reconcile_seconds = 0.0125;
  m.bpf_events = {{"connect_rewritten", 10}, {"no_backend", 2}};
  m.backend_samples.push_back({"default", "web", "10.1.0.1:8080", 1, 3, 100, 4});
  // The same backend id under a second frontend of the same service: counted once.
  m.backend_samples.push_back({"default", "web", "10.1.0.1:8080", 1, 3, 100, 4});
  // A different id with the same labels (e.g. the UDP twin): summed.
  m.backend_samples.push_back({"default", "web", "10.1.0.1:8080", 2, 0, 5, 0});
  m.backend_samples.push_back({"prod", "api\"x", "[fd00::1]:80", 3, 1, 2, 0, 4, true, 0.0125});
  m.service_samples.push_back({"default", "web", "10.96.0.1:80/TCP", 6, 1, 2, 3, 4, 5, 7, 1, 8, 9});
  m.service_samples.back().refused_authz = 10;
  m.strict_samples.push_back({"10.1.0.5", 8080, 11});
  m.draining_backends = 2;
  const std::string text = renderMetrics(m);

  EXPECT_THAT(text, HasSubstr("meshd_build_info{version=\"0.1.0\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE meshd_ready gauge\nmeshd_ready 1\n"));
  EXPECT_THAT(text, HasSubstr("meshd_frontends 2\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backends 3\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE meshd_reconcile_total counter\n"));
  EXPECT_THAT(text, HasSubstr("meshd_reconcile_total{result=\"ok\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("meshd_reconcile_total{result=\"error\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("meshd_reconcile_duration_seconds 0.0125\n"));
  EXPECT_THAT(text, HasSubstr("meshd_bpf_events_total{reason=\"connect_rewritten\"} 10\n"));
  EXPECT_THAT(text, HasSubstr("meshd_bpf_events_total{reason=\"no_backend\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backend_live_connections{service=\"web\",namespace="
                              "\"default\",backend=\"10.1.0.1:8080\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backend_connections_total{service=\"web\",namespace="
                              "\"default\",backend=\"10.1.0.1:8080\"} 105\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backend_connect_failures_total{service=\"web\",namespace="
                              "\"default\",backend=\"10.1.0.1:8080\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backend_live_connections{service=\"api\\\"x\",namespace="
                              "\"prod\",backend=\"[fd00::1]:80\"} 1\n"));

  EXPECT_THAT(text, HasSubstr("meshd_backend_consecutive_failures{service=\"api\\\"x\","
                              "namespace=\"prod\",backend=\"[fd00::1]:80\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backend_ejected{service=\"api\\\"x\",namespace=\"prod\","
                              "backend=\"[fd00::1]:80\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backend_ejected{service=\"web\",namespace=\"default\","
                              "backend=\"10.1.0.1:8080\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("meshd_backend_srtt_seconds{service=\"api\\\"x\",namespace="
                              "\"prod\",backend=\"[fd00::1]:80\"} 0.0125\n"));
  const std::string web = "service=\"web\",namespace=\"default\",frontend=\"10.96.0.1:80/TCP\"";
  EXPECT_THAT(text, HasSubstr("meshd_service_live_connections{" + web + "} 6\n"));
  for (const auto& [reason, n] :
       std::vector<std::pair<std::string, int>>{{"max_connections", 1},
                                                {"max_connections_per_backend", 2},
                                                {"connect_rate", 3},
                                                {"client_connect_rate", 4},
                                                {"all_ejected", 5},
                                                {"authz", 10}}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("meshd_service_connects_refused_total{", web,
                                             ",reason=\"", reason, "\"} ", n, "\n")));
  }
  EXPECT_THAT(text, HasSubstr("meshd_service_connects_rerouted_total{" + web + "} 7\n"));
  EXPECT_THAT(text, HasSubstr("meshd_service_ejected_backends{" + web + "} 1\n"));
  EXPECT_THAT(text, HasSubstr("meshd_service_ejections_total{" + web + ",result=\"ejected\"} 8\n"));
  EXPECT_THAT(text, HasSubstr("meshd_service_ejections_total{" + web +
                              ",result=\"skipped_max_percent\"} 9\n"));
  EXPECT_THAT(text, HasSubstr("meshd_draining_ids{kind=\"backend\"} 2\n"));
  EXPECT_THAT(
      text, HasSubstr("meshd_strict_dropped_syns_total{address=\"10.1.0.5\",port=\"8080\"} 11\n"));

  // Every line is a comment or "name[{labels}] value"; every counter family ends in _total.
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    ASSERT_FALSE(line.empty());
    if (absl::StartsWith(line, "# TYPE ")) {
      if (absl::EndsWith(line, " counter")) {
        EXPECT_THAT(line, HasSubstr("_total counter")) << line;
      }
      continue;
    }
    if (absl::StartsWith(line, "# HELP ")) continue;
    EXPECT_THAT(line, Not(HasSubstr("\t"))) << line;
    EXPECT_TRUE(absl::StartsWith(line, "meshd_")) << line;
  }
}

TEST(ReadinessTest, ReadyOnlyWhenAttachedAndLastReconcileOk) {
  Readiness r;
  EXPECT_EQ(r.ready().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.ready().message()), HasSubstr("no BPF programs attached"));
  r.setProgramsAttached(5);
  EXPECT_THAT(std::string(r.ready().message()), HasSubstr("not reconciled"));
  r.recordReconcile(absl::OkStatus(), 0.5);
  EXPECT_TRUE(r.ready().ok());
  r.recordReconcile(absl::ResourceExhaustedError("mesh_backends is full"), 0.1);
  EXPECT_THAT(std::string(r.ready().message()), HasSubstr("mesh_backends is full"));
  r.recordReconcile(absl::OkStatus(), 0.2);
  EXPECT_TRUE(r.ready().ok());
  Readiness::Snapshot s = r.snapshot();
  EXPECT_EQ(s.reconcile_ok, 2u);
  EXPECT_EQ(s.reconcile_error, 1u);
  EXPECT_DOUBLE_EQ(s.last_seconds, 0.2);
}

}  // namespace
}  // namespace meshd::telemetry
