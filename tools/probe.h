// mesh-client's probes: N connections (or datagrams) to one address, each answered by a
// mesh-echo with its name, tallied per name. Each probe also checks that the peer address
// the kernel reports (getpeername for TCP, the reply's source for UDP) is the address that
// was dialed: with meshd's connect/getpeername/recvmsg hooks the application must only
// ever see the VIP, never the backend.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "tools/endpoint.h"

namespace meshd::tools {

enum class ProbeMode { kTcp, kHttp, kUdp };

struct ProbeOptions {
  ProbeMode mode = ProbeMode::kTcp;
  Endpoint target;
  int count = 1;
  std::chrono::milliseconds timeout{2000};  // per connect / read
  std::string httpPath = "/";
  // TCP: keep every connection open after its name was read (the caller closes them with
  // closeHeld()), so backends accumulate live connections.
  bool hold = false;
  // UDP: connect() the socket and check getpeername instead of the reply's source.
  bool udpConnect = false;
};

struct ProbeResult {
  int total = 0;
  int ok = 0;
  int errors = 0;
  int peerMismatches = 0;
  std::map<std::string, int> counts;      // backend name -> answered probes
  std::vector<std::string> errorSamples;  // first few error texts, for the operator
  std::vector<int> heldFds;               // with ProbeOptions::hold

  void closeHeld();
};

// Runs options.count probes one after another. Never fails as a whole: every failed
// probe is counted in `errors` with its errno text in `errorSamples`.
ProbeResult runProbes(const ProbeOptions& options);

// Text table: BACKEND COUNT PERCENT rows then a summary line.
std::string formatTable(const ProbeOptions& options, const ProbeResult& result);
// JSON: {"mode","target","total","ok","errors","peer_mismatches","backends":{name:count},
// "error_samples":[...]}.
std::string formatJson(const ProbeOptions& options, const ProbeResult& result);

}  // namespace meshd::tools
