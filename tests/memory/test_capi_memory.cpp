// The memory part of the C API, through liblavaflow.so: every kind, bad input,
// double free, pools and DLPack.
#include <dlpack/dlpack.h>
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace {

bool last_error_mentions(const char *what) { return std::strstr(lf_last_error(), what) != nullptr; }

TEST(CMemory, EveryKindAllocatesWritesReadsFrees) {
  for (int k = 0; k < LF_MEM_KIND_COUNT_; ++k) {
    const auto kind = static_cast<lf_memory_kind_t>(k);
    lf_buffer_t b = nullptr;
    ASSERT_EQ(lf_alloc(nullptr, 65536, kind, &b), LF_OK) << lf_memory_kind_string(kind) << ": " << lf_last_error();
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(lf_buffer_size(b), 65536u);
    EXPECT_EQ(lf_buffer_requested_kind(b), kind);
    const lf_memory_kind_t got = lf_buffer_kind(b);
    EXPECT_GE(static_cast<int>(got), 0);
    // Not the kind asked for: the reason says why.
    if (got != kind) {
      EXPECT_STRNE(lf_buffer_fallback_reason(b), "") << lf_memory_kind_string(kind);
    }
    if (void *p = lf_buffer_data(b)) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % lf_buffer_alignment(b), 0u);
      std::memset(p, 0x5a, 65536);
      EXPECT_EQ(static_cast<unsigned char *>(p)[65535], 0x5a);
    } else {
      EXPECT_TRUE(got == LF_MEM_CUDA_DEVICE || got == LF_MEM_VULKAN_DEVICE) << lf_memory_kind_string(got);
    }
    EXPECT_EQ(lf_free(b), LF_OK);
  }
}

