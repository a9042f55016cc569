// C API: GPU helpers (lavaflow_gpu.h): copies to and from any buffer,
// Vulkan compute on lavaflow's device, and the objects behind a buffer.
#include <lavaflow/lavaflow_gpu.h>

#include <cstring>
#include <memory>

#include "capi/capi_internal.hpp"
#include "capi/capi_memory.hpp"
#include "lavaflow_features.h"
#include "memory/device_copy.hpp"
#include "memory/vulkan_compute.hpp"

namespace lf::capi {
namespace {

struct KernelSlot {
#if LAVAFLOW_HAVE_VULKAN
  std::shared_ptr<vk::Compute> compute;  ///< Shared with runs in flight on other threads.
#endif
};

using KernelTable = HandleTable<KernelSlot, HandleType::kernel>;

KernelTable &kernels() noexcept {
  static KernelTable t;
  return t;
}

Buffer *live_buffer(lf_buffer_t h, const char *fn, lf_status_t &code) noexcept {
  if (!h) {
    code = fail(LF_ERR_INVALID_ARG, "%s: buffer is NULL", fn);
    return nullptr;
  }
  Buffer *b = peek(h);
  if (!b) code = fail(LF_ERR_CLOSED, "%s: buffer is not live (already freed or handed over)", fn);
  return b;
}

}  // namespace
}  // namespace lf::capi

using namespace lf;
using namespace lf::capi;

LF_API lf_status_t lf_buffer_write(lf_buffer_t dst, size_t offset, const void *src, size_t bytes) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    Buffer *b = live_buffer(dst, "lf_buffer_write", code);
    if (!b) return code;
    if (auto st = buffer_write(*b, offset, src, bytes); !st) return fail(st.error());
    return LF_OK;
  });
}

LF_API lf_status_t lf_buffer_read(lf_buffer_t src, size_t offset, void *dst, size_t bytes) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    Buffer *b = live_buffer(src, "lf_buffer_read", code);
    if (!b) return code;
    if (auto st = buffer_read(*b, offset, dst, bytes); !st) return fail(st.error());
    return LF_OK;
  });
}

LF_API lf_status_t lf_vulkan_kernel_create(int device, const uint32_t *spirv, size_t spirv_bytes, size_t push_bytes,
                                           uint32_t local_size_x, lf_vulkan_kernel_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_vulkan_kernel_create: out is NULL");
    if (!spirv || spirv_bytes < 20 || spirv_bytes % 4 || spirv[0] != 0x07230203u)
      return fail(LF_ERR_INVALID_ARG, "lf_vulkan_kernel_create: %zu bytes are not SPIR-V", spirv ? spirv_bytes : 0);
    if (push_bytes % 4 || push_bytes > 128)
      return fail(LF_ERR_INVALID_ARG, "lf_vulkan_kernel_create: %zu push-constant bytes (multiple of 4, <= 128)",
                  push_bytes);
    if (local_size_x == 0) return fail(LF_ERR_INVALID_ARG, "lf_vulkan_kernel_create: local_size_x is 0");
#if LAVAFLOW_HAVE_VULKAN
    if (device < 0) return fail(LF_ERR_INVALID_ARG, "lf_vulkan_kernel_create: device %d", device);
    auto dev = vk::Device::shared(device);
    if (!dev) return fail(dev.error());
    vk::Shader s{spirv, spirv_bytes, static_cast<uint32_t>(push_bytes), "lf_vulkan_kernel", local_size_x};
    auto c = vk::Compute::create(*dev, s);
    if (!c) return fail(c.error());
    auto [h, slot] = kernels().acquire();
    if (!slot) return fail(LF_ERR_NO_MEMORY, "no kernel handle available");
    slot->compute = std::move(*c);
    kernels().publish(h);
    *out = KernelTable::to_handle<lf_vulkan_kernel_t>(h);
    return LF_OK;
#else
    (void)device;
    return fail(LF_ERR_UNSUPPORTED, "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
#endif
  });
}

