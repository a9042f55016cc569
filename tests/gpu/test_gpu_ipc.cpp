// GPU IPC between two processes, through the C API, for real on whatever
// Vulkan device is here (Mesa's lavapipe without a GPU): a compute shader
// writes a buffer in rank 0, rank 1 receives it over a channel opened for
// Vulkan memory ("vulkan-ipc"), runs a shader on the same memory, and rank 0
// checks the result. Also: the transport can be excluded (shm then stages a
// copy) or be unusable for a peer (strict mode fails), GPU writes still in
// flight when the buffer is sent are complete before the receiver reads, and
// bad descriptors and announcements break the channel with LF_ERR_PROTOCOL.
// CUDA tests skip with CUDA's error text where there is no driver.
//
// Both ranks probe Vulkan before lf_init and skip together when it is absent.
#include <fcntl.h>
#include <lavaflow/lavaflow_gpu.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <dirent.h>

#include <fstream>
#include <string>
#include <vector>

#include "lavaflow_features.h"
#include "multiprocess.hpp"
#include "transport/gpu/gpu_ipc.hpp"
#include "transport/shm/shm_protocol.hpp"

#if LAVAFLOW_HAVE_VULKAN
#include <vulkan/vulkan.h>

#include <cstdint>
#include "lf_shaders/fill.spv.h"
#include "lf_shaders/test_slow_fill.spv.h"
#include "lf_shaders/transform.spv.h"
#endif

using namespace lftest;
namespace shm = lf::shm;

