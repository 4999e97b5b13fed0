// Per-request and per-connection metrics of the L7 proxy, with Istio's standard
// metric names and labels (istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes, istio_response_bytes, istio_tcp_*), so existing Istio
// dashboards and alerts work unchanged. docs/metrics.md lists them.
//
// Recording is sharded: each proxy worker records into its own shard, whose mutex
// only the scrape ever contends for (one uncontended lock per request: ~20 ns, and
// it keeps the scrape exact). A label set seen before costs a hash lookup and no
// allocation; a new one allocates its key once. Label sets are bounded per shard
// (kMaxSeriesPerShard): beyond it, requests are counted under one overflow series
// whose labels are all "unknown" and meshd_request_metrics_overflow_total grows.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/synchronization/mutex.h"

namespace meshd::telemetry {

// The labels of one request or connection, as views valid for the call only.
// Empty views are rendered as "unknown" (Istio's convention).
struct RequestLabels {
  std::string_view reporter = "source";  // Istio: "source" | "destination" | "waypoint"
  std::string_view source_workload;
  std::string_view source_namespace;
  std::string_view source_principal;  // SPIFFE id when mTLS identified the peer
  std::string_view destination_workload;
  std::string_view destination_namespace;
  std::string_view destination_principal;
  std::string_view destination_service_name;       // the Service, e.g. "web"
  std::string_view destination_service_namespace;  // its namespace
  std::string_view request_protocol;               // "http" | "grpc" | "tcp"
  uint16_t response_code = 0;                      // 0 for TCP
  std::string_view grpc_response_status;           // "" unless gRPC
  std::string_view response_flags;                 // Envoy flags, "" = none ("-")
  std::string_view connection_security_policy;     // "mutual_tls" | "none" | "unknown"
};

class RequestMetrics {
 public:
  static constexpr size_t kMaxSeriesPerShard = 10'000;
  // Istio's default buckets: milliseconds, and bytes (1 to 1e9 by factors of 10).
  static const std::vector<double>& durationBucketsMs();
  static const std::vector<double>& sizeBuckets();

  // `max_series_per_shard` bounds the label sets of each shard (request and TCP
  // series separately).
  explicit RequestMetrics(unsigned shards, size_t max_series_per_shard = kMaxSeriesPerShard);
  ~RequestMetrics();
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  unsigned shards() const { return static_cast<unsigned>(shards_.size()); }

  // One finished request. `shard` < shards(); one writer thread per shard is the
  // intended use (several are still correct, only slower).
  void recordRequest(unsigned shard, const RequestLabels& labels, uint64_t duration_us,
                     uint64_t request_bytes, uint64_t response_bytes);
  // TCP connections (opaque relays, and the connections HTTP runs over).
  void recordTcpOpened(unsigned shard, const RequestLabels& labels);
  void recordTcpClosed(unsigned shard, const RequestLabels& labels, uint64_t sent_bytes,
                       uint64_t received_bytes);

  // Appends the families in Prometheus text format (all shards merged).
  void render(std::string& out) const;

  // Totals over all shards (tests, meshctl).
  uint64_t requestsTotal() const;

 private:
  struct Shard;
  std::vector<std::unique_ptr<Shard>> shards_;
  size_t max_series_;
};

}  // namespace meshd::telemetry
