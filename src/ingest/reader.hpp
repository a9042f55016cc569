// How an ingest reads: one interface, two engines (io_uring, and a pread
// thread where io_uring is unavailable). Both issue reads in file order into
// pool blocks, each holding a ring place, and hand back completed reads in
// file order.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "ingest/chunk.hpp"
#include "ingest/file.hpp"
#include "memory/pool.hpp"

namespace lf::ingest {

/// One chunk's read.
struct Read {
  BufferPtr block;  ///< Pool block the bytes land in.
  RingPlace place;  ///< Its place in the ring.
  uint64_t offset = 0;
  size_t want = 0;  ///< Bytes of the range this chunk covers.
  size_t got = 0;   ///< Bytes read so far.
  bool done = false;
  bool eof = false;  ///< The file ended before `want` (it shrank meanwhile).
  bool failed = false;
  Error error;
  int pending = 0;             ///< Submissions in flight (io_uring).
  bool buffered_only = false;  ///< O_DIRECT refused this chunk's piece: the rest goes through the page cache.
};

/// Counters of one ingest.
struct Counters {
  std::atomic<uint64_t> reads{0};            ///< Read submissions (pieces included).
  std::atomic<uint64_t> fixed_reads{0};      ///< Of them, READ_FIXED.
  std::atomic<uint64_t> resubmits{0};        ///< Short reads, EINTR/EAGAIN and pieces past the first.
  std::atomic<uint64_t> buffered_pieces{0};  ///< Pieces read without O_DIRECT on an O_DIRECT ingest.
};

/// What both engines share: the file, the pool, the ring and the cursor.
struct Plan {
  File *file = nullptr;
  std::shared_ptr<Pool> pool;
  std::shared_ptr<RingState> ring;
  size_t chunk = 0;  ///< Bytes per chunk.
  size_t block = 0;  ///< Bytes acquired per chunk (chunk rounded up for O_DIRECT).
  int queue_depth = 1;
  size_t max_io = size_t(1) << 30;
  Counters *counters = nullptr;
};

class Reader {
 public:
  explicit Reader(Plan plan) noexcept : plan_(std::move(plan)), cursor_(plan_.file->begin()) {}
  virtual ~Reader() = default;
  Reader(const Reader &) = delete;
  Reader &operator=(const Reader &) = delete;

  /// The next read in file order once complete; nullptr at the end of the
  /// range; LF_ERR_TIMEOUT when `deadline` passes first; LF_ERR_CANCELLED
  /// after cancel(). Owner thread only.
  virtual Result<std::unique_ptr<Read>> next(Clock::time_point deadline) = 0;
  /// Stop issuing reads and wake a waiting next(). Any thread.
  virtual void cancel() noexcept = 0;
  /// Wait for every read in flight and drop the reads not yet delivered.
  /// Owner thread (or the destructor).
  virtual void drain() noexcept = 0;
  /// Reads submitted and not yet handed out by next() (complete or not).
  virtual int in_flight() const noexcept = 0;
  /// How this engine reads, e.g. "io_uring, registered buffers".
  virtual std::string describe() const = 0;

 protected:
  /// A new read of the next chunk, holding a ring place the caller reserved.
  Result<std::unique_ptr<Read>> make_read(RingPlace place) noexcept;
  /// Where piece reads of `r` go and how long the next one is.
  int piece_fd(const Read &r, size_t len) const noexcept;
  size_t piece_len(const Read &r) const noexcept;
  bool more() const noexcept { return cursor_ < plan_.file->end(); }

  Plan plan_;
  uint64_t cursor_;  ///< Next file offset to issue.
};

}  // namespace lf::ingest
