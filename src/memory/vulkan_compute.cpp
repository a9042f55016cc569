#include "memory/vulkan_compute.hpp"

#if LAVAFLOW_HAVE_VULKAN

#include <algorithm>
#include <atomic>
#include <cstring>

#include "core/log.hpp"
#include "memory/kinds.hpp"

// Generated at build time (cmake/LavaflowSpirv.cmake); they need <cstdint>.
#include "lf_shaders/fill.spv.h"
#include "lf_shaders/transform.spv.h"

namespace lf::vk {

namespace shaders {
const Shader &fill() noexcept {
  static const Shader s{lf_spv_fill, sizeof lf_spv_fill, sizeof(FillPush), "fill"};
  return s;
}
const Shader &transform() noexcept {
  static const Shader s{lf_spv_transform, sizeof lf_spv_transform, sizeof(TransformPush), "transform"};
  return s;
}
}  // namespace shaders

namespace {

/// Owns a transient VkBuffer (+ optional memory) and destroys it on scope exit.
struct ScopedBuffer {
  VkDevice dev = VK_NULL_HANDLE;
  VkBuffer buf = VK_NULL_HANDLE;
  VkDeviceMemory mem = VK_NULL_HANDLE;
  ScopedBuffer() = default;
  ScopedBuffer(const ScopedBuffer &) = delete;
  ScopedBuffer &operator=(const ScopedBuffer &) = delete;
  ~ScopedBuffer() {
    if (buf) vkDestroyBuffer(dev, buf, nullptr);
    if (mem) vkFreeMemory(dev, mem, nullptr);
  }
};

/// A VkBuffer bound at offset 0 over the whole of `r.memory`: a view of the
/// allocation through which any sub-range can be addressed.
Status bind_whole(const Region &r, ScopedBuffer &out) {
  if (r.dedicated)
    return LF_FAIL(LF_ERR_UNSUPPORTED,
                   "Vulkan memory allocated as a dedicated allocation cannot be bound to another VkBuffer");
  const Device &d = *r.device;
  auto b = d.create_external_buffer(r.allocation_size);
  if (!b) return std::unexpected(b.error());
  out.dev = d.device();
  out.buf = *b;
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(d.device(), out.buf, &req);
  if (req.size > r.allocation_size)
    return LF_FAIL(LF_ERR_INVALID_ARG, "a buffer over the whole allocation needs %llu bytes, it has %llu",
                   static_cast<unsigned long long>(req.size), static_cast<unsigned long long>(r.allocation_size));
  LF_VK_CHECK(vkBindBufferMemory(d.device(), out.buf, r.memory, 0));
  return {};
}

Status check_region(const Region &r) {
  if (!r.device || r.memory == VK_NULL_HANDLE) return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan region without memory");
  if (r.size == 0 || r.offset > r.allocation_size || r.size > r.allocation_size - r.offset)
    return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan region [%llu, +%llu) outside an allocation of %llu bytes",
                   static_cast<unsigned long long>(r.offset), static_cast<unsigned long long>(r.size),
                   static_cast<unsigned long long>(r.allocation_size));
  return {};
}

/// Submit `cmd` on the device's queue (under its mutex), then wait on `fence`
/// outside the mutex so that other threads can submit meanwhile.
Status submit_and_wait(const Device &d, VkCommandBuffer cmd, VkFence fence) {
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = cmd ? 1 : 0;
  si.pCommandBuffers = cmd ? &cmd : nullptr;
  {
    std::lock_guard g(d.queue_mutex());
    LF_VK_CHECK(vkQueueSubmit(d.compute_queue(), 1, &si, fence));
  }
  LF_VK_CHECK(vkWaitForFences(d.device(), 1, &fence, VK_TRUE, UINT64_MAX));
  LF_VK_CHECK(vkResetFences(d.device(), 1, &fence));
  return {};
}

/// Make shader/transfer writes visible to host reads after the fence.
void host_read_barrier(VkCommandBuffer cmd, VkPipelineStageFlags src_stage, VkAccessFlags src_access) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = src_access;
  mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cmd, src_stage, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

}  // namespace

