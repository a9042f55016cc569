// The TCP transport's endpoint role: one connected channel's data path
// (frames out of queued sends, frames into posted receives or unexpected
// messages), its share of the handshake (check the acceptor's ack, send our
// own ack lazily) and its orderly close. See tcp_transport.cpp for how
// connections are made and connection.hpp for the handshake.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "core/net.hpp"
#include "transport/tcp/connection.hpp"
#include "transport/transport.hpp"

namespace lf::tcp {

/// The LF_TCP_* tunables an endpoint needs.
struct Settings {
  uint64_t max_message = 0;
  uint64_t unexpected_budget = 0;
  int sockbuf = 0;
  int keepalive_s = 0;
  double linger_s = 0;
  double handshake_s = 0;

  static Settings from_config();
};

/// What each unexpected message copied out of the socket costs the channel's
/// budget on top of its payload: the message object, its queue entry and the
/// allocator's headers. Without it a stream of empty messages would be free.
inline constexpr uint64_t kUnexpectedOverhead = 128;

/// TCP_NODELAY, keepalive and buffer sizes on a connected socket.
void tune_socket(int fd, const Settings &s) noexcept;

/// The connector's endpoint on `fd` (made non-blocking), whose hello was
/// sent; `ack` checks the acceptor's answer before its first frame (none: a
/// test's socketpair).
/// `closer` takes the socket at close (none: the destructor lingers itself).
Result<std::unique_ptr<Endpoint>> connected_endpoint(Fd fd, const Settings &s, int peer, std::optional<AckCheck> ack,
                                                     std::shared_ptr<Closer> closer = nullptr);

/// The acceptor's endpoint: picks its connection up from `listener` in
/// progress(); LF_ERR_TIMEOUT if it has not come by `deadline`.
Result<std::unique_ptr<Endpoint>> accepting_endpoint(Listener &listener, const Settings &s, int peer, uint32_t seq,
                                                     Deadline deadline, std::shared_ptr<Closer> closer);

}  // namespace lf::tcp
