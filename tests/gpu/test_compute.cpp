// lf::vk::Compute and the host <-> Vulkan copies, in one process, on whatever
// Vulkan device is here (Mesa's lavapipe on machines without a GPU). Skips
// with the reason when no device qualifies.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "lavaflow_features.h"
#include "memory/allocator.hpp"
#include "memory/device_copy.hpp"
#include "memory/pool.hpp"
#include "memory/vulkan_compute.hpp"

#if LAVAFLOW_HAVE_VULKAN

namespace lf {
namespace {

using vk::shaders::FillPush;
using vk::shaders::TransformPush;

class Compute : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = kind_unavailable_reason(MemoryKind::vulkan_device)) GTEST_SKIP() << *why;
    auto dev = vk::Device::shared(0);
    ASSERT_TRUE(dev) << dev.error().message;
    dev_ = *dev;
  }
  BufferPtr alloc(size_t n, MemoryKind k = MemoryKind::vulkan_device) {
    auto b = allocate(n, AllocOptions{.kind = k, .strict = true});
    EXPECT_TRUE(b) << b.error().message;
    return b ? std::move(*b) : nullptr;
  }
  std::vector<uint32_t> read(const Buffer &b, size_t words, CopyOptions o = {}) {
    std::vector<uint32_t> v(words);
    auto st = buffer_read(b, 0, v.data(), words * 4, o);
    EXPECT_TRUE(st) << st.error().message;
    return v;
  }
  std::shared_ptr<vk::Device> dev_;
};

TEST_F(Compute, FillThenTransformComputesOnTheDevice) {
  constexpr uint32_t n = 100003;  // not a multiple of the work-group size
  BufferPtr b = alloc(n * 4);
  ASSERT_TRUE(b);
  auto fill = vk::Compute::create(dev_, vk::shaders::fill());
  ASSERT_TRUE(fill) << fill.error().message;
  auto xf = vk::Compute::create(dev_, vk::shaders::transform());
  ASSERT_TRUE(xf) << xf.error().message;

  FillPush fp{n, 7, 3};
  ASSERT_TRUE((*fill)->run(*b, &fp, sizeof fp, n));
  TransformPush tp{n, 5, 11};
  ASSERT_TRUE((*xf)->run(*b, &tp, sizeof tp, n));

  std::vector<uint32_t> got = read(*b, n);
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(got[i], (7 + i * 3) * 5 + 11) << "element " << i;
}

TEST_F(Compute, CountBeyondOneDispatchIsCoveredByTheShaderLoop) {
  // Ask for fewer invocations than elements: the grid-stride loop must still
  // touch every element, since the shader reads the count from push constants.
  constexpr uint32_t n = 4096;
  BufferPtr b = alloc(n * 4);
  ASSERT_TRUE(b);
  auto fill = vk::Compute::create(dev_, vk::shaders::fill());
  ASSERT_TRUE(fill);
  FillPush fp{n, 1, 1};
  ASSERT_TRUE((*fill)->run(*b, &fp, sizeof fp, 64));  // one work group
  std::vector<uint32_t> got = read(*b, n);
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(got[i], 1 + i);
}

TEST_F(Compute, OnlyTheRegionIsTouched) {
  // A region in the middle of an allocation: the words around it keep their values.
  constexpr size_t words = 4096;
  BufferPtr b = alloc(words * 4);
  ASSERT_TRUE(b);
  std::vector<uint32_t> init(words, 0xdeadbeef);
  ASSERT_TRUE(buffer_write(*b, 0, init.data(), words * 4));
  auto r = vk::region_of(*b);
  ASSERT_TRUE(r) << r.error().message;
  VkPhysicalDeviceProperties props{};
  vkGetPhysicalDeviceProperties(dev_->physical_device(), &props);
  const size_t align = std::max<size_t>(4, props.limits.minStorageBufferOffsetAlignment);
  vk::Region sub = *r;
  sub.offset = align;
  sub.size = 1024 * 4;
  auto fill = vk::Compute::create(dev_, vk::shaders::fill());
  ASSERT_TRUE(fill);
  FillPush fp{1024, 100, 1};
  ASSERT_TRUE((*fill)->run(sub, &fp, sizeof fp, 1024));
  std::vector<uint32_t> got = read(*b, words);
  const size_t first = align / 4;
  for (size_t i = 0; i < words; ++i) {
    if (i >= first && i < first + 1024)
      ASSERT_EQ(got[i], 100 + (i - first)) << i;
    else
      ASSERT_EQ(got[i], 0xdeadbeefu) << i;
  }
}

