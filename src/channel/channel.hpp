// A channel: ordered, tagged, non-blocking messaging with one peer over one
// transport endpoint. The channel owns matching (posted receives and
// unexpected messages, both FIFO: MPI's non-overtaking rule); the endpoint
// moves the bytes.
//
// Threading: every call may come from any thread. The channel's mutex is
// held around everything that touches the queues or the endpoint (posting,
// progress, cancel, close); a waiter drops it while it sleeps, keeping the
// endpoint alive through a shared_ptr, so a close racing a wait never frees
// what the waiter still uses.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "channel/context.hpp"
#include "transport/transport.hpp"

namespace lf {

class Context;

struct ChannelOptions {
  std::optional<std::string> transports;  ///< Overrides LF_TRANSPORTS when set.
  std::optional<bool> strict;             ///< Overrides LF_STRICT when set.
  MemoryKind memory_kind = MemoryKind::host;
  size_t message_bytes = 64 * 1024;  ///< Typical message size the choice is made for.
};

class Channel final : public Matcher, public std::enable_shared_from_this<Channel> {
 public:
  /// Select a transport for `peer` and connect (both ranks call it).
  static Result<std::shared_ptr<Channel>> open(Context &ctx, int peer, const ChannelOptions &opts);
  /// A channel over an endpoint made elsewhere (a connection by address:
  /// `peer` -1), registered with `ctx`. `transport` is a static name.
  static Result<std::shared_ptr<Channel>> adopt(Context &ctx, int peer, std::unique_ptr<Endpoint> ep,
                                                const char *transport, std::string reason);
  ~Channel() override;

  int peer() const noexcept { return peer_; }
  Context &context() const noexcept { return ctx_; }
  const char *transport_name() const noexcept { return transport_name_; }
  const std::string &reason() const noexcept { return reason_; }

  /// Start an operation; `op` must stay valid until its status leaves
  /// LF_IN_PROGRESS. Errors complete the op at once.
  void post_send(SendOp &op) noexcept;
  /// `drive`: also drive the endpoint once under the same lock (a blocking
  /// receive, which waits next anyway: one lock round trip instead of two).
  void post_recv(RecvOp &op, bool drive = false) noexcept;
  /// Drive the endpoint once.
  void progress() noexcept;
  /// Drive the endpoint once unless another thread is driving it now;
  /// returns whether it did.
  bool try_progress() noexcept;
  /// Spin, then sleep on the endpoint, until `status` leaves LF_IN_PROGRESS
  /// or `deadline` passes; returns whether it left LF_IN_PROGRESS.
  bool wait(const lf_status_t &status, Deadline deadline = Deadline::max()) noexcept;
  /// Sleep up to `timeout_ms` until the endpoint may have work.
  void wait_for_activity(int timeout_ms) noexcept;
  /// The endpoint's event fd (-1: none); fixed from open to close.
  int event_fd() const noexcept { return event_fd_; }
  /// Cancel a posted receive that has not matched a message: it completes
  /// with LF_ERR_CANCELLED and returns true. A receive already matched (or
  /// done) is left to complete normally; returns false.
  bool cancel(RecvOp &op) noexcept;
  /// The error that broke the channel (peer gone, protocol error, closed),
  /// or nullopt while it is healthy. Never blocks.
  std::optional<Error> health() noexcept;
  /// Fail pending operations with LF_ERR_CLOSED and drop the connection.
  void close() noexcept;

  RecvOp *take_posted(uint64_t tag) noexcept override;
  void add_unexpected(std::unique_ptr<Incoming> msg) noexcept override;
  bool has_posted() const noexcept override { return !posted_.empty(); }

 private:
  Channel(Context &ctx, int peer) : owner_(ctx.shared_from_this()), ctx_(ctx), peer_(peer) {}
  void progress_locked() noexcept;
  void fail_all(const Error &e) noexcept;

  std::shared_ptr<Context> owner_;  ///< Keeps the context alive while requests reference the channel.
  Context &ctx_;
  int peer_;
  const char *transport_name_ = "";  ///< The transport's static name.
  std::string reason_;
  std::shared_ptr<Endpoint> endpoint_;  ///< Shared with waiters that sleep on it unlocked.
  std::deque<RecvOp *> posted_;
  std::deque<std::unique_ptr<Incoming>> unexpected_;
  std::optional<Error> broken_;
  std::atomic<bool> ended_{false};  ///< broken_ or closed: read without the mutex by health().
  std::mutex mu_;
  int64_t spin_count_ = 0;
  int event_fd_ = -1;
};

struct Selection {
  Transport *transport = nullptr;
  std::string reason;
};

/// Pick the transport for a channel to `peer`; deterministic, so both ranks
/// pick the same one from the same inputs. See docs/transports.md.
Result<Selection> select_transport(Context &ctx, int peer, const ChannelOptions &opts);

}  // namespace lf
