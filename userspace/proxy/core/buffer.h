// A byte queue owned by one connection direction: allocated once, reused for every request
// on the connection. Readers see the unread bytes as one contiguous view (the parsers need
// that); consumed space is reclaimed by moving the rest to the front when the tail runs out.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>

namespace meshd::proxy {

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t capacity) : data_(new char[capacity]), cap_(capacity) {}

  std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return end_ == begin_; }
  size_t capacity() const { return cap_; }

  void consume(size_t n) {
    begin_ += n;
    if (begin_ >= end_) begin_ = end_ = 0;
  }
  void clear() { begin_ = end_ = 0; }

  // Appends `s`. Grows the storage only if the bytes do not fit even after compaction
  // (heads written by the proxy can exceed the capacity; body copies never do, callers
  // bound them by room()).
  void append(std::string_view s) {
    reserveTail(s.size());
    std::memcpy(data_.get() + end_, s.data(), s.size());
    end_ += s.size();
  }
  // Free bytes before `limit` is reached.
  size_t room(size_t limit) const { return size() >= limit ? 0 : limit - size(); }

  // Times any Buffer in the process had to grow past its capacity (heads larger than a
  // buffer). Bodies never make a buffer grow: tests check this to see backpressure held.
  static uint64_t growths();

  // Reads at most `max` bytes from `fd` (one read(2)). Returns what read(2) returns.
  ssize_t readFrom(int fd, size_t max);
  // Writes the unread bytes to `fd` (one send(2)), consuming what was written. Returns
  // what send(2) returns.
  ssize_t writeTo(int fd);

 private:
  void reserveTail(size_t n);

  std::unique_ptr<char[]> data_;
  size_t cap_ = 0;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace meshd::proxy
