// Table tests of the host preflight parsers over /proc/mounts texts, and of
// --cgroup resolution. Nothing here needs root: resolveCgroup is driven with
// temp dirs (never on cgroup v2) and, when the host has one, the real cgroup2
// mount, which any user may stat.
#include "datapath/preflight.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace meshd::datapath {
namespace {

using ::testing::HasSubstr;

// This machine's layout (Debian with the legacy hierarchy): v1 controllers under
// a tmpfs /sys/fs/cgroup, cgroup2 alone at /sys/fs/cgroup/unified.
constexpr char kHybrid[] =
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
    "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
    "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n"
    "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
    "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
    "cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
    "bpf /sys/fs/bpf bpf rw,relatime 0 0\n";

// A unified (v2-only) host, e.g. Debian 12 with systemd defaults.
constexpr char kUnified[] =
    "/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0\n"
    "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
    "none /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n";

// v1 only: no cgroup2 line, no bpffs.
constexpr char kV1Only[] =
    "/dev/vda1 / ext4 rw,relatime 0 0\n"
    "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n"
    "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n";

struct MountCase {
  const char* name;
  std::string mounts;
  std::string want_cgroup2;  // "" = NotFound expected
};

class FindCgroup2MountTest : public ::testing::TestWithParam<MountCase> {};

TEST_P(FindCgroup2MountTest, FindsTheMountOrSaysHowToMountOne) {
  const MountCase& c = GetParam();
  absl::StatusOr<std::string> got = findCgroup2Mount(c.mounts);
  if (c.want_cgroup2.empty()) {
    ASSERT_FALSE(got.ok()) << "found " << *got;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(got.status().message(), HasSubstr("cgroup v2 is not mounted"));
    EXPECT_THAT(got.status().message(), HasSubstr("mount -t cgroup2"));
  } else {
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, c.want_cgroup2);
  }
}

INSTANTIATE_TEST_SUITE_P(
    ProcMounts, FindCgroup2MountTest,
    ::testing::Values(
        MountCase{"hybrid", kHybrid, "/sys/fs/cgroup/unified"},
        MountCase{"unified", kUnified, "/sys/fs/cgroup"}, MountCase{"v1_only", kV1Only, ""},
        MountCase{"empty", "", ""},
        MountCase{"no_trailing_newline", "cgroup2 /cg cgroup2 rw 0 0", "/cg"},
        // The first cgroup2 mount wins (later ones are bind mounts or nested).
        MountCase{"two_mounts", "cgroup2 /a cgroup2 rw 0 0\ncgroup2 /b cgroup2 rw 0 0\n", "/a"},
        // The type field decides, not the device name.
        MountCase{"device_named_cgroup2", "cgroup2 /mnt/x tmpfs rw 0 0\n", ""},
        MountCase{"type_is_not_a_prefix_match", "none /mnt/y cgroup2x rw 0 0\n", ""},
        // The kernel writes a space in a mount point as \040, a backslash as \134.
        MountCase{"escaped_space", "cgroup2 /run/my\\040cgroup cgroup2 rw 0 0\n", "/run/my cgroup"},
        MountCase{"escaped_backslash_and_tab", "none /a\\134b\\011c cgroup2 rw 0 0\n", "/a\\b\tc"},
        // Not an escape: fewer than three octal digits stay as they are.
        MountCase{"lone_backslash", "none /a\\04 cgroup2 rw 0 0\n", "/a\\04"},
        // Text that was not read from the kernel: runs of blanks, tabs, CRLF-free
        // blank lines and truncated lines must not confuse the parser.
        MountCase{"odd_spacing", "\n  cgroup2   /sys/fs/cgroup\tcgroup2  rw 0 0\n",
                  "/sys/fs/cgroup"},
        MountCase{"truncated_lines", "cgroup2\ncgroup2 /x\n \n", ""}),
    [](const ::testing::TestParamInfo<MountCase>& info) { return std::string(info.param.name); });

struct BpffsCase {
  const char* name;
  std::string mounts;
  std::string path;
  bool want;
};

class IsBpffsMountedTest : public ::testing::TestWithParam<BpffsCase> {};

TEST_P(IsBpffsMountedTest, MatchesTypeAndExactPath) {
  const BpffsCase& c = GetParam();
  EXPECT_EQ(isBpffsMounted(c.mounts, c.path), c.want);
}

