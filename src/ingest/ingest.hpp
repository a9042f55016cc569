// File ingest: a file, or a byte range of it, read in chunks into buffers of
// a lavaflow pool, handed out in file order through a bounded ring.
//
//   auto in = lf::ingest::Ingest::open("/data/shard.bin", -1, 0, 0, {});
//   while (auto c = (*in)->next(-1, &off); c && *c) consume(std::move(*c));
//
// Engines: io_uring with registered blocks (READ_FIXED) where it can, a pread
// thread where io_uring is unavailable; path_taken() says which and why.
// Threading: next() from one thread at a time (the owner); cancel() from any.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "ingest/chunk.hpp"
#include "ingest/file.hpp"
#include "ingest/reader.hpp"
#include "memory/pool.hpp"

namespace lf::ingest {

struct Options {
  MemoryKind kind = MemoryKind::host;
  size_t chunk_bytes = 0;  ///< 0: LF_INGEST_CHUNK.
  int queue_depth = 0;     ///< 0: LF_INGEST_QUEUE_DEPTH.
  bool direct = false;     ///< O_DIRECT, falling back to buffered reads with a reason.
  int ring_chunks = 0;     ///< 0: LF_INGEST_RING_CHUNKS, else twice the queue depth.
};

struct Stats {
  uint64_t chunks = 0;           ///< Chunks delivered.
  uint64_t bytes = 0;            ///< Bytes delivered.
  uint64_t reads = 0;            ///< Read submissions (pieces and re-reads included).
  uint64_t fixed_reads = 0;      ///< Of them, READ_FIXED.
  uint64_t resubmits = 0;        ///< Re-reads: short reads, EINTR/EAGAIN, pieces past a chunk's first.
  uint64_t buffered_pieces = 0;  ///< Pieces read through the page cache on an O_DIRECT ingest.
  int ring_chunks = 0;           ///< The ring's size.
  int ring_high_water = 0;       ///< Most chunks ever in flight or held at once.
  int ring_held = 0;             ///< Chunks in flight or held now.
  size_t chunk_bytes = 0;
  size_t block_bytes = 0;  ///< Memory per chunk (the pool's class).
  int queue_depth = 0;
};

class Ingest {
 public:
  /// Open `path` (or, with path == nullptr, the file behind `fd`, which the
  /// caller keeps) for [offset, offset + length), length 0: to its end.
  static Result<std::unique_ptr<Ingest>> open(const char *path, int fd, uint64_t offset, uint64_t length,
                                              const Options &options);
  ~Ingest();
  Ingest(const Ingest &) = delete;
  Ingest &operator=(const Ingest &) = delete;

  /// The next chunk in file order and its file offset; nullptr at the end.
  /// timeout_ms: 0 test, < 0 no deadline. Errors: LF_ERR_TIMEOUT (nothing
  /// ready yet; call again), LF_ERR_CANCELLED, LF_ERR_IO (a read failed or
  /// the file shrank: the chunks before it were delivered whole).
  Result<BufferPtr> next(int64_t timeout_ms, uint64_t *file_offset);
  /// Stop reading: reads in flight complete and their blocks return to the
  /// pool; next() then fails with LF_ERR_CANCELLED. Any thread.
  void cancel() noexcept;
  /// After cancel(): wait for the reads in flight now, from the owner thread
  /// (or with no next() running), so every block is back in the pool.
  void drain() noexcept { reader_->drain(); }
  /// Reads issued and not yet handed out (the send pump waits on them).
  int in_flight() const noexcept { return reader_->in_flight(); }
  /// Whether a ring place is free (a read could be issued now).
  bool has_room() const noexcept { return ring_->held() < ring_->limit(); }
  /// Chunks in flight or held (by the caller, a channel, a peer).
  int ring_held() const noexcept { return ring_->held(); }
  const std::string &path_taken() const noexcept { return path_; }
  Stats stats() const noexcept;
  uint64_t begin() const noexcept { return file_->begin(); }
  uint64_t end() const noexcept { return file_->end(); }

 private:
  Ingest() = default;
  Result<BufferPtr> stage(std::unique_ptr<Read> r);
  void end_with(const Error &e) noexcept;

  std::unique_ptr<File> file_;
  std::shared_ptr<Pool> pool_;         ///< Where reads land.
  std::shared_ptr<Pool> device_pool_;  ///< Device kinds: where chunks are staged to.
  std::shared_ptr<RingState> ring_;
  std::unique_ptr<Reader> reader_;
  Counters counters_;
  std::string path_;
  Options opts_;
  size_t block_ = 0;
  std::optional<Error> error_;                  ///< Sticky: the ingest ended with it.
  std::atomic<uint64_t> chunks_{0}, bytes_{0};  ///< Written by the owner, read by stats() anywhere.
  std::atomic<bool> cancelled_{false};
};

}  // namespace lf::ingest
