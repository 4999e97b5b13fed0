// Batched map primitives shared by BpfLbMaps and Datapath::dumpMap. Every
// error names the map and says what was being done.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace meshd::datapath::mapops {

// Writes `count` key/value pairs (contiguous arrays) in one BPF_MAP_UPDATE_BATCH.
// A full map gives ResourceExhausted naming the map and max_entries.
absl::Status updateBatch(int fd, absl::string_view map, const void* keys, const void* values,
                         uint32_t count);

// Deletes `count` keys (contiguous, each key_size bytes); absent keys are skipped.
absl::Status deleteBatch(int fd, absl::string_view map, const void* keys, uint32_t key_size,
                         uint32_t count);

// Reads every entry with BPF_MAP_LOOKUP_BATCH (falling back to get_next_key
// where the map type has no batch lookup). Values of per-CPU maps are
// value_size * ncpus bytes (value_size rounded up to 8).
struct RawEntries {
  uint32_t key_size = 0;
  uint32_t value_size = 0;  // per entry, as stored in `values`
  std::vector<uint8_t> keys;
  std::vector<uint8_t> values;
  size_t size() const { return key_size ? keys.size() / key_size : 0; }
  const void* key(size_t i) const { return keys.data() + i * key_size; }
  const void* value(size_t i) const { return values.data() + i * value_size; }
};
absl::StatusOr<RawEntries> readEntries(int fd, absl::string_view map);

// Number of keys, by iteration (get_next_key). Unsupported map types give
// Unimplemented.
absl::StatusOr<uint64_t> countEntries(int fd, absl::string_view map);

}  // namespace meshd::datapath::mapops
