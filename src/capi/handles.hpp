// Generation-checked, typed handle tables for the C API.
//
// A C handle is (generation << 32 | type << 24 | slot index + 1) dressed as a
// pointer. The type byte differs per table, so a context passed where a
// buffer is expected is refused instead of naming buffer slot 0. Slots are
// never freed, so a stale handle (a request used after lf_wait, a closed
// channel, a finalized context) is looked up safely and rejected because its
// generation no longer matches, instead of touching freed memory.
//
// Each slot has one state word: generation, LIVE, LOCKED (a short spin lock
// for reading or resetting the object while another thread may retire it)
// and CLAIMED (one thread owns the slot for a long operation: a request being
// waited). Retiring takes LOCKED, so a thread that pinned a slot never sees
// its object reset underneath it.
#pragma once

#include <immintrin.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace lf::capi {

/// Lock held for a few instructions: one atomic exchange to take it and a
/// plain store to give it back (a mutex costs a call and a second atomic).
class SpinLock {
 public:
  void lock() noexcept {
    // Test and test-and-set: waiters spin on a shared read, not on writes
    // that bounce the line between cores.
    for (unsigned i = 0;; ++i) {
      if (!held_.load(std::memory_order_relaxed) && !held_.exchange(true, std::memory_order_acquire)) return;
      pause(i);
    }
  }
  void unlock() noexcept { held_.store(false, std::memory_order_release); }
  static void pause(unsigned i) noexcept {
    if (i % 64 == 63)
      std::this_thread::yield();  // the holder may have been preempted
    else
      _mm_pause();
  }

 private:
  std::atomic<bool> held_{false};
};

/// Handle types: one per table, stored in bits 24..31 of a handle.
enum class HandleType : uint8_t {
  context = 1,
  channel = 2,
  request = 3,
  buffer = 4,
  pool = 5,
  kernel = 6,
  listener = 7,
  rpc_server = 8,
  rpc_client = 9,
  rpc_request = 10,
  exec_server = 11,
  exec_client = 12,
  plan = 13,
  job = 14,
  group = 15,
};

/// Why a lookup failed.
enum class Lookup { ok, stale, busy };

template <typename T, HandleType Type>
class HandleTable {
  static constexpr uint64_t kLive = 1, kLocked = 2, kClaimed = 4;
  static constexpr uint32_t kIndexBits = 24;
  static constexpr uint32_t kChunk = 4096;
  static constexpr uint32_t kChunks = ((1u << kIndexBits) - 1) / kChunk;  // index + 1 fits in 24 bits

