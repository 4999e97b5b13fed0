#include "telemetry/request_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "telemetry/exposition.h"

namespace meshd::telemetry {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

RequestLabels webLabels(uint16_t code) {
  RequestLabels l;
  l.source_workload = "client-1";
  l.source_namespace = "default";
  l.destination_workload = "web-1";
  l.destination_namespace = "default";
  l.destination_service_name = "web";
  l.destination_service_namespace = "default";
  l.request_protocol = "http";
  l.response_code = code;
  l.connection_security_policy = "none";
  return l;
}

// The sample line of `name` whose labels contain every fragment, or "".
std::string line(const std::string& text, std::string_view name,
                 std::initializer_list<std::string_view> fragments) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view l(text.data() + pos, end - pos);
    pos = end + 1;
    if (!l.starts_with(name) || l.size() <= name.size() || l[name.size()] != '{') continue;
    bool all = true;
    for (auto f : fragments) all = all && l.find(f) != std::string_view::npos;
    if (all) return std::string(l);
  }
  return "";
}

TEST(ExpositionHistogramTest, BucketsAreCumulativeWithInfSumAndCount) {
  ExpositionWriter w;
  w.family("x_ms", "help", MetricType::kHistogram);
  w.histogram({{"a", "b"}}, {1, 5}, {2, 3}, 7.5, 4);
  EXPECT_EQ(w.text(),
            "# HELP x_ms help\n# TYPE x_ms histogram\n"
            "x_ms_bucket{a=\"b\",le=\"1\"} 2\n"
            "x_ms_bucket{a=\"b\",le=\"5\"} 3\n"
            "x_ms_bucket{a=\"b\",le=\"+Inf\"} 4\n"
            "x_ms_sum{a=\"b\"} 7.5\n"
            "x_ms_count{a=\"b\"} 4\n");
  ExpositionWriter unlabelled;
  unlabelled.family("y", "h", MetricType::kHistogram);
  unlabelled.histogram({}, {0.5}, {0}, 0, 0);
  EXPECT_THAT(unlabelled.text(), HasSubstr("y_bucket{le=\"0.5\"} 0\n"));
}

