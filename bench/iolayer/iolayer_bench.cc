// iolayer_bench: epoll vs io_uring for meshd's proxy core (issue 5), measured on the
// opaque relay. See docs/benchmarks/iolayer.md for how to run it and how to read it.
//
//   load generator (main thread) ──► relay under test (one thread, --cpu N) ──► upstream
//   ping-pong: C connections,          epoll | io_uring | io_uring-mshot         echo server
//   each one message in flight                                                   (epoll, LT)
//   stream: one connection, 64 KiB writes ─────────────────────────────────────► discard
//                                                                                (checks bytes)
// The load generator and the upstream run on the CPUs other than N. What is measured per
// cell: operations/s, the relay thread's CPU time per operation (its CLOCK_THREAD_CPUTIME_ID,
// read through pthread_getcpuclockid at the window's ends), the relay's syscalls per
// operation (counted by the relay), and the CPU time of any io_uring worker threads.
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "relay.h"

namespace meshd::bench::iolayer {
namespace {

using Clock = std::chrono::steady_clock;

// Stream bytes: the byte at stream position p is gPattern[p % kPatternLen]. The array is
// kBufferBytes longer than the period so any run of up to 64 KiB is contiguous.
constexpr size_t kPatternLen = 65521;  // prime: successive 64 KiB writes start anywhere
char gPattern[kPatternLen + kBufferBytes];

void initPattern() {
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 0; i < kPatternLen; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    gPattern[i] = static_cast<char>(x >> 56);
  }
  for (size_t i = kPatternLen; i < sizeof(gPattern); ++i) gPattern[i] = gPattern[i - kPatternLen];
}

struct Workload {
  std::string name;
  bool stream = false;
  size_t msg_bytes = 0;  // ping-pong message size
  int conns = 1;
};

double threadCpu(clockid_t clk) {
  timespec ts{};
  clock_gettime(clk, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// CPU seconds of this process's io_uring worker threads (iou-wrk-*, iou-sqp-*), from
// /proc/self/task/*/stat (clock ticks). Recv/send on sockets complete by poll without
// them (IORING_FEAT_FAST_POLL); this shows whether any work was punted to them.
double uringWorkerCpu() {
  static const double kTick = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::string base = std::string("/proc/self/task/") + e->d_name;
    std::ifstream comm(base + "/comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind("iou-", 0) != 0) continue;
    std::ifstream stat(base + "/stat");
    std::string line;
    std::getline(stat, line);
    auto close_paren = line.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(line.substr(close_paren + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    // Fields after "comm": state(3) ... utime(14) stime(15).
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    total += static_cast<double>(utime + stime) / kTick;
  }
  closedir(dir);
  return total;
}

std::string errnoMsg(const std::string& what) { return errnoMessage(what, errno); }

int listenLoopback(sockaddr_in& addr, std::string& err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = errnoMsg("creating a listening socket");
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 1024) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    err = errnoMsg("binding a listener on 127.0.0.1:0");
    close(fd);
    return -1;
  }
  return fd;
}

int connectTo(const sockaddr_in& addr, std::string& err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    err = errnoMsg("connecting to 127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
    if (fd >= 0) close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// The upstream: one thread, level-triggered epoll, two listeners. Echo: every byte read is
// written back. Discard: bytes are compared with the stream pattern and counted; at EOF
// the result is published and the connection closed (which the relay passes back as FIN).
class Upstream {
 public:
  ~Upstream() { stop(); }

  std::string start() {
    std::string err;
    echo_fd_ = listenLoopback(echo_addr_, err);
    if (echo_fd_ < 0) return err;
    discard_fd_ = listenLoopback(discard_addr_, err);
    if (discard_fd_ < 0) return err;
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (stop_fd_ < 0 || epfd_ < 0) return errnoMsg("upstream eventfd/epoll");
    add(echo_fd_, kEchoListener);
    add(discard_fd_, kDiscardListener);
    add(stop_fd_, kStop);
    thread_ = std::thread([this] { loop(); });
    return "";
  }

  void stop() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
    for (auto& [fd, c] : conns_) close(fd);
    conns_.clear();
    close(echo_fd_);
    close(discard_fd_);
    close(stop_fd_);
    close(epfd_);
  }

  const sockaddr_in& echoAddr() const { return echo_addr_; }
  const sockaddr_in& discardAddr() const { return discard_addr_; }
  uint64_t discardBytes() const { return discard_bytes_.load(std::memory_order_relaxed); }

  struct StreamEnd {
    uint64_t bytes = 0;
    bool intact = true;
  };
  // Waits for the next discard connection to end; false on timeout.
  bool waitStreamEnd(StreamEnd& out, std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [this] { return !ended_.empty(); })) return false;
    out = ended_.front();
    ended_.erase(ended_.begin());
    return true;
  }

 private:
  enum : uint64_t { kStop = 1, kEchoListener = 2, kDiscardListener = 3 };
  struct Conn {
    bool discard = false;
    uint64_t pos = 0;
    bool intact = true;
  };

  void add(int fd, uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  }

  void loop() {
    std::unique_ptr<char[]> buf(new char[kBufferBytes]);
    epoll_event events[64];
    for (;;) {
      int n = epoll_wait(epfd_, events, 64, -1);
      for (int i = 0; i < n; ++i) {
        uint64_t tag = events[i].data.u64;
        if (tag == kStop) return;
        if (tag == kEchoListener || tag == kDiscardListener) {
          int fd = accept4(tag == kEchoListener ? echo_fd_ : discard_fd_, nullptr, nullptr,
                           SOCK_CLOEXEC);
          if (fd < 0) continue;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          conns_[fd].discard = tag == kDiscardListener;
          add(fd, static_cast<uint64_t>(fd) << 8);
          continue;
        }
        int fd = static_cast<int>(tag >> 8);
        Conn& c = conns_[fd];
        ssize_t r = read(fd, buf.get(), kBufferBytes);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          if (c.discard) {
            std::lock_guard<std::mutex> lock(mu_);
            ended_.push_back(StreamEnd{c.pos, c.intact && r == 0});
            cv_.notify_all();
          }
          close(fd);
          conns_.erase(fd);
          continue;
        }
        size_t len = static_cast<size_t>(r);
        if (c.discard) {
          if (std::memcmp(buf.get(), gPattern + c.pos % kPatternLen, len) != 0) c.intact = false;
          c.pos += len;
          discard_bytes_.fetch_add(len, std::memory_order_relaxed);
        } else {
          writeAll(fd, buf.get(), len);
        }
      }
    }
  }

  static void writeAll(int fd, const char* p, size_t len) {
    while (len > 0) {
      ssize_t w = write(fd, p, len);
      if (w > 0) {
        p += w;
        len -= static_cast<size_t>(w);
      } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
        pollfd pfd{fd, POLLOUT, 0};
        poll(&pfd, 1, 1000);
      } else {
        return;  // the relay closed; the load generator reports it
      }
    }
  }