namespace {

constexpr uint64_t kData = 1, kDone = 2, kNext = 3;

struct Push {
  uint32_t count, p1, p2;
};

/// A channel for `kind` memory to the other rank, after lf_init.
struct Conn {
  lf_context_t ctx = nullptr;
  lf_channel_t ch = nullptr;
};

Conn open_gpu(Rank &r, lf_memory_kind_t kind, int strict = 0) {
  Conn c;
  REQUIRE_OK(r, lf_init(&c.ctx));
  lf_channel_params_t p = LF_CHANNEL_PARAMS_INIT;
  p.memory_kind = kind;
  p.strict = strict;
  REQUIRE_OK(r, lf_channel_open_ex(c.ctx, 1 - r.rank, &p, &c.ch));
  return c;
}

void close_all(Rank &r, Conn &c) {
  REQUIRE_OK(r, lf_channel_close(c.ch));
  REQUIRE_OK(r, lf_finalize(c.ctx));
}

#if LAVAFLOW_HAVE_VULKAN

/// Skip (both ranks decide alike) when no Vulkan device memory can be had.
void need_vulkan(Rank &r) {
  lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
  ap.strict = 1;
  lf_buffer_t b = nullptr;
  if (lf_alloc_ex(nullptr, 4096, LF_MEM_VULKAN_DEVICE, &ap, &b) != LF_OK) SKIP_RANK(r, "%s", lf_last_error());
  lf_free(b);
}

lf_vulkan_kernel_t kernel(Rank &r, const uint32_t *code, size_t bytes) {
  lf_vulkan_kernel_t k = nullptr;
  REQUIRE_OK(r, lf_vulkan_kernel_create(0, code, bytes, sizeof(Push), 64, &k));
  return k;
}

uint32_t expected(uint32_t i) { return (7 + 3 * i) * 5 + 11; }

class VulkanIpc : public MultiProcess {};

TEST_F(VulkanIpc, ShaderInOneProcessShaderInTheOtherCheckedByTheFirst) {
  run(2, [](Rank &r) {
    need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    REQUIRE(r, std::string(lf_channel_transport(c.ch)) == "vulkan-ipc", "transport %s (%s)", lf_channel_transport(c.ch),
            lf_channel_reason(c.ch));
    constexpr uint32_t n = 1 << 18;
    if (r.rank == 0) {
      // A pool: the buffer comes back to it when rank 1 frees its view, so
      // rank 0 can look at the very memory rank 1's shader wrote.
      lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
      pp.kind = LF_MEM_VULKAN_DEVICE;
      pp.strict = 1;
      lf_pool_t pool;
      REQUIRE_OK(r, lf_pool_create(c.ctx, &pp, &pool));
      lf_buffer_t buf;
      REQUIRE_OK(r, lf_pool_acquire(pool, n * 4, &buf));
      lf_vulkan_kernel_t fill = kernel(r, lf_spv_fill, sizeof lf_spv_fill);
      Push fp{n, 7, 3};
      REQUIRE_OK(r, lf_vulkan_kernel_run(fill, buf, &fp, sizeof fp, n));
      lf_request_t req;
      REQUIRE_OK(r, lf_isend_buffer(c.ch, buf, kData, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
      char done;
      REQUIRE_OK(r, lf_recv(c.ch, &done, 1, kDone, nullptr));
      // Rank 1 freed its view before saying done: the block is back.
      lf_buffer_t again;
      REQUIRE_OK(r, lf_pool_acquire(pool, n * 4, &again));
      lf_pool_stats_t s = LF_POOL_STATS_INIT;
      REQUIRE_OK(r, lf_pool_stats(pool, &s));
      REQUIRE(r, s.hits == 1 && s.misses == 1, "hits %llu misses %llu", (unsigned long long)s.hits,
              (unsigned long long)s.misses);
      std::vector<uint32_t> got(n);
      REQUIRE_OK(r, lf_buffer_read(again, 0, got.data(), n * 4));
      for (uint32_t i = 0; i < n; ++i)
        REQUIRE(r, got[i] == expected(i), "element %u is %u, want %u: rank 1's shader did not write our memory", i,
                got[i], expected(i));
      REQUIRE_OK(r, lf_free(again));
      REQUIRE_OK(r, lf_vulkan_kernel_destroy(fill));
      REQUIRE_OK(r, lf_pool_destroy(pool));
    } else {
      lf_request_t req;
      lf_buffer_t view;
      REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
      lf_completion_t info = LF_COMPLETION_INIT;
      REQUIRE_OK(r, lf_wait_buffer(req, &view, &info));
      REQUIRE(r, info.message_bytes == n * 4, "message of %zu bytes", info.message_bytes);
      REQUIRE(r, lf_buffer_kind(view) == LF_MEM_VULKAN_DEVICE, "kind %s", lf_memory_kind_string(lf_buffer_kind(view)));
      lf_vulkan_buffer_info_t vi = LF_VULKAN_BUFFER_INFO_INIT;
      REQUIRE_OK(r, lf_buffer_vulkan_info(view, &vi));
      REQUIRE(r, vi.imported == 1, "the view is not an import of rank 0's memory");
      lf_vulkan_kernel_t xf = kernel(r, lf_spv_transform, sizeof lf_spv_transform);
      Push tp{n, 5, 11};
      REQUIRE_OK(r, lf_vulkan_kernel_run(xf, view, &tp, sizeof tp, n));
      REQUIRE_OK(r, lf_free(view));  // returns the buffer to rank 0's pool
      REQUIRE_OK(r, lf_send(c.ch, "d", 1, kDone));
      REQUIRE_OK(r, lf_vulkan_kernel_destroy(xf));
    }
    close_all(r, c);
  });
}

TEST_F(VulkanIpc, ManyMessagesOfPooledBuffersAndCopyReceives) {
  // 64 rounds over two pool blocks: after the first message of each block
  // only descriptors travel (the import is cached). Every other receive is a
  // plain lf_recv into host memory, which copies out of the view.
  run(2, [](Rank &r) {
    need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    REQUIRE(r, std::string(lf_channel_transport(c.ch)) == "vulkan-ipc", "transport %s", lf_channel_transport(c.ch));
    constexpr uint32_t n = 4096;
    if (r.rank == 0) {
      lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
      pp.kind = LF_MEM_VULKAN_DEVICE;
      pp.strict = 1;
      lf_pool_t pool;
      REQUIRE_OK(r, lf_pool_create(c.ctx, &pp, &pool));
      lf_vulkan_kernel_t fill = kernel(r, lf_spv_fill, sizeof lf_spv_fill);
      for (uint32_t round = 0; round < 64; ++round) {
        lf_buffer_t b;
        REQUIRE_OK(r, lf_pool_acquire(pool, n * 4, &b));
        Push fp{n, round, 1};
        REQUIRE_OK(r, lf_vulkan_kernel_run(fill, b, &fp, sizeof fp, n));
        lf_request_t req;
        REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kData, &req));
        REQUIRE_OK(r, lf_wait(req, nullptr));
        char ack;
        REQUIRE_OK(r, lf_recv(c.ch, &ack, 1, kDone, nullptr));
      }
      lf_pool_stats_t s = LF_POOL_STATS_INIT;
      REQUIRE_OK(r, lf_pool_stats(pool, &s));
      REQUIRE(r, s.misses <= 2 && s.hits >= 62, "hits %llu misses %llu", (unsigned long long)s.hits,
              (unsigned long long)s.misses);
      REQUIRE_OK(r, lf_vulkan_kernel_destroy(fill));
      REQUIRE_OK(r, lf_pool_destroy(pool));
    } else {
      std::vector<uint32_t> got(n);
      for (uint32_t round = 0; round < 64; ++round) {
        if (round % 2) {
          size_t bytes = 0;
          REQUIRE_OK(r, lf_recv(c.ch, got.data(), n * 4, kData, &bytes));
          REQUIRE(r, bytes == n * 4, "received %zu bytes", bytes);
        } else {
          lf_request_t req;
          lf_buffer_t view;
          REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
          REQUIRE_OK(r, lf_wait_buffer(req, &view, nullptr));
          REQUIRE_OK(r, lf_buffer_read(view, 0, got.data(), n * 4));
          REQUIRE_OK(r, lf_free(view));
        }
        for (uint32_t i = 0; i < n; ++i) REQUIRE(r, got[i] == round + i, "round %u element %u: %u", round, i, got[i]);
        REQUIRE_OK(r, lf_send(c.ch, "a", 1, kDone));
      }
    }
    close_all(r, c);
  });
}

/// Mappings of lavapipe memory in this process (its OPAQUE_FDs are memfds
/// named "llvmpipe memory fd"): one per imported allocation on the receiver.
int lavapipe_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) n += line.find("llvmpipe memory fd") != std::string::npos;
  return n;
}

