// The collectives of one context: channels of their own to every peer, the
// sequence number and argument signature every message carries, waiting
// with dead-peer detection, and the helper thread that runs non-blocking
// collectives in call order.
//
// Threading: run() and start() come from the application (one thread at a
// time, as the C API documents); the helper thread executes queued
// collectives. exec_mu_ makes one collective run at a time, in call order.
#pragma once

#include <lavaflow/lavaflow.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "channel/channel.hpp"
#include "channel/context.hpp"

namespace lf::coll {

enum class Kind : uint8_t { barrier = 1, bcast = 2, reduce = 3, allreduce = 4, allgather = 5, alltoall = 6 };
const char *kind_name(Kind k) noexcept;

/// Allreduce algorithms (LF_COLL_ALGO).
enum class Algo { automatic, ring, recursive_doubling, cma };

/// One collective call. `count` is elements for reduce/allreduce, bytes for
/// bcast and bytes per rank for allgather/alltoall.
struct Args {
  Kind kind = Kind::barrier;
  const void *send = nullptr;  ///< May be LF_IN_PLACE.
  void *recv = nullptr;
  size_t count = 0;
  lf_dtype_t dt = LF_UINT8;
  lf_op_t op = LF_SUM;
  int root = 0;
};

class Engine {
 public:
  /// Open the collective channels to every peer (a collective call: every
  /// rank makes it, as its first collective).
  static Result<std::shared_ptr<Engine>> create(Context &ctx);
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }

  /// Run a collective on the calling thread, after the non-blocking ones
  /// started before it.
  Status run(const Args &a);
  /// Queue a collective for the helper thread; `done` is completed (its
  /// status set last, with release) when it finishes.
  Status start(const Args &a, RecvOp *done);
  /// The channel a request for a non-blocking collective waits on: lf_wait
  /// drives it while the helper thread completes the request.
  std::shared_ptr<Channel> anchor() const noexcept { return anchor_; }

  /// Stop the helper thread and close the channels (pending collectives
  /// fail with LF_ERR_CLOSED).
  void shutdown() noexcept;

 private:
  friend class Run;
  explicit Engine(Context &ctx) : ctx_(ctx), rank_(ctx.rank()), size_(ctx.size()) {}
  Status execute(const Args &a);  // exec_mu_ held
  void drain_locked();            // exec_mu_ held
  /// Remember `e` and close every collective channel, so that peers waiting
  /// on this rank fail instead of hanging.
  void poison(const Error &e) noexcept;
  void *scratch(size_t bytes);  // exec_mu_ held; valid until the next call

  Context &ctx_;
  int rank_, size_;
  std::vector<std::shared_ptr<Channel>> peers_;  // by rank; null for this rank
  std::shared_ptr<Channel> anchor_;
  Algo algo_ = Algo::automatic;
  int64_t spin_ = 0;
  uint32_t seq_ = 0;             // exec_mu_
  std::optional<Error> failed_;  // exec_mu_
  std::unique_ptr<std::byte[]> scratch_;
  size_t scratch_bytes_ = 0;
  bool logged_[8][4] = {};  // exec_mu_: choices already logged at info
  // Per peer, receives of "whatever comes next" posted by a wait that took
  // long (Run::watch), oldest first; the next receive from that peer takes
  // the oldest. exec_mu_.
  std::vector<std::deque<std::unique_ptr<RecvOp>>> watch_;
  // Single-copy reads of the peers' buffers (process_vm_readv) on one host:
  // 0 not probed yet, 1 every rank can read every other, -1 not here.
  int cma_ = 0;              // exec_mu_
  std::vector<int> pids_;    // by rank, once cma_ == 1
  uint64_t cookie_[2] = {};  // what peers read back to prove they read this process

  struct Pending {
    Args args;
    RecvOp *done;
  };
  std::mutex exec_mu_;
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Pending> queue_;  // queue_mu_
  bool stop_ = false;          // queue_mu_
  std::thread worker_;
};

}  // namespace lf::coll
