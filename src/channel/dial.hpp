// Channels by address, outside the bootstrap world: a long-lived process
// listens (tcp://HOST:PORT, unix:/path, unix:@name) and processes that were
// not launched with it connect, as clients of a service do.
//
// Each connection is authenticated before it becomes a channel
// (dial_wire.hpp): a mutual HMAC challenge over the shared secret
// LF_EXEC_TOKEN / LF_EXEC_TOKEN_FILE, required on tcp; on a unix socket the
// peer's uid (SO_PEERCRED) must be ours or root's, and the token is checked
// too when set. The two sides then exchange locations, so the channel's
// reason says what scope they are at.
//
// The listener then chooses the transport and tells the client: shm when
// the socket is a Unix socket between processes that can share memory (and
// LF_TRANSPORTS permits it; the socket then carries shm's fd passing and
// liveness), else lavaflow's tcp framing on the socket itself. The peer rank
// of such a channel is -1 (not a rank of this world).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "channel/channel.hpp"
#include "core/job_key.hpp"
#include "core/net.hpp"

namespace lf {

class Context;

class DialListener {
 public:
  /// Listen on `address` for `ctx`'s channels.
  static Result<std::unique_ptr<DialListener>> listen(Context &ctx, const std::string &address);
  /// The address clients connect to (the port filled in).
  const std::string &address() const noexcept { return address_; }
  /// The next authenticated client as a channel; LF_ERR_TIMEOUT if none by
  /// `deadline`. A client that fails its handshake is refused and reported
  /// (LF_ERR_PROTOCOL, LF_ERR_INVALID_ARG for a wrong token); the listener
  /// stays usable. Thread-safe: concurrent accepts take turns.
  Result<std::shared_ptr<Channel>> accept(Deadline deadline);

 private:
  DialListener(Context &ctx, Fd fd, SockAddr addr, JobKey key) noexcept;
  std::shared_ptr<Context> ctx_;
  Fd fd_;
  SockAddr addr_;
  std::string address_;
  JobKey key_;
  std::mutex mu_;
};

/// Connect `ctx` to the listener at `address`; the channel once the
/// handshake succeeded by `deadline`.
Result<std::shared_ptr<Channel>> connect_by_address(Context &ctx, const std::string &address, Deadline deadline);

}  // namespace lf
