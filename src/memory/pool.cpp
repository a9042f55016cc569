#include "memory/pool.hpp"

#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <bit>
#include <map>
#include <mutex>
#include <vector>

#include "core/config.hpp"
#include "core/log.hpp"
#include "memory/kinds.hpp"
#include "memory/peer_hold.hpp"

namespace lf {
namespace detail {

namespace {
constexpr size_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024;

struct PresetValues {
  size_t min_class, max_class, cap, max_cached, prealloc_per_class, prealloc_max_class;
};

PresetValues preset_values(PoolPreset p) noexcept {
  switch (p) {
    case PoolPreset::high_throughput: return {4 * KiB, 256 * MiB, 4 * GiB, 0, 4, 4 * MiB};
    case PoolPreset::low_memory: return {64, 4 * MiB, 64 * MiB, 4, 0, 0};
    case PoolPreset::standard: break;
  }
  return {256, 64 * MiB, 1 * GiB, 0, 0, 0};
}

// Smallest block worth pooling for a kind: below it every block would cost
// the kind's granularity anyway (a huge page, a locked page, a driver object).
size_t kind_granularity(MemoryKind k) noexcept {
  switch (k) {
    case MemoryKind::host:
    case MemoryKind::host_shared: return 1;
    case MemoryKind::host_hugepage: return 2 * MiB;
    default: return host_page_size();
  }
}

bool pow2(size_t v) noexcept { return v && !(v & (v - 1)); }
}  // namespace

struct alignas(64) SizeClass {
  std::mutex mu;
  std::vector<BufferPtr> free;  // LIFO: the most recently used block is warm in cache
  uint64_t hits = 0, misses = 0, returns = 0, drops = 0, in_use = 0;
};

struct PoolCore {
  PoolOptions opt;
  std::shared_ptr<ShmArena> arena;  // host_shared only
  unsigned min_shift = 0;
  uint32_t nclasses = 0;  // index nclasses is the unpooled "oversize" slot
  std::unique_ptr<SizeClass[]> classes;
  std::atomic<uint64_t> held{0};            // class bytes in use + cached
  std::atomic<uint64_t> oversize_bytes{0};  // in-use bytes of unpooled blocks
  std::atomic<bool> closed{false};

  size_t class_bytes(uint32_t c) const noexcept { return size_t{1} << (min_shift + c); }

  uint32_t class_of(size_t bytes) const noexcept {
    if (bytes <= opt.min_class) return 0;
    const unsigned shift = static_cast<unsigned>(std::bit_width(bytes - 1));
    const uint32_t c = shift - min_shift;
    return c < nclasses ? c : nclasses;
  }

  Result<BufferPtr> new_block(size_t bytes) noexcept {
    if (arena) return arena->carve(bytes, std::min(bytes, host_page_size()));
    return allocate(
        bytes, AllocOptions{.kind = opt.kind, .numa_node = opt.numa_node, .device = opt.device, .strict = opt.strict});
  }

  // Reserve `bytes` under the cap, trimming cached blocks if that makes room.
  bool reserve(size_t bytes) noexcept {
    for (int attempt = 0; attempt < 2; ++attempt) {
      uint64_t cur = held.load(std::memory_order_relaxed);
      while (cur + bytes <= opt.cap_bytes) {
        if (held.compare_exchange_weak(cur, cur + bytes, std::memory_order_relaxed)) return true;
      }
      if (attempt == 0) trim_until(opt.cap_bytes - std::min<uint64_t>(opt.cap_bytes, bytes));
    }
    return false;
  }

  // Free cached blocks, largest classes first, until held <= target.
  void trim_until(uint64_t target) noexcept {
    for (uint32_t c = nclasses; c-- > 0;) {
      if (held.load(std::memory_order_relaxed) <= target) return;
      std::vector<BufferPtr> victims;
      {
        SizeClass &sc = classes[c];
        std::lock_guard lock(sc.mu);
        while (!sc.free.empty() && held.load(std::memory_order_relaxed) > target) {
          victims.push_back(std::move(sc.free.back()));
          sc.free.pop_back();
          held.fetch_sub(class_bytes(c), std::memory_order_relaxed);
          ++sc.drops;
        }
      }
      // Freed outside the lock: munmap/vkFreeMemory are slow.
    }
  }

