#include "resources/resource.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "resources/decode.h"
#include "resources/source_positions.h"
#include "resources/yaml_json.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace meshd::resources {
namespace {

absl::Status joinProblems(const std::vector<std::string>& lines) {
  if (lines.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
}

// yaml-cpp 0.7 (Debian 12) never returns from LoadAll on a document that starts
// with a token no node can start with, e.g. a lone ',' (upstream issue #1040,
// fixed after 0.8.0 by PR #1319): each turn yields one more null document without
// consuming the token, until memory runs out. This walks the documents' events
// first (no tree is built) and throws, like LoadAll would, when a document starts
// where the previous one did.
class NoProgressCheck : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (started_ && mark.pos == last_start_.pos) {
      throw YAML::ParserException(mark, "unexpected token here (a ',' outside [] or {}?)");
    }
    started_ = true;
    last_start_ = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  bool started_ = false;
  YAML::Mark last_start_;
};

std::vector<YAML::Node> loadAll(const std::string& content) {
  std::istringstream in(content);
  YAML::Parser parser(in);
  NoProgressCheck check;
  while (parser.HandleNextDocument(check)) {
  }
  return YAML::LoadAll(content);
}

std::vector<std::string> problemsOf(const Resource& r, const Decoded& decoded) {
  std::vector<std::string> lines;
  for (const auto& p : decoded.problems) {
    lines.push_back(formatProblem(r.key, r.source, r.positions.get(), r.line, p));
  }
  return lines;
}

template <typename Spec>
absl::StatusOr<Spec> typedView(const Resource& r, const char* kind) {
  if (r.key.kind != kind) {
    return absl::InvalidArgumentError(
        absl::StrCat(r.key.toString(), ": is a ", r.key.kind, ", not a ", kind));
  }
  Decoded decoded = decodeDocument(r.object);
  RETURN_IF_ERROR(joinProblems(problemsOf(r, decoded)));
  auto* spec = std::get_if<Spec>(&decoded.spec);
  if (spec == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(r.key.toString(), ": object is not a ", kind));
  }
  return std::move(*spec);
}

}  // namespace

std::string ResourceKey::toString() const { return absl::StrCat(kind, "/", ns, "/", name); }

absl::StatusOr<ResourceKey> ResourceKey::parse(std::string_view text) {
  absl::string_view t(text.data(), text.size());
  std::vector<std::string> parts = absl::StrSplit(t, '/');
  if (parts.size() == 2) parts.insert(parts.begin() + 1, kDefaultNamespace);
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() || parts[2].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", t, "\" is not a resource name (write Kind/namespace/name)"));
  }
  return ResourceKey{parts[0], parts[1], parts[2]};
}

