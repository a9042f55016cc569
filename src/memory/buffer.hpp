// Layer 1's buffer: a piece of memory that knows what it is.
//
// Contract used by the channel layer and the transports:
//  - kind() is the kind really obtained; requested_kind() what was asked for;
//    fallback_reason() says why they differ.
//  - data() is a host pointer, or nullptr for device-only memory.
//  - shared_ref() describes memory a peer process can map: a memfd segment,
//    an offset and a length. Buffers from the shared pool have one; the peer
//    maps the segment once (SharedSegment::map) and addresses it afterwards.
//  - Destroying a Buffer releases it: to its pool if it came from one,
//    to the system otherwise. Subclasses (received zero-copy views) override
//    the destructor to return memory to a remote owner.
#pragma once

#include <lavaflow/lavaflow.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.hpp"
#include "memory/registration.hpp"

namespace lf {

enum class MemoryKind : int {
  host = LF_MEM_HOST,
  host_numa = LF_MEM_HOST_NUMA,
  host_hugepage = LF_MEM_HOST_HUGEPAGE,
  host_pinned = LF_MEM_HOST_PINNED,
  host_shared = LF_MEM_HOST_SHARED,
  cuda_device = LF_MEM_CUDA_DEVICE,
  vulkan_device = LF_MEM_VULKAN_DEVICE,
  vulkan_host_visible = LF_MEM_VULKAN_HOST_VISIBLE,
};

/// Static name of a kind, e.g. "host-shared" (the same strings as lf_memory_kind_string).
const char *memory_kind_name(MemoryKind k) noexcept;
/// True for kinds whose data() is always a host pointer (the host_* kinds).
bool is_host_kind(MemoryKind k) noexcept;
/// True when `k` is one of the enumerators (a cast from C may not be).
bool is_valid_kind(MemoryKind k) noexcept;

/// Properties of a buffer beyond its kind (Buffer::flags()).
namespace buffer_flags {
inline constexpr uint32_t locked = 1u << 0;            ///< Page-locked (mlock or CUDA); never swapped.
inline constexpr uint32_t cuda_registered = 1u << 1;   ///< Known to CUDA (cudaHostAlloc/Register): DMA-ready.
inline constexpr uint32_t hugetlb = 1u << 2;           ///< Backed by hugetlbfs pages (page_size() says which).
inline constexpr uint32_t transparent_huge = 1u << 3;  ///< Anonymous memory advised MADV_HUGEPAGE (THP).
inline constexpr uint32_t host_visible = 1u << 4;      ///< Device memory that is also mapped at data().
inline constexpr uint32_t imported = 1u << 5;          ///< Maps memory another process exported.
inline constexpr uint32_t pooled = 1u << 6;            ///< Came from an lf::Pool; destruction returns it.
}  // namespace buffer_flags

/// Where a shareable buffer lives: enough for a peer to map and address it.
struct SharedRef {
  uint64_t segment_id = 0;  ///< Unique per (process, segment); stable for the segment's life.
  int fd = -1;              ///< memfd of the whole segment (borrowed; owned by the segment).
  size_t segment_size = 0;
  size_t offset = 0;  ///< Of the buffer within the segment.
  size_t length = 0;
};

/// Handle through which another process can import device memory.
struct ExportHandle {
  MemoryKind kind = MemoryKind::host;
  int fd = -1;                 ///< OPAQUE_FD / memfd / POSIX fd (borrowed).
  size_t allocation_size = 0;  ///< Size of the underlying allocation (import needs it).
  size_t offset = 0;
  size_t length = 0;
  uint32_t memory_type_index = 0;  ///< Vulkan memory type used (import must match).
  uint8_t device_uuid[16] = {};    ///< Vulkan/CUDA device identity.
  std::string cuda_ipc_handle;     ///< cudaIpcMemHandle_t bytes for legacy CUDA IPC.
  uint8_t driver_uuid[16] = {};    ///< Vulkan driver identity (OPAQUE_FD import requires a match).
  bool dedicated = false;          ///< Vulkan: allocated as a dedicated allocation (import must be too).
  uint64_t segment_id =
      0;  ///< host_shared: SharedRef::segment_id of the memfd; device kinds: unique id of the exported allocation.
};

class Pool;

class Buffer {
 public:
  virtual ~Buffer();
  Buffer(const Buffer &) = delete;
  Buffer &operator=(const Buffer &) = delete;

