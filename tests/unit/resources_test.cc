// Table tests for resource parsing and validation: every class of bad input
// is reported as "<file>:<line>:<col>: <Kind>/<ns>/<name>: <field>: <reason>"
// with the position of the offending node.
#include <sys/socket.h>

#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "resources/resource.h"
#include "resources/resource_set.h"
#include "yaml-cpp/yaml.h"

namespace meshd::resources {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> errorLines(const absl::Status& st) {
  return absl::StrSplit(std::string(st.message()), '\n');
}

// Strict UTF-8 (common/utf8.h, shared with the access log): the table, and a resource whose
// text breaks it is rejected naming the field.
TEST(Utf8, StrictRfc3629) {
  for (std::string_view ok : {"", "plain", "h\xc3\xa9llo", "\xe2\x82\xac", "\xf0\x9d\x84\x9e",
                              "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf"}) {
    EXPECT_TRUE(utf8::isValid(ok)) << ok;
  }
  for (std::string_view bad :
       {"\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80", "\xe2\x82", "a\xf0\x9d\x84", "\xff"}) {
    EXPECT_FALSE(utf8::isValid(bad)) << ::testing::PrintToString(bad);
  }
  EXPECT_EQ(utf8::sequenceLength("\xe2\x82\xacx", 0), 3u);
  EXPECT_EQ(utf8::sequenceLength("\xed\x9f\xbf", 0), 3u);  // U+D7FF, below the surrogates
  // Raw bytes (an overlong '/') in a scalar: YAML's own "\\x.." escapes would be code points.
  auto parsed = parseFiles({SourceFile{
      "u.yaml",
      "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {a: \"x\xc0\xafy\"}}\n"}});
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("UTF-8"));
}

TEST(ParseFiles, ValidMultiDocumentFile) {
  SourceFile f{"web.yaml", readFile(std::string(MESHD_TESTDATA_DIR) + "/web.yaml")};
  ASSERT_FALSE(f.content.empty());
  auto parsed = parseFiles({f});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_THAT(*parsed, SizeIs(4));
  EXPECT_EQ((*parsed)[0].key.toString(), "Service/shop/web");
  EXPECT_EQ((*parsed)[0].line, 3);  // after the two comment lines
  EXPECT_EQ((*parsed)[0].source, "web.yaml");
  EXPECT_EQ((*parsed)[1].key.toString(), "EndpointSlice/shop/web-node1");
  EXPECT_EQ((*parsed)[3].key.toString(), "TrafficPolicy/shop/web");
  // Plain scalars resolve like Kubernetes' YAML: numbers are numbers.
  EXPECT_TRUE((*parsed)[0].object["spec"]["ports"][0]["port"].is_number_integer());
  EXPECT_EQ((*parsed)[0].object["spec"]["clusterIP"], "10.96.0.10");

  auto svc = serviceSpec((*parsed)[0]);
  ASSERT_TRUE(svc.ok()) << svc.status();
  ASSERT_THAT(svc->cluster_ips, SizeIs(1));
  EXPECT_EQ(svc->cluster_ips[0].toString(), "10.96.0.10");
  ASSERT_THAT(svc->ports, SizeIs(2));
  EXPECT_EQ(svc->ports[0].name, "http");
  EXPECT_FALSE(svc->ports[0].target_port.has_value());
  EXPECT_EQ(svc->ports[0].target_port_name, "http-alt");
  EXPECT_EQ(svc->ports[1].target_port, 9091);

  auto slice = endpointSliceSpec((*parsed)[1]);
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_EQ(slice->service_name, "web");
  EXPECT_EQ(slice->address_type, AF_INET);
  ASSERT_THAT(slice->endpoints, SizeIs(2));
  EXPECT_TRUE(slice->endpoints[0].ready);
  EXPECT_EQ(slice->endpoints[0].target_ref, "Pod/shop/web-1");
  EXPECT_FALSE(slice->endpoints[1].ready);

  auto policy = trafficPolicySpec((*parsed)[3]);
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(policy->target_service, "web");
  EXPECT_EQ(policy->algorithm, state::LbAlgorithm::kWeightedRandom);
  ASSERT_THAT(policy->weights, SizeIs(1));
  EXPECT_EQ(policy->weights[0].second, 3u);

  // A typed view of the wrong kind is an error, not a crash.
  EXPECT_FALSE(serviceSpec((*parsed)[1]).ok());
}

TEST(ParseFiles, EmptyDocumentsAndDefaults) {
  SourceFile f{"s.yaml",
               "---\n"
               "apiVersion: v1\n"
               "kind: Service\n"
               "metadata: {name: dns}\n"
               "spec:\n"
               "  clusterIPs: [10.96.0.53, \"fd00::53\"]\n"
               "  ports: [{port: 53, protocol: UDP}]\n"
               "---\n"};
  auto parsed = parseFiles({f});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_THAT(*parsed, SizeIs(1));
  EXPECT_EQ((*parsed)[0].key.ns, "default");
  auto svc = serviceSpec((*parsed)[0]);
  ASSERT_TRUE(svc.ok()) << svc.status();
  ASSERT_THAT(svc->cluster_ips, SizeIs(2));
  EXPECT_EQ(svc->cluster_ips[1].family, AF_INET6);
  EXPECT_EQ(svc->ports[0].protocol, state::Protocol::kUdp);
  EXPECT_EQ(svc->ports[0].target_port, 53);  // defaults to port
}

// Documents used by the table below; line numbers matter.
constexpr char kServiceHead[] =
    "apiVersion: v1\n"  // 1
    "kind: Service\n"   // 2
    "metadata:\n"       // 3
    "  name: web\n"     // 4
    "spec:\n";          // 5
constexpr char kPolicyHead[] =
    "apiVersion: meshd.io/v1alpha1\n"            // 1
    "kind: TrafficPolicy\n"                      // 2
    "metadata:\n"                                // 3
    "  name: web\n"                              // 4
    "spec:\n"                                    // 5
    "  targetRef: {kind: Service, name: web}\n"  // 6
    "  loadBalancer:\n";                         // 7
constexpr char kSliceHead[] =
    "apiVersion: discovery.k8s.io/v1\n"               // 1
    "kind: EndpointSlice\n"                           // 2
    "metadata:\n"                                     // 3
    "  name: web-a\n"                                 // 4
    "  labels: {kubernetes.io/service-name: web}\n";  // 5

struct BadInputCase {
  std::string name;
  std::string yaml;
  std::string expected;  // a full error line, or its beginning
};

class BadInputTest : public ::testing::TestWithParam<BadInputCase> {};

TEST_P(BadInputTest, RejectedWithFileLineAndField) {
  const BadInputCase& c = GetParam();
  auto parsed = parseFiles({SourceFile{"f.yaml", c.yaml}});
  ASSERT_FALSE(parsed.ok()) << "accepted:\n" << c.yaml;
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.expected)) << c.yaml;
}

