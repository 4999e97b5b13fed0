// Root test of the real binaries: meshd attached to a temporary cgroup,
// driven by meshctl over its unix socket, killed with -9 and restarted.
//
//   netns meshd-t<pid>-<n>                 cgroup (meshd attaches here)
//   +----------------------------------+
//   | lo: 10.0.3.1 10.0.3.2             |    meshd runs in the root netns:
//   | route unreachable 10.96.0.0/12    |    programs act by cgroup, not netns
//   | backends :8080 "addr:port\n"      |
//   | pods (forked, in the cgroup)      |
//   +----------------------------------+
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/root/fixture.h"

namespace meshd {
namespace {

using meshd::testing::Cgroup;
using meshd::testing::Child;
using meshd::testing::dialMany;
using meshd::testing::Netns;
using meshd::testing::parseCounts;
using meshd::testing::tcpConnect;

constexpr const char* kPinRoot = meshd::testing::kTestPinRoot;
constexpr char kVip[] = "10.96.0.30";

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv (no shell), capturing stdout and stderr.
Result runCapture(const std::vector<std::string>& argv) {
  Result r;
  std::string dir = std::filesystem::temp_directory_path() / "meshd-e2e-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return r;
  std::string out_path = dir + "/out", err_path = dir + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream of(out_path), ef(err_path);
  r.out.assign(std::istreambuf_iterator<char>(of), {});
  r.err.assign(std::istreambuf_iterator<char>(ef), {});
  std::filesystem::remove_all(dir);
  return r;
}

class DaemonRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MESHD_REQUIRE_ROOT();
    netns_ = std::make_unique<Netns>();
    cgroup_ = std::make_unique<Cgroup>();
    for (const char* a : {"10.0.3.1/32", "10.0.3.2/32"}) {
      ASSERT_TRUE(netns_->ip({"addr", "add", a, "dev", "lo"}).ok());
    }
    ASSERT_TRUE(netns_->ip({"route", "add", "unreachable", "10.96.0.0/12"}).ok());
    auto backends =
        meshd::testing::startBackends(*netns_, {{"10.0.3.1", 8080}, {"10.0.3.2", 8080}});
    ASSERT_TRUE(backends.ok()) << backends.status();
    backends_ = std::move(*backends);
    dir_ = std::filesystem::temp_directory_path() / "meshd-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    instance_ = absl::StrCat("e2e", getpid());
    socket_ = dir_ + "/api.sock";
  }

