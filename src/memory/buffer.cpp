#include "memory/buffer.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

namespace lf {

const char *memory_kind_name(MemoryKind k) noexcept {
  switch (k) {
    case MemoryKind::host: return "host";
    case MemoryKind::host_numa: return "host-numa";
    case MemoryKind::host_hugepage: return "host-hugepage";
    case MemoryKind::host_pinned: return "host-pinned";
    case MemoryKind::host_shared: return "host-shared";
    case MemoryKind::cuda_device: return "cuda-device";
    case MemoryKind::vulkan_device: return "vulkan-device";
    case MemoryKind::vulkan_host_visible: return "vulkan-host-visible";
  }
  return "invalid";
}

bool is_host_kind(MemoryKind k) noexcept {
  switch (k) {
    case MemoryKind::host:
    case MemoryKind::host_numa:
    case MemoryKind::host_hugepage:
    case MemoryKind::host_pinned:
    case MemoryKind::host_shared: return true;
    default: return false;
  }
}

bool is_valid_kind(MemoryKind k) noexcept {
  int v = static_cast<int>(k);
  return v >= 0 && v < LF_MEM_KIND_COUNT_;
}

Buffer::~Buffer() = default;

RegisteredRange Buffer::registered_range() const noexcept {
  void *base = data_;
  if (!base && kind_ == MemoryKind::cuda_device) base = reinterpret_cast<void *>(device_handle_);
  if (!base) return {};  // device memory with no address a transport could register
  return RegisteredRange{base, size_, &registrations_};
}

void Buffer::describe_as(const Buffer &o) {
  kind_ = o.kind_;
  requested_ = o.requested_;
  reason_ = o.reason_;
  data_ = o.data_;
  size_ = o.size_;
  alignment_ = o.alignment_;
  numa_node_ = o.numa_node_;
  device_ = o.device_;
  device_handle_ = o.device_handle_;
  page_size_ = o.page_size_;
  flags_ = o.flags_;
}

namespace {
// High half: pid, so ids of different processes on one host never collide in a
// peer's segment cache; low half: a per-process counter.
uint64_t next_segment_id() noexcept {
  static std::atomic<uint32_t> counter{0};
  return (static_cast<uint64_t>(static_cast<uint32_t>(getpid())) << 32) |
         (counter.fetch_add(1, std::memory_order_relaxed) + 1);
}
}  // namespace

Result<std::shared_ptr<SharedSegment>> SharedSegment::create(size_t size, const char *debug_name) {
  if (size == 0) return LF_FAIL(LF_ERR_INVALID_ARG, "shared segment of 0 bytes");
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (size > (size_t{1} << 52)) return LF_FAIL(LF_ERR_INVALID_ARG, "shared segment of %zu bytes", size);
  size = (size + page - 1) / page * page;
  // The object exists before any resource does, so that every failure path
  // below releases what was acquired through the destructor.
  std::shared_ptr<SharedSegment> s(new SharedSegment);
  // MFD_ALLOW_SEALING lets us forbid shrinking: a peer that truncated the file
  // would otherwise make our own accesses SIGBUS.
  s->fd_ = memfd_create(debug_name ? debug_name : "lavaflow", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (s->fd_ < 0) return std::unexpected(sys_error(errno, "memfd_create(%s)", debug_name ? debug_name : ""));
  if (ftruncate(s->fd_, static_cast<off_t>(size)) != 0)
    return std::unexpected(sys_error(errno, "ftruncate(memfd, %zu)", size));
  if (fcntl(s->fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    return std::unexpected(sys_error(errno, "fcntl(memfd, F_ADD_SEALS)"));
  void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd_, 0);
  if (p == MAP_FAILED) return std::unexpected(sys_error(errno, "mmap(memfd, %zu)", size));
  s->base_ = p;
  s->size_ = size;
  s->id_ = next_segment_id();
  return s;
}

Result<std::shared_ptr<SharedSegment>> SharedSegment::map(int fd, size_t size, uint64_t segment_id) {
  if (fd < 0) return LF_FAIL(LF_ERR_INVALID_ARG, "SharedSegment::map: bad fd %d", fd);
  std::shared_ptr<SharedSegment> s;
  try {
    s.reset(new SharedSegment);
  } catch (...) {
    ::close(fd);
    throw;
  }
  s->fd_ = fd;  // owned from here on, also on failure
  s->id_ = segment_id;
  s->imported_ = true;
  if (size == 0) return LF_FAIL(LF_ERR_INVALID_ARG, "SharedSegment::map: size 0");
  // A peer's claimed size must not exceed the file: touching past its end
  // would SIGBUS this process.
  struct stat st {};
  if (fstat(fd, &st) != 0) return std::unexpected(sys_error(errno, "fstat(shared segment fd)"));
  if (static_cast<uint64_t>(st.st_size) < size)
    return LF_FAIL(LF_ERR_PROTOCOL, "shared segment %llx: the file has %lld bytes, the peer claims %zu",
                   static_cast<unsigned long long>(segment_id), static_cast<long long>(st.st_size), size);
  void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return std::unexpected(sys_error(errno, "mmap(shared segment, %zu)", size));
  s->base_ = p;
  s->size_ = size;
  return s;
}

SharedSegment::~SharedSegment() {
  registrations_.clear();
  if (base_) munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace lf
