// libFuzzer target for the resource parser: the input bytes are one YAML file
// given to resources::parseFiles (what `meshctl apply -f` sends). Checks, besides
// "no crash, hang or leak" (ASan/UBSan/libFuzzer):
//  - parseFiles returns, whatever the bytes, without an exception escaping;
//  - every error line names the file (errors are "file[:line:col]: ...");
//  - a successful parse yields resources that re-validate: validate() on the
//    resource as parsed, resourceFromJson() on its JSON object (how the store
//    reloads it) with the same key, and the same after a JSON text round trip
//    (dump + parse, what the store writes and reads), and the typed view of its
//    kind succeeds;
//  - validateSet() over the parsed set returns (its verdict is not checked).
// A broken invariant is __builtin_trap(), which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "resources/resource.h"
#include "resources/resource_set.h"

namespace meshd::resources {
namespace {

constexpr char kFileName[] = "fuzz.yaml";

void check(bool ok) {
  if (!ok) __builtin_trap();
}

absl::Status typedView(const Resource& r) {
  if (r.key.kind == kKindService) return serviceSpec(r).status();
  if (r.key.kind == kKindEndpointSlice) return endpointSliceSpec(r).status();
  if (r.key.kind == kKindTrafficPolicy) return trafficPolicySpec(r).status();
  if (r.key.kind == kKindHttpRoute) return httpRouteSpec(r).status();
  if (r.key.kind == kKindGrpcRoute) return grpcRouteSpec(r).status();
  return absl::InvalidArgumentError("unknown kind");
}

void fuzzOne(std::string_view data) {
  const SourceFile file{kFileName, std::string(data)};
  absl::StatusOr<std::vector<Resource>> parsed = parseFiles({&file, 1});
  if (!parsed.ok()) {
    check(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    for (absl::string_view line : absl::StrSplit(parsed.status().message(), '\n')) {
      if (!absl::StartsWith(line, kFileName)) {
        std::fprintf(stderr, "error line without the file name: %.*s\n",
                     static_cast<int>(line.size()), line.data());
        __builtin_trap();
      }
    }
    return;
  }
  ResourceSet set;
  for (const Resource& r : *parsed) {
    check(validate(r).ok());
    check(typedView(r).ok());
    absl::StatusOr<Resource> again = resourceFromJson(r.object);
    check(again.ok() && again->key == r.key);
    // The store keeps resources as JSON text; dump() throws on invalid UTF-8,
    // so a parsed resource holding some would not survive being stored.
    nlohmann::json reread = nlohmann::json::parse(r.object.dump());
    absl::StatusOr<Resource> stored = resourceFromJson(std::move(reread));
    check(stored.ok() && stored->key == r.key);
    set.upsert(r);
  }
  (void)validateSet(set);
}

}  // namespace
}  // namespace meshd::resources

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  meshd::resources::fuzzOne(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
