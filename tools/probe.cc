#include "tools/probe.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "tools/text_util.h"

namespace meshd::tools {
namespace {

constexpr size_t kMaxErrorSamples = 10;
constexpr size_t kMaxResponse = 64 * 1024;

const char* modeName(ProbeMode mode) {
  switch (mode) {
    case ProbeMode::kTcp:
      return "tcp";
    case ProbeMode::kHttp:
      return "http";
    case ProbeMode::kUdp:
      return "udp";
  }
  return "?";
}

// One probe's outcome: the backend's name, or an error text.
struct Outcome {
  std::string name;
  std::string error;
  bool peerMismatch = false;
  int fd = -1;  // still open (hold)
};

std::string errText(std::string_view what, const Endpoint& target, int err) {
  return strCat(what, " ", target.toString(), ": ", std::strerror(err));
}

void setTimeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  // On Linux SO_SNDTIMEO also bounds a blocking connect().
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Checks getpeername() against the dialed address; returns a description on mismatch.
std::optional<std::string> checkPeer(int fd, const Endpoint& target) {
  sockaddr_storage peer{};
  socklen_t len = sizeof(peer);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) < 0) {
    return strCat("getpeername: ", std::strerror(errno));
  }
  const Endpoint got = Endpoint::fromSockaddr(reinterpret_cast<sockaddr*>(&peer), len);
  if (!sameEndpoint(got, target)) {
    return strCat("getpeername returned ", got.toString(), ", dialed ", target.toString());
  }
  return std::nullopt;
}

int connectTo(const ProbeOptions& o, int type, Outcome& out) {
  const int fd = socket(o.target.family(), type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    out.error = errText("socket for", o.target, errno);
    return -1;
  }
  setTimeouts(fd, o.timeout);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&o.target.addr), o.target.len) < 0) {
    out.error = errText("connect", o.target, errno == EINPROGRESS ? ETIMEDOUT : errno);
    close(fd);
    return -1;
  }
  if (auto mismatch = checkPeer(fd, o.target)) {
    out.peerMismatch = true;
    out.error = *mismatch;
  }
  return fd;
}

// Reads until `done(buf)` or EOF or timeout. Returns false (with out.error) on a read error.
template <typename Done>
bool readUntil(int fd, const Endpoint& target, std::string& buf, Done done, Outcome& out) {
  char chunk[4096];
  while (!done(buf) && buf.size() < kMaxResponse) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      out.error = errText("read from", target, errno == EAGAIN ? ETIMEDOUT : errno);
      return false;
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
  return true;
}

Outcome probeTcp(const ProbeOptions& o) {
  Outcome out;
  const int fd = connectTo(o, SOCK_STREAM, out);
  if (fd < 0) return out;
  std::string buf;
  if (readUntil(
          fd, o.target, buf, [](const std::string& b) { return b.find('\n') != std::string::npos; },
          out)) {
    const size_t nl = buf.find('\n');
    if (nl == std::string::npos) {
      out.error =
          strCat("connection to ", o.target.toString(), " closed before the server sent its name");
    } else {
      out.name = buf.substr(0, nl);
    }
  }
  if (o.hold && out.error.empty()) {
    out.fd = fd;
  } else {
    close(fd);
  }
  return out;
}

Outcome probeHttp(const ProbeOptions& o) {
  Outcome out;
  const int fd = connectTo(o, SOCK_STREAM, out);
  if (fd < 0) return out;
  const std::string request = strCat("GET ", o.httpPath, " HTTP/1.1\r\nHost: ", o.target.toString(),
                                     "\r\nUser-Agent: mesh-client\r\nConnection: close\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    out.error = errText("send to", o.target, errno);
    close(fd);
    return out;
  }
  std::string buf;
  // Connection: close, so the response ends at EOF.
  const bool read_ok = readUntil(
      fd, o.target, buf, [](const std::string&) { return false; }, out);
  close(fd);
  if (!read_ok) return out;
  const size_t head_end = buf.find("\r\n\r\n");
  if (buf.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) {
    out.error = strCat("malformed HTTP response from ", o.target.toString());
    return out;
  }
  const std::string status_line = buf.substr(0, buf.find("\r\n"));
  if (status_line.size() < 12 || status_line.compare(9, 3, "200") != 0) {
    out.error = strCat(o.target.toString(), o.httpPath, " answered '", status_line, "'");
    return out;
  }
  std::string body = buf.substr(head_end + 4);
  out.name = std::string(strip(body.substr(0, body.find('\n'))));
  return out;
}

