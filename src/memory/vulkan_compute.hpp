// A small compute runner on an lf::vk::Device, and the copies the memory
// layer needs for Vulkan memory that the host cannot map.
//
//   auto fill = lf::vk::Compute::create(dev, lf::vk::shaders::fill());
//   struct { uint32_t count, value, seed; } pc{n, 7, 3};
//   (*fill)->run(*region, &pc, sizeof pc, n);   // blocks until the GPU is done
//
// A Compute binds one storage buffer (set 0, binding 0) over a region of a
// VkDeviceMemory -- memory allocated here or imported from another process --
// pushes the constants and dispatches; run() waits on a fence, then the writes
// are visible to the host and to every later submission.
//
// The built-in shaders are GLSL compiled to SPIR-V at build time
// (src/memory/shaders, cmake/LavaflowSpirv.cmake) and embedded in the binary.
#pragma once

#include "lavaflow_features.h"

#if LAVAFLOW_HAVE_VULKAN

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <mutex>

#include "core/status.hpp"
#include "memory/buffer.hpp"
#include "memory/vulkan_device.hpp"

namespace lf::vk {

/// SPIR-V code of a compute shader with entry point "main".
struct Shader {
  const uint32_t *code = nullptr;
  size_t bytes = 0;         ///< Multiple of 4.
  uint32_t push_bytes = 0;  ///< Size of its push-constant block (multiple of 4, <= 128).
  const char *name = "";
  uint32_t local_size_x = 64;  ///< As declared in the shader; sizes dispatches.
};

namespace shaders {
/// data[i] = value + i * seed; push { uint count, value, seed; }.
const Shader &fill() noexcept;
/// data[i] = data[i] * a + b; push { uint count, a, b; }.
const Shader &transform() noexcept;

struct FillPush {
  uint32_t count, value, seed;
};
struct TransformPush {
  uint32_t count, a, b;
};
}  // namespace shaders

/// Where a buffer's bytes are in Vulkan terms.
struct Region {
  std::shared_ptr<Device> device;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize allocation_size = 0;  ///< Of the whole VkDeviceMemory.
  VkDeviceSize offset = 0;           ///< Of the buffer within it.
  VkDeviceSize size = 0;
  bool dedicated = false;  ///< Dedicated allocation: no other VkBuffer may be bound to it.
  void *host = nullptr;    ///< Host mapping of [offset, offset + size), or nullptr.
  bool coherent = false;   ///< The mapping is HOST_COHERENT (memcpy needs no flush/invalidate).
};

/// Implemented by buffers that view part of a Vulkan allocation without being
/// exportable themselves (received zero-copy views): region_of() asks them.
class RegionSource {
 public:
  virtual ~RegionSource() = default;
  virtual Result<Region> vulkan_region() const noexcept = 0;
};

/// The Vulkan region behind a vulkan_device / vulkan_host_visible buffer (one
/// allocated here, a pool loan, an import, or a received view).
/// LF_ERR_INVALID_ARG for other kinds.
Result<Region> region_of(const Buffer &b) noexcept;

/// Wait until every submission made so far to `dev`'s compute queue is
/// complete and its writes are available (an empty submit with a fence:
/// a fence signal covers all earlier work on the queue). This is the host-side
/// completion the IPC transports use before publishing a descriptor.
Status queue_drain(const Device &dev) noexcept;

/// Record that a device's queue and memory were handed to code outside
/// lavaflow (lf_buffer_vulkan_info), which may submit work lavaflow does not
/// wait for. Process-wide and permanent.
void note_external_access() noexcept;

/// queue_drain(), but only when work lavaflow did not wait for can be pending:
/// every submission lavaflow makes itself (Compute::run, staged_copy)
/// completes before the call returns, so until note_external_access() there
/// is nothing to wait for and the empty submit (~10 us on lavapipe, a
/// round trip through the driver's queue thread) is skipped.
Status complete_pending(const Device &dev) noexcept;

class Compute {
 public:
  /// Pipeline, layouts, descriptor set, command buffer and fence for `shader`.
  static Result<std::unique_ptr<Compute>> create(std::shared_ptr<Device> dev, const Shader &shader) noexcept;
  ~Compute();
  Compute(const Compute &) = delete;
  Compute &operator=(const Compute &) = delete;

  /// Bind `r` as the storage buffer, push `push_bytes` of `push`, dispatch
  /// enough work groups for `invocations` (capped at maxComputeWorkGroupCount;
  /// the built-in shaders loop), and wait. `r.offset` must be a multiple of the device's
  /// minStorageBufferOffsetAlignment; `r.device` must be this runner's device.
  /// Thread-safe (one dispatch at a time per runner).
  Status run(const Region &r, const void *push, size_t push_bytes, uint64_t invocations) noexcept;
  Status run(const Buffer &b, const void *push, size_t push_bytes, uint64_t invocations) noexcept;

  const Device &device() const noexcept { return *dev_; }
  const char *name() const noexcept { return name_; }

 private:
  Compute() = default;
  std::shared_ptr<Device> dev_;
  const char *name_ = "";
  uint32_t push_bytes_ = 0;
  uint32_t group_size_ = 64;
  VkShaderModule module_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
  VkDescriptorPool pool_ = VK_NULL_HANDLE;
  VkDescriptorSet set_ = VK_NULL_HANDLE;
  VkCommandPool cmd_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  uint32_t max_groups_ = 65535;
  VkDeviceSize storage_align_ = 256;
  std::mutex mu_;
};

/// Copy between host memory and a Vulkan region through a host-visible
/// staging buffer and vkCmdCopyBuffer: the path for DEVICE_LOCAL memory the
/// host cannot map. `to_device`: host -> region, else region -> host.
/// [offset, offset + n) is relative to the region. Blocks until done.
Status staged_copy(const Region &r, size_t offset, void *host, size_t n, bool to_device) noexcept;

}  // namespace lf::vk

#endif  // LAVAFLOW_HAVE_VULKAN
