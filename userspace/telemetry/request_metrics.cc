#include "telemetry/request_metrics.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "telemetry/exposition.h"

namespace meshd::telemetry {
namespace {

constexpr size_t kLabelCount = 13;

// The label values of a series in a fixed order (response_code aside).
using LabelViews = std::array<std::string_view, kLabelCount>;

LabelViews viewsOf(const RequestLabels& l) {
  return {l.reporter,
          l.source_workload,
          l.source_namespace,
          l.source_principal,
          l.destination_workload,
          l.destination_namespace,
          l.destination_principal,
          l.destination_service_name,
          l.destination_service_namespace,
          l.request_protocol,
          l.grpc_response_status,
          l.response_flags,
          l.connection_security_policy};
}

struct SeriesKey {
  std::array<std::string, kLabelCount> values;
  uint16_t code = 0;
};

// What a lookup compares: views into either a SeriesKey or the caller's labels.
struct KeyRef {
  LabelViews values;
  uint16_t code;
};

KeyRef refOf(const SeriesKey& k) {
  KeyRef r{{}, k.code};
  for (size_t i = 0; i < kLabelCount; ++i) r.values[i] = k.values[i];
  return r;
}

struct KeyHash {
  using is_transparent = void;
  size_t operator()(const KeyRef& r) const {
    return absl::HashOf(absl::MakeConstSpan(r.values.data(), r.values.size()), r.code);
  }
  size_t operator()(const SeriesKey& k) const { return (*this)(refOf(k)); }
};

struct KeyEq {
  using is_transparent = void;
  static bool eq(const KeyRef& a, const KeyRef& b) {
    return a.code == b.code && a.values == b.values;
  }
  bool operator()(const SeriesKey& a, const SeriesKey& b) const { return eq(refOf(a), refOf(b)); }
  bool operator()(const SeriesKey& a, const KeyRef& b) const { return eq(refOf(a), b); }
  bool operator()(const KeyRef& a, const SeriesKey& b) const { return eq(a, refOf(b)); }
};

struct Histogram {
  std::vector<uint64_t> counts;  // per bucket, not cumulative
  double sum = 0;
  uint64_t count = 0;

  void observe(const std::vector<double>& bounds, double v) {
    if (counts.empty()) counts.assign(bounds.size(), 0);
    const auto it = std::lower_bound(bounds.begin(), bounds.end(), v);
    if (it != bounds.end()) ++counts[static_cast<size_t>(it - bounds.begin())];
    sum += v;
    ++count;
  }
  void merge(const Histogram& o) {
    if (o.count == 0) return;
    if (counts.empty()) counts.assign(o.counts.size(), 0);
    for (size_t i = 0; i < counts.size(); ++i) counts[i] += o.counts[i];
    sum += o.sum;
    count += o.count;
  }
};

struct RequestSeries {
  uint64_t requests = 0;
  Histogram duration_ms, request_bytes, response_bytes;
};

struct TcpSeries {
  uint64_t opened = 0, closed = 0, sent = 0, received = 0;
};

KeyRef overflowRef() {
  KeyRef r{{}, 0};
  r.values.fill("unknown");
  return r;
}

SeriesKey own(const KeyRef& r) {
  SeriesKey k;
  for (size_t i = 0; i < kLabelCount; ++i) k.values[i] = std::string(r.values[i]);
  k.code = r.code;
  return k;
}

std::string_view orUnknown(std::string_view v) { return v.empty() ? "unknown" : v; }

}  // namespace

struct RequestMetrics::Shard {
  mutable absl::Mutex mu;
  absl::flat_hash_map<SeriesKey, RequestSeries, KeyHash, KeyEq> requests ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<SeriesKey, TcpSeries, KeyHash, KeyEq> tcp ABSL_GUARDED_BY(mu);
  uint64_t overflow ABSL_GUARDED_BY(mu) = 0;

  // The series for `labels`, created if new and there is room, else the overflow series.
  template <typename Series>
  Series& find(absl::flat_hash_map<SeriesKey, Series, KeyHash, KeyEq>& map, const KeyRef& ref,
               size_t max_series) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = map.find(ref);
    if (it != map.end()) return it->second;
    if (map.size() >= max_series) {
      ++overflow;
      return map[own(overflowRef())];
    }
    return map.emplace(own(ref), Series{}).first->second;
  }
};