Outcome probeUdp(const ProbeOptions& o) {
  Outcome out;
  int fd = -1;
  const std::string query = "mesh-client\n";
  if (o.udpConnect) {
    fd = connectTo(o, SOCK_DGRAM, out);
    if (fd < 0) return out;
    if (send(fd, query.data(), query.size(), 0) < 0) {
      out.error = errText("send to", o.target, errno);
      close(fd);
      return out;
    }
  } else {
    fd = socket(o.target.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      out.error = errText("socket for", o.target, errno);
      return out;
    }
    setTimeouts(fd, o.timeout);
    if (sendto(fd, query.data(), query.size(), 0, reinterpret_cast<const sockaddr*>(&o.target.addr),
               o.target.len) < 0) {
      out.error = errText("sendto", o.target, errno);
      close(fd);
      return out;
    }
  }
  char buf[2048];
  sockaddr_storage from{};
  socklen_t len = sizeof(from);
  const ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
  if (n < 0) {
    out.error = errText("no reply from", o.target, errno == EAGAIN ? ETIMEDOUT : errno);
    close(fd);
    return out;
  }
  close(fd);
  // The reply must appear to come from the address we sent to (recvmsg hook), or an
  // unconnected client would not recognise it as the answer.
  const Endpoint src = Endpoint::fromSockaddr(reinterpret_cast<sockaddr*>(&from), len);
  if (!o.udpConnect && !sameEndpoint(src, o.target)) {
    out.peerMismatch = true;
    out.error = strCat("reply came from ", src.toString(), ", sent to ", o.target.toString());
  }
  const std::string_view text(buf, static_cast<size_t>(n));
  out.name = std::string(strip(text.substr(0, text.find('\n'))));
  return out;
}

}  // namespace

void ProbeResult::closeHeld() {
  for (int fd : heldFds) close(fd);
  heldFds.clear();
}

ProbeResult runProbes(const ProbeOptions& options) {
  ProbeResult result;
  for (int i = 0; i < options.count; ++i) {
    Outcome out;
    switch (options.mode) {
      case ProbeMode::kTcp:
        out = probeTcp(options);
        break;
      case ProbeMode::kHttp:
        out = probeHttp(options);
        break;
      case ProbeMode::kUdp:
        out = probeUdp(options);
        break;
    }
    ++result.total;
    if (out.fd >= 0) result.heldFds.push_back(out.fd);
    if (out.peerMismatch) ++result.peerMismatches;
    // A mismatch still reached a backend: count its name, but report the mismatch.
    if (!out.name.empty()) ++result.counts[out.name];
    if (out.error.empty()) {
      ++result.ok;
    } else {
      if (!out.peerMismatch) ++result.errors;
      if (result.errorSamples.size() < kMaxErrorSamples) result.errorSamples.push_back(out.error);
    }
  }
  return result;
}

std::string formatTable(const ProbeOptions& options, const ProbeResult& result) {
  std::string out = absl::StrFormat("%-24s %8s %8s\n", "BACKEND", "COUNT", "PERCENT");
  for (const auto& [name, count] : result.counts) {
    const double pct = result.total > 0 ? 100.0 * count / result.total : 0.0;
    out += absl::StrFormat("%-24s %8d %7.1f%%\n", name, count, pct);
  }
  out += absl::StrFormat("%s %s: total %d, ok %d, errors %d, peer-mismatches %d\n",
                         modeName(options.mode), options.target.toString(), result.total, result.ok,
                         result.errors, result.peerMismatches);
  return out;
}

std::string formatJson(const ProbeOptions& options, const ProbeResult& result) {
  nlohmann::json j;
  j["mode"] = modeName(options.mode);
  j["target"] = options.target.toString();
  j["total"] = result.total;
  j["ok"] = result.ok;
  j["errors"] = result.errors;
  j["peer_mismatches"] = result.peerMismatches;
  j["backends"] = nlohmann::json::object();
  for (const auto& [name, count] : result.counts) j["backends"][name] = count;
  j["error_samples"] = result.errorSamples;
  return j.dump(2) + "\n";
}

}  // namespace meshd::tools
