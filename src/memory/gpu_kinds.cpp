// Device kinds: CUDA (through the dlopen'd runtime) and Vulkan (through the loader).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "lavaflow_features.h"
#include "memory/cuda_rt.hpp"
#include "memory/kinds.hpp"
#include "memory/vulkan_device.hpp"

namespace lf::detail {

namespace {
// ExportHandle::segment_id of device memory: unique per (process, exported
// allocation) for the process's life, so that a peer's import cache never
// mistakes a new allocation for a freed one that had the same handle or fd.
[[maybe_unused]] uint64_t next_export_id() noexcept {
  static std::atomic<uint32_t> counter{0};
  return (static_cast<uint64_t>(static_cast<uint32_t>(getpid())) << 32) |
         (counter.fetch_add(1, std::memory_order_relaxed) + 1);
}
}  // namespace

// ---- CUDA ---------------------------------------------------------------------------

std::optional<std::string> cuda_unavailable(int device) {
  const cuda::Runtime &rt = cuda::Runtime::get();
  if (rt.available()) return rt.available();
  if (device < 0 || device >= rt.device_count())
    return "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(rt.device_count()) +
           " found)";
  return std::nullopt;
}

#if LAVAFLOW_HAVE_CUDA
namespace {
// Makes `device` current for a scope and restores the caller's device after:
// allocation and release must not change which device the application uses.
class CudaDeviceScope {
 public:
  explicit CudaDeviceScope(int device) noexcept {
    const cuda::Api &api = cuda::Runtime::get().api();
    if (api.GetDevice(&previous_) != cudaSuccess) previous_ = -1;
    ok_ = previous_ == device || api.SetDevice(device) == cudaSuccess;
  }
  ~CudaDeviceScope() {
    int now = -1;
    const cuda::Api &api = cuda::Runtime::get().api();
    if (previous_ >= 0 && api.GetDevice(&now) == cudaSuccess && now != previous_) api.SetDevice(previous_);
  }
  bool ok() const noexcept { return ok_; }

 private:
  int previous_ = -1;
  bool ok_ = false;
};

class CudaBuffer final : public OwnedBuffer {
 public:
  CudaBuffer(void *ptr, size_t size, int device, bool imported) : ptr_(ptr), imported_(imported) {
    kind_ = requested_ = MemoryKind::cuda_device;
    size_ = size;
    device_ = device;
    device_handle_ = reinterpret_cast<uintptr_t>(ptr);
    alignment_ = 256;  // cudaMalloc's guarantee
    if (imported) flags_ |= buffer_flags::imported;
  }
  ~CudaBuffer() override {
    registrations_.clear();
    const cuda::Runtime &rt = cuda::Runtime::get();
    CudaDeviceScope scope(device_);
    if (imported_)
      rt.api().IpcCloseMemHandle(ptr_);
    else
      rt.api().Free(ptr_);
  }
  const ExportHandle *export_handle() const noexcept override {
    // cudaIpcGetMemHandle costs a driver call; most buffers are never exported.
    std::call_once(export_once_, [this] {
      const cuda::Runtime &rt = cuda::Runtime::get();
      cudaIpcMemHandle_t h{};
      CudaDeviceScope scope(device_);
      if (!scope.ok() || rt.api().IpcGetMemHandle(&h, ptr_) != cudaSuccess) return;
      try {
        export_.kind = MemoryKind::cuda_device;
        export_.allocation_size = size_;
        export_.length = size_;
        export_.cuda_ipc_handle.assign(reinterpret_cast<const char *>(&h), sizeof h);
        export_.segment_id = next_export_id();
        exported_ = true;
      } catch (...) {
      }
    });
    return exported_ ? &export_ : nullptr;
  }

