// Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and
// Reliable Software Network Load Balancer", NSDI'16), with weights filled in the
// way Katran's MaglevHashV2 does. The kernel looks a client up with
// mesh_maglev_index() (bpf/include/mesh_lb.h) in the table built here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace meshd::datapath {

// True when n is prime (deterministic trial division; n is at most a table size).
bool isPrime(uint32_t n);

struct MaglevBackend {
  uint32_t id;      // what the table holds (a mesh_backends index)
  std::string key;  // stable identity, e.g. "10.0.0.1:80": decides the permutation
  uint32_t weight;  // relative share of the table; 0 = no entries

  friend bool operator==(const MaglevBackend&, const MaglevBackend&) = default;
};

// Returns a table of `size` backend ids. Each backend's permutation (offset, skip)
// is a fixed hash of its key alone, and backends are filled in key order whatever
// order they are passed in, so the table depends only on the set of (key, weight)
// and is the same across restarts and builds; removing one backend moves little
// more than that backend's own entries (minimal disruption). Backends get entries
// in proportion to their weights.
// Returns an empty table when `size` is not prime (a non-prime size would not give
// every backend a full permutation), when there are no backends, or when every
// weight is 0. Callers validate the size first and report the error.
std::vector<uint32_t> buildMaglevTable(absl::Span<const MaglevBackend> backends, uint32_t size);

}  // namespace meshd::datapath
