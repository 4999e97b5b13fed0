// L7Config::onRequest: proxy records (protocol "http/1.1", "http/2", "grpc", "tcp") become
// Istio request metrics with the right request_protocol and grpc_response_status. No
// configuration is applied, so the workload and service labels are "unknown".
#include <string>

#include "daemon/l7.h"
#include "gtest/gtest.h"

namespace meshd::daemon {
namespace {

std::string requestLines(L7Config& cfg) {
  std::string out;
  cfg.metrics().render(out);
  std::string lines;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t end = out.find('\n', pos);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(pos, end - pos);
    if (line.rfind("istio_requests_total{", 0) == 0) lines += line + "\n";
    pos = end + 1;
  }
  return lines;
}

TEST(L7ConfigTest, Http2IsHttpAndGrpcCarriesItsStatus) {
  L7Config cfg(nullptr, 1);
  proxy::RequestRecord r;
  r.response_code = 200;
  r.protocol = "http/2";
  cfg.onRequest(r);
  r.protocol = "grpc";
  r.grpc_status = "5";
  cfg.onRequest(r);
  r.protocol = "http/1.1";
  r.grpc_status = "";
  r.response_code = 404;
  r.response_flags = "NR";
  cfg.onRequest(r);
  const std::string lines = requestLines(cfg);
  // http/2 and http/1.1 are both "http" (Istio's request_protocol), without a grpc status.
  EXPECT_NE(lines.find("request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\""),
            std::string::npos)
      << lines;
  EXPECT_NE(
      lines.find("request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"5\""),
      std::string::npos)
      << lines;
  EXPECT_NE(lines.find("request_protocol=\"http\",response_code=\"404\",grpc_response_status=\"\","
                       "response_flags=\"NR\""),
            std::string::npos)
      << lines;
}

}  // namespace
}  // namespace meshd::daemon