  MemoryKind kind() const noexcept { return kind_; }
  MemoryKind requested_kind() const noexcept { return requested_; }
  const std::string &fallback_reason() const noexcept { return reason_; }
  void *data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  size_t alignment() const noexcept { return alignment_; }
  int numa_node() const noexcept { return numa_node_; }
  int device() const noexcept { return device_; }
  /// Device pointer (CUDA) or VkDeviceMemory handle (Vulkan) as an integer; 0 for host memory.
  uint64_t device_handle() const noexcept { return device_handle_; }

  /// Set for memory a peer on the same host can map (host-shared kinds).
  virtual const SharedRef *shared_ref() const noexcept { return nullptr; }
  /// Set for device memory that can be exported to another process.
  virtual const ExportHandle *export_handle() const noexcept { return nullptr; }

  /// Shrink the reported size (pools hand out a class-sized block but report
  /// what was asked). Never grows.
  void set_size(size_t s) noexcept {
    if (s <= size_) size_ = s;
  }

  /// Size of the pages backing data(): 4 KiB, 2 MiB or 1 GiB (hugetlbfs); 0 for device-only memory.
  size_t page_size() const noexcept { return page_size_; }
  /// buffer_flags bits.
  uint32_t flags() const noexcept { return flags_; }

  /// The unit of memory this buffer lies in (its pool slab, shared segment
  /// or allocation) and that unit's transport registrations
  /// (memory/registration.hpp). The default is the buffer itself.
  virtual RegisteredRange registered_range() const noexcept;

 protected:
  Buffer() = default;
  /// Copy what describes `o` (kind, reason, pointers, node, flags...) into this
  /// buffer; wrappers such as pool buffers present their block this way.
  void describe_as(const Buffer &o);
  MemoryKind kind_ = MemoryKind::host;
  MemoryKind requested_ = MemoryKind::host;
  std::string reason_;
  void *data_ = nullptr;
  size_t size_ = 0;
  size_t alignment_ = 0;
  int numa_node_ = -1;
  int device_ = -1;
  uint64_t device_handle_ = 0;
  size_t page_size_ = 0;
  uint32_t flags_ = 0;
  /// Registrations of this buffer's own memory. A subclass that frees memory
  /// clears them first, in its destructor.
  mutable Registrations registrations_;
};

using BufferPtr = std::unique_ptr<Buffer>;

/// A memfd segment mapped into this process (either created here or
/// imported from a peer's fd). Imported segments are cached by the importer.
class SharedSegment {
 public:
  /// Create a new anonymous memfd segment of `size` bytes and map it.
  static Result<std::shared_ptr<SharedSegment>> create(size_t size, const char *debug_name);
  /// Map a segment received from a peer (takes ownership of `fd`).
  static Result<std::shared_ptr<SharedSegment>> map(int fd, size_t size, uint64_t segment_id);
  ~SharedSegment();
  uint64_t id() const noexcept { return id_; }
  int fd() const noexcept { return fd_; }
  void *base() const noexcept { return base_; }
  size_t size() const noexcept { return size_; }
  /// True when the segment was received from a peer (map) rather than created here.
  bool imported() const noexcept { return imported_; }
  /// Describe [offset, offset + length) of this segment; no system call.
  SharedRef ref(size_t offset, size_t length) const noexcept { return SharedRef{id_, fd_, size_, offset, length}; }
  /// Transport registrations of the whole segment, shared by every block
  /// carved from it; dropped before the segment is unmapped.
  Registrations &registrations() const noexcept { return registrations_; }

 private:
  SharedSegment() = default;
  bool imported_ = false;
  uint64_t id_ = 0;
  int fd_ = -1;
  void *base_ = nullptr;
  size_t size_ = 0;
  mutable Registrations registrations_;
};

}  // namespace lf
