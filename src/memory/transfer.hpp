// Host <-> CUDA device transfers at the speed of the link.
//
//   auto tm = lf::cuda::TransferManager::create({.device = 0});
//   if (!tm) ...tm.error().message...   // e.g. CUDA error 35 without a driver
//   (*tm)->h2d(dev_ptr, host_ptr, n);   // blocking, any host memory
//
// Three paths, chosen per call:
//  - pinned host memory (cudaHostAlloc/cudaHostRegister): one cudaMemcpyAsync,
//    the DMA engine reads the host pages directly;
//  - pageable host memory: double-buffered staging through two pinned chunks
//    with one stream and one event each, so that the CPU copy of chunk i+1
//    into one staging buffer overlaps the DMA of chunk i from the other;
//  - small transfers (add_h2d / add_d2h, then flush): packed into one pinned
//    batch buffer and moved with a single copy of >= batch_bytes over the
//    link; the device side is scattered/gathered with device-to-device copies
//    (which never cross the link), and pieces whose device addresses are
//    contiguous are merged into one copy.
//
// CUDA is reached only through lf::cuda::Runtime (dlopen); without a driver
// create() fails with CUDA's own error text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/status.hpp"
#include "lavaflow_features.h"

namespace lf::cuda {

struct TransferOptions {
  int device = 0;
  size_t chunk = size_t{4} << 20;         ///< Size of each of the two pinned staging buffers.
  size_t batch_bytes = size_t{1} << 20;   ///< Capacity of a batch; a flush moves at most this per copy.
  size_t small_limit = size_t{64} << 10;  ///< add_*() pieces larger than this go straight to h2d/d2h.
};

struct TransferStats {
  uint64_t direct_copies = 0;   ///< cudaMemcpyAsync calls from/to pinned host memory.
  uint64_t staged_chunks = 0;   ///< Chunks moved through the staging buffers.
  uint64_t batches = 0;         ///< Batch flushes (one link copy each).
  uint64_t batched_pieces = 0;  ///< Pieces that travelled in a batch.
  uint64_t device_copies = 0;   ///< Device-to-device scatter/gather copies of batches.
  uint64_t bytes_h2d = 0, bytes_d2h = 0;
};

/// One small transfer of a batch. `device` and `host` are addresses; the
/// packed position of the piece in the batch buffer is assigned by add order.
struct Piece {
  uint64_t device = 0;
  uint64_t host = 0;
  size_t bytes = 0;
};

/// A maximal group of consecutive pieces whose device ranges are contiguous:
/// one device-side copy moves the whole group between the batch's device
/// scratch (at `packed_offset`) and `device`.
struct Run {
  uint64_t device = 0;
  size_t packed_offset = 0;
  size_t bytes = 0;
  size_t first = 0, count = 0;  ///< Pieces [first, first + count).
};

/// Group `pieces` (packed back to back in add order) into runs. Pure; the
/// transfer manager's batching plan, tested without a GPU.
std::vector<Run> coalesce(const std::vector<Piece> &pieces);

/// Pipeline schedule of a staged copy of `n` bytes in chunks of `chunk`:
/// chunk i uses staging buffer i % 2. Returned as (offset, length) pairs.
std::vector<std::pair<size_t, size_t>> chunk_plan(size_t n, size_t chunk);

class TransferManager {
 public:
  /// Pinned staging and batch buffers, two streams and two events on
  /// `o.device`. LF_ERR_UNAVAILABLE with CUDA's text when CUDA cannot run.
  static Result<std::unique_ptr<TransferManager>> create(const TransferOptions &o = {}) noexcept;
  ~TransferManager();
  TransferManager(const TransferManager &) = delete;
  TransferManager &operator=(const TransferManager &) = delete;

  /// Blocking copies between host memory (pinned or pageable) and device
  /// memory of this manager's device. Thread-safe (serialised).
  Status h2d(void *dst_device, const void *src_host, size_t n) noexcept;
  Status d2h(void *dst_host, const void *src_device, size_t n) noexcept;

  /// Queue a small copy. add_h2d copies `src_host` into the batch at once (the
  /// caller may reuse it on return); add_d2h writes `dst_host` at flush().
  /// A piece that does not fit flushes the batch first; one above
  /// small_limit is done at once with h2d/d2h (after a flush, keeping order).
  Status add_h2d(void *dst_device, const void *src_host, size_t n) noexcept;
  Status add_d2h(void *dst_host, const void *src_device, size_t n) noexcept;
  /// Move everything queued; returns when it is complete.
  Status flush() noexcept;

  /// True when `p` is host memory CUDA has page-locked (DMA-ready).
  bool is_pinned(const void *p) const noexcept;
  TransferStats stats() const noexcept;
  const TransferOptions &options() const noexcept { return opt_; }

 private:
  TransferManager() = default;
#if LAVAFLOW_HAVE_CUDA
  Status staged_h2d(char *dst, const char *src, size_t n);
  Status staged_d2h(char *dst, const char *src, size_t n);
  Status direct(void *dst, const void *src, size_t n, bool to_device);
  Status flush_locked();
  Status flush_h2d();
  Status flush_d2h();
  void drain() noexcept;

  void *stage_[2] = {nullptr, nullptr};
  void *stream_[2] = {nullptr, nullptr};  // cudaStream_t
  void *event_[2] = {nullptr, nullptr};   // cudaEvent_t
  void *batch_host_ = nullptr;            // pinned, batch_bytes
  void *batch_device_ = nullptr;          // device scratch, batch_bytes
#endif
  TransferOptions opt_;
  TransferStats stats_;
  std::vector<Piece> h2d_pieces_, d2h_pieces_;
  size_t h2d_fill_ = 0, d2h_fill_ = 0;
  mutable std::mutex mu_;
};

}  // namespace lf::cuda
