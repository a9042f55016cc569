// Pools: accounting, caps, presets, lifetime, and the shared pool's segments.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdlib>
#include <set>

#include "mem_test_util.hpp"
#include "memory/pool.hpp"

namespace lf {
namespace {

constexpr size_t KiB = 1024, MiB = 1024 * KiB;

std::shared_ptr<Pool> make_pool(PoolOptions o) {
  auto p = Pool::create(o);
  EXPECT_TRUE(p) << (p ? "" : p.error().message);
  return p ? *p : nullptr;
}

BufferPtr take(Pool &p, size_t n) {
  auto b = p.acquire(n);
  EXPECT_TRUE(b) << (b ? "" : b.error().message);
  return b ? std::move(*b) : nullptr;
}

TEST(Pool, HitMissReturnAccounting) {
  auto pool = make_pool({.kind = MemoryKind::host});
  ASSERT_TRUE(pool);
  BufferPtr a = take(*pool, 1000);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->size(), 1000u);
  EXPECT_TRUE(a->flags() & buffer_flags::pooled);
  EXPECT_EQ(static_cast<PooledBuffer &>(*a).capacity(), 1024u);
  void *first = a->data();
  PoolStats s = pool->stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 0u);
  EXPECT_EQ(s.in_use_buffers, 1u);
  EXPECT_EQ(s.in_use_bytes, 1024u);
  a.reset();
  s = pool->stats();
  EXPECT_EQ(s.returns, 1u);
  EXPECT_EQ(s.in_use_buffers, 0u);
  EXPECT_EQ(s.pooled_bytes, 1024u);
  BufferPtr b = take(*pool, 600);  // same 1 KiB class
  ASSERT_TRUE(b);
  EXPECT_EQ(b->data(), first);
  EXPECT_EQ(b->size(), 600u);
  s = pool->stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_DOUBLE_EQ(s.hit_rate, 0.5);
  EXPECT_EQ(s.pooled_bytes, 0u);
  BufferPtr c = take(*pool, 2000);  // another class: a miss
  EXPECT_EQ(pool->stats().misses, 2u);
}

TEST(Pool, ClassesRoundUpWithinBounds) {
  auto pool = make_pool({.kind = MemoryKind::host, .min_class = 256, .max_class = 1 * MiB});
  ASSERT_TRUE(pool);
  EXPECT_EQ(pool->class_size(1), 256u);
  EXPECT_EQ(pool->class_size(256), 256u);
  EXPECT_EQ(pool->class_size(257), 512u);
  EXPECT_EQ(pool->class_size(1 * MiB), 1 * MiB);
  EXPECT_EQ(pool->class_size(1 * MiB + 1), 0u);  // unpooled
  EXPECT_FALSE(Pool::create({.min_class = 300}));
  EXPECT_FALSE(Pool::create({.min_class = 4096, .max_class = 1024}));
  EXPECT_FALSE(pool->acquire(0));
}

TEST(Pool, NeverGrowsPastItsCap) {
  auto pool = make_pool({.kind = MemoryKind::host, .min_class = 4 * KiB, .max_class = 64 * KiB, .cap_bytes = 64 * KiB});
  ASSERT_TRUE(pool);
  std::vector<BufferPtr> held;
  for (int i = 0; i < 16; ++i) held.push_back(take(*pool, 4 * KiB));
  auto over = pool->acquire(1);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, LF_ERR_NO_MEMORY);
  EXPECT_NE(over.error().message.find("cap"), std::string::npos) << over.error().message;
  EXPECT_FALSE(pool->acquire(100 * KiB)) << "unpooled requests count against the cap too";
  held.pop_back();
  EXPECT_TRUE(pool->acquire(4 * KiB)) << "a returned block serves the next request";
  PoolStats s = pool->stats();
  EXPECT_LE(s.in_use_bytes + s.pooled_bytes, 64 * KiB);
}

TEST(Pool, CachedBlocksOfOtherClassesAreFreedToMakeRoom) {
  auto pool = make_pool({.kind = MemoryKind::host, .min_class = 4 * KiB, .max_class = 64 * KiB, .cap_bytes = 64 * KiB});
  ASSERT_TRUE(pool);
  take(*pool, 64 * KiB).reset();  // cached: the whole cap
  EXPECT_EQ(pool->stats().pooled_bytes, 64 * KiB);
  BufferPtr b = take(*pool, 4 * KiB);
  ASSERT_TRUE(b);
  PoolStats s = pool->stats();
  EXPECT_EQ(s.drops, 1u);
  EXPECT_EQ(s.pooled_bytes, 0u);
}

