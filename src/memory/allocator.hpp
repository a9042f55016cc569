// Layer 1's allocator: memory of the kind a transfer needs, a buffer that
// says what it really is, and import of memory another process exported.
//
//   auto buf = lf::allocate(1 << 20, {.kind = lf::MemoryKind::host_hugepage});
//   if (!buf) ...buf.error()...
//   (*buf)->kind();             // host_hugepage, or host after a fallback
//   (*buf)->fallback_reason();  // why, e.g. "no hugetlbfs pages reserved ..."
//
// Fallback chains (docs/memory.md), taken unless `strict` or LF_STRICT=1:
//   host_numa      -> host
//   host_hugepage  -> (THP, still host_hugepage with a reason) -> host
//   host_pinned    -> (mlock, still host_pinned with a reason) -> host
//   host_shared    -> none: memory that cannot be shared is never passed off as shareable
//   cuda_device    -> host_pinned -> host
//   vulkan_device  -> vulkan_host_visible -> host
//   vulkan_host_visible -> host
// In strict mode an unavailable kind (and the THP step) fails with
// LF_ERR_UNAVAILABLE and the reason.
#pragma once

#include <optional>
#include <string>

#include "core/location.hpp"
#include "memory/buffer.hpp"

namespace lf {

/// What to allocate. Designated initialisers keep call sites readable.
struct AllocOptions {
  MemoryKind kind = MemoryKind::host;
  int numa_node = -1;    ///< host_numa: node to bind to; -1 = the node of the calling CPU.
  int device = 0;        ///< CUDA / Vulkan device index.
  size_t alignment = 0;  ///< Power of two, host kinds; 0 = the kind's default (64 B, a page above
                         ///< LF_HOST_PAGE_ALIGN_THRESHOLD, the huge page size).
  bool strict = false;   ///< Fail with LF_ERR_UNAVAILABLE instead of falling back (LF_STRICT=1 sets it for all).
};

/// Largest request accepted; anything larger is treated as a caller bug (LF_ERR_INVALID_ARG).
inline constexpr size_t kMaxAllocation = size_t{1} << 46;

/// Allocate `size` bytes (> 0). Errors: LF_ERR_INVALID_ARG (zero or absurd
/// size, bad alignment, unknown kind), LF_ERR_NO_MEMORY, LF_ERR_UNAVAILABLE
/// (strict, or no kind left in the chain), LF_ERR_IO.
Result<BufferPtr> allocate(size_t size, const AllocOptions &options) noexcept;
inline Result<BufferPtr> allocate(size_t size, MemoryKind kind = MemoryKind::host) noexcept {
  return allocate(size, AllocOptions{.kind = kind});
}

/// The kind that serves a transfer between `me` and `peer` best, and why:
/// self -> host; local -> host_shared (the peer maps it, zero copy); remote ->
/// host_hugepage when hugetlbfs pages are free (few TLB entries for NIC DMA),
/// host_pinned otherwise.
struct KindChoice {
  MemoryKind kind = MemoryKind::host;
  std::string reason;
};
KindChoice choose_kind(const ProcessLocation &me, const ProcessLocation &peer);

/// allocate() with the kind from choose_kind(), falling back as usual.
Result<BufferPtr> allocate_auto(size_t size, const ProcessLocation &me, const ProcessLocation &peer) noexcept;

/// Map memory another process exported (Buffer::export_handle() there, the fd
/// passed over a Unix socket): host_shared memfds, Vulkan OPAQUE_FDs, CUDA IPC
/// handles. `handle.fd` is borrowed (duplicated here). The buffer views
/// [offset, offset + length) and has buffer_flags::imported set.
Result<BufferPtr> import_buffer(const ExportHandle &handle) noexcept;

/// Why `kind` cannot be allocated exactly as asked (what strict mode would
/// report), or nullopt when it can. Cheap after the first call per kind.
std::optional<std::string> kind_unavailable_reason(MemoryKind kind, int device = 0);

/// Value of LF_STRICT, read once.
bool strict_from_environment() noexcept;

}  // namespace lf
