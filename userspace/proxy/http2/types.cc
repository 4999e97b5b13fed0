#include "proxy/http2/types.h"

#include <chrono>
#include <cstring>

namespace meshd::proxy::http2 {
namespace {

class SteadyClock final : public Clock {
 public:
  uint64_t nowMs() const override {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
  }
};

}  // namespace

const Clock& steadyClock() {
  static const SteadyClock clock;
  return clock;
}

PrefaceMatch matchPreface(absl::Span<const uint8_t> data) {
  size_t n = data.size() < kClientPrefaceSize ? data.size() : kClientPrefaceSize;
  if (n > 0 && std::memcmp(data.data(), kClientPreface, n) != 0) return PrefaceMatch::kMismatch;
  return n == kClientPrefaceSize ? PrefaceMatch::kComplete : PrefaceMatch::kPartial;
}

const char* errorCodeName(uint32_t code) {
  static constexpr const char* kNames[] = {"NO_ERROR",
                                           "PROTOCOL_ERROR",
                                           "INTERNAL_ERROR",
                                           "FLOW_CONTROL_ERROR",
                                           "SETTINGS_TIMEOUT",
                                           "STREAM_CLOSED",
                                           "FRAME_SIZE_ERROR",
                                           "REFUSED_STREAM",
                                           "CANCEL",
                                           "COMPRESSION_ERROR",
                                           "CONNECT_ERROR",
                                           "ENHANCE_YOUR_CALM",
                                           "INADEQUATE_SECURITY",
                                           "HTTP_1_1_REQUIRED"};
  return code < sizeof(kNames) / sizeof(kNames[0]) ? kNames[code] : "UNKNOWN";
}

}  // namespace meshd::proxy::http2