Result<Region> region_of(const Buffer &b) noexcept {
  try {
    if (const auto *src = dynamic_cast<const RegionSource *>(&b)) return src->vulkan_region();
    if (b.kind() != MemoryKind::vulkan_device && b.kind() != MemoryKind::vulkan_host_visible)
      return LF_FAIL(LF_ERR_INVALID_ARG, "a %s buffer is not Vulkan memory", memory_kind_name(b.kind()));
    auto dev = Device::shared(b.device());
    if (!dev) return std::unexpected(dev.error());
    Region r;
    r.device = *dev;
    r.memory = reinterpret_cast<VkDeviceMemory>(b.device_handle());
    r.size = b.size();
    r.host = b.data();
    // The export handle is the memory layer's record of where the buffer sits
    // in its allocation (pool loans and imports do not start at offset 0 of
    // what the handle says, so the handle is the one source of truth).
    if (const ExportHandle *h = b.export_handle()) {
      r.allocation_size = h->allocation_size;
      r.offset = h->offset;
      r.dedicated = h->dedicated;
      const auto &mp = r.device->memory_properties();
      r.coherent = h->memory_type_index < mp.memoryTypeCount &&
                   (mp.memoryTypes[h->memory_type_index].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    } else if (b.flags() & buffer_flags::imported) {
      return LF_FAIL(LF_ERR_UNSUPPORTED, "this imported Vulkan buffer does not say where it lies in its allocation");
    } else {
      r.allocation_size = b.size();
    }
    if (auto st = check_region(r); !st) return std::unexpected(st.error());
    return r;
  } catch (...) {
    return std::unexpected(detail::exception_error("Vulkan region"));
  }
}

Status queue_drain(const Device &d) noexcept {
  // An empty batch with a fence: the fence's first synchronisation scope
  // covers every command submitted earlier to the queue, and its signal makes
  // their writes available. Cheaper than vkQueueWaitIdle, which holds the
  // queue for the whole wait.
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence = VK_NULL_HANDLE;
  LF_VK_CHECK(vkCreateFence(d.device(), &fci, nullptr, &fence));
  auto st = submit_and_wait(d, VK_NULL_HANDLE, fence);
  vkDestroyFence(d.device(), fence, nullptr);
  return st;
}

namespace {
std::atomic<bool> g_external_access{false};
}  // namespace

void note_external_access() noexcept { g_external_access.store(true, std::memory_order_release); }

Status complete_pending(const Device &d) noexcept {
  if (!g_external_access.load(std::memory_order_acquire)) return {};
  return queue_drain(d);
}

Result<std::unique_ptr<Compute>> Compute::create(std::shared_ptr<Device> dev, const Shader &shader) noexcept {
  try {
    if (!dev) return LF_FAIL(LF_ERR_INVALID_ARG, "Compute::create: no device");
    if (!shader.code || shader.bytes == 0 || shader.bytes % 4 || shader.push_bytes % 4 || shader.push_bytes > 128 ||
        shader.local_size_x == 0)
      return LF_FAIL(LF_ERR_INVALID_ARG, "Compute::create: shader '%s' of %zu bytes with %u push-constant bytes",
                     shader.name, shader.bytes, shader.push_bytes);
    std::unique_ptr<Compute> c(new Compute);
    c->dev_ = std::move(dev);
    c->name_ = shader.name;
    c->push_bytes_ = shader.push_bytes;
    c->group_size_ = shader.local_size_x;
    VkDevice d = c->dev_->device();

    VkPhysicalDeviceProperties props{};
    vkGetPhysicalDeviceProperties(c->dev_->physical_device(), &props);
    c->max_groups_ = std::max<uint32_t>(1, props.limits.maxComputeWorkGroupCount[0]);
    c->storage_align_ = std::max<VkDeviceSize>(1, props.limits.minStorageBufferOffsetAlignment);

    VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    smci.codeSize = shader.bytes;
    smci.pCode = shader.code;
    LF_VK_CHECK(vkCreateShaderModule(d, &smci, nullptr, &c->module_));

    VkDescriptorSetLayoutBinding binding{};
    binding.binding = 0;
    binding.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    binding.descriptorCount = 1;
    binding.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    VkDescriptorSetLayoutCreateInfo dslci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    dslci.bindingCount = 1;
    dslci.pBindings = &binding;
    LF_VK_CHECK(vkCreateDescriptorSetLayout(d, &dslci, nullptr, &c->set_layout_));

    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, shader.push_bytes};
    VkPipelineLayoutCreateInfo plci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    plci.setLayoutCount = 1;
    plci.pSetLayouts = &c->set_layout_;
    plci.pushConstantRangeCount = shader.push_bytes ? 1 : 0;
    plci.pPushConstantRanges = shader.push_bytes ? &range : nullptr;
    LF_VK_CHECK(vkCreatePipelineLayout(d, &plci, nullptr, &c->layout_));

    VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    cpci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    cpci.stage.module = c->module_;
    cpci.stage.pName = "main";
    cpci.layout = c->layout_;
    LF_VK_CHECK(vkCreateComputePipelines(d, VK_NULL_HANDLE, 1, &cpci, nullptr, &c->pipeline_));

    VkDescriptorPoolSize ps{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1};
    VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpci.maxSets = 1;
    dpci.poolSizeCount = 1;
    dpci.pPoolSizes = &ps;
    LF_VK_CHECK(vkCreateDescriptorPool(d, &dpci, nullptr, &c->pool_));
    VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    dsai.descriptorPool = c->pool_;
    dsai.descriptorSetCount = 1;
    dsai.pSetLayouts = &c->set_layout_;
    LF_VK_CHECK(vkAllocateDescriptorSets(d, &dsai, &c->set_));

    VkCommandPoolCreateInfo cpoolci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cpoolci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    cpoolci.queueFamilyIndex = c->dev_->compute_queue_family();
    LF_VK_CHECK(vkCreateCommandPool(d, &cpoolci, nullptr, &c->cmd_pool_));
    VkCommandBufferAllocateInfo cbai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cbai.commandPool = c->cmd_pool_;
    cbai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cbai.commandBufferCount = 1;
    LF_VK_CHECK(vkAllocateCommandBuffers(d, &cbai, &c->cmd_));

    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    LF_VK_CHECK(vkCreateFence(d, &fci, nullptr, &c->fence_));
    return c;
  } catch (...) {
    return std::unexpected(detail::exception_error("Compute::create"));
  }
}

