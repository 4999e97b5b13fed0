// The sockmap mode (--sockmap=auto|on|off) and the status text of the fast path.
#include "datapath/sockmap.h"

#include "gtest/gtest.h"

namespace meshd::datapath {
namespace {

TEST(SockmapModeTest, ParsesTheThreeModesAndRoundTrips) {
  for (SockmapMode m : {SockmapMode::kAuto, SockmapMode::kOn, SockmapMode::kOff}) {
    auto parsed = parseSockmapMode(sockmapModeName(m));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, m);
  }
}

TEST(SockmapModeTest, RejectsOtherWordsNamingTheAcceptedOnes) {
  for (const char* bad : {"", "yes", "ON", "auto "}) {
    auto parsed = parseSockmapMode(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("auto, on, off"), absl::string_view::npos);
  }
}

TEST(SockmapStatusTextTest, ActiveOffAndUnavailableWithTheReason) {
  SockmapState s;
  s.mode = SockmapMode::kAuto;
  s.active = true;
  EXPECT_EQ(sockmapStatusText(s), "active");
  s.mode = SockmapMode::kOn;
  EXPECT_EQ(sockmapStatusText(s), "active");

  s = SockmapState{};
  s.mode = SockmapMode::kOff;
  EXPECT_EQ(sockmapStatusText(s), "off (--sockmap=off)");

  s = SockmapState{};
  s.mode = SockmapMode::kAuto;
  s.reason = "the kernel has no BPF_MAP_TYPE_SOCKHASH";
  EXPECT_EQ(sockmapStatusText(s), "unavailable (the kernel has no BPF_MAP_TYPE_SOCKHASH)");
  s.reason.clear();
  EXPECT_EQ(sockmapStatusText(s), "unavailable (not probed)");
}

}  // namespace
}  // namespace meshd::datapath
