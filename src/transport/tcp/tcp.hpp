// The TCP transport's endpoint on its own, for the transport (one per
// channel, after the handshake) and for tests that drive it over a socketpair
// (no handshake: the test is both sides).
#pragma once

#include <memory>

#include "core/net.hpp"
#include "transport/transport.hpp"

namespace lf::tcp {

/// An endpoint speaking the frame protocol (frame.hpp) on the connected
/// stream socket `fd`, which it makes non-blocking. `peer` names the other
/// side in errors. Limits come from the LF_TCP_* tunables.
Result<std::unique_ptr<Endpoint>> make_endpoint(Fd fd, int peer);

}  // namespace lf::tcp
