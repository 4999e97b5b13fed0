#include "datapath/map_ops.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace meshd::datapath::mapops {
namespace {

// The kernel's ENOTSUPP (not in userspace errno.h): the op is not
// implemented for this map type.
constexpr int kEnotsupp = 524;

absl::StatusOr<bpf_map_info> mapInfo(int fd, absl::string_view map) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
    return errnoError(errno, absl::StrCat("reading info of map ", map));
  }
  return info;
}

absl::Status fullError(int fd, absl::string_view map) {
  auto info = mapInfo(fd, map);
  uint32_t max = info.ok() ? info->max_entries : 0;
  return absl::ResourceExhaustedError(
      absl::StrCat("map ", map, " is full (max_entries ", max,
                   "): raise the matching limit in meshd's datapath config (max_services, "
                   "max_slots or max_backends) and restart meshd with its pins reset"));
}

bool unsupported(int err) { return err == kEnotsupp || err == EOPNOTSUPP || err == EINVAL; }

}  // namespace

absl::Status updateBatch(int fd, absl::string_view map, const void* keys, const void* values,
                         uint32_t count) {
  if (count == 0) return absl::OkStatus();
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  uint32_t n = count;
  int ret = bpf_map_update_batch(fd, keys, values, &n, &opts);
  if (ret == 0) return absl::OkStatus();
  int err = -ret;
  if (err == E2BIG || err == ENOSPC) return fullError(fd, map);
  return errnoError(
      err, absl::StrCat("batch update of ", count, " entries in map ", map, " (", n, " written)"));
}

absl::Status deleteBatch(int fd, absl::string_view map, const void* keys, uint32_t key_size,
                         uint32_t count) {
  const uint8_t* p = static_cast<const uint8_t*>(keys);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  uint32_t done = 0;
  while (done < count) {
    uint32_t n = count - done;
    int ret = bpf_map_delete_batch(fd, p + size_t{done} * key_size, &n, &opts);
    if (ret == 0) return absl::OkStatus();
    if (-ret != ENOENT) {
      return errnoError(-ret, absl::StrCat("batch delete of ", count, " keys from map ", map));
    }
    // The kernel stops at the first absent key and reports how many it
    // deleted before it: skip that key and go on.
    done += n + 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<RawEntries> readEntries(int fd, absl::string_view map) {
  ASSIGN_OR_RETURN(bpf_map_info info, mapInfo(fd, map));
  RawEntries out;
  out.key_size = info.key_size;
  out.value_size = info.value_size;
  if (info.type == BPF_MAP_TYPE_PERCPU_ARRAY || info.type == BPF_MAP_TYPE_PERCPU_HASH ||
      info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH) {
    int ncpus = libbpf_num_possible_cpus();
    if (ncpus <= 0) return errnoError(-ncpus, "counting possible CPUs");
    out.value_size = ((info.value_size + 7) / 8 * 8) * ncpus;
  }

  // Batch lookup: the kernel hands back an opaque position token (a bucket
  // index for hashes, a key for arrays), at most key_size bytes or 4.
  uint32_t chunk = 4096;
  std::vector<uint8_t> in_token(std::max<uint32_t>(info.key_size, 8));
  std::vector<uint8_t> out_token(in_token.size());
  bool first = true;
  bool batch_ok = true;
  for (;;) {
    std::vector<uint8_t> keys(size_t{chunk} * out.key_size);
    std::vector<uint8_t> values(size_t{chunk} * out.value_size);
    uint32_t n = chunk;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int ret = bpf_map_lookup_batch(fd, first ? nullptr : in_token.data(), out_token.data(),
                                   keys.data(), values.data(), &n, &opts);
    int err = ret == 0 ? 0 : -ret;
    if (err != 0 && err != ENOENT) {
      if (err == ENOSPC && chunk < (1u << 20)) {  // one hash bucket larger than the chunk
        chunk *= 4;
        continue;
      }
      if (first && unsupported(err)) {
        batch_ok = false;
        break;
      }
      return errnoError(err, absl::StrCat("batch lookup of map ", map));
    }
    out.keys.insert(out.keys.end(), keys.begin(), keys.begin() + size_t{n} * out.key_size);
    out.values.insert(out.values.end(), values.begin(),
                      values.begin() + size_t{n} * out.value_size);
    if (err == ENOENT) break;
    in_token = out_token;
    first = false;
  }
  if (batch_ok) return out;

  // Per-key fallback.
  std::vector<uint8_t> key(out.key_size), next(out.key_size), value(out.value_size);
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    if (bpf_map_lookup_elem(fd, next.data(), value.data()) == 0) {
      out.keys.insert(out.keys.end(), next.begin(), next.end());
      out.values.insert(out.values.end(), value.begin(), value.end());
    }
    key = next;
    prev = key.data();
  }
  if (errno != ENOENT) return errnoError(errno, absl::StrCat("iterating map ", map));
  return out;
}

absl::StatusOr<uint64_t> countEntries(int fd, absl::string_view map) {
  ASSIGN_OR_RETURN(bpf_map_info info, mapInfo(fd, map));
  std::vector<uint8_t> key(info.key_size), next(info.key_size);
  const void* prev = nullptr;
  uint64_t n = 0;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    ++n;
    key = next;
    prev = key.data();
  }
  if (errno == ENOENT) return n;
  if (unsupported(errno)) {
    return absl::UnimplementedError(absl::StrCat("map ", map, " cannot be iterated"));
  }
  return errnoError(errno, absl::StrCat("iterating map ", map));
}

}  // namespace meshd::datapath::mapops
