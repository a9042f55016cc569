// Size-class pools: power-of-two classes of one memory kind, thread-safe,
// capped, with statistics.
//
//   auto pool = lf::Pool::create({.kind = lf::MemoryKind::host_shared});
//   auto buf = (*pool)->acquire(1500);   // a 2 KiB block, size() == 1500
//   buf->reset();                        // back to the pool's free list
//
// - acquire() rounds up to the next class (min_class..max_class); larger
//   requests are served from the kind directly and freed when released.
// - A pool never holds more than cap_bytes (class-sized blocks in use plus
//   cached): acquire() first frees cached blocks of other classes, then fails
//   with LF_ERR_NO_MEMORY.
// - Buffers are lf::PooledBuffer; destroying one returns its block to the
//   free list of its class (or frees it when the list is full, the pool is
//   over its cap, or the pool is gone). A pool may be destroyed while its
//   buffers live on: they free themselves when released.
// - The host_shared pool carves its blocks out of a few large memfd segments
//   (LF_SHM_SEGMENT_SIZE, 64 MiB by default; larger blocks get a segment of
//   their own), so every buffer is (segment_id, offset, length) through
//   shared_ref() and a peer maps each segment only once.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "memory/allocator.hpp"
#include "memory/buffer.hpp"

namespace lf {

/// Sizing policies (the comments of lf_pool_preset_t).
enum class PoolPreset {
  standard = LF_POOL_DEFAULT,                 ///< 256 B..64 MiB classes, 1 GiB cap, nothing preallocated.
  high_throughput = LF_POOL_HIGH_THROUGHPUT,  ///< 4 KiB..256 MiB classes, 4 GiB cap, 4 blocks of each class up to 4 MiB
                                              ///< preallocated and touched.
  low_memory = LF_POOL_LOW_MEMORY,            ///< 64 B..4 MiB classes, 64 MiB cap, at most 4 cached blocks per class.
};

struct PoolOptions {
  MemoryKind kind = MemoryKind::host;
  PoolPreset preset = PoolPreset::standard;
  size_t min_class =
      0;  ///< Power of two; 0 = preset. Raised to 2 MiB for host_hugepage and a page for pinned/NUMA/device kinds.
  size_t max_class = 0;             ///< Power of two; 0 = preset.
  size_t cap_bytes = 0;             ///< 0 = LF_POOL_CAP if set, else the preset.
  size_t max_cached_per_class = 0;  ///< 0 = preset (0 there: bounded by the cap only).
  size_t prealloc_per_class = 0;    ///< 0 = preset.
  size_t prealloc_max_class = 0;    ///< Largest class preallocated; 0 = preset.
  size_t segment_size = 0;          ///< host_shared: 0 = LF_SHM_SEGMENT_SIZE.
  bool strict = false;              ///< Blocks must be of `kind` exactly (creation fails otherwise).
  int numa_node = -1;               ///< As AllocOptions.
  int device = 0;                   ///< As AllocOptions.
};

struct PoolStats {
  uint64_t hits = 0;     ///< Acquires served from a free list.
  uint64_t misses = 0;   ///< Acquires that had to allocate.
  uint64_t returns = 0;  ///< Blocks given back and kept.
  uint64_t drops = 0;    ///< Blocks freed (list full, over cap, trimmed, pool gone, oversize).
  uint64_t in_use_buffers = 0;
  uint64_t in_use_bytes = 0;  ///< Class-sized bytes of the blocks in use.
  uint64_t pooled_bytes = 0;  ///< Bytes cached in free lists.
  uint64_t held_bytes = 0;    ///< What the cap limits: class bytes in use + cached (one atomic read).
  uint64_t cap_bytes = 0;
  uint64_t segments = 0;       ///< host_shared: memfd segments mapped.
  uint64_t segment_bytes = 0;  ///< host_shared: their total size.
  double hit_rate = 0.0;       ///< hits / (hits + misses), 0 when none.
};

namespace detail {
struct PoolCore;
}

class Pool : public std::enable_shared_from_this<Pool> {
 public:
  /// Create a pool; resolves the preset and tunables into options().
  /// Fails with LF_ERR_INVALID_ARG for bad classes/cap and, with `strict`,
  /// LF_ERR_UNAVAILABLE when the kind is not available here.
  static Result<std::shared_ptr<Pool>> create(const PoolOptions &options);
  /// The pool a context shares with its local peers: host_shared, `preset` sizing.
  static Result<std::shared_ptr<Pool>> create_shared(PoolPreset preset = PoolPreset::standard);

  ~Pool();
  Pool(const Pool &) = delete;
  Pool &operator=(const Pool &) = delete;

  /// A buffer of at least `bytes` (size() reports `bytes`). Thread-safe;
  /// a hit takes one mutex and one small allocation.
  Result<BufferPtr> acquire(size_t bytes) noexcept;

  /// Counters, a snapshot.
  PoolStats stats() const noexcept;
  /// The options after presets and tunables were applied.
  const PoolOptions &options() const noexcept;
  MemoryKind kind() const noexcept { return options().kind; }
  /// Block size that serves `bytes` (0 when larger than max_class: unpooled).
  size_t class_size(size_t bytes) const noexcept;
  /// Free every cached block.
  void trim() noexcept;

 private:
  explicit Pool(std::shared_ptr<detail::PoolCore> core) noexcept : core_(std::move(core)) {}
  std::shared_ptr<detail::PoolCore> core_;
};

/// The shared pool of a context (Context::shared_pool): Pool::create_shared()
/// with LF_SHARED_POOL_PRESET sizing. Should the tunables be unusable it logs
/// why and uses the built-in defaults; it throws only std::bad_alloc.
std::shared_ptr<Pool> make_shared_memory_pool();

/// A buffer on loan from a Pool. Its destructor gives the block back.
class PooledBuffer final : public Buffer {
 public:
  PooledBuffer(std::shared_ptr<detail::PoolCore> core, uint32_t size_class, BufferPtr block, size_t bytes);
  ~PooledBuffer() override;
  const SharedRef *shared_ref() const noexcept override { return has_ref_ ? &ref_ : nullptr; }
  const ExportHandle *export_handle() const noexcept override { return block_->export_handle(); }
  /// The block's unit: registrations stay with the slab across loans.
  RegisteredRange registered_range() const noexcept override { return block_->registered_range(); }
  /// The underlying block (class-sized; owned by this buffer while on loan).
  const Buffer &block() const noexcept { return *block_; }
  /// Bytes of the block (>= size()).
  size_t capacity() const noexcept { return block_->size(); }

 private:
  std::shared_ptr<detail::PoolCore> core_;
  uint32_t class_;
  bool has_ref_ = false;
  BufferPtr block_;
  SharedRef ref_;
};

}  // namespace lf