TEST(Pool, LowMemoryPresetKeepsSmallFreeLists) {
  auto pool = make_pool({.kind = MemoryKind::host, .preset = PoolPreset::low_memory});
  ASSERT_TRUE(pool);
  const PoolOptions &o = pool->options();
  EXPECT_EQ(o.min_class, 64u);
  EXPECT_EQ(o.max_class, 4 * MiB);
  EXPECT_EQ(o.cap_bytes, 64 * MiB);
  EXPECT_EQ(o.max_cached_per_class, 4u);
  std::vector<BufferPtr> bufs;
  for (int i = 0; i < 6; ++i) bufs.push_back(take(*pool, 128));
  bufs.clear();
  PoolStats s = pool->stats();
  EXPECT_EQ(s.returns, 4u);
  EXPECT_EQ(s.drops, 2u);
}

TEST(Pool, DefaultAndHighThroughputPresets) {
  auto def = make_pool({.kind = MemoryKind::host});
  ASSERT_TRUE(def);
  EXPECT_EQ(def->options().min_class, 256u);
  EXPECT_EQ(def->options().max_class, 64 * MiB);
  EXPECT_EQ(def->options().cap_bytes, 1024 * MiB);
  EXPECT_EQ(def->stats().pooled_bytes, 0u);

  auto ht = make_pool({.kind = MemoryKind::host, .preset = PoolPreset::high_throughput});
  ASSERT_TRUE(ht);
  EXPECT_EQ(ht->options().min_class, 4 * KiB);
  EXPECT_EQ(ht->options().max_class, 256 * MiB);
  EXPECT_EQ(ht->options().cap_bytes, 4096 * MiB);
  // Preallocated: 4 blocks of every class from 4 KiB to 4 MiB, already faulted in.
  const PoolStats s = ht->stats();
  EXPECT_EQ(s.pooled_bytes, 4 * (8 * MiB - 4 * KiB));
  BufferPtr b = take(*ht, 1 * MiB);
  ASSERT_TRUE(b);
  EXPECT_EQ(ht->stats().hits, 1u);
  EXPECT_EQ(test::resident_pages(b->data(), 1 * MiB), 256u);
}

TEST(Pool, CapFromEnvironment) {
  ::setenv("LF_POOL_CAP", "8M", 1);
  auto pool = Pool::create({.kind = MemoryKind::host});
  ::unsetenv("LF_POOL_CAP");
  ASSERT_TRUE(pool);
  EXPECT_EQ((*pool)->options().cap_bytes, 8 * MiB);
}

TEST(Pool, BuffersOutliveTheirPool) {
  auto pool = make_pool({.kind = MemoryKind::host});
  ASSERT_TRUE(pool);
  BufferPtr b = take(*pool, 5000);
  ASSERT_TRUE(b);
  test::fill(b->data(), 5000, 1);
  pool.reset();
  EXPECT_TRUE(test::check(b->data(), 5000, 1));
  b.reset();  // frees itself; ASan/valgrind runs would flag a leak or a use after free
}

TEST(Pool, OversizeRequestsAreServedUnpooled) {
  auto pool = make_pool({.kind = MemoryKind::host, .min_class = 4 * KiB, .max_class = 64 * KiB});
  ASSERT_TRUE(pool);
  BufferPtr b = take(*pool, 100 * KiB);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size(), 100 * KiB);
  test::fill(b->data(), b->size(), 3);
  EXPECT_EQ(pool->stats().in_use_buffers, 1u);
  b.reset();
  PoolStats s = pool->stats();
  EXPECT_EQ(s.drops, 1u);
  EXPECT_EQ(s.pooled_bytes, 0u);
  EXPECT_EQ(s.in_use_bytes, 0u);
}

TEST(Pool, HugepagePoolUsesHugePageClasses) {
  auto pool = make_pool({.kind = MemoryKind::host_hugepage, .max_class = 4 * MiB});
  ASSERT_TRUE(pool);
  EXPECT_EQ(pool->options().min_class, 2 * MiB);
  BufferPtr b = take(*pool, 100);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind(), MemoryKind::host_hugepage) << b->fallback_reason();
  EXPECT_EQ(b->alignment(), 2 * MiB);
}

TEST(Pool, StrictPoolOfAnUnavailableKindFails) {
  auto p = Pool::create({.kind = MemoryKind::vulkan_device, .strict = true, .device = 77});
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, LF_ERR_UNAVAILABLE);
}

// ---- shared pool ---------------------------------------------------------------------------