TEST_F(VulkanIpc, ImportCacheKeepsPoolBlocksAndBoundsFreedAllocations) {
  // Rank 1 imports, never allocates: its lavapipe mappings are its imports.
  // 40 messages from 2 pool blocks leave 2 imports; then 300 fresh
  // allocations (each freed by rank 0 once released) leave at most the
  // cache's 256 -- not 300.
  run(2, [](Rank &r) {
    need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    constexpr int pooled = 40, fresh = 300;
    if (r.rank == 0) {
      lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
      pp.kind = LF_MEM_VULKAN_DEVICE;
      pp.strict = 1;
      lf_pool_t pool;
      REQUIRE_OK(r, lf_pool_create(c.ctx, &pp, &pool));
      auto send = [&](lf_buffer_t b) {
        lf_request_t req;
        REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kData, &req));
        REQUIRE_OK(r, lf_wait(req, nullptr));
      };
      char ack;
      for (int i = 0; i < pooled / 2; ++i) {
        lf_buffer_t a, b;  // two blocks on loan at once: the pool's same two each round
        REQUIRE_OK(r, lf_pool_acquire(pool, 4096, &a));
        REQUIRE_OK(r, lf_pool_acquire(pool, 4096, &b));
        send(a);
        send(b);
        REQUIRE_OK(r, lf_recv(c.ch, &ack, 1, kDone, nullptr));
        REQUIRE_OK(r, lf_recv(c.ch, &ack, 1, kDone, nullptr));
      }
      for (int i = 0; i < fresh; ++i) {
        lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
        ap.strict = 1;
        lf_buffer_t b;
        REQUIRE_OK(r, lf_alloc_ex(c.ctx, 4096, LF_MEM_VULKAN_DEVICE, &ap, &b));
        send(b);
        REQUIRE_OK(r, lf_recv(c.ch, &ack, 1, kDone, nullptr));
      }
      REQUIRE_OK(r, lf_pool_destroy(pool));
    } else {
      const int before = lavapipe_mappings();
      int after_pooled = 0;
      bool visible = false;  // whether this driver's imports show up as mappings at all
      for (int i = 0; i < pooled + fresh; ++i) {
        lf_request_t req;
        lf_buffer_t view;
        REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
        REQUIRE_OK(r, lf_wait_buffer(req, &view, nullptr));
        if (i == 0) visible = lavapipe_mappings() > before;  // the view is alive: its import is mapped
        REQUIRE_OK(r, lf_free(view));
        REQUIRE_OK(r, lf_send(c.ch, "a", 1, kDone));
        if (i == pooled - 1) after_pooled = lavapipe_mappings() - before;
      }
      const int after_fresh = lavapipe_mappings() - before;
      if (!visible) SKIP_RANK(r, "this Vulkan driver's imports are not visible as lavapipe memfd mappings");
      REQUIRE(r, after_pooled >= 1 && after_pooled <= 2, "%d imports kept for 2 pool blocks after their views went",
              after_pooled);
      REQUIRE(r, after_fresh <= 256 + 2 && after_fresh >= 200, "%d imports after %d fresh allocations", after_fresh,
              fresh);
    }
    close_all(r, c);
  });
}

TEST_F(VulkanIpc, ExcludedByLfTransportsShmStagesACopy) {
  env = {{"LF_TRANSPORTS", "^vulkan-ipc"}};
  run(2, [](Rank &r) {
    need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    REQUIRE(r, std::string(lf_channel_transport(c.ch)) == "shm", "transport %s", lf_channel_transport(c.ch));
    REQUIRE(r, std::string(lf_channel_reason(c.ch)).find("vulkan-ipc: excluded by LF_TRANSPORTS") != std::string::npos,
            "reason: %s", lf_channel_reason(c.ch));
    constexpr uint32_t n = 100000;
    if (r.rank == 0) {
      lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
      ap.strict = 1;
      lf_buffer_t b;
      REQUIRE_OK(r, lf_alloc_ex(c.ctx, n * 4, LF_MEM_VULKAN_DEVICE, &ap, &b));
      lf_vulkan_kernel_t fill = kernel(r, lf_spv_fill, sizeof lf_spv_fill);
      Push fp{n, 5, 9};
      REQUIRE_OK(r, lf_vulkan_kernel_run(fill, b, &fp, sizeof fp, n));
      lf_request_t req;
      REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kData, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
      REQUIRE_OK(r, lf_vulkan_kernel_destroy(fill));
    } else {
      lf_request_t req;
      lf_buffer_t got;
      REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
      REQUIRE_OK(r, lf_wait_buffer(req, &got, nullptr));
      // A copy in host memory, not a view of rank 0's allocation.
      REQUIRE(r, lf_buffer_kind(got) == LF_MEM_HOST, "kind %s", lf_memory_kind_string(lf_buffer_kind(got)));
      const auto *p = static_cast<const uint32_t *>(lf_buffer_data(got));
      for (uint32_t i = 0; i < n; ++i) REQUIRE(r, p[i] == 5 + 9 * i, "element %u is %u", i, p[i]);
      REQUIRE_OK(r, lf_free(got));
    }
    close_all(r, c);
  });
}

