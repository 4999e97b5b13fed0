#include "telemetry/meshd_metrics.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "telemetry/exposition.h"

namespace meshd::telemetry {

std::string renderMetrics(const MeshdMetrics& m) {
  ExpositionWriter w;
  w.family("meshd_build_info", "meshd build; the value is always 1.", MetricType::kGauge);
  w.sample({{"version", m.version}}, 1);
  w.family("meshd_ready", "1 when BPF programs are attached and the last reconcile succeeded.",
           MetricType::kGauge);
  w.sample(m.ready ? 1 : 0);
  w.family("meshd_frontends", "Service frontends (VIP:port/protocol) in the desired state.",
           MetricType::kGauge);
  w.sample(static_cast<double>(m.frontends));
  w.family("meshd_backends", "Backends in the desired state.", MetricType::kGauge);
  w.sample(static_cast<double>(m.backends));
  w.family("meshd_reconcile_total", "Reconciles of the BPF maps, by result.", MetricType::kCounter);
  w.sample({{"result", "ok"}}, static_cast<double>(m.reconcile_ok));
  w.sample({{"result", "error"}}, static_cast<double>(m.reconcile_error));
  w.family("meshd_reconcile_duration_seconds", "Duration of the last reconcile.",
           MetricType::kGauge);
  w.sample(m.reconcile_seconds);

  w.family("meshd_bpf_events_total",
           "Kernel datapath events by reason (mesh_stats, summed over CPUs).",
           MetricType::kCounter);
  for (const auto& [reason, count] : m.bpf_events) {
    w.sample({{"reason", reason}}, static_cast<double>(count));
  }

  // One series per (namespace, service, backend). The kernel counters belong
  // to the backend id: if two frontends of one service share a backend id
  // (same address:port) count it once; different ids under the same labels
  // (e.g. TCP and UDP) are summed.
  struct Sum {
    int64_t live = 0;
    uint64_t total = 0;
    uint64_t failures = 0;
    uint32_t consecutive = 0;  // the worse of summed ids
    bool ejected = false;
    double srtt = 0;  // the slower of summed ids
  };
  std::map<std::tuple<std::string, std::string, std::string>, Sum> series;
  absl::flat_hash_set<std::pair<std::tuple<std::string, std::string, std::string>, uint32_t>> seen;
  for (const BackendSample& b : m.backend_samples) {
    auto key = std::make_tuple(b.ns, b.service, b.backend);
    Sum& s = series[key];
    if (!seen.insert({key, b.backend_id}).second) continue;
    s.live += b.live_connections;
    s.total += b.connections_total;
    s.failures += b.connect_failures_total;
    s.consecutive = std::max(s.consecutive, b.consecutive_failures);
    s.ejected = s.ejected || b.ejected;
    s.srtt = std::max(s.srtt, b.srtt_seconds);
  }
  auto labels = [](const std::tuple<std::string, std::string, std::string>& k) {
    return Labels{
        {"service", std::get<1>(k)}, {"namespace", std::get<0>(k)}, {"backend", std::get<2>(k)}};
  };
  w.family("meshd_backend_live_connections",
           "TCP connections to the backend counted at connect and not yet closed.",
           MetricType::kGauge);
  for (const auto& [k, s] : series) w.sample(labels(k), static_cast<double>(s.live));
  w.family("meshd_backend_connections_total",
           "Connections (TCP) and first sends (UDP) steered to the backend.", MetricType::kCounter);
  for (const auto& [k, s] : series) w.sample(labels(k), static_cast<double>(s.total));
  w.family("meshd_backend_connect_failures_total",
           "TCP connects to the backend that closed before ESTABLISHED.", MetricType::kCounter);
  for (const auto& [k, s] : series) w.sample(labels(k), static_cast<double>(s.failures));
  w.family("meshd_backend_consecutive_failures",
           "Failed TCP connects to the backend since its last success (outlier detection).",
           MetricType::kGauge);
  for (const auto& [k, s] : series) w.sample(labels(k), static_cast<double>(s.consecutive));
  w.family("meshd_backend_ejected", "1 while outlier detection has the backend ejected.",
           MetricType::kGauge);
  for (const auto& [k, s] : series) w.sample(labels(k), s.ejected ? 1 : 0);
  w.family("meshd_backend_srtt_seconds",
           "Moving average of the kernel's smoothed RTT to the backend (0 = no sample yet).",
           MetricType::kGauge);
  for (const auto& [k, s] : series) w.sample(labels(k), s.srtt);

  auto svc = [](const ServiceSample& s) {
    return Labels{{"service", s.service}, {"namespace", s.ns}, {"frontend", s.frontend}};
  };
  auto withReason = [&](const ServiceSample& s, const char* reason) {
    Labels l = svc(s);
    l.emplace_back("reason", reason);
    return l;
  };
  w.family("meshd_service_live_connections",
           "TCP connections through the service frontend, counted at connect, not yet closed.",
           MetricType::kGauge);
  for (const auto& s : m.service_samples) w.sample(svc(s), static_cast<double>(s.live_connections));
  w.family("meshd_service_connects_refused_total",
           "connect() calls to the service refused in the kernel (ECONNREFUSED), by reason.",
           MetricType::kCounter);
  for (const auto& s : m.service_samples) {
    w.sample(withReason(s, "max_connections"), static_cast<double>(s.refused_max_connections));
    w.sample(withReason(s, "max_connections_per_backend"),
             static_cast<double>(s.refused_backend_limits));
    w.sample(withReason(s, "connect_rate"), static_cast<double>(s.refused_connect_rate));
    w.sample(withReason(s, "client_connect_rate"),
             static_cast<double>(s.refused_client_connect_rate));
    w.sample(withReason(s, "all_ejected"), static_cast<double>(s.refused_all_ejected));
    w.sample(withReason(s, "authz"), static_cast<double>(s.refused_authz));
  }
  w.family("meshd_service_connects_rerouted_total",
           "Connects moved from a full or ejected backend to another one of the service.",
           MetricType::kCounter);
  for (const auto& s : m.service_samples) w.sample(svc(s), static_cast<double>(s.rerouted));
  w.family("meshd_service_ejected_backends",
           "Backends ejected now that count against the service's max ejection percent.",
           MetricType::kGauge);
  for (const auto& s : m.service_samples) w.sample(svc(s), static_cast<double>(s.ejected_backends));
  w.family("meshd_service_ejections_total",
           "Outlier ejections of the service's backends: made, or skipped at the max ejection "
           "percent.",
           MetricType::kCounter);
  for (const auto& s : m.service_samples) {
    Labels made = svc(s), skipped = svc(s);
    made.emplace_back("result", "ejected");
    skipped.emplace_back("result", "skipped_max_percent");
    w.sample(made, static_cast<double>(s.ejections));
    w.sample(skipped, static_cast<double>(s.ejections_skipped));
  }
  w.family("meshd_draining_ids",
           "Removed backends and services whose connections are still open (their ids are "
           "reused only once they close).",
           MetricType::kGauge);
  w.sample({{"kind", "backend"}}, static_cast<double>(m.draining_backends));
  w.sample({{"kind", "service"}}, static_cast<double>(m.draining_services));
  w.family("meshd_strict_dropped_syns_total",
           "Plaintext TCP SYNs to a STRICT port of a local workload that did not come through "
           "meshd, dropped at the workload's interface (port \"0\": the whole address).",
           MetricType::kCounter);
  for (const auto& s : m.strict_samples) {
    w.sample({{"address", s.address}, {"port", std::to_string(s.port)}},
             static_cast<double>(s.syn_dropped));
  }
  return w.text();
}

HttpHandler makeAdminHandler(std::function<absl::Status()> ready,
                             std::function<std::string()> metrics) {
  return [ready = std::move(ready), metrics = std::move(metrics)](std::string_view path) {
    HttpResponse r;
    if (path == "/healthz") {
      r.body = "ok\n";
    } else if (path == "/readyz") {
      absl::Status s = ready();
      if (s.ok()) {
        r.body = "ready\n";
      } else {
        r.status = 503;
        r.body = absl::StrCat("not ready: ", s.message(), "\n");
      }
    } else if (path == "/metrics") {
      r.content_type = std::string(kExpositionContentType);
      r.body = metrics();
    } else {
      r.status = 404;
      r.body =
          absl::StrCat("no such path ", std::string(path), "; try /healthz, /readyz or /metrics\n");
    }
    return r;
  };
}

}  // namespace meshd::telemetry