Compute::~Compute() {
  if (!dev_) return;
  VkDevice d = dev_->device();
  // Destroying handles that were never created (VK_NULL_HANDLE) is a no-op.
  vkDestroyFence(d, fence_, nullptr);
  if (cmd_) vkFreeCommandBuffers(d, cmd_pool_, 1, &cmd_);
  vkDestroyCommandPool(d, cmd_pool_, nullptr);
  vkDestroyDescriptorPool(d, pool_, nullptr);  // frees set_
  vkDestroyPipeline(d, pipeline_, nullptr);
  vkDestroyPipelineLayout(d, layout_, nullptr);
  vkDestroyDescriptorSetLayout(d, set_layout_, nullptr);
  vkDestroyShaderModule(d, module_, nullptr);
}

Status Compute::run(const Buffer &b, const void *push, size_t push_bytes, uint64_t invocations) noexcept {
  auto r = region_of(b);
  if (!r) return std::unexpected(r.error());
  return run(*r, push, push_bytes, invocations);
}

Status Compute::run(const Region &r, const void *push, size_t push_bytes, uint64_t invocations) noexcept {
  if (auto st = check_region(r); !st) return st;
  if (r.device.get() != dev_.get())
    return LF_FAIL(LF_ERR_INVALID_ARG, "Compute '%s': the region belongs to another Vulkan device", name_);
  if (push_bytes != push_bytes_ || (push_bytes && !push))
    return LF_FAIL(LF_ERR_INVALID_ARG, "Compute '%s' takes %u push-constant bytes, got %zu", name_, push_bytes_,
                   push_bytes);
  if (r.offset % storage_align_)
    return LF_FAIL(LF_ERR_INVALID_ARG,
                   "Compute '%s': offset %llu is not a multiple of minStorageBufferOffsetAlignment (%llu)", name_,
                   static_cast<unsigned long long>(r.offset), static_cast<unsigned long long>(storage_align_));
  if (invocations == 0) return {};
  std::lock_guard g(mu_);
  VkDevice d = dev_->device();
  ScopedBuffer whole;
  if (auto st = bind_whole(r, whole); !st) return st;

  VkDescriptorBufferInfo dbi{whole.buf, r.offset, r.size};
  VkWriteDescriptorSet w{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  w.dstSet = set_;
  w.dstBinding = 0;
  w.descriptorCount = 1;
  w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
  w.pBufferInfo = &dbi;
  // Safe: the previous run waited on its fence, so the set is not in use.
  vkUpdateDescriptorSets(d, 1, &w, 0, nullptr);

  const uint64_t groups = std::min<uint64_t>((invocations + group_size_ - 1) / group_size_, max_groups_);
  LF_VK_CHECK(vkResetCommandBuffer(cmd_, 0));
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  LF_VK_CHECK(vkBeginCommandBuffer(cmd_, &bi));
  vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline_);
  vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, layout_, 0, 1, &set_, 0, nullptr);
  if (push_bytes_) vkCmdPushConstants(cmd_, layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes_, push);
  vkCmdDispatch(cmd_, static_cast<uint32_t>(groups), 1, 1);
  host_read_barrier(cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT);
  LF_VK_CHECK(vkEndCommandBuffer(cmd_));
  return submit_and_wait(*dev_, cmd_, fence_);
}