TEST_F(VulkanIpc, StrictModeRefusesTheFallback) {
  env = {{"LF_TRANSPORTS", "^vulkan-ipc"}};
  run(2, [](Rank &r) {
    need_vulkan(r);
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_params_t p = LF_CHANNEL_PARAMS_INIT;
    p.memory_kind = LF_MEM_VULKAN_DEVICE;
    p.strict = 1;
    lf_channel_t ch = nullptr;
    REQUIRE_ST(r, LF_ERR_UNAVAILABLE, lf_channel_open_ex(ctx, 1 - r.rank, &p, &ch));
    REQUIRE(r, std::string(lf_last_error()).find("vulkan-ipc") != std::string::npos, "error: %s", lf_last_error());
    REQUIRE(r, ch == nullptr, "out-parameter written on failure");
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

TEST_F(VulkanIpc, PeerWithoutTheDeviceGetsAStagedCopyAndSaysWhy) {
  // Rank 1 sees no Vulkan driver at all (the loader finds no ICD): vulkan-ipc
  // cannot start there, the channel falls back to shm and names the reason.
  // Rank 1 cannot probe for itself, so the parent asks a throwaway child.
  if (std::string why = probe_in_child([] {
        lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
        ap.strict = 1;
        lf_buffer_t b = nullptr;
        if (lf_alloc_ex(nullptr, 4096, LF_MEM_VULKAN_DEVICE, &ap, &b) != LF_OK) return std::string(lf_last_error());
        lf_free(b);
        return std::string();
      });
      !why.empty())
    GTEST_SKIP() << why;
  env_rank[1] = {{"VK_ICD_FILENAMES", "/nonexistent/lavaflow-test-icd.json"},
                 {"VK_DRIVER_FILES", "/nonexistent/lavaflow-test-icd.json"}};
  run(2, [](Rank &r) {
    if (r.rank == 0) need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    REQUIRE(r, std::string(lf_channel_transport(c.ch)) == "shm", "transport %s", lf_channel_transport(c.ch));
    const std::string why = lf_channel_reason(c.ch);
    REQUIRE(r, why.find("vulkan-ipc: not available") != std::string::npos, "reason: %s", why.c_str());
    constexpr uint32_t n = 1000;
    if (r.rank == 0) {
      lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
      ap.strict = 1;
      lf_buffer_t b;
      REQUIRE_OK(r, lf_alloc_ex(c.ctx, n * 4, LF_MEM_VULKAN_DEVICE, &ap, &b));
      lf_vulkan_kernel_t fill = kernel(r, lf_spv_fill, sizeof lf_spv_fill);
      Push fp{n, 1, 2};
      REQUIRE_OK(r, lf_vulkan_kernel_run(fill, b, &fp, sizeof fp, n));
      REQUIRE_OK(r, lf_send(c.ch, lf_buffer_data(b), n * 4, kData));
      lf_request_t req;
      REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kNext, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
      REQUIRE_OK(r, lf_vulkan_kernel_destroy(fill));
    } else {
      std::vector<uint32_t> got(n);
      REQUIRE_OK(r, lf_recv(c.ch, got.data(), n * 4, kData, nullptr));
      for (uint32_t i = 0; i < n; ++i) REQUIRE(r, got[i] == 1 + 2 * i, "element %u", i);
      lf_request_t req;
      lf_buffer_t b;
      REQUIRE_OK(r, lf_irecv_buffer(c.ch, kNext, &req));
      REQUIRE_OK(r, lf_wait_buffer(req, &b, nullptr));
      REQUIRE(r, lf_buffer_kind(b) == LF_MEM_HOST, "kind %s", lf_memory_kind_string(lf_buffer_kind(b)));
      REQUIRE(r, static_cast<const uint32_t *>(lf_buffer_data(b))[n - 1] == 1 + 2 * (n - 1), "last element");
      REQUIRE_OK(r, lf_free(b));
    }
    close_all(r, c);
  });
}

TEST_F(VulkanIpc, ViewOutlivesTheChannel) {
  run(2, [](Rank &r) {
    need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    if (r.rank == 0) {
      lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
      ap.strict = 1;
      lf_buffer_t b;
      REQUIRE_OK(r, lf_alloc_ex(c.ctx, 4096, LF_MEM_VULKAN_DEVICE, &ap, &b));
      lf_vulkan_kernel_t fill = kernel(r, lf_spv_fill, sizeof lf_spv_fill);
      Push fp{1024, 42, 0};
      REQUIRE_OK(r, lf_vulkan_kernel_run(fill, b, &fp, sizeof fp, 1024));
      lf_request_t req;
      REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kData, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
      REQUIRE_OK(r, lf_vulkan_kernel_destroy(fill));
      char done;
      REQUIRE_OK(r, lf_recv(c.ch, &done, 1, kDone, nullptr));
      close_all(r, c);
    } else {
      lf_request_t req;
      lf_buffer_t view;
      REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
      REQUIRE_OK(r, lf_wait_buffer(req, &view, nullptr));
      REQUIRE_OK(r, lf_send(c.ch, "d", 1, kDone));
      close_all(r, c);  // the channel and context go first
      uint32_t last = 0;
      REQUIRE_OK(r, lf_buffer_read(view, 4092, &last, 4));
      REQUIRE(r, last == 42, "last word %u", last);
      REQUIRE_OK(r, lf_free(view));
    }
  });
}

// ---- synchronisation ------------------------------------------------------------------

/// A dispatch of the slow shader submitted with raw Vulkan on lavaflow's
/// device and queue, not waited for: GPU work still in flight at send time.
struct RawDispatch {
  VkDevice dev = VK_NULL_HANDLE;
  VkShaderModule mod = VK_NULL_HANDLE;
  VkDescriptorSetLayout dsl = VK_NULL_HANDLE;
  VkPipelineLayout pl = VK_NULL_HANDLE;
  VkPipeline pipe = VK_NULL_HANDLE;
  VkDescriptorPool dp = VK_NULL_HANDLE;
  VkBuffer buf = VK_NULL_HANDLE;
  VkCommandPool cp = VK_NULL_HANDLE;

  bool submit(const lf_vulkan_buffer_info_t &vi, uint32_t count, uint32_t rounds) {
    dev = static_cast<VkDevice>(vi.device);
    VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    smci.codeSize = sizeof lf_spv_test_slow_fill;
    smci.pCode = lf_spv_test_slow_fill;
    if (vkCreateShaderModule(dev, &smci, nullptr, &mod) != VK_SUCCESS) return false;
    VkDescriptorSetLayoutBinding b{0, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    VkDescriptorSetLayoutCreateInfo dslci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    dslci.bindingCount = 1;
    dslci.pBindings = &b;
    if (vkCreateDescriptorSetLayout(dev, &dslci, nullptr, &dsl) != VK_SUCCESS) return false;
    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, 8};
    VkPipelineLayoutCreateInfo plci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    plci.setLayoutCount = 1;
    plci.pSetLayouts = &dsl;
    plci.pushConstantRangeCount = 1;
    plci.pPushConstantRanges = &range;
    if (vkCreatePipelineLayout(dev, &plci, nullptr, &pl) != VK_SUCCESS) return false;
    VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    cpci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  nullptr,
                  0,
                  VK_SHADER_STAGE_COMPUTE_BIT,
                  mod,
                  "main",
                  nullptr};
    cpci.layout = pl;
    if (vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &cpci, nullptr, &pipe) != VK_SUCCESS) return false;
    VkDescriptorPoolSize ps{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1};
    VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpci.maxSets = 1;
    dpci.poolSizeCount = 1;
    dpci.pPoolSizes = &ps;
    if (vkCreateDescriptorPool(dev, &dpci, nullptr, &dp) != VK_SUCCESS) return false;
    VkDescriptorSet set;
    VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    dsai.descriptorPool = dp;
    dsai.descriptorSetCount = 1;
    dsai.pSetLayouts = &dsl;
    if (vkAllocateDescriptorSets(dev, &dsai, &set) != VK_SUCCESS) return false;
    VkExternalMemoryBufferCreateInfo ext{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
    ext.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
    VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bci.pNext = &ext;
    bci.size = vi.allocation_size;
    bci.usage =
        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    if (vkCreateBuffer(dev, &bci, nullptr, &buf) != VK_SUCCESS) return false;
    if (vkBindBufferMemory(dev, buf, reinterpret_cast<VkDeviceMemory>(vi.memory), 0) != VK_SUCCESS) return false;
    VkDescriptorBufferInfo dbi{buf, vi.offset, uint64_t{count} * 4};
    VkWriteDescriptorSet w{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    w.dstSet = set;
    w.descriptorCount = 1;
    w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    w.pBufferInfo = &dbi;
    vkUpdateDescriptorSets(dev, 1, &w, 0, nullptr);
    VkCommandPoolCreateInfo cpoolci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cpoolci.queueFamilyIndex = vi.queue_family;
    if (vkCreateCommandPool(dev, &cpoolci, nullptr, &cp) != VK_SUCCESS) return false;
    VkCommandBufferAllocateInfo cbai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cbai.commandPool = cp;
    cbai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cbai.commandBufferCount = 1;
    VkCommandBuffer cmd;
    if (vkAllocateCommandBuffers(dev, &cbai, &cmd) != VK_SUCCESS) return false;
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vkBeginCommandBuffer(cmd, &bi);
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pl, 0, 1, &set, 0, nullptr);
    const uint32_t push[2] = {count, rounds};
    vkCmdPushConstants(cmd, pl, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof push, push);
    vkCmdDispatch(cmd, (count + 63) / 64, 1, 1);
    vkEndCommandBuffer(cmd);
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd;
    // No fence, no wait: lf_isend_buffer must order the send after this.
    return vkQueueSubmit(static_cast<VkQueue>(vi.queue), 1, &si, VK_NULL_HANDLE) == VK_SUCCESS;
  }
  void destroy(VkQueue q) {
    vkQueueWaitIdle(q);
    vkDestroyCommandPool(dev, cp, nullptr);
    vkDestroyBuffer(dev, buf, nullptr);
    vkDestroyDescriptorPool(dev, dp, nullptr);
    vkDestroyPipeline(dev, pipe, nullptr);
    vkDestroyPipelineLayout(dev, pl, nullptr);
    vkDestroyDescriptorSetLayout(dev, dsl, nullptr);
    vkDestroyShaderModule(dev, mod, nullptr);
  }
};

uint32_t slow_value(uint32_t i, uint32_t rounds) {
  uint32_t x = i;
  for (uint32_t r = 0; r < rounds; ++r) x = x * 1664525u + 1013904223u;
  return x;
}

TEST_F(VulkanIpc, GpuWritesInFlightAtSendAreCompleteBeforeTheReceiverReads) {
  run(2, [](Rank &r) {
    need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    REQUIRE(r, std::string(lf_channel_transport(c.ch)) == "vulkan-ipc", "transport %s", lf_channel_transport(c.ch));
    // Long enough on lavapipe (~0.1-1 s) that an unsynchronised receiver
    // would read zeros; the last elements are written last.
    constexpr uint32_t n = 1 << 18, rounds = 2000;
    if (r.rank == 0) {
      lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
      ap.strict = 1;
      lf_buffer_t b;
      REQUIRE_OK(r, lf_alloc_ex(c.ctx, n * 4, LF_MEM_VULKAN_DEVICE, &ap, &b));
      std::vector<uint32_t> zero(n, 0);
      REQUIRE_OK(r, lf_buffer_write(b, 0, zero.data(), n * 4));
      lf_vulkan_buffer_info_t vi = LF_VULKAN_BUFFER_INFO_INIT;
      REQUIRE_OK(r, lf_buffer_vulkan_info(b, &vi));
      RawDispatch d;
      REQUIRE(r, d.submit(vi, n, rounds), "raw Vulkan dispatch failed");
      lf_request_t req;
      REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kData, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
      char done;
      REQUIRE_OK(r, lf_recv(c.ch, &done, 1, kDone, nullptr));
      d.destroy(static_cast<VkQueue>(vi.queue));
    } else {
      lf_request_t req;
      lf_buffer_t view;
      REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
      REQUIRE_OK(r, lf_wait_buffer(req, &view, nullptr));
      // Straight through the mapping, no call that could wait on anything.
      const auto *p = static_cast<const uint32_t *>(lf_buffer_data(view));
      REQUIRE(r, p != nullptr, "lavapipe memory is host visible");
      for (uint32_t i : {n - 1, n / 2, 0u, n - 64})
        REQUIRE(r, p[i] == slow_value(i, rounds), "element %u is %u: read before the sender's GPU finished", i, p[i]);
      REQUIRE_OK(r, lf_free(view));
      REQUIRE_OK(r, lf_send(c.ch, "d", 1, kDone));
    }
    close_all(r, c);
  });
}

// ---- bad input from a peer ------------------------------------------------------------

/// This process's end of the shm connection's Unix socket to `peer_pid`.
int connection_socket(pid_t peer_pid) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent *e = readdir(d)) {
    const int fd = std::atoi(e->d_name);
    struct stat st {};
    if (fd <= 2 || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    ucred cred{};
    socklen_t len = sizeof cred;
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) continue;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == peer_pid) {
      found = fd;  // the last one: the vulkan-ipc connection opens after the bootstrap's
    }
  }
  closedir(d);
  return found;
}

