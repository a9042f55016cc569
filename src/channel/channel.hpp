// A channel: ordered, tagged, non-blocking messaging with one peer over one
// transport endpoint. The channel owns matching (posted receives and
// unexpected messages, both FIFO: MPI's non-overtaking rule); the endpoint
// moves the bytes.
#pragma once

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
};

class Channel final : public Matcher {
 public:
  /// Select a transport for `peer` and connect (both ranks call it).
  static Result<std::shared_ptr<Channel>> open(Context &ctx, int peer, const ChannelOptions &opts);
  ~Channel() override;

  int peer() const noexcept { return peer_; }
  const char *transport_name() const noexcept { return transport_name_.c_str(); }
  const std::string &reason() const noexcept { return reason_; }
  bool closed() const noexcept { return !endpoint_; }

  /// Start an operation; `op` must stay valid until its status leaves
  /// LF_IN_PROGRESS. Errors complete the op at once.
  void post_send(SendOp &op) noexcept;
  void post_recv(RecvOp &op) noexcept;
  /// Drive the endpoint once.
  void progress() noexcept;
  /// Spin, then sleep on the endpoint, until `status` leaves LF_IN_PROGRESS.
  void wait(const lf_status_t &status) noexcept;
  /// Fail pending operations with LF_ERR_CLOSED and drop the connection.
  void close() noexcept;

  RecvOp *take_posted(uint64_t tag) noexcept override;
  void add_unexpected(std::unique_ptr<Incoming> msg) noexcept override;
  bool has_posted() const noexcept override { return !posted_.empty(); }

 private:
  Channel(Context &ctx, int peer) : owner_(ctx.shared_from_this()), ctx_(ctx), peer_(peer) {}
  void progress_locked() noexcept;
  void fail_all(const Error &e) noexcept;
  std::unique_lock<std::mutex> maybe_lock() noexcept;

  std::shared_ptr<Context> owner_;  ///< Keeps the context alive while requests reference the channel.
  Context &ctx_;
  int peer_;
  std::string transport_name_;
  std::string reason_;
  std::unique_ptr<Endpoint> endpoint_;
  std::deque<RecvOp *> posted_;
  std::deque<std::unique_ptr<Incoming>> unexpected_;
  std::optional<Error> broken_;
  std::mutex mu_;
  int64_t spin_count_ = 0;
};

struct Selection {
  Transport *transport = nullptr;
  std::string reason;
};

/// Pick the transport for a channel to `peer`; deterministic, so both ranks
/// pick the same one from the same inputs. See docs/transports.md.
Result<Selection> select_transport(Context &ctx, int peer, const ChannelOptions &opts);

}  // namespace lf
