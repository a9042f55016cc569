// C API: memory (lf_alloc*, lf_buffer_*, lf_pool_*, DLPack).
//
// Kept free of the channel layer's headers: it needs only Layer 1.
#include "capi/capi_memory.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>

#include "capi/capi_error.hpp"
#include "capi/handles.hpp"
#include "memory/allocator.hpp"
#include "memory/dlpack.hpp"

#ifndef LF_API
#define LF_API extern "C" __attribute__((visibility("default")))
#endif

namespace lf::capi {

namespace {
struct BufferSlot {
  BufferPtr buf;
};
struct PoolSlot {
  std::shared_ptr<Pool> pool;
};

using BufferTable = HandleTable<BufferSlot, HandleType::buffer>;
using PoolTable = HandleTable<PoolSlot, HandleType::pool>;

BufferTable &buffers() noexcept {
  static BufferTable t;
  return t;
}
PoolTable &pools() noexcept {
  static PoolTable t;
  return t;
}

// Look up a buffer for an accessor; records why when the handle is bad.
Buffer *buffer_of(lf_buffer_t h, const char *fn) noexcept {
  if (!h) {
    fail(LF_ERR_INVALID_ARG, "%s: buffer is NULL", fn);
    return nullptr;
  }
  BufferSlot *s = buffers().get(h);
  if (!s || !s->buf) {
    fail(LF_ERR_CLOSED, "%s: buffer is not live (already freed or handed over)", fn);
    return nullptr;
  }
  return s->buf.get();
}

bool valid_kind(lf_memory_kind_t k) noexcept { return static_cast<int>(k) >= 0 && k < LF_MEM_KIND_COUNT_; }

// Versioned parameter structs: read what the caller's header version has,
// keep defaults for the rest.
template <typename T>
bool read_params(const T *in, T &out) noexcept {
  if (!in) return true;
  if (in->size < sizeof(size_t) || in->size > 4096) return false;
  std::memcpy(reinterpret_cast<char *>(&out) + sizeof(size_t), reinterpret_cast<const char *>(in) + sizeof(size_t),
              std::min(in->size, sizeof(T)) - sizeof(size_t));
  return true;
}
}  // namespace

lf_buffer_t wrap(BufferPtr b) noexcept {
  if (!b) return nullptr;
  auto [h, slot] = buffers().acquire();
  if (!slot) {
    fail(LF_ERR_NO_MEMORY, "no buffer handle available");
    return nullptr;
  }
  slot->buf = std::move(b);
  buffers().publish(h);
  return BufferTable::to_handle<lf_buffer_t>(h);
}

BufferPtr unwrap_take(lf_buffer_t h) noexcept {
  if (!h) return nullptr;
  // Of two threads freeing one buffer, one wins the retire and the other
  // gets nullptr (LF_ERR_CLOSED), never the same buffer twice.
  BufferPtr b;
  buffers().retire(h, [&](BufferSlot &s) { b = std::move(s.buf); });
  return b;
}

Buffer *peek(lf_buffer_t h) noexcept {
  if (!h) return nullptr;
  BufferSlot *s = buffers().get(h);
  return s ? s->buf.get() : nullptr;
}

lf_pool_t wrap_pool(std::shared_ptr<Pool> pool) noexcept {
  if (!pool) return nullptr;
  auto [h, slot] = pools().acquire();
  if (!slot) {
    fail(LF_ERR_NO_MEMORY, "no pool handle available");
    return nullptr;
  }
  slot->pool = std::move(pool);
  pools().publish(h);
  return PoolTable::to_handle<lf_pool_t>(h);
}

lf_pool_t wrap_pool(Pool &pool) noexcept {
  std::shared_ptr<Pool> p = pool.weak_from_this().lock();
  if (!p) {
    fail(LF_ERR_INTERNAL, "wrap_pool: pool is not owned by a shared_ptr");
    return nullptr;
  }
  return wrap_pool(std::move(p));
}

std::shared_ptr<Pool> pool_of(lf_pool_t h) noexcept {
  if (!h) return nullptr;
  std::shared_ptr<Pool> p;
  pools().with_locked(h, [&](PoolSlot &s) { p = s.pool; });
  return p;
}

}  // namespace lf::capi

using namespace lf;
using namespace lf::capi;

LF_API const char *lf_memory_kind_string(lf_memory_kind_t kind) {
  return valid_kind(kind) ? memory_kind_name(static_cast<MemoryKind>(kind)) : "invalid";
}