INSTANTIATE_TEST_SUITE_P(
    Resources, BadInputTest,
    ::testing::Values(
        BadInputCase{"UnknownTopLevelField",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports: [{port: 80}]\n"
                                                 "status: {}\n",
                     "f.yaml:8:1: Service/default/web: status: unknown field"},
        BadInputCase{"UnknownMetadataField",
                     "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  owner: me\n"
                     "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
                     "f.yaml:5:3: Service/default/web: metadata.owner: unknown field"},
        BadInputCase{"UnknownNestedField",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - port: 80\n"
                                                 "      nodePort: 30080\n",
                     "f.yaml:9:7: Service/default/web: spec.ports[0].nodePort: unknown field"},
        BadInputCase{"WrongType",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - port: http\n",
                     "f.yaml:8:13: Service/default/web: spec.ports[0].port: expected an "
                     "integer, got a string (\"http\")"},
        BadInputCase{"QuotedNumberIsAString",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - port: \"80\"\n",
                     "f.yaml:8:13: Service/default/web: spec.ports[0].port: expected an "
                     "integer, got a string (\"80\")"},
        BadInputCase{"MissingRequiredName",
                     "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\n"
                     "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
                     "f.yaml:4:3: Service/shop/?: metadata.name: required field is missing"},
        BadInputCase{"MissingSpec", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n",
                     "f.yaml:1:1: Service/default/web: spec: required field is missing"},
        BadInputCase{"BadClusterIp",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.999\n"
                                                 "  ports: [{port: 80}]\n",
                     "f.yaml:6:14: Service/default/web: spec.clusterIP: \"10.96.0.999\" is not "
                     "an IPv4 or IPv6 address"},
        BadInputCase{"PortOutOfRange",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - port: 70000\n",
                     "f.yaml:8:13: Service/default/web: spec.ports[0].port: port 70000 is out "
                     "of range [1, 65535]"},
        BadInputCase{"PortZero",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - port: 0\n",
                     "f.yaml:8:13: Service/default/web: spec.ports[0].port: port 0 is out of "
                     "range [1, 65535]"},
        BadInputCase{"TargetPortQuotedNumber",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - port: 80\n"
                                                 "      targetPort: \"8080\"\n",
                     "f.yaml:9:19: Service/default/web: spec.ports[0].targetPort: \"8080\" is "
                     "neither a port number nor a port name"},
        BadInputCase{"MultiPortNeedsNames",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - port: 80\n"
                                                 "    - {name: b, port: 81}\n",
                     "f.yaml:8:7: Service/default/web: spec.ports[0].name: required when a "
                     "Service has more than one port"},
        BadInputCase{"DuplicatePortName",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports:\n"
                                                 "    - {name: a, port: 80}\n"
                                                 "    - {name: a, port: 81}\n",
                     "f.yaml:9:14: Service/default/web: spec.ports[1].name: duplicate port "
                     "name \"a\" (also spec.ports[0])"},
        BadInputCase{"UnsupportedType",
                     std::string(kServiceHead) + "  type: NodePort\n"
                                                 "  clusterIP: 10.96.0.1\n"
                                                 "  ports: [{port: 80}]\n",
                     "f.yaml:6:9: Service/default/web: spec.type: type NodePort is not "
                     "supported yet"},
        BadInputCase{"Sctp",
                     std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n"
                                                 "  ports: [{port: 80, protocol: SCTP}]\n",
                     "f.yaml:7:32: Service/default/web: spec.ports[0].protocol: SCTP is not "
                     "supported"},
        BadInputCase{"MissingClusterIp", std::string(kServiceHead) + "  ports: [{port: 80}]\n",
                     "f.yaml:6:3: Service/default/web: spec.clusterIP: required field is "
                     "missing: meshd does not allocate cluster IPs"},
        BadInputCase{"LabelValueNotString",
                     "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
                     "  labels: {version: 1}\n"
                     "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
                     "f.yaml:5:21: Service/default/web: metadata.labels.version: expected a "
                     "string, got an integer (1)"},
        BadInputCase{"BadServiceName",
                     "apiVersion: v1\nkind: Service\nmetadata:\n  name: Web_1\n"
                     "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
                     "f.yaml:4:9: Service/default/Web_1: metadata.name: \"Web_1\" is not a "
                     "valid Service name"},
        BadInputCase{"WeightTooLarge",
                     std::string(kPolicyHead) + "    weights:\n"
                                                "      - address: 10.1.1.1\n"
                                                "        weight: 10001\n",
                     "f.yaml:10:17: TrafficPolicy/default/web: "
                     "spec.loadBalancer.weights[0].weight: weight 10001 is out of range [1, "
                     "10000]"},
        BadInputCase{"WeightZero",
                     std::string(kPolicyHead) + "    weights:\n"
                                                "      - {address: 10.1.1.1, weight: 0}\n",
                     "f.yaml:9:37: TrafficPolicy/default/web: "
                     "spec.loadBalancer.weights[0].weight: weight 0 is out of range"},
        BadInputCase{"ConnectionLimitZero",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  connectionLimits: {maxConnections: 0}\n",
                     "f.yaml:9:38: TrafficPolicy/default/web: "
                     "spec.connectionLimits.maxConnections: maxConnections 0 is out of range "
                     "[1, 16777216]"},
        BadInputCase{"ConnectionLimitNegative",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  connectionLimits:\n"
                                                "    maxConnectionsPerBackend: -3\n",
                     "f.yaml:10:31: TrafficPolicy/default/web: "
                     "spec.connectionLimits.maxConnectionsPerBackend: maxConnectionsPerBackend "
                     "-3 is out of range"},
        BadInputCase{"ConnectionLimitAbsurd",
                     std::string(kPolicyHead) +
                         "    algorithm: Random\n"
                         "  connectionLimits: {maxConnections: 99999999999}\n",
                     "spec.connectionLimits.maxConnections: maxConnections 99999999999 is out of "
                     "range"},
        BadInputCase{"ConnectionLimitNotANumber",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  connectionLimits: {maxConnections: lots}\n",
                     "spec.connectionLimits.maxConnections:"},
        BadInputCase{"ConnectionLimitUnknownField",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  connectionLimits: {maxConnectoins: 5}\n",
                     "spec.connectionLimits.maxConnectoins: unknown field"},
        BadInputCase{"ConnectRateZero",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  connectionLimits:\n"
                                                "    connectRate: {perSecond: 0}\n",
                     "f.yaml:10:30: TrafficPolicy/default/web: "
                     "spec.connectionLimits.connectRate.perSecond: perSecond 0 is out of range "
                     "[1, 1000000]"},
        BadInputCase{"ConnectRateWithoutPerSecond",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  connectionLimits:\n"
                                                "    connectRatePerClient: {burst: 5}\n",
                     "spec.connectionLimits.connectRatePerClient.perSecond: required"},
        BadInputCase{"ConnectRateBurstAbsurd",
                     std::string(kPolicyHead) +
                         "    algorithm: Random\n"
                         "  connectionLimits:\n"
                         "    connectRate: {perSecond: 10, burst: 5000000}\n",
                     "spec.connectionLimits.connectRate.burst: burst 5000000 is out of range "
                     "[1, 1000000]"},
        BadInputCase{"DrainingNotABool",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  draining: {terminateConnections: sometimes}\n",
                     "spec.draining.terminateConnections:"},
        BadInputCase{"DrainingUnknownField",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  draining: {terminate: true}\n",
                     "spec.draining.terminate: unknown field"},
        BadInputCase{"ConnectRateUnknownField",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "  connectionLimits:\n"
                                                "    connectRate: {perSecnd: 10}\n",
                     "spec.connectionLimits.connectRate.perSecnd: unknown field"},
        BadInputCase{"WeightBadAddress",
                     std::string(kPolicyHead) + "    weights:\n"
                                                "      - {address: 10.1.1, weight: 2}\n",
                     "f.yaml:9:19: TrafficPolicy/default/web: "
                     "spec.loadBalancer.weights[0].address: \"10.1.1\" is not an IPv4 or IPv6 "
                     "address"},
        BadInputCase{"MaglevSizeNotPrime",
                     std::string(kPolicyHead) + "    algorithm: Maglev\n"
                                                "    maglev:\n"
                                                "      tableSize: 16000\n",
                     "f.yaml:10:18: TrafficPolicy/default/web: "
                     "spec.loadBalancer.maglev.tableSize: 16000 is not a prime"},
        BadInputCase{"MaglevSizeTooLarge",
                     std::string(kPolicyHead) + "    algorithm: Maglev\n"
                                                "    maglev: {tableSize: 131101}\n",
                     "f.yaml:9:25: TrafficPolicy/default/web: "
                     "spec.loadBalancer.maglev.tableSize: tableSize 131101 is out of range [3, "
                     "131071]"},
        BadInputCase{"MaglevWithoutMaglev",
                     std::string(kPolicyHead) + "    algorithm: Random\n"
                                                "    maglev: {tableSize: 251}\n",
                     "f.yaml:9:13: TrafficPolicy/default/web: spec.loadBalancer.maglev: maglev "
                     "settings need algorithm: Maglev"},
        BadInputCase{"UnknownAlgorithm", std::string(kPolicyHead) + "    algorithm: RoundRobin\n",
                     "f.yaml:8:16: TrafficPolicy/default/web: spec.loadBalancer.algorithm: "
                     "unknown algorithm \"RoundRobin\""},
        BadInputCase{"OutlierUnknownField",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {consecutiveErrors: 5}\n",
                     "f.yaml:9:22: TrafficPolicy/default/web: "
                     "spec.outlierDetection.consecutiveErrors: unknown field (allowed here: "
                     "enabled, consecutiveFailures, consecutive5xxErrors, "
                     "consecutiveGatewayErrors, baseEjectionTime, maxEjectionTime, "
                     "maxEjectionPercent)"},
        BadInputCase{"OutlierPercentOver100",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {maxEjectionPercent: 150}\n",
                     "f.yaml:9:42: TrafficPolicy/default/web: "
                     "spec.outlierDetection.maxEjectionPercent: maxEjectionPercent 150 is out of "
                     "range [0, 100]"},
        BadInputCase{"OutlierPercentNegative",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {maxEjectionPercent: -1}\n",
                     "spec.outlierDetection.maxEjectionPercent: maxEjectionPercent -1 is out of "
                     "range [0, 100]"},
        BadInputCase{"OutlierConsecutiveZero",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {consecutiveFailures: 0}\n",
                     "f.yaml:9:43: TrafficPolicy/default/web: "
                     "spec.outlierDetection.consecutiveFailures: consecutiveFailures 0 is out of "
                     "range [1, 1000] (use enabled: false to turn detection off)"},
        BadInputCase{"OutlierConsecutiveTooMany",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {consecutiveFailures: 1001}\n",
                     "spec.outlierDetection.consecutiveFailures: consecutiveFailures 1001 is out "
                     "of range [1, 1000]"},
        BadInputCase{"OutlierDurationNoUnit",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection:\n"
                         "    baseEjectionTime: \"30\"\n",
                     "f.yaml:10:23: TrafficPolicy/default/web: "
                     "spec.outlierDetection.baseEjectionTime: \"30\" is not a duration (a number "
                     "and a unit ns, us, ms, s, m or h, e.g. \"30s\", \"1m30s\" or \"250ms\")"},
        BadInputCase{"OutlierDurationNumber",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection:\n"
                         "    baseEjectionTime: 30\n",
                     "f.yaml:10:23: TrafficPolicy/default/web: "
                     "spec.outlierDetection.baseEjectionTime: expected a duration such as "
                     "\"30s\", \"1m30s\" or \"250ms\", got an integer (30)"},
        BadInputCase{"OutlierDurationGarbage",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {maxEjectionTime: 5 minutes}\n",
                     "spec.outlierDetection.maxEjectionTime: \"5 minutes\" is not a duration"},
        BadInputCase{"OutlierDurationNegative",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {baseEjectionTime: -30s}\n",
                     "spec.outlierDetection.baseEjectionTime: \"-30s\" is not a duration"},
        BadInputCase{"OutlierDurationZero",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {baseEjectionTime: 0s}\n",
                     "spec.outlierDetection.baseEjectionTime: baseEjectionTime 0s is out of range "
                     "[1ms, 24h]"},
        BadInputCase{"OutlierDurationSubMillisecond",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {baseEjectionTime: 1500us}\n",
                     "spec.outlierDetection.baseEjectionTime: \"1500us\" is not a whole number "
                     "of milliseconds"},
        BadInputCase{"OutlierDurationTooLong",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {maxEjectionTime: 25h}\n",
                     "spec.outlierDetection.maxEjectionTime: maxEjectionTime 25h is out of range "
                     "[1ms, 24h]"},
        BadInputCase{"OutlierMaxBelowBase",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection:\n"
                         "    baseEjectionTime: 1m\n"
                         "    maxEjectionTime: 30s\n",
                     "f.yaml:11:22: TrafficPolicy/default/web: "
                     "spec.outlierDetection.maxEjectionTime: 30s is shorter than "
                     "baseEjectionTime (1m)"},
        BadInputCase{"OutlierEnabledNotBool",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {enabled: \"yes\"}\n",
                     "spec.outlierDetection.enabled: expected true or false, got a string "
                     "(\"yes\")"},
        BadInputCase{
            "RetriesUnknownField",
            std::string(kPolicyHead) + "    algorithm: Random\n" + "  retries: {attempt: 3}\n",
            "f.yaml:9:13: TrafficPolicy/default/web: spec.retries.attempt: unknown field "
            "(allowed here: attempts, perTryTimeout, retryOn, retriableStatusCodes, backoff)"},
        BadInputCase{
            "RetriesAttemptsOutOfRange",
            std::string(kPolicyHead) + "    algorithm: Random\n" + "  retries: {attempts: 101}\n",
            "f.yaml:9:23: TrafficPolicy/default/web: spec.retries.attempts: attempts 101 is "
            "out of range [0, 100]"},
        BadInputCase{
            "RetryOnUnknownInList",
            std::string(kPolicyHead) + "    algorithm: Random\n" +
                "  retries: {retryOn: [5xx, bogus]}\n",
            "f.yaml:9:28: TrafficPolicy/default/web: spec.retries.retryOn[1]: unknown retry "
            "condition \"bogus\" (use connect-failure, refused-stream, reset, 5xx, "
            "gateway-error, retriable-status-codes, cancelled, deadline-exceeded, "
            "resource-exhausted, internal, unavailable, or an HTTP status code)"},
        BadInputCase{"RetryOnUnknownInIstioString",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  retries: {retryOn: \"5xx,gateway-eror\"}\n",
                     "f.yaml:9:22: TrafficPolicy/default/web: spec.retries.retryOn: unknown retry "
                     "condition \"gateway-eror\""},
        BadInputCase{
            "RetryOnBadStatusInString",
            std::string(kPolicyHead) + "    algorithm: Random\n" +
                "  retries: {retryOn: \"5xx,5000\"}\n",
            "f.yaml:9:22: TrafficPolicy/default/web: spec.retries.retryOn: \"5000\" is not "
            "an HTTP status code (100..599)"},
        BadInputCase{
            "RetryOnEmptyList",
            std::string(kPolicyHead) + "    algorithm: Random\n" + "  retries: {retryOn: []}\n",
            "spec.retries.retryOn: must list at least one condition (attempts: 0 turns "
            "retries off)"},
        BadInputCase{
            "RetryOnNotAList",
            std::string(kPolicyHead) + "    algorithm: Random\n" + "  retries: {retryOn: 5}\n",
            "spec.retries.retryOn: expected a list of conditions or a comma-separated "
            "string, got an integer (5)"},
        BadInputCase{"RetriableStatusCodesWithoutCodes",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  retries: {retryOn: [retriable-status-codes]}\n",
                     "spec.retries.retryOn: retriable-status-codes needs the codes: list them in "
                     "retriableStatusCodes or as numbers in retryOn"},
        BadInputCase{
            "RetriableStatusCodeOutOfRange",
            std::string(kPolicyHead) + "    algorithm: Random\n" +
                "  retries: {retriableStatusCodes: [503, 600]}\n",
            "f.yaml:9:41: TrafficPolicy/default/web: spec.retries.retriableStatusCodes[1]: "
            "status code 600 is out of range [100, 599]"},
        BadInputCase{"PerTryTimeoutNotADuration",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  retries: {perTryTimeout: 5}\n",
                     "spec.retries.perTryTimeout: expected a duration such as \"30s\""},
        BadInputCase{"PerTryTimeoutZero",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  retries: {perTryTimeout: 0s}\n",
                     "spec.retries.perTryTimeout: perTryTimeout 0s is out of range [1ms, 24h]"},
        BadInputCase{
            "BackoffMaxBelowBase",
            std::string(kPolicyHead) + "    algorithm: Random\n" +
                "  retries:\n"
                "    backoff: {baseInterval: 100ms, maxInterval: 50ms}\n",
            "f.yaml:10:49: TrafficPolicy/default/web: spec.retries.backoff.maxInterval: 50ms "
            "is shorter than baseInterval (100ms)"},
        BadInputCase{"RequestLimitsZero",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  requestLimits: {maxRequests: 0}\n",
                     "spec.requestLimits.maxRequests: maxRequests 0 is out of range [1, 16777216]"},
        BadInputCase{"RequestLimitsUnknown",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  requestLimits: {maxConnections: 5}\n",
                     "spec.requestLimits.maxConnections: unknown field (allowed here: "
                     "maxPendingRequests, maxRequests, maxRetries, retryBudget)"},
        BadInputCase{
            "RetryBudgetPercentOver100",
            std::string(kPolicyHead) + "    algorithm: Random\n" +
                "  requestLimits: {retryBudget: {percent: 120}}\n",
            "spec.requestLimits.retryBudget.percent: percent 120 is out of range [0, 100]"},
        BadInputCase{"Outlier5xxOutOfRange",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  outlierDetection: {consecutive5xxErrors: 1001}\n",
                     "spec.outlierDetection.consecutive5xxErrors: consecutive5xxErrors 1001 is out "
                     "of range [0, 1000]"},
        BadInputCase{
            "FaultEmpty",
            std::string(kPolicyHead) + "    algorithm: Random\n" + "  faultInjection: {}\n",
            "f.yaml:9:19: TrafficPolicy/default/web: spec.faultInjection: needs a delay, an "
            "abort or both"},
        BadInputCase{"FaultOnlyNulls",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  faultInjection: {delay: null, abort: null}\n",
                     "spec.faultInjection: needs a delay, an abort or both"},
        BadInputCase{"FaultDelayWithoutFixedDelay",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  faultInjection: {delay: {percentage: 5}}\n",
                     "spec.faultInjection.delay.fixedDelay: required field is missing"},
        BadInputCase{
            "FaultPercentageOutOfRange",
            std::string(kPolicyHead) + "    algorithm: Random\n" +
                "  faultInjection: {delay: {fixedDelay: 1s, percentage: 150}}\n",
            "spec.faultInjection.delay.percentage: percentage 150 is out of range [0, 100]"},
        BadInputCase{"FaultPercentageNotANumber",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  faultInjection: {delay: {fixedDelay: 1s, percentage: \"5%\"}}\n",
                     "spec.faultInjection.delay.percentage: expected a percentage 0..100, got a "
                     "string (\"5%\")"},
        BadInputCase{"FaultAbortBothStatuses",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  faultInjection: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}\n",
                     "spec.faultInjection.abort: needs exactly one of httpStatus and grpcStatus"},
        BadInputCase{"FaultAbortUnknownGrpcStatus",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  faultInjection: {abort: {grpcStatus: UNAVAIL}}\n",
                     "spec.faultInjection.abort.grpcStatus: unknown gRPC status \"UNAVAIL\""},
        BadInputCase{"FaultAbortGrpcOk",
                     std::string(kPolicyHead) + "    algorithm: Random\n" +
                         "  faultInjection: {abort: {grpcStatus: OK}}\n",
                     "spec.faultInjection.abort.grpcStatus: OK is not an error status"},
        BadInputCase{
            "FaultAbortHttpStatusOutOfRange",
            std::string(kPolicyHead) + "    algorithm: Random\n" +
                "  faultInjection: {abort: {httpStatus: 99}}\n",
            "spec.faultInjection.abort.httpStatus: httpStatus 99 is out of range [200, 599]"},
        BadInputCase{"UnknownAlgorithmListsLeastLatency",
                     std::string(kPolicyHead) + "    algorithm: P2CEWMA\n",
                     "spec.loadBalancer.algorithm: unknown algorithm \"P2CEWMA\" (use Random, "
                     "WeightedRandom, Maglev, LeastConnections or LeastLatency)"},
        BadInputCase{"UnknownKind",
                     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
                     "f.yaml:2:7: Deployment/default/web: kind: unknown kind \"Deployment\""},
        BadInputCase{"UnknownApiVersion",
                     "apiVersion: v2\nkind: Service\nmetadata: {name: web}\n"
                     "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
                     "f.yaml:1:13: Service/default/web: apiVersion: unknown apiVersion \"v2\" "
                     "for Service (use v1)"},
        BadInputCase{"DuplicateKey",
                     "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  name: api\n"
                     "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
                     "f.yaml:5:3: Service/default/web: metadata.name: duplicate key \"name\" "
                     "(first at line 4)"},
        BadInputCase{"NotAMapping", "- a\n- b\n",
                     "f.yaml:1:1: ?/default/?: a resource must be a mapping"},
        BadInputCase{"SliceFamilyMismatch",
                     std::string(kSliceHead) + "addressType: IPv4\n"
                                               "endpoints:\n"
                                               "  - addresses: [\"fd00::1\"]\n",
                     "f.yaml:8:17: EndpointSlice/default/web-a: endpoints[0].addresses[0]: "
                     "fd00::1 is IPv6 but the slice's addressType is IPv4"},
        BadInputCase{"SliceMissingServiceLabel",
                     "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
                     "  name: web-a\naddressType: IPv4\n",
                     "f.yaml:4:3: EndpointSlice/default/web-a: "
                     "metadata.labels[\"kubernetes.io/service-name\"]: required label is "
                     "missing"},
        BadInputCase{"SliceReadyNotBool",
                     std::string(kSliceHead) + "addressType: IPv4\n"
                                               "endpoints:\n"
                                               "  - addresses: [10.1.1.1]\n"
                                               "    conditions: {ready: yes}\n",
                     "f.yaml:9:25: EndpointSlice/default/web-a: endpoints[0].conditions.ready: "
                     "expected true or false, got a string (\"yes\")"},
        BadInputCase{"SliceFqdn", std::string(kSliceHead) + "addressType: FQDN\n",
                     "f.yaml:6:14: EndpointSlice/default/web-a: addressType: FQDN endpoints "
                     "are not supported"}),
    [](const ::testing::TestParamInfo<BadInputCase>& info) { return info.param.name; });

TEST(TrafficPolicy, RequestLevelFieldsAndDefaults) {
  auto policy = [](const std::string& body) {
    auto parsed = parseFiles(
        {SourceFile{"p.yaml",
                    "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: web}\n"
                    "spec:\n  targetRef: {kind: Service, name: web}\n" +
                        body}});
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    if (!parsed.ok()) return TrafficPolicySpec{};
    auto spec = trafficPolicySpec((*parsed)[0]);
    EXPECT_TRUE(spec.ok()) << spec.status();
    return spec.ok() ? *spec : TrafficPolicySpec{};
  };
  // Nothing request-level: defaults, not L7.
  TrafficPolicySpec none = policy("  loadBalancer: {algorithm: LeastLatency}\n");
  EXPECT_FALSE(none.request_level);
  EXPECT_TRUE(none.request.peak_ewma);
  EXPECT_EQ(none.request.limits, state::RequestLimits{});
  EXPECT_EQ(none.request.retries, state::RetrySettings{});

  TrafficPolicySpec p = policy(
      "  requestLimits:\n"
      "    maxPendingRequests: 10\n"
      "    maxRequests: 20\n"
      "    maxRetries: 0\n"
      "    retryBudget: {percent: 50}\n"
      "  retries:\n"
      "    attempts: 3\n"
      "    perTryTimeout: 1.5s\n"
      "    retryOn: [connect-failure, 5xx, unavailable]\n"
      "    retriableStatusCodes: [409, 409, 429]\n"
      "    backoff: {baseInterval: 100ms}\n"
      "  outlierDetection: {consecutive5xxErrors: 7, consecutiveGatewayErrors: 3,\n"
      "                     baseEjectionTime: 10s, maxEjectionPercent: 40}\n"
      "  faultInjection:\n"
      "    delay: {fixedDelay: 250ms, percentage: 12.5}\n"
      "    abort: {grpcStatus: RESOURCE_EXHAUSTED}\n");
  EXPECT_TRUE(p.request_level);
  EXPECT_EQ(p.request.limits.max_pending_requests, 10u);
  EXPECT_EQ(p.request.limits.max_requests, 20u);
  EXPECT_EQ(p.request.limits.max_retries, 0u);
  EXPECT_TRUE(p.request.limits.retry_budget);
  EXPECT_EQ(p.request.limits.budget_percent, 50u);
  EXPECT_EQ(p.request.limits.min_retry_concurrency, 3u);
  EXPECT_EQ(p.request.retries.attempts, 3u);
  EXPECT_EQ(p.request.retries.per_try_timeout_ms, 1500u);
  // Listing codes turns retriable-status-codes on; duplicates go.
  EXPECT_EQ(p.request.retries.retry_on, state::kRetryOnConnectFailure | state::kRetryOn5xx |
                                            state::kRetryOnUnavailable |
                                            state::kRetryOnRetriableStatusCodes);
  EXPECT_EQ(p.request.retries.retriable_status_codes, (std::vector<uint16_t>{409, 429}));
  EXPECT_EQ(p.request.retries.base_interval_ms, 100u);
  EXPECT_EQ(p.request.retries.max_interval_ms, 1000u);  // 10 x base
  EXPECT_EQ(p.request.outlier.consecutive_5xx, 7u);
  EXPECT_EQ(p.request.outlier.consecutive_gateway_errors, 3u);
  EXPECT_EQ(p.request.outlier.base_ejection_ms, 10'000u);
  EXPECT_EQ(p.request.outlier.max_ejection_ms, 300'000u);
  EXPECT_EQ(p.request.outlier.max_ejection_percent, 40u);
  EXPECT_EQ(p.outlier.consecutive_failures, 5u);  // the L4 signal is separate
  EXPECT_EQ(p.request.fault.delay_ms, 250u);
  EXPECT_EQ(p.request.fault.delay_per_million, 125'000u);
  EXPECT_EQ(p.request.fault.abort_grpc_status, 8);
  EXPECT_EQ(p.request.fault.abort_http_status, 0);
  EXPECT_EQ(p.request.fault.abort_per_million, 1'000'000u);  // unset: every request

  // Istio's string form: numbers are retriable status codes.
  TrafficPolicySpec istio = policy("  retries: {retryOn: \"gateway-error, 503,refused-stream\"}\n");
  EXPECT_EQ(istio.request.retries.retry_on, state::kRetryOnGatewayError |
                                                state::kRetryOnRetriableStatusCodes |
                                                state::kRetryOnRefusedStream);
  EXPECT_EQ(istio.request.retries.retriable_status_codes, std::vector<uint16_t>{503});
  EXPECT_EQ(retryOnNames(istio.request.retries.retry_on),
            "refused-stream,gateway-error,retriable-status-codes");
  // Codes without retryOn keep the default conditions and replace the default codes.
  TrafficPolicySpec codes = policy("  retries: {retriableStatusCodes: [502]}\n");
  EXPECT_EQ(codes.request.retries.retry_on, state::RetrySettings::kDefaultRetryOn);
  EXPECT_EQ(codes.request.retries.retriable_status_codes, std::vector<uint16_t>{502});
  // consecutive5xxErrors: 0 alone turns a signal off and does not need L7; enabled: false
  // turns the L7 signals off too.
  TrafficPolicySpec off = policy("  outlierDetection: {consecutive5xxErrors: 0}\n");
  EXPECT_FALSE(off.request_level);
  EXPECT_EQ(off.request.outlier.consecutive_5xx, 0u);
  TrafficPolicySpec disabled =
      policy("  outlierDetection: {enabled: false, consecutiveGatewayErrors: 4}\n");
  EXPECT_EQ(disabled.request.outlier.consecutive_5xx, 0u);
  EXPECT_EQ(disabled.request.outlier.consecutive_gateway_errors, 0u);
  // An explicit maxInterval; 0% faults are accepted (and never fire).
  TrafficPolicySpec b = policy(
      "  retries: {backoff: {baseInterval: 10ms, maxInterval: 15ms}}\n"
      "  faultInjection: {abort: {httpStatus: 418, percentage: 0}}\n");
  EXPECT_EQ(b.request.retries.max_interval_ms, 15u);
  EXPECT_EQ(b.request.fault.abort_http_status, 418);
  EXPECT_FALSE(b.request.fault.aborts());
  EXPECT_EQ(grpcCodeFromName("UNAVAILABLE"), 14);
  EXPECT_EQ(grpcCodeFromName("unavailable"), -1);
  EXPECT_EQ(retryOnBit("5xx"), state::kRetryOn5xx);
  EXPECT_EQ(retryOnBit("5XX"), 0u);
}

TEST(ParseFiles, YamlSyntaxErrorReportsYamlCppPosition) {
  // An unterminated flow sequence: yaml-cpp reports where it gave up.
  std::string yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web\n";
  YAML::Mark mark;
  try {
    YAML::LoadAll(yaml);
    FAIL() << "yaml-cpp accepted the document";
  } catch (const YAML::Exception& e) {
    mark = e.mark;
  }
  auto parsed = parseFiles({SourceFile{"f.yaml", yaml}});
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr("f.yaml:" + std::to_string(mark.line + 1) + ":" +
                        std::to_string(mark.column + 1) + ": YAML syntax error: "));
  EXPECT_GE(mark.line + 1, 3);
}

TEST(ParseFiles, StdinIsNamed) {
  auto parsed = parseFiles({SourceFile{"-", "apiVersion: v1\nkind: Nope\nmetadata: {name: x}\n"}});
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("<stdin>:2:7: "));
}

TEST(ParseFiles, CollectsEveryError) {
  std::string yaml = std::string(kServiceHead) +
                     "  clusterIP: 10.96.0.1\n"
                     "  ports: [{port: 0}]\n"         // 7
                     "---\n" +                        // 8
                     std::string(kPolicyHead) +       // 9..15
                     "    algorithm: Maglev\n"        // 16
                     "    maglev: {tableSize: 4}\n";  // 17
  SourceFile good{"good.yaml",
                  std::string(kServiceHead) + "  clusterIP: 10.96.0.2\n  ports: [{port: 80}]\n"};
  SourceFile broken{"broken.yaml", "a: [\n"};
  auto parsed = parseFiles({SourceFile{"f.yaml", yaml}, good, broken});
  ASSERT_FALSE(parsed.ok());
  auto lines = errorLines(parsed.status());
  // The port, the table size, the YAML error, and good.yaml's Service/default/web
  // duplicating f.yaml's.
  ASSERT_THAT(lines, SizeIs(4)) << parsed.status().message();
  EXPECT_THAT(lines[0], HasSubstr("f.yaml:7:18: Service/default/web: spec.ports[0].port:"));
  EXPECT_THAT(lines[1], HasSubstr("f.yaml:17:25: TrafficPolicy/default/web: "
                                  "spec.loadBalancer.maglev.tableSize: 4 is not a prime"));
  EXPECT_THAT(lines[2], HasSubstr("broken.yaml:"));
  EXPECT_THAT(lines[3], HasSubstr("good.yaml:4:9: Service/default/web: metadata.name: "
                                  "duplicate: Service/default/web is also defined at "
                                  "f.yaml:4:9"));
}

TEST(ParseFiles, DuplicateAcrossFilesNamesBothPlaces) {
  std::string svc = std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n";
  auto parsed = parseFiles({SourceFile{"a.yaml", svc}, SourceFile{"b.yaml", "\n\n" + svc}});
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(std::string(parsed.status().message()),
            "b.yaml:6:9: Service/default/web: metadata.name: duplicate: Service/default/web is "
            "also defined at a.yaml:4:9");
}

TEST(ParseFiles, SameNameDifferentKindOrNamespaceIsFine) {
  std::string svc = std::string(kServiceHead) + "  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n";
  std::string svc2 =
      "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: other}\n"
      "spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n";
  std::string policy = std::string(kPolicyHead) + "    algorithm: Random\n";
  auto parsed = parseFiles({SourceFile{"a.yaml", svc + "---\n" + svc2 + "---\n" + policy}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(*parsed, SizeIs(3));
}

TEST(ParseFiles, AliasBombIsBounded) {
  std::string yaml = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  std::string prev = "a";
  for (int i = 0; i < 8; ++i) {
    std::string name = "l" + std::to_string(i);
    yaml += name + ": &" + name + " [";
    for (int j = 0; j < 10; ++j) yaml += (j ? ", *" : "*") + prev;
    yaml += "]\n";
    prev = name;
  }
  auto parsed = parseFiles({SourceFile{"bomb.yaml", yaml}});
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("nodes (YAML aliases?)"));
}

TEST(Validate, JsonWithoutPositions) {
  nlohmann::json obj = {{"apiVersion", "v1"},
                        {"kind", "Service"},
                        {"metadata", {{"name", "web"}}},
                        {"spec", {{"clusterIP", "10.96.0.1"}, {"ports", {{{"port", 99999}}}}}}};
  auto r = resourceFromJson(obj);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(std::string(r.status().message()),
            "Service/default/web: spec.ports[0].port: port 99999 is out of range [1, 65535]");

  obj["spec"]["ports"][0]["port"] = 80;
  auto ok = resourceFromJson(obj, "web.yaml", 3);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(validate(*ok).ok());
  Resource wrong_key = *ok;
  wrong_key.key.name = "api";
  absl::Status st = validate(wrong_key);
  EXPECT_THAT(std::string(st.message()), HasSubstr("key does not match the object"));
  // With a source and document line but no positions, errors name file:line.
  ok->object["spec"]["type"] = "LoadBalancer";
  EXPECT_THAT(std::string(validate(*ok).message()),
              HasSubstr("web.yaml:3: Service/default/web: spec.type: type LoadBalancer"));
}

TEST(ValidateSet, ClusterIpPortConflictNamesBoth) {
  std::string a =
      "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n"
      "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n";
  std::string b =
      "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n"
      "spec:\n  clusterIP: 10.96.0.1\n  ports:\n    - {name: x, port: 81}\n"
      "    - {name: y, port: 80}\n";
  std::string c_udp =
      "apiVersion: v1\nkind: Service\nmetadata: {name: c}\n"
      "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80, protocol: UDP}]\n";
  auto parsed =
      parseFiles({SourceFile{"a.yaml", a}, SourceFile{"b.yaml", b}, SourceFile{"c.yaml", c_udp}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ResourceSet set;
  for (auto& r : *parsed) set.upsert(r);
  absl::Status st = validateSet(set);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(std::string(st.message()),
            "b.yaml:8:23: Service/default/b: spec.ports[1].port: 10.96.0.1:80/TCP is also used "
            "by Service/default/a (a.yaml:6:18): two Services cannot share a cluster IP, port "
            "and protocol");
  // Against a stored resource (no positions) the new one is blamed.
  auto stored_a = resourceFromJson((*parsed)[1].object, "b.yaml", 1);
  ASSERT_TRUE(stored_a.ok());
  ResourceSet set2;
  set2.upsert(*stored_a);
  set2.upsert((*parsed)[0]);
  EXPECT_THAT(std::string(validateSet(set2).message()),
              HasSubstr("a.yaml:6:18: Service/default/a: spec.ports[0].port: 10.96.0.1:80/TCP "
                        "is also used by Service/default/b (b.yaml:1)"));
}

TEST(ValidateSet, TwoPoliciesForOneServiceNamesBoth) {
  std::string p1 = std::string(kPolicyHead) + "    algorithm: Random\n";
  std::string p2 =
      "apiVersion: meshd.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: web2}\n"
      "spec:\n  targetRef: {kind: Service, name: web}\n";
  auto parsed = parseFiles({SourceFile{"p.yaml", p1 + "---\n" + p2}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ResourceSet set;
  for (auto& r : *parsed) set.upsert(r);
  absl::Status st = validateSet(set);
  EXPECT_EQ(std::string(st.message()),
            "p.yaml:14:36: TrafficPolicy/default/web2: spec.targetRef.name: Service default/web "
            "is also targeted by TrafficPolicy/default/web (p.yaml:6:36): at most one "
            "TrafficPolicy per Service");
}

TEST(ResourceSet, ListsByKindAndNamespaceInKeyOrder) {
  ResourceSet set;
  auto add = [&](std::string kind, std::string ns, std::string name) {
    Resource r;
    r.key = {kind, ns, name};
    set.upsert(r);
  };
  add("Service", "b", "z");
  add("Service", "a", "y");
  add("EndpointSlice", "a", "x");
  add("TrafficPolicy", "a", "w");
  auto services = set.list("Service");
  ASSERT_THAT(services, SizeIs(2));
  EXPECT_EQ(services[0]->key.toString(), "Service/a/y");
  EXPECT_EQ(services[1]->key.toString(), "Service/b/z");
  EXPECT_THAT(set.list("Service", "b"), SizeIs(1));
  EXPECT_THAT(set.list("Service", "c"), SizeIs(0));
  EXPECT_TRUE(set.erase(ResourceKey{"Service", "a", "y"}));
  EXPECT_FALSE(set.erase(ResourceKey{"Service", "a", "y"}));
  EXPECT_EQ(set.size(), 3u);
}

TEST(ResourceKey, ParseAndPrint) {
  auto k = ResourceKey::parse("Service/shop/web");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->toString(), "Service/shop/web");
  auto d = ResourceKey::parse("Service/web");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ns, "default");
  EXPECT_FALSE(ResourceKey::parse("web").ok());
  EXPECT_FALSE(ResourceKey::parse("a/b/c/d").ok());
}

TEST(Helpers, NamesAndPrimes) {
  EXPECT_TRUE(isPrime(16381));
  EXPECT_TRUE(isPrime(131071));
  EXPECT_FALSE(isPrime(16383));
  EXPECT_FALSE(isPrime(1));
  EXPECT_TRUE(isDns1123Label("web-1"));
  EXPECT_FALSE(isDns1123Label("-web"));
  EXPECT_FALSE(isDns1123Label(std::string(64, 'a')));
  EXPECT_TRUE(isDns1123Subdomain("web.v1"));
  EXPECT_FALSE(isDns1123Subdomain("web..v1"));
  EXPECT_TRUE(isIanaServiceName("http-alt"));
  EXPECT_FALSE(isIanaServiceName("8080"));
  EXPECT_FALSE(isIanaServiceName("a--b"));
}

// Go's time.ParseDuration syntax, as Kubernetes durations are written.
TEST(Helpers, ParseDuration) {
  struct Case {
    const char* text;
    std::optional<int64_t> ns;
  };
  const Case cases[] = {
      {"0", 0},
      {"30s", 30'000'000'000},
      {"1m30s", 90'000'000'000},
      {"250ms", 250'000'000},
      {"1.5h", 5'400'000'000'000},
      {"2h45m", 9'900'000'000'000},
      {".5s", 500'000'000},
      {"1.s", 1'000'000'000},
      {"100us", 100'000},
      {"100\u00b5s", 100'000},  // micro sign
      {"100\u03bcs", 100'000},  // Greek mu
      {"7ns", 7},
      {"1h1m1s1ms", 3'661'001'000'000},
      {"0s", 0},
      {"", std::nullopt},
      {"30", std::nullopt},    // no unit
      {"s", std::nullopt},     // no number
      {".s", std::nullopt},    // no digit
      {"-30s", std::nullopt},  // signs are rejected
      {"+30s", std::nullopt},
      {"30 s", std::nullopt},      // no spaces
      {"30sec", std::nullopt},     // unknown unit
      {"1d", std::nullopt},        // Go has no days
      {"3000000h", std::nullopt},  // beyond 2^63 ns
      {"99999999999999999999s", std::nullopt},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(parseDuration(c.text), c.ns) << "\"" << c.text << "\"";
  }
  EXPECT_EQ(formatDurationMs(0), "0s");
  EXPECT_EQ(formatDurationMs(250), "250ms");
  EXPECT_EQ(formatDurationMs(30'000), "30s");
  EXPECT_EQ(formatDurationMs(90'000), "1m30s");
  EXPECT_EQ(formatDurationMs(300'000), "5m");
  EXPECT_EQ(formatDurationMs(86'400'000), "24h");
  EXPECT_EQ(formatDurationMs(3'661'001), "1h1m1s1ms");
}

// --- HTTPRoute / GRPCRoute ------------------------------------------------------

constexpr char kRouteHead[] =
    "apiVersion: gateway.networking.k8s.io/v1\n"                 // 1
    "kind: HTTPRoute\n"                                          // 2
    "metadata:\n"                                                // 3
    "  name: r\n"                                                // 4
    "spec:\n"                                                    // 5
    "  parentRefs: [{group: \"\", kind: Service, name: web}]\n"  // 6
    "  rules:\n";                                                // 7
constexpr char kRouteTop[] =
    "apiVersion: gateway.networking.k8s.io/v1\n"  // 1
    "kind: HTTPRoute\n"                           // 2
    "metadata: {name: r}\n"                       // 3
    "spec:\n";                                    // 4
constexpr char kGrpcHead[] =
    "apiVersion: gateway.networking.k8s.io/v1\n"                 // 1
    "kind: GRPCRoute\n"                                          // 2
    "metadata: {name: g}\n"                                      // 3
    "spec:\n"                                                    // 4
    "  parentRefs: [{group: \"\", kind: Service, name: web}]\n"  // 5
    "  rules:\n";                                                // 6

std::string rules(int n) {
  std::string out = std::string(kRouteHead);
  for (int i = 0; i < n; ++i) out += "    - {}\n";
  return out;
}

INSTANTIATE_TEST_SUITE_P(
    Routes, BadInputTest,
    ::testing::Values(
        BadInputCase{"BadPathRegex",
                     std::string(kRouteHead) + "    - matches:\n"
                                               "        - path:\n"
                                               "            type: RegularExpression\n"
                                               "            value: \"/a(\"\n",
                     "f.yaml:11:20: HTTPRoute/default/r: spec.rules[0].matches[0].path.value: "
                     "\"/a(\" is not a valid RE2 regular expression: missing )"},
        BadInputCase{"BadHeaderRegex",
                     std::string(kRouteHead) + "    - matches:\n"
                                               "        - headers:\n"
                                               "            - name: x-user\n"
                                               "              type: RegularExpression\n"
                                               "              value: \"[a-\"\n",
                     "f.yaml:12:22: HTTPRoute/default/r: "
                     "spec.rules[0].matches[0].headers[0].value: \"[a-\" is not a valid RE2 "
                     "regular expression"},
        BadInputCase{"BadDuration",
                     std::string(kRouteHead) + "    - timeouts:\n"
                                               "        request: 1.5s\n",
                     "f.yaml:9:18: HTTPRoute/default/r: spec.rules[0].timeouts.request: \"1.5s\" "
                     "is not a Gateway API duration (1 to 4 parts of 1-5 digits and a unit h, "
                     "m, s or ms"},
        BadInputCase{
            "BackendRequestLongerThanRequest",
            std::string(kRouteHead) + "    - timeouts: {request: 5s, backendRequest: 10s}\n",
            "f.yaml:8:47: HTTPRoute/default/r: spec.rules[0].timeouts.backendRequest: "
            "backendRequest 10s cannot be longer than request 5s"},
        BadInputCase{"WeightOutOfRange",
                     std::string(kRouteHead) + "    - backendRefs:\n"
                                               "        - {name: web, port: 80, weight: 1000001}\n",
                     "f.yaml:9:41: HTTPRoute/default/r: spec.rules[0].backendRefs[0].weight: "
                     "weight 1000001 is out of range [0, 1000000]"},
        BadInputCase{"NegativeWeight",
                     std::string(kRouteHead) + "    - backendRefs:\n"
                                               "        - {name: web, port: 80, weight: -1}\n",
                     "f.yaml:9:41: HTTPRoute/default/r: spec.rules[0].backendRefs[0].weight: "
                     "weight -1 is out of range [0, 1000000]"},
        BadInputCase{"BackendRefWithoutPort",
                     std::string(kRouteHead) + "    - backendRefs:\n"
                                               "        - name: web\n",
                     "f.yaml:9:11: HTTPRoute/default/r: spec.rules[0].backendRefs[0].port: "
                     "required field is missing: a Service backend needs a port"},
        BadInputCase{"BackendRefOtherNamespace",
                     std::string(kRouteHead) +
                         "    - backendRefs:\n"
                         "        - {name: web, namespace: other, port: 80}\n",
                     "f.yaml:9:34: HTTPRoute/default/r: spec.rules[0].backendRefs[0].namespace: "
                     "a backend in another namespace (\"other\", the route is in \"default\") "
                     "needs a ReferenceGrant, not supported yet"},
        BadInputCase{"UnknownFilterType",
                     std::string(kRouteHead) + "    - filters:\n"
                                               "        - type: RequestRewrite\n",
                     "f.yaml:9:17: HTTPRoute/default/r: spec.rules[0].filters[0].type: unknown "
                     "filter type \"RequestRewrite\" (use RequestHeaderModifier, "
                     "ResponseHeaderModifier, RequestRedirect, URLRewrite or RequestMirror)"},
        BadInputCase{"ExtensionRefNotSupported",
                     std::string(kRouteHead) + "    - filters:\n"
                                               "        - type: ExtensionRef\n",
                     "f.yaml:9:17: HTTPRoute/default/r: spec.rules[0].filters[0].type: filter "
                     "type ExtensionRef is not supported by meshd yet"},
        BadInputCase{"FilterFieldOfAnotherType",
                     std::string(kRouteHead) + "    - filters:\n"
                                               "        - type: RequestHeaderModifier\n"
                                               "          requestRedirect: {scheme: https}\n",
                     "f.yaml:10:11: HTTPRoute/default/r: spec.rules[0].filters[0].requestRedirect: "
                     "not allowed with type RequestHeaderModifier"},
        BadInputCase{"FilterRepeated",
                     std::string(kRouteHead) +
                         "    - filters:\n"
                         "        - {type: RequestHeaderModifier, requestHeaderModifier: {}}\n"
                         "        - {type: RequestHeaderModifier, requestHeaderModifier: {}}\n",
                     "f.yaml:10:18: HTTPRoute/default/r: spec.rules[0].filters[1].type: "
                     "RequestHeaderModifier filter cannot be repeated (also "
                     "spec.rules[0].filters[0])"},
        BadInputCase{"RedirectAndRewrite",
                     std::string(kRouteHead) +
                         "    - filters:\n"
                         "        - {type: RequestRedirect, requestRedirect: {scheme: https}}\n"
                         "        - {type: URLRewrite, urlRewrite: {hostname: a.b}}\n",
                     "f.yaml:10:18: HTTPRoute/default/r: spec.rules[0].filters[1].type: "
                     "URLRewrite cannot be combined with RequestRedirect"},
        BadInputCase{
            "RedirectWithBackendRefs",
            std::string(kRouteHead) +
                "    - filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n"
                "      backendRefs: [{name: web, port: 80}]\n",
            "f.yaml:9:20: HTTPRoute/default/r: spec.rules[0].backendRefs: a rule with a "
            "RequestRedirect filter must not have backendRefs"},
        BadInputCase{
            "RedirectStatusCode",
            std::string(kRouteHead) +
                "    - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 305}}]\n",
            "f.yaml:8:71: HTTPRoute/default/r: "
            "spec.rules[0].filters[0].requestRedirect.statusCode: statusCode 305 is not "
            "a redirect status (use 301, 302, 303, 307 or 308)"},
        BadInputCase{"ReplacePrefixMatchNeedsOnePathPrefix",
                     std::string(kRouteHead) +
                         "    - matches: [{path: {type: Exact, value: /a}}]\n"
                         "      filters:\n"
                         "        - type: URLRewrite\n"
                         "          urlRewrite:\n"
                         "            path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}\n",
                     "f.yaml:8:16: HTTPRoute/default/r: spec.rules[0].matches: ReplacePrefixMatch "
                     "needs exactly one match, of path type PathPrefix"},
        BadInputCase{"PathModifierValueOfOtherType",
                     std::string(kRouteHead) +
                         "    - filters:\n"
                         "        - type: URLRewrite\n"
                         "          urlRewrite:\n"
                         "            path: {type: ReplaceFullPath, replacePrefixMatch: /b}\n",
                     "f.yaml:11:43: HTTPRoute/default/r: "
                     "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: not allowed "
                     "with type ReplaceFullPath"},
        BadInputCase{"PathNotAbsolute",
                     std::string(kRouteHead) + "    - matches: [{path: {value: api}}]\n",
                     "f.yaml:8:32: HTTPRoute/default/r: spec.rules[0].matches[0].path.value: "
                     "must be an absolute path starting with '/'"},
        BadInputCase{"PathWithDotDot",
                     std::string(kRouteHead) + "    - matches: [{path: {value: /a/../b}}]\n",
                     "f.yaml:8:32: HTTPRoute/default/r: spec.rules[0].matches[0].path.value: "
                     "must not contain '/../'"},
        BadInputCase{"UnknownPathType",
                     std::string(kRouteHead) + "    - matches: [{path: {type: Prefix}}]\n",
                     "f.yaml:8:31: HTTPRoute/default/r: spec.rules[0].matches[0].path.type: "
                     "unknown path match type \"Prefix\" (use Exact, PathPrefix or "
                     "RegularExpression)"},
        BadInputCase{"UnknownMethod", std::string(kRouteHead) + "    - matches: [{method: get}]\n",
                     "f.yaml:8:26: HTTPRoute/default/r: spec.rules[0].matches[0].method: unknown "
                     "method \"get\""},
        BadInputCase{"DuplicateHeaderMatchName",
                     std::string(kRouteHead) +
                         "    - matches:\n"
                         "        - headers: [{name: X-A, value: a}, {name: x-a, value: b}]\n",
                     "f.yaml:9:51: HTTPRoute/default/r: spec.rules[0].matches[0].headers[1].name: "
                     "\"x-a\" is also matched at spec.rules[0].matches[0].headers[0]"},
        BadInputCase{"HeaderValueWithNewline",
                     std::string(kRouteHead) +
                         "    - filters:\n"
                         "        - type: RequestHeaderModifier\n"
                         "          requestHeaderModifier:\n"
                         "            set: [{name: x-a, value: \"a\\r\\nx-evil: 1\"}]\n",
                     "f.yaml:11:38: HTTPRoute/default/r: "
                     "spec.rules[0].filters[0].requestHeaderModifier.set[0].value: must be 1-4096 "
                     "printable ASCII characters"},
        BadInputCase{"HeaderModifiedTwice",
                     std::string(kRouteHead) +
                         "    - filters:\n"
                         "        - type: ResponseHeaderModifier\n"
                         "          responseHeaderModifier: {set: [{name: Server, value: m}], "
                         "remove: [server]}\n",
                     "f.yaml:10:78: HTTPRoute/default/r: "
                     "spec.rules[0].filters[0].responseHeaderModifier.remove[0]: header "
                     "\"server\" is also modified at "
                     "spec.rules[0].filters[0].responseHeaderModifier.set[0].name"},
        BadInputCase{"MirrorPercentAndFraction",
                     std::string(kRouteHead) + "    - filters:\n"
                                               "        - type: RequestMirror\n"
                                               "          requestMirror:\n"
                                               "            backendRef: {name: web, port: 80}\n"
                                               "            percent: 10\n"
                                               "            fraction: {numerator: 1}\n",
                     "f.yaml:13:23: HTTPRoute/default/r: "
                     "spec.rules[0].filters[0].requestMirror.fraction: only one of percent or "
                     "fraction may be given"},
        BadInputCase{"MirrorFractionAboveOne",
                     std::string(kRouteHead) +
                         "    - filters:\n"
                         "        - type: RequestMirror\n"
                         "          requestMirror:\n"
                         "            backendRef: {name: web, port: 80}\n"
                         "            fraction: {numerator: 5, denominator: 4}\n",
                     "f.yaml:12:35: HTTPRoute/default/r: "
                     "spec.rules[0].filters[0].requestMirror.fraction.numerator: numerator 5 is "
                     "greater than denominator 4"},
        BadInputCase{"TooManyRules", rules(17),
                     "f.yaml:8:5: HTTPRoute/default/r: spec.rules: at most 16 items are allowed, "
                     "got 17"},
        BadInputCase{"DuplicateRuleName",
                     std::string(kRouteHead) + "    - name: a\n    - name: a\n",
                     "f.yaml:9:13: HTTPRoute/default/r: spec.rules[1].name: rule name \"a\" is "
                     "also used by spec.rules[0]"},
        BadInputCase{"RetryNotSupported", std::string(kRouteHead) + "    - retry: {attempts: 2}\n",
                     "f.yaml:8:7: HTTPRoute/default/r: spec.rules[0].retry: unknown field"},
        BadInputCase{"ParentDefaultsToGateway",
                     std::string(kRouteTop) + "  parentRefs:\n"
                                              "    - name: gw\n",
                     "f.yaml:6:13: HTTPRoute/default/r: spec.parentRefs[0].name: parentRef kind "
                     "Gateway (the default) is not supported: meshd binds routes to Services"},
        BadInputCase{"ServiceParentWithoutGroup",
                     std::string(kRouteTop) + "  parentRefs:\n"
                                              "    - {kind: Service, name: web}\n",
                     "f.yaml:6:14: HTTPRoute/default/r: spec.parentRefs[0].kind: a Service "
                     "parentRef needs group \"\" (the core group); group defaults to "
                     "gateway.networking.k8s.io has no Service"},
        BadInputCase{"ParentRefsMissing", std::string(kRouteTop) + "  hostnames: [a.b]\n",
                     "f.yaml:5:3: HTTPRoute/default/r: spec.parentRefs: required field is "
                     "missing: meshd binds a route to Services (GAMMA)"},
        BadInputCase{"ParentPortOutOfRange",
                     std::string(kRouteTop) +
                         "  parentRefs:\n"
                         "    - {group: \"\", kind: Service, name: web, port: 0}\n",
                     "f.yaml:6:51: HTTPRoute/default/r: spec.parentRefs[0].port: port 0 is out of "
                     "range [1, 65535]"},
        BadInputCase{"HostnameIsAnIp",
                     std::string(kRouteTop) +
                         "  parentRefs: [{group: \"\", kind: Service, name: web}]\n"
                         "  hostnames: [web, \"10.0.0.1\"]\n",
                     "f.yaml:6:20: HTTPRoute/default/r: spec.hostnames[1]: \"10.0.0.1\" is not a "
                     "valid hostname"},
        BadInputCase{"BadCreationTimestamp",
                     "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                     "metadata: {name: r, creationTimestamp: yesterday}\n"
                     "spec: {parentRefs: [{group: \"\", kind: Service, name: web}]}\n",
                     "f.yaml:3:40: HTTPRoute/default/r: metadata.creationTimestamp: \"yesterday\" "
                     "is not an RFC 3339 time"},
        BadInputCase{"RouteApiVersion",
                     "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: HTTPRoute\n"
                     "metadata: {name: r}\n"
                     "spec: {parentRefs: [{group: \"\", kind: Service, name: web}]}\n",
                     "f.yaml:1:13: HTTPRoute/default/r: apiVersion: unknown apiVersion "
                     "\"gateway.networking.k8s.io/v1alpha2\" for HTTPRoute (use "
                     "gateway.networking.k8s.io/v1)"},
        BadInputCase{
            "GrpcBadServiceName",
            std::string(kGrpcHead) + "    - matches: [{method: {service: \"hello world\"}}]\n",
            "f.yaml:7:36: GRPCRoute/default/g: spec.rules[0].matches[0].method.service: "
            "\"hello world\" is not a gRPC service name"},
        BadInputCase{"GrpcNeitherServiceNorMethod",
                     std::string(kGrpcHead) + "    - matches: [{method: {type: Exact}}]\n",
                     "f.yaml:7:26: GRPCRoute/default/g: spec.rules[0].matches[0].method: one or "
                     "both of service and method must be given"},
        BadInputCase{"GrpcBadMethodRegex",
                     std::string(kGrpcHead) +
                         "    - matches: [{method: {type: RegularExpression, method: \"(\"}}]\n",
                     "f.yaml:7:60: GRPCRoute/default/g: spec.rules[0].matches[0].method.method: "
                     "\"(\" is not a valid RE2 regular expression"},
        BadInputCase{"GrpcRedirectIsUnknown",
                     std::string(kGrpcHead) + "    - filters: [{type: RequestRedirect}]\n",
                     "f.yaml:7:24: GRPCRoute/default/g: spec.rules[0].filters[0].type: unknown "
                     "filter type \"RequestRedirect\" (use RequestHeaderModifier, "
                     "ResponseHeaderModifier or RequestMirror)"},
        BadInputCase{
            "GrpcTooManyMatches",
            std::string(kGrpcHead) + "    - matches: [{}, {}, {}, {}, {}, {}, {}, {}, {}]\n",
            "f.yaml:7:16: GRPCRoute/default/g: spec.rules[0].matches: at most 8 items "
            "are allowed, got 9"}),
    [](const ::testing::TestParamInfo<BadInputCase>& info) { return info.param.name; });

TEST(Routes, HttpRouteViewDefaultsAndV1beta1) {
  const std::string yaml =
      "apiVersion: gateway.networking.k8s.io/v1beta1\n"
      "kind: HTTPRoute\n"
      "metadata: {name: r, namespace: shop, creationTimestamp: \"2024-05-01T12:00:00Z\"}\n"
      "spec:\n"
      "  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]\n"
      "  hostnames: [\"*.example.com\"]\n"
      "  rules:\n"
      "    - matches:\n"
      "        - path: {type: Exact, value: /a}\n"
      "          headers: [{name: X-A, value: \"1\"}]\n"
      "          queryParams: [{name: q, type: RegularExpression, value: \"[0-9]+\"}]\n"
      "          method: GET\n"
      "      filters:\n"
      "        - type: RequestMirror\n"
      "          requestMirror: {backendRef: {name: web-v2, port: 80}, percent: 25}\n"
      "      backendRefs:\n"
      "        - {group: core, kind: Service, name: web-v1, namespace: shop, port: 80}\n"
      "        - {name: web-v2, port: 80, weight: 0}\n"
      "      timeouts: {request: 0s, backendRequest: 500ms}\n"
      "    - backendRefs: [{name: web-v1, port: 80}]\n";
  auto parsed = parseFiles({SourceFile{"r.yaml", yaml}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto spec = httpRouteSpec((*parsed)[0]);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_THAT(spec->parent_refs, SizeIs(1));
  EXPECT_EQ(spec->parent_refs[0].port, 80);
  EXPECT_TRUE(spec->parent_refs[0].binds("web", 80, "http"));
  EXPECT_FALSE(spec->parent_refs[0].binds("web", 81, "http"));
  EXPECT_FALSE(spec->parent_refs[0].binds("api", 80, "http"));
  EXPECT_EQ(spec->hostnames, std::vector<std::string>{"*.example.com"});
  ASSERT_THAT(spec->rules, SizeIs(2));
  const HttpRouteRule& r0 = spec->rules[0];
  ASSERT_THAT(r0.matches, SizeIs(1));
  EXPECT_EQ(r0.matches[0].path.type, PathMatchType::kExact);
  EXPECT_EQ(r0.matches[0].headers[0].name, "X-A");
  EXPECT_EQ(r0.matches[0].query_params[0].type, ValueMatchType::kRegularExpression);
  EXPECT_EQ(r0.matches[0].method, "GET");
  ASSERT_THAT(r0.filters, SizeIs(1));
  EXPECT_EQ(r0.filters[0].mirror.numerator, 25u);
  EXPECT_EQ(r0.filters[0].mirror.denominator, 100u);
  ASSERT_THAT(r0.backend_refs, SizeIs(2));
  EXPECT_EQ(r0.backend_refs[0].weight, 1u);  // default
  EXPECT_EQ(r0.backend_refs[1].weight, 0u);
  EXPECT_EQ(r0.timeouts.request_ms, 0u);  // "0s": disabled, so any backendRequest is fine
  EXPECT_EQ(r0.timeouts.backend_request_ms, 500u);
  // A rule without matches gets the CRD default: PathPrefix "/".
  ASSERT_THAT(spec->rules[1].matches, SizeIs(1));
  EXPECT_EQ(spec->rules[1].matches[0].path.type, PathMatchType::kPathPrefix);
  EXPECT_EQ(spec->rules[1].matches[0].path.value, "/");
}

TEST(Routes, GrpcRouteView) {
  const std::string yaml =
      "apiVersion: gateway.networking.k8s.io/v1\n"
      "kind: GRPCRoute\n"
      "metadata: {name: g}\n"
      "spec:\n"
      "  parentRefs: [{group: \"\", kind: Service, name: api, sectionName: grpc}]\n"
      "  rules:\n"
      "    - matches: [{method: {service: helloworld.Greeter, method: SayHello}, "
      "headers: [{name: x-a, value: b}]}]\n"
      "      backendRefs: [{name: api-v2, port: 9090, weight: 5}]\n";
  auto parsed = parseFiles({SourceFile{"g.yaml", yaml}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto spec = grpcRouteSpec((*parsed)[0]);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->parent_refs[0].binds("api", 9090, "grpc"));
  EXPECT_FALSE(spec->parent_refs[0].binds("api", 80, "http"));
  ASSERT_THAT(spec->rules, SizeIs(1));
  ASSERT_TRUE(spec->rules[0].matches[0].method.has_value());
  EXPECT_EQ(spec->rules[0].matches[0].method->service, "helloworld.Greeter");
  EXPECT_EQ(spec->rules[0].matches[0].method->method, "SayHello");
  EXPECT_EQ(spec->rules[0].backend_refs[0].weight, 5u);
  // The wrong typed view is an error, not a crash.
  EXPECT_FALSE(httpRouteSpec((*parsed)[0]).ok());
}

// A route whose parent or backend Service does not exist is valid: the Gateway
// API reports it in the route's status, and its traffic gets 500 (routing).
TEST(Routes, MissingServicesAreNotASetError) {
  const std::string yaml =
      "apiVersion: gateway.networking.k8s.io/v1\n"
      "kind: HTTPRoute\n"
      "metadata: {name: r}\n"
      "spec:\n"
      "  parentRefs: [{group: \"\", kind: Service, name: nosuch}]\n"
      "  rules: [{backendRefs: [{name: missing, port: 80}]}]\n";
  auto parsed = parseFiles({SourceFile{"r.yaml", yaml}});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ResourceSet set;
  for (auto& r : *parsed) set.upsert(std::move(r));
  EXPECT_TRUE(validateSet(set).ok());
}

// The CRD's timeout rule compares durations: 0s (disabled) as request allows any
// backendRequest, and a 0s backendRequest is never longer than the request.
TEST(Routes, ZeroTimeoutsFollowTheCrdRule) {
  for (const char* timeouts :
       {"{request: 5s, backendRequest: 0s}", "{request: 0s, backendRequest: 1h}",
        "{request: 5s, backendRequest: 5s}"}) {
    const std::string yaml = absl::StrCat(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
        "spec:\n  parentRefs: [{group: \"\", kind: Service, name: web}]\n"
        "  rules: [{timeouts: ",
        timeouts, "}]\n");
    auto parsed = parseFiles({SourceFile{"r.yaml", yaml}});
    EXPECT_TRUE(parsed.ok()) << timeouts << ": " << parsed.status();
  }
}

TEST(Helpers, ParseGatewayDuration) {
  struct Case {
    const char* text;
    std::optional<uint64_t> ms;
  };
  const Case cases[] = {
      {"0s", 0},
      {"10s", 10'000},
      {"500ms", 500},
      {"1h", 3'600'000},
      {"1m30s", 90'000},
      {"1h2m3s4ms", 3'723'004},
      {"99999h", 99999ull * 3'600'000},
      {"1s1s", 2'000},  // the pattern allows repeats
      {"", std::nullopt},
      {"0", std::nullopt},
      {"1.5s", std::nullopt},
      {"100000s", std::nullopt},
      {"1d", std::nullopt},
      {"1us", std::nullopt},
      {"1h1m1s1ms1h", std::nullopt},
      {"-1s", std::nullopt},
      {"10 s", std::nullopt},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(parseGatewayDuration(c.text), c.ms) << "\"" << c.text << "\"";
  }
}

}  // namespace
}  // namespace meshd::resources