  void give_back(uint32_t c, BufferPtr block) noexcept {
    if (c == nclasses) {
      const size_t n = block->size();
      block.reset();
      held.fetch_sub(n, std::memory_order_relaxed);
      oversize_bytes.fetch_sub(n, std::memory_order_relaxed);
      SizeClass &sc = classes[c];
      std::lock_guard lock(sc.mu);
      --sc.in_use;
      ++sc.drops;
      return;
    }
    SizeClass &sc = classes[c];
    {
      std::lock_guard lock(sc.mu);
      --sc.in_use;
      const bool keep = !closed.load(std::memory_order_relaxed) &&
                        (opt.max_cached_per_class == 0 || sc.free.size() < opt.max_cached_per_class);
      if (keep) {
        try {
          sc.free.push_back(std::move(block));
          ++sc.returns;
          return;
        } catch (...) {
          // vector growth failed: drop the block below instead.
        }
      }
      ++sc.drops;
    }
    block.reset();
    held.fetch_sub(class_bytes(c), std::memory_order_relaxed);
  }
};

// ---- ShmArena ---------------------------------------------------------------------

struct ShmArena::Segment {
  std::shared_ptr<SharedSegment> seg;
  std::map<size_t, size_t> free;  // offset -> length, coalesced
  bool dedicated = false;         // one block larger than the segment size
};

ShmArena::ShmArena(size_t segment_size) noexcept : segment_size_(segment_size) {}
ShmArena::~ShmArena() = default;

Result<BufferPtr> ShmArena::carve(size_t size, size_t align) noexcept {
  (void)sweep_held_blocks();  // what a dead peer held may serve this (before mu_: returns take it)
  try {
    std::lock_guard lock(mu_);
    if (size <= segment_size_) {
      for (auto &s : segments_) {
        if (s->dedicated) continue;
        for (auto it = s->free.begin(); it != s->free.end(); ++it) {
          const size_t off = it->first, len = it->second;
          const size_t start = (off + align - 1) / align * align;
          if (start + size > off + len) continue;
          s->free.erase(it);
          if (start > off) s->free.emplace(off, start - off);
          if (off + len > start + size) s->free.emplace(start + size, off + len - start - size);
          return std::make_unique<ShmBuffer>(s->seg, start, size, shared_from_this());
        }
      }
    }
    const bool dedicated = size > segment_size_;
    auto seg = SharedSegment::create(dedicated ? size : segment_size_, "lavaflow-pool");
    if (!seg) return std::unexpected(seg.error());
    auto s = std::make_unique<Segment>();
    s->seg = *seg;
    s->dedicated = dedicated;
    if (!dedicated && (*seg)->size() > size) s->free.emplace(size, (*seg)->size() - size);
    segments_.push_back(std::move(s));
    LF_LOG(debug, "shared pool: new %s segment %llx of %zu bytes", dedicated ? "dedicated" : "shared",
           static_cast<unsigned long long>((*seg)->id()), (*seg)->size());
    return std::make_unique<ShmBuffer>(*seg, 0, size, shared_from_this());
  } catch (...) {
    return std::unexpected(exception_error("shared pool carve"));
  }
}

void ShmArena::release(const SharedSegment *segment, size_t offset, size_t length) noexcept {
  // Give the pages back to the kernel before the range becomes reusable:
  // after that another thread may already be writing into it.
  const size_t page = host_page_size();
  const size_t lo = (offset + page - 1) / page * page, hi = (offset + length) / page * page;
  std::lock_guard lock(mu_);
  for (auto it = segments_.begin(); it != segments_.end(); ++it) {
    Segment &s = **it;
    if (s.seg.get() != segment) continue;
    if (s.dedicated) {
      segments_.erase(it);  // the block's own reference unmaps it right after
      return;
    }
    if (hi > lo)
      fallocate(segment->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(lo),
                static_cast<off_t>(hi - lo));
    try {
      size_t off = offset, len = length;
      auto next = s.free.lower_bound(off);
      if (next != s.free.end() && off + len == next->first) {
        len += next->second;
        next = s.free.erase(next);
      }
      if (next != s.free.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == off) {
          prev->second += len;
          return;
        }
      }
      s.free.emplace(off, len);
    } catch (...) {
      // Out of memory for a map node: the range stays unused (leaks until the segment goes).
    }
    return;
  }
}

size_t ShmArena::segment_count() const {
  std::lock_guard lock(mu_);
  return segments_.size();
}

size_t ShmArena::segment_bytes() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto &s : segments_) n += s->seg->size();
  return n;
}

}  // namespace detail