/// The ring segment of the one open shm-family connection, from /proc/self/maps.
char *find_ring() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("memfd:lf-shm-ring") != std::string::npos)
      return reinterpret_cast<char *>(static_cast<uintptr_t>(std::strtoull(line.c_str(), nullptr, 16)));
  return nullptr;
}

enum class Bad { unknown_memory, range_outside, announce_pipe, announce_without_fd };

struct BadCase {
  const char *name;
  Bad bad;
  const char *why;  ///< part of the receiver's error text
};

class VulkanIpcMalformed : public MultiProcess, public ::testing::WithParamInterface<BadCase> {};

TEST_P(VulkanIpcMalformed, ReceiverGetsProtocolErrorNeverAnOutOfRangeAccess) {
  const Bad bad = GetParam().bad;
  const char *why = GetParam().why;
  run(2, [bad, why](Rank &r) {
    need_vulkan(r);
    Conn c = open_gpu(r, LF_MEM_VULKAN_DEVICE);
    REQUIRE(r, std::string(lf_channel_transport(c.ch)) == "vulkan-ipc", "transport %s", lf_channel_transport(c.ch));
    pid_t peer = 0;
    if (r.rank == 0) {
      // One good message first: an allocation the receiver knows.
      lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
      ap.strict = 1;
      lf_buffer_t b;
      REQUIRE_OK(r, lf_alloc_ex(c.ctx, 1 << 16, LF_MEM_VULKAN_DEVICE, &ap, &b));
      lf_request_t req;
      REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kData, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
      REQUIRE_OK(r, lf_recv(c.ch, &peer, sizeof peer, kDone, nullptr));

      char *base = find_ring();
      REQUIRE(r, base != nullptr, "ring not found");
      shm::SegmentHeader h;
      std::memcpy(&h, base, sizeof h);
      shm::Layout l;
      REQUIRE(r, shm::compute_layout(h.slot_count, h.ctl_count, h.fifo_bytes, l), "layout");
      auto *slots = reinterpret_cast<shm::Slot *>(base + l.dir_offset[0] + l.slots_off);
      const shm::Slot &good = slots[0];
      REQUIRE(r, good.kind == static_cast<uint8_t>(shm::Kind::zero_copy), "first slot kind %u", good.kind);
      const uint64_t memory = good.body.words[shm::kSegment];
      const uint64_t sent = 1;  // rank 0's ring holds the one descriptor so far
      shm::Slot *t = &slots[sent % h.slot_count];
      t->kind = static_cast<uint8_t>(shm::Kind::zero_copy);
      t->flags = good.flags;  // the device-memory descriptor flag
      t->tag = kNext;
      t->body.words[shm::kCookie] = 0;
      t->body.words[shm::kOffset] = 0;
      t->size = 64;
      t->body.words[shm::kSegment] = memory;
      switch (bad) {
        case Bad::unknown_memory: t->body.words[shm::kSegment] = 0x5eed5eed5eedull; break;
        case Bad::range_outside:
          t->size = 1 << 20;  // larger than the allocation
          t->body.words[shm::kOffset] = 4096;
          break;
        case Bad::announce_pipe:
        case Bad::announce_without_fd: {
          // Announce a new allocation id on the connection's socket, with a
          // pipe instead of memory, or with no fd at all.
          const int sock = connection_socket(peer);
          REQUIRE(r, sock >= 0, "connection socket not found");
          struct {
            shm::SegmentAnnounce a;
            lf::gpu_ipc::Record rec;
          } msg{};
          msg.a = {lf::gpu_ipc::kDeviceMagic, 0xbad0bad0ull, sizeof(lf::gpu_ipc::Record)};
          msg.rec.version = lf::gpu_ipc::kRecordVersion;
          msg.rec.kind = LF_MEM_VULKAN_DEVICE;
          msg.rec.allocation_size = 1 << 16;
          if (bad == Bad::announce_pipe) {
            int p[2];
            REQUIRE(r, pipe(p) == 0, "pipe");
            msghdr m{};
            iovec iov{&msg, sizeof msg};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
            m.msg_control = ctl;
            m.msg_controllen = sizeof ctl;
            cmsghdr *cm = CMSG_FIRSTHDR(&m);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
            REQUIRE(r, sendmsg(sock, &m, 0) == static_cast<ssize_t>(sizeof msg), "sendmsg");
          } else {
            REQUIRE(r, write(sock, &msg, sizeof msg) == static_cast<ssize_t>(sizeof msg), "write");
          }
          t->body.words[shm::kSegment] = 0xbad0bad0ull;
          break;
        }
      }
      t->seq.store(static_cast<uint32_t>(sent + 1), std::memory_order_release);
      // The victim reports over the channel's ring? It is broken now: wait
      // for it to close the connection instead.
      char x;
      lf_status_t st = lf_recv(c.ch, &x, 1, kDone, nullptr);
      REQUIRE(r, st == LF_ERR_PEER_GONE || st == LF_ERR_PROTOCOL, "got %s", lf_status_string(st));
      lf_channel_close(c.ch);
      lf_finalize(c.ctx);
      return;
    }
    lf_request_t req;
    lf_buffer_t view;
    REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
    REQUIRE_OK(r, lf_wait_buffer(req, &view, nullptr));
    const pid_t me = getpid();
    REQUIRE_OK(r, lf_send(c.ch, &me, sizeof me, kDone));
    lf_buffer_t got = nullptr;
    REQUIRE_OK(r, lf_irecv_buffer(c.ch, kNext, &req));
    lf_status_t st = lf_wait_buffer(req, &got, nullptr);
    REQUIRE(r, st == LF_ERR_PROTOCOL, "got %s (%s)", lf_status_string(st), lf_last_error());
    REQUIRE(r, std::strstr(lf_last_error(), why) != nullptr, "error text '%s' lacks '%s'", lf_last_error(), why);
    REQUIRE(r, got == nullptr, "a buffer was delivered");
    REQUIRE_ST(r, LF_ERR_PROTOCOL, lf_send(c.ch, "x", 1, kDone));
    // The view received before the failure is still fine.
    uint32_t w = 0;
    REQUIRE_OK(r, lf_buffer_read(view, 0, &w, 4));
    REQUIRE_OK(r, lf_free(view));
    close_all(r, c);
  });
}

