// The host <-> CUDA transfer manager. The batching and chunking plans are
// pure functions and run everywhere; everything that moves bytes needs a
// CUDA driver and a device, and skips with CUDA's own error text without one.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "lavaflow_features.h"
#include "memory/allocator.hpp"
#include "memory/cuda_rt.hpp"
#include "memory/device_copy.hpp"
#include "memory/transfer.hpp"

namespace lf::cuda {
namespace {

TEST(TransferPlan, ContiguousPiecesBecomeOneRun) {
  std::vector<Piece> p{{1000, 0, 10}, {1010, 0, 20}, {1030, 0, 5}};
  auto runs = coalesce(p);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].device, 1000u);
  EXPECT_EQ(runs[0].bytes, 35u);
  EXPECT_EQ(runs[0].packed_offset, 0u);
  EXPECT_EQ(runs[0].count, 3u);
}

TEST(TransferPlan, GapsAndReorderingSplitRuns) {
  // 1000+10 -> 1010 contiguous; 2000 a gap; 1990 goes backwards (not merged,
  // although 1990+10 == 2000: pieces keep their add order); 2000 after 1990 merges.
  std::vector<Piece> p{{1000, 0, 10}, {1010, 0, 10}, {2000, 0, 8}, {1990, 0, 10}, {2000, 0, 4}};
  auto runs = coalesce(p);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].device, 1000u);
  EXPECT_EQ(runs[0].bytes, 20u);
  EXPECT_EQ(runs[1].device, 2000u);
  EXPECT_EQ(runs[1].packed_offset, 20u);
  EXPECT_EQ(runs[1].bytes, 8u);
  EXPECT_EQ(runs[2].device, 1990u);
  EXPECT_EQ(runs[2].packed_offset, 28u);
  EXPECT_EQ(runs[2].bytes, 14u);
  EXPECT_EQ(runs[2].first, 3u);
  EXPECT_EQ(runs[2].count, 2u);
  // Packed offsets cover the batch without gaps.
  size_t total = 0;
  for (const cuda::Run &r : runs) {
    EXPECT_EQ(r.packed_offset, total);
    total += r.bytes;
  }
  EXPECT_EQ(total, 42u);
}

TEST(TransferPlan, ChunksCoverTheTransferAlternatingBuffers) {
  auto plan = chunk_plan(10 * 1024 + 1, 4096);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[0], (std::pair<size_t, size_t>{0, 4096}));
  EXPECT_EQ(plan[1], (std::pair<size_t, size_t>{4096, 4096}));
  EXPECT_EQ(plan[2], (std::pair<size_t, size_t>{8192, 2049}));
  EXPECT_TRUE(chunk_plan(0, 4096).empty());
}

class Transfer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = Runtime::get().available()) GTEST_SKIP() << *why;
    auto tm = TransferManager::create({.device = 0, .chunk = 256 << 10, .batch_bytes = 1 << 20});
    ASSERT_TRUE(tm) << tm.error().message;
    tm_ = std::move(*tm);
  }
  std::unique_ptr<TransferManager> tm_;
};

#if LAVAFLOW_HAVE_CUDA
TEST_F(Transfer, PageableRoundTripThroughStaging) {
  const Api &a = Runtime::get().api();
  const size_t n = (3 << 20) + 123;  // several chunks and a partial one
  void *dev = nullptr;
  ASSERT_EQ(a.Malloc(&dev, n), cudaSuccess);
  std::vector<unsigned char> src(n), back(n, 0);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<unsigned char>(i * 7 + 1);
  ASSERT_FALSE(tm_->is_pinned(src.data()));
  ASSERT_TRUE(tm_->h2d(dev, src.data(), n));
  ASSERT_TRUE(tm_->d2h(back.data(), dev, n));
  EXPECT_EQ(back, src);
  EXPECT_GE(tm_->stats().staged_chunks, 2u * 13u);
  a.Free(dev);
}

TEST_F(Transfer, PinnedMemoryGoesDirect) {
  const Api &a = Runtime::get().api();
  const size_t n = 8 << 20;
  void *dev = nullptr, *pinned = nullptr;
  ASSERT_EQ(a.Malloc(&dev, n), cudaSuccess);
  ASSERT_EQ(a.HostAlloc(&pinned, n, cudaHostAllocDefault), cudaSuccess);
  ASSERT_TRUE(tm_->is_pinned(pinned));
  std::memset(pinned, 0x5a, n);
  ASSERT_TRUE(tm_->h2d(dev, pinned, n));
  std::memset(pinned, 0, n);
  ASSERT_TRUE(tm_->d2h(pinned, dev, n));
  EXPECT_EQ(static_cast<unsigned char *>(pinned)[n - 1], 0x5a);
  EXPECT_EQ(tm_->stats().direct_copies, 2u);
  EXPECT_EQ(tm_->stats().staged_chunks, 0u);
  a.FreeHost(pinned);
  a.Free(dev);
}

TEST_F(Transfer, SmallPiecesTravelInBatches) {
  const Api &a = Runtime::get().api();
  void *dev = nullptr;
  ASSERT_EQ(a.Malloc(&dev, 1 << 20), cudaSuccess);
  auto *d = static_cast<char *>(dev);
  std::vector<uint32_t> vals(1000);
  std::iota(vals.begin(), vals.end(), 1);
  // Every other 64-byte line: 1000 pieces, 500 runs, one link copy.
  for (size_t i = 0; i < vals.size(); ++i) ASSERT_TRUE(tm_->add_h2d(d + i * 128, &vals[i], 4));
  ASSERT_TRUE(tm_->flush());
  EXPECT_EQ(tm_->stats().batches, 1u);
  EXPECT_EQ(tm_->stats().batched_pieces, 1000u);
  std::vector<uint32_t> back(vals.size(), 0);
  for (size_t i = 0; i < vals.size(); ++i) ASSERT_TRUE(tm_->add_d2h(&back[i], d + i * 128, 4));
  ASSERT_TRUE(tm_->flush());
  EXPECT_EQ(back, vals);
  EXPECT_EQ(tm_->stats().batches, 2u);
  a.Free(dev);
}

TEST_F(Transfer, BufferCopiesUseTheManager) {
  auto b = allocate(1 << 20, AllocOptions{.kind = MemoryKind::cuda_device, .strict = true});
  ASSERT_TRUE(b) << b.error().message;
  std::vector<char> src(1 << 20, 'x'), back(1 << 20);
  ASSERT_TRUE(buffer_write(**b, 0, src.data(), src.size()));
  ASSERT_TRUE(buffer_read(**b, 0, back.data(), back.size()));
  EXPECT_EQ(src, back);
  auto st = buffer_read(**b, 1, back.data(), back.size());
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_INVALID_ARG);
}
#endif

TEST(TransferUnavailable, CreateSaysWhy) {
  // Where CUDA cannot run, the manager must say so in CUDA's words rather than
  // fail later; where it can, creation succeeds.
  auto tm = TransferManager::create();
  if (auto why = Runtime::get().available()) {
    ASSERT_FALSE(tm);
    EXPECT_EQ(tm.error().code, LF_ERR_UNAVAILABLE);
    EXPECT_EQ(tm.error().message, *why);
    GTEST_SKIP() << "CUDA unavailable, as reported: " << *why;
  }
  ASSERT_TRUE(tm) << tm.error().message;
}

}  // namespace
}  // namespace lf::cuda