 private:
  void *ptr_;
  bool imported_;
  mutable std::once_flag export_once_;
  mutable ExportHandle export_;
  mutable bool exported_ = false;
};
}  // namespace
#endif

Result<BufferPtr> alloc_cuda(const KindRequest &r) noexcept {
  try {
    if (auto why = cuda_unavailable(r.device)) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
#if LAVAFLOW_HAVE_CUDA
    const cuda::Runtime &rt = cuda::Runtime::get();
    if (r.alignment > 256)
      return LF_FAIL(LF_ERR_INVALID_ARG, "cudaMalloc aligns to 256 bytes; %zu is not possible", r.alignment);
    CudaDeviceScope scope(r.device);
    if (!scope.ok()) return LF_FAIL(LF_ERR_UNAVAILABLE, "cudaSetDevice(%d) failed", r.device);
    void *p = nullptr;
    LF_CUDA_CHECK(rt, rt.api().Malloc(&p, r.size));
    return std::make_unique<CudaBuffer>(p, r.size, r.device, false);
#else
    return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without CUDA");
#endif
  } catch (...) {
    return std::unexpected(exception_error("CUDA allocation"));
  }
}

Result<BufferPtr> import_cuda(const ExportHandle &h) noexcept {
  try {
    if (auto why = cuda::Runtime::get().available()) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
#if LAVAFLOW_HAVE_CUDA
    const cuda::Runtime &rt = cuda::Runtime::get();
    cudaIpcMemHandle_t handle{};
    if (h.cuda_ipc_handle.size() != sizeof handle)
      return LF_FAIL(LF_ERR_INVALID_ARG, "CUDA import: IPC handle of %zu bytes, expected %zu", h.cuda_ipc_handle.size(),
                     sizeof handle);
    std::memcpy(&handle, h.cuda_ipc_handle.data(), sizeof handle);
    int dev = 0;
    LF_CUDA_CHECK(rt, rt.api().GetDevice(&dev));
    void *p = nullptr;
    LF_CUDA_CHECK(rt, rt.api().IpcOpenMemHandle(&p, handle, cudaIpcMemLazyEnablePeerAccess));
    auto b = std::make_unique<CudaBuffer>(p, h.allocation_size, dev, true);
    return b;
#else
    (void)h;
    return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without CUDA");
#endif
  } catch (...) {
    return std::unexpected(exception_error("CUDA import"));
  }
}

// ---- Vulkan -----------------------------------------------------------------------------

#if LAVAFLOW_HAVE_VULKAN
namespace {
class VulkanBuffer final : public OwnedBuffer {
 public:
  VulkanBuffer(std::shared_ptr<vk::Device> dev, MemoryKind kind) : dev_(std::move(dev)) {
    kind_ = requested_ = kind;
    device_ = dev_->index();
  }
  ~VulkanBuffer() override {
    registrations_.clear();
    VkDevice d = dev_->device();
    if (buffer_ != VK_NULL_HANDLE) vkDestroyBuffer(d, buffer_, nullptr);
    // Freeing unmaps implicitly.
    if (memory_ != VK_NULL_HANDLE) vkFreeMemory(d, memory_, nullptr);
    if (export_.fd >= 0) ::close(export_.fd);
  }

