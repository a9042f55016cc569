#include "exec/kernels/vulkan_pipelines.hpp"

#if LAVAFLOW_HAVE_VULKAN

#include <algorithm>
#include <bit>
#include <exception>
#include <new>

// Generated at build time (cmake/LavaflowSpirv.cmake); they need <cstdint>.
#include "lf_shaders/exec_add.spv.h"
#include "lf_shaders/exec_matmul.spv.h"
#include "lf_shaders/exec_mul.spv.h"
#include "lf_shaders/exec_scale.spv.h"
#include "lf_shaders/exec_sum.spv.h"

namespace lf::exec::vkk {

namespace {

struct Code {
  const uint32_t *words;
  size_t bytes;
};

// In the order of enum Op.
const Code kCode[kOps] = {
    {lf_spv_exec_add, sizeof lf_spv_exec_add},       {lf_spv_exec_mul, sizeof lf_spv_exec_mul},
    {lf_spv_exec_scale, sizeof lf_spv_exec_scale},   {lf_spv_exec_sum, sizeof lf_spv_exec_sum},
    {lf_spv_exec_matmul, sizeof lf_spv_exec_matmul},
};

// Buffers start at this size and grow by powers of two.
constexpr uint64_t kMinBuffer = uint64_t{64} << 10;

}  // namespace

Result<std::unique_ptr<Pipelines>> Pipelines::create(std::shared_ptr<vk::Device> dev, uint64_t buffer_cap) noexcept {
  try {
    std::unique_ptr<Pipelines> p(new Pipelines);
    p->dev_ = std::move(dev);
    VkDevice d = p->dev_->device();

    VkPhysicalDeviceProperties props{};
    vkGetPhysicalDeviceProperties(p->dev_->physical_device(), &props);
    p->max_groups_[0] = std::max<uint32_t>(1, props.limits.maxComputeWorkGroupCount[0]);
    p->max_groups_[1] = std::max<uint32_t>(1, props.limits.maxComputeWorkGroupCount[1]);
    p->max_buffer_bytes_ =
        std::min<uint64_t>({props.limits.maxStorageBufferRange, p->dev_->max_allocation_size(), buffer_cap});
    p->max_buffer_bytes_ &= ~uint64_t{255};
    p->cpu_device_ = props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;

    VkDescriptorSetLayoutBinding bindings[3]{};
    for (uint32_t i = 0; i < 3; ++i) {
      bindings[i].binding = i;
      bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      bindings[i].descriptorCount = 1;
      bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo dslci{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    dslci.bindingCount = 3;
    dslci.pBindings = bindings;
    LF_VK_CHECK(vkCreateDescriptorSetLayout(d, &dslci, nullptr, &p->set_layout_));

    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(Push)};
    VkPipelineLayoutCreateInfo plci{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    plci.setLayoutCount = 1;
    plci.pSetLayouts = &p->set_layout_;
    plci.pushConstantRangeCount = 1;
    plci.pPushConstantRanges = &range;
    LF_VK_CHECK(vkCreatePipelineLayout(d, &plci, nullptr, &p->layout_));

    for (int i = 0; i < kOps; ++i) {
      VkShaderModuleCreateInfo smci{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
      smci.codeSize = kCode[i].bytes;
      smci.pCode = kCode[i].words;
      LF_VK_CHECK(vkCreateShaderModule(d, &smci, nullptr, &p->modules_[i]));
      VkComputePipelineCreateInfo cpci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
      cpci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
      cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
      cpci.stage.module = p->modules_[i];
      cpci.stage.pName = "main";
      cpci.layout = p->layout_;
      LF_VK_CHECK(vkCreateComputePipelines(d, VK_NULL_HANDLE, 1, &cpci, nullptr, &p->pipelines_[i]));
    }
    return p;
  } catch (...) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "Vulkan kernels: out of memory building the pipelines");
  }
}

Pipelines::~Pipelines() {
  if (!dev_) return;
  VkDevice d = dev_->device();
  // Destroying VK_NULL_HANDLE is a no-op, so partial setup unwinds too.
  for (int i = 0; i < kOps; ++i) {
    vkDestroyPipeline(d, pipelines_[i], nullptr);
    vkDestroyShaderModule(d, modules_[i], nullptr);
  }
  vkDestroyPipelineLayout(d, layout_, nullptr);
  vkDestroyDescriptorSetLayout(d, set_layout_, nullptr);
}

Result<std::unique_ptr<Slot>> Slot::create(const Pipelines &p) noexcept {
  try {
    std::unique_ptr<Slot> s(new Slot(p));
    VkDevice d = p.device().device();
    VkDescriptorPoolSize ps{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 3};
    VkDescriptorPoolCreateInfo dpci{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dpci.maxSets = 1;
    dpci.poolSizeCount = 1;
    dpci.pPoolSizes = &ps;
    LF_VK_CHECK(vkCreateDescriptorPool(d, &dpci, nullptr, &s->pool_));
    VkDescriptorSetLayout layout = p.set_layout();
    VkDescriptorSetAllocateInfo dsai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    dsai.descriptorPool = s->pool_;
    dsai.descriptorSetCount = 1;
    dsai.pSetLayouts = &layout;
    LF_VK_CHECK(vkAllocateDescriptorSets(d, &dsai, &s->set_));

    VkCommandPoolCreateInfo cpci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cpci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    cpci.queueFamilyIndex = p.device().compute_queue_family();
    LF_VK_CHECK(vkCreateCommandPool(d, &cpci, nullptr, &s->cmd_pool_));
    VkCommandBufferAllocateInfo cbai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cbai.commandPool = s->cmd_pool_;
    cbai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cbai.commandBufferCount = 1;
    LF_VK_CHECK(vkAllocateCommandBuffers(d, &cbai, &s->cmd_));
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    LF_VK_CHECK(vkCreateFence(d, &fci, nullptr, &s->fence_));
    return s;
  } catch (...) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "Vulkan kernels: out of memory creating a slot");
  }
}

Slot::~Slot() {
  VkDevice d = p_.device().device();
  release_buffers();
  vkDestroyFence(d, fence_, nullptr);
  vkDestroyCommandPool(d, cmd_pool_, nullptr);  // frees cmd_
  vkDestroyDescriptorPool(d, pool_, nullptr);   // frees set_
}

void Slot::destroy(HostBuffer &b) noexcept {
  VkDevice d = p_.device().device();
  if (b.host) vkUnmapMemory(d, b.mem);
  vkDestroyBuffer(d, b.buf, nullptr);
  vkFreeMemory(d, b.mem, nullptr);
  b = HostBuffer{};
}

void Slot::release_buffers() noexcept {
  for (auto &b : bufs_) destroy(b);
}

uint64_t Slot::held_bytes() const noexcept { return bufs_[0].bytes + bufs_[1].bytes + bufs_[2].bytes; }

Status Slot::grow(HostBuffer &b, uint64_t bytes) noexcept {
  const vk::Device &dev = p_.device();
  VkDevice d = dev.device();
  const uint64_t want = std::min(std::bit_ceil(std::max(bytes, kMinBuffer)), p_.max_buffer_bytes());
  if (want < bytes)
    return LF_FAIL(LF_ERR_UNSUPPORTED, "Vulkan kernels: a %llu-byte buffer exceeds %s's limit of %llu bytes",
                   static_cast<unsigned long long>(bytes), dev.name().c_str(),
                   static_cast<unsigned long long>(p_.max_buffer_bytes()));
  // The old buffer stays until the new one exists, so that a failure leaves
  // the slot (and its descriptor set) as it was.
  HostBuffer nb;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = want;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  auto fail = [&](VkResult r, const char *call) {
    destroy(nb);
    return std::unexpected(vk::vk_error(r, call, __FILE__, __LINE__));
  };
  if (VkResult r = vkCreateBuffer(d, &bci, nullptr, &nb.buf); r != VK_SUCCESS) return fail(r, "vkCreateBuffer");
  VkMemoryRequirements req{};
  vkGetBufferMemoryRequirements(d, nb.buf, &req);
  // Results are read back by the host: cached memory reads at memory speed.
  const int type = dev.find_memory_type(req.memoryTypeBits,
                                        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                        VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  if (type < 0) {
    destroy(nb);
    return LF_FAIL(LF_ERR_UNAVAILABLE,
                   "Vulkan kernels: %s has no HOST_VISIBLE|HOST_COHERENT memory for storage buffers",
                   dev.name().c_str());
  }
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = static_cast<uint32_t>(type);
  if (VkResult r = vkAllocateMemory(d, &mai, nullptr, &nb.mem); r != VK_SUCCESS) return fail(r, "vkAllocateMemory");
  if (VkResult r = vkBindBufferMemory(d, nb.buf, nb.mem, 0); r != VK_SUCCESS) return fail(r, "vkBindBufferMemory");
  if (VkResult r = vkMapMemory(d, nb.mem, 0, VK_WHOLE_SIZE, 0, &nb.host); r != VK_SUCCESS) {
    nb.host = nullptr;
    return fail(r, "vkMapMemory");
  }
  nb.bytes = want;
  destroy(b);
  b = nb;
  return {};
}

void Slot::write_descriptors() noexcept {
  VkDescriptorBufferInfo info[3];
  VkWriteDescriptorSet w[3];
  for (uint32_t i = 0; i < 3; ++i) {
    info[i] = VkDescriptorBufferInfo{bufs_[i].buf, 0, VK_WHOLE_SIZE};
    w[i] = VkWriteDescriptorSet{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    w[i].dstSet = set_;
    w[i].dstBinding = i;
    w[i].descriptorCount = 1;
    w[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    w[i].pBufferInfo = &info[i];
  }
  vkUpdateDescriptorSets(p_.device().device(), 3, w, 0, nullptr);
}

Status Slot::reserve(uint64_t a_bytes, uint64_t b_bytes, uint64_t c_bytes) noexcept {
  const uint64_t need[3] = {a_bytes, b_bytes, c_bytes};
  bool changed = false;
  for (int i = 0; i < 3; ++i) {
    // Every binding gets a buffer even when the op does not read it, so that
    // the descriptor set is always complete.
    if (bufs_[i].buf != VK_NULL_HANDLE && bufs_[i].bytes >= need[i]) continue;
    if (auto st = grow(bufs_[i], need[i]); !st) {
      if (changed && bufs_[0].buf && bufs_[1].buf && bufs_[2].buf) write_descriptors();
      return st;
    }
    changed = true;
  }
  // Safe to rewrite: the previous run() waited on its fence, so the set is idle.
  if (changed && bufs_[0].buf && bufs_[1].buf && bufs_[2].buf) write_descriptors();
  return {};
}

Status Slot::run(Op op, const Push &push, uint32_t groups_x, uint32_t groups_y) noexcept {
  const vk::Device &dev = p_.device();
  VkDevice d = dev.device();
  LF_VK_CHECK(vkResetCommandBuffer(cmd_, 0));
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  LF_VK_CHECK(vkBeginCommandBuffer(cmd_, &bi));
  vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p_.pipeline(op));
  vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p_.layout(), 0, 1, &set_, 0, nullptr);
  vkCmdPushConstants(cmd_, p_.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof push, &push);
  vkCmdDispatch(cmd_, groups_x, groups_y, 1);
  // The host reads c() after the fence: make the shader's writes visible to it.
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0,
                       nullptr);
  LF_VK_CHECK(vkEndCommandBuffer(cmd_));
  // Host writes to coherent memory before vkQueueSubmit are visible to the
  // submitted work (the submission's implicit host-write ordering).
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  {
    std::lock_guard g(dev.queue_mutex());
    LF_VK_CHECK(vkQueueSubmit(dev.compute_queue(), 1, &si, fence_));
  }
  // Waited outside the queue mutex so that other slots can submit meanwhile.
  LF_VK_CHECK(vkWaitForFences(d, 1, &fence_, VK_TRUE, UINT64_MAX));
  LF_VK_CHECK(vkResetFences(d, 1, &fence_));
  return {};
}

}  // namespace lf::exec::vkk

#endif  // LAVAFLOW_HAVE_VULKAN
