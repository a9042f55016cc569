// Blocks a peer process may still map after the channel that lent them has
// closed. A zero-copy send lends a shared block until the receiver releases
// its view; once the channel is gone no release can arrive, yet the view
// lives on in the peer. Returning the block to its pool then would let the
// pool punch its pages or hand them out again under the peer's view, so the
// block is held here until the peer process exits.
//
// Not covered: a view the peer lent on to a third process (the hold ends
// when the peer exits, though the third may still map the block), and a
// peer whose pid this process cannot see (another pid namespace: pid 0,
// and the block goes back at once, as before). A peer that died long
// before its channel noticed could have its pid reused meanwhile; the
// block is then held until that process exits.
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "memory/buffer.hpp"

namespace lf {

/// Keep `buf` until process `pid` exits (at once when `pid` is not positive
/// or has already exited). Never fails: without memory for the record, or
/// without pidfd_open, the process is looked up with kill(pid, 0) instead.
void hold_until_exit(BufferPtr buf, pid_t pid) noexcept;

/// Let go of the held blocks whose process has exited; returns how many are
/// still held. Cheap when nothing is held. Called by pool statistics and
/// before a shared pool grows, so that what a dead peer held is reused.
size_t sweep_held_blocks() noexcept;

}  // namespace lf