TEST(SharedPool, BuffersAreSegmentOffsetLength) {
  auto pool = make_pool({.kind = MemoryKind::host_shared});
  ASSERT_TRUE(pool);
  std::vector<BufferPtr> bufs;
  std::set<size_t> offsets;
  for (size_t i = 0; i < 10; ++i) {
    bufs.push_back(take(*pool, 3000 + i));
    ASSERT_TRUE(bufs.back());
  }
  const SharedRef *r0 = bufs[0]->shared_ref();
  ASSERT_NE(r0, nullptr);
  // The whole segment, mapped once more, shows every buffer at its offset.
  void *seg = mmap(nullptr, r0->segment_size, PROT_READ, MAP_SHARED, r0->fd, 0);
  ASSERT_NE(seg, MAP_FAILED);
  for (size_t i = 0; i < bufs.size(); ++i) {
    const SharedRef *r = bufs[i]->shared_ref();
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->segment_id, r0->segment_id);
    EXPECT_EQ(r->fd, r0->fd);
    EXPECT_EQ(r->length, 3000 + i);
    EXPECT_EQ(r->offset % 4096, 0u) << "4 KiB class blocks are page aligned";
    EXPECT_GE(bufs[i]->alignment(), 4096u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(bufs[i]->data()) % bufs[i]->alignment(), 0u);
    EXPECT_TRUE(offsets.insert(r->offset).second) << "offsets are distinct";
    test::fill(bufs[i]->data(), r->length, static_cast<uint8_t>(i));
    EXPECT_TRUE(test::check(static_cast<char *>(seg) + r->offset, r->length, static_cast<uint8_t>(i)));
  }
  munmap(seg, r0->segment_size);
  PoolStats s = pool->stats();
  EXPECT_EQ(s.segments, 1u);
  EXPECT_EQ(s.segment_bytes, 64 * MiB);
  // Blocks come back to the free list and keep their place in the segment.
  const size_t off = bufs[3]->shared_ref()->offset;
  bufs[3].reset();
  BufferPtr again = take(*pool, 4000);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->shared_ref()->offset, off);
}

TEST(SharedPool, LargeBlocksGetTheirOwnSegment) {
  auto pool =
      make_pool({.kind = MemoryKind::host_shared, .min_class = 4 * KiB, .max_class = 4 * MiB, .segment_size = 1 * MiB});
  ASSERT_TRUE(pool);
  BufferPtr small = take(*pool, 4 * KiB);
  BufferPtr big = take(*pool, 3 * MiB);
  ASSERT_TRUE(small && big);
  EXPECT_NE(small->shared_ref()->segment_id, big->shared_ref()->segment_id);
  EXPECT_EQ(big->shared_ref()->offset, 0u);
  EXPECT_EQ(big->shared_ref()->segment_size, 4 * MiB);
  EXPECT_EQ(pool->stats().segments, 2u);
  test::fill(big->data(), 3 * MiB, 2);
  EXPECT_TRUE(test::check(big->data(), 3 * MiB, 2));
  // Filling the first segment opens a second shared one.
  std::vector<BufferPtr> more;
  for (int i = 0; i < 256; ++i) more.push_back(take(*pool, 4 * KiB));
  EXPECT_EQ(pool->stats().segments, 3u);
}

TEST(SharedPool, DroppedBlocksReturnTheirPagesAndTheirRange) {
  auto pool = make_pool({.kind = MemoryKind::host_shared, .preset = PoolPreset::low_memory, .segment_size = 1 * MiB});
  ASSERT_TRUE(pool);
  std::vector<BufferPtr> bufs;
  for (int i = 0; i < 8; ++i) bufs.push_back(take(*pool, 64 * KiB));
  for (auto &b : bufs) test::fill(b->data(), 64 * KiB, 1);
  const SharedRef ref = *bufs[7]->shared_ref();
  bufs.clear();  // 4 kept, 4 dropped (low-memory: 4 cached per class)
  EXPECT_EQ(pool->stats().drops, 4u);
  pool->trim();  // and now every block: its range is free and its pages gone
  void *seg = mmap(nullptr, ref.segment_size, PROT_READ, MAP_SHARED, ref.fd, 0);
  ASSERT_NE(seg, MAP_FAILED);
  EXPECT_EQ(test::resident_pages(seg, ref.segment_size), 0u);
  munmap(seg, ref.segment_size);
  // The whole segment can be carved again as one range.
  BufferPtr whole = take(*pool, 1 * MiB);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->shared_ref()->segment_id, ref.segment_id);
  EXPECT_EQ(pool->stats().segments, 1u);
}

TEST(SharedPool, ContextPoolFactory) {
  auto pool = make_shared_memory_pool();
  ASSERT_TRUE(pool);
  EXPECT_EQ(pool->kind(), MemoryKind::host_shared);
  BufferPtr b = take(*pool, 100);
  ASSERT_TRUE(b);
  EXPECT_NE(b->shared_ref(), nullptr);
}

}  // namespace
}  // namespace lf