Status staged_copy(const Region &r, size_t offset, void *host, size_t n, bool to_device) noexcept {
  try {
    if (auto st = check_region(r); !st) return st;
    if (offset > r.size || n > r.size - offset)
      return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan copy of [%zu, +%zu) outside a region of %llu bytes", offset, n,
                     static_cast<unsigned long long>(r.size));
    if (n == 0) return {};
    if (!host) return LF_FAIL(LF_ERR_INVALID_ARG, "Vulkan copy: host pointer is NULL");
    const Device &dev = *r.device;
    VkDevice d = dev.device();
    ScopedBuffer whole;
    if (auto st = bind_whole(r, whole); !st) return st;

    // Staging: a plain HOST_VISIBLE|HOST_COHERENT buffer of n bytes.
    ScopedBuffer staging;
    staging.dev = d;
    VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bci.size = n;
    bci.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    LF_VK_CHECK(vkCreateBuffer(d, &bci, nullptr, &staging.buf));
    VkMemoryRequirements req{};
    vkGetBufferMemoryRequirements(d, staging.buf, &req);
    const int type = dev.find_memory_type(req.memoryTypeBits,
                                          VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                          VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (type < 0) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s has no HOST_VISIBLE memory for staging", dev.name().c_str());
    VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    mai.allocationSize = req.size;
    mai.memoryTypeIndex = static_cast<uint32_t>(type);
    LF_VK_CHECK(vkAllocateMemory(d, &mai, nullptr, &staging.mem));
    LF_VK_CHECK(vkBindBufferMemory(d, staging.buf, staging.mem, 0));
    void *mapped = nullptr;
    LF_VK_CHECK(vkMapMemory(d, staging.mem, 0, VK_WHOLE_SIZE, 0, &mapped));
    if (to_device) std::memcpy(mapped, host, n);

    VkCommandPoolCreateInfo cpci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cpci.flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT;
    cpci.queueFamilyIndex = dev.compute_queue_family();
    VkCommandPool pool = VK_NULL_HANDLE;
    LF_VK_CHECK(vkCreateCommandPool(d, &cpci, nullptr, &pool));
    VkFence fence = VK_NULL_HANDLE;
    auto record_and_run = [&]() -> Status {
      VkCommandBufferAllocateInfo cbai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
      cbai.commandPool = pool;
      cbai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
      cbai.commandBufferCount = 1;
      VkCommandBuffer cmd = VK_NULL_HANDLE;
      LF_VK_CHECK(vkAllocateCommandBuffers(d, &cbai, &cmd));
      VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
      bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
      LF_VK_CHECK(vkBeginCommandBuffer(cmd, &bi));
      VkBufferCopy c{};
      c.size = n;
      if (to_device) {
        c.srcOffset = 0;
        c.dstOffset = r.offset + offset;
        vkCmdCopyBuffer(cmd, staging.buf, whole.buf, 1, &c);
      } else {
        c.srcOffset = r.offset + offset;
        c.dstOffset = 0;
        vkCmdCopyBuffer(cmd, whole.buf, staging.buf, 1, &c);
        host_read_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT);
      }
      LF_VK_CHECK(vkEndCommandBuffer(cmd));
      VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
      LF_VK_CHECK(vkCreateFence(d, &fci, nullptr, &fence));
      return submit_and_wait(dev, cmd, fence);
    };
    Status st = record_and_run();
    vkDestroyFence(d, fence, nullptr);
    vkDestroyCommandPool(d, pool, nullptr);  // frees the command buffer
    if (st && !to_device) std::memcpy(host, mapped, n);
    return st;
  } catch (...) {
    return std::unexpected(detail::exception_error("Vulkan staged copy"));
  }
}

}  // namespace lf::vk

#endif  // LAVAFLOW_HAVE_VULKAN
