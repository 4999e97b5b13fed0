#include "cli/files.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/meshctl-files-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write(const std::string& rel, const std::string& content) {
    fs::create_directories((fs::path(dir_) / rel).parent_path());
    std::ofstream(fs::path(dir_) / rel) << content;
  }

  std::vector<std::string> names(const std::vector<InputFile>& files) {
    std::vector<std::string> out;
    for (const auto& f : files) out.push_back(f.name);
    return out;
  }

  std::string dir_;
  std::istringstream no_stdin_;
};

TEST_F(FilesTest, DirectoryIsRecursiveSortedAndFiltered) {
  write("b.yaml", "b");
  write("a/z.yml", "z");
  write("a/c.json", "c");
  write("notes.txt", "ignored");
  write("a/deeper/x.yaml", "x");
  auto files = collectFiles({dir_}, no_stdin_);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(names(*files), ElementsAre(dir_ + "/a/c.json", dir_ + "/a/deeper/x.yaml",
                                         dir_ + "/a/z.yml", dir_ + "/b.yaml"));
  EXPECT_EQ((*files)[0].content, "c");
}

TEST_F(FilesTest, FilesAndStdinKeepArgumentOrder) {
  write("one.yaml", "1");
  write("two.txt", "2");  // named explicitly: taken whatever its extension
  std::istringstream in("from stdin");
  auto files = collectFiles({dir_ + "/two.txt", "-", dir_ + "/one.yaml"}, in);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(names(*files), ElementsAre(dir_ + "/two.txt", "-", dir_ + "/one.yaml"));
  EXPECT_EQ((*files)[1].content, "from stdin");
}

TEST_F(FilesTest, Errors) {
  auto missing = collectFiles({dir_ + "/nope.yaml"}, no_stdin_);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.yaml"));

  write("only.txt", "x");
  auto empty = collectFiles({dir_}, no_stdin_);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("no .yaml, .yml or .json"));

  std::istringstream in("x");
  EXPECT_EQ(collectFiles({"-", "-"}, in).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace meshd::cli
