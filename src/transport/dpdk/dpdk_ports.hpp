// What lf-info says about the dpdk transport's ports without starting the
// EAL or a context: the memif ports a context would create, the af_packet
// port LF_DPDK_PORT names (its interface, kernel MTU, MAC, state, and
// whether this process may open it), and the interfaces it could name.
#pragma once

#include <string>
#include <vector>

namespace lf::dpdk {

/// One line per port or candidate interface, for lf-info.
std::vector<std::string> describe_ports();

}  // namespace lf::dpdk
