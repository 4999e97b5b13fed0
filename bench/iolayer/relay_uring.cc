// The io_uring relay: one ring on the relay thread, recv/send SQEs per connection side,
// submit + wait batched in one io_uring_submit_and_wait per loop iteration.
//
// Ring set-up, best first (each falls back to the next when the kernel says EINVAL):
// SINGLE_ISSUER | DEFER_TASKRUN (completions run only when this thread enters the ring: no
// task-work interrupts), COOP_TASKRUN | TASKRUN_FLAG, none. The ring fd is registered
// (io_uring_register_ring_fd) so io_uring_enter skips the fd lookup.
//
// Single-shot (Layer::kUring): per direction one buffer of kBufferBytes, recv -> send ->
// recv. With IORING_FEAT_CQE_SKIP (5.17+) the send (MSG_WAITALL: the kernel retries a
// partial send itself) is linked to the next recv and posts no completion when it sends
// everything (IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS), so one relayed message costs one
// completion and at most one io_uring_enter; a failed or short send posts its CQE and
// cancels the linked recv, and is then handled as an unlinked send would be. A recv that
// follows a short read is queued with IORING_RECVSEND_POLL_FIRST (the queue was empty, so
// an inline attempt would fail).
// Multishot (Layer::kUringMultishot): one multishot recv per direction selecting buffers
// from a provided-buffer ring (buffers of kBufferBytes), one send in flight per direction
// (keeps byte order), a buffer goes back to the ring when its bytes are sent; falls back
// to single-shot when the kernel lacks buffer rings or multishot recv (< 6.0).
#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "relay.h"