  // Allocate (or import, with fd >= 0) `alloc_size` bytes of memory type
  // `type`, bind a VkBuffer of `buffer_size` bytes, and map when host visible.
  Status init(VkDeviceSize buffer_size, VkDeviceSize alloc_size, uint32_t type, bool dedicated, int import_fd) {
    auto buf = dev_->create_external_buffer(buffer_size);
    if (!buf) {
      if (import_fd >= 0) ::close(import_fd);
      return std::unexpected(buf.error());
    }
    buffer_ = *buf;
    dedicated_ = dedicated;
    type_ = type;
    alloc_size_ = alloc_size;
    if (import_fd >= 0) {
      auto mem = dev_->import_fd(import_fd, alloc_size, type, dedicated ? buffer_ : VK_NULL_HANDLE);
      if (!mem) return std::unexpected(mem.error());
      memory_ = *mem;
      flags_ |= buffer_flags::imported;
    } else {
      VkExportMemoryAllocateInfo exp{VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO};
      exp.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
      VkMemoryDedicatedAllocateInfo ded{VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO};
      ded.buffer = buffer_;
      if (dedicated) exp.pNext = &ded;
      VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
      mai.pNext = &exp;
      mai.allocationSize = alloc_size;
      mai.memoryTypeIndex = type;
      LF_VK_CHECK(vkAllocateMemory(dev_->device(), &mai, nullptr, &memory_));
    }
    LF_VK_CHECK(vkBindBufferMemory(dev_->device(), buffer_, memory_, 0));
    device_handle_ = reinterpret_cast<uint64_t>(memory_);
    const VkMemoryPropertyFlags f = dev_->memory_properties().memoryTypes[type].propertyFlags;
    if (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
      void *p = nullptr;
      LF_VK_CHECK(vkMapMemory(dev_->device(), memory_, 0, VK_WHOLE_SIZE, 0, &p));
      data_ = p;
      flags_ |= buffer_flags::host_visible;
      page_size_ = host_page_size();
      const uintptr_t a = reinterpret_cast<uintptr_t>(p);
      alignment_ = std::min<size_t>(a & (~a + 1), host_page_size());
    } else {
      alignment_ = required_alignment_;
    }
    return {};
  }

  // Restrict the view to [offset, offset + length) of the allocation (imports).
  void view(size_t offset, size_t length) noexcept {
    if (data_) {
      data_ = static_cast<char *>(data_) + offset;
      const uintptr_t a = reinterpret_cast<uintptr_t>(data_);
      alignment_ = std::min<size_t>(a & (~a + 1), host_page_size());
    }
    view_offset_ = offset;
    size_ = length;
  }

  void set_size_exact(size_t s) noexcept { size_ = s; }
  void set_required_alignment(size_t a) noexcept { required_alignment_ = a; }
  VkBuffer vk_buffer() const noexcept { return buffer_; }

  const ExportHandle *export_handle() const noexcept override {
    // vkGetMemoryFdKHR creates a new fd on every call; make one, on demand.
    std::call_once(export_once_, [this] {
      auto fd = dev_->export_fd(memory_);
      if (!fd) return;
      export_.kind = kind_;
      export_.fd = *fd;
      export_.allocation_size = alloc_size_;
      export_.offset = view_offset_;
      export_.length = size_;
      export_.memory_type_index = type_;
      export_.dedicated = dedicated_;
      export_.segment_id = next_export_id();
      std::memcpy(export_.device_uuid, dev_->device_uuid(), VK_UUID_SIZE);
      std::memcpy(export_.driver_uuid, dev_->driver_uuid(), VK_UUID_SIZE);
    });
    return export_.fd >= 0 ? &export_ : nullptr;
  }