  int echo_fd_ = -1, discard_fd_ = -1, stop_fd_ = -1, epfd_ = -1;
  sockaddr_in echo_addr_{}, discard_addr_{};
  std::thread thread_;
  std::map<int, Conn> conns_;
  std::atomic<uint64_t> discard_bytes_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<StreamEnd> ended_;
};

struct Snapshot {
  Clock::time_point at;
  uint64_t ops = 0;
  double relay_cpu = 0;
  uint64_t syscalls = 0;
  uint64_t iterations = 0;
  double worker_cpu = 0;
};

struct CellResult {
  std::string workload;
  std::string layer;
  int rep = 0;
  std::string error;
  std::string setup;
  double seconds = 0;
  uint64_t ops = 0;
  double ops_per_s = 0;
  double cpu_us_per_op = 0;
  double syscalls_per_op = 0;
  double ops_per_iteration = 0;  // operations per event-loop wakeup (batching)
  double relay_util = 0;         // relay CPU seconds / wall seconds
  double worker_cpu_s = 0;       // io_uring worker threads' CPU in the window
  double mib_per_s = 0;          // stream only
  uint64_t verified_bytes = 0;   // bytes compared end to end (both directions for ping-pong)
};

class Cell {
 public:
  Cell(Layer layer, const Workload& w, Upstream& upstream, int cpu, double warmup, double seconds)
      : layer_(layer), w_(w), upstream_(upstream), cpu_(cpu), warmup_(warmup), seconds_(seconds) {}

  CellResult run(int rep) {
    CellResult r;
    r.workload = w_.name;
    r.layer = layerName(layer_);
    r.rep = rep;
    r.error = runInner(r);
    return r;
  }