// ---- Pool -----------------------------------------------------------------------------

Result<std::shared_ptr<Pool>> Pool::create(const PoolOptions &in) {
  using detail::PoolCore;
  if (!is_valid_kind(in.kind)) return LF_FAIL(LF_ERR_INVALID_ARG, "unknown memory kind %d", static_cast<int>(in.kind));
  const int preset = static_cast<int>(in.preset);
  if (preset < LF_POOL_DEFAULT || preset > LF_POOL_LOW_MEMORY)
    return LF_FAIL(LF_ERR_INVALID_ARG, "unknown pool preset %d", preset);
  const detail::PresetValues pv = detail::preset_values(in.preset);
  PoolOptions o = in;
  if (!o.min_class) o.min_class = pv.min_class;
  if (!o.max_class) o.max_class = pv.max_class;
  if (!o.cap_bytes) {
    int64_t env = config::is_set("LF_POOL_CAP") ? config::get_int("LF_POOL_CAP") : 0;
    o.cap_bytes = env > 0 ? static_cast<size_t>(env) : pv.cap;
  }
  if (!o.max_cached_per_class) o.max_cached_per_class = pv.max_cached;
  if (!o.prealloc_per_class) o.prealloc_per_class = pv.prealloc_per_class;
  if (!o.prealloc_max_class) o.prealloc_max_class = pv.prealloc_max_class;
  if (!o.segment_size && o.kind == MemoryKind::host_shared) {
    int64_t v = config::get_int("LF_SHM_SEGMENT_SIZE");
    o.segment_size = v > 0 ? static_cast<size_t>(v) : 64 * detail::MiB;
  }
  if (!detail::pow2(o.min_class) || !detail::pow2(o.max_class) || o.min_class > o.max_class)
    return LF_FAIL(LF_ERR_INVALID_ARG, "pool classes %zu..%zu: both must be powers of two, min <= max", o.min_class,
                   o.max_class);
  if (o.max_class > kMaxAllocation) return LF_FAIL(LF_ERR_INVALID_ARG, "pool max class %zu is absurd", o.max_class);
  const size_t gran = detail::kind_granularity(o.kind);
  if (o.min_class < gran) o.min_class = gran;
  if (o.max_class < o.min_class) o.max_class = o.min_class;
  if (o.kind == MemoryKind::host_shared && o.segment_size % detail::host_page_size())
    return LF_FAIL(LF_ERR_INVALID_ARG, "shared segment size %zu is not a multiple of the page size", o.segment_size);
  if (o.strict || strict_from_environment()) {
    o.strict = true;
    if (auto why = kind_unavailable_reason(o.kind, o.device))
      return LF_FAIL(LF_ERR_UNAVAILABLE, "pool of %s: %s (strict)", memory_kind_name(o.kind), why->c_str());
  }

  try {
    auto core = std::make_shared<PoolCore>();
    core->opt = o;
    core->min_shift = static_cast<unsigned>(std::countr_zero(o.min_class));
    core->nclasses = static_cast<uint32_t>(std::countr_zero(o.max_class) - std::countr_zero(o.min_class) + 1);
    core->classes = std::make_unique<detail::SizeClass[]>(core->nclasses + 1);
    if (o.kind == MemoryKind::host_shared) core->arena = std::make_shared<detail::ShmArena>(o.segment_size);
    std::shared_ptr<Pool> pool(new Pool(core));

    // Preallocate (high-throughput): blocks are faulted in now so that the
    // first transfers do not pay for page faults.
    for (uint32_t c = 0; c < core->nclasses && o.prealloc_per_class; ++c) {
      const size_t bytes = core->class_bytes(c);
      if (bytes > o.prealloc_max_class) break;
      for (size_t i = 0; i < o.prealloc_per_class; ++i) {
        if (!core->reserve(bytes)) break;
        auto b = core->new_block(bytes);
        if (!b) {
          core->held.fetch_sub(bytes);
          if (o.strict || b.error().code != LF_ERR_NO_MEMORY) return std::unexpected(b.error());
          break;
        }
        if (char *p = static_cast<char *>((*b)->data())) {
          const size_t step = (*b)->page_size() ? (*b)->page_size() : detail::host_page_size();
          for (size_t off = 0; off < bytes; off += step) static_cast<volatile char *>(p)[off] = 0;
        }
        core->classes[c].free.push_back(std::move(*b));
      }
    }
    return pool;
  } catch (...) {
    return std::unexpected(detail::exception_error("Pool::create"));
  }
}