absl::StatusOr<std::vector<Resource>> parseFiles(absl::Span<const SourceFile> files) {
  std::vector<std::string> errors;
  std::vector<std::pair<Resource, bool>> all;  // every document, and whether it is valid
  for (const SourceFile& file : files) {
    std::string display = file.name == "-" ? "<stdin>" : file.name;
    std::vector<YAML::Node> docs;
    try {
      docs = loadAll(file.content);
    } catch (const YAML::Exception& e) {
      // yaml-cpp marks are 0-based.
      if (e.mark.is_null()) {
        errors.push_back(absl::StrCat(display, ": YAML syntax error: ", escapeControl(e.msg)));
      } else {
        errors.push_back(absl::StrCat(display, ":", e.mark.line + 1, ":", e.mark.column + 1,
                                      ": YAML syntax error: ", escapeControl(e.msg)));
      }
      continue;
    } catch (const std::exception& e) {
      errors.push_back(absl::StrCat(display, ": cannot parse YAML: ", escapeControl(e.what())));
      continue;
    }
    for (const YAML::Node& doc : docs) {
      if (!doc.IsDefined() || doc.IsNull()) continue;  // empty document ("---" at the end)
      auto positions = std::make_shared<SourcePositions>();
      std::vector<ConversionProblem> conversion;
      Resource r;
      r.object = yamlToJson(doc, *positions, conversion);
      r.source = file.name;
      r.line = doc.Mark().is_null() ? 0 : doc.Mark().line + 1;
      r.positions = positions;
      Decoded decoded = decodeDocument(r.object);
      r.key = decoded.key;
      for (const auto& c : conversion) {
        errors.push_back(formatProblem(r.key, r.source, positions.get(), r.line,
                                       Problem{c.path, c.reason, c.at_key, c.pos}));
      }
      auto lines = problemsOf(r, decoded);
      errors.insert(errors.end(), lines.begin(), lines.end());
      const bool valid = conversion.empty() && lines.empty();
      all.push_back({std::move(r), valid});
    }
  }
  // Duplicates within one apply (also among invalid documents, so one run
  // reports everything): report the later one, naming the first.
  absl::flat_hash_map<ResourceKey, const Resource*> first;
  for (const auto& [r, valid] : all) {
    if (r.key.kind == "?" || r.key.name == "?") continue;
    auto [it, inserted] = first.emplace(r.key, &r);
    if (!inserted) {
      std::string where = locate(*it->second, "metadata.name");
      errors.push_back(
          formatError(r, "metadata.name",
                      absl::StrCat("duplicate: ", r.key.toString(), " is also defined at ",
                                   where.empty() ? "an earlier document" : where)));
    }
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  std::vector<Resource> out;
  out.reserve(all.size());
  for (auto& [r, valid] : all) out.push_back(std::move(r));
  return out;
}

absl::Status validate(const Resource& r) {
  Decoded decoded = decodeDocument(r.object);
  std::vector<std::string> lines = problemsOf(r, decoded);
  if (lines.empty() && !(decoded.key == r.key)) {
    lines.push_back(formatError(r, "",
                                absl::StrCat("key does not match the object (the object is ",
                                             decoded.key.toString(), ")")));
  }
  return joinProblems(lines);
}

absl::StatusOr<Resource> resourceFromJson(nlohmann::json object, std::string source, int line) {
  Resource r;
  r.object = std::move(object);
  r.source = std::move(source);
  r.line = line;
  Decoded decoded = decodeDocument(r.object);
  r.key = decoded.key;
  RETURN_IF_ERROR(joinProblems(problemsOf(r, decoded)));
  return r;
}

std::string formatError(const Resource& r, std::string_view field_path, std::string_view reason) {
  return formatProblem(r.key, r.source, r.positions.get(), r.line,
                       Problem{std::string(field_path), std::string(reason), false, {}});
}

std::string locate(const Resource& r, std::string_view field_path) {
  std::string file = r.source == "-" ? "<stdin>" : r.source;
  if (file.empty()) return "";
  if (r.positions) {
    if (auto pos =
            r.positions->find(absl::string_view(field_path.data(), field_path.size()), false)) {
      return absl::StrCat(file, ":", pos->line, ":", pos->column);
    }
  }
  if (r.line != 0) return absl::StrCat(file, ":", r.line);
  return file;
}

absl::StatusOr<ServiceSpec> serviceSpec(const Resource& r) {
  return typedView<ServiceSpec>(r, kKindService);
}
absl::StatusOr<EndpointSliceSpec> endpointSliceSpec(const Resource& r) {
  return typedView<EndpointSliceSpec>(r, kKindEndpointSlice);
}
absl::StatusOr<TrafficPolicySpec> trafficPolicySpec(const Resource& r) {
  return typedView<TrafficPolicySpec>(r, kKindTrafficPolicy);
}
absl::StatusOr<NodeSpec> nodeSpec(const Resource& r) { return typedView<NodeSpec>(r, kKindNode); }
absl::StatusOr<WorkloadSpec> workloadSpec(const Resource& r) {
  return typedView<WorkloadSpec>(r, kKindWorkload);
}
absl::StatusOr<PeerAuthenticationSpec> peerAuthenticationSpec(const Resource& r) {
  return typedView<PeerAuthenticationSpec>(r, kKindPeerAuthentication);
}
absl::StatusOr<AuthorizationPolicySpec> authorizationPolicySpec(const Resource& r) {
  return typedView<AuthorizationPolicySpec>(r, kKindAuthorizationPolicy);
}
absl::StatusOr<RateLimitPolicySpec> rateLimitPolicySpec(const Resource& r) {
  return typedView<RateLimitPolicySpec>(r, kKindRateLimitPolicy);
}

absl::StatusOr<IpBlock> IpBlock::parse(std::string_view text) {
  absl::string_view t(text.data(), text.size());
  const size_t slash = t.find('/');
  auto ip =
      IpAddress::parse(std::string_view(t.substr(0, slash).data(), t.substr(0, slash).size()));
  if (!ip.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", t, "\" is not an address or address block (e.g. 10.0.0.0/8)"));
  }
  IpBlock b;
  b.address = *ip;
  const int max = ip->isV4() ? 32 : 128;
  b.prefix_len = static_cast<uint8_t>(max);
  if (slash != absl::string_view::npos) {
    absl::string_view len = t.substr(slash + 1);
    int n = -1;
    if (len.empty() || len.size() > 3 || len.find_first_not_of("0123456789") != len.npos ||
        !absl::SimpleAtoi(len, &n) || n > max) {
      return absl::InvalidArgumentError(absl::StrCat("\"", t, "\": prefix length must be 0-", max));
    }
    b.prefix_len = static_cast<uint8_t>(n);
  }
  IpBlock masked = b;
  for (int i = 0; i < 16; ++i) {
    const int keep = std::clamp(int(b.prefix_len) - i * 8, 0, 8);
    masked.address.bytes[i] &= static_cast<uint8_t>(0xff00 >> keep);
  }
  if (!(masked.address == b.address)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", t, "\" has host bits set (did you mean ", masked.toString(), "?)"));
  }
  return b;
}

