// Concurrent acquire/release: no block handed to two holders at once, no
// block lost, counters that add up. Also run under ThreadSanitizer (label tsan).
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "mem_test_util.hpp"
#include "memory/pool.hpp"

namespace lf {
namespace {

constexpr int kThreads = 4;

TEST(PoolThreads, ConcurrentAcquireReleaseLosesNothing) {
  for (MemoryKind kind : {MemoryKind::host, MemoryKind::host_shared}) {
    auto pool = Pool::create({.kind = kind, .min_class = 64, .max_class = 256 * 1024});
    ASSERT_TRUE(pool) << pool.error().message;
    std::atomic<uint64_t> acquired{0}, failures{0};
    std::atomic<bool> overlap{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t + 1) * 7919u);
        std::vector<std::pair<BufferPtr, uint8_t>> held;
        for (int i = 0; i < 20000; ++i) {
          const size_t n = (size_t{1} << (6 + rng() % 12)) - rng() % 32;  // up to 128 KiB
          auto b = (*pool)->acquire(n);
          if (!b) {
            failures.fetch_add(1);
            continue;
          }
          acquired.fetch_add(1);
          // A pattern unique to this holder; a block handed to two holders at
          // once would have it overwritten before the check at release.
          const uint8_t seed = static_cast<uint8_t>(t * 64 + i);
          test::fill((*b)->data(), std::min<size_t>((*b)->size(), 256), seed);
          held.emplace_back(std::move(*b), seed);
          while (held.size() > 8 || (!held.empty() && rng() % 2)) {
            const size_t k = rng() % held.size();
            auto &[buf, s] = held[k];
            if (!test::check(buf->data(), std::min<size_t>(buf->size(), 256), s)) overlap = true;
            held.erase(held.begin() + static_cast<long>(k));
          }
        }
      });
    for (auto &th : threads) th.join();
    EXPECT_FALSE(overlap) << memory_kind_name(kind) << ": a block was handed to two holders";
    EXPECT_EQ(failures.load(), 0u);
    const PoolStats s = (*pool)->stats();
    EXPECT_EQ(s.in_use_buffers, 0u);
    EXPECT_EQ(s.in_use_bytes, 0u);
    EXPECT_EQ(s.hits + s.misses, acquired.load());
    EXPECT_EQ(s.returns + s.drops, acquired.load()) << "every acquired block came back";
    EXPECT_GT(s.hits, s.misses) << "steady state should be served from the free lists";
  }
}

TEST(PoolThreads, CapHoldsUnderContention) {
  const size_t cap = 256 * 1024;
  auto pool = Pool::create({.kind = MemoryKind::host, .min_class = 4096, .max_class = 64 * 1024, .cap_bytes = cap});
  ASSERT_TRUE(pool) << pool.error().message;
  std::atomic<uint64_t> refused{0};
  std::atomic<int64_t> outstanding{0};  // class bytes held by the threads, counted here, not by the pool
  std::atomic<bool> over{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) + 17u);
      std::vector<BufferPtr> held;
      auto release_first = [&] {
        outstanding -= static_cast<int64_t>(static_cast<PooledBuffer &>(*held.front()).capacity());
        held.erase(held.begin());
      };
      for (int i = 0; i < 5000; ++i) {
        auto b = (*pool)->acquire(size_t{4096} << (rng() % 5));
        if (!b) {
          EXPECT_EQ(b.error().code, LF_ERR_NO_MEMORY);
          refused.fetch_add(1);
          while (!held.empty()) release_first();
          continue;
        }
        if ((outstanding += static_cast<int64_t>(static_cast<PooledBuffer &>(**b).capacity())) >
            static_cast<int64_t>(cap))
          over = true;
        held.push_back(std::move(*b));
        if ((*pool)->stats().held_bytes > cap) over = true;
        if (held.size() > 6) release_first();
      }
      while (!held.empty()) release_first();
    });
  for (auto &th : threads) th.join();
  EXPECT_FALSE(over) << "pool held more than its cap";
  EXPECT_GT(refused.load(), 0u) << "4 threads x 6 blocks of up to 64 KiB must hit a 256 KiB cap";
  EXPECT_EQ((*pool)->stats().in_use_buffers, 0u);
}

}  // namespace
}  // namespace lf
