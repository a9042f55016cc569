// DLPack export: tensor fields, device types, and ownership.
#include <gtest/gtest.h>

#include "lavaflow_features.h"
#include "memory/allocator.hpp"
#include "memory/dlpack.hpp"
#include "memory/pool.hpp"

namespace lf {
namespace {

TEST(Dlpack, HostBufferAsFloatTensor) {
  auto b = allocate(4096, MemoryKind::host);
  ASSERT_TRUE(b);
  void *data = (*b)->data();
  auto t = to_dlpack(*b, kDLFloat, 32);
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(*b, nullptr) << "the tensor owns the buffer now";
  const DLTensor &d = (*t)->dl_tensor;
  EXPECT_EQ(d.data, data);
  EXPECT_EQ(d.device.device_type, kDLCPU);
  EXPECT_EQ(d.device.device_id, 0);
  EXPECT_EQ(d.ndim, 1);
  EXPECT_EQ(d.shape[0], 1024);
  ASSERT_NE(d.strides, nullptr);
  EXPECT_EQ(d.strides[0], 1);
  EXPECT_EQ(d.dtype.code, kDLFloat);
  EXPECT_EQ(d.dtype.bits, 32);
  EXPECT_EQ(d.dtype.lanes, 1);
  EXPECT_EQ(d.byte_offset, 0u);
  static_cast<float *>(d.data)[1023] = 1.5f;  // the memory is live
  (*t)->deleter(*t);
}

TEST(Dlpack, DeleterReturnsPoolBuffersToTheirPool) {
  auto pool = Pool::create({.kind = MemoryKind::host});
  ASSERT_TRUE(pool);
  auto b = (*pool)->acquire(1000);
  ASSERT_TRUE(b);
  auto t = to_dlpack(*b, kDLUInt, 8);
  ASSERT_TRUE(t);
  EXPECT_EQ((*t)->dl_tensor.shape[0], 1000);
  EXPECT_EQ((*pool)->stats().in_use_buffers, 1u);
  (*t)->deleter(*t);
  const PoolStats s = (*pool)->stats();
  EXPECT_EQ(s.in_use_buffers, 0u);
  EXPECT_EQ(s.returns, 1u);
}

TEST(Dlpack, BadRequestsLeaveTheBufferWithTheCaller) {
  auto b = allocate(1001, MemoryKind::host);
  ASSERT_TRUE(b);
  auto odd = to_dlpack(*b, kDLFloat, 32);  // 1001 bytes is not whole floats
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().code, LF_ERR_INVALID_ARG);
  EXPECT_NE(*b, nullptr);
  EXPECT_FALSE(to_dlpack(*b, kDLInt, 12));  // not whole bytes
  EXPECT_FALSE(to_dlpack(*b, 200, 8));      // unknown type code
  EXPECT_FALSE(to_dlpack(*b, kDLInt, 0));
  EXPECT_NE(*b, nullptr);
  BufferPtr none;
  EXPECT_FALSE(to_dlpack(none, kDLInt, 8));
}

TEST(Dlpack, HostDeviceTypes) {
  auto shared = allocate(64, MemoryKind::host_shared);
  ASSERT_TRUE(shared);
  EXPECT_EQ(dlpack_device(**shared).device_type, kDLCPU);
  auto pinned = allocate(4096, MemoryKind::host_pinned);
  ASSERT_TRUE(pinned);
  // CUDA host only when CUDA really registered it; mlock memory is plain CPU memory.
  EXPECT_EQ(dlpack_device(**pinned).device_type,
            ((*pinned)->flags() & buffer_flags::cuda_registered) ? kDLCUDAHost : kDLCPU);
}

TEST(Dlpack, VulkanDeviceType) {
  if (auto why = kind_unavailable_reason(MemoryKind::vulkan_device)) GTEST_SKIP() << *why;
  auto vk = allocate(4096, AllocOptions{.kind = MemoryKind::vulkan_device, .strict = true});
  ASSERT_TRUE(vk) << vk.error().message;
  const uint64_t handle = (*vk)->device_handle();
  auto t = to_dlpack(*vk, kDLFloat, 32);
  ASSERT_TRUE(t);
  EXPECT_EQ((*t)->dl_tensor.device.device_type, kDLVulkan);
  EXPECT_EQ((*t)->dl_tensor.device.device_id, 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*t)->dl_tensor.data), handle);
  (*t)->deleter(*t);
}

TEST(Dlpack, CudaDeviceType) {
  if (auto why = kind_unavailable_reason(MemoryKind::cuda_device)) GTEST_SKIP() << *why;
  auto cu = allocate(4096, AllocOptions{.kind = MemoryKind::cuda_device, .strict = true});
  ASSERT_TRUE(cu) << cu.error().message;
  const uint64_t ptr = (*cu)->device_handle();
  auto t = to_dlpack(*cu, kDLFloat, 32);
  ASSERT_TRUE(t);
  EXPECT_EQ((*t)->dl_tensor.device.device_type, kDLCUDA);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*t)->dl_tensor.data), ptr);
  (*t)->deleter(*t);
  auto pinned = allocate(4096, MemoryKind::host_pinned);
  ASSERT_TRUE(pinned);
  EXPECT_EQ(dlpack_device(**pinned).device_type, kDLCUDAHost) << "with a CUDA device, pinned memory is CUDA's";
}

}  // namespace
}  // namespace lf
