// Runs the built meshctl binary: its exit codes and messages, and its round
// trips through meshd's real gRPC API (api::ApiServer on a temporary unix
// socket) to a fake daemon behind api::MeshdControl.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/synchronization/mutex.h"
#include "api/service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace meshd {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs meshctl with `args`, stdout and stderr captured in files under `dir`.
RunResult meshctl(const std::string& dir, std::vector<std::string> args) {
  const std::string out_path = dir + "/stdout";
  const std::string err_path = dir + "/stderr";
  const pid_t pid = fork();
  if (pid == 0) {
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> argv;
    std::string prog = MESHCTL_PATH;
    argv.push_back(prog.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    unsetenv("MESHD_SOCKET");
    execv(prog.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

class FakeControl : public api::MeshdControl {
 public:
  absl::StatusOr<std::vector<api::AppliedResource>> apply(std::vector<resources::Resource> rs,
                                                          bool dry_run) override {
    absl::MutexLock lock(&mu_);
    std::vector<api::AppliedResource> out;
    for (auto& r : rs) {
      out.push_back({r.key, applied_.contains(r.key.toString()) ? "configured" : "created"});
      if (!dry_run) applied_.insert(r.key.toString());
    }
    last_dry_run_ = dry_run;
    return out;
  }
  absl::StatusOr<std::vector<resources::ResourceKey>> remove(
      std::vector<resources::ResourceKey> keys) override {
    absl::MutexLock lock(&mu_);
    for (const auto& k : keys) {
      if (!applied_.contains(k.toString())) {
        return absl::NotFoundError(k.toString() + " not found");
      }
    }
    for (const auto& k : keys) applied_.erase(k.toString());
    return keys;
  }
  absl::StatusOr<api::FrontendViews> frontends() override {
    datapath::Reconciler::FrontendView fv;
    fv.frontend.ns = "default";
    fv.frontend.service = "web";
    fv.frontend.vip = *IpAddress::parse("10.96.0.10");
    fv.frontend.port = 80;
    fv.svc_id = 7;
    datapath::Reconciler::BackendView b{};
    b.id = 3;
    b.address = *IpAddress::parse("10.0.0.1");
    b.port = 8080;
    b.weight = 2;
    b.counters.live_conns = 4;
    b.counters.total_conns = 40;
    b.node = "node-1";
    fv.backends.push_back(b);
    return api::FrontendViews{fv};
  }
  absl::StatusOr<std::vector<resources::Resource>> resources() override {
    return std::vector<resources::Resource>{};
  }
  absl::StatusOr<nlohmann::ordered_json> status() override {
    return nlohmann::ordered_json{{"instance", "test"}, {"version", "9.9.9"}, {"ready", true}};
  }
  absl::StatusOr<nlohmann::ordered_json> bpf(std::string_view what, std::string_view map) override {
    absl::MutexLock lock(&mu_);
    last_bpf_ = std::string(what) + ":" + std::string(map);
    if (what == "dump" && map != "mesh_services") {
      return absl::NotFoundError("no map named " + std::string(map));
    }
    return nlohmann::ordered_json::array({{{"name", "mesh_services"}, {"entries", 1}}});
  }

  absl::Mutex mu_;
  std::set<std::string> applied_;
  bool last_dry_run_ = false;
  std::string last_bpf_;
};

class MeshctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshctl-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/run/meshd.sock";  // parent does not exist yet: start() creates it
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  void startServer() {
    auto server = api::ApiServer::start(socket_, control_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  RunResult run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--socket", socket_});
    return meshctl(dir_, std::move(args));
  }
  std::string writeFile(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }

  std::string dir_;
  std::string socket_;
  FakeControl control_;
  api::ApiServerPtr server_;
};

constexpr char kService[] = R"(apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: 8080
    protocol: TCP
)";

TEST_F(MeshctlTest, UsageErrorsExit2) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {},
           {"get"},
           {"get", "foo"},
           {"-o", "xml", "status"},
           {"bpf"},
           {"bpf", "dump"},
           {"delete"},
           {"delete", "gadget", "x"},
           {"apply"},
           {"frobnicate"},
       }) {
    RunResult r = meshctl(dir_, args);
    EXPECT_EQ(r.exit_code, 2) << testing::PrintToString(args) << "\n" << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  EXPECT_EQ(meshctl(dir_, {"--help"}).exit_code, 0);
}

TEST_F(MeshctlTest, UnreachableMeshdExit1WithHint) {
  RunResult r = run({"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, StartsWith("cannot reach meshd at " + socket_ + ": "));
  EXPECT_THAT(r.err, HasSubstr("is meshd running (meshd --api-socket " + socket_ + ")?"));
  // version still prints the client's own version.
  RunResult v = run({"version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_THAT(v.out, HasSubstr("meshctl "));
}

TEST_F(MeshctlTest, SocketIsPrivateAndNotSharedByTwoServers) {
  startServer();
  struct stat st {};
  ASSERT_EQ(stat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  FakeControl other;
  auto second = api::ApiServer::start(socket_, other);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  // A stale socket (server gone) is replaced.
  server_.reset();
  startServer();
  EXPECT_EQ(run({"status"}).exit_code, 0);
}

TEST_F(MeshctlTest, ApplyGetDelete) {
  startServer();
  const std::string file = writeFile("web.yaml", kService);
  RunResult r = run({"apply", "-f", file});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Service/default/web created\n");
  r = run({"apply", "-f", file, "--dry-run"});
  EXPECT_EQ(r.out, "Service/default/web configured (dry run)\n");
  EXPECT_TRUE(control_.last_dry_run_);

  r = run({"get", "services"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("NAMESPACE   NAME   VIP          PORT   PROTOCOL"));
  EXPECT_THAT(r.out, HasSubstr("default     web    10.96.0.10   80     TCP"));

  r = run({"get", "backends", "web", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["backend"], "10.0.0.1:8080");
  EXPECT_EQ(j[0]["frontend"], "10.96.0.10:80/TCP");
  EXPECT_EQ(j[0]["liveConnections"], 4);
  EXPECT_EQ(j[0]["node"], "node-1");

  r = run({"get", "backends", "nothere"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("\"nothere\" not found"));

  r = run({"delete", "svc", "web"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Service/default/web deleted\n");
  r = run({"delete", "-f", file});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "Service/default/web not found\n");  // meshd's text as is
}

TEST_F(MeshctlTest, InvalidFileNamesFileAndLine) {
  startServer();
  const std::string file = writeFile("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata: [\n");
  RunResult r = run({"apply", "-f", file});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(file + ":"));
  EXPECT_TRUE(control_.applied_.empty());
}

TEST_F(MeshctlTest, StatusVersionAndBpf) {
  startServer();
  RunResult r = run({"status", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("instance: test\n"));
  r = run({"version"});
  EXPECT_THAT(r.out, HasSubstr("meshd 9.9.9\n"));
  r = run({"bpf", "maps"});
  EXPECT_THAT(r.out, HasSubstr("mesh_services"));
  r = run({"bpf", "dump", "mesh_nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no map named mesh_nope"));
  EXPECT_EQ(control_.last_bpf_, "dump:mesh_nope");
}

}  // namespace
}  // namespace meshd
