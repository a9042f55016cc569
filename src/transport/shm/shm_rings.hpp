// The ring segment of a shm connection: made by the accepting side, checked
// by the connecting side, whichever handshake brought the two together (the
// ranks' handshake in shm_transport.cpp, or a channel by address).
#pragma once

#include <memory>

#include "core/net.hpp"
#include "memory/buffer.hpp"
#include "transport/shm/shm_endpoint.hpp"

namespace lf::shm {

/// A new ring segment sized by `t`, its header written (the rest is zero).
Result<std::shared_ptr<SharedSegment>> create_rings(const Tunables &t);

/// Map the ring segment `fd` of `bytes` that `who` sent, refusing one that is
/// not sealed against shrinking, of an absurd size or with a bad header.
Result<std::shared_ptr<SharedSegment>> map_rings(Fd fd, uint64_t bytes, const char *who);

/// A shm endpoint over a Unix socket that a handshake of its own already
/// authenticated (a channel by address): the acceptor makes the rings and
/// passes them, the connector maps them. Both sides must call it, the one
/// with `acceptor` true, the other false. No CMA, no device lane.
Result<std::unique_ptr<Endpoint>> endpoint_over_socket(Fd sock, bool acceptor, Deadline deadline);

}  // namespace lf::shm
