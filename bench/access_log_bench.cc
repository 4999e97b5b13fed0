// access_log_bench: Google Benchmark of the JSON access log (userspace/telemetry/
// access_log.h): formatting one typical line into a reused buffer, and AccessLog::log()
// (format + hand-off to the flusher, which writes to /dev/null) from 1 and 2 threads.
// Each reports `allocs_per_line` (operator new calls per line, counted by
// tests/unit/counting_new.cc): 0 once the buffers are warm.
//   build/bench/access_log_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <string>

#include "counting_new.h"
#include "telemetry/access_log.h"

namespace meshd::telemetry {
namespace {

AccessLogEntry typicalEntry() {
  AccessLogEntry e;
  e.start_unix_us = 1'764'045'407'250'000;
  e.method = "GET";
  e.path = "/api/v1/namespaces/shop/orders?limit=50&cursor=eyJpZCI6MTIzfQ";
  e.protocol = "HTTP/1.1";
  e.response_code = 200;
  e.bytes_received = 412;
  e.bytes_sent = 2318;
  e.duration_us = 3'400;
  e.user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36";
  e.request_id = "6f1c2a9e-8d4b-4b7a-9f3e-2c1d0e9b8a7f";
  e.authority = "orders.shop.svc.cluster.local:8080";
  e.upstream_host = *SocketAddress::parse("10.244.1.17:8080");
  e.upstream_cluster = "shop/orders:8080";
  e.downstream_local = *SocketAddress::parse("10.96.12.40:8080");
  e.downstream_remote = *SocketAddress::parse("10.244.2.9:51834");
  return e;
}

void BM_Format(benchmark::State& state) {
  const AccessLogEntry e = typicalEntry();
  std::string out;
  out.reserve(4096);
  size_t bytes = 0;
  meshd::testing::startCountingAllocations();
  for (auto _ : state) {
    out.clear();
    formatAccessLogJson(e, out);
    benchmark::DoNotOptimize(out.data());
    bytes = out.size();
  }
  const size_t allocs = meshd::testing::stopCountingAllocations();
  state.counters["allocs_per_line"] =
      benchmark::Counter(static_cast<double>(allocs) / static_cast<double>(state.iterations()));
  state.counters["line_bytes"] = static_cast<double>(bytes);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_Format);

AccessLog* shared_log = nullptr;

void BM_Log(benchmark::State& state) {
  if (state.thread_index() == 0) {
    AccessLog::Options o;
    o.shards = 4;
    shared_log = AccessLog::open("/dev/null", o)->release();
    for (int i = 0; i < 10'000; ++i) shared_log->log(typicalEntry());  // warm the chunks
    shared_log->flush();
  }
  const AccessLogEntry e = typicalEntry();
  if (state.thread_index() == 0) meshd::testing::startCountingAllocations();
  for (auto _ : state) shared_log->log(e);
  if (state.thread_index() == 0) {
    const size_t allocs = meshd::testing::stopCountingAllocations();
    state.counters["allocs_per_line"] =
        benchmark::Counter(static_cast<double>(allocs) / static_cast<double>(state.iterations()));
    delete shared_log;
    shared_log = nullptr;
  }
}
BENCHMARK(BM_Log)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace meshd::telemetry

BENCHMARK_MAIN();
