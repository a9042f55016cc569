// The unexpected-message budget of one shm endpoint (LF_SHM_UNEXPECTED_MAX)
// and the recycled heap blocks that unexpected copies live in. Incoming
// objects may outlive the endpoint (the channel owns them), hence shared.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

namespace lf::shm {

/// Heap blocks for unexpected copies, recycled: blocks of tens of KiB that
/// come and go with every unexpected message are otherwise handed back to
/// the kernel by malloc and page-fault anew each time (measured: most of the
/// receiver's time in a windowed 8 KiB stream).
class BlockCache {
 public:
  static constexpr int kMinShift = 6, kMaxShift = 20;  // classes of 64 B .. 1 MiB
  explicit BlockCache(size_t limit) : limit_(limit) {}
  BlockCache(const BlockCache &) = delete;
  BlockCache &operator=(const BlockCache &) = delete;
  ~BlockCache() {
    for (auto &l : free_)
      for (char *p : l) ::operator delete(p);
  }
  /// A block of at least n bytes; throws std::bad_alloc.
  char *get(size_t n) {
    const int c = shift(n);
    if (c <= kMaxShift) {
      std::lock_guard g(mu_);
      auto &l = free_[c - kMinShift];
      if (!l.empty()) {
        char *p = l.back();
        l.pop_back();
        cached_ -= size_t{1} << c;
        return p;
      }
    }
    return static_cast<char *>(::operator new(c <= kMaxShift ? size_t{1} << c : n));
  }
  void put(char *p, size_t n) noexcept {
    if (!p) return;
    const int c = shift(n);
    if (c <= kMaxShift) {
      std::lock_guard g(mu_);
      if (cached_ + (size_t{1} << c) <= limit_) {
        try {
          free_[c - kMinShift].push_back(p);
          cached_ += size_t{1} << c;
          return;
        } catch (const std::bad_alloc &) {
        }
      }
    }
    ::operator delete(p);
  }

 private:
  static int shift(size_t n) noexcept { return n <= 64 ? kMinShift : static_cast<int>(std::bit_width(n - 1)); }
  std::mutex mu_;
  std::vector<char *> free_[kMaxShift - kMinShift + 1];
  size_t cached_ = 0, limit_;
};

/// What a queued message costs beyond its payload (object, allocation).
inline constexpr int64_t kIncomingOverhead = 64;

/// Bytes held by unexpected messages of one endpoint, and their heap blocks.
struct Budget {
  explicit Budget(int64_t m) : max(m), blocks(std::min<size_t>(static_cast<size_t>(m), 8u << 20)) {}
  std::atomic<int64_t> used{0};
  int64_t max = 0;
  BlockCache blocks;
  void charge(int64_t n) noexcept { used.fetch_add(n, std::memory_order_relaxed); }
  void uncharge(int64_t n) noexcept { used.fetch_sub(n, std::memory_order_relaxed); }
  /// Whether `bytes` more would pass the budget. One message is always
  /// accepted into an empty budget, so that a message larger than the whole
  /// budget does not block the ring for good; a larger message than the
  /// fifo is parked instead (over_strictly), so that is at most one fifo's
  /// worth.
  bool over(uint64_t bytes) const noexcept {
    const int64_t u = used.load(std::memory_order_relaxed);
    return u > 0 && u + static_cast<int64_t>(bytes) + kIncomingOverhead > max;
  }
  /// Whether `bytes` more would pass the budget, even an empty one.
  bool over_strictly(uint64_t bytes) const noexcept {
    return used.load(std::memory_order_relaxed) + static_cast<int64_t>(bytes) + kIncomingOverhead > max;
  }
};

}  // namespace lf::shm