bool IpBlock::contains(const IpAddress& a) const {
  if (a.family != address.family) return false;
  const int full = prefix_len / 8;
  for (int i = 0; i < full; ++i) {
    if (a.bytes[i] != address.bytes[i]) return false;
  }
  const int rest = prefix_len % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff00 >> rest);
  return (a.bytes[full] & mask) == address.bytes[full];
}

std::string IpBlock::toString() const { return absl::StrCat(address.toString(), "/", prefix_len); }

std::string spiffeId(std::string_view trust_domain, std::string_view ns,
                     std::string_view service_account) {
  return absl::StrCat("spiffe://", absl::string_view(trust_domain.data(), trust_domain.size()),
                      "/ns/", absl::string_view(ns.data(), ns.size()), "/sa/",
                      absl::string_view(service_account.data(), service_account.size()));
}

bool selectorMatches(const Labels& selector, const Labels& labels) {
  for (const auto& kv : selector) {
    if (!std::binary_search(labels.begin(), labels.end(), kv)) return false;
  }
  return true;
}

std::string_view mtlsModeName(MtlsMode m) {
  switch (m) {
    case MtlsMode::kDisable:
      return "DISABLE";
    case MtlsMode::kPermissive:
      return "PERMISSIVE";
    case MtlsMode::kStrict:
      return "STRICT";
    case MtlsMode::kUnset:
      break;
  }
  return "UNSET";
}

uint64_t RequestRate::unitNs() const {
  switch (unit) {
    case RateUnit::kMinute:
      return 60'000'000'000ULL;
    case RateUnit::kHour:
      return 3'600'000'000'000ULL;
    case RateUnit::kSecond:
      break;
  }
  return 1'000'000'000ULL;
}