 private:
  std::shared_ptr<vk::Device> dev_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  VkDeviceSize alloc_size_ = 0;
  uint32_t type_ = 0;
  bool dedicated_ = false;
  size_t view_offset_ = 0;
  size_t required_alignment_ = 0;
  mutable std::once_flag export_once_;
  mutable ExportHandle export_;
};

// The memory type a kind wants: DEVICE_LOCAL for vulkan_device (host visible
// or not, as the device has it), HOST_VISIBLE|HOST_COHERENT otherwise.
VkMemoryPropertyFlags required_flags(bool device_local) {
  return device_local ? VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT
                      : VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
}
}  // namespace
#endif

std::optional<std::string> vulkan_unavailable(int device, bool device_local) {
#if LAVAFLOW_HAVE_VULKAN
  auto dev = vk::Device::shared(device);
  if (!dev) return dev.error().message;
  const auto &mp = (*dev)->memory_properties();
  uint32_t all = (mp.memoryTypeCount >= 32) ? ~0u : ((1u << mp.memoryTypeCount) - 1);
  if ((*dev)->find_memory_type(all, required_flags(device_local)) < 0)
    return std::string("Vulkan device ") + (*dev)->name() + " has no " +
           (device_local ? "DEVICE_LOCAL" : "HOST_VISIBLE|HOST_COHERENT") + " memory type";
  return std::nullopt;
#else
  (void)device;
  (void)device_local;
  return "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)";
#endif
}

Result<BufferPtr> alloc_vulkan(const KindRequest &r, bool device_local) noexcept {
#if LAVAFLOW_HAVE_VULKAN
  try {
    auto dev = vk::Device::shared(r.device);
    if (!dev) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", dev.error().message.c_str());
    const vk::Device &d = **dev;
    if (r.size > d.max_allocation_size())
      return LF_FAIL(LF_ERR_NO_MEMORY, "%zu bytes exceed %s's maxMemoryAllocationSize (%llu)", r.size, d.name().c_str(),
                     static_cast<unsigned long long>(d.max_allocation_size()));
    const MemoryKind kind = device_local ? MemoryKind::vulkan_device : MemoryKind::vulkan_host_visible;
    auto b = std::make_unique<VulkanBuffer>(*dev, kind);
    // Requirements come from a buffer of the right usage; a throwaway one is
    // cheap and keeps init() the same for allocation and import.
    auto probe = d.create_external_buffer(r.size);
    if (!probe) return std::unexpected(probe.error());
    VkMemoryRequirements req{};
    vkGetBufferMemoryRequirements(d.device(), *probe, &req);
    vkDestroyBuffer(d.device(), *probe, nullptr);
    // Drivers list memory types best first, so the first match is taken: a
    // plain DEVICE_LOCAL type on discrete GPUs, DEVICE_LOCAL|HOST_VISIBLE on
    // lavapipe and integrated GPUs (then the buffer is also mapped at data()).
    const int type = d.find_memory_type(req.memoryTypeBits, required_flags(device_local));
    if (type < 0)
      return LF_FAIL(LF_ERR_UNAVAILABLE, "Vulkan device %s has no %s memory type for buffers", d.name().c_str(),
                     device_local ? "DEVICE_LOCAL" : "HOST_VISIBLE|HOST_COHERENT");
    if (r.alignment > req.alignment && r.alignment > 64)
      return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan memory is aligned to %llu; %zu cannot be guaranteed",
                     static_cast<unsigned long long>(req.alignment), r.alignment);
    b->set_required_alignment(req.alignment);
    if (auto st = b->init(r.size, req.size, static_cast<uint32_t>(type), d.external_support().dedicated_only, -1); !st)
      return std::unexpected(st.error());
    b->set_size_exact(r.size);
    return b;
  } catch (...) {
    return std::unexpected(exception_error("Vulkan allocation"));
  }
#else
  (void)r;
  (void)device_local;
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
#endif
}

Result<BufferPtr> import_vulkan(const ExportHandle &h) noexcept {
#if LAVAFLOW_HAVE_VULKAN
  try {
    if (h.allocation_size == 0 || h.length == 0 || h.offset > h.allocation_size ||
        h.length > h.allocation_size - h.offset)
      return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan import: range [%zu, +%zu) outside an allocation of %zu bytes",
                     h.offset, h.length, h.allocation_size);
    auto dev = vk::Device::shared_by_uuid(h.device_uuid);
    if (!dev) return std::unexpected(dev.error());
    if (std::memcmp((*dev)->driver_uuid(), h.driver_uuid, VK_UUID_SIZE) != 0)
      return LF_FAIL(LF_ERR_UNAVAILABLE, "Vulkan import: the exporter used another driver than %s",
                     (*dev)->name().c_str());
    int fd = fcntl(h.fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(sys_error(errno, "dup(Vulkan fd %d)", h.fd));
    auto b = std::make_unique<VulkanBuffer>(*dev, h.kind);
    if (auto st = b->init(h.offset + h.length, h.allocation_size, h.memory_type_index, h.dedicated, fd); !st)
      return std::unexpected(st.error());
    b->view(h.offset, h.length);
    return b;
  } catch (...) {
    return std::unexpected(exception_error("Vulkan import"));
  }
#else
  (void)h;
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
#endif
}

}  // namespace lf::detail
