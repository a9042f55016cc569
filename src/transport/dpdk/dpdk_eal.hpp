// DPDK's Environment Abstraction Layer, started once per process.
//
// rte_eal_init may run only once in a process (a second call fails even
// after rte_eal_cleanup), and only in the process that uses it: a child
// forked after it inherits none of its threads. So lavaflow starts it on
// the first context that starts the dpdk transport and keeps it for the
// process's life; a failure is remembered and reported again, with its
// reason, to every later context.
//
// Options come from LF_DPDK_EAL (whitespace-separated, as on a DPDK
// command line) or, when it is empty, from defaults that need no root-only
// setup: --no-huge -m 128 --no-shconf --no-pci --no-telemetry, DPDK's logs
// at error level (memif's at critical: a client retrying its connect would
// log every try). Whatever the options, lavaflow adds a --file-prefix
// unique to the process (unless one is given), one lcore on a CPU the
// process may run on (unless -l, -c or --lcores is given), and removes the
// empty runtime directory EAL leaves.
// The calling thread's CPU affinity is restored afterwards: EAL pins its
// main lcore, and lavaflow's caller did not ask for that.
#pragma once

#include <string>

#include "core/status.hpp"

namespace lf::dpdk {

/// Start the EAL if it is not running; LF_ERR_UNAVAILABLE with the reason
/// (the options and DPDK's error) when it cannot start. Thread-safe.
Status ensure_eal();

/// The EAL's command line as lavaflow passed it ("" before ensure_eal).
std::string eal_command_line();

}  // namespace lf::dpdk
