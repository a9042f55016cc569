#include "ingest/ingest.hpp"

#include <bit>
#include <cstring>

#include "core/config.hpp"
#include "core/log.hpp"
#include "ingest/pread_reader.hpp"
#include "lavaflow_features.h"
#include "memory/device_copy.hpp"
#if LAVAFLOW_HAVE_URING
#include "ingest/uring_reader.hpp"
#endif

namespace lf::ingest {

namespace {

constexpr size_t kMaxChunk = size_t(4) << 30;
constexpr int kMaxQueueDepth = 4096;
constexpr int kMaxRing = 65536;

Result<std::unique_ptr<Reader>> make_reader(const Plan &plan, std::string &fallback_why) {
  const std::string engine = config::get_string("LF_INGEST_ENGINE");
  if (engine != "auto" && engine != "io_uring" && engine != "pread")
    return LF_FAIL(LF_ERR_INVALID_ARG, "LF_INGEST_ENGINE=%s: expected auto, io_uring or pread", engine.c_str());
  if (engine == "pread") return std::make_unique<PreadReader>(plan, "LF_INGEST_ENGINE=pread");
#if LAVAFLOW_HAVE_URING
  auto r = make_uring_reader(plan, config::get_bool("LF_INGEST_REGISTER"));
  if (r) return r;
  if (engine == "io_uring") return std::unexpected(r.error());
  fallback_why = "io_uring unavailable: " + r.error().message;
#else
  if (engine == "io_uring")
    return LF_FAIL(LF_ERR_UNSUPPORTED,
                   "LF_INGEST_ENGINE=io_uring, but this build has no io_uring support "
                   "(built with LAVAFLOW_WITH_URING=OFF or without liburing-dev)");
  fallback_why = "this build has no io_uring support (LAVAFLOW_WITH_URING=OFF or no liburing-dev)";
#endif
  LF_LOG(info, "file ingest: pread thread, because %s", fallback_why.c_str());
  return std::make_unique<PreadReader>(plan, fallback_why);
}

bool is_device_only(MemoryKind k) noexcept { return k == MemoryKind::cuda_device || k == MemoryKind::vulkan_device; }

}  // namespace

Result<std::unique_ptr<Ingest>> Ingest::open(const char *path, int fd, uint64_t offset, uint64_t length,
                                             const Options &options) {
  std::unique_ptr<Ingest> in(new Ingest());
  Options o = options;
  if (!is_valid_kind(o.kind)) return LF_FAIL(LF_ERR_INVALID_ARG, "unknown memory kind %d", static_cast<int>(o.kind));
  if (o.chunk_bytes == 0) o.chunk_bytes = static_cast<size_t>(std::max<int64_t>(config::get_int("LF_INGEST_CHUNK"), 0));
  if (o.queue_depth == 0) o.queue_depth = static_cast<int>(config::get_int("LF_INGEST_QUEUE_DEPTH"));
  if (o.ring_chunks == 0) o.ring_chunks = static_cast<int>(config::get_int("LF_INGEST_RING_CHUNKS"));
  if (o.ring_chunks == 0) o.ring_chunks = 2 * o.queue_depth;
  if (o.chunk_bytes == 0 || o.chunk_bytes > kMaxChunk)
    return LF_FAIL(LF_ERR_INVALID_ARG, "chunk_bytes %zu: expected 1..%zu", o.chunk_bytes, kMaxChunk);
  if (o.queue_depth < 1 || o.queue_depth > kMaxQueueDepth)
    return LF_FAIL(LF_ERR_INVALID_ARG, "queue_depth %d: expected 1..%d", o.queue_depth, kMaxQueueDepth);
  if (o.ring_chunks < 1 || o.ring_chunks > kMaxRing)
    return LF_FAIL(LF_ERR_INVALID_ARG, "ring_chunks %d: expected 1..%d", o.ring_chunks, kMaxRing);
  // More reads in flight than ring places could never be issued.
  o.queue_depth = std::min(o.queue_depth, o.ring_chunks);
  const int64_t max_io = config::get_int("LF_INGEST_MAX_IO");
  if (max_io < int64_t(kDirectAlign) || max_io > (int64_t(1) << 30) || max_io % int64_t(kDirectAlign))
    return LF_FAIL(LF_ERR_INVALID_ARG, "LF_INGEST_MAX_IO=%lld: expected a multiple of 4 KiB up to 1 GiB",
                   static_cast<long long>(max_io));

  auto file = File::open(path, fd, offset, length, o.direct);
  if (!file) return std::unexpected(file.error());
  in->file_ = std::move(*file);

  const size_t want = (o.chunk_bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  in->block_ = std::bit_ceil(want);
  const MemoryKind read_kind = is_device_only(o.kind) ? MemoryKind::host_pinned : o.kind;
  PoolOptions po{.kind = read_kind,
                 .min_class = in->block_,
                 .max_class = in->block_,
                 .cap_bytes = in->block_ * static_cast<size_t>(o.ring_chunks),
                 .max_cached_per_class = static_cast<size_t>(o.ring_chunks),
                 .prealloc_per_class = 0};
  auto pool = Pool::create(po);
  if (!pool) return std::unexpected(pool.error());
  if (const size_t cls = (*pool)->class_size(in->block_); cls > in->block_) {
    // The kind raised the smallest class (2 MiB for hugepages): size the
    // ring's cap in the blocks it really gives.
    in->block_ = cls;
    po.min_class = po.max_class = cls;
    po.cap_bytes = cls * static_cast<size_t>(o.ring_chunks);
    pool = Pool::create(po);
    if (!pool) return std::unexpected(pool.error());
  }
  in->pool_ = std::move(*pool);
  std::string kind_note;
  if (is_device_only(o.kind)) {
    PoolOptions dp = po;
    dp.kind = o.kind;
    dp.strict = true;
    auto dev = Pool::create(dp);
    if (!dev)
      return LF_FAIL(LF_ERR_UNAVAILABLE,
                     "%s chunks are staged through pinned memory, but %s memory is not available here: %s",
                     memory_kind_name(o.kind), memory_kind_name(o.kind), dev.error().message.c_str());
    in->device_pool_ = std::move(*dev);
    kind_note = std::string(", staged through pinned memory into ") + memory_kind_name(o.kind);
  }
  {
    // One block tells what the pool really gives: its kind after any
    // fallback, whether it has a host address, and its alignment.
    auto probe = in->pool_->acquire(in->block_);
    if (!probe) return std::unexpected(probe.error());
    const Buffer &b = **probe;
    if (!b.data())
      return LF_FAIL(LF_ERR_UNSUPPORTED, "%s memory has no host address to read into", memory_kind_name(b.kind()));
    if (b.kind() != read_kind)
      kind_note += std::string(", chunks are ") + memory_kind_name(b.kind()) + " (" + b.fallback_reason() + ")";
    const auto addr = reinterpret_cast<uintptr_t>(b.data());
    if (in->file_->direct() && addr % kDirectAlign)
      in->file_->drop_direct(std::string("the ") + memory_kind_name(b.kind()) + " chunk buffers are not aligned to " +
                             std::to_string(kDirectAlign) + " bytes");
  }
  in->ring_ = std::make_shared<RingState>(o.ring_chunks);
  Plan plan{.file = in->file_.get(),
            .pool = in->pool_,
            .ring = in->ring_,
            .chunk = o.chunk_bytes,
            .block = in->block_,
            .queue_depth = o.queue_depth,
            .max_io = static_cast<size_t>(max_io),
            .counters = &in->counters_};
  std::string why;
  auto reader = make_reader(plan, why);
  if (!reader) return std::unexpected(reader.error());
  in->reader_ = std::move(*reader);
  in->opts_ = o;
  in->path_ = in->reader_->describe();
  if (in->file_->direct())
    in->path_ += ", O_DIRECT";
  else if (o.direct)
    in->path_ += ", buffered (O_DIRECT not used: " + in->file_->direct_refused() + ")";
  else
    in->path_ += ", buffered";
  in->path_ += kind_note;
  LF_LOG(info, "file ingest of %s: %s", path ? path : "a descriptor", in->path_.c_str());
  return in;
}

Ingest::~Ingest() {
  if (reader_) {
    reader_->cancel();
    reader_->drain();
  }
}

void Ingest::cancel() noexcept {
  cancelled_.store(true, std::memory_order_release);
  reader_->cancel();
}

Result<BufferPtr> Ingest::next(int64_t timeout_ms, uint64_t *file_offset) {
  if (error_) return std::unexpected(*error_);
  if (cancelled_.load(std::memory_order_acquire)) return LF_FAIL(LF_ERR_CANCELLED, "the ingest was cancelled");
  const auto deadline =
      timeout_ms < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto r = reader_->next(deadline);
  if (!r) {
    if (r.error().code != LF_ERR_TIMEOUT) end_with(r.error());
    return std::unexpected(r.error());
  }
  if (!*r) return BufferPtr();
  Read &rd = **r;
  if (rd.failed) {
    end_with(rd.error);
    return std::unexpected(*error_);
  }
  if (rd.eof) {
    error_ = make_error(LF_ERR_IO,
                        "the file shrank while being read: end of file at offset %llu, %llu bytes before the end of "
                        "the range; the chunks before it are complete",
                        static_cast<unsigned long long>(rd.offset + rd.got),
                        static_cast<unsigned long long>(file_->end() - rd.offset - rd.got));
    end_with(*error_);
    if (rd.got == 0) return std::unexpected(*error_);
  }
  const uint64_t off = rd.offset;
  auto c = stage(std::move(*r));
  if (!c) {
    end_with(c.error());
    return c;
  }
  chunks_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add((*c)->size(), std::memory_order_relaxed);
  if (file_offset) *file_offset = off;
  return c;
}

void Ingest::end_with(const Error &e) noexcept {
  error_ = e;
  // Reads issued past the failure are never delivered: collect them now,
  // so their places and blocks come back at once, not at close.
  reader_->cancel();
  reader_->drain();
}

Result<BufferPtr> Ingest::stage(std::unique_ptr<Read> r) {
  if (!device_pool_) return BufferPtr(std::make_unique<Chunk>(std::move(r->block), r->got, std::move(r->place)));
  auto dev = device_pool_->acquire(std::max<size_t>(r->got, 1));
  if (!dev) return std::unexpected(dev.error());
  if (r->got)
    if (auto st = buffer_write(**dev, 0, r->block->data(), r->got); !st) return std::unexpected(st.error());
  // The pinned block goes back to its pool with `r`; the device block keeps the place.
  return BufferPtr(std::make_unique<Chunk>(std::move(*dev), r->got, std::move(r->place)));
}

Stats Ingest::stats() const noexcept {
  Stats s;
  s.chunks = chunks_.load(std::memory_order_relaxed);
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.reads = counters_.reads.load(std::memory_order_relaxed);
  s.fixed_reads = counters_.fixed_reads.load(std::memory_order_relaxed);
  s.resubmits = counters_.resubmits.load(std::memory_order_relaxed);
  s.buffered_pieces = counters_.buffered_pieces.load(std::memory_order_relaxed);
  s.ring_chunks = ring_->limit();
  s.ring_high_water = ring_->high_water();
  s.ring_held = ring_->held();
  s.chunk_bytes = opts_.chunk_bytes;
  s.block_bytes = block_;
  s.queue_depth = opts_.queue_depth;
  return s;
}

}  // namespace lf::ingest