namespace meshd::bench::iolayer {
namespace {

enum Op : uintptr_t { kRecv = 0, kSend = 1 };

struct Pair;

struct Chunk {
  uint16_t bid;
  uint32_t len;
  uint32_t off;
};

struct Direction {
  Pair* pair = nullptr;
  int src = -1;
  int dst = -1;
  // Single-shot: the direction's buffer. Multishot: unused (buffers come from the ring).
  std::unique_ptr<char[]> buf;
  size_t start = 0;
  size_t end = 0;
  bool last_short = false;
  bool eof = false;
  bool shut = false;
  // Multishot state.
  bool armed = false;
  bool starved = false;  // the multishot recv ended with ENOBUFS; re-arm when a buffer returns
  bool sending = false;
  // Received chunks not yet sent, in order (a ring over `slots`, one per buffer).
  std::vector<Chunk> slots;
  size_t head = 0;
  size_t count = 0;
  Chunk& front() { return slots[head]; }
  void push(Chunk c) { slots[(head + count++) % slots.size()] = c; }
  void pop() {
    head = (head + 1) % slots.size();
    --count;
  }
};

struct Pair {
  FdPair fds;
  Direction c2u;
  Direction u2c;
  int inflight = 0;
  bool closed = false;
};

std::string ioUringDisabledValue() {
  std::ifstream f("/proc/sys/kernel/io_uring_disabled");
  std::string v;
  if (!(f >> v)) return "(no /proc/sys/kernel/io_uring_disabled: kernel older than 6.6)";
  return v;
}

bool kernelAtLeast(int major, int minor) {
  utsname u{};
  if (uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

class UringRelay {
 public:
  UringRelay(RelayCounters& counters, bool multishot)
      : counters_(counters), want_multishot_(multishot) {}
  ~UringRelay() {
    if (ring_up_) io_uring_queue_exit(&ring_);  // cancels what is in flight
    for (auto& p : pairs_) {
      if (p->fds.client >= 0) close(p->fds.client);
      if (p->fds.upstream >= 0) close(p->fds.upstream);
    }
    if (buf_ring_ != nullptr) std::free(buf_ring_);
    if (buf_pool_ != nullptr) std::free(buf_pool_);
  }

  // Returns "" or the error; `setup` describes what the ring uses.
  std::string init(const RelayConfig& config, std::string& setup) {
    unsigned entries = 16;
    while (entries < static_cast<unsigned>(4 * config.connections + 16)) entries <<= 1;
    struct Attempt {
      unsigned flags;
      const char* name;
    };
    const Attempt attempts[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "SINGLE_ISSUER|DEFER_TASKRUN"},
        {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, "COOP_TASKRUN|TASKRUN_FLAG"},
        {0, "no setup flags"},
    };
    int rc = -EINVAL;
    const char* used = "";
    for (const Attempt& a : attempts) {
      io_uring_params params{};
      params.flags = a.flags | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
      params.cq_entries = entries * 4;
      rc = io_uring_queue_init_params(entries, &ring_, &params);
      if (rc == 0) {
        used = a.name;
        features_ = params.features;
        break;
      }
      if (rc != -EINVAL) break;
    }
    if (rc != 0) {
      return "iolayer: io_uring is unavailable on this machine: io_uring_setup failed: " +
             std::string(std::strerror(-rc)) +
             " (kernel.io_uring_disabled=" + ioUringDisabledValue() +
             "; 2 disables io_uring for everyone, 1 for processes outside "
             "kernel.io_uring_group; a seccomp profile, e.g. a container runtime's default, "
             "can also block io_uring_setup)";
    }
    ring_up_ = true;
    setup = std::string("ring ") + std::to_string(entries) + " SQ / " +
            std::to_string(entries * 4) + " CQ, " + used + "|SUBMIT_ALL";
    if (!(features_ & IORING_FEAT_FAST_POLL))
      return "iolayer: this kernel's io_uring lacks IORING_FEAT_FAST_POLL (5.7+); socket "
             "recv/send would go to io-wq threads, which is not what is being measured";
    if (io_uring_register_ring_fd(&ring_) == 1) setup += ", registered ring fd";
    if (want_multishot_) {
      std::string why = setupBufRing(config.connections);
      if (why.empty()) {
        multishot_ = true;
        setup += ", multishot recv + provided buffer ring (" + std::to_string(nbufs_) + " x " +
                 std::to_string(kBufferBytes / 1024) + " KiB)";
      } else {
        setup += ", multishot unavailable (" + why + "): single-shot recv";
      }
    }
    if (!multishot_) {
      linked_ = (features_ & IORING_FEAT_CQE_SKIP) != 0;
      setup += linked_ ? ", recv/send SQEs, send(MSG_WAITALL) linked to the next recv with "
                         "CQE_SKIP_SUCCESS, POLL_FIRST after a short read"
                       : ", recv/send SQEs (no CQE_SKIP: unlinked), POLL_FIRST after a short read";
    }

    std::vector<FdPair> fds;
    std::string err = acceptPairs(config, fds);
    for (const FdPair& f : fds) {
      auto p = std::make_unique<Pair>();
      p->fds = f;
      init(*p, p->c2u, f.client, f.upstream);
      init(*p, p->u2c, f.upstream, f.client);
      pairs_.push_back(std::move(p));
    }
    if (!err.empty()) return err;
    stop_fd_ = config.stop_fd;
    io_uring_sqe* sqe = getSqe();
    io_uring_prep_poll_add(sqe, stop_fd_, POLLIN);
    io_uring_sqe_set_data64(sqe, 0);
    for (auto& p : pairs_) {
      armRecv(p->c2u, false);
      armRecv(p->u2c, false);
    }
    return "";
  }

  void run() {
    for (;;) {
      int rc = io_uring_submit_and_wait(&ring_, 1);
      ++syscalls_;
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) return;
      io_uring_cqe* cqe;
      unsigned head;
      unsigned seen = 0;
      bool stop = false;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        uint64_t data = cqe->user_data;
        if (data == 0) {
          stop = true;
          continue;
        }
        Direction& d = *reinterpret_cast<Direction*>(data & ~uint64_t{1});
        if ((data & 1) == kRecv) {
          onRecv(d, cqe->res, cqe->flags);
        } else {
          onSend(d, cqe->res);
        }
      }
      io_uring_cq_advance(&ring_, seen);
      counters_.syscalls.store(syscalls_, std::memory_order_relaxed);
      counters_.iterations.store(++iterations_, std::memory_order_relaxed);
      if (stop) return;
    }
  }

 private:
  void init(Pair& p, Direction& d, int src, int dst) {
    d.pair = &p;
    d.src = src;
    d.dst = dst;
    if (multishot_) {
      d.slots.resize(nbufs_);
    } else {
      d.buf.reset(new char[kBufferBytes]);
    }
  }

