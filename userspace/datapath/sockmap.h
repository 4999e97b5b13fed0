// The sockmap fast path as meshd runs it: the operator's mode, the start-up
// probe and the one-line state `meshctl status` prints.
//
//   auto (default)  probe at start; splice when the probe passes, else fall
//                   back to the plain TCP path and say why
//   on              probe at start; refuse to start when it fails
//   off             never add sockets to mesh_sockhash
//
// The switch the kernel reads is MESH_CONFIG_F_SOCKMAP in mesh_config, so it
// can change while the programs run. Sockets already spliced stay spliced
// until they close.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace meshd::datapath {

enum class SockmapMode { kAuto, kOn, kOff };

// "auto", "on", "off". InvalidArgument naming the accepted values otherwise.
absl::StatusOr<SockmapMode> parseSockmapMode(absl::string_view text);
absl::string_view sockmapModeName(SockmapMode mode);

// What the fast path does on this meshd.
struct SockmapState {
  SockmapMode mode = SockmapMode::kAuto;
  bool active = false;  // sockops adds local socket pairs now
  std::string reason;   // why not active (empty when active or off)
};

// The one-line form: "active", "off (--sockmap=off)", "unavailable (<reason>)".
std::string sockmapStatusText(const SockmapState& state);

// Start-up probe, in the calling process: connects two TCP sockets over
// 127.0.0.1, puts both into the sockhash `sockhash_fd` (keys as sockops
// builds them), sends bytes both ways and checks that they arrive, that none
// of them crossed TCP (TCP_INFO bytes_received stays 0 on both ends) and that
// `spliced_bytes()` (the summed MESH_STAT_SOCKMAP_BYTES counter) grew by at
// least their number. Both sockets leave the map before it returns.
// Returns OK, or an error whose message names what failed (the kernel
// feature, the syscall and its errno).
absl::Status probeSockmap(int sockhash_fd,
                          const std::function<absl::StatusOr<uint64_t>()>& spliced_bytes);

}  // namespace meshd::datapath
