#include "datapath/sockmap.h"

#include "absl/strings/str_cat.h"

namespace meshd::datapath {

absl::StatusOr<SockmapMode> parseSockmapMode(absl::string_view text) {
  if (text == "auto") return SockmapMode::kAuto;
  if (text == "on") return SockmapMode::kOn;
  if (text == "off") return SockmapMode::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("sockmap mode \"", text, "\" is not one of auto, on, off"));
}

absl::string_view sockmapModeName(SockmapMode mode) {
  switch (mode) {
    case SockmapMode::kAuto:
      return "auto";
    case SockmapMode::kOn:
      return "on";
    case SockmapMode::kOff:
      return "off";
  }
  return "unknown";
}

std::string sockmapStatusText(const SockmapState& state) {
  if (state.active) return "active";
  if (state.mode == SockmapMode::kOff) return "off (--sockmap=off)";
  return absl::StrCat("unavailable (", state.reason.empty() ? "not probed" : state.reason, ")");
}

}  // namespace meshd::datapath
