#include "memory/allocator.hpp"

#include <optional>

#include "core/config.hpp"
#include "core/log.hpp"
#include "core/scope.hpp"
#include "memory/kinds.hpp"

namespace lf {

using detail::KindRequest;

bool strict_from_environment() noexcept {
  static const bool strict = [] {
    try {
      return config::get_bool("LF_STRICT");
    } catch (...) {
      return false;
    }
  }();
  return strict;
}

namespace {
Result<BufferPtr> alloc_kind(MemoryKind k, const KindRequest &r) noexcept {
  switch (k) {
    case MemoryKind::host: return detail::alloc_host(r);
    case MemoryKind::host_numa: return detail::alloc_numa(r);
    case MemoryKind::host_hugepage: return detail::alloc_hugepage(r);
    case MemoryKind::host_pinned: return detail::alloc_pinned(r);
    case MemoryKind::host_shared: return detail::alloc_shared(r);
    case MemoryKind::cuda_device: return detail::alloc_cuda(r);
    case MemoryKind::vulkan_device: return detail::alloc_vulkan(r, true);
    case MemoryKind::vulkan_host_visible: return detail::alloc_vulkan(r, false);
  }
  return LF_FAIL(LF_ERR_INVALID_ARG, "unknown memory kind %d", static_cast<int>(k));
}

// The documented chains (docs/memory.md). host_shared has none on purpose:
// a caller that asked for shareable memory must not get private memory.
std::optional<MemoryKind> fallback_of(MemoryKind k) noexcept {
  switch (k) {
    case MemoryKind::host_numa:
    case MemoryKind::host_hugepage:
    case MemoryKind::host_pinned:
    case MemoryKind::vulkan_host_visible: return MemoryKind::host;
    case MemoryKind::cuda_device: return MemoryKind::host_pinned;
    case MemoryKind::vulkan_device: return MemoryKind::vulkan_host_visible;
    default: return std::nullopt;
  }
}
}  // namespace

Result<BufferPtr> allocate(size_t size, const AllocOptions &o) noexcept {
  if (!is_valid_kind(o.kind)) return LF_FAIL(LF_ERR_INVALID_ARG, "unknown memory kind %d", static_cast<int>(o.kind));
  if (size == 0) return LF_FAIL(LF_ERR_INVALID_ARG, "allocation of 0 bytes");
  if (size > kMaxAllocation)
    return LF_FAIL(LF_ERR_INVALID_ARG, "allocation of %zu bytes is absurd (limit %zu)", size, kMaxAllocation);
  if (o.alignment & (o.alignment - 1))
    return LF_FAIL(LF_ERR_INVALID_ARG, "alignment %zu is not a power of two", o.alignment);
  if (o.alignment > (size_t{1} << 30)) return LF_FAIL(LF_ERR_INVALID_ARG, "alignment %zu above 1 GiB", o.alignment);
  const bool strict = o.strict || strict_from_environment();
  KindRequest req{size, o.alignment, o.numa_node, o.device, strict};
  try {
    std::string chain;  // why each earlier kind in the chain was skipped
    MemoryKind k = o.kind;
    for (;;) {
      auto r = alloc_kind(k, req);
      if (r) {
        auto *b = static_cast<detail::OwnedBuffer *>(r->get());
        b->set_requested(o.kind);
        if (!chain.empty()) b->prepend_reason(chain);
        return r;
      }
      if (r.error().code != LF_ERR_UNAVAILABLE) return r;
      std::string step = std::string(memory_kind_name(k)) + " unavailable: " + r.error().message;
      if (strict)
        return LF_FAIL(LF_ERR_UNAVAILABLE, "%s%s%s (strict: no fallback)", chain.c_str(), chain.empty() ? "" : "; ",
                       step.c_str());
      auto next = fallback_of(k);
      if (!next) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s%s%s", chain.c_str(), chain.empty() ? "" : "; ", step.c_str());
      chain += (chain.empty() ? "" : "; ") + step + " -> " + memory_kind_name(*next);
      LF_LOG(debug, "allocate(%zu, %s): %s", size, memory_kind_name(o.kind), step.c_str());
      k = *next;
    }
  } catch (...) {
    return std::unexpected(detail::exception_error("allocate"));
  }
}

KindChoice choose_kind(const ProcessLocation &me, const ProcessLocation &peer) {
  ScopeDecision d = decide_scope(me, peer);
  switch (d.scope) {
    case Scope::self: return {MemoryKind::host, "self (" + d.reason + "): the memory never leaves this process"};
    case Scope::local:
      return {MemoryKind::host_shared, "local (" + d.reason + "): memfd memory the peer maps, no copy"};
    case Scope::remote: break;
  }
  if (detail::free_hugepages_2m() > 0)
    return {MemoryKind::host_hugepage,
            "remote (" + d.reason + "): hugetlbfs pages are reserved; few TLB entries and never swapped for NIC DMA"};
  return {MemoryKind::host_pinned, "remote (" + d.reason + "): page-locked memory for NIC DMA"};
}

Result<BufferPtr> allocate_auto(size_t size, const ProcessLocation &me, const ProcessLocation &peer) noexcept {
  try {
    KindChoice c = choose_kind(me, peer);
    LF_LOG(debug, "allocate_auto(%zu): %s: %s", size, memory_kind_name(c.kind), c.reason.c_str());
    return allocate(size, AllocOptions{.kind = c.kind, .numa_node = me.numa_node});
  } catch (...) {
    return std::unexpected(detail::exception_error("allocate_auto"));
  }
}

Result<BufferPtr> import_buffer(const ExportHandle &h) noexcept {
  if (h.fd < 0 && h.kind != MemoryKind::cuda_device)
    return LF_FAIL(LF_ERR_INVALID_ARG, "import of %s memory without an fd", memory_kind_name(h.kind));
  switch (h.kind) {
    case MemoryKind::host_shared: return detail::import_shared(h);
    case MemoryKind::vulkan_device:
    case MemoryKind::vulkan_host_visible: return detail::import_vulkan(h);
    case MemoryKind::cuda_device: return detail::import_cuda(h);
    default:
      return LF_FAIL(LF_ERR_UNSUPPORTED, "%s memory cannot be imported from another process", memory_kind_name(h.kind));
  }
}

std::optional<std::string> kind_unavailable_reason(MemoryKind kind, int device) {
  switch (kind) {
    case MemoryKind::host:
    case MemoryKind::host_shared:
    case MemoryKind::host_pinned: return std::nullopt;
    case MemoryKind::host_numa: return detail::numa_unavailable(-1);
    case MemoryKind::host_hugepage: return detail::hugetlb_unavailable(detail::host_page_size());
    case MemoryKind::cuda_device: return detail::cuda_unavailable(device);
    case MemoryKind::vulkan_device: return detail::vulkan_unavailable(device, true);
    case MemoryKind::vulkan_host_visible: return detail::vulkan_unavailable(device, false);
  }
  return "unknown memory kind " + std::to_string(static_cast<int>(kind));
}

}  // namespace lf