LF_API lf_status_t lf_alloc_ex(lf_context_t, size_t bytes, lf_memory_kind_t kind, const lf_alloc_params_t *params,
                               lf_buffer_t *out) {
  // The context is not needed: memory does not depend on the world of ranks.
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_alloc: out is NULL");
    if (!valid_kind(kind)) return fail(LF_ERR_INVALID_ARG, "lf_alloc: unknown memory kind %d", static_cast<int>(kind));
    if (bytes == 0) return fail(LF_ERR_INVALID_ARG, "lf_alloc: size is 0");
    if (bytes > kMaxAllocation)
      return fail(LF_ERR_INVALID_ARG, "lf_alloc: %zu bytes is not a plausible size (limit %zu)", bytes, kMaxAllocation);
    lf_alloc_params_t p = LF_ALLOC_PARAMS_INIT;
    if (!read_params(params, p))
      return fail(LF_ERR_INVALID_ARG, "lf_alloc_ex: params->size=%zu: initialise with LF_ALLOC_PARAMS_INIT",
                  params->size);
    if (p.numa_node < -1) return fail(LF_ERR_INVALID_ARG, "lf_alloc_ex: numa_node %d", p.numa_node);
    if (p.device < 0) return fail(LF_ERR_INVALID_ARG, "lf_alloc_ex: device %d", p.device);
    if (p.alignment & (p.alignment - 1))
      return fail(LF_ERR_INVALID_ARG, "lf_alloc_ex: alignment %zu is not a power of two", p.alignment);
    auto b = allocate(bytes, AllocOptions{.kind = static_cast<MemoryKind>(kind),
                                          .numa_node = p.numa_node,
                                          .device = p.device,
                                          .alignment = p.alignment,
                                          .strict = p.strict != 0});
    if (!b) return fail(b.error());
    lf_buffer_t h = wrap(std::move(*b));
    if (!h) return LF_ERR_NO_MEMORY;
    *out = h;
    return LF_OK;
  });
}

LF_API lf_status_t lf_alloc(lf_context_t ctx, size_t bytes, lf_memory_kind_t kind, lf_buffer_t *out) {
  return lf_alloc_ex(ctx, bytes, kind, nullptr, out);
}

LF_API lf_status_t lf_free(lf_buffer_t h) {
  return guard([&]() -> lf_status_t {
    if (!h) return fail(LF_ERR_INVALID_ARG, "lf_free: buffer is NULL");
    BufferPtr b = unwrap_take(h);
    if (!b) return fail(LF_ERR_CLOSED, "lf_free: buffer is not live (freed twice, or handed over)");
    b.reset();  // to its pool, its owner process, or the system
    return LF_OK;
  });
}

LF_API void *lf_buffer_data(lf_buffer_t h) {
  Buffer *b = buffer_of(h, "lf_buffer_data");
  return b ? b->data() : nullptr;
}

LF_API size_t lf_buffer_size(lf_buffer_t h) {
  Buffer *b = buffer_of(h, "lf_buffer_size");
  return b ? b->size() : 0;
}

LF_API lf_memory_kind_t lf_buffer_kind(lf_buffer_t h) {
  Buffer *b = buffer_of(h, "lf_buffer_kind");
  return b ? static_cast<lf_memory_kind_t>(b->kind()) : static_cast<lf_memory_kind_t>(-1);
}

LF_API lf_memory_kind_t lf_buffer_requested_kind(lf_buffer_t h) {
  Buffer *b = buffer_of(h, "lf_buffer_requested_kind");
  return b ? static_cast<lf_memory_kind_t>(b->requested_kind()) : static_cast<lf_memory_kind_t>(-1);
}

LF_API const char *lf_buffer_fallback_reason(lf_buffer_t h) {
  Buffer *b = buffer_of(h, "lf_buffer_fallback_reason");
  return b ? intern(b->fallback_reason()) : "";
}

LF_API int lf_buffer_numa_node(lf_buffer_t h) {
  Buffer *b = buffer_of(h, "lf_buffer_numa_node");
  return b ? b->numa_node() : -1;
}

LF_API size_t lf_buffer_alignment(lf_buffer_t h) {
  Buffer *b = buffer_of(h, "lf_buffer_alignment");
  return b ? b->alignment() : 0;
}

LF_API lf_status_t lf_buffer_to_dlpack(lf_buffer_t h, uint8_t dtype_code, uint8_t dtype_bits,
                                       struct DLManagedTensor **out) {
  return guard([&]() -> lf_status_t {
    if (!buffer_of(h, "lf_buffer_to_dlpack")) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_buffer_to_dlpack: out is NULL");
    Result<DLManagedTensor *> t = LF_FAIL(LF_ERR_CLOSED, "lf_buffer_to_dlpack: buffer is not live");
    // Exported and retired in one step, so a racing lf_free cannot free the
    // buffer the tensor now owns.
    bool retired = buffers().retire(h, [&](BufferSlot &s) {
      if (!s.buf) return false;
      t = to_dlpack(s.buf, dtype_code, dtype_bits);
      if (!t) return false;  // the buffer stays the caller's
      s.buf.reset();
      return true;
    });
    if (!retired) return fail(t.error());
    *out = *t;
    return LF_OK;
  });
}

