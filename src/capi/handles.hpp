// Generation-checked handle tables for the C API.
//
// A C handle is (generation << 32 | slot index + 1) dressed as a pointer.
// Slots are never freed, so a stale handle (a request used after lf_wait, a
// closed channel, a finalized context) is looked up safely and rejected
// because its generation no longer matches, instead of touching freed memory.
#pragma once

#include <immintrin.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lf::capi {

/// The free list's lock. It is held for a push or a pop, so spinning beats a
/// mutex: one atomic exchange to take it and a plain store to give it back
/// (a mutex costs a call and a second atomic), paid by every request.
class SpinLock {
 public:
  void lock() noexcept {
    for (unsigned i = 0; held_.exchange(true, std::memory_order_acquire); ++i) {
      if (i % 64 == 63)
        std::this_thread::yield();  // the holder may have been preempted
      else
        _mm_pause();
    }
  }
  void unlock() noexcept { held_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> held_{false};
};

template <typename T>
class HandleTable {
 public:
  /// Take a slot; returns the encoded handle and the slot's object, which the
  /// caller (re)initialises. Returns {0, nullptr} when out of memory.
  std::pair<uint64_t, T *> acquire() noexcept {
    std::lock_guard g(free_lock_);
    uint32_t index;
    try {
      if (free_.empty()) {
        index = next_;
        size_t chunk = index / kChunk;
        if (chunk >= kChunks) return {0, nullptr};
        if (!chunks_[chunk].load(std::memory_order_relaxed))
          chunks_[chunk].store(new Slot[kChunk], std::memory_order_release);
        ++next_;
      } else {
        index = free_.back();
        free_.pop_back();
      }
    } catch (const std::bad_alloc &) {
      return {0, nullptr};
    }
    Slot &s = slot(index);
    s.live.store(true, std::memory_order_release);
    uint64_t h = (static_cast<uint64_t>(s.gen.load(std::memory_order_relaxed)) << 32) | (index + 1u);
    return {h, &s.obj};
  }

  /// The object behind a live handle, or nullptr for stale/garbage handles.
  T *get(const void *handle) const noexcept {
    auto h = reinterpret_cast<uintptr_t>(handle);
    uint32_t index = static_cast<uint32_t>(h & 0xffffffffu);
    if (index == 0) return nullptr;
    --index;
    if (index / kChunk >= kChunks) return nullptr;
    Slot *chunk = chunks_[index / kChunk].load(std::memory_order_acquire);
    if (!chunk) return nullptr;
    Slot &s = chunk[index % kChunk];
    if (!s.live.load(std::memory_order_acquire) || s.gen.load(std::memory_order_relaxed) != (h >> 32)) return nullptr;
    return &s.obj;
  }

  /// Retire a live handle; its object is reset by the caller before this.
  bool release(const void *handle) noexcept {
    if (!get(handle)) return false;
    auto h = reinterpret_cast<uintptr_t>(handle);
    uint32_t index = static_cast<uint32_t>(h & 0xffffffffu) - 1;
    std::lock_guard g(free_lock_);
    Slot &s = slot(index);
    if (!s.live.load(std::memory_order_relaxed)) return false;
    s.live.store(false, std::memory_order_release);
    // Writers are serialised by the lock: no atomic read-modify-write needed.
    s.gen.store(s.gen.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    try {
      free_.push_back(index);
    } catch (const std::bad_alloc &) {
      // The slot is merely not reused.
    }
    return true;
  }

  /// Every live object (slow; for finalize).
  template <typename F>
  void for_each(F &&f) {
    std::lock_guard g(free_lock_);
    for (uint32_t i = 0; i < next_; ++i) {
      Slot &s = slot(i);
      if (s.live.load(std::memory_order_relaxed))
        f(reinterpret_cast<void *>((static_cast<uint64_t>(s.gen.load()) << 32) | (i + 1u)), s.obj);
    }
  }

  template <typename H>
  static H to_handle(uint64_t h) noexcept {
    return reinterpret_cast<H>(static_cast<uintptr_t>(h));
  }

 private:
  struct Slot {
    std::atomic<uint32_t> gen{1};
    std::atomic<bool> live{false};
    T obj;
  };
  static constexpr uint32_t kChunk = 4096;
  static constexpr uint32_t kChunks = 4096;
  Slot &slot(uint32_t index) const noexcept {
    return chunks_[index / kChunk].load(std::memory_order_acquire)[index % kChunk];
  }
  SpinLock free_lock_;
  std::array<std::atomic<Slot *>, kChunks> chunks_{};
  std::vector<uint32_t> free_;
  uint32_t next_ = 0;
};

}  // namespace lf::capi
