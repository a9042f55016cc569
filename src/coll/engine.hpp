// The collectives of one group of a context (the world is the group of every
// rank): channels of its own to every other member, the sequence number and
// argument signature every message carries, waiting with dead-peer
// detection, and the helper thread that runs non-blocking collectives in
// call order. Groups share nothing, so collectives of different groups run
// concurrently and never see each other's messages.
//
// Threading: run() and start() come from the application (one thread at a
// time per group, as the C API documents); the helper thread executes queued
// collectives. exec_mu_ makes one collective of the group run at a time, in
// call order.
#pragma once

#include <lavaflow/lavaflow.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "channel/channel.hpp"
#include "channel/context.hpp"
#include "coll/wire.hpp"

namespace lf::coll {

/// Allreduce algorithms (LF_COLL_ALGO).
enum class Algo { automatic, ring, recursive_doubling, cma, hierarchical };

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
  /// Open the collective channels to every other member of `members` (world
  /// ranks in group order; this rank among them): a collective call over
  /// the members. With `check_members`, the members then exchange their
  /// lists (Kind::group), so that members that disagree fail here.
  static Result<std::shared_ptr<Engine>> create(Context &ctx, std::vector<int> members, bool check_members);
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  /// This rank's rank in the group, and the group's size.
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  /// The world rank of group rank `r`.
  int world_rank(int r) const noexcept { return members_[static_cast<size_t>(r)]; }

  /// Run a collective on the calling thread, after the non-blocking ones
  /// started before it.
  Status run(const Args &a);
  /// Queue a collective for the helper thread; `done` is completed (its
  /// status set last, with release) when it finishes.
  Status start(const Args &a, RecvOp *done);
  /// The channel a request for a non-blocking collective waits on: lf_wait
  /// drives it while the helper thread completes the request.
  std::shared_ptr<Channel> anchor() const noexcept { return anchor_; }

  /// Whether a collective of this group failed (every later one fails too).
  bool broken() const noexcept { return broken_.load(std::memory_order_acquire); }

  /// Stop the helper thread and close the channels (pending collectives
  /// fail with LF_ERR_CLOSED).
  void shutdown() noexcept;

 private:
  friend class Run;
  Engine(Context &ctx, std::vector<int> members, int rank)
      : ctx_(ctx),
        members_(std::move(members)),
        rank_(rank),
        size_(static_cast<int>(members_.size())),
        group_(wire::group_id(members_.data(), members_.size())) {}
  Status execute(const Args &a);  // exec_mu_ held
  void drain_locked();            // exec_mu_ held
  /// Remember `e` and close every collective channel, so that peers waiting
  /// on this rank fail instead of hanging.
  void poison(const Error &e) noexcept;
  void *scratch(size_t bytes);  // exec_mu_ held; valid until the next call

  Context &ctx_;
  const std::vector<int> members_;               // world ranks, by group rank
  const int rank_, size_;                        // in the group
  const uint64_t group_;                         // wire::group_id of members_
  std::vector<std::shared_ptr<Channel>> peers_;  // by group rank; null for this rank
  std::shared_ptr<Channel> anchor_;
  Algo algo_ = Algo::automatic;
  int64_t spin_ = 0;
  uint32_t seq_ = 0;                 // exec_mu_
  std::optional<Error> failed_;      // exec_mu_
  std::atomic<bool> broken_{false};  // failed_ is set
  std::unique_ptr<std::byte[]> scratch_;
  size_t scratch_bytes_ = 0;
  bool logged_[8][5] = {};  // exec_mu_: choices already logged at info
  // Per peer, receives of "whatever comes next" posted by a wait that took
  // long (Run::watch), oldest first; the next receive from that peer takes
  // the oldest. exec_mu_.
  std::vector<std::deque<std::unique_ptr<RecvOp>>> watch_;
  // Single-copy reads of the peers' buffers (process_vm_readv) on one host:
  // 0 not probed yet, 1 every rank can read every other, -1 not here.
  int cma_ = 0;              // exec_mu_
  std::vector<int> pids_;    // by group rank, once cma_ == 1
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
