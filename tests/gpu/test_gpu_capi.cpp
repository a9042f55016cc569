// lavaflow_gpu.h through the shared library: copies to and from buffers of
// any kind, Vulkan kernels on lavaflow's device, interop accessors, and the
// errors for bad input. Vulkan parts skip where no Vulkan device qualifies,
// CUDA parts where CUDA cannot run (with the library's reason).
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <lavaflow/lavaflow_gpu.h>

#include <cstring>
#include <string>
#include <vector>

#include "lavaflow_features.h"

#if LAVAFLOW_HAVE_VULKAN
#include <cstdint>
#include "lf_shaders/fill.spv.h"
#include "lf_shaders/transform.spv.h"
#endif

namespace {

struct Push {
  uint32_t count, p1, p2;
};

// A strict Vulkan allocation, or the reason there is none.
[[maybe_unused]] lf_buffer_t vulkan_buffer(size_t bytes, std::string &why) {
  lf_alloc_params_t p = LF_ALLOC_PARAMS_INIT;
  p.strict = 1;
  lf_buffer_t b = nullptr;
  if (lf_alloc_ex(nullptr, bytes, LF_MEM_VULKAN_DEVICE, &p, &b) != LF_OK) {
    why = lf_last_error();
    return nullptr;
  }
  return b;
}

TEST(GpuCapi, HostBufferCopies) {
  lf_buffer_t b = nullptr;
  ASSERT_EQ(lf_alloc(nullptr, 64, LF_MEM_HOST, &b), LF_OK);
  const char msg[] = "hello, device";
  ASSERT_EQ(lf_buffer_write(b, 3, msg, sizeof msg), LF_OK);
  char back[sizeof msg] = {};
  ASSERT_EQ(lf_buffer_read(b, 3, back, sizeof back), LF_OK);
  EXPECT_STREQ(back, msg);
  EXPECT_EQ(std::memcmp(static_cast<char *>(lf_buffer_data(b)) + 3, msg, sizeof msg), 0);
  // Out of range, NULL and stale handles are errors, never accesses.
  EXPECT_EQ(lf_buffer_write(b, 60, msg, 5), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_buffer_read(b, SIZE_MAX, back, 1), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_buffer_read(b, 0, nullptr, 1), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_buffer_write(nullptr, 0, msg, 1), LF_ERR_INVALID_ARG);
  void *dp = nullptr;
  EXPECT_EQ(lf_buffer_device_pointer(b, &dp), LF_ERR_INVALID_ARG);
  lf_vulkan_buffer_info_t info = LF_VULKAN_BUFFER_INFO_INIT;
  EXPECT_EQ(lf_buffer_vulkan_info(b, &info), LF_ERR_INVALID_ARG);
  ASSERT_EQ(lf_free(b), LF_OK);
  EXPECT_EQ(lf_buffer_write(b, 0, msg, 1), LF_ERR_CLOSED);
}

TEST(GpuCapi, KernelCreateRejectsBadInput) {
  lf_vulkan_kernel_t k = nullptr;
  const uint32_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(lf_vulkan_kernel_create(0, junk, sizeof junk, 12, 64, &k), LF_ERR_INVALID_ARG);
  EXPECT_NE(std::string(lf_last_error()).find("SPIR-V"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_vulkan_kernel_create(0, nullptr, 0, 12, 64, &k), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_vulkan_kernel_run(nullptr, nullptr, nullptr, 0, 1), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_vulkan_kernel_destroy(nullptr), LF_ERR_INVALID_ARG);
#if LAVAFLOW_HAVE_VULKAN
  EXPECT_EQ(lf_vulkan_kernel_create(0, lf_spv_fill, sizeof lf_spv_fill, 130, 64, &k), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_vulkan_kernel_create(0, lf_spv_fill, sizeof lf_spv_fill, 12, 0, &k), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_vulkan_kernel_create(-1, lf_spv_fill, sizeof lf_spv_fill, 12, 64, &k), LF_ERR_INVALID_ARG);
  EXPECT_EQ(k, nullptr);  // out-parameters untouched on failure
#endif
}

#if LAVAFLOW_HAVE_VULKAN
TEST(GpuCapi, KernelsRunOnVulkanBuffers) {
  constexpr uint32_t n = 50000;
  std::string why;
  lf_buffer_t b = vulkan_buffer(n * 4, why);
  if (!b) GTEST_SKIP() << why;
  EXPECT_EQ(lf_buffer_kind(b), LF_MEM_VULKAN_DEVICE);

  lf_vulkan_kernel_t fill = nullptr, xf = nullptr;
  ASSERT_EQ(lf_vulkan_kernel_create(0, lf_spv_fill, sizeof lf_spv_fill, sizeof(Push), 64, &fill), LF_OK)
      << lf_last_error();
  ASSERT_EQ(lf_vulkan_kernel_create(0, lf_spv_transform, sizeof lf_spv_transform, sizeof(Push), 64, &xf), LF_OK)
      << lf_last_error();
  Push fp{n, 1000, 7}, tp{n, 3, 1};
  ASSERT_EQ(lf_vulkan_kernel_run(fill, b, &fp, sizeof fp, n), LF_OK) << lf_last_error();
  ASSERT_EQ(lf_vulkan_kernel_run(xf, b, &tp, sizeof tp, n), LF_OK) << lf_last_error();
  std::vector<uint32_t> got(n);
  ASSERT_EQ(lf_buffer_read(b, 0, got.data(), n * 4), LF_OK) << lf_last_error();
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(got[i], (1000 + 7 * i) * 3 + 1) << i;

  // Host writes are seen by the next kernel.
  std::vector<uint32_t> ones(n, 1);
  ASSERT_EQ(lf_buffer_write(b, 0, ones.data(), n * 4), LF_OK);
  ASSERT_EQ(lf_vulkan_kernel_run(xf, b, &tp, sizeof tp, n), LF_OK);
  ASSERT_EQ(lf_buffer_read(b, 0, got.data(), n * 4), LF_OK);
  for (uint32_t i = 0; i < n; ++i) ASSERT_EQ(got[i], 4u) << i;

  EXPECT_EQ(lf_vulkan_kernel_run(fill, b, &fp, 8, n), LF_ERR_INVALID_ARG);  // push size mismatch
  lf_buffer_t host = nullptr;
  ASSERT_EQ(lf_alloc(nullptr, 4096, LF_MEM_HOST, &host), LF_OK);
  EXPECT_EQ(lf_vulkan_kernel_run(fill, host, &fp, sizeof fp, 1), LF_ERR_INVALID_ARG);
  lf_free(host);

  lf_vulkan_buffer_info_t info = LF_VULKAN_BUFFER_INFO_INIT;
  ASSERT_EQ(lf_buffer_vulkan_info(b, &info), LF_OK) << lf_last_error();
  EXPECT_NE(info.device, nullptr);
  EXPECT_NE(info.queue, nullptr);
  EXPECT_NE(info.memory, 0u);
  EXPECT_EQ(info.offset, 0u);
  EXPECT_GE(info.allocation_size, uint64_t{n} * 4);
  EXPECT_EQ(info.imported, 0);
  uint8_t zero[16] = {};
  EXPECT_NE(std::memcmp(info.device_uuid, zero, 16), 0);

  ASSERT_EQ(lf_vulkan_kernel_destroy(fill), LF_OK);
  EXPECT_EQ(lf_vulkan_kernel_destroy(fill), LF_ERR_CLOSED);
  EXPECT_EQ(lf_vulkan_kernel_run(fill, b, &fp, sizeof fp, n), LF_ERR_CLOSED);
  ASSERT_EQ(lf_vulkan_kernel_destroy(xf), LF_OK);
  ASSERT_EQ(lf_free(b), LF_OK);
}
#endif

TEST(GpuCapi, CudaBufferCopiesOrTheReasonTheyCannotRun) {
  lf_alloc_params_t p = LF_ALLOC_PARAMS_INIT;
  p.strict = 1;
  lf_buffer_t b = nullptr;
  lf_status_t st = lf_alloc_ex(nullptr, 1 << 20, LF_MEM_CUDA_DEVICE, &p, &b);
  if (st != LF_OK) {
    EXPECT_EQ(st, LF_ERR_UNAVAILABLE);
    GTEST_SKIP() << lf_last_error();
  }
  std::vector<char> src(1 << 20, 'c'), back(1 << 20);
  ASSERT_EQ(lf_buffer_write(b, 0, src.data(), src.size()), LF_OK) << lf_last_error();
  ASSERT_EQ(lf_buffer_read(b, 0, back.data(), back.size()), LF_OK) << lf_last_error();
  EXPECT_EQ(src, back);
  void *dp = nullptr;
  ASSERT_EQ(lf_buffer_device_pointer(b, &dp), LF_OK);
  EXPECT_NE(dp, nullptr);
  lf_free(b);
}

}  // namespace