const std::vector<double>& RequestMetrics::durationBucketsMs() {
  static const std::vector<double> b = {0.5,   1,      5,      10,      25,     50,    100,
                                        250,   500,    1000,   2500,    5000,   10000, 30000,
                                        60000, 300000, 600000, 1800000, 3600000};
  return b;
}

const std::vector<double>& RequestMetrics::sizeBuckets() {
  static const std::vector<double> b = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
  return b;
}

RequestMetrics::RequestMetrics(unsigned shards, size_t max_series_per_shard)
    : max_series_(max_series_per_shard) {
  shards_.reserve(std::max(1u, shards));
  for (unsigned i = 0; i < std::max(1u, shards); ++i) shards_.push_back(std::make_unique<Shard>());
}

RequestMetrics::~RequestMetrics() = default;

void RequestMetrics::recordRequest(unsigned shard, const RequestLabels& labels,
                                   uint64_t duration_us, uint64_t request_bytes,
                                   uint64_t response_bytes) {
  Shard& s = *shards_[shard % shards_.size()];
  const KeyRef ref{viewsOf(labels), labels.response_code};
  absl::MutexLock lock(&s.mu);
  RequestSeries& series = s.find(s.requests, ref, max_series_);
  ++series.requests;
  series.duration_ms.observe(durationBucketsMs(), static_cast<double>(duration_us) / 1000.0);
  series.request_bytes.observe(sizeBuckets(), static_cast<double>(request_bytes));
  series.response_bytes.observe(sizeBuckets(), static_cast<double>(response_bytes));
}

void RequestMetrics::recordTcpOpened(unsigned shard, const RequestLabels& labels) {
  Shard& s = *shards_[shard % shards_.size()];
  const KeyRef ref{viewsOf(labels), 0};
  absl::MutexLock lock(&s.mu);
  ++s.find(s.tcp, ref, max_series_).opened;
}

void RequestMetrics::recordTcpClosed(unsigned shard, const RequestLabels& labels,
                                     uint64_t sent_bytes, uint64_t received_bytes) {
  Shard& s = *shards_[shard % shards_.size()];
  const KeyRef ref{viewsOf(labels), 0};
  absl::MutexLock lock(&s.mu);
  TcpSeries& t = s.find(s.tcp, ref, max_series_);
  ++t.closed;
  t.sent += sent_bytes;
  t.received += received_bytes;
}

uint64_t RequestMetrics::requestsTotal() const {
  uint64_t total = 0;
  for (const auto& s : shards_) {
    absl::MutexLock lock(&s->mu);
    for (const auto& [k, v] : s->requests) total += v.requests;
  }
  return total;
}

namespace {

// Istio's label set for a series, in Istio's order; derived labels (app, canonical
// service, destination_service host) are computed from the stored ones.
Labels istioLabels(const SeriesKey& k, bool http) {
  const auto v = [&](size_t i) { return std::string(orUnknown(k.values[i])); };
  const std::string dst_name = v(7), dst_ns = v(8);
  const std::string dst_host = k.values[7].empty()
                                   ? std::string("unknown")
                                   : absl::StrCat(dst_name, ".", dst_ns, ".svc.cluster.local");
  Labels l = {
      {"reporter", v(0)},
      {"source_workload", v(1)},
      {"source_canonical_service", v(1)},
      {"source_workload_namespace", v(2)},
      {"source_principal", v(3)},
      {"source_app", v(1)},
      {"destination_workload", v(4)},
      {"destination_canonical_service", v(4)},
      {"destination_workload_namespace", v(5)},
      {"destination_principal", v(6)},
      {"destination_app", v(4)},
      {"destination_service", dst_host},
      {"destination_service_name", dst_name},
      {"destination_service_namespace", dst_ns},
      {"request_protocol", v(9)},
  };
  if (http) {
    l.emplace_back("response_code", absl::StrCat(k.code));
    l.emplace_back("grpc_response_status", k.values[10]);
  }
  l.emplace_back("response_flags", k.values[11].empty() ? "-" : k.values[11]);
  l.emplace_back("connection_security_policy", v(12));
  return l;
}

// Cumulative counts of a per-bucket histogram.
std::vector<uint64_t> cumulative(const Histogram& h, size_t buckets) {
  std::vector<uint64_t> c(buckets, 0);
  uint64_t run = 0;
  for (size_t i = 0; i < buckets; ++i) {
    run += i < h.counts.size() ? h.counts[i] : 0;
    c[i] = run;
  }
  return c;
}

struct KeyLess {
  bool operator()(const SeriesKey& a, const SeriesKey& b) const {
    return std::tie(a.values, a.code) < std::tie(b.values, b.code);
  }
};

}  // namespace

