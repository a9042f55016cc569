// The bounded ring of an ingest and the buffers it hands out.
//
// Every chunk of an ingest holds one place in its RingState from the moment
// its read is issued until the last owner lets it go: the consumer's
// lf_free, the channel once a send completes, or the peer's release of a
// zero-copy view. Reads are issued only while a place is free, so the chunks
// in memory never exceed the ring, however slowly they are consumed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "memory/buffer.hpp"

namespace lf::ingest {

using Clock = std::chrono::steady_clock;

class RingState {
 public:
  explicit RingState(int limit) noexcept : limit_(limit) {}

  /// Take a place if one is free.
  bool try_reserve() noexcept {
    std::lock_guard g(mu_);
    return reserve_locked();
  }
  bool reserve_locked() noexcept {
    if (held_ >= limit_) return false;
    if (++held_ > high_water_) high_water_ = held_;
    return true;
  }
  /// Give a place back (any thread).
  void release() noexcept {
    {
      std::lock_guard g(mu_);
      --held_;
    }
    cv_.notify_all();
  }
  /// Wait until a place is free, `stop` becomes true or `deadline` passes;
  /// returns whether a place is free.
  template <typename Stop>
  bool wait_room(Clock::time_point deadline, Stop &&stop) {
    std::unique_lock lk(mu_);
    // A deadline already past is a test: wait_until would still enter the
    // kernel (a futex wait that may give the CPU away) before timing out.
    if (held_ < limit_ || stop() || deadline <= Clock::now()) return held_ < limit_;
    cv_.wait_until(lk, deadline, [&] { return held_ < limit_ || stop(); });
    return held_ < limit_;
  }
  /// Wake every waiter (cancel).
  void wake() noexcept {
    { std::lock_guard g(mu_); }
    cv_.notify_all();
  }
  int held() const noexcept {
    std::lock_guard g(mu_);
    return held_;
  }
  int high_water() const noexcept {
    std::lock_guard g(mu_);
    return high_water_;
  }
  int limit() const noexcept { return limit_; }
  std::mutex &mutex() noexcept { return mu_; }
  std::condition_variable &cv() noexcept { return cv_; }
  int held_locked() const noexcept { return held_; }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  const int limit_;
  int held_ = 0;
  int high_water_ = 0;
};

/// One place in the ring; released when destroyed.
class RingPlace {
 public:
  RingPlace() = default;
  explicit RingPlace(std::shared_ptr<RingState> ring) noexcept : ring_(std::move(ring)) {}
  RingPlace(RingPlace &&o) noexcept = default;
  RingPlace &operator=(RingPlace &&o) noexcept {
    reset();
    ring_ = std::move(o.ring_);
    return *this;
  }
  ~RingPlace() { reset(); }
  void reset() noexcept {
    if (ring_) ring_->release();
    ring_.reset();
  }

 private:
  std::shared_ptr<RingState> ring_;
};

/// A chunk as the consumer sees it: the pool block it was read into (or the
/// device block it was staged to), sized to the bytes read, presenting the
/// block's kind, reason and sharing handles, and holding its ring place.
class Chunk final : public Buffer {
 public:
  Chunk(BufferPtr block, size_t bytes, RingPlace place) : block_(std::move(block)), place_(std::move(place)) {
    describe_as(*block_);
    set_size(bytes);
  }
  ~Chunk() override {
    block_.reset();  // back to the pool first, then the place frees
    place_.reset();
  }
  const SharedRef *shared_ref() const noexcept override { return block_->shared_ref(); }
  const ExportHandle *export_handle() const noexcept override { return block_->export_handle(); }

 private:
  BufferPtr block_;
  RingPlace place_;
};

}  // namespace lf::ingest
