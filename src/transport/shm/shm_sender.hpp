// The send side of a shm endpoint: the producer of the data ring and fifo.
// It picks a protocol per message (inline, eager, pipelined, CMA, zero
// copy; device descriptors through the DeviceLane), waits for credits when
// the consumer is behind, keeps the sends that wait for an ack or a release
// (InflightTable), and parks and resumes the streams the receiver asks it to
// (Kind::park / Kind::resume).
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "transport/shm/shm_control.hpp"
#include "transport/shm/shm_link.hpp"

namespace lf::shm {

class DeviceLane;

/// Sends waiting for the peer: a CMA read (completes on the ack) or a
/// zero-copy buffer (returns to its pool on the release). Cookie =
/// generation << 32 | index, so a stale or forged cookie is recognised.
class InflightTable {
 public:
  InflightTable() {
    entries_.reserve(256);
    free_.reserve(256);
  }
  /// The new entry's cookie, or UINT64_MAX when out of memory.
  uint64_t add(SendOp *op, BufferPtr &buf) noexcept;
  /// The ack or release of `d.cookie`: completes what it names. nullptr, or
  /// what is wrong with the message.
  const char *complete(const Decoded &d, int peer_rank) noexcept;
  /// Fail every send waiting; zero-copy blocks still lent stay out of
  /// their pools until process `peer_pid` exits (memory/peer_hold.hpp).
  void fail_all(const Error &e, pid_t peer_pid) noexcept;

 private:
  struct Entry {
    uint32_t gen = 0;
    bool live = false;
    SendOp *op = nullptr;  ///< CMA: completes on the ack
    BufferPtr buf;         ///< zero copy: destroyed (back to its pool) on the release
  };
  void retire(uint32_t idx) noexcept;
  std::vector<Entry> entries_;
  std::vector<uint32_t> free_;
};

class Sender {
 public:
  Sender(Link &link, const Rings &r, const Tunables &t, std::shared_ptr<ControlTx> ctl, DeviceLane *lane);

  /// Start `op` now or queue it behind earlier ones.
  void send(SendOp &op) noexcept;
  /// Move queued sends on as far as credits allow.
  void pump() noexcept;
  bool busy() const noexcept { return !txq_.empty() || !resumes_.empty(); }
  /// Ring the peer's bell if something was published since the last call.
  void wake_peer() noexcept;
  /// A control message for the send side (ack, release, park, resume):
  /// nullptr, or what is wrong with it.
  const char *on_control(const Decoded &d) noexcept;
  /// Fail every send held (queued, in flight, parked).
  void fail_all(const Error &e) noexcept;

  // Read by wait_for_activity() without the channel's lock: atomics only.
  /// Sends are queued for lack of credits.
  bool blocked() const noexcept { return queued_.load(std::memory_order_relaxed) != 0; }
  /// The consumer freed something since a credit check last failed.
  bool credits_changed() const noexcept {
    return r_.tx_dir->slots_consumed.load(std::memory_order_seq_cst) != seen_slots_.load(std::memory_order_relaxed) ||
           r_.tx_dir->fifo_consumed.load(std::memory_order_seq_cst) != seen_fifo_.load(std::memory_order_relaxed);
  }

  // For the device lane, which writes descriptors into the same ring.
  bool slot_credit() noexcept {
    if (tx_head_ < tx_slot_limit_) return true;
    const uint64_t consumed = r_.tx_dir->slots_consumed.load(std::memory_order_acquire);
    tx_slot_limit_ = consumed + r_.slot_count;
    if (tx_head_ < tx_slot_limit_) return true;
    seen_slots_.store(consumed, std::memory_order_relaxed);
    return false;
  }
  /// Waiting for the consumer to pass `consumed` (slots) counts as blocked on credits.
  void note_blocked_at(uint64_t consumed) noexcept { seen_slots_.store(consumed, std::memory_order_relaxed); }
  Slot &next_slot() noexcept { return r_.tx_slots[tx_head_ & r_.slot_mask]; }
  uint64_t head() const noexcept { return tx_head_; }
  uint64_t peer_consumed() const noexcept { return r_.tx_dir->slots_consumed.load(std::memory_order_acquire); }
  void publish(Slot &s) noexcept {
    s.seq.store(static_cast<uint32_t>(tx_head_ + 1), std::memory_order_release);
    ++tx_head_;
    wake_due_ = true;
  }
  uint64_t add_inflight(SendOp *op, BufferPtr &buf) noexcept { return inflight_.add(op, buf); }

 private:
  bool fifo_credit(uint64_t advance) noexcept;
  bool stage_device_buffer(SendOp &op) noexcept;
  bool start(SendOp &op) noexcept;
  bool send_inline(SendOp &op) noexcept;
  bool send_eager(SendOp &op) noexcept;
  bool send_stream(SendOp &op, uint64_t resume = UINT64_MAX) noexcept;
  bool send_cma(SendOp &op) noexcept;
  bool send_zero_copy(SendOp &op, const SharedRef &ref) noexcept;
  bool park_stream(uint64_t pos) noexcept;
  bool resume_stream(uint64_t pos) noexcept;
  void update_queued() noexcept { queued_.store(txq_.size() + resumes_.size(), std::memory_order_relaxed); }

  Link &link_;
  const Rings r_;  // a copy: one indirection less on every message
  std::shared_ptr<ControlTx> ctl_;
  DeviceLane *lane_;
  uint64_t eager_limit_, chunk_, cma_threshold_;
  uint64_t tx_head_ = 0, tx_slot_limit_ = 0, tx_fifo_head_ = 0, tx_fifo_limit_ = 0;
  uint64_t tx_stream_off_ = 0;  ///< bytes of the current stream published
  uint64_t tx_stream_pos_ = 0;  ///< ring position of the current stream's first slot
  bool tx_resuming_ = false;    ///< the current stream is a parked message
  bool wake_due_ = false;
  std::deque<SendOp *> txq_;
  struct Resume {
    SendOp *op;
    uint64_t pos;
  };
  std::unordered_map<uint64_t, SendOp *> parked_;  ///< parked by the receiver, by ring position
  std::deque<Resume> resumes_;                     ///< asked for again, streamed before new sends
  InflightTable inflight_;
  std::unordered_set<uint64_t> sent_segments_;
  std::atomic<size_t> queued_{0};
  std::atomic<uint64_t> seen_slots_{0}, seen_fifo_{0};
};

}  // namespace lf::shm
