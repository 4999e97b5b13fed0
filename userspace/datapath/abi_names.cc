#include "datapath/abi_names.h"

#include <array>

namespace meshd::datapath {
namespace {

constexpr std::array<std::string_view, MESH_STAT_MAX> kStatNames = {
    "connect_rewritten",      // MESH_STAT_CONNECT_REWRITTEN
    "no_backend",             // MESH_STAT_NO_BACKEND
    "backend_missing",        // MESH_STAT_BACKEND_MISSING
    "sendmsg_rewritten",      // MESH_STAT_SENDMSG_REWRITTEN
    "recvmsg_rewritten",      // MESH_STAT_RECVMSG_REWRITTEN
    "peername_rewritten",     // MESH_STAT_PEERNAME_REWRITTEN
    "sock_established",       // MESH_STAT_SOCK_ESTABLISHED
    "sock_closed",            // MESH_STAT_SOCK_CLOSED
    "sock_connect_failed",    // MESH_STAT_SOCK_CONNECT_FAILED
    "storage_failed",         // MESH_STAT_STORAGE_FAILED
    "family_mismatch",        // MESH_STAT_FAMILY_MISMATCH
    "maglev_missing",         // MESH_STAT_MAGLEV_MISSING
    "limit_service",          // MESH_STAT_LIMIT_SERVICE
    "limit_backend",          // MESH_STAT_LIMIT_BACKEND
    "limit_rerouted",         // MESH_STAT_LIMIT_REROUTED
    "released_at_close",      // MESH_STAT_RELEASED_AT_CLOSE
    "rate_service",           // MESH_STAT_RATE_SERVICE
    "rate_client",            // MESH_STAT_RATE_CLIENT
    "all_ejected",            // MESH_STAT_ALL_EJECTED
    "ejected_skipped",        // MESH_STAT_EJECTED_SKIPPED
    "ejection",               // MESH_STAT_EJECTION
    "ejection_over_percent",  // MESH_STAT_EJECTION_OVER_PERCENT
    "ejection_expired",       // MESH_STAT_EJECTION_EXPIRED
    "rto",                    // MESH_STAT_RTO
    "sockmap_added",          // MESH_STAT_SOCKMAP_ADDED
    "sockmap_redirected",     // MESH_STAT_SOCKMAP_REDIRECTED
    "sockmap_bytes",          // MESH_STAT_SOCKMAP_BYTES
    "sockmap_no_peer",        // MESH_STAT_SOCKMAP_NO_PEER
    "drain_destroyed",        // MESH_STAT_DRAIN_DESTROYED
    "l7_redirected",          // MESH_STAT_L7_REDIRECTED
    "l7_no_target",           // MESH_STAT_L7_NO_TARGET
    "orig_dst_recorded",      // MESH_STAT_ORIG_DST_RECORDED
    "orig_dst_failed",        // MESH_STAT_ORIG_DST_FAILED
    "authz_denied",           // MESH_STAT_AUTHZ_DENIED
    "authz_skipped",          // MESH_STAT_AUTHZ_SKIPPED
    "strict_dropped",         // MESH_STAT_STRICT_DROPPED
    "strict_unparsed",        // MESH_STAT_STRICT_UNPARSED
    "strict_fast_pass",       // MESH_STAT_STRICT_FAST_PASS
    "strict_pass_failed",     // MESH_STAT_STRICT_PASS_FAILED
};
// A new enum value without a name here fails to compile (an empty entry).
static_assert(!kStatNames.back().empty(), "name every enum mesh_stat value");

constexpr std::array<std::string_view, MESH_LB_ALGO_MAX> kAlgoNames = {
    "random", "weighted_random", "maglev", "least_conn", "p2c_ewma"};
static_assert(!kAlgoNames.back().empty(), "name every enum mesh_lb_algo value");

}  // namespace

std::string_view statName(uint32_t stat) {
  return stat < kStatNames.size() ? kStatNames[stat] : "unknown";
}

std::string_view algoName(uint8_t algo) {
  return algo < kAlgoNames.size() ? kAlgoNames[algo] : "unknown";
}

std::string_view protoName(uint8_t proto) {
  switch (proto) {
    case MESH_PROTO_TCP:
      return "tcp";
    case MESH_PROTO_UDP:
      return "udp";
    default:
      return "unknown";
  }
}

}  // namespace meshd::datapath