absl::StatusOr<HttpRouteSpec> httpRouteSpec(const Resource& r) {
  return typedView<HttpRouteSpec>(r, kKindHttpRoute);
}
absl::StatusOr<GrpcRouteSpec> grpcRouteSpec(const Resource& r) {
  return typedView<GrpcRouteSpec>(r, kKindGrpcRoute);
}

bool RouteParentRef::binds(std::string_view service, uint16_t service_port,
                           std::string_view port_name) const {
  if (service != name) return false;
  if (port && *port != service_port) return false;
  if (!section_name.empty() && section_name != port_name) return false;
  return true;
}

bool isPrime(uint32_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint64_t d = 3; d * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

bool isDns1123Label(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!absl::ascii_islower(static_cast<unsigned char>(c)) &&
        !absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '-') {
      return false;
    }
  }
  return s.front() != '-' && s.back() != '-';
}

bool isDns1123Subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (absl::string_view label : absl::StrSplit(absl::string_view(s.data(), s.size()), '.')) {
    if (!isDns1123Label(std::string_view(label.data(), label.size()))) return false;
  }
  return true;
}

bool isIanaServiceName(std::string_view s) {
  // RFC 6335: 1-15 chars of [a-z0-9-], at least one letter, no leading,
  // trailing or doubled '-'.
  if (s.empty() || s.size() > 15 || !isDns1123Label(s)) return false;
  if (s.find("--") != std::string_view::npos) return false;  // RFC 6335
  for (char c : s) {
    if (absl::ascii_islower(static_cast<unsigned char>(c))) return true;
  }
  return false;
}

std::string algorithmName(state::LbAlgorithm a) {
  switch (a) {
    case state::LbAlgorithm::kRandom:
      return "Random";
    case state::LbAlgorithm::kWeightedRandom:
      return "WeightedRandom";
    case state::LbAlgorithm::kMaglev:
      return "Maglev";
    case state::LbAlgorithm::kLeastConnections:
      return "LeastConnections";
    case state::LbAlgorithm::kLeastLatency:
      return "LeastLatency";
  }
  return "Unknown";
}

std::optional<int64_t> parseDuration(std::string_view text) {
  if (text == "0") return 0;
  if (text.empty()) return std::nullopt;
  // Integer and fraction parts are kept exact (as Go does) up to 2^63 ns.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  struct Unit {
    std::string_view name;
    int64_t ns;
  };
  static constexpr Unit kUnits[] = {
      {"ns", 1},         {"us", 1'000},        {"\u00b5s", 1'000},    {"\u03bcs", 1'000},
      {"ms", 1'000'000}, {"s", 1'000'000'000}, {"m", 60'000'000'000}, {"h", 3'600'000'000'000},
  };
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    // Number: digits, optionally '.' and more digits; at least one digit overall.
    int64_t whole = 0;
    bool digits = false;
    bool overflow = false;
    while (i < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) {
      if (whole > (kMax - 9) / 10) overflow = true;
      if (!overflow) whole = whole * 10 + (text[i] - '0');
      digits = true;
      ++i;
    }
    int64_t frac = 0;
    int64_t scale = 1;
    if (i < text.size() && text[i] == '.') {
      ++i;
      while (i < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) {
        if (scale <= kMax / 10 / 10) {  // digits beyond ~17 places are below 1 ns anyway
          frac = frac * 10 + (text[i] - '0');
          scale *= 10;
        }
        digits = true;
        ++i;
      }
    }
    if (!digits || overflow) return std::nullopt;
    size_t u = i;
    while (u < text.size() && !absl::ascii_isdigit(static_cast<unsigned char>(text[u])) &&
           text[u] != '.') {
      ++u;
    }
    const std::string_view unit = text.substr(i, u - i);
    const Unit* found = nullptr;
    for (const Unit& k : kUnits) {
      if (k.name == unit) found = &k;
    }
    if (found == nullptr) return std::nullopt;
    i = u;
    if (whole > kMax / found->ns) return std::nullopt;
    int64_t part = whole * found->ns;
    // frac / scale of the unit, in ns, rounded down (as Go does).
    const long double f = static_cast<long double>(frac) * found->ns / scale;
    part += static_cast<int64_t>(f);
    if (part < 0 || total > kMax - part) return std::nullopt;
    total += part;
  }
  return total;
}

