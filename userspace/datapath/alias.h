// Vose's alias tables for weighted random selection in the kernel (mesh_slot
// alias_threshold / alias_slot, picked by mesh_alias_pick in bpf/include/mesh_lb.h).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace meshd::datapath {

// One bucket of an alias table, as mesh_slot.alias_threshold / mesh_slot.alias_slot.
struct AliasEntry {
  uint32_t threshold;  // kept probability * 2^32, saturated at 0xffffffff
  uint32_t alias;      // bucket taken when the 32-bit draw is >= threshold

  friend bool operator==(const AliasEntry&, const AliasEntry&) = default;
};

// Builds Vose's alias table for `weights` (each expected >= 1; a weight of 0 gets
// probability 0 as long as some weight is positive; all zero is treated as all
// equal). Bucket i, drawn uniformly, keeps i when rnd32 < threshold and otherwise
// takes alias. Full buckets get threshold 0xffffffff and alias to themselves, so the
// one draw (rnd32 == 0xffffffff) that fails the test still lands on i. Integer
// arithmetic only: each bucket's probability is exact to within 2^-32 and the table
// is the same on every build. Returns an empty table for no weights.
std::vector<AliasEntry> buildAliasTable(absl::Span<const uint32_t> weights);

}  // namespace meshd::datapath