  void TearDown() override {
    holders_.clear();
    stopMeshd(SIGKILL);
    if (!instance_.empty()) {
      runCapture({MESHD_BIN, "--remove-pins", "--instance", instance_, "--pin-root", kPinRoot});
      rmdir(kPinRoot);
    }
    if (HasFailure() && !dir_.empty()) {
      std::ifstream log(dir_ + "/meshd.log");
      std::string text(std::istreambuf_iterator<char>(log), {});
      std::fprintf(stderr, "---- meshd log ----\n%s\n", text.c_str());
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
    backends_.kill();
    cgroup_.reset();
    netns_.reset();
  }

  std::vector<std::string> meshdArgs() const {
    return {MESHD_BIN,       "--instance",     instance_, "--cgroup",
            cgroup_->path(), "--api-socket",   socket_,   "--state-dir",
            dir_ + "/state", "--pin-root",     kPinRoot,  "--metrics-addr",
            "127.0.0.1:0",   "--max-services", "256",     "--max-backends",
            "256",           "--max-slots",    "1024"};
  }

  void startMeshd() {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int log = open((dir_ + "/meshd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      dup2(log, 1);
      dup2(log, 2);
      auto argv = meshdArgs();
      argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    meshd_pid_ = pid;
    // Ready = programs attached and the stored state reconciled.
    for (int i = 0; i < 200; ++i) {
      Result r = meshctl({"-o", "json", "status"});
      if (r.exit_code == 0 && nlohmann::json::parse(r.out, nullptr, false).value("ready", false))
        return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "meshd did not become ready in 20 s";
  }

  // Sends `sig` and reaps meshd; returns its exit code (128+signal when killed).
  int stopMeshd(int sig) {
    if (meshd_pid_ <= 0) return -1;
    kill(meshd_pid_, sig);
    int status = 0;
    waitpid(meshd_pid_, &status, 0);
    meshd_pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  Result meshctl(std::vector<std::string> args) {
    args.insert(args.begin(), {MESHCTL_BIN, "--socket", socket_});
    return runCapture(args);
  }

  nlohmann::json meshctlJson(std::vector<std::string> args) {
    args.insert(args.begin(), {"-o", "json"});
    Result r = meshctl(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  std::string writeFile(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::map<std::string, int> dialInPod(int count) {
    auto out = meshd::testing::runInPod(*netns_, cgroup_.get(),
                                        [count] { return dialMany(kVip, 80, count); });
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? parseCounts(*out) : std::map<std::string, int>{};
  }

  void holdInPod(int count) {
    auto child = meshd::testing::spawnInPod(*netns_, cgroup_.get(), [count](int ready_fd) {
      for (int i = 0; i < count; ++i) {
        int fd = -1;  // left open: the pod process holds it
        if (tcpConnect(kVip, 80, &fd).rfind("ERR:", 0) == 0) _exit(1);
      }
      (void)!write(ready_fd, "O", 1);
      pause();
    });
    ASSERT_TRUE(child.ok()) << child.status();
    holders_.push_back(std::move(*child));
  }

  // Programs attached to the cgroup for connect4 (ours are the only ones).
  uint32_t connect4Programs() {
    int fd = open(cgroup_->path().c_str(), O_RDONLY | O_DIRECTORY);
    uint32_t ids[16] = {0}, cnt = 16, flags = 0;
    int ret = bpf_prog_query(fd, BPF_CGROUP_INET4_CONNECT, 0, &flags, ids, &cnt);
    close(fd);
    return ret == 0 ? cnt : 9999;
  }

  uint32_t pinnedMapId(const std::string& map) {
    int fd = bpf_obj_get(absl::StrCat(kPinRoot, "/", instance_, "/", map).c_str());
    if (fd < 0) return 0;
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    int ret = bpf_obj_get_info_by_fd(fd, &info, &len);
    close(fd);
    return ret == 0 ? info.id : 0;
  }

  int64_t liveConnections() {
    int64_t live = 0;
    for (const auto& row : meshctlJson({"get", "backends", "web"}))
      live += row.value("liveConnections", int64_t{0});
    return live;
  }

  std::unique_ptr<Netns> netns_;
  std::unique_ptr<Cgroup> cgroup_;
  Child backends_;
  std::vector<Child> holders_;
  std::string dir_, instance_, socket_;
  pid_t meshd_pid_ = -1;
  std::vector<std::string> extra_args_;  // appended to meshdArgs() by startMeshd()
};

// The web Service (10.96.0.30:80 -> :8080) with backends 10.0.3.1 and `second`,
// and its TrafficPolicy: `policy` is the spec after targetRef.
std::string webYaml(const std::string& second, const std::string& policy) {
  return absl::StrCat(R"(apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.30
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
  - addresses: [10.0.3.1]
  - addresses: [)",
                      second, R"(]
ports: [{port: 8080}]
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
)",
                      policy);
}

const std::string kWebYaml = webYaml("10.0.3.2", R"(  loadBalancer:
    algorithm: WeightedRandom
    weights: [{address: 10.0.3.1, weight: 1}, {address: 10.0.3.2, weight: 3}]
)");

TEST_F(DaemonRootTest, KillNineKeepsVipWorkingAndRestartAdoptsThePins) {
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  Result applied = meshctl({"apply", "-f", writeFile("web.yaml", kWebYaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  EXPECT_NE(applied.out.find("Service/default/web created"), std::string::npos) << applied.out;

  auto counts = dialInPod(400);
  EXPECT_GT(counts["10.0.3.1:8080"], 0);
  EXPECT_GT(counts["10.0.3.2:8080"], counts["10.0.3.1:8080"]) << "weights 1:3";
  EXPECT_EQ(counts["10.0.3.1:8080"] + counts["10.0.3.2:8080"], 400);

  holdInPod(4);
  EXPECT_EQ(liveConnections(), 4);
  const uint32_t services_map = pinnedMapId("mesh_services");
  ASSERT_NE(services_map, 0u);
  ASSERT_EQ(connect4Programs(), 1u);

  // kill -9: the pinned links keep the kernel path working without meshd.
  EXPECT_EQ(stopMeshd(SIGKILL), 128 + SIGKILL);
  counts = dialInPod(200);
  EXPECT_EQ(counts["10.0.3.1:8080"] + counts["10.0.3.2:8080"], 200)
      << "every connect to the VIP still rewritten while meshd is down";

  // Restart: adopts the pins; nothing duplicated, nothing rewritten.
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  nlohmann::json status = meshctlJson({"status"});
  EXPECT_TRUE(status.value("adopted", false)) << status.dump();
  EXPECT_EQ(status["reconcile"].value("lastWrites", -1), 0) << status.dump();
  EXPECT_EQ(pinnedMapId("mesh_services"), services_map) << "the same map, not a new one";
  EXPECT_EQ(connect4Programs(), 1u) << "the link was updated in place, not attached twice";
  EXPECT_EQ(liveConnections(), 4) << "counters of open connections survived the restart";
  nlohmann::json services = meshctlJson({"get", "services"});
  ASSERT_EQ(services.size(), 1u);
  EXPECT_EQ(services[0]["vip"], kVip);
  counts = dialInPod(100);
  EXPECT_EQ(counts["10.0.3.1:8080"] + counts["10.0.3.2:8080"], 100);

  // SIGTERM: clean exit, pins stay, VIP keeps working.
  EXPECT_EQ(stopMeshd(SIGTERM), 0);
  counts = dialInPod(20);
  EXPECT_EQ(counts["10.0.3.1:8080"] + counts["10.0.3.2:8080"], 20);

  // --remove-pins detaches: the VIP is no longer rewritten (and is unreachable).
  Result removed =
      runCapture({MESHD_BIN, "--remove-pins", "--instance", instance_, "--pin-root", kPinRoot});
  EXPECT_EQ(removed.exit_code, 0) << removed.err;
  for (int i = 0; i < 100 && connect4Programs() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(connect4Programs(), 0u);
  counts = dialInPod(1);
  EXPECT_EQ(counts.begin()->first.rfind("ERR:", 0), 0u) << counts.begin()->first;
}

TEST_F(DaemonRootTest, RejectedApplyChangesNothingAndNamesFileLineAndField) {
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  ASSERT_EQ(meshctl({"apply", "-f", writeFile("web.yaml", kWebYaml)}).exit_code, 0);
  nlohmann::json before = meshctlJson({"get", "backends", "web"});
  ASSERT_EQ(before.size(), 2u);

  // One good document (a new Service) and one bad one: weight out of range.
  std::string bad = std::string(R"(apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec:
  clusterIP: 10.96.0.31
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: meshd.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
  loadBalancer:
    algorithm: WeightedRandom
    weights: [{address: 10.0.3.1, weight: 0}]
)");
  Result r = meshctl({"apply", "-f", writeFile("bad.yaml", bad)});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.yaml:15:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("weight"), std::string::npos) << r.err;
  EXPECT_EQ(meshctlJson({"get", "services"}).size(), 1u) << "the good document was not applied";
  EXPECT_EQ(meshctlJson({"get", "backends", "web"}), before) << "weights unchanged";

  // Usage errors exit 2.
  EXPECT_EQ(meshctl({"get"}).exit_code, 2);

  // Applied state survives a restart (embedded store).
  EXPECT_EQ(stopMeshd(SIGTERM), 0);
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  EXPECT_EQ(meshctlJson({"get", "services"}).size(), 1u);
}

// Connection limits from YAML to the kernel, and `meshctl explain` saying why
// connects are refused.
TEST_F(DaemonRootTest, ConnectionLimitsFromYamlAndExplain) {
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  std::string yaml = kWebYaml + "  connectionLimits: {maxConnectionsPerBackend: 2}\n";
  Result applied = meshctl({"apply", "-f", writeFile("web.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  Result text = meshctl({"explain", "web"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("verdict:     admitting"), std::string::npos) << text.out;

  holdInPod(4);  // two backends x 2: both full now
  EXPECT_EQ(liveConnections(), 4);
  auto counts = dialInPod(3);
  EXPECT_EQ(counts["ERR:ECONNREFUSED"], 3) << "no backend has room: refused at once";

  text = meshctl({"explain", "web"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("refusing: every backend is at maxConnectionsPerBackend (2)"),
            std::string::npos)
      << text.out;
  nlohmann::json explained = meshctlJson({"explain", "web"});
  ASSERT_EQ(explained.size(), 1u);
  EXPECT_EQ(explained[0]["refusedAtBackendLimits"], 3);
  EXPECT_EQ(explained[0]["liveConnections"], 4);
  EXPECT_EQ(explained[0]["nodeWideRefusals"]["limit_backend"], 3);
  EXPECT_EQ(meshctl({"explain", "nope"}).exit_code, 1);

  holders_.clear();  // kill -9: the reservations come back
  for (int i = 0; i < 200 && liveConnections() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(liveConnections(), 0);
  counts = dialInPod(4);
  EXPECT_EQ(counts["10.0.3.1:8080"] + counts["10.0.3.2:8080"], 4);
}

// Outlier detection from YAML to the kernel and back to the operator: a
// backend address with no listener (RST) is ejected after three failures;
// `meshctl get backends` and `meshctl explain` show it, with SRTT for the
// healthy one. A policy with a bad percentage is rejected whole.
TEST_F(DaemonRootTest, OutlierDetectionFromYamlShowsInGetBackendsAndExplain) {
  ASSERT_TRUE(netns_->ip({"addr", "add", "10.0.3.3/32", "dev", "lo"}).ok());  // nothing listens
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  const std::string yaml = webYaml("10.0.3.3", R"(  loadBalancer: {algorithm: LeastLatency}
  outlierDetection:
    consecutiveFailures: 3
    baseEjectionTime: 1m
    maxEjectionPercent: 50
)");
  Result applied = meshctl({"apply", "-f", writeFile("web.yaml", yaml)});
  ASSERT_EQ(applied.exit_code, 0) << applied.err;
  auto counts = dialInPod(40);
  EXPECT_EQ(counts["ERR:ECONNREFUSED"], 3);
  EXPECT_EQ(counts["10.0.3.1:8080"], 37);

  nlohmann::json backends = meshctlJson({"get", "backends", "web"});
  ASSERT_EQ(backends.size(), 2u);
  const nlohmann::json& good = backends[0];
  const nlohmann::json& bad = backends[1];
  ASSERT_EQ(bad["backend"], "10.0.3.3:8080");
  EXPECT_EQ(bad["ejected"], true);
  EXPECT_EQ(bad["consecutiveFailures"], 3);
  EXPECT_EQ(bad["timesEjected"], 1);
  EXPECT_TRUE(bad["ejectedFor"].is_string()) << bad;
  EXPECT_TRUE(bad["ejectedUntil"].is_string()) << bad;
  EXPECT_EQ(good["ejected"], false);
  EXPECT_GT(good["rttSamples"].get<uint64_t>(), 0u);
  EXPECT_GT(good["srttEwmaUs"].get<uint64_t>(), 0u);
  Result table = meshctl({"get", "backends", "web"});
  EXPECT_NE(table.out.find("CONSEC-FAIL"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("EJECTED-FOR"), std::string::npos) << table.out;

  Result text = meshctl({"explain", "web"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("outliers:    eject after 3 failed connects in a row for 1m"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("ejections:   1 ejected now, 1 made"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("10.0.3.3:8080  live 0/none  connect failures 3  EJECTED ("),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("admitting: 1 of 2 backends (1 ejected)"), std::string::npos) << text.out;

  // Bad input: the whole apply is rejected, naming file, line, column and field.
  nlohmann::json policies = meshctlJson({"get", "policies"});
  std::string bad_yaml = yaml;
  bad_yaml.replace(bad_yaml.find("maxEjectionPercent: 50"), 22, "maxEjectionPercent: 150");
  Result rejected = meshctl({"apply", "-f", writeFile("bad.yaml", bad_yaml)});
  EXPECT_EQ(rejected.exit_code, 1);
  EXPECT_NE(rejected.err.find("bad.yaml:29:25: TrafficPolicy/default/web: "
                              "spec.outlierDetection.maxEjectionPercent: maxEjectionPercent 150 "
                              "is out of range [0, 100]"),
            std::string::npos)
      << rejected.err;
  EXPECT_EQ(meshctlJson({"get", "policies"}), policies);
}

// --redirect-address/--proxy-port reach mesh_config; `meshctl status` and
// `meshctl bpf dump` show them; a bad address is a usage error naming it.
TEST_F(DaemonRootTest, RedirectAddressFlagsReachTheKernelAndStatus) {
  Result bad = runCapture({MESHD_BIN, "--instance", instance_, "--redirect-address",
                           "10.0.3.9,10.0.3.10", "--pin-root", kPinRoot});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--redirect-address \"10.0.3.9,10.0.3.10\": two IPv4"), std::string::npos)
      << bad.err;

  extra_args_ = {"--redirect-address", "10.0.3.9,fd00:3::9", "--proxy-port", "15099"};
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  nlohmann::json status = meshctlJson({"status"});
  EXPECT_EQ(status.value("l7Redirect", ""), "10.0.3.9:15099, [fd00:3::9]:15099") << status.dump();
  nlohmann::json config = meshctlJson({"bpf", "dump", "mesh_config"});
  EXPECT_EQ(config.value("redirect_ipv4", ""), "10.0.3.9") << config.dump();
  EXPECT_EQ(config.value("redirect_ipv6", ""), "fd00:3::9") << config.dump();
  EXPECT_EQ(config.value("redirect_port", 0), 15099) << config.dump();
  nlohmann::json entries = meshctlJson({"bpf", "dump", "mesh_orig_dst"});
  EXPECT_TRUE(entries.is_array() && entries.empty()) << entries.dump();
}

// Starts argv (no shell) with stdout and stderr appended to `log`; returns its pid.
pid_t spawnLogged(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// A TCP port free on 127.0.0.1 right now.
uint16_t freeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  bind(fd, reinterpret_cast<sockaddr*>(&sin), len);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  close(fd);
  return ntohs(sin.sin_port);
}

// The node agent and the tunnel of the real binaries: meshd-ca on 127.0.0.1 with the test
// PKI, meshd with --ca-address and its node credential; a local Workload gets its
// certificate (meshctl status), the tunnel listens. A wrong node credential stops start-up.
TEST_F(DaemonRootTest, MtlsFlagsStartTheNodeAgentAndTheTunnel) {
  const std::string certs = MESHD_TEST_CERTS_DIR;
  std::vector<std::string> bad = meshdArgs();
  bad.insert(bad.end(), {"--node-name", "n1", "--ca-address", "127.0.0.1:1", "--node-cert",
                         certs + "/node-n2.chain.pem", "--node-key", certs + "/node-n2.key",
                         "--trust-bundle", certs + "/bundle.pem", "--tunnel-address", "127.0.0.1"});
  Result refused = runCapture(bad);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("starting the node agent (--ca-address): --node-cert"),
            std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("is not this node's credential"), std::string::npos) << refused.err;

  const std::string placement = writeFile(
      "placement.yaml", "- {name: c, namespace: default, serviceAccount: client, node: n1}\n");
  const std::string ca_log = dir_ + "/ca.log";
  pid_t ca = spawnLogged(
      {MESHD_CA_BIN, "--listen", "127.0.0.1:0", "--root-cert", certs + "/bundle.pem", "--ca-key",
       certs + "/intermediate.key", "--cert-chain", certs + "/intermediate.crt", "--workloads",
       placement, "--metrics-addr", "127.0.0.1:0"},
      ca_log);
  ASSERT_GT(ca, 0);
  std::string ca_port;
  // The log line "... CertificateService on 127.0.0.1:0 (port N) ..." (no std::regex: GCC 12
  // warns inside <regex> under ASan and -Werror).
  for (int i = 0; i < 200 && ca_port.empty(); ++i) {
    std::ifstream in(ca_log);
    std::string text(std::istreambuf_iterator<char>(in), {});
    const size_t at = text.find("CertificateService on ");
    const size_t port_at = at == std::string::npos ? at : text.find("(port ", at);
    if (port_at != std::string::npos) {
      const size_t digits = port_at + 6;
      const size_t end = text.find(')', digits);
      if (end != std::string::npos && end > digits &&
          text.find_first_not_of("0123456789", digits) == end) {
        ca_port = text.substr(digits, end - digits);
      }
    }
    if (ca_port.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(ca_port.empty()) << "meshd-ca did not start in 20 s";

  const std::string tunnel_port = std::to_string(freeLoopbackPort());
  extra_args_ = {"--node-name",      "n1",
                 "--ca-address",     "127.0.0.1:" + ca_port,
                 "--node-cert",      certs + "/node-n1.chain.pem",
                 "--node-key",       certs + "/node-n1.key",
                 "--trust-bundle",   certs + "/bundle.pem",
                 "--tunnel-address", "127.0.0.1",
                 "--tunnel-port",    tunnel_port};
  startMeshd();
  if (HasFatalFailure()) {
    kill(ca, SIGKILL);
    waitpid(ca, nullptr, 0);
    return;
  }
  Result applied = meshctl({"apply", "-f", writeFile("w.yaml", R"(apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: c, namespace: default}
spec: {serviceAccount: client, addresses: [10.0.3.5], node: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 10.0.3.9}]}
)")});
  EXPECT_EQ(applied.exit_code, 0) << applied.err;
  nlohmann::json mtls;
  for (int i = 0; i < 200; ++i) {
    mtls = meshctlJson({"status"}).value("mtls", nlohmann::json());
    if (mtls.is_object() && mtls.value("identitiesReady", 0) == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(mtls.value("identitiesReady", 0), 1) << mtls.dump();
  EXPECT_EQ(mtls.value("identities", 0), 1) << mtls.dump();
  EXPECT_GE(mtls.value("certificatesIssued", 0), 1) << mtls.dump();
  EXPECT_EQ(mtls.value("nodeIdentity", ""), "spiffe://cluster.local/meshd/node/n1");
  EXPECT_EQ(mtls.value("vias", 0), 1) << mtls.dump();  // (client, n2 at 10.0.3.9:port)
  EXPECT_EQ(mtls.value("tunnelListen", ""), "127.0.0.1:" + tunnel_port);
  // The tunnel listens (a plain TCP connect; the TLS side is tested in the unit tests).
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(std::stoi(tunnel_port)));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0) << strerror(errno);
  close(fd);
  EXPECT_EQ(stopMeshd(SIGTERM), 0);
  kill(ca, SIGTERM);
  waitpid(ca, nullptr, 0);
}

TEST_F(DaemonRootTest, MeshctlSaysWhenMeshdIsNotRunning) {
  Result r = meshctl({"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach meshd"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace meshd
