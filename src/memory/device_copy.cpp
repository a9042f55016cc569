#include "memory/device_copy.hpp"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "lavaflow_features.h"
#include "memory/cuda_rt.hpp"
#include "memory/kinds.hpp"
#include "memory/transfer.hpp"
#include "memory/vulkan_compute.hpp"

namespace lf {

namespace {

Status check_range(const Buffer &b, size_t offset, size_t n, const void *host) {
  if (offset > b.size() || n > b.size() - offset)
    return LF_FAIL(LF_ERR_INVALID_ARG, "copy of [%zu, +%zu) outside a buffer of %zu bytes", offset, n, b.size());
  if (n && !host) return LF_FAIL(LF_ERR_INVALID_ARG, "copy: host pointer is NULL");
  return {};
}

bool is_vulkan(MemoryKind k) { return k == MemoryKind::vulkan_device || k == MemoryKind::vulkan_host_visible; }

#if LAVAFLOW_HAVE_CUDA
/// One transfer manager per CUDA device, made on first use and kept: its
/// pinned staging buffers are what makes later copies fast.
Result<cuda::TransferManager *> transfer_manager(int device) {
  static std::mutex mu;
  static auto *managers = new std::map<int, std::unique_ptr<cuda::TransferManager>>;  // leaked: used at exit
  std::lock_guard g(mu);
  if (auto it = managers->find(device); it != managers->end()) return it->second.get();
  auto tm = cuda::TransferManager::create({.device = device});
  if (!tm) return std::unexpected(tm.error());
  cuda::TransferManager *p = tm->get();
  managers->emplace(device, std::move(*tm));
  return p;
}
#endif

Status cuda_copy(const Buffer &b, size_t offset, void *host, size_t n, bool to_device) {
#if LAVAFLOW_HAVE_CUDA
  auto tm = transfer_manager(b.device());
  if (!tm) return std::unexpected(tm.error());
  char *dev = reinterpret_cast<char *>(b.device_handle()) + offset;
  return to_device ? (*tm)->h2d(dev, host, n) : (*tm)->d2h(host, dev, n);
#else
  (void)b, (void)offset, (void)host, (void)n, (void)to_device;
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without CUDA (LAVAFLOW_WITH_CUDA)");
#endif
}

Status vulkan_copy(const Buffer &b, size_t offset, void *host, size_t n, bool to_device, const CopyOptions &o) {
#if LAVAFLOW_HAVE_VULKAN
  auto r = vk::region_of(b);
  if (!r) return std::unexpected(r.error());
  if (r->host && r->coherent && !o.force_staging) {
    // Earlier GPU work on the buffer must be complete before the host reads
    // it, and before the host overwrites what a shader may still be reading.
    if (auto st = vk::complete_pending(*r->device); !st) return st;
    char *p = static_cast<char *>(r->host) + offset;
    if (to_device)
      std::memcpy(p, host, n);
    else
      std::memcpy(host, p, n);
    return {};
  }
  return vk::staged_copy(*r, offset, host, n, to_device);
#else
  (void)b, (void)offset, (void)host, (void)n, (void)to_device, (void)o;
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
#endif
}

Status copy(const Buffer &b, size_t offset, void *host, size_t n, bool to_device, const CopyOptions &o) noexcept {
  try {
    if (auto st = check_range(b, offset, n, host); !st) return st;
    if (n == 0) return {};
    if (is_host_kind(b.kind())) {
      if (!b.data()) return LF_FAIL(LF_ERR_INVALID_ARG, "host buffer without an address");
      char *p = static_cast<char *>(b.data()) + offset;
      if (to_device)
        std::memcpy(p, host, n);
      else
        std::memcpy(host, p, n);
      return {};
    }
    if (b.kind() == MemoryKind::cuda_device) return cuda_copy(b, offset, host, n, to_device);
    if (is_vulkan(b.kind())) return vulkan_copy(b, offset, host, n, to_device, o);
    return LF_FAIL(LF_ERR_INVALID_ARG, "copy: unknown memory kind %d", static_cast<int>(b.kind()));
  } catch (...) {
    return std::unexpected(detail::exception_error("buffer copy"));
  }
}

}  // namespace

Status buffer_write(const Buffer &dst, size_t offset, const void *src, size_t n, const CopyOptions &o) noexcept {
  return copy(dst, offset, const_cast<void *>(src), n, true, o);
}

Status buffer_read(const Buffer &src, size_t offset, void *dst, size_t n, const CopyOptions &o) noexcept {
  return copy(src, offset, dst, n, false, o);
}

Status complete_device_writes(const Buffer &b) noexcept {
  try {
    if (is_vulkan(b.kind())) {
#if LAVAFLOW_HAVE_VULKAN
      auto r = vk::region_of(b);
      if (!r) return std::unexpected(r.error());
      return vk::complete_pending(*r->device);
#endif
    }
    if (b.kind() == MemoryKind::cuda_device) {
#if LAVAFLOW_HAVE_CUDA
      const cuda::Runtime &rt = cuda::Runtime::get();
      if (auto why = rt.available()) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
      LF_CUDA_CHECK(rt, rt.api().SetDevice(b.device()));
      LF_CUDA_CHECK(rt, rt.api().DeviceSynchronize());
#endif
    }
    return {};
  } catch (...) {
    return std::unexpected(detail::exception_error("device completion"));
  }
}

}  // namespace lf