  std::string setupBufRing(int connections) {
    if (!kernelAtLeast(6, 0)) return "multishot recv needs Linux 6.0";
    nbufs_ = 64;
    while (nbufs_ < static_cast<unsigned>(4 * connections)) nbufs_ <<= 1;
    size_t ring_bytes = nbufs_ * sizeof(io_uring_buf);
    if (posix_memalign(&buf_ring_, 4096, ring_bytes) != 0) return "out of memory";
    std::memset(buf_ring_, 0, ring_bytes);
    if (posix_memalign(&buf_pool_, 4096, nbufs_ * kBufferBytes) != 0) return "out of memory";
    br_ = static_cast<io_uring_buf_ring*>(buf_ring_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
    reg.ring_entries = nbufs_;
    reg.bgid = 0;
    int rc = io_uring_register_buf_ring(&ring_, &reg, 0);
    if (rc != 0) return std::string("io_uring_register_buf_ring: ") + std::strerror(-rc);
    io_uring_buf_ring_init(br_);
    for (unsigned i = 0; i < nbufs_; ++i) {
      io_uring_buf_ring_add(br_, bufAddr(i), kBufferBytes, static_cast<unsigned short>(i),
                            io_uring_buf_ring_mask(nbufs_), static_cast<int>(i));
    }
    io_uring_buf_ring_advance(br_, static_cast<int>(nbufs_));
    return "";
  }

  char* bufAddr(unsigned bid) { return static_cast<char*>(buf_pool_) + bid * kBufferBytes; }

  void returnBuffer(uint16_t bid) {
    io_uring_buf_ring_add(br_, bufAddr(bid), kBufferBytes, bid, io_uring_buf_ring_mask(nbufs_), 0);
    io_uring_buf_ring_advance(br_, 1);
    if (!starved_.empty()) {
      std::vector<Direction*> again;
      again.swap(starved_);
      for (Direction* d : again) {
        d->starved = false;
        if (!d->pair->closed && !d->eof && !d->armed) armRecv(*d, false);
      }
    }
  }

  io_uring_sqe* getSqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
      io_uring_submit(&ring_);
      ++syscalls_;
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void armRecv(Direction& d, bool poll_first) {
    io_uring_sqe* sqe = getSqe();
    if (multishot_) {
      io_uring_prep_recv_multishot(sqe, d.src, nullptr, 0, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = 0;
      d.armed = true;
    } else {
      io_uring_prep_recv(sqe, d.src, d.buf.get() + d.end, kBufferBytes - d.end, 0);
      if (poll_first) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    }
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uintptr_t>(&d) | kRecv);
    ++d.pair->inflight;
  }

  // send(d.buf[start, end)) then, only if it sent everything, recv into d.buf.
  void armSendThenRecv(Direction& d) {
    if (io_uring_sq_space_left(&ring_) < 2) {
      io_uring_submit(&ring_);  // a link must not be split across submissions
      ++syscalls_;
    }
    io_uring_sqe* sqe = getSqe();
    io_uring_prep_send(sqe, d.dst, d.buf.get() + d.start, d.end - d.start,
                       MSG_NOSIGNAL | MSG_WAITALL);
    sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uintptr_t>(&d) | kSend);
    sqe = getSqe();
    io_uring_prep_recv(sqe, d.src, d.buf.get(), kBufferBytes, 0);
    if (d.last_short) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uintptr_t>(&d) | kRecv);
    ++d.pair->inflight;  // the recv; a linked send's CQE is not counted (it may post none)
  }

  void armSend(Direction& d, const char* data, size_t len) {
    io_uring_sqe* sqe = getSqe();
    io_uring_prep_send(sqe, d.dst, data, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uintptr_t>(&d) | kSend);
    ++d.pair->inflight;
  }

  void passFin(Direction& d) {
    if (d.shut) return;
    shutdown(d.dst, SHUT_WR);
    ++syscalls_;
    d.shut = true;
    Pair& p = *d.pair;
    if (p.c2u.shut && p.u2c.shut) closePair(p);
  }

  // Shuts both sockets so what is in flight completes; the fds close when nothing is.
  void closePair(Pair& p) {
    if (p.closed) return;
    p.closed = true;
    shutdown(p.fds.client, SHUT_RDWR);
    shutdown(p.fds.upstream, SHUT_RDWR);
    syscalls_ += 2;
    maybeRelease(p);
  }

  void maybeRelease(Pair& p) {
    if (!p.closed || p.inflight > 0) return;
    close(p.fds.client);
    close(p.fds.upstream);
    p.fds.client = p.fds.upstream = -1;
    syscalls_ += 2;
  }

