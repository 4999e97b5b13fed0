#include "datapath/alias.h"

#include <cstdint>
#include <vector>

namespace meshd::datapath {

std::vector<AliasEntry> buildAliasTable(absl::Span<const uint32_t> weights) {
  const size_t n = weights.size();
  std::vector<AliasEntry> table(n);
  if (n == 0) return table;

  // Work in units where a full bucket holds `total` (the sum of the weights) and
  // bucket i starts with weights[i] * n: bucket probabilities are exact integers,
  // so no floating-point drift can leave a bucket over- or under-filled.
  // total <= 2^32 * n and each scaled value <= 2^32 * n^2: well inside 128 bits.
  using u128 = unsigned __int128;
  u128 total = 0;
  for (uint32_t w : weights) total += w;
  const bool uniform = total == 0;
  if (uniform) total = n;

  std::vector<u128> scaled(n);
  std::vector<uint32_t> small;
  std::vector<uint32_t> large;
  small.reserve(n);
  large.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    scaled[i] = static_cast<u128>(uniform ? 1 : weights[i]) * n;
    (scaled[i] < total ? small : large).push_back(static_cast<uint32_t>(i));
  }

  // Vose: pair each under-full bucket with an over-full one that donates the
  // missing mass; the donor goes back to whichever list it now belongs to.
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back();
    small.pop_back();
    const uint32_t l = large.back();
    // scaled[s] < total, so (scaled[s] << 32) / total < 2^32 fits a uint32.
    table[s].threshold = static_cast<uint32_t>((scaled[s] << 32) / total);
    table[s].alias = l;
    scaled[l] -= total - scaled[s];
    if (scaled[l] < total) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // What is left is full (exactly, with integer units): keep itself always.
  for (uint32_t i : large) table[i] = {0xffffffffu, i};
  for (uint32_t i : small) table[i] = {0xffffffffu, i};
  return table;
}

}  // namespace meshd::datapath
