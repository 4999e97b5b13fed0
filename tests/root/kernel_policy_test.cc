// Root test of the daemon's kernel policy wiring: the real meshd (--node-name n1) applies
// Workloads, a PeerAuthentication STRICT and an AuthorizationPolicy, and programs STRICT on
// the server pod's veth and the L4 authorization maps by itself.
//
//   node netns (meshd runs here; its cgroup hooks act on the node cgroup)
//   +------------------------------------------------------------+
//   | pa: 10.1.1.1/24                pb: 10.1.2.1/24  ip_forward  |
//   +----|-----------------------------------|-------------------+
//        | veth                              | veth  <- STRICT, attached by meshd
//   pod A netns: eth0 10.1.1.2           pod B netns: eth0 10.1.2.2, server :8080
//   clients in cgroups web (allowed)     Workload shop/db-0 (STRICT, governed)
//   and cli (denied)                     Service db 10.96.0.40:80 -> :8080
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "datapath/preflight.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/root/fixture.h"

namespace meshd {
namespace {

using meshd::testing::Cgroup;
using meshd::testing::Child;
using meshd::testing::Netns;

constexpr const char* kPinRoot = meshd::testing::kTestPinRoot;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

// Runs argv (no shell), capturing stdout and stderr.
Result runCapture(const std::vector<std::string>& argv) {
  Result r;
  std::string dir = std::filesystem::temp_directory_path() / "meshd-kp-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return r;
  const std::string out_path = dir + "/out", err_path = dir + "/err";
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

// Connects with a bounded wait (the SYN may be dropped) and reads the server's identity
// line: the identity, "TIMEOUT" (no answer in 1.5 s) or errText(errno).
std::string probe(const std::string& addr, uint16_t port) {
  socklen_t len;
  sockaddr_storage ss = meshd::testing::sockaddrOf(addr, port, &len);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    out = meshd::testing::errText(errno);
  } else {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1500) <= 0) {
      out = "TIMEOUT";
    } else {
      int err = 0;
      socklen_t el = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
      if (err != 0) {
        out = meshd::testing::errText(err);
      } else {
        char buf[128];
        ssize_t n = read(fd, buf, sizeof(buf));
        out = n > 0 ? std::string(buf, n) : "ERR:no-identity";
        if (!out.empty() && out.back() == '\n') out.pop_back();
      }
    }
  }
  close(fd);
  return out;
}

class KernelPolicyRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MESHD_REQUIRE_ROOT();
    ASSERT_TRUE(datapath::strictSupported().ok()) << datapath::strictSupported();
    node_ = std::make_unique<Netns>();
    pod_a_ = std::make_unique<Netns>();
    pod_b_ = std::make_unique<Netns>();
    ASSERT_NO_FATAL_FAILURE(link(*pod_a_, "pa", 1));
    ASSERT_NO_FATAL_FAILURE(link(*pod_b_, "pb", 2));
    ASSERT_TRUE(meshd::testing::run({"ip", "netns", "exec", node_->name(), "sysctl", "-qw",
                                     "net.ipv4.ip_forward=1"})
                    .ok());
    node_cg_ = std::make_unique<Cgroup>();
    web_cg_ = std::make_unique<Cgroup>(node_cg_.get());
    cli_cg_ = std::make_unique<Cgroup>(node_cg_.get());
    auto b = meshd::testing::startBackends(*pod_b_, {{"10.1.2.2", 8080}});
    ASSERT_TRUE(b.ok()) << b.status();
    server_ = std::move(*b);
    dir_ = std::filesystem::temp_directory_path() / "meshd-kp-XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    instance_ = absl::StrCat("kp", getpid());
    socket_ = dir_ + "/api.sock";
  }

  void TearDown() override {
    stopMeshd();
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
    server_.kill();
    web_cg_.reset();
    cli_cg_.reset();
    node_cg_.reset();
    pod_a_.reset();
    pod_b_.reset();
    node_.reset();
  }

  // A veth: `dev` in the node netns, eth0 in `pod`, 10.1.<n>.0/24, the node end the gateway.
  void link(const Netns& pod, const std::string& dev, int n) {
    const std::string v4 = absl::StrCat("10.1.", n, ".");
    ASSERT_TRUE(
        node_->ip({"link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", pod.name()})
            .ok());
    ASSERT_TRUE(node_->ip({"addr", "add", v4 + "1/24", "dev", dev}).ok());
    ASSERT_TRUE(node_->ip({"link", "set", dev, "up"}).ok());
    ASSERT_TRUE(pod.ip({"addr", "add", v4 + "2/24", "dev", "eth0"}).ok());
    ASSERT_TRUE(pod.ip({"link", "set", "eth0", "up"}).ok());
    ASSERT_TRUE(pod.ip({"route", "add", "default", "via", v4 + "1"}).ok());
  }

  // meshd in the node netns (where the pods' veth host ends are).
  void startMeshd() {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int log = open((dir_ + "/meshd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      dup2(log, 1);
      dup2(log, 2);
      int ns = open(("/var/run/netns/" + node_->name()).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) _exit(126);
      std::vector<std::string> argv = {MESHD_BIN,
                                       "--instance",
                                       instance_,
                                       "--cgroup",
                                       node_cg_->path(),
                                       "--api-socket",
                                       socket_,
                                       "--state-dir",
                                       dir_ + "/state",
                                       "--pin-root",
                                       kPinRoot,
                                       "--metrics-addr",
                                       "127.0.0.1:0",
                                       "--max-services",
                                       "64",
                                       "--max-backends",
                                       "64",
                                       "--max-slots",
                                       "256",
                                       "--node-name",
                                       "n1",
                                       "--redirect-address",
                                       "10.1.1.1",
                                       "--proxy-port",
                                       "15001"};
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    meshd_pid_ = pid;
    for (int i = 0; i < 200; ++i) {
      Result r = meshctl({"-o", "json", "status"});
      if (r.exit_code == 0 && nlohmann::json::parse(r.out, nullptr, false).value("ready", false))
        return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "meshd did not become ready in 20 s";
  }

  void stopMeshd() {
    if (meshd_pid_ <= 0) return;
    kill(meshd_pid_, SIGKILL);
    int status = 0;
    waitpid(meshd_pid_, &status, 0);
    meshd_pid_ = -1;
  }

  Result meshctl(std::vector<std::string> args) {
    args.insert(args.begin(), {MESHCTL_BIN, "--socket", socket_});
    return runCapture(args);
  }

  nlohmann::json policyStatus() {
    Result r = meshctl({"-o", "json", "status"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json s = nlohmann::json::parse(r.out, nullptr, false);
    return s.is_object() && s.contains("policy") ? s["policy"] : nlohmann::json::object();
  }

  // mesh_cg_identity's entries, sorted.
  nlohmann::json identities() {
    Result r = meshctl({"-o", "json", "bpf", "dump", "mesh_cg_identity"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    if (!j.is_array()) return nlohmann::json::array();
    std::sort(j.begin(), j.end());
    return j;
  }

  // The value of the first /metrics sample whose line contains every one of `parts`; -1 when
  // none does. The metrics listener is in the node namespace, so the GET runs there.
  double metric(const std::vector<std::string>& parts) {
    Result r = meshctl({"-o", "json", "status"});
    const int port = nlohmann::json::parse(r.out, nullptr, false).value("metricsPort", 0);
    auto body = meshd::testing::runInPod(*node_, nullptr, [port] {
      socklen_t len;
      sockaddr_storage ss =
          meshd::testing::sockaddrOf("127.0.0.1", static_cast<uint16_t>(port), &len);
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return std::string();
      meshd::testing::writeAll(fd, "GET /metrics HTTP/1.0\r\n\r\n");
      std::string text = meshd::testing::readAll(fd);
      close(fd);
      return text;
    });
    EXPECT_TRUE(body.ok()) << body.status();
    if (!body.ok()) return -1;
    size_t start = 0;
    while (start < body->size()) {
      size_t end = body->find('\n', start);
      if (end == std::string::npos) end = body->size();
      const std::string line = body->substr(start, end - start);
      start = end + 1;
      if (line.empty() || line[0] == '#') continue;
      bool all = true;
      for (const std::string& p : parts) all = all && line.find(p) != std::string::npos;
      if (all) return std::stod(line.substr(line.rfind(' ') + 1));
    }
    return -1;
  }

  void apply(const std::string& yaml) {
    const std::string path = dir_ + "/policy.yaml";
    std::ofstream(path) << yaml;
    Result r = meshctl({"apply", "-f", path});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }

  std::string fromPodA(const std::string& addr, uint16_t port, const Cgroup* cgroup) {
    auto out = meshd::testing::runInPod(*pod_a_, cgroup, [&] { return probe(addr, port); });
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : "ERR:pod";
  }

  std::string yaml() const {
    return absl::StrCat(R"(apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {serviceAccount: web, addresses: [10.1.1.2], node: n1, cgroup: )",
                        web_cg_->path(), R"(}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: cli-0, namespace: shop, labels: {app: cli}}
spec: {serviceAccount: cli, addresses: [10.1.1.3], node: n1, cgroup: )",
                        cli_cg_->path(), R"(}
---
apiVersion: meshd.io/v1alpha1
kind: Workload
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec: {serviceAccount: db, addresses: [10.1.2.2], node: n1, netns: /var/run/netns/)",
                        pod_b_->name(), R"(}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: 10.96.0.40
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: shop
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
  - addresses: [10.1.2.2]
ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db-l7, namespace: shop}
spec:
  clusterIP: 10.96.0.41
  ports: [{port: 81, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-l7-1
  namespace: shop
  labels: {kubernetes.io/service-name: db-l7}
addressType: IPv4
endpoints:
  - addresses: [10.1.2.2]
ports: [{port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: db-l7, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: db-l7}]
  rules:
    - backendRefs: [{name: db-l7, port: 81}]
---
apiVersion: meshd.io/v1alpha1
kind: PeerAuthentication
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: STRICT}
---
apiVersion: meshd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
)");
  }

  std::unique_ptr<Netns> node_, pod_a_, pod_b_;
  std::unique_ptr<Cgroup> node_cg_, web_cg_, cli_cg_;
  Child server_;
  std::string dir_, instance_, socket_;
  pid_t meshd_pid_ = -1;
};

TEST_F(KernelPolicyRootTest, StrictAndL4AuthorizationFromAppliedResources) {
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  // Before any policy: plaintext reaches the server.
  EXPECT_EQ(fromPodA("10.1.2.2", 8080, nullptr), "10.1.2.2:8080");

  ASSERT_NO_FATAL_FAILURE(apply(yaml()));
  nlohmann::json p = policyStatus();
  ASSERT_EQ(p.value("lastError", std::string("?")), "") << p.dump();
  EXPECT_EQ(p["strictInterfaces"].size(), 1u) << p.dump();
  EXPECT_EQ(p["governedDestinations"], nlohmann::json::array({"shop/db-0"})) << p.dump();
  EXPECT_EQ(p.value("identities", 0), 2) << p.dump();

  // Plaintext from another pod (not through a VIP, no mark): the SYN is dropped.
  const uint64_t dropped = p["counters"].value("strictDropped", uint64_t{0});
  EXPECT_EQ(fromPodA("10.1.2.2", 8080, nullptr), "TIMEOUT");
  EXPECT_GT(policyStatus()["counters"].value("strictDropped", uint64_t{0}), dropped);

  // Through the VIP: the denied identity is refused at connect(), the allowed one connects
  // (and passes STRICT with its same-node pass).
  EXPECT_EQ(fromPodA("10.96.0.40", 80, cli_cg_.get()), "ERR:ECONNREFUSED");
  EXPECT_EQ(fromPodA("10.96.0.40", 80, web_cg_.get()), "10.1.2.2:8080");
  // An L7 Service (HTTPRoute-bound) with the same backend: the client reaches meshd's
  // listener, meshd's upstream connect carries the STRICT mark and passes (the server-first
  // backend's greeting comes through).
  EXPECT_EQ(fromPodA("10.96.0.41", 81, web_cg_.get()), "10.1.2.2:8080");
  nlohmann::json c = policyStatus()["counters"];
  EXPECT_GE(c.value("authzDenied", uint64_t{0}), 1u) << c.dump();
  EXPECT_GE(c.value("strictFastPass", uint64_t{0}), 1u) << c.dump();
  // The same in /metrics: the STRICT entry's drops and the service's authz refusals.
  EXPECT_GE(metric({"meshd_strict_dropped_syns_total{", "\"10.1.2.2\"", "port=\"0\""}), 1);
  EXPECT_GE(metric({"meshd_service_connects_refused_total{", "service=\"db\"", "reason=\"authz\""}),
            1);

  // kill -9 and restart: the pins keep enforcing while meshd is down; the restarted meshd
  // keeps the identity ids the maps hold and adopts the STRICT link.
  nlohmann::json ids_before = identities();
  ASSERT_EQ(ids_before.size(), 2u) << ids_before.dump();
  stopMeshd();
  EXPECT_EQ(fromPodA("10.96.0.40", 80, cli_cg_.get()), "ERR:ECONNREFUSED");
  ASSERT_NO_FATAL_FAILURE(startMeshd());
  EXPECT_EQ(identities(), ids_before);
  p = policyStatus();
  EXPECT_EQ(p["strictInterfaces"].size(), 1u) << p.dump();
  EXPECT_EQ(fromPodA("10.96.0.40", 80, web_cg_.get()), "10.1.2.2:8080");
  EXPECT_EQ(fromPodA("10.96.0.40", 80, cli_cg_.get()), "ERR:ECONNREFUSED");

  // Deleting the PeerAuthentication takes STRICT off the veth: plaintext passes again.
  Result del = meshctl({"delete", "PeerAuthentication", "db", "-n", "shop"});
  ASSERT_EQ(del.exit_code, 0) << del.out << del.err;
  p = policyStatus();
  EXPECT_TRUE(p["strictInterfaces"].empty()) << p.dump();
  EXPECT_EQ(fromPodA("10.1.2.2", 8080, nullptr), "10.1.2.2:8080");
  // Authorization stays.
  EXPECT_EQ(fromPodA("10.96.0.40", 80, cli_cg_.get()), "ERR:ECONNREFUSED");
}

}  // namespace
}  // namespace meshd
