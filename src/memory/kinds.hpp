// Internal to the memory layer: one allocation function per kind and the
// Buffer subclasses they return. allocator.cpp strings them into fallback
// chains; pool.cpp wraps their buffers.
//
// Each alloc_* returns LF_ERR_UNAVAILABLE when the kind cannot be had here
// (the chain may then fall back) and other codes for real failures.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "memory/allocator.hpp"
#include "memory/buffer.hpp"

namespace lf::detail {

struct KindRequest {
  size_t size = 0;
  size_t alignment = 0;  // 0 = default
  int numa_node = -1;
  int device = 0;
  bool strict = false;
};

/// Base of every buffer the allocator makes: lets the allocator finish the
/// description (requested kind, reasons) after the kind function returns.
class OwnedBuffer : public Buffer {
 public:
  void set_requested(MemoryKind k) noexcept { requested_ = k; }
  /// Prefix `why` (a step of the fallback chain) to the reason.
  void prepend_reason(const std::string &why) { reason_ = reason_.empty() ? why : why + "; " + reason_; }
};

/// Host memory from malloc, mmap or cudaHostAlloc.
class HostBuffer final : public OwnedBuffer {
 public:
  enum class Release { free, munmap, cuda_free_host };
  HostBuffer(MemoryKind kind, void *base, size_t mapped, Release release) noexcept;
  ~HostBuffer() override;

  void set_alignment(size_t a) noexcept { alignment_ = a; }
  void set_page_size(size_t p) noexcept { page_size_ = p; }
  void add_flags(uint32_t f) noexcept { flags_ |= f; }
  void set_numa_node(int n) noexcept { numa_node_ = n; }
  void set_reason(std::string r) { reason_ = std::move(r); }
  RegisteredRange registered_range() const noexcept override { return {base_, mapped_, &registrations_}; }

 private:
  void *base_;
  size_t mapped_;
  Release release_;
};

class ShmArena;

/// A range of a memfd segment: a whole segment of its own (allocate), a block
/// carved from a pool's segment (ShmArena), or an imported peer's range.
class ShmBuffer final : public OwnedBuffer {
 public:
  ShmBuffer(std::shared_ptr<SharedSegment> segment, size_t offset, size_t length,
            std::shared_ptr<ShmArena> arena = nullptr);
  ~ShmBuffer() override;
  const SharedRef *shared_ref() const noexcept override { return &ref_; }
  const ExportHandle *export_handle() const noexcept override { return &export_; }
  const std::shared_ptr<SharedSegment> &segment() const noexcept { return segment_; }
  RegisteredRange registered_range() const noexcept override {
    return {segment_->base(), segment_->size(), &segment_->registrations()};
  }
  void set_reason(std::string r) { reason_ = std::move(r); }
  void add_flags(uint32_t f) noexcept { flags_ |= f; }

 private:
  std::shared_ptr<SharedSegment> segment_;
  std::shared_ptr<ShmArena> arena_;
  SharedRef ref_;
  ExportHandle export_;
};

/// Carves blocks for a shared pool out of a few large memfd segments, so that
/// a peer maps each segment once. Requests larger than the segment size get a
/// segment of their own. Thread-safe.
class ShmArena : public std::enable_shared_from_this<ShmArena> {
 public:
  explicit ShmArena(size_t segment_size) noexcept;
  ~ShmArena();
  /// A block of `size` bytes aligned to `align` (power of two <= page size).
  Result<BufferPtr> carve(size_t size, size_t align) noexcept;
  /// Give a block back (called by ~ShmBuffer). Its pages are released to the
  /// kernel (FALLOC_FL_PUNCH_HOLE) so that a dropped block stops costing memory.
  void release(const SharedSegment *segment, size_t offset, size_t length) noexcept;
  /// Segments currently mapped, and their total size.
  size_t segment_count() const;
  size_t segment_bytes() const;

 private:
  struct Segment;
  size_t segment_size_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Segment>> segments_;
};

Result<BufferPtr> alloc_host(const KindRequest &r) noexcept;
Result<BufferPtr> alloc_numa(const KindRequest &r) noexcept;
Result<BufferPtr> alloc_hugepage(const KindRequest &r) noexcept;
Result<BufferPtr> alloc_pinned(const KindRequest &r) noexcept;
Result<BufferPtr> alloc_shared(const KindRequest &r) noexcept;
Result<BufferPtr> alloc_cuda(const KindRequest &r) noexcept;
Result<BufferPtr> alloc_vulkan(const KindRequest &r, bool device_local) noexcept;

Result<BufferPtr> import_shared(const ExportHandle &h) noexcept;
Result<BufferPtr> import_cuda(const ExportHandle &h) noexcept;
Result<BufferPtr> import_vulkan(const ExportHandle &h) noexcept;

/// Per-kind availability probes (nullopt = available as asked).
std::optional<std::string> numa_unavailable(int node);
std::optional<std::string> hugetlb_unavailable(size_t size);
std::optional<std::string> cuda_unavailable(int device);
std::optional<std::string> vulkan_unavailable(int device, bool device_local);

/// Free 2 MiB hugetlbfs pages right now (from sysfs), -1 if unknown.
long free_hugepages_2m() noexcept;
/// Host page size.
size_t host_page_size() noexcept;
/// The NUMA node the page at `addr` lives on (touched memory only), -1 if unknown.
int node_of_address(const void *addr) noexcept;

/// Wrap a bad_alloc or any other exception escaping an allocation as an Error.
Error exception_error(const char *where) noexcept;

}  // namespace lf::detail