void RequestMetrics::render(std::string& out) const {
  // Merge the shards, sorted so the output is stable from scrape to scrape.
  std::map<SeriesKey, RequestSeries, KeyLess> requests;
  std::map<SeriesKey, TcpSeries, KeyLess> tcp;
  uint64_t overflow = 0;
  for (const auto& s : shards_) {
    absl::MutexLock lock(&s->mu);
    for (const auto& [k, v] : s->requests) {
      RequestSeries& m = requests[k];
      m.requests += v.requests;
      m.duration_ms.merge(v.duration_ms);
      m.request_bytes.merge(v.request_bytes);
      m.response_bytes.merge(v.response_bytes);
    }
    for (const auto& [k, v] : s->tcp) {
      TcpSeries& m = tcp[k];
      m.opened += v.opened;
      m.closed += v.closed;
      m.sent += v.sent;
      m.received += v.received;
    }
    overflow += s->overflow;
  }

  ExpositionWriter w;
  w.family("istio_requests_total", "Requests proxied by meshd (Istio standard metric).",
           MetricType::kCounter);
  for (const auto& [k, v] : requests)
    w.sample(istioLabels(k, true), static_cast<double>(v.requests));
  const struct {
    const char* name;
    const char* help;
    Histogram RequestSeries::*field;
    const std::vector<double>& bounds;
  } histograms[] = {
      {"istio_request_duration_milliseconds",
       "Time from the first request byte to the last response byte, in milliseconds.",
       &RequestSeries::duration_ms, durationBucketsMs()},
      {"istio_request_bytes", "Request sizes (head and body), in bytes.",
       &RequestSeries::request_bytes, sizeBuckets()},
      {"istio_response_bytes", "Response sizes (head and body), in bytes.",
       &RequestSeries::response_bytes, sizeBuckets()},
  };
  for (const auto& h : histograms) {
    w.family(h.name, h.help, MetricType::kHistogram);
    for (const auto& [k, v] : requests) {
      const Histogram& hist = v.*(h.field);
      w.histogram(istioLabels(k, true), h.bounds, cumulative(hist, h.bounds.size()), hist.sum,
                  hist.count);
    }
  }
  const struct {
    const char* name;
    const char* help;
    uint64_t TcpSeries::*field;
  } counters[] = {
      {"istio_tcp_connections_opened_total", "TCP connections opened through meshd's proxy.",
       &TcpSeries::opened},
      {"istio_tcp_connections_closed_total", "TCP connections closed through meshd's proxy.",
       &TcpSeries::closed},
      {"istio_tcp_sent_bytes_total", "Bytes sent to the client (response direction).",
       &TcpSeries::sent},
      {"istio_tcp_received_bytes_total", "Bytes received from the client (request direction).",
       &TcpSeries::received},
  };
  for (const auto& c : counters) {
    w.family(c.name, c.help, MetricType::kCounter);
    for (const auto& [k, v] : tcp)
      w.sample(istioLabels(k, false), static_cast<double>(v.*(c.field)));
  }
  w.family("meshd_request_metrics_overflow_total",
           "Requests and connections counted under the all-\"unknown\" series because the "
           "label-set bound was reached.",
           MetricType::kCounter);
  w.sample(static_cast<double>(overflow));
  out += w.text();
}

}  // namespace meshd::telemetry
