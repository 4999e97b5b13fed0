// http1_bench: Google Benchmark microbenchmarks of the L7 proxy's HTTP/1.1 codec
// (userspace/proxy/http1): a typical ~400-byte request head, the same head arriving in
// three reads, a response head, and a chunked body. Each benchmark reports
// `allocs_per_msg`, the operator new calls per parsed message counted by a replacement
// operator new (tests/unit/counting_new.cc): it must be 0 on the hot path.
//   build/bench/http1_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>

#include "counting_new.h"
#include "proxy/http1/chunked_decoder.h"
#include "proxy/http1/head_parser.h"

namespace meshd::proxy::http1 {
namespace {

// What a service client sends through a mesh: ~400 bytes, 8 fields.
const std::string kRequest =
    "GET /api/v1/namespaces/shop/orders?limit=50&cursor=eyJpZCI6MTIzfQ HTTP/1.1\r\n"
    "Host: orders.shop.svc.cluster.local:8080\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
    "Accept: application/json, text/plain, */*\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "X-Request-Id: 6f1c2a9e-8d4b-4b7a-9f3e-2c1d0e9b8a7f\r\n"
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

const std::string kResponse =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 1024\r\n"
    "Date: Wed, 25 Nov 2026 00:00:00 GMT\r\n"
    "Server: backend\r\n"
    "\r\n";

std::string chunkedBody() {
  std::string s;
  for (int i = 0; i < 8; ++i) s += "200\r\n" + std::string(512, 'x') + "\r\n";
  return s + "0\r\nX-Checksum: 1234\r\n\r\n";
}

void reportAllocations(benchmark::State& state, size_t allocations) {
  state.counters["allocs_per_msg"] =
      benchmark::Counter(static_cast<double>(allocations), benchmark::Counter::kAvgIterations);
}

void BM_RequestHead(benchmark::State& state) {
  RequestParser parser;
  meshd::testing::startCountingAllocations();
  for (auto _ : state) {
    parser.reset();
    ParseStatus st = parser.parse(kRequest);
    benchmark::DoNotOptimize(st);
    benchmark::DoNotOptimize(parser.head().framing);
  }
  reportAllocations(state, meshd::testing::stopCountingAllocations());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRequest.size()));
  state.SetLabel(std::to_string(kRequest.size()) + " B head");
}
BENCHMARK(BM_RequestHead);

// The head in three reads: the parser resumes where it stopped each time.
void BM_RequestHeadThreeReads(benchmark::State& state) {
  RequestParser parser;
  const std::string_view all = kRequest;
  meshd::testing::startCountingAllocations();
  for (auto _ : state) {
    parser.reset();
    ParseStatus st = parser.parse(all.substr(0, 100));
    st = parser.parse(all.substr(0, 250));
    st = parser.parse(all);
    benchmark::DoNotOptimize(st);
  }
  reportAllocations(state, meshd::testing::stopCountingAllocations());
}
BENCHMARK(BM_RequestHeadThreeReads);

void BM_ResponseHead(benchmark::State& state) {
  ResponseParser parser;
  meshd::testing::startCountingAllocations();
  for (auto _ : state) {
    parser.reset();
    ParseStatus st = parser.parse(kResponse, RequestContext());
    benchmark::DoNotOptimize(st);
  }
  reportAllocations(state, meshd::testing::stopCountingAllocations());
}
BENCHMARK(BM_ResponseHead);

void BM_ChunkedBody(benchmark::State& state) {
  const std::string body = chunkedBody();
  ChunkedDecoder decoder;
  meshd::testing::startCountingAllocations();
  for (auto _ : state) {
    decoder.reset();
    std::string_view in = body;
    size_t data = 0;
    while (true) {
      const ChunkedDecoder::Result r = decoder.decode(in);
      in.remove_prefix(r.consumed);
      if (r.status != ChunkedDecoder::Status::kData) break;
      data += r.data.size();
    }
    benchmark::DoNotOptimize(data);
  }
  reportAllocations(state, meshd::testing::stopCountingAllocations());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
  state.SetLabel(std::to_string(body.size()) + " B body, 8 chunks + trailer");
}
BENCHMARK(BM_ChunkedBody);

}  // namespace
}  // namespace meshd::proxy::http1

BENCHMARK_MAIN();