INSTANTIATE_TEST_SUITE_P(Descriptors, VulkanIpcMalformed,
                         ::testing::Values(BadCase{"UnknownMemoryId", Bad::unknown_memory, "never announced"},
                                           BadCase{"RangeOutsideAllocation", Bad::range_outside, "beyond the segment"},
                                           BadCase{"AnnouncementWithAPipe", Bad::announce_pipe, "carried a pipe"},
                                           BadCase{"AnnouncementWithoutFd", Bad::announce_without_fd,
                                                   "without a file descriptor"}),
                         [](const auto &p) { return std::string(p.param.name); });

#endif  // LAVAFLOW_HAVE_VULKAN

// ---- CUDA ---------------------------------------------------------------------------------

class CudaIpc : public MultiProcess {};

TEST_F(CudaIpc, ProducerFillsConsumerReadsWithoutACopy) {
  run(2, [](Rank &r) {
    lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
    ap.strict = 1;
    lf_buffer_t probe = nullptr;
    if (lf_alloc_ex(nullptr, 4096, LF_MEM_CUDA_DEVICE, &ap, &probe) != LF_OK) SKIP_RANK(r, "%s", lf_last_error());
    lf_free(probe);
    Conn c = open_gpu(r, LF_MEM_CUDA_DEVICE);
    REQUIRE(r, std::string(lf_channel_transport(c.ch)) == "cuda-ipc", "transport %s (%s)", lf_channel_transport(c.ch),
            lf_channel_reason(c.ch));
    constexpr size_t n = 1 << 20;
    if (r.rank == 0) {
      lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
      pp.kind = LF_MEM_CUDA_DEVICE;
      pp.strict = 1;
      lf_pool_t pool;
      REQUIRE_OK(r, lf_pool_create(c.ctx, &pp, &pool));
      std::vector<uint32_t> v(n / 4);
      for (uint32_t round = 0; round < 8; ++round) {
        lf_buffer_t b;
        REQUIRE_OK(r, lf_pool_acquire(pool, n, &b));
        for (uint32_t i = 0; i < v.size(); ++i) v[i] = round * 7919u + i;
        REQUIRE_OK(r, lf_buffer_write(b, 0, v.data(), n));
        lf_request_t req;
        REQUIRE_OK(r, lf_isend_buffer(c.ch, b, kData, &req));
        REQUIRE_OK(r, lf_wait(req, nullptr));
        char ack;
        REQUIRE_OK(r, lf_recv(c.ch, &ack, 1, kDone, nullptr));
      }
      lf_pool_stats_t s = LF_POOL_STATS_INIT;
      REQUIRE_OK(r, lf_pool_stats(pool, &s));
      REQUIRE(r, s.misses == 1, "misses %llu: views did not return the buffer", (unsigned long long)s.misses);
      REQUIRE_OK(r, lf_pool_destroy(pool));
    } else {
      std::vector<uint32_t> v(n / 4);
      for (uint32_t round = 0; round < 8; ++round) {
        lf_request_t req;
        lf_buffer_t view;
        REQUIRE_OK(r, lf_irecv_buffer(c.ch, kData, &req));
        REQUIRE_OK(r, lf_wait_buffer(req, &view, nullptr));
        REQUIRE(r, lf_buffer_kind(view) == LF_MEM_CUDA_DEVICE, "kind %s", lf_memory_kind_string(lf_buffer_kind(view)));
        REQUIRE_OK(r, lf_buffer_read(view, 0, v.data(), n));
        for (uint32_t i = 0; i < v.size(); ++i) REQUIRE(r, v[i] == round * 7919u + i, "round %u word %u", round, i);
        REQUIRE_OK(r, lf_free(view));
        REQUIRE_OK(r, lf_send(c.ch, "a", 1, kDone));
      }
    }
    close_all(r, c);
  });
}

}  // namespace
