// Names of the ABI enums (bpf/include/mesh_abi.h) as meshctl, metrics and
// dumps show them.
#pragma once

#include <cstdint>
#include <string_view>

#include "mesh_abi.h"

namespace meshd::datapath {

// "connect_rewritten", "no_backend", ... for enum mesh_stat; "unknown" past the end.
std::string_view statName(uint32_t stat);
// "random", "weighted_random", "maglev", "least_conn" for enum mesh_lb_algo.
std::string_view algoName(uint8_t algo);
// "tcp" or "udp"; anything else is "unknown".
std::string_view protoName(uint8_t proto);

}  // namespace meshd::datapath
