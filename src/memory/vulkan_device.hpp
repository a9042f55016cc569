// A Vulkan instance + logical device able to export and import memory as
// OPAQUE_FD (VK_KHR_external_memory_fd), with one compute queue.
//
// The memory layer allocates vulkan_device / vulkan_host_visible buffers on
// it; the Vulkan IPC transport reuses it for copies (compute queue, command
// pools of its own) and to import a peer's memory from an fd.
//
// Physical devices are numbered in vkEnumeratePhysicalDevices order; only
// devices with Vulkan >= 1.1 and VK_KHR_external_memory_fd qualify. On a
// machine without a GPU, Mesa's lavapipe ("llvmpipe") is such a device.
#pragma once

#include "lavaflow_features.h"

#if LAVAFLOW_HAVE_VULKAN

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/status.hpp"

namespace lf::vk {

/// Name of a VkResult, e.g. "VK_ERROR_OUT_OF_DEVICE_MEMORY".
const char *result_name(VkResult r) noexcept;

/// An lf::Error for a failed Vulkan call (out-of-memory results map to LF_ERR_NO_MEMORY).
Error vk_error(VkResult r, const char *call, const char *file, int line);

/// Run a Vulkan call; on failure return an lf::Error naming the call, the
/// VkResult, file and line from the enclosing function (which must return
/// lf::Result<...>).
#define LF_VK_CHECK(expr)                                                                                          \
  do {                                                                                                             \
    VkResult lf_vk_rc_ = (expr);                                                                                   \
    if (lf_vk_rc_ != VK_SUCCESS) return std::unexpected(::lf::vk::vk_error(lf_vk_rc_, #expr, __FILE__, __LINE__)); \
  } while (0)

/// Whether buffers of a given usage can be exported/imported as OPAQUE_FD.
struct ExternalSupport {
  bool exportable = false;
  bool importable = false;
  bool dedicated_only = false;  ///< Such memory must be a dedicated allocation.
};

/// Whether physical device `pd` offers device extension `ext`.
bool has_device_extension(VkPhysicalDevice pd, const char *ext);

class Device {
 public:
  /// Usage of every buffer the memory layer creates (copies and compute).
  static constexpr VkBufferUsageFlags kBufferUsage =
      VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;

  /// A new instance and logical device on physical device `index`.
  static Result<std::shared_ptr<Device>> create(int index);
  /// The process-wide device for `index`, created on first use. A forked child
  /// gets a fresh one (the parent's driver threads do not exist there).
  static Result<std::shared_ptr<Device>> shared(int index);
  /// The shared device whose deviceUUID is `uuid` (for imports), if any.
  static Result<std::shared_ptr<Device>> shared_by_uuid(const uint8_t uuid[VK_UUID_SIZE]);

  ~Device();
  Device(const Device &) = delete;
  Device &operator=(const Device &) = delete;

  int index() const noexcept { return index_; }
  const std::string &name() const noexcept { return name_; }
  VkInstance instance() const noexcept { return instance_; }
  VkPhysicalDevice physical_device() const noexcept { return physical_; }
  VkDevice device() const noexcept { return device_; }
  uint32_t compute_queue_family() const noexcept { return queue_family_; }
  VkQueue compute_queue() const noexcept { return queue_; }
  /// vkQueueSubmit on compute_queue() needs external synchronisation: hold this.
  std::mutex &queue_mutex() const noexcept { return queue_mutex_; }
  const uint8_t *device_uuid() const noexcept { return device_uuid_; }
  const uint8_t *driver_uuid() const noexcept { return driver_uuid_; }
  const VkPhysicalDeviceMemoryProperties &memory_properties() const noexcept { return mem_props_; }
  /// Largest single allocation the device accepts (maxMemoryAllocationSize).
  VkDeviceSize max_allocation_size() const noexcept { return max_alloc_; }
  /// OPAQUE_FD support for buffers of kBufferUsage.
  const ExternalSupport &external_support() const noexcept { return external_; }

  /// Index of a memory type among `type_bits` that has every flag in
  /// `required`, preferring types that also have `preferred`; -1 if none.
  int find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags required,
                       VkMemoryPropertyFlags preferred = 0) const noexcept;

  /// A new VkBuffer of `size` bytes, created for OPAQUE_FD external memory.
  Result<VkBuffer> create_external_buffer(VkDeviceSize size) const;

  /// A new OPAQUE_FD file descriptor for `memory` (the caller owns it).
  Result<int> export_fd(VkDeviceMemory memory) const;

  /// Import memory exported as OPAQUE_FD by this or another process. `fd` is
  /// consumed (owned by Vulkan on success, closed on failure). `size` and
  /// `memory_type_index` must be those of the exporting allocation; a
  /// non-null `dedicated_buffer` makes it a dedicated allocation.
  Result<VkDeviceMemory> import_fd(int fd, VkDeviceSize size, uint32_t memory_type_index,
                                   VkBuffer dedicated_buffer) const;

 private:
  Device() = default;
  int index_ = -1;
  std::string name_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  mutable std::mutex queue_mutex_;
  uint8_t device_uuid_[VK_UUID_SIZE] = {};
  uint8_t driver_uuid_[VK_UUID_SIZE] = {};
  VkPhysicalDeviceMemoryProperties mem_props_{};
  VkDeviceSize max_alloc_ = 0;
  ExternalSupport external_;
  PFN_vkGetMemoryFdKHR get_memory_fd_ = nullptr;
};

}  // namespace lf::vk

#endif  // LAVAFLOW_HAVE_VULKAN