TEST(CMemory, BadInputGivesErrors) {
  lf_buffer_t b = nullptr;
  EXPECT_EQ(lf_alloc(nullptr, 0, LF_MEM_HOST, &b), LF_ERR_INVALID_ARG);
  EXPECT_TRUE(last_error_mentions("0")) << lf_last_error();
  EXPECT_EQ(lf_alloc(nullptr, SIZE_MAX, LF_MEM_HOST, &b), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_alloc(nullptr, SIZE_MAX / 2, LF_MEM_HOST_SHARED, &b), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_alloc(nullptr, 64, static_cast<lf_memory_kind_t>(42), &b), LF_ERR_INVALID_ARG);
  EXPECT_TRUE(last_error_mentions("kind")) << lf_last_error();
  EXPECT_EQ(lf_alloc(nullptr, 64, static_cast<lf_memory_kind_t>(-1), &b), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_alloc(nullptr, 64, LF_MEM_KIND_COUNT_, &b), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_alloc(nullptr, 64, LF_MEM_HOST, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(b, nullptr) << "out-parameters are written only on success";

  lf_alloc_params_t p = LF_ALLOC_PARAMS_INIT;
  p.alignment = 3;
  EXPECT_EQ(lf_alloc_ex(nullptr, 64, LF_MEM_HOST, &p, &b), LF_ERR_INVALID_ARG);
  p = LF_ALLOC_PARAMS_INIT;
  p.size = 0;
  EXPECT_EQ(lf_alloc_ex(nullptr, 64, LF_MEM_HOST, &p, &b), LF_ERR_INVALID_ARG);
  p = LF_ALLOC_PARAMS_INIT;
  p.numa_node = -7;
  EXPECT_EQ(lf_alloc_ex(nullptr, 64, LF_MEM_HOST_NUMA, &p, &b), LF_ERR_INVALID_ARG);

  // Accessors on bad handles: neutral values and an error text, no crash.
  EXPECT_EQ(lf_buffer_data(nullptr), nullptr);
  EXPECT_EQ(lf_buffer_size(nullptr), 0u);
  EXPECT_EQ(static_cast<int>(lf_buffer_kind(nullptr)), -1);
  EXPECT_STREQ(lf_buffer_fallback_reason(nullptr), "");
  EXPECT_EQ(lf_buffer_numa_node(nullptr), -1);
  EXPECT_EQ(lf_buffer_alignment(nullptr), 0u);
  EXPECT_EQ(lf_free(nullptr), LF_ERR_INVALID_ARG);
  auto garbage = reinterpret_cast<lf_buffer_t>(uintptr_t{0xdeadbeef00000007});
  EXPECT_EQ(lf_buffer_size(garbage), 0u);
  EXPECT_EQ(lf_free(garbage), LF_ERR_CLOSED);
}

TEST(CMemory, DoubleFreeIsClosedEvenAfterTheSlotIsReused) {
  lf_buffer_t a = nullptr, b = nullptr;
  ASSERT_EQ(lf_alloc(nullptr, 128, LF_MEM_HOST, &a), LF_OK);
  ASSERT_EQ(lf_free(a), LF_OK);
  EXPECT_EQ(lf_free(a), LF_ERR_CLOSED);
  EXPECT_TRUE(last_error_mentions("not live")) << lf_last_error();
  ASSERT_EQ(lf_alloc(nullptr, 128, LF_MEM_HOST, &b), LF_OK);  // may take a's slot
  EXPECT_EQ(lf_free(a), LF_ERR_CLOSED);
  EXPECT_EQ(lf_buffer_size(a), 0u);
  EXPECT_EQ(lf_buffer_size(b), 128u) << "the stale handle must not reach the new buffer";
  EXPECT_EQ(lf_free(b), LF_OK);
}

TEST(CMemory, StrictFailsWithUnavailable) {
  lf_alloc_params_t p = LF_ALLOC_PARAMS_INIT;
  p.strict = 1;
  p.numa_node = 999;
  lf_buffer_t b = nullptr;
  EXPECT_EQ(lf_alloc_ex(nullptr, 4096, LF_MEM_HOST_NUMA, &p, &b), LF_ERR_UNAVAILABLE);
  // Node 999 does not exist, or this build has no libnuma at all: either way say so.
  EXPECT_TRUE(last_error_mentions("999") || last_error_mentions("without libnuma")) << lf_last_error();
  p = LF_ALLOC_PARAMS_INIT;
  p.strict = 1;
  p.device = 77;
  EXPECT_EQ(lf_alloc_ex(nullptr, 4096, LF_MEM_VULKAN_DEVICE, &p, &b), LF_ERR_UNAVAILABLE);
  // Without strict the same request falls back and says so.
  p.strict = 0;
  ASSERT_EQ(lf_alloc_ex(nullptr, 4096, LF_MEM_VULKAN_DEVICE, &p, &b), LF_OK);
  EXPECT_EQ(lf_buffer_kind(b), LF_MEM_HOST);
  EXPECT_NE(std::string(lf_buffer_fallback_reason(b)).find("vulkan"), std::string::npos);
  lf_free(b);
}

TEST(CMemory, KindStrings) {
  EXPECT_STREQ(lf_memory_kind_string(LF_MEM_HOST), "host");
  EXPECT_STREQ(lf_memory_kind_string(LF_MEM_HOST_SHARED), "host-shared");
  EXPECT_STREQ(lf_memory_kind_string(LF_MEM_CUDA_DEVICE), "cuda-device");
  EXPECT_STREQ(lf_memory_kind_string(static_cast<lf_memory_kind_t>(100)), "invalid");
}

TEST(CPool, LifecycleStatsAndErrors) {
  lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
  pp.kind = LF_MEM_HOST_SHARED;
  pp.cap_bytes = 1 << 20;
  lf_pool_t pool = nullptr;
  ASSERT_EQ(lf_pool_create(nullptr, &pp, &pool), LF_OK) << lf_last_error();
  lf_buffer_t a = nullptr, b = nullptr;
  ASSERT_EQ(lf_pool_acquire(pool, 1000, &a), LF_OK);
  EXPECT_EQ(lf_buffer_size(a), 1000u);
  EXPECT_EQ(lf_buffer_kind(a), LF_MEM_HOST_SHARED);
  ASSERT_EQ(lf_free(a), LF_OK);
  ASSERT_EQ(lf_pool_acquire(pool, 900, &b), LF_OK);
  lf_pool_stats_t st = LF_POOL_STATS_INIT;
  ASSERT_EQ(lf_pool_stats(pool, &st), LF_OK);
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.returns, 1u);
  EXPECT_EQ(st.in_use_buffers, 1u);
  EXPECT_EQ(st.in_use_bytes, 1024u);
  EXPECT_DOUBLE_EQ(st.hit_rate, 0.5);

  lf_buffer_t big = nullptr;
  EXPECT_EQ(lf_pool_acquire(pool, 2 << 20, &big), LF_ERR_NO_MEMORY) << "over the 1 MiB cap";
  EXPECT_EQ(big, nullptr);
  EXPECT_EQ(lf_pool_acquire(pool, 0, &big), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_pool_acquire(pool, 16, nullptr), LF_ERR_INVALID_ARG);
  lf_pool_stats_t bad = LF_POOL_STATS_INIT;
  bad.size = 0;
  EXPECT_EQ(lf_pool_stats(pool, &bad), LF_ERR_INVALID_ARG);

  ASSERT_EQ(lf_pool_destroy(pool), LF_OK);
  EXPECT_EQ(lf_pool_destroy(pool), LF_ERR_CLOSED);
  EXPECT_EQ(lf_pool_acquire(pool, 16, &a), LF_ERR_CLOSED);
  EXPECT_EQ(lf_pool_stats(pool, &st), LF_ERR_CLOSED);
  // A buffer of a destroyed pool stays valid and frees itself.
  std::memset(lf_buffer_data(b), 1, 900);
  EXPECT_EQ(lf_free(b), LF_OK);
  EXPECT_EQ(lf_pool_destroy(nullptr), LF_ERR_INVALID_ARG);
}

TEST(CPool, BadParams) {
  lf_pool_t pool = nullptr;
  lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
  pp.kind = static_cast<lf_memory_kind_t>(17);
  EXPECT_EQ(lf_pool_create(nullptr, &pp, &pool), LF_ERR_INVALID_ARG);
  pp = LF_POOL_PARAMS_INIT;
  pp.preset = static_cast<lf_pool_preset_t>(9);
  EXPECT_EQ(lf_pool_create(nullptr, &pp, &pool), LF_ERR_INVALID_ARG);
  pp = LF_POOL_PARAMS_INIT;
  pp.min_class = 1000;  // not a power of two
  EXPECT_EQ(lf_pool_create(nullptr, &pp, &pool), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_pool_create(nullptr, nullptr, nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(pool, nullptr);
  ASSERT_EQ(lf_pool_create(nullptr, nullptr, &pool), LF_OK) << "NULL params: the default preset";
  EXPECT_EQ(lf_pool_destroy(pool), LF_OK);
}

TEST(CDlpack, OwnershipMovesToTheTensor) {
  lf_buffer_t b = nullptr;
  ASSERT_EQ(lf_alloc(nullptr, 4004, LF_MEM_HOST, &b), LF_OK);
  DLManagedTensor *t = nullptr;
  EXPECT_EQ(lf_buffer_to_dlpack(b, kDLFloat, 64, &t), LF_ERR_INVALID_ARG) << "4004 bytes are not whole doubles";
  EXPECT_EQ(t, nullptr);
  EXPECT_EQ(lf_buffer_size(b), 4004u) << "on failure the buffer stays the caller's";
  EXPECT_EQ(lf_buffer_to_dlpack(b, kDLFloat, 32, nullptr), LF_ERR_INVALID_ARG);
  ASSERT_EQ(lf_buffer_to_dlpack(b, kDLFloat, 32, &t), LF_OK) << lf_last_error();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dl_tensor.shape[0], 1001);
  EXPECT_EQ(t->dl_tensor.device.device_type, kDLCPU);
  EXPECT_EQ(lf_free(b), LF_ERR_CLOSED) << "the handle was consumed";
  static_cast<float *>(t->dl_tensor.data)[1000] = 2.0f;
  t->deleter(t);
  EXPECT_EQ(lf_buffer_to_dlpack(nullptr, kDLFloat, 32, &t), LF_ERR_INVALID_ARG);
}

}  // namespace