Result<std::shared_ptr<Pool>> Pool::create_shared(PoolPreset preset) {
  return create(PoolOptions{.kind = MemoryKind::host_shared, .preset = preset});
}

Pool::~Pool() {
  core_->closed.store(true);
  core_->trim_until(0);
}

const PoolOptions &Pool::options() const noexcept { return core_->opt; }

size_t Pool::class_size(size_t bytes) const noexcept {
  const uint32_t c = core_->class_of(bytes);
  return c == core_->nclasses ? 0 : core_->class_bytes(c);
}

void Pool::trim() noexcept { core_->trim_until(0); }

Result<BufferPtr> Pool::acquire(size_t bytes) noexcept {
  detail::PoolCore &core = *core_;
  if (bytes == 0) return LF_FAIL(LF_ERR_INVALID_ARG, "pool acquire of 0 bytes");
  if (bytes > kMaxAllocation) return LF_FAIL(LF_ERR_INVALID_ARG, "pool acquire of %zu bytes is absurd", bytes);
  const uint32_t c = core.class_of(bytes);
  detail::SizeClass &sc = core.classes[c];
  BufferPtr block;
  if (c < core.nclasses) {
    std::lock_guard lock(sc.mu);
    if (!sc.free.empty()) {
      block = std::move(sc.free.back());
      sc.free.pop_back();
      ++sc.hits;
      ++sc.in_use;
    } else {
      ++sc.misses;
    }
  } else {
    std::lock_guard lock(sc.mu);
    ++sc.misses;
  }
  try {
    if (!block) {
      // Unpooled requests are rounded to a page so that the cap counts what
      // they really cost.
      const size_t want = c < core.nclasses ? core.class_bytes(c)
                                            : (bytes + detail::host_page_size() - 1) / detail::host_page_size() *
                                                  detail::host_page_size();
      if (!core.reserve(want)) {
        uint64_t in_use = 0, cached = 0;
        for (uint32_t i = 0; i <= core.nclasses; ++i) {
          std::lock_guard lock(core.classes[i].mu);
          in_use += core.classes[i].in_use * (i < core.nclasses ? core.class_bytes(i) : 0);
          cached += core.classes[i].free.size() * (i < core.nclasses ? core.class_bytes(i) : 0);
        }
        in_use += core.oversize_bytes.load(std::memory_order_relaxed);
        return LF_FAIL(LF_ERR_NO_MEMORY, "pool cap of %zu bytes reached: %llu in use, %llu cached, %zu wanted",
                       core.opt.cap_bytes, static_cast<unsigned long long>(in_use),
                       static_cast<unsigned long long>(cached), want);
      }
      auto b = core.new_block(want);
      if (!b) {
        core.held.fetch_sub(want, std::memory_order_relaxed);
        return std::unexpected(b.error());
      }
      block = std::move(*b);
      if (c == core.nclasses) core.oversize_bytes.fetch_add(want, std::memory_order_relaxed);
      std::lock_guard lock(sc.mu);
      ++sc.in_use;
    }
    return std::make_unique<PooledBuffer>(core_, c, std::move(block), bytes);
  } catch (...) {
    // Only the PooledBuffer allocation can throw here; the block goes back.
    if (block) core.give_back(c, std::move(block));
    return std::unexpected(detail::exception_error("Pool::acquire"));
  }
}