 private:
  std::string runInner(CellResult& r) {
    sockaddr_in relay_addr{};
    std::string err;
    int listen_fd = listenLoopback(relay_addr, err);
    if (listen_fd < 0) return err;
    int stop_fd = eventfd(0, EFD_CLOEXEC);
    RelayConfig config;
    config.layer = layer_;
    config.listen_fd = listen_fd;
    config.upstream = w_.stream ? upstream_.discardAddr() : upstream_.echoAddr();
    config.connections = w_.stream ? 1 : w_.conns;
    config.cpu = cpu_;
    config.stop_fd = stop_fd;
    RelayCounters counters;
    RelayStartup startup;
    std::thread relay([&] { runRelay(config, counters, startup); });

    std::vector<int> fds;
    for (int i = 0; i < config.connections && err.empty(); ++i) {
      int fd = connectTo(relay_addr, err);
      if (fd >= 0) fds.push_back(fd);
    }
    std::string relay_err = startup.wait();
    r.setup = startup.setup;
    if (err.empty()) err = relay_err;
    if (err.empty()) {
      clockid_t clk;
      pthread_getcpuclockid(relay.native_handle(), &clk);
      auto snap = [&](uint64_t ops) {
        Snapshot s;
        s.at = Clock::now();
        s.ops = ops;
        s.relay_cpu = threadCpu(clk);
        s.syscalls = counters.syscalls.load(std::memory_order_relaxed);
        s.iterations = counters.iterations.load(std::memory_order_relaxed);
        s.worker_cpu = layer_ == Layer::kEpoll ? 0 : uringWorkerCpu();
        return s;
      };
      Snapshot a, b;
      err = w_.stream ? stream(fds[0], snap, a, b, r) : pingPong(fds, snap, a, b, r);
      if (err.empty()) fill(a, b, r);
    }
    uint64_t one = 1;
    (void)!write(stop_fd, &one, sizeof(one));
    relay.join();
    for (int fd : fds) close(fd);
    close(listen_fd);
    close(stop_fd);
    return err;
  }

  void fill(const Snapshot& a, const Snapshot& b, CellResult& r) {
    r.seconds = std::chrono::duration<double>(b.at - a.at).count();
    r.ops = b.ops - a.ops;
    double ops = static_cast<double>(std::max<uint64_t>(r.ops, 1));
    r.ops_per_s = static_cast<double>(r.ops) / r.seconds;
    r.cpu_us_per_op = (b.relay_cpu - a.relay_cpu) * 1e6 / ops;
    r.syscalls_per_op = static_cast<double>(b.syscalls - a.syscalls) / ops;
    r.ops_per_iteration = static_cast<double>(r.ops) /
                          static_cast<double>(std::max<uint64_t>(b.iterations - a.iterations, 1));
    r.relay_util = (b.relay_cpu - a.relay_cpu) / r.seconds;
    r.worker_cpu_s = b.worker_cpu - a.worker_cpu;
    if (w_.stream) r.mib_per_s = r.ops_per_s * kBufferBytes / (1024.0 * 1024.0);
  }