std::string formatDurationMs(uint64_t ms) {
  if (ms == 0) return "0s";
  std::string out;
  const uint64_t h = ms / 3'600'000, m = ms / 60'000 % 60, s = ms / 1000 % 60, rest = ms % 1000;
  if (h != 0) absl::StrAppend(&out, h, "h");
  if (m != 0) absl::StrAppend(&out, m, "m");
  if (s != 0) absl::StrAppend(&out, s, "s");
  if (rest != 0) absl::StrAppend(&out, rest, "ms");
  return out;
}

std::optional<uint64_t> parseGatewayDuration(std::string_view text) {
  // GEP-2257: ^([0-9]{1,5}(h|m|s|ms)){1,4}$
  uint64_t total = 0;
  size_t i = 0;
  int parts = 0;
  while (i < text.size()) {
    if (++parts > 4) return std::nullopt;
    uint64_t n = 0;
    size_t digits = 0;
    while (i < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) {
      n = n * 10 + static_cast<uint64_t>(text[i] - '0');
      ++i;
      if (++digits > 5) return std::nullopt;
    }
    if (digits == 0 || i == text.size()) return std::nullopt;
    uint64_t unit_ms = 0;
    if (text[i] == 'h') {
      unit_ms = 3'600'000;
      ++i;
    } else if (text[i] == 's') {
      unit_ms = 1000;
      ++i;
    } else if (text[i] == 'm') {
      ++i;
      if (i < text.size() && text[i] == 's') {
        unit_ms = 1;
        ++i;
      } else {
        unit_ms = 60'000;
      }
    } else {
      return std::nullopt;
    }
    total += n * unit_ms;
  }
  if (parts == 0) return std::nullopt;
  return total;
}

std::string protocolName(state::Protocol p) { return p == state::Protocol::kUdp ? "UDP" : "TCP"; }

namespace {
struct RetryOnName {
  std::string_view name;
  uint32_t bit;
};
// In bit order (retryOnNames prints in this order).
constexpr RetryOnName kRetryOnNames[] = {
    {"connect-failure", state::kRetryOnConnectFailure},
    {"refused-stream", state::kRetryOnRefusedStream},
    {"reset", state::kRetryOnReset},
    {"5xx", state::kRetryOn5xx},
    {"gateway-error", state::kRetryOnGatewayError},
    {"retriable-status-codes", state::kRetryOnRetriableStatusCodes},
    {"cancelled", state::kRetryOnCancelled},
    {"deadline-exceeded", state::kRetryOnDeadlineExceeded},
    {"resource-exhausted", state::kRetryOnResourceExhausted},
    {"internal", state::kRetryOnInternal},
    {"unavailable", state::kRetryOnUnavailable},
};
constexpr std::string_view kGrpcCodeNames[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
}  // namespace

uint32_t retryOnBit(std::string_view name) {
  for (const auto& n : kRetryOnNames) {
    if (n.name == name) return n.bit;
  }
  return 0;
}

std::string retryOnNames(uint32_t bits) {
  std::string out;
  for (const auto& n : kRetryOnNames) {
    if ((bits & n.bit) == 0) continue;
    if (!out.empty()) out += ',';
    out += n.name;
  }
  return out;
}

std::string_view grpcCodeName(int code) {
  return code >= 0 && static_cast<size_t>(code) < std::size(kGrpcCodeNames) ? kGrpcCodeNames[code]
                                                                            : "";
}

int grpcCodeFromName(std::string_view name) {
  for (size_t i = 0; i < std::size(kGrpcCodeNames); ++i) {
    if (kGrpcCodeNames[i] == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace meshd::resources