 public:
  /// Reserve a slot; returns the encoded handle and the slot's object, which
  /// the caller (re)initialises and then publish()es: until then no lookup
  /// (nor for_each) sees it. Returns {0, nullptr} when out of memory.
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
    uint64_t gen = s.word.load(std::memory_order_relaxed) >> 32;
    return {encode(gen, index), &s.obj};
  }

  /// Make a reserved slot's handle live (after its object is filled in).
  void publish(uint64_t handle) noexcept {
    Slot &s = slot(index_of(to_handle<const void *>(handle)));
    s.word.store((handle >> 32) << 32 | kLive, std::memory_order_release);
  }

  /// Give back a reserved slot that was never published.
  void abandon(uint64_t handle) noexcept {
    std::lock_guard g(free_lock_);
    Slot &s = slot(index_of(to_handle<const void *>(handle)));
    s.word.store(((handle >> 32) + 1) << 32, std::memory_order_release);
    try {
      free_.push_back(index_of(to_handle<const void *>(handle)));
    } catch (const std::bad_alloc &) {
    }
  }

  /// The object behind a live handle of this table's type, or nullptr. No
  /// synchronisation with a concurrent retire: for handles whose objects are
  /// only read (contexts, pools) or whose misuse is the caller's (a buffer
  /// used while another thread frees it).
  T *get(const void *handle) const noexcept {
    Slot *s = find(handle);
    if (!s) return nullptr;
    uint64_t w = s->word.load(std::memory_order_acquire);
    return (w & kLive) && (w >> 32) == gen_of(handle) ? &s->obj : nullptr;
  }

  /// Run `f(obj)` with the slot locked (briefly: copy a shared_ptr out).
  /// Returns false for a stale or foreign handle.
  template <typename F>
  bool with_locked(const void *handle, F &&f) noexcept {
    Slot *s = find(handle);
    uint64_t w;
    if (!s || !(w = lock(*s, gen_of(handle)))) return false;
    f(s->obj);
    // Nobody changes a locked slot's word (claims wait for LOCKED to clear):
    // a plain store gives it back, one atomic read-modify-write fewer.
    s->word.store(w, std::memory_order_release);
    return true;
  }

  /// Claim a live handle for a long operation (one thread at a time); the
  /// claimer later calls unclaim() or retire().
  Lookup claim(const void *handle, T *&obj) noexcept {
    Slot *s = find(handle);
    if (!s) return Lookup::stale;
    uint64_t want = gen_of(handle);
    uint64_t w = s->word.load(std::memory_order_relaxed);
    for (unsigned i = 0;; ++i) {
      if (!(w & kLive) || (w >> 32) != want) return Lookup::stale;
      if (w & kClaimed) return Lookup::busy;
      // Never while LOCKED: a locked slot's word is its holder's to restore.
      if (!(w & kLocked) &&
          s->word.compare_exchange_weak(w, w | kClaimed, std::memory_order_acquire, std::memory_order_relaxed))
        break;
      if (w & kLocked) {
        SpinLock::pause(i);
        w = s->word.load(std::memory_order_relaxed);
      }
    }
    obj = &s->obj;
    return Lookup::ok;
  }
  /// Give a claim back; only for the generation that was claimed, so a stale
  /// handle never clears another waiter's claim.
  void unclaim(const void *handle) noexcept {
    Slot *s = find(handle);
    if (!s) return;
    uint64_t w = s->word.load(std::memory_order_relaxed);
    for (unsigned i = 0; (w >> 32) == gen_of(handle) && (w & kClaimed); ++i) {
      if (!(w & kLocked) &&
          s->word.compare_exchange_weak(w, w & ~kClaimed, std::memory_order_release, std::memory_order_relaxed))
        return;
      if (w & kLocked) {
        SpinLock::pause(i);
        w = s->word.load(std::memory_order_relaxed);
      }
    }
  }

  /// Retire a live handle: `reset(obj)` runs with the slot locked, then the
  /// generation moves on and the slot is free. Returns false (and runs
  /// nothing) for a stale or foreign handle, so of two racing retires one
  /// wins. A `reset` that returns bool keeps the handle live by returning
  /// false (retire then returns false too).
  template <typename F>
  bool retire(const void *handle, F &&reset) noexcept {
    Slot *s = find(handle);
    uint64_t w;
    if (!s || !(w = lock(*s, gen_of(handle)))) return false;
    if constexpr (std::is_same_v<decltype(reset(s->obj)), bool>) {
      if (!reset(s->obj)) {
        s->word.store(w, std::memory_order_release);
        return false;
      }
    } else {
      reset(s->obj);
    }
    uint32_t index = index_of(handle);
    std::lock_guard g(free_lock_);
    s->word.store((gen_of(handle) + 1) << 32, std::memory_order_release);
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
      uint64_t w = s.word.load(std::memory_order_acquire);
      if (w & kLive) f(reinterpret_cast<void *>(encode(w >> 32, i)), s.obj);
    }
  }

  template <typename H>
  static H to_handle(uint64_t h) noexcept {
    return reinterpret_cast<H>(static_cast<uintptr_t>(h));
  }

 private:
  struct Slot {
    std::atomic<uint64_t> word{uint64_t(1) << 32};  // generation 1, not live
    T obj;
  };
  static uint64_t encode(uint64_t gen, uint32_t index) noexcept {
    return gen << 32 | uint64_t(static_cast<uint8_t>(Type)) << kIndexBits | (index + 1u);
  }
  static uint64_t gen_of(const void *h) noexcept { return reinterpret_cast<uintptr_t>(h) >> 32; }
  static uint32_t index_of(const void *h) noexcept {
    return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(h) & ((1u << kIndexBits) - 1)) - 1;
  }
  Slot *find(const void *handle) const noexcept {
    auto h = reinterpret_cast<uintptr_t>(handle);
    if (((h >> kIndexBits) & 0xff) != static_cast<uint8_t>(Type)) return nullptr;
    if ((h & ((1u << kIndexBits) - 1)) == 0) return nullptr;
    uint32_t index = index_of(handle);
    if (index / kChunk >= kChunks) return nullptr;
    Slot *chunk = chunks_[index / kChunk].load(std::memory_order_acquire);
    return chunk ? &chunk[index % kChunk] : nullptr;
  }
  // Take LOCKED on a live slot of generation `gen`; returns the word as it
  // was (never 0: LIVE is set), to be stored back to unlock; 0 once the
  // slot is not live in that generation.
  static uint64_t lock(Slot &s, uint64_t gen) noexcept {
    uint64_t w = s.word.load(std::memory_order_relaxed);
    for (unsigned i = 0;; ++i) {
      if (!(w & kLive) || (w >> 32) != gen) return 0;
      if (!(w & kLocked) &&
          s.word.compare_exchange_weak(w, w | kLocked, std::memory_order_acquire, std::memory_order_relaxed))
        return w;
      SpinLock::pause(i);
      w = s.word.load(std::memory_order_relaxed);
    }
  }
  Slot &slot(uint32_t index) const noexcept {
    return chunks_[index / kChunk].load(std::memory_order_acquire)[index % kChunk];
  }

  SpinLock free_lock_;
  std::array<std::atomic<Slot *>, kChunks> chunks_{};
  std::vector<uint32_t> free_;
  uint32_t next_ = 0;
};

}  // namespace lf::capi
