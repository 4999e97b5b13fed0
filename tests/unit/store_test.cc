// The embedded store on a temporary directory: round trip, atomic replace,
// corrupt files named with what is wrong, one meshd per directory.
#include "store/store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::store {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshd-store-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/var/lib/meshd";
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  static resources::Resource service(const std::string& name, const std::string& ip, int port) {
    nlohmann::json obj = {{"apiVersion", "v1"},
                          {"kind", "Service"},
                          {"metadata", {{"name", name}}},
                          {"spec", {{"clusterIP", ip}, {"ports", {{{"port", port}}}}}}};
    auto r = resources::resourceFromJson(obj, name + ".yaml", 1);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  }

  void writeStoreFile(const std::string& content) {
    std::ofstream out(dir_ + "/resources.json");
    out << content;
  }

  std::string root_;
  std::string dir_;
};

TEST_F(StoreTest, OpenCreatesPrivateDirectory) {
  auto store = Store::open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  struct stat st;
  ASSERT_EQ(stat(dir_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto loaded = (*store)->load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(*loaded, SizeIs(0));
}

TEST_F(StoreTest, RoundTrip) {
  std::vector<resources::Resource> saved = {service("a", "10.96.0.1", 80),
                                            service("b", "fd00::1", 443)};
  {
    auto store = Store::open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->save(saved).ok());
  }
  auto store = Store::open(dir_);  // a restarted meshd
  ASSERT_TRUE(store.ok()) << store.status();
  auto loaded = (*store)->load();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_THAT(*loaded, SizeIs(2));
  for (size_t i = 0; i < saved.size(); ++i) {
    EXPECT_EQ((*loaded)[i].key, saved[i].key);
    EXPECT_EQ((*loaded)[i].object, saved[i].object);
    EXPECT_EQ((*loaded)[i].source, saved[i].source);
    EXPECT_EQ((*loaded)[i].line, 1);
    EXPECT_EQ((*loaded)[i].positions, nullptr);
  }
  // Saving a smaller set replaces the file whole and leaves no temporary behind.
  ASSERT_TRUE((*store)->save({saved[1]}).ok());
  loaded = (*store)->load();
  ASSERT_TRUE(loaded.ok());
  ASSERT_THAT(*loaded, SizeIs(1));
  EXPECT_EQ((*loaded)[0].key.name, "b");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/resources.json.tmp"));
}

TEST_F(StoreTest, FailedSaveKeepsPreviousFile) {
  auto store = Store::open(dir_);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->save({service("a", "10.96.0.1", 80)}).ok());
  // A directory where the temporary file goes makes the write fail, even for root.
  std::filesystem::create_directory(dir_ + "/resources.json.tmp");
  absl::Status st = (*store)->save({service("b", "10.96.0.2", 80)});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("resources.json.tmp"));
  auto loaded = (*store)->load();
  ASSERT_TRUE(loaded.ok());
  ASSERT_THAT(*loaded, SizeIs(1));
  EXPECT_EQ((*loaded)[0].key.name, "a");
}

struct CorruptCase {
  std::string name;
  std::string content;
  std::string expected;
};

class CorruptStoreTest : public StoreTest, public ::testing::WithParamInterface<CorruptCase> {};

TEST_P(CorruptStoreTest, NamesFileAndProblem) {
  auto store = Store::open(dir_);
  ASSERT_TRUE(store.ok());
  writeStoreFile(GetParam().content);
  auto loaded = (*store)->load();
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  std::string msg(loaded.status().message());
  EXPECT_THAT(msg, HasSubstr("store file " + dir_ + "/resources.json is corrupt: "));
  EXPECT_THAT(msg, HasSubstr(GetParam().expected));
}

INSTANTIATE_TEST_SUITE_P(
    Store, CorruptStoreTest,
    ::testing::Values(
        CorruptCase{"NotJson", "{\"format\": \"meshd.io/store/v1\", \"resources\": [",
                    "not valid JSON"},
        CorruptCase{"Truncated", "", "not valid JSON at byte"},
        CorruptCase{"WrongFormat", "{\"format\": \"other\", \"resources\": []}",
                    "\"format\" is not \"meshd.io/store/v1\""},
        CorruptCase{"NoList", "{\"format\": \"meshd.io/store/v1\"}", "\"resources\" is missing"},
        CorruptCase{"InvalidResource",
                    R"({"format": "meshd.io/store/v1", "resources": [{"object":
                      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                       "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 0}]}}}]})",
                    "resources[0]: Service/default/a: spec.ports[0].port: port 0 is out of range"},
        CorruptCase{"Duplicate",
                    R"({"format": "meshd.io/store/v1", "resources": [
                      {"object": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                                  "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}},
                      {"object": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                                  "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80}]}}}]})",
                    "resources[1]: Service/default/a is stored twice (also resources[0])"}),
    [](const ::testing::TestParamInfo<CorruptCase>& info) { return info.param.name; });

TEST_F(StoreTest, SecondOpenIsRefusedWhileLocked) {
  auto first = Store::open(dir_);
  ASSERT_TRUE(first.ok());
  auto second = Store::open(dir_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("in use by another meshd"));
  first->reset();
  EXPECT_TRUE(Store::open(dir_).ok());
}

TEST_F(StoreTest, PathThatIsAFileIsRefused) {
  std::filesystem::create_directories(root_);
  std::ofstream(root_ + "/file") << "x";
  auto store = Store::open(root_ + "/file");
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("not a directory"));
}

}  // namespace
}  // namespace meshd::store