  // Phases of a cell on the load generator's clock.
  struct Phases {
    Clock::time_point warm_end, end;
  };
  Phases phases() const {
    auto now = Clock::now();
    auto warm_end =
        now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup_));
    return {warm_end, warm_end + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(seconds_))};
  }

  // One message in flight per connection; a message's 16 hex digits carry (conn, seq) so
  // every echo differs from the one before. Each echo is compared with what was sent.
  template <typename Snap>
  std::string pingPong(const std::vector<int>& fds, Snap snap, Snapshot& a, Snapshot& b,
                       CellResult& r) {
    const size_t len = w_.msg_bytes;
    std::string tmpl = messageTemplate(len);
    const size_t seq_at = tmpl.find("0000000000000000");
    struct Conn {
      int fd;
      uint64_t seq = 0;
      size_t got = 0;
      std::string sent, recv;
    };
    std::vector<Conn> conns(fds.size());
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) return errnoMsg("load generator epoll_create1");
    std::string err;
    auto sendNext = [&](size_t i) {
      Conn& c = conns[i];
      ++c.seq;
      char hex[17];
      std::snprintf(hex, sizeof(hex), "%016" PRIx64, (uint64_t{i} << 48) ^ c.seq);
      std::memcpy(c.sent.data() + seq_at, hex, 16);
      ssize_t w = send(c.fd, c.sent.data(), len, MSG_NOSIGNAL);
      if (w != static_cast<ssize_t>(len))
        err = errnoMsg("load generator send on connection " + std::to_string(i));
    };
    for (size_t i = 0; i < fds.size(); ++i) {
      conns[i].fd = fds[i];
      conns[i].sent = tmpl;
      conns[i].recv.assign(len, '\0');
      fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev);
    }
    Phases ph = phases();
    for (size_t i = 0; i < conns.size() && err.empty(); ++i) sendNext(i);
    uint64_t ops = 0;
    bool measuring = false, stopping = false;
    size_t outstanding = conns.size();
    auto last_progress = Clock::now();
    epoll_event events[256];
    while (err.empty() && outstanding > 0) {
      int n = epoll_wait(epfd, events, 256, 100);
      auto now = Clock::now();
      if (n > 0) last_progress = now;
      if (now - last_progress > std::chrono::seconds(10)) {
        err = "iolayer: no echo for 10 s (" + std::to_string(outstanding) +
              " requests outstanding): the relay stalled";
        break;
      }
      for (int k = 0; k < n && err.empty(); ++k) {
        size_t i = events[k].data.u64;
        Conn& c = conns[i];
        ssize_t got = recv(c.fd, c.recv.data() + c.got, len - c.got, 0);
        if (got < 0 && errno == EAGAIN) continue;
        if (got <= 0) {
          err = got == 0 ? "iolayer: the relay closed connection " + std::to_string(i) + " after " +
                               std::to_string(c.seq - 1) + " echoes"
                         : errnoMsg("load generator recv on connection " + std::to_string(i));
          break;
        }
        c.got += static_cast<size_t>(got);
        if (c.got < len) continue;
        c.got = 0;
        if (std::memcmp(c.recv.data(), c.sent.data(), len) != 0) {
          err = "iolayer: verify failed: connection " + std::to_string(i) + " echo " +
                std::to_string(c.seq) + " differs from what was sent";
          break;
        }
        r.verified_bytes += 2 * len;
        ++ops;
        if (stopping) {
          --outstanding;
        } else {
          sendNext(i);
        }
      }
      if (!measuring && now >= ph.warm_end) {
        a = snap(ops);
        measuring = true;
      }
      if (measuring && !stopping && now >= ph.end) {
        b = snap(ops);
        stopping = true;
      }
    }
    close(epfd);
    return err;
  }

  static std::string messageTemplate(size_t len) {
    std::string m;
    if (len >= 200) {
      // An HTTP/1.1 request head as a mesh sees many: ~300 bytes.
      m = "GET /api/v1/orders/0000000000000000 HTTP/1.1\r\n"
          "host: orders.shop.svc.cluster.local\r\n"
          "user-agent: Go-http-client/1.1\r\n"
          "accept: application/json\r\n"
          "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
          "x-request-id: 9b2c6a57-3d1e-4f0a-8c55-2f6b1e7d4a10\r\n"
          "x-pad: ";
      while (m.size() + 4 < len) m += 'p';
      m += "\r\n\r\n";
    } else {
      m = "PING 0000000000000000 ";
      while (m.size() < len) m += static_cast<char>('a' + m.size() % 26);
    }
    m.resize(len);
    return m;
  }

  // One connection, 64 KiB blocking writes of the stream pattern; the upstream discards
  // after comparing. The end checks the byte count and the FIN coming back.
  template <typename Snap>
  std::string stream(int fd, Snap snap, Snapshot& a, Snapshot& b, CellResult& r) {
    uint64_t base = upstream_.discardBytes();
    auto ops = [&] { return (upstream_.discardBytes() - base) / kBufferBytes; };
    Phases ph = phases();
    uint64_t pos = 0;
    bool measuring = false;
    for (;;) {
      ssize_t w = write(fd, gPattern + pos % kPatternLen, kBufferBytes);
      if (w <= 0) return errnoMsg("load generator stream write");
      pos += static_cast<uint64_t>(w);
      auto now = Clock::now();
      if (!measuring && now >= ph.warm_end) {
        a = snap(ops());
        measuring = true;
      }
      if (measuring && now >= ph.end) {
        b = snap(ops());
        break;
      }
    }
    shutdown(fd, SHUT_WR);
    Upstream::StreamEnd end;
    if (!upstream_.waitStreamEnd(end, std::chrono::seconds(10)))
      return "iolayer: the upstream saw no end of the stream within 10 s: the relay did not "
             "pass the client's FIN on";
    if (end.bytes != pos || !end.intact)
      return "iolayer: verify failed: the client sent " + std::to_string(pos) +
             " bytes, the upstream got " + std::to_string(end.bytes) +
             (end.intact ? "" : " and they differ from what was sent");
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    ssize_t got = recv(fd, &c, 1, 0);
    if (got != 0)
      return "iolayer: expected the upstream's FIN back through the relay, got " +
             (got < 0 ? errnoMsg("recv") : std::string("a byte"));
    r.verified_bytes = pos;
    return "";
  }

  Layer layer_;
  Workload w_;
  Upstream& upstream_;
  int cpu_;
  double warmup_, seconds_;
};

