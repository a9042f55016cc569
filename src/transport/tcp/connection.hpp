// The TCP transport's connection role: the authenticated handshake that opens
// every connection (wire format in frame.hpp), and the accepting side's
// listener, which checks hellos and keeps verified connections until the
// endpoint of their channel takes them.
//
// The handshake is a challenge-response under the job key (core/job_key.hpp)
// that costs the connector no round trip, so connect() never waits for the
// peer and a sender never depends on the receiver's progress:
//  - challenge: at start every rank draws a fresh acceptor nonce and
//    publishes it with its address through the (authenticated) bootstrap;
//  - hello: the connector sends (its rank, the acceptor's rank, the channel
//    number, a fresh connector nonce, HMAC over all of them and the acceptor
//    nonce); the acceptor reads exactly those bytes, checks the proof and
//    that the (rank, channel) pair was never accepted before, and reads
//    nothing else from the connection until then;
//  - ack: the acceptor proves itself back with an HMAC over the same fields
//    under another label, sent just before its first frame (never to a peer
//    that may have closed already, whose reset would discard unread data).
// A connection that has not completed a valid hello within
// LF_TCP_HANDSHAKE_TIMEOUT is closed; so is one with a bad or repeated
// hello. Unverified connections are limited to max_pending at a time, the
// oldest closed to make room: a real connector's hello follows its connect at
// once, so it is verified in the serve() that accepts it and a flood of silent
// connections does not delay it (nothing waits for a handshake deadline).
// Verified connections waiting for their channel are limited and expire after
// LF_CONNECT_TIMEOUT.
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/job_key.hpp"
#include "core/net.hpp"
#include "transport/tcp/frame.hpp"

namespace lf::tcp {

using HandshakeBytes = std::array<uint8_t, kHandshakeSize>;

/// What a connector checks the acceptor's ack against.
struct AckCheck {
  JobKey key;
  uint32_t me = 0, peer = 0, seq = 0;
  HandshakeNonce acceptor_nonce{}, connector_nonce{};
  /// nullptr when `bytes` is the ack expected, else why not.
  const char *check(const uint8_t bytes[kHandshakeSize]) const noexcept;
};

/// Connector: the hello for channel `seq` from `me` to `peer`, whose
/// published nonce is `acceptor_nonce`, and the check of the answer.
HandshakeBytes make_hello(const JobKey &key, uint32_t me, uint32_t peer, uint32_t seq,
                          const HandshakeNonce &acceptor_nonce, AckCheck *check);

/// Acceptor: check a hello meant for `me` (nullptr when valid, else why
/// not) and, when valid, compute the ack to send back.
const char *check_hello(const JobKey &key, uint32_t me, const HandshakeNonce &acceptor_nonce,
                        const uint8_t bytes[kHandshakeSize], Handshake *hello, HandshakeBytes *ack) noexcept;

/// A verified connection and the ack its endpoint sends before its first frame.
struct Accepted {
  Fd fd;
  HandshakeBytes ack{};
};

struct ListenerLimits {
  std::chrono::milliseconds handshake_timeout{5000};
  std::chrono::milliseconds stash_timeout{30000};
  size_t max_pending = 64;
  size_t max_stash = 1024;
};

/// The accepting side. Thread-safe: endpoints of any channel call it from
/// their progress().
class Listener {
 public:
  Listener(std::vector<Fd> sockets, JobKey key, int rank, HandshakeNonce nonce, ListenerLimits limits);

  /// Serve the listening sockets and pending hellos without waiting; the
  /// connection `peer` dialled for channel `seq` once it is verified.
  std::optional<Accepted> try_take(int peer, uint32_t seq) noexcept;
  /// The endpoint of that channel is gone: refuse its connection.
  void forget(int peer, uint32_t seq) noexcept;
  /// The listening sockets (fixed at construction: safe to read anywhere).
  const std::vector<int> &fds() const noexcept { return fds_; }

  /// Counts, for tests and lf-info.
  size_t pending() noexcept;
  size_t stashed() noexcept;
  /// Why the last connection was refused ("" if none was), for the error of
  /// a channel whose connection never came.
  std::string last_refusal() noexcept;

 private:
  struct Pending {
    Fd fd;
    HandshakeBytes buf{};
    size_t got = 0;
    Clock::time_point expires;
  };
  struct Stashed {
    Accepted conn;
    Clock::time_point expires;
  };
  using Key = std::pair<int, uint32_t>;

  void serve();
  void accept_all();
  /// False when the connection is done with (verified or dropped).
  bool read_hello(Pending &p);

  std::vector<Fd> sockets_;
  std::vector<int> fds_;
  JobKey key_;
  int rank_;
  HandshakeNonce nonce_;
  ListenerLimits limits_;

  std::mutex mu_;  // the fields below
  std::vector<Pending> pending_;
  std::map<Key, Stashed> stash_;
  // Every (rank, channel) verified or forgotten (its endpoint went before
  // the connection came): a hello for one of them is refused.
  std::set<Key> seen_;
  std::string last_refusal_;
};

/// Sockets of closed channels: their write side is shut down (after `bye`)
/// and what the peer still sends is read and dropped until its end of stream
/// or LF_TCP_LINGER, so that they never answer with a reset, which would make
/// the peer's kernel discard what it has not read yet. Held here rather than
/// waited for in each endpoint's destructor: closing a channel never blocks,
/// and at lf_finalize (the transport's destruction) all of them linger
/// together, at most one LF_TCP_LINGER in all.
class Closer {
 public:
  explicit Closer(double linger_s) noexcept : linger_s_(linger_s) {}
  ~Closer();
  Closer(const Closer &) = delete;
  Closer &operator=(const Closer &) = delete;
  /// Take `fd` (write side already shut down); also serves the others.
  void add(Fd fd) noexcept;
  size_t size() noexcept;

 private:
  struct Closing {
    Fd fd;
    Clock::time_point until;
  };
  /// Read what is there on each; drop those at end of stream or past their
  /// deadline (mu_ held).
  void serve() noexcept;
  double linger_s_;
  std::mutex mu_;
  std::vector<Closing> list_;
};

}  // namespace lf::tcp
