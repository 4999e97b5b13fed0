// The daemon's side of the L7 proxy: what the proxy core (userspace/proxy/core) asks of
// meshd — where a connection was going (the kernel's mesh_orig_dst), where a request
// goes (the routing table), and what to count (Istio's request metrics).
//
// Configuration reaches the workers as an immutable Snapshot, built on the updater
// thread before the datapath is programmed (state::ConfigObserver) and published by
// bumping a generation counter; each worker keeps its own reference and re-reads it
// only when the generation moved (one relaxed atomic load per request, no lock).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "datapath/orig_dst.h"
#include "proxy/core/proxy.h"
#include "proxy/routing/route_table.h"
#include "state/model.h"
#include "telemetry/access_log.h"
#include "telemetry/request_metrics.h"

namespace meshd::daemon {

class L7Config : public state::ConfigObserver,
                 public proxy::Router,
                 public proxy::Observer,
                 public proxy::OriginalDst {
 public:
  // `orig_dst` null: every lookup misses (no kernel redirect; tests).
  L7Config(datapath::OrigDstTablePtr orig_dst, unsigned metric_shards);
  ~L7Config() override;

  // state::ConfigObserver (updater thread).
  void willApply(const state::ResourceSet& resources,
                 const state::DesiredLbState& desired) override;

  // proxy::Router (worker threads).
  void route(const proxy::RequestInfo& req, proxy::RouteDecision& out) override;
  bool routeConnection(const SocketAddress& orig_dst, SocketAddress& upstream,
                       std::string_view& cluster) override;
  // proxy::Observer (worker threads).
  void onRequest(const proxy::RequestRecord& record) override;
  // proxy::OriginalDst (worker threads).
  std::optional<SocketAddress> lookup(int fd, const SocketAddress& peer) override;

  telemetry::RequestMetrics& metrics() { return metrics_; }
  // The access log (--access-log): one line per record, after the metrics. Set before
  // the proxy starts; null (the default) = off.
  void setAccessLog(telemetry::AccessLogPtr log) { access_log_ = std::move(log); }
  telemetry::AccessLog* accessLog() { return access_log_.get(); }
  // Services with routes in the current snapshot (for status).
  size_t routedServices() const;

  struct Snapshot;

 private:
  std::shared_ptr<const Snapshot> snapshot() const;

  datapath::OrigDstTablePtr orig_dst_;
  telemetry::RequestMetrics metrics_;
  telemetry::AccessLogPtr access_log_;
  std::atomic<unsigned> next_shard_{0};
  // Unique in the process (not the address: tests make several L7Configs, and a worker
  // thread's cached snapshot must not outlive the instance it came from).
  const uint64_t instance_;
  std::atomic<uint64_t> generation_{0};
  mutable absl::Mutex mu_;
  std::shared_ptr<const Snapshot> current_ ABSL_GUARDED_BY(mu_);
  // Cluster names handed out without a pin (routeConnection); bounded by the
  // configuration's distinct Service ports, never freed.
  absl::node_hash_set<std::string> interned_ ABSL_GUARDED_BY(mu_);
};

}  // namespace meshd::daemon