LF_API lf_status_t lf_vulkan_kernel_run(lf_vulkan_kernel_t kernel, lf_buffer_t buf, const void *push, size_t push_bytes,
                                        uint64_t invocations) {
  return guard([&]() -> lf_status_t {
    // A reference taken with the slot locked: a destroy on another thread
    // then cannot free the kernel under this run.
    KernelSlot k;
    if (!kernel || !kernels().with_locked(kernel, [&](KernelSlot &s) { k = s; }))
      return fail(kernel ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG, "lf_vulkan_kernel_run: kernel is not live");
    lf_status_t code = LF_OK;
    Buffer *b = live_buffer(buf, "lf_vulkan_kernel_run", code);
    if (!b) return code;
#if LAVAFLOW_HAVE_VULKAN
    if (auto st = k.compute->run(*b, push, push_bytes, invocations); !st) return fail(st.error());
    return LF_OK;
#else
    (void)push, (void)push_bytes, (void)invocations;
    return fail(LF_ERR_UNSUPPORTED, "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
#endif
  });
}

LF_API lf_status_t lf_vulkan_kernel_destroy(lf_vulkan_kernel_t kernel) {
  return guard([&]() -> lf_status_t {
    KernelSlot gone;
    if (!kernel || !kernels().retire(kernel, [&](KernelSlot &k) { gone = std::move(k); }))
      return fail(kernel ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG, "lf_vulkan_kernel_destroy: kernel is not live");
    return LF_OK;
  });
}

LF_API lf_status_t lf_buffer_vulkan_info(lf_buffer_t buf, lf_vulkan_buffer_info_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out || out->size < sizeof(size_t) || out->size > 4096)
      return fail(LF_ERR_INVALID_ARG, "lf_buffer_vulkan_info: initialise out with LF_VULKAN_BUFFER_INFO_INIT");
    lf_status_t code = LF_OK;
    Buffer *b = live_buffer(buf, "lf_buffer_vulkan_info", code);
    if (!b) return code;
    if (b->kind() != MemoryKind::vulkan_device && b->kind() != MemoryKind::vulkan_host_visible)
      return fail(LF_ERR_INVALID_ARG, "lf_buffer_vulkan_info: a %s buffer is not Vulkan memory",
                  memory_kind_name(b->kind()));
#if LAVAFLOW_HAVE_VULKAN
    auto r = vk::region_of(*b);
    if (!r) return fail(r.error());
    const vk::Device &d = *r->device;
    // From now on the application may submit work on lavaflow's queue that
    // lavaflow does not wait for: sends must drain the queue first.
    vk::note_external_access();
    lf_vulkan_buffer_info_t i = LF_VULKAN_BUFFER_INFO_INIT;
    i.instance = d.instance();
    i.physical_device = d.physical_device();
    i.device = d.device();
    i.queue = d.compute_queue();
    i.queue_family = d.compute_queue_family();
    i.memory = reinterpret_cast<uint64_t>(r->memory);
    i.offset = r->offset;
    i.allocation_size = r->allocation_size;
    std::memcpy(i.device_uuid, d.device_uuid(), sizeof i.device_uuid);
    std::memcpy(i.driver_uuid, d.driver_uuid(), sizeof i.driver_uuid);
    i.imported = (b->flags() & buffer_flags::imported) != 0;
    std::memcpy(reinterpret_cast<char *>(out) + sizeof(size_t), reinterpret_cast<const char *>(&i) + sizeof(size_t),
                std::min(out->size, sizeof i) - sizeof(size_t));
    return LF_OK;
#else
    return fail(LF_ERR_UNSUPPORTED, "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
#endif
  });
}

LF_API lf_status_t lf_buffer_device_pointer(lf_buffer_t buf, void **out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_buffer_device_pointer: out is NULL");
    lf_status_t code = LF_OK;
    Buffer *b = live_buffer(buf, "lf_buffer_device_pointer", code);
    if (!b) return code;
    if (b->kind() != MemoryKind::cuda_device)
      return fail(LF_ERR_INVALID_ARG, "lf_buffer_device_pointer: a %s buffer has no CUDA device pointer",
                  memory_kind_name(b->kind()));
    *out = reinterpret_cast<void *>(b->device_handle());
    return LF_OK;
  });
}