TEST(RequestMetricsTest, ShardsMergeIntoOneSeriesWithIstioLabels) {
  RequestMetrics m(2);
  m.recordRequest(0, webLabels(200), 3'000, 100, 2000);
  m.recordRequest(1, webLabels(200), 700, 50, 10);
  m.recordRequest(1, webLabels(503), 100, 50, 10);
  EXPECT_EQ(m.requestsTotal(), 3u);
  std::string out;
  m.render(out);
  const std::string ok = line(out, "istio_requests_total", {"response_code=\"200\""});
  ASSERT_FALSE(ok.empty()) << out;
  EXPECT_THAT(ok, HasSubstr("reporter=\"source\""));
  EXPECT_THAT(ok, HasSubstr("source_workload=\"client-1\""));
  EXPECT_THAT(ok, HasSubstr("destination_service=\"web.default.svc.cluster.local\""));
  EXPECT_THAT(ok, HasSubstr("destination_service_name=\"web\""));
  EXPECT_THAT(ok, HasSubstr("response_flags=\"-\""));
  EXPECT_THAT(ok, HasSubstr("source_principal=\"unknown\""));  // empty → unknown
  EXPECT_TRUE(ok.ends_with(" 2")) << ok;
  EXPECT_TRUE(line(out, "istio_requests_total", {"response_code=\"503\""}).ends_with(" 1"));
  // Durations: 3 ms lands in le=5, 0.7 ms in le=1; both ≤ 5.
  const std::string le1 = line(out, "istio_request_duration_milliseconds_bucket",
                               {"response_code=\"200\"", "le=\"1\""});
  EXPECT_TRUE(le1.ends_with(" 1")) << le1;
  const std::string le05 = line(out, "istio_request_duration_milliseconds_bucket",
                                {"response_code=\"200\"", "le=\"0.5\""});
  EXPECT_TRUE(le05.ends_with(" 0")) << le05;
  const std::string le5 = line(out, "istio_request_duration_milliseconds_bucket",
                               {"response_code=\"200\"", "le=\"5\""});
  EXPECT_TRUE(le5.ends_with(" 2")) << le5;
  const std::string sum =
      line(out, "istio_request_duration_milliseconds_sum", {"response_code=\"200\""});
  EXPECT_TRUE(sum.ends_with(" 3.7")) << sum;
  const std::string rsp =
      line(out, "istio_response_bytes_bucket", {"response_code=\"200\"", "le=\"1000\""});
  EXPECT_TRUE(rsp.ends_with(" 1")) << rsp;  // 10 ≤ 1000, 2000 is not
}

TEST(RequestMetricsTest, FlagsAndGrpcStatusAreLabels) {
  RequestMetrics m(1);
  RequestLabels l = webLabels(503);
  l.response_flags = "UF";
  m.recordRequest(0, l, 1, 0, 0);
  l.request_protocol = "grpc";
  l.response_code = 200;
  l.response_flags = "";
  l.grpc_response_status = "14";
  m.recordRequest(0, l, 1, 0, 0);
  std::string out;
  m.render(out);
  EXPECT_FALSE(line(out, "istio_requests_total", {"response_code=\"503\"", "response_flags=\"UF\""})
                   .empty());
  EXPECT_FALSE(line(out, "istio_requests_total",
                    {"request_protocol=\"grpc\"", "grpc_response_status=\"14\""})
                   .empty());
}

TEST(RequestMetricsTest, TcpCountersHaveNoResponseCode) {
  RequestMetrics m(1);
  RequestLabels l = webLabels(0);
  l.request_protocol = "tcp";
  m.recordTcpOpened(0, l);
  m.recordTcpOpened(0, l);
  m.recordTcpClosed(0, l, 100, 7);
  std::string out;
  m.render(out);
  const std::string opened = line(out, "istio_tcp_connections_opened_total", {"tcp"});
  EXPECT_TRUE(opened.ends_with(" 2")) << out;
  EXPECT_THAT(opened, Not(HasSubstr("response_code")));
  EXPECT_TRUE(line(out, "istio_tcp_connections_closed_total", {"tcp"}).ends_with(" 1"));
  EXPECT_TRUE(line(out, "istio_tcp_sent_bytes_total", {"tcp"}).ends_with(" 100"));
  EXPECT_TRUE(line(out, "istio_tcp_received_bytes_total", {"tcp"}).ends_with(" 7"));
}

TEST(RequestMetricsTest, LabelSetsAreBoundedByAnOverflowSeries) {
  RequestMetrics m(1, /*max_series_per_shard=*/50);
  std::vector<std::string> names;
  const size_t n = 50 + 5;
  names.reserve(n);
  for (size_t i = 0; i < n; ++i) names.push_back(absl::StrCat("client-", i));
  for (size_t i = 0; i < n; ++i) {
    RequestLabels l = webLabels(200);
    l.source_workload = names[i];
    m.recordRequest(0, l, 1, 1, 1);
  }
  EXPECT_EQ(m.requestsTotal(), n);  // nothing lost
  std::string out;
  m.render(out);
  EXPECT_THAT(out, HasSubstr("meshd_request_metrics_overflow_total 5\n"));
  const std::string overflow =
      line(out, "istio_requests_total", {"source_workload=\"unknown\"", "response_code=\"0\""});
  EXPECT_TRUE(overflow.ends_with(" 5")) << overflow;
  // Over the bound, a label set seen before still gets its own series.
  RequestLabels again = webLabels(200);
  again.source_workload = names[0];
  m.recordRequest(0, again, 1, 1, 1);
  out.clear();
  m.render(out);
  EXPECT_TRUE(line(out, "istio_requests_total", {"source_workload=\"client-0\""}).ends_with(" 2"));
}

TEST(RequestMetricsTest, ConcurrentRecordingAndScrapingLoseNothing) {
  RequestMetrics m(2);
  constexpr int kPerThread = 20'000;
  std::thread a([&] {
    for (int i = 0; i < kPerThread; ++i) m.recordRequest(0, webLabels(200), 10, 1, 1);
  });
  std::thread b([&] {
    for (int i = 0; i < kPerThread; ++i) m.recordRequest(1, webLabels(200), 10, 1, 1);
  });
  for (int i = 0; i < 20; ++i) {
    std::string out;
    m.render(out);
  }
  a.join();
  b.join();
  std::string out;
  m.render(out);
  EXPECT_TRUE(line(out, "istio_requests_total", {"response_code=\"200\""})
                  .ends_with(absl::StrCat(" ", 2 * kPerThread)));
}

}  // namespace
}  // namespace meshd::telemetry