PoolStats Pool::stats() const noexcept {
  (void)sweep_held_blocks();  // blocks a peer that has exited held are in use no longer
  const detail::PoolCore &core = *core_;
  PoolStats s;
  for (uint32_t i = 0; i <= core.nclasses; ++i) {
    detail::SizeClass &sc = core.classes[i];
    std::lock_guard lock(sc.mu);
    s.hits += sc.hits;
    s.misses += sc.misses;
    s.returns += sc.returns;
    s.drops += sc.drops;
    s.in_use_buffers += sc.in_use;
    if (i < core.nclasses) {
      s.in_use_bytes += sc.in_use * core.class_bytes(i);
      s.pooled_bytes += sc.free.size() * core.class_bytes(i);
    }
  }
  s.in_use_bytes += core.oversize_bytes.load(std::memory_order_relaxed);
  s.cap_bytes = core.opt.cap_bytes;
  s.held_bytes = core.held.load(std::memory_order_relaxed);
  if (core.arena) {
    try {
      s.segments = core.arena->segment_count();
      s.segment_bytes = core.arena->segment_bytes();
    } catch (...) {
    }
  }
  s.hit_rate = s.hits + s.misses ? static_cast<double>(s.hits) / static_cast<double>(s.hits + s.misses) : 0.0;
  return s;
}

// ---- PooledBuffer ---------------------------------------------------------------------

PooledBuffer::PooledBuffer(std::shared_ptr<detail::PoolCore> core, uint32_t size_class, BufferPtr block, size_t bytes)
    : core_(std::move(core)), class_(size_class), block_(std::move(block)) {
  try {
    describe_as(*block_);  // copies the reason string: may throw
  } catch (...) {
    core_->give_back(class_, std::move(block_));
    throw;
  }
  size_ = bytes;
  flags_ |= buffer_flags::pooled;
  if (const SharedRef *r = block_->shared_ref()) {
    ref_ = *r;
    ref_.length = bytes;
    has_ref_ = true;
  }
}

PooledBuffer::~PooledBuffer() { core_->give_back(class_, std::move(block_)); }

}  // namespace lf

namespace lf {

std::shared_ptr<Pool> make_shared_memory_pool() {
  PoolPreset preset = PoolPreset::standard;
  const std::string p = config::get_string("LF_SHARED_POOL_PRESET");
  if (p == "high-throughput" || p == "high_throughput")
    preset = PoolPreset::high_throughput;
  else if (p == "low-memory" || p == "low_memory")
    preset = PoolPreset::low_memory;
  else if (p != "default" && !p.empty())
    LF_LOG(warn, "LF_SHARED_POOL_PRESET=%s is not default, high-throughput or low-memory; using default", p.c_str());
  auto pool = Pool::create_shared(preset);
  if (pool) return *pool;
  LF_LOG(error, "shared pool: %s; using the built-in defaults", pool.error().message.c_str());
  // Explicit values bypass every tunable, so this can only fail for lack of memory.
  pool = Pool::create(PoolOptions{.kind = MemoryKind::host_shared,
                                  .min_class = 256,
                                  .max_class = 64 << 20,
                                  .cap_bytes = size_t{1} << 30,
                                  .segment_size = 64 << 20});
  if (!pool) throw std::bad_alloc();
  return *pool;
}

}  // namespace lf