struct Stat {
  double median = 0, min = 0, max = 0;
};
Stat stat(std::vector<double> v) {
  Stat s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  s.min = v.front();
  s.max = v.back();
  return s;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof(b), f, v);
  return b;
}
std::string fmtStat(const char* f, const Stat& s) {
  return fmt(f, s.median) + " [" + fmt(f, s.min) + "–" + fmt(f, s.max) + "]";
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string kernelRelease() {
  utsname u{};
  uname(&u);
  return u.release;
}

int pinOthers(int cpu) {
  if (cpu < 0) return 0;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (long i = 0; i < n; ++i)
    if (i != cpu) CPU_SET(i, &set);
  if (CPU_COUNT(&set) == 0) return 0;
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

int mainImpl(int argc, char** argv) {
  CLI::App app{"epoll vs io_uring on an opaque TCP relay (meshd issue 5)"};
  int cpu = -1, reps = 0;
  double duration = 0;
  bool quick = false, verify = false;
  std::string json_path, layers_arg = "epoll,io_uring,io_uring-mshot", conns_arg = "1,16,64",
                         workloads_arg;
  app.add_option("--cpu", cpu, "pin the relay thread to this CPU; load on the others");
  app.add_option("--reps", reps, "repetitions per cell (default 5; --quick: 1)");
  app.add_option("--duration", duration, "measured seconds per cell (default 3; --quick: 1)");
  app.add_flag("--quick", quick, "about 1 s per cell, 1 repetition");
  app.add_flag("--verify", verify,
               "exit 1 if any cell fails; print the bytes compared end to end per cell");
  app.add_option("--json", json_path, "also write the raw cells and the summary as JSON");
  app.add_option("--layers", layers_arg, "comma list of epoll,io_uring,io_uring-mshot");
  app.add_option("--conns", conns_arg, "comma list of ping-pong connection counts");
  app.add_option("--workloads", workloads_arg,
                 "comma list of workload names (default all: pp64-cN, pp300-cN, stream64k)");
  CLI11_PARSE(app, argc, argv);
  if (reps <= 0) reps = quick ? 1 : 5;
  if (duration <= 0) duration = quick ? 0.8 : 3.0;
  double warmup = quick ? 0.2 : 0.5;

  std::vector<Layer> layers;
  for (const auto& name : split(layers_arg)) {
    if (name == "epoll") {
      layers.push_back(Layer::kEpoll);
    } else if (name == "io_uring") {
      layers.push_back(Layer::kUring);
    } else if (name == "io_uring-mshot") {
      layers.push_back(Layer::kUringMultishot);
    } else {
      std::fprintf(stderr,
                   "iolayer: --layers: unknown layer '%s' (epoll, io_uring, io_uring-mshot)\n",
                   name.c_str());
      return 2;
    }
  }
  std::vector<Workload> workloads;
  for (size_t bytes : {size_t{64}, size_t{300}}) {
    for (const auto& c : split(conns_arg)) {
      int n = std::atoi(c.c_str());
      if (n <= 0 || n > 4096) {
        std::fprintf(stderr, "iolayer: --conns: '%s' is not a count in 1..4096\n", c.c_str());
        return 2;
      }
      workloads.push_back(Workload{"pp" + std::to_string(bytes) + "-c" + c, false, bytes, n});
    }
  }
  workloads.push_back(Workload{"stream64k", true, 0, 1});
  if (!workloads_arg.empty()) {
    auto wanted = split(workloads_arg);
    for (const auto& w : wanted) {
      if (std::none_of(workloads.begin(), workloads.end(),
                       [&](const Workload& x) { return x.name == w; })) {
        std::fprintf(stderr, "iolayer: --workloads: unknown workload '%s'\n", w.c_str());
        return 2;
      }
    }
    std::erase_if(workloads, [&](const Workload& x) {
      return std::find(wanted.begin(), wanted.end(), x.name) == wanted.end();
    });
  }

  if (int rc = pinOthers(cpu); rc != 0) {
    std::fprintf(
        stderr, "%s\n",
        errnoMessage("pinning the load generator off CPU " + std::to_string(cpu), rc).c_str());
    return 1;
  }
  initPattern();
  Upstream upstream;
  if (auto err = upstream.start(); !err.empty()) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }

  std::string load_before = loadavg();
  std::vector<CellResult> cells;
  std::map<std::string, std::string> setups;
  int failures = 0;
  for (int rep = 0; rep < reps; ++rep) {
    for (const Workload& w : workloads) {
      // Interleave: each rep starts with a different layer.
      for (size_t k = 0; k < layers.size(); ++k) {
        Layer layer = layers[(k + static_cast<size_t>(rep)) % layers.size()];
        CellResult r = Cell(layer, w, upstream, cpu, warmup, duration).run(rep);
        if (!r.setup.empty()) setups[r.layer] = r.setup;
        if (!r.error.empty()) {
          ++failures;
          std::fprintf(stderr, "FAIL %s %s rep %d: %s\n", r.workload.c_str(), r.layer.c_str(), rep,
                       r.error.c_str());
          if (r.error.find("io_uring is unavailable") != std::string::npos) return 1;
        } else {
          std::fprintf(
              stderr, "%-12s %-15s rep %d: %10.0f ops/s %7.2f us/op %5.2f syscalls/op%s\n",
              r.workload.c_str(), r.layer.c_str(), rep, r.ops_per_s, r.cpu_us_per_op,
              r.syscalls_per_op,
              verify ? (" verified " + std::to_string(r.verified_bytes) + " B").c_str() : "");
        }
        cells.push_back(std::move(r));
      }
    }
  }
  std::string load_after = loadavg();

  // Summary: per workload x layer, median and min-max over reps; ratios against epoll
  // from the same rep (interleaved, so they share the machine's conditions).
  nlohmann::json summary = nlohmann::json::array();
  std::printf(
      "# iolayer_bench: kernel %s, liburing %s, %ld CPUs, relay on CPU %d, %d reps x %.1f s\n",
      kernelRelease().c_str(), MESHD_LIBURING_VERSION, sysconf(_SC_NPROCESSORS_ONLN), cpu, reps,
      duration);
  std::printf("# load average before: %s, after: %s\n", load_before.c_str(), load_after.c_str());
  for (const auto& [layer, setup] : setups) std::printf("# %s: %s\n", layer.c_str(), setup.c_str());
  std::printf(
      "\n| workload | layer | ops/s | relay CPU µs/op | syscalls/op | ops/wakeup | relay CPU util "
      "|\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  auto find = [&](const std::string& w, const std::string& l, int rep) -> const CellResult* {
    for (const auto& c : cells)
      if (c.workload == w && c.layer == l && c.rep == rep && c.error.empty()) return &c;
    return nullptr;
  };
  std::vector<std::string> ratio_rows;
  for (const Workload& w : workloads) {
    for (Layer layer : layers) {
      std::string l = layerName(layer);
      std::vector<double> ops, cpu_op, sys, per_wake, util, worker, r_ops, r_cpu;
      for (int rep = 0; rep < reps; ++rep) {
        const CellResult* c = find(w.name, l, rep);
        if (c == nullptr) continue;
        ops.push_back(c->ops_per_s);
        cpu_op.push_back(c->cpu_us_per_op);
        sys.push_back(c->syscalls_per_op);
        per_wake.push_back(c->ops_per_iteration);
        util.push_back(c->relay_util);
        worker.push_back(c->worker_cpu_s);
        const CellResult* e = find(w.name, "epoll", rep);
        if (layer != Layer::kEpoll && e != nullptr) {
          r_ops.push_back(c->ops_per_s / e->ops_per_s);
          r_cpu.push_back(c->cpu_us_per_op / e->cpu_us_per_op);
        }
      }
      if (ops.empty()) continue;
      Stat s_ops = stat(ops), s_cpu = stat(cpu_op), s_sys = stat(sys), s_wake = stat(per_wake),
           s_util = stat(util), s_worker = stat(worker);
      std::printf("| %s | %s | %s | %s | %s | %s | %s |\n", w.name.c_str(), l.c_str(),
                  fmtStat("%.0f", s_ops).c_str(), fmtStat("%.2f", s_cpu).c_str(),
                  fmt("%.2f", s_sys.median).c_str(), fmt("%.1f", s_wake.median).c_str(),
                  fmt("%.2f", s_util.median).c_str());
      nlohmann::json row = {
          {"workload", w.name},
          {"layer", l},
          {"reps", ops.size()},
          {"ops_per_s", {{"median", s_ops.median}, {"min", s_ops.min}, {"max", s_ops.max}}},
          {"cpu_us_per_op", {{"median", s_cpu.median}, {"min", s_cpu.min}, {"max", s_cpu.max}}},
          {"syscalls_per_op", s_sys.median},
          {"ops_per_wakeup", s_wake.median},
          {"relay_cpu_util", s_util.median},
          {"uring_worker_cpu_s", s_worker.max}};
      if (!r_ops.empty()) {
        Stat s_rops = stat(r_ops), s_rcpu = stat(r_cpu);
        row["ratio_vs_epoll"] = {
            {"ops_per_s", {{"median", s_rops.median}, {"min", s_rops.min}, {"max", s_rops.max}}},
            {"cpu_us_per_op",
             {{"median", s_rcpu.median}, {"min", s_rcpu.min}, {"max", s_rcpu.max}}}};
        ratio_rows.push_back("| " + w.name + " | " + l + " ÷ epoll | " + fmtStat("%.2f", s_rops) +
                             " | " + fmtStat("%.2f", s_rcpu) + " |");
      }
      summary.push_back(row);
    }
  }
  if (!ratio_rows.empty()) {
    std::printf(
        "\nRatios from the same rep (median [min–max] over reps); CPU/op below 1 = io_uring "
        "cheaper:\n\n");
    std::printf("| workload | ratio | ops/s | relay CPU/op |\n|---|---|---|---|\n");
    for (const auto& row : ratio_rows) std::printf("%s\n", row.c_str());
  }
  for (const auto& c : cells)
    if (!c.error.empty())
      std::printf("\nFAILED %s %s rep %d: %s\n", c.workload.c_str(), c.layer.c_str(), c.rep,
                  c.error.c_str());
  if (verify && failures == 0)
    std::printf(
        "\nverify: all cells passed (echoed bytes equal the bytes sent; stream bytes and FINs end "
        "to end)\n");

  if (!json_path.empty()) {
    nlohmann::json raw = nlohmann::json::array();
    for (const auto& c : cells) {
      raw.push_back({{"workload", c.workload},
                     {"layer", c.layer},
                     {"rep", c.rep},
                     {"error", c.error},
                     {"seconds", c.seconds},
                     {"ops", c.ops},
                     {"ops_per_s", c.ops_per_s},
                     {"cpu_us_per_op", c.cpu_us_per_op},
                     {"syscalls_per_op", c.syscalls_per_op},
                     {"ops_per_wakeup", c.ops_per_iteration},
                     {"relay_cpu_util", c.relay_util},
                     {"uring_worker_cpu_s", c.worker_cpu_s},
                     {"mib_per_s", c.mib_per_s},
                     {"verified_bytes", c.verified_bytes}});
    }
    nlohmann::json doc = {{"machine",
                           {{"kernel", kernelRelease()},
                            {"liburing", MESHD_LIBURING_VERSION},
                            {"cpus", sysconf(_SC_NPROCESSORS_ONLN)},
                            {"loadavg_before", load_before},
                            {"loadavg_after", load_after}}},
                          {"config",
                           {{"cpu", cpu},
                            {"reps", reps},
                            {"duration_s", duration},
                            {"warmup_s", warmup},
                            {"buffer_bytes", kBufferBytes}}},
                          {"setups", setups},
                          {"summary", summary},
                          {"cells", raw}};
    std::ofstream out(json_path);
    out << doc.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "iolayer: --json: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  if (failures > 0) {
    std::fprintf(stderr, "iolayer: %d cell(s) failed\n", failures);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace meshd::bench::iolayer

int main(int argc, char** argv) { return meshd::bench::iolayer::mainImpl(argc, argv); }
