// The epoll relay: edge-triggered, read()/write() loops as in userspace/proxy/core. A read
// stops at a short read (the receive queue was empty; the next bytes are a new edge) or
// EAGAIN, and drains to EAGAIN when the event carried a hang-up or error, as the core's
// upstream reads do.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <vector>

#include "relay.h"

namespace meshd::bench::iolayer {
namespace {

struct Direction {
  int src = -1;
  int dst = -1;
  std::unique_ptr<char[]> buf{new char[kBufferBytes]};
  size_t start = 0;
  size_t end = 0;
  bool readable = false;  // an edge said bytes (or EOF) may be waiting at src
  bool drain = false;     // the edge carried a hang-up/error: read until EAGAIN or 0
  bool writable = true;   // dst accepted the last write whole
  bool eof = false;
  bool shut = false;  // FIN passed on to dst
};

struct Pair {
  FdPair fds;
  Direction c2u;  // client -> upstream
  Direction u2c;  // upstream -> client
  bool closed = false;
};

class EpollRelay {
 public:
  EpollRelay(RelayCounters& counters) : counters_(counters) {}
  ~EpollRelay() {
    for (auto& p : pairs_) closePair(*p);
    if (epfd_ >= 0) close(epfd_);
  }

  std::string init(const RelayConfig& config) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) return errnoMessage("epoll_create1", errno);
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered, as the core's stop eventfd
    ev.data.u64 = 0;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, config.stop_fd, &ev) != 0)
      return errnoMessage("adding the stop eventfd to epoll", errno);
    std::vector<FdPair> fds;
    std::string err = acceptPairs(config, fds);
    for (const FdPair& f : fds) {
      auto p = std::make_unique<Pair>();
      p->fds = f;
      p->c2u.src = f.client;
      p->c2u.dst = f.upstream;
      p->u2c.src = f.upstream;
      p->u2c.dst = f.client;
      pairs_.push_back(std::move(p));
    }
    if (!err.empty()) return err;
    for (auto& p : pairs_) {
      for (int side = 0; side < 2; ++side) {
        epoll_event e{};
        e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        e.data.u64 = reinterpret_cast<uintptr_t>(p.get()) | static_cast<uintptr_t>(side);
        int fd = side == 0 ? p->fds.client : p->fds.upstream;
        if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &e) != 0)
          return errnoMessage("adding a relayed socket to epoll", errno);
      }
    }
    return "";
  }

  void run() {
    epoll_event events[256];
    for (;;) {
      int n = epoll_wait(epfd_, events, 256, -1);
      ++syscalls_;
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      for (int i = 0; i < n; ++i) {
        uint64_t data = events[i].data.u64;
        if (data == 0) return;  // stop eventfd
        Pair& p = *reinterpret_cast<Pair*>(data & ~uint64_t{1});
        if (p.closed) continue;
        bool client_side = (data & 1) == 0;
        uint32_t e = events[i].events;
        Direction& in = client_side ? p.c2u : p.u2c;   // reads from this fd
        Direction& out = client_side ? p.u2c : p.c2u;  // writes to this fd
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) in.readable = true;
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) in.drain = true;
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) out.writable = true;
        if (!pump(p, p.c2u) || !pump(p, p.u2c)) {
          closePair(p);
          continue;
        }
        if (p.c2u.shut && p.u2c.shut) closePair(p);
      }
      counters_.syscalls.store(syscalls_, std::memory_order_relaxed);
      counters_.iterations.store(++iterations_, std::memory_order_relaxed);
    }
  }

 private:
  // Moves what it can from d.src to d.dst; false on a socket error (the pair must close).
  bool pump(Pair& p, Direction& d) {
    (void)p;
    for (;;) {
      bool progress = false;
      if (d.writable && d.end > d.start) {
        ssize_t n = write(d.dst, d.buf.get() + d.start, d.end - d.start);
        ++syscalls_;
        if (n > 0) {
          d.start += static_cast<size_t>(n);
          if (d.start == d.end) {
            d.start = d.end = 0;
            progress = true;
          } else {
            d.writable = false;  // socket buffer full: wait for the EPOLLOUT edge
          }
        } else if (n < 0 && errno == EAGAIN) {
          d.writable = false;
        } else {
          return false;
        }
      }
      if (d.readable && !d.eof && d.end < kBufferBytes) {
        size_t room = kBufferBytes - d.end;
        ssize_t n = read(d.src, d.buf.get() + d.end, room);
        ++syscalls_;
        if (n > 0) {
          d.end += static_cast<size_t>(n);
          if (static_cast<size_t>(n) < room && !d.drain) d.readable = false;  // short read
          progress = true;
        } else if (n == 0) {
          d.eof = true;
          d.readable = false;
        } else if (errno == EAGAIN) {
          d.readable = false;
          d.drain = false;
        } else {
          return false;
        }
      }
      if (d.eof && !d.shut && d.start == d.end) {
        shutdown(d.dst, SHUT_WR);
        ++syscalls_;
        d.shut = true;
      }
      if (!progress || (!d.readable && !(d.writable && d.end > d.start))) return true;
    }
  }

  void closePair(Pair& p) {
    if (p.closed) return;
    p.closed = true;
    if (p.fds.client >= 0) close(p.fds.client);
    if (p.fds.upstream >= 0) close(p.fds.upstream);
  }

  RelayCounters& counters_;
  int epfd_ = -1;
  std::vector<std::unique_ptr<Pair>> pairs_;
  uint64_t syscalls_ = 0;
  uint64_t iterations_ = 0;
};

}  // namespace

void runEpollRelay(const RelayConfig& config, RelayCounters& counters, RelayStartup& startup) {
  if (auto err = pinThread(config.cpu); !err.empty()) return startup.finish(err, "");
  EpollRelay relay(counters);
  if (auto err = relay.init(config); !err.empty()) return startup.finish(err, "");
  startup.finish("", "epoll_wait (edge-triggered), read()/write(), stop at a short read");
  relay.run();
}

}  // namespace meshd::bench::iolayer