// ---- pools -------------------------------------------------------------------------

LF_API lf_status_t lf_pool_create(lf_context_t, const lf_pool_params_t *params, lf_pool_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_pool_create: out is NULL");
    lf_pool_params_t p = LF_POOL_PARAMS_INIT;
    if (!read_params(params, p))
      return fail(LF_ERR_INVALID_ARG, "lf_pool_create: params->size=%zu: initialise with LF_POOL_PARAMS_INIT",
                  params->size);
    if (!valid_kind(p.kind))
      return fail(LF_ERR_INVALID_ARG, "lf_pool_create: unknown memory kind %d", static_cast<int>(p.kind));
    if (static_cast<int>(p.preset) < LF_POOL_DEFAULT || p.preset > LF_POOL_LOW_MEMORY)
      return fail(LF_ERR_INVALID_ARG, "lf_pool_create: unknown preset %d", static_cast<int>(p.preset));
    auto pool = Pool::create(PoolOptions{.kind = static_cast<MemoryKind>(p.kind),
                                         .preset = static_cast<PoolPreset>(p.preset),
                                         .min_class = p.min_class,
                                         .max_class = p.max_class,
                                         .cap_bytes = p.cap_bytes,
                                         .strict = p.strict != 0});
    if (!pool) return fail(pool.error());
    lf_pool_t h = wrap_pool(std::move(*pool));
    if (!h) return LF_ERR_NO_MEMORY;
    *out = h;
    return LF_OK;
  });
}

LF_API lf_status_t lf_pool_acquire(lf_pool_t h, size_t bytes, lf_buffer_t *out) {
  return guard([&]() -> lf_status_t {
    if (!h) return fail(LF_ERR_INVALID_ARG, "lf_pool_acquire: pool is NULL");
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_pool_acquire: out is NULL");
    std::shared_ptr<Pool> pool = pool_of(h);  // alive through a racing lf_pool_destroy
    if (!pool) return fail(LF_ERR_CLOSED, "lf_pool_acquire: pool is not live (destroyed, or not a pool handle)");
    if (bytes == 0) return fail(LF_ERR_INVALID_ARG, "lf_pool_acquire: size is 0");
    auto b = pool->acquire(bytes);
    if (!b) return fail(b.error());
    lf_buffer_t bh = wrap(std::move(*b));
    if (!bh) return LF_ERR_NO_MEMORY;
    *out = bh;
    return LF_OK;
  });
}

LF_API lf_status_t lf_pool_stats(lf_pool_t h, lf_pool_stats_t *out) {
  return guard([&]() -> lf_status_t {
    if (!h) return fail(LF_ERR_INVALID_ARG, "lf_pool_stats: pool is NULL");
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_pool_stats: out is NULL");
    if (out->size < sizeof(size_t) || out->size > 4096)
      return fail(LF_ERR_INVALID_ARG, "lf_pool_stats: out->size=%zu: initialise with LF_POOL_STATS_INIT", out->size);
    std::shared_ptr<Pool> pool = pool_of(h);
    if (!pool) return fail(LF_ERR_CLOSED, "lf_pool_stats: pool is not live (destroyed, or not a pool handle)");
    const PoolStats st = pool->stats();
    lf_pool_stats_t c = LF_POOL_STATS_INIT;
    c.hits = st.hits;
    c.misses = st.misses;
    c.returns = st.returns;
    c.drops = st.drops;
    c.in_use_buffers = st.in_use_buffers;
    c.in_use_bytes = st.in_use_bytes;
    c.pooled_bytes = st.pooled_bytes;
    c.hit_rate = st.hit_rate;
    std::memcpy(reinterpret_cast<char *>(out) + sizeof(size_t), reinterpret_cast<char *>(&c) + sizeof(size_t),
                std::min(out->size, sizeof c) - sizeof(size_t));
    return LF_OK;
  });
}

LF_API lf_status_t lf_pool_destroy(lf_pool_t h) {
  return guard([&]() -> lf_status_t {
    if (!h) return fail(LF_ERR_INVALID_ARG, "lf_pool_destroy: pool is NULL");
    std::shared_ptr<Pool> p;
    if (!pools().retire(h, [&](PoolSlot &s) { p = std::move(s.pool); }) || !p)
      return fail(LF_ERR_CLOSED, "lf_pool_destroy: pool is not live (destroyed twice?)");
    p.reset();  // the last reference destroys the pool; its buffers in use stay valid
    return LF_OK;
  });
}