  void sendFront(Direction& d) {
    Chunk& c = d.front();
    d.sending = true;
    armSend(d, bufAddr(c.bid) + c.off, c.len - c.off);
  }

  void onRecv(Direction& d, int res, uint32_t flags) {
    Pair& p = *d.pair;
    bool more = multishot_ && (flags & IORING_CQE_F_MORE);
    if (!more) {
      --p.inflight;
      d.armed = false;
    }
    if (p.closed) {
      if (flags & IORING_CQE_F_BUFFER) returnBuffer(static_cast<uint16_t>(flags >> 16));
      return maybeRelease(p);
    }
    if (res < 0) {
      if (multishot_ && res == -ENOBUFS) {
        if (!d.starved) {
          d.starved = true;
          starved_.push_back(&d);
        }
        return;
      }
      // A recv cancelled because its linked send was short: the send's CQE re-arms.
      if (linked_ && res == -ECANCELED) return;
      return closePair(p);
    }
    if (res == 0) {
      if (flags & IORING_CQE_F_BUFFER) returnBuffer(static_cast<uint16_t>(flags >> 16));
      if (linked_) d.start = d.end = 0;
      d.eof = true;
      if (multishot_ ? d.count == 0 : d.end == d.start) passFin(d);
      return;
    }
    if (multishot_) {
      d.push(Chunk{static_cast<uint16_t>(flags >> 16), static_cast<uint32_t>(res), 0});
      if (!d.sending) sendFront(d);
      if (!d.armed && !d.starved) armRecv(d, false);
      return;
    }
    if (linked_) d.start = d.end = 0;  // the send linked before this recv sent everything
    d.end += static_cast<size_t>(res);
    d.last_short = static_cast<size_t>(res) < kBufferBytes;  // the receive queue was emptied
    if (linked_) return armSendThenRecv(d);
    armSend(d, d.buf.get() + d.start, d.end - d.start);
  }

  void onSend(Direction& d, int res) {
    Pair& p = *d.pair;
    if (linked_) {
      // Only a failed or short send posts a CQE here; its linked recv was cancelled.
      if (p.closed) return maybeRelease(p);
      if (res <= 0) return closePair(p);
      d.start += static_cast<size_t>(res);
      if (d.start < d.end) return armSendThenRecv(d);
      // A complete send that still posted a CQE: its linked recv is in flight.
      return;
    }
    --p.inflight;
    if (p.closed) return maybeRelease(p);
    if (res <= 0) return closePair(p);
    if (multishot_) {
      Chunk& c = d.front();
      c.off += static_cast<uint32_t>(res);
      if (c.off == c.len) {
        uint16_t bid = c.bid;
        d.pop();
        returnBuffer(bid);
      }
      d.sending = false;
      if (d.count != 0) return sendFront(d);
      if (d.eof) passFin(d);
      return;
    }
    d.start += static_cast<size_t>(res);
    if (d.start < d.end) return armSend(d, d.buf.get() + d.start, d.end - d.start);
    d.start = d.end = 0;
    if (d.eof) return passFin(d);
    armRecv(d, d.last_short);
  }

  RelayCounters& counters_;
  bool want_multishot_;
  bool multishot_ = false;
  bool linked_ = false;  // single-shot with send linked to recv (CQE_SKIP_SUCCESS)
  io_uring ring_{};
  bool ring_up_ = false;
  unsigned features_ = 0;
  int stop_fd_ = -1;
  unsigned nbufs_ = 0;
  void* buf_ring_ = nullptr;
  void* buf_pool_ = nullptr;
  io_uring_buf_ring* br_ = nullptr;
  std::vector<Direction*> starved_;
  std::vector<std::unique_ptr<Pair>> pairs_;
  uint64_t syscalls_ = 0;
  uint64_t iterations_ = 0;
};

}  // namespace

void runUringRelay(const RelayConfig& config, RelayCounters& counters, RelayStartup& startup) {
  if (auto err = pinThread(config.cpu); !err.empty()) return startup.finish(err, "");
  UringRelay relay(counters, config.layer == Layer::kUringMultishot);
  std::string setup;
  if (auto err = relay.init(config, setup); !err.empty()) return startup.finish(err, setup);
  startup.finish("", setup);
  relay.run();
}

}  // namespace meshd::bench::iolayer
