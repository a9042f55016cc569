// Producer side of a connection's control ring: acks of CMA reads, releases
// of zero-copy views, and the park/cut/resume messages of large unexpected
// messages. Shared with received views and queued messages, which may be
// freed on any thread and after the endpoint is gone, hence the mutex and
// the `open` flag. The consumer side is ShmEndpoint::drain_control.
#pragma once

#include <atomic>
#include <mutex>
#include <vector>

#include "transport/gpu/gpu_ipc.hpp"
#include "transport/shm/shm_link.hpp"

namespace lf::shm {

class ControlTx final : public gpu_ipc::ReleaseSink {
 public:
  ControlTx(Slot *ring, uint32_t count, DirControl *peer_dir)
      : ring_(ring), mask_(count - 1), count_(count), dir_(peer_dir) {}

  /// A received device view was freed (gpu_ipc::View).
  void release(uint64_t cookie) noexcept override { push(Kind::release, cookie, 0); }

  /// Send a control message now, or queue it until the ring has room.
  /// `word` is an ack's status or a cut's slot count.
  void push(Kind k, uint64_t cookie, int64_t word) noexcept;

  /// Move queued control messages into the ring (progress calls it).
  void flush() noexcept;

  bool has_pending() const noexcept { return has_pending_.load(std::memory_order_relaxed); }
  bool open() noexcept {
    std::lock_guard g(mu_);
    return open_;
  }
  void close() noexcept {
    std::lock_guard g(mu_);
    open_ = false;
    pending_.clear();
    has_pending_.store(false, std::memory_order_relaxed);
  }

 private:
  struct Pending {
    Kind kind;
    uint64_t cookie;
    int64_t word;
  };
  bool try_push_locked(Kind k, uint64_t cookie, int64_t word) noexcept;
  void wake_locked() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ring_bell(dir_);
  }

  std::mutex mu_;
  bool open_ = true;
  Slot *ring_;
  uint32_t mask_, count_;
  DirControl *dir_;
  uint64_t head_ = 0, limit_ = 0;
  std::vector<Pending> pending_;
  std::atomic<bool> has_pending_{false};
};

}  // namespace lf::shm