INSTANTIATE_TEST_SUITE_P(
    ProcMounts, IsBpffsMountedTest,
    ::testing::Values(
        BpffsCase{"hybrid", kHybrid, "/sys/fs/bpf", true},
        BpffsCase{"unified_device_none", kUnified, "/sys/fs/bpf", true},
        BpffsCase{"absent", kV1Only, "/sys/fs/bpf", false},
        BpffsCase{"other_path", kHybrid, "/run/bpf", false},
        // A prefix of the mount point is not the mount point.
        BpffsCase{"prefix_is_not_a_match", kHybrid, "/sys/fs", false},
        BpffsCase{"subdir_is_not_a_match", kHybrid, "/sys/fs/bpf/meshd", false},
        // A tmpfs at /sys/fs/bpf (a container that forgot to mount the host's) is no bpffs.
        BpffsCase{"tmpfs_at_path", "tmpfs /sys/fs/bpf tmpfs rw 0 0\n", "/sys/fs/bpf", false},
        BpffsCase{"device_named_bpf", "bpf /sys/fs/bpf ext4 rw 0 0\n", "/sys/fs/bpf", false},
        BpffsCase{"escaped_path", "bpf /mnt/my\\040bpf bpf rw 0 0\n", "/mnt/my bpf", true},
        BpffsCase{"second_of_two", "bpf /a bpf rw 0 0\nbpf /b bpf rw 0 0\n", "/b", true},
        BpffsCase{"empty", "", "/sys/fs/bpf", false}),
    [](const ::testing::TestParamInfo<BpffsCase>& info) { return std::string(info.param.name); });

// resolveCgroup against a temp dir: it exists but is not on cgroup v2.
class ResolveCgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "meshd_preflight_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    ASSERT_EQ(mkdir((root_ + "/pods").c_str(), 0755), 0);
    std::ofstream(root_ + "/file") << "x";
  }
  void TearDown() override {
    unlink((root_ + "/file").c_str());
    rmdir((root_ + "/pods").c_str());
    rmdir(root_.c_str());
  }
  std::string root_;
};

TEST_F(ResolveCgroupTest, MissingRelativeDirIsNotFoundAndNamesTheMount) {
  HostPaths paths{root_, "/sys/fs/bpf"};
  absl::StatusOr<std::string> got = resolveCgroup(paths, "nope/deeper");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr(root_ + "/nope/deeper does not exist"));
  EXPECT_THAT(got.status().message(), HasSubstr("relative to " + root_));
}

TEST_F(ResolveCgroupTest, MissingAbsoluteDirIsNotFound) {
  HostPaths paths{"/sys/fs/cgroup", "/sys/fs/bpf"};
  absl::StatusOr<std::string> got = resolveCgroup(paths, root_ + "/missing");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr(root_ + "/missing does not exist"));
}

TEST_F(ResolveCgroupTest, RegularFileIsNotACgroup) {
  HostPaths paths{root_, "/sys/fs/bpf"};
  absl::StatusOr<std::string> got = resolveCgroup(paths, "file");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ResolveCgroupTest, DirectoryNotOnCgroup2IsFailedPrecondition) {
  HostPaths paths{root_, "/sys/fs/bpf"};
  // Relative, absolute and "" (the mount itself) all land on the temp fs.
  for (const std::string& arg : {std::string("pods"), root_ + "/pods", std::string()}) {
    absl::StatusOr<std::string> got = resolveCgroup(paths, arg);
    ASSERT_FALSE(got.ok()) << "arg \"" << arg << "\" resolved to " << *got;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition) << arg;
    EXPECT_THAT(got.status().message(), HasSubstr("is not on cgroup v2")) << arg;
    EXPECT_THAT(got.status().message(), HasSubstr("use a directory under " + root_)) << arg;
  }
}

// The host's own cgroup2 mount (read from /proc/mounts; stat and statfs need no
// privileges). Skips on a host without cgroup v2.
TEST(ResolveCgroupHostTest, HostCgroup2MountResolves) {
  std::ifstream in("/proc/mounts");
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::string> mount = findCgroup2Mount(text.str());
  if (!mount.ok()) GTEST_SKIP() << "no cgroup2 mount on this host: " << mount.status();
  HostPaths paths{*mount, "/sys/fs/bpf"};
  absl::StatusOr<std::string> got = resolveCgroup(paths, "");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, *mount);
  got = resolveCgroup(paths, *mount);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, *mount);
}

}  // namespace
}  // namespace meshd::datapath
