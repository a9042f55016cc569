// The Vulkan side of the built-in kernels: one compute pipeline per op over a
// shared layout (three storage buffers a, b, out and a 16-byte push-constant
// block), and Slots, the per-caller resources a dispatch needs.
//
// A Slot owns three HOST_VISIBLE | HOST_COHERENT buffers, mapped for its
// lifetime, a descriptor set over them, a command buffer and a fence. The
// caller copies a chunk of its operands into a() / b(), calls run(), and
// copies the chunk's result out of c(). One thread uses a Slot at a time;
// Slots of one Pipelines object may run concurrently (submissions take the
// device's queue mutex, the wait does not).
#pragma once

#include "lavaflow_features.h"

#if LAVAFLOW_HAVE_VULKAN

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>

#include "core/status.hpp"
#include "memory/vulkan_device.hpp"

namespace lf::exec::vkk {

/// The push-constant block every kernel shader declares (shaders/*.comp).
struct Push {
  uint32_t count = 0;  ///< Elements (elementwise, sum) or rows of a (matmul).
  uint32_t k = 0;      ///< matmul: columns of a, rows of b.
  uint32_t n = 0;      ///< matmul: columns of b and out.
  float factor = 0;    ///< scale.
};

enum class Op { add, mul, scale, sum, matmul };
inline constexpr int kOps = 5;
/// local_size_x of the elementwise and sum shaders.
inline constexpr uint32_t kGroupSize = 256;
/// Output rows and columns one work group of the matmul shader covers
/// (16 x 16 invocations, each a 4 x 4 block).
inline constexpr uint32_t kMatmulBlock = 64;
/// Staging buffers larger than this gain nothing (the ops chunk their work)
/// and would only pin memory.
inline constexpr uint64_t kBufferCap = uint64_t{256} << 20;

class Pipelines {
 public:
  /// Shader modules, layouts and the five pipelines on `dev`. Slots' buffers
  /// are capped at the device's limits and at `buffer_cap` bytes.
  static Result<std::unique_ptr<Pipelines>> create(std::shared_ptr<vk::Device> dev, uint64_t buffer_cap) noexcept;
  ~Pipelines();
  Pipelines(const Pipelines &) = delete;
  Pipelines &operator=(const Pipelines &) = delete;

  const vk::Device &device() const noexcept { return *dev_; }
  VkPipeline pipeline(Op op) const noexcept { return pipelines_[static_cast<int>(op)]; }
  VkPipelineLayout layout() const noexcept { return layout_; }
  VkDescriptorSetLayout set_layout() const noexcept { return set_layout_; }
  /// Largest buffer a Slot may bind (maxStorageBufferRange, capped).
  uint64_t max_buffer_bytes() const noexcept { return max_buffer_bytes_; }
  uint32_t max_groups_x() const noexcept { return max_groups_[0]; }
  uint32_t max_groups_y() const noexcept { return max_groups_[1]; }
  /// The device is a CPU (lavapipe): work groups there run one after another
  /// per thread and barriers are costly, so fewer, longer groups win.
  bool cpu_device() const noexcept { return cpu_device_; }

 private:
  Pipelines() = default;
  std::shared_ptr<vk::Device> dev_;
  VkShaderModule modules_[kOps] = {};
  VkPipeline pipelines_[kOps] = {};
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  uint64_t max_buffer_bytes_ = 0;
  uint32_t max_groups_[2] = {65535, 65535};
  bool cpu_device_ = false;
};

class Slot {
 public:
  static Result<std::unique_ptr<Slot>> create(const Pipelines &p) noexcept;
  ~Slot();
  Slot(const Slot &) = delete;
  Slot &operator=(const Slot &) = delete;

  /// Make a(), b(), c() at least this many bytes each (contents are lost when
  /// a buffer grows). Each must be <= Pipelines::max_buffer_bytes().
  Status reserve(uint64_t a_bytes, uint64_t b_bytes, uint64_t c_bytes) noexcept;
  /// Free the buffers (the next reserve() allocates again).
  void release_buffers() noexcept;
  /// Bytes held by the three buffers.
  uint64_t held_bytes() const noexcept;

  float *a() const noexcept { return static_cast<float *>(bufs_[0].host); }
  float *b() const noexcept { return static_cast<float *>(bufs_[1].host); }
  float *c() const noexcept { return static_cast<float *>(bufs_[2].host); }

  /// Dispatch `op` with `push` over groups_x x groups_y work groups and wait
  /// until its writes to c() are visible to the host.
  Status run(Op op, const Push &push, uint32_t groups_x, uint32_t groups_y) noexcept;

 private:
  struct HostBuffer {
    VkBuffer buf = VK_NULL_HANDLE;
    VkDeviceMemory mem = VK_NULL_HANDLE;
    uint64_t bytes = 0;
    void *host = nullptr;
  };
  explicit Slot(const Pipelines &p) : p_(p) {}
  Status grow(HostBuffer &b, uint64_t bytes) noexcept;
  void destroy(HostBuffer &b) noexcept;
  void write_descriptors() noexcept;

  const Pipelines &p_;
  HostBuffer bufs_[3];
  VkDescriptorPool pool_ = VK_NULL_HANDLE;
  VkDescriptorSet set_ = VK_NULL_HANDLE;
  VkCommandPool cmd_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
};

}  // namespace lf::exec::vkk

#endif  // LAVAFLOW_HAVE_VULKAN
