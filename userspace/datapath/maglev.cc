#include "datapath/maglev.h"

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "mesh_lb.h"

namespace meshd::datapath {
namespace {

// FNV-1a over the key, seeded, then the splitmix64 finalizer (mesh_hash64) to
// spread FNV's weak low bits. Fixed arithmetic, no std::hash or absl::Hash: both
// may differ between builds or processes, and the table must not.
uint64_t keyHash(std::string_view key, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return mesh_hash64(h);
}

constexpr uint64_t kOffsetSeed = 0x6d61676c65763031ULL;  // "maglev01"
constexpr uint64_t kSkipSeed = 0x6d61676c65763032ULL;    // "maglev02"

}  // namespace

bool isPrime(uint32_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint64_t d = 3; d * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

std::vector<uint32_t> buildMaglevTable(absl::Span<const MaglevBackend> backends, uint32_t size) {
  if (!isPrime(size)) return {};
  // Fill order matters to the result: fix it by key (then id) so callers' order does not.
  std::vector<const MaglevBackend*> sorted;
  sorted.reserve(backends.size());
  uint32_t max_weight = 0;
  for (const MaglevBackend& b : backends) {
    if (b.weight == 0) continue;
    sorted.push_back(&b);
    max_weight = std::max(max_weight, b.weight);
  }
  if (sorted.empty()) return {};
  std::sort(sorted.begin(), sorted.end(), [](const MaglevBackend* a, const MaglevBackend* b) {
    return a->key != b->key ? a->key < b->key : a->id < b->id;
  });

  const size_t n = sorted.size();
  // permutation_i(j) = (offset_i + j * skip_i) mod size; skip in [1, size-1] and
  // size prime make it visit every position exactly once.
  std::vector<uint64_t> offset(n), skip(n), next(n, 0), credit(n, 0);
  for (size_t i = 0; i < n; ++i) {
    offset[i] = keyHash(sorted[i]->key, kOffsetSeed) % size;
    skip[i] = size == 2 ? 1 : keyHash(sorted[i]->key, kSkipSeed) % (size - 1) + 1;
  }

  constexpr uint32_t kEmpty = 0xffffffffu;
  std::vector<uint32_t> table(size, kEmpty);
  uint32_t filled = 0;
  // Katran's weighting: each round every backend earns its weight in credit and
  // claims its next preferred free position per max_weight of credit, so the
  // heaviest backend claims one position per round and the others in proportion.
  for (;;) {
    for (size_t i = 0; i < n; ++i) {
      credit[i] += sorted[i]->weight;
      if (credit[i] < max_weight) continue;
      credit[i] -= max_weight;
      uint64_t pos = (offset[i] + next[i] * skip[i]) % size;
      while (table[pos] != kEmpty) {
        ++next[i];
        pos = (offset[i] + next[i] * skip[i]) % size;
      }
      table[pos] = sorted[i]->id;
      ++next[i];
      if (++filled == size) return table;
    }
  }
}

}  // namespace meshd::datapath
