// The receive side of a shm endpoint: the consumer of the data ring and
// fifo. It decodes each message (validated in a private copy), places it
// into a posted receive or hands the channel an Incoming, publishes what it
// consumed (the sender's credits), and keeps the unexpected budget: small
// unexpected messages are copied out while the budget allows, messages
// larger than the fifo that do not fit it are parked at their sender
// (Kind::park) and fetched when a receive takes them.
#pragma once

#include <atomic>
#include <memory>
#include <unordered_map>

#include "transport/shm/shm_incoming.hpp"
#include "transport/shm/shm_link.hpp"

namespace lf::shm {

class DeviceLane;
class PeerSegments;

/// A message that matches no receive stays in the ring for a short while
/// when no receive is posted at all (nobody can be waiting for a message
/// behind it): a receive posted meanwhile, the usual case in a stream of
/// windows, takes it with one copy and no allocation, and the sender waits
/// for ring space instead of running ahead into the receiver's heap. When
/// the hold expires the ring is drained as unexpected messages until it runs
/// dry, so a program that sends before it receives only pays the hold once
/// per burst and cannot deadlock.
class Hold {
 public:
  explicit Hold(int hold_us) : hold_us_(hold_us) {}
  /// True while the message at `pos` is held.
  bool hold(const Matcher &m, uint64_t pos) noexcept {
    if (hold_us_ <= 0 || draining_ || m.has_posted()) return false;
    if (pos_ != pos) {
      pos_ = pos;
      checks_ = 0;
      until_ = Clock::now() + std::chrono::microseconds(hold_us_);
      holding_.store(true, std::memory_order_relaxed);
      return true;
    }
    return still_holding();
  }
  /// Held at `pos` and still nothing posted: nothing can match it.
  bool skip(const Matcher &m, uint64_t pos) noexcept { return pos_ == pos && !m.has_posted() && still_holding(); }
  /// A message left the ring: whatever was held has been taken.
  void unhold() noexcept {
    if (pos_ == UINT64_MAX) return;
    pos_ = UINT64_MAX;
    holding_.store(false, std::memory_order_relaxed);
  }
  /// The ring ran dry: the next unmatched message may be held again.
  void burst_over() noexcept { draining_ = false; }
  /// Read by wait_for_activity(): a held message is work, the hold is short.
  bool holding() const noexcept { return holding_.load(std::memory_order_relaxed); }

 private:
  /// The clock is read on every 32nd check only: a receiver posting one
  /// receive after another re-checks the held message each time.
  bool still_holding() noexcept {
    if ((++checks_ & 31) != 0 || Clock::now() < until_) return true;
    unhold();
    draining_ = true;
    return false;
  }
  int hold_us_;
  Clock::time_point until_{};
  uint64_t pos_ = UINT64_MAX;  ///< ring position held (UINT64_MAX: none)
  uint32_t checks_ = 0;
  bool draining_ = false;  ///< a hold expired: drain until the ring is empty
  std::atomic<bool> holding_{false};
};

class Receiver {
 public:
  Receiver(Link &link, const Rings &r, const Tunables &t, std::shared_ptr<ControlTx> ctl, PeerSegments &segments,
           DeviceLane *lane);

  /// Handle up to `max` data-ring messages: how many, or -1 when the
  /// connection broke (link.failed()).
  int drain(Matcher &m, int max) noexcept;
  /// Publish what was consumed and not yet published; wake a producer
  /// blocked on credits.
  void publish_rest() noexcept;
  /// The producer sleeps until credits come back: wake it.
  void wake_blocked_producer() noexcept {
    if (r_.rx_dir->credit_waiter.load(std::memory_order_relaxed)) {
      r_.rx_dir->credit_waiter.store(0, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      ring_bell(r_.tx_dir);
    }
  }
  /// The sender stopped the parked stream at `pos` after `slots` slots.
  bool on_cut(uint64_t pos, uint64_t slots) noexcept;
  /// A message is waiting that progress() can take (not held back by the budget).
  bool has_message() const noexcept { return data_ready() && stalled_at_.load(std::memory_order_relaxed) != rx_pos_; }
  void fail_all(const Error &e) noexcept;

  // Read by wait_for_activity() without the channel's lock: shared counters
  // and atomics only (equal to rx_pos_ at rest), not the members progress()
  // updates.
  bool has_work_unlocked() const noexcept {
    const uint64_t pos = r_.rx_dir->slots_consumed.load(std::memory_order_acquire);
    return (r_.rx_slots[pos & r_.slot_mask].seq.load(std::memory_order_acquire) == static_cast<uint32_t>(pos + 1) &&
            stalled_at_.load(std::memory_order_relaxed) != pos) ||
           hold_.holding();
  }

 private:
  struct Stream {
    bool active = false;
    uint64_t tag = 0, total = 0, received = 0;
    RecvOp *op = nullptr;
    char *dst = nullptr;
    uint64_t cap = 0;
    bool discard = false;
    uint64_t cut_left = 0;  ///< a parked stream: slots of it still to skip
    std::shared_ptr<PipeState> pipe;
  };
  bool data_ready() const noexcept {
    return r_.rx_slots[rx_pos_ & r_.slot_mask].seq.load(std::memory_order_acquire) ==
           static_cast<uint32_t>(rx_pos_ + 1);
  }
  int rx_one(Matcher &m) noexcept;
  int rx_small(Matcher &m, const Decoded &d, const SlotImage &s) noexcept;
  int rx_stream_first(Matcher &m, const Decoded &d, const SlotImage &s) noexcept;
  int rx_zero_copy(Matcher &m, const Decoded &d, const SlotImage &s) noexcept;
  int rx_chunk(uint64_t len) noexcept;
  int rx_resumed(const Decoded &d, const SlotImage &s) noexcept;
  int park(Matcher &m, const Decoded &d) noexcept;
  void consumed(uint64_t fifo_advance) noexcept;
  void publish_consumed() noexcept;
  int stall() noexcept {
    stalled_at_.store(rx_pos_, std::memory_order_relaxed);
    return 0;
  }
  bool queue(Matcher &m, std::unique_ptr<Incoming> in) noexcept;

  Link &link_;
  const Rings r_;  // a copy: one indirection less on every message
  std::shared_ptr<ControlTx> ctl_;
  PeerSegments &segments_;
  DeviceLane *lane_;
  std::shared_ptr<Budget> budget_;
  std::shared_ptr<CmaPeer> cma_peer_;
  std::shared_ptr<ParkLink> park_link_;
  Hold hold_;
  uint64_t rx_pos_ = 0, rx_fifo_pos_ = 0;
  uint64_t published_pos_ = 0, published_fifo_ = 0;
  Stream stream_;
  std::unordered_map<uint64_t, std::shared_ptr<Parked>> parked_;  ///< left at the sender, by ring position
  uint64_t cut_wait_ = UINT64_MAX;                ///< ring position parked, waiting for the sender's cut
  uint64_t cut_slots_ = 0;                        ///< slots of the parked stream at rx_pos_ to skip
  std::atomic<uint64_t> stalled_at_{UINT64_MAX};  ///< data ring position held back by the budget
};

}  // namespace lf::shm