TEST_F(Compute, RejectsBadArguments) {
  BufferPtr b = alloc(4096);
  ASSERT_TRUE(b);
  auto fill = vk::Compute::create(dev_, vk::shaders::fill());
  ASSERT_TRUE(fill);
  FillPush fp{1024, 0, 0};
  auto st = (*fill)->run(*b, &fp, 4, 1024);  // wrong push-constant size
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_INVALID_ARG);

  auto r = vk::region_of(*b);
  ASSERT_TRUE(r);
  vk::Region out = *r;
  out.offset = r->allocation_size;  // past the end
  st = (*fill)->run(out, &fp, sizeof fp, 1);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_INVALID_ARG);
  EXPECT_NE(st.error().message.find("outside"), std::string::npos) << st.error().message;

  out = *r;
  out.offset = 4;  // below minStorageBufferOffsetAlignment
  out.size = 64;
  st = (*fill)->run(out, &fp, sizeof fp, 1);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("minStorageBufferOffsetAlignment"), std::string::npos) << st.error().message;

  vk::Shader bad{vk::shaders::fill().code, 6, 12, "bad"};
  auto c = vk::Compute::create(dev_, bad);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, LF_ERR_INVALID_ARG);

  auto host = allocate(4096, MemoryKind::host);
  ASSERT_TRUE(host);
  st = (*fill)->run(**host, &fp, sizeof fp, 1);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_INVALID_ARG);
}

TEST_F(Compute, StagedCopyRoundTripsWithoutTheMapping) {
  // lavapipe maps every memory type; force the DEVICE_LOCAL-only path
  // (vkCmdCopyBuffer through a staging buffer) and compare with the mapping.
  constexpr size_t n = 3 * 65536 + 12;
  BufferPtr b = alloc(n);
  ASSERT_TRUE(b);
  std::vector<unsigned char> src(n), back(n), mapped(n);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<unsigned char>(i * 131 + 7);
  ASSERT_TRUE(buffer_write(*b, 0, src.data(), n, {.force_staging = true}));
  ASSERT_TRUE(buffer_read(*b, 0, mapped.data(), n));  // through the mapping
  EXPECT_EQ(mapped, src);
  std::fill(back.begin(), back.end(), 0);
  ASSERT_TRUE(buffer_read(*b, 0, back.data(), n, {.force_staging = true}));
  EXPECT_EQ(back, src);
  // A sub-range at an odd offset.
  unsigned char five[5] = {1, 2, 3, 4, 5}, got[5] = {};
  ASSERT_TRUE(buffer_write(*b, 1001, five, 5, {.force_staging = true}));
  ASSERT_TRUE(buffer_read(*b, 1001, got, 5, {.force_staging = true}));
  EXPECT_EQ(std::memcmp(five, got, 5), 0);
  EXPECT_EQ(b->kind(), MemoryKind::vulkan_device);
}

TEST_F(Compute, CopiesRefuseRangesOutsideTheBuffer) {
  BufferPtr b = alloc(4096);
  ASSERT_TRUE(b);
  char x[16] = {};
  for (bool staged : {false, true}) {
    auto st = buffer_write(*b, 4090, x, 16, {.force_staging = staged});
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, LF_ERR_INVALID_ARG);
    st = buffer_read(*b, SIZE_MAX, x, 2, {.force_staging = staged});
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, LF_ERR_INVALID_ARG);
  }
}

TEST_F(Compute, RunsOnPoolLoansAndHostVisibleMemory) {
  auto pool = Pool::create(PoolOptions{.kind = MemoryKind::vulkan_device, .strict = true});
  ASSERT_TRUE(pool) << pool.error().message;
  auto loan = (*pool)->acquire(1000 * 4);
  ASSERT_TRUE(loan) << loan.error().message;
  auto fill = vk::Compute::create(dev_, vk::shaders::fill());
  ASSERT_TRUE(fill);
  FillPush fp{1000, 9, 2};
  ASSERT_TRUE((*fill)->run(**loan, &fp, sizeof fp, 1000));
  std::vector<uint32_t> got = read(**loan, 1000);
  for (uint32_t i = 0; i < 1000; ++i) ASSERT_EQ(got[i], 9 + 2 * i);

  if (auto why = kind_unavailable_reason(MemoryKind::vulkan_host_visible)) GTEST_SKIP() << *why;
  BufferPtr hv = alloc(256 * 4, MemoryKind::vulkan_host_visible);
  ASSERT_TRUE(hv);
  ASSERT_TRUE((*fill)->run(*hv, &fp, sizeof fp, 256));
  ASSERT_NE(hv->data(), nullptr);
  // Host-visible: the mapping shows the shader's writes once run() returned.
  const auto *p = static_cast<const uint32_t *>(hv->data());
  for (uint32_t i = 0; i < 256; ++i) ASSERT_EQ(p[i], 9 + 2 * i);
}

TEST_F(Compute, QueueDrainCompletes) { ASSERT_TRUE(vk::queue_drain(*dev_)); }

}  // namespace
}  // namespace lf

#else
TEST(Compute, NotBuilt) { GTEST_SKIP() << "lavaflow was built without Vulkan"; }
#endif
