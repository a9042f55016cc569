// Host kinds: standard, NUMA-bound, hugepage, pinned, shared.
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>

#include "core/config.hpp"
#include "lavaflow_features.h"
#include "memory/cuda_rt.hpp"
#include "memory/kinds.hpp"

#if LAVAFLOW_HAVE_NUMA
#include <numa.h>
#include <numaif.h>
#endif

namespace lf::detail {

namespace {
constexpr size_t k2M = size_t{2} << 20;
constexpr size_t k1G = size_t{1} << 30;

size_t round_up(size_t v, size_t to) noexcept { return (v + to - 1) / to * to; }

std::string human(size_t bytes) {
  char buf[32];
  if (bytes >= k1G && bytes % k1G == 0)
    std::snprintf(buf, sizeof buf, "%zu GiB", bytes >> 30);
  else if (bytes >= (1u << 20) && bytes % (1u << 20) == 0)
    std::snprintf(buf, sizeof buf, "%zu MiB", bytes >> 20);
  else if (bytes >= 1024 && bytes % 1024 == 0)
    std::snprintf(buf, sizeof buf, "%zu KiB", bytes >> 10);
  else
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  return buf;
}

long read_long(const char *path) noexcept {
  FILE *f = std::fopen(path, "re");
  if (!f) return -1;
  long v = -1;
  if (std::fscanf(f, "%ld", &v) != 1) v = -1;
  std::fclose(f);
  return v;
}

// Anonymous private mapping; nullptr + errno on failure.
void *map_anon(size_t len, int extra_flags) noexcept {
  void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

// Fault every page in now. MADV_POPULATE_WRITE (Linux 5.14) reports a failure
// as an error instead of a SIGBUS/OOM kill later; older kernels get a loop.
[[maybe_unused]] Status populate(void *p, size_t len) noexcept {
  if (madvise(p, len, MADV_POPULATE_WRITE) == 0) return {};
  if (errno != EINVAL) return std::unexpected(sys_error(errno, "madvise(MADV_POPULATE_WRITE, %zu)", len));
  const size_t page = host_page_size();
  volatile char *c = static_cast<char *>(p);
  for (size_t off = 0; off < len; off += page) c[off] = 0;
  return {};
}
}  // namespace

size_t host_page_size() noexcept {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

long free_hugepages_2m() noexcept { return read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"); }

int node_of_address(const void *addr) noexcept {
#if LAVAFLOW_HAVE_NUMA
  int node = -1;
  if (get_mempolicy(&node, nullptr, 0, const_cast<void *>(addr), MPOL_F_NODE | MPOL_F_ADDR) != 0) return -1;
  return node;
#else
  (void)addr;
  return -1;
#endif
}

Error exception_error(const char *where) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc &) {
    return Error{LF_ERR_NO_MEMORY, std::string(where) + ": out of host memory (std::bad_alloc)"};
  } catch (const std::exception &e) {
    return Error{LF_ERR_INTERNAL, std::string(where) + ": " + e.what()};
  } catch (...) {
    return Error{LF_ERR_INTERNAL, std::string(where) + ": unknown exception"};
  }
}

// ---- HostBuffer ---------------------------------------------------------------

HostBuffer::HostBuffer(MemoryKind kind, void *base, size_t mapped, Release release) noexcept
    : base_(base), mapped_(mapped), release_(release) {
  kind_ = kind;
  requested_ = kind;
  data_ = base;
  size_ = mapped;
  page_size_ = host_page_size();
}

HostBuffer::~HostBuffer() {
  registrations_.clear();
  switch (release_) {
    case Release::free: std::free(base_); break;
    // munmap also drops mlock and hugetlb reservations.
    case Release::munmap: munmap(base_, mapped_); break;
    case Release::cuda_free_host:
#if LAVAFLOW_HAVE_CUDA
      cuda::Runtime::get().api().FreeHost(base_);
#endif
      break;
  }
}

// ---- host ---------------------------------------------------------------------

namespace {
size_t page_align_threshold() {
  static const size_t t = [] {
    int64_t v = config::get_int("LF_HOST_PAGE_ALIGN_THRESHOLD");
    return v > 0 ? static_cast<size_t>(v) : size_t{16384};
  }();
  return t;
}
}  // namespace

Result<BufferPtr> alloc_host(const KindRequest &r) noexcept {
  try {
    size_t align = r.size >= page_align_threshold() ? host_page_size() : 64;
    if (r.alignment > align) align = r.alignment;
    void *p = nullptr;
    int rc = posix_memalign(&p, align, r.size);
    if (rc != 0) return std::unexpected(sys_error(rc, "posix_memalign(%zu, %zu)", align, r.size));
    auto b = std::make_unique<HostBuffer>(MemoryKind::host, p, r.size, HostBuffer::Release::free);
    b->set_alignment(align);
    b->set_size(r.size);
    return b;
  } catch (...) {
    return std::unexpected(exception_error("host allocation"));
  }
}

// ---- host_numa ------------------------------------------------------------------

std::optional<std::string> numa_unavailable(int node) {
#if LAVAFLOW_HAVE_NUMA
  if (numa_available() < 0) return "libnuma: NUMA is not available on this system (numa_available() < 0)";
  if (node < 0) return std::nullopt;
  int max = numa_max_node();
  if (node > max || !numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(node)))
    return "NUMA node " + std::to_string(node) + " does not exist (nodes 0-" + std::to_string(max) + ")";
  return std::nullopt;
#else
  (void)node;
  return "lavaflow was built without libnuma (LAVAFLOW_WITH_NUMA)";
#endif
}

Result<BufferPtr> alloc_numa(const KindRequest &r) noexcept {
#if LAVAFLOW_HAVE_NUMA
  try {
    if (auto why = numa_unavailable(r.numa_node)) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
    int node = r.numa_node;
    if (node < 0) {
      int cpu = sched_getcpu();
      node = cpu >= 0 ? numa_node_of_cpu(cpu) : -1;
      if (node < 0) node = 0;
    }
    const size_t page = host_page_size();
    const size_t align = std::max(page, r.alignment);
    const size_t len = round_up(r.size, page);
    // Over-map for alignments above a page, then trim.
    const size_t map_len = align > page ? len + align : len;
    char *raw = static_cast<char *>(map_anon(map_len, MAP_NORESERVE));
    if (!raw) return std::unexpected(sys_error(errno, "mmap(%zu) for NUMA node %d", map_len, node));
    char *p = reinterpret_cast<char *>(round_up(reinterpret_cast<uintptr_t>(raw), align));
    if (p > raw) munmap(raw, static_cast<size_t>(p - raw));
    if (size_t tail = map_len - static_cast<size_t>(p - raw) - len) munmap(p + len, tail);
    auto b = std::make_unique<HostBuffer>(MemoryKind::host_numa, p, len, HostBuffer::Release::munmap);
    b->set_alignment(align);
    b->set_size(r.size);

    // Strict binds (a full node fails the populate below with ENOMEM);
    // otherwise the node is preferred and the kernel may place pages
    // elsewhere, which the check afterwards reports.
    unsigned long mask[16] = {};
    const unsigned long bits = sizeof(unsigned long) * 8;
    if (static_cast<unsigned long>(node) >= bits * 16)
      return LF_FAIL(LF_ERR_UNAVAILABLE, "NUMA node %d beyond the supported %lu", node, bits * 16);
    mask[node / bits] |= 1ul << (node % bits);
    const int mode = r.strict ? MPOL_BIND : MPOL_PREFERRED;
    // No MPOL_MF_MOVE/STRICT: nothing is populated yet, and either flag makes
    // the kernel drain the LRU lists of every CPU and wait for them.
    if (mbind(p, len, mode, mask, bits * 16 + 1, 0) != 0)
      return std::unexpected(sys_error(errno, "mbind(node %d)", node));
    if (auto st = populate(p, len); !st) return std::unexpected(st.error());

    // The truth: where did first, middle and last page land?
    const size_t last = (len - 1) / page * page;
    int n0 = node_of_address(p), n1 = node_of_address(p + (len / 2) / page * page), n2 = node_of_address(p + last);
    b->set_numa_node(n0);
    if (n0 != node || n1 != n0 || n2 != n0) {
      char why[160];
      std::snprintf(why, sizeof why, "asked for NUMA node %d; pages landed on nodes %d/%d/%d (first/middle/last)", node,
                    n0, n1, n2);
      if (r.strict) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why);
      b->set_reason(why);
      if (n1 != n0 || n2 != n0) b->set_numa_node(-1);
    }
    return b;
  } catch (...) {
    return std::unexpected(exception_error("NUMA allocation"));
  }
#else
  (void)r;
  return LF_FAIL(LF_ERR_UNAVAILABLE, "lavaflow was built without libnuma (LAVAFLOW_WITH_NUMA)");
#endif
}

// ---- host_hugepage ----------------------------------------------------------------

namespace {
// LF_HUGEPAGE_SIZE: "auto" (1 GiB pages for requests of at least 1 GiB when
// reserved, else 2 MiB), "2M" or "1G".
std::vector<size_t> hugepage_sizes(size_t size) {
  std::string v = config::get_string("LF_HUGEPAGE_SIZE");
  if (v == "2M" || v == "2m" || v == "2MiB" || v == "2097152") return {k2M};
  if (v == "1G" || v == "1g" || v == "1GiB" || v == "1073741824") return {k1G};
  if (size >= k1G) return {k1G, k2M};
  return {k2M};
}

std::string hugetlb_state(size_t ps) {
  const char *dir =
      ps == k1G ? "/sys/kernel/mm/hugepages/hugepages-1048576kB" : "/sys/kernel/mm/hugepages/hugepages-2048kB";
  long total = read_long((std::string(dir) + "/nr_hugepages").c_str());
  long free = read_long((std::string(dir) + "/free_hugepages").c_str());
  return "nr_hugepages=" + std::to_string(total) + " free=" + std::to_string(free);
}

bool thp_disabled() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  std::getline(f, line);
  return line.find("[never]") != std::string::npos;
}
}  // namespace

std::optional<std::string> hugetlb_unavailable(size_t size) {
  std::string why;
  for (size_t ps : hugepage_sizes(size)) {
    long free = read_long(ps == k1G ? "/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages"
                                    : "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    if (free > 0 && static_cast<size_t>(free) * ps >= round_up(size, ps)) return std::nullopt;
    if (!why.empty()) why += "; ";
    why += human(ps) + " hugetlbfs pages: " + hugetlb_state(ps);
  }
  return "not enough hugetlbfs pages reserved (" + why + ")";
}

Result<BufferPtr> alloc_hugepage(const KindRequest &r) noexcept {
  try {
    const std::vector<size_t> sizes = hugepage_sizes(r.size);
    if (r.alignment > sizes.front())
      return LF_FAIL(LF_ERR_INVALID_ARG, "hugepage memory is aligned to its page size (%s); %zu is not possible",
                     human(sizes.front()).c_str(), r.alignment);
    std::string why;
    for (size_t ps : sizes) {
      const size_t len = round_up(r.size, ps);
      const int log2 = ps == k1G ? 30 : 21;
      // hugetlb mappings reserve their pages at mmap time, so a shortage is an
      // error here rather than a SIGBUS on first touch.
      void *p = map_anon(len, MAP_HUGETLB | (log2 << MAP_HUGE_SHIFT));
      if (p) {
        auto b = std::make_unique<HostBuffer>(MemoryKind::host_hugepage, p, len, HostBuffer::Release::munmap);
        b->set_alignment(ps);
        b->set_page_size(ps);
        b->add_flags(buffer_flags::hugetlb);
        b->set_size(r.size);
        return b;
      }
      if (!why.empty()) why += "; ";
      why += human(ps) + " pages: mmap(MAP_HUGETLB): " + std::strerror(errno) + " (" + hugetlb_state(ps) + ")";
    }
    if (r.strict) return LF_FAIL(LF_ERR_UNAVAILABLE, "no hugetlbfs pages: %s", why.c_str());
    if (thp_disabled())
      return LF_FAIL(LF_ERR_UNAVAILABLE, "no hugetlbfs pages (%s) and transparent huge pages are disabled",
                     why.c_str());
    // THP: a 2 MiB-aligned anonymous range advised MADV_HUGEPAGE; the kernel
    // backs it with huge pages on fault where it can assemble them.
    const size_t len = round_up(r.size, k2M);
    char *raw = static_cast<char *>(map_anon(len + k2M, MAP_NORESERVE));
    if (!raw) return std::unexpected(sys_error(errno, "mmap(%zu) for THP", len + k2M));
    char *p = reinterpret_cast<char *>(round_up(reinterpret_cast<uintptr_t>(raw), k2M));
    if (p > raw) munmap(raw, static_cast<size_t>(p - raw));
    if (size_t tail = k2M - static_cast<size_t>(p - raw)) munmap(p + len, tail);
    auto b = std::make_unique<HostBuffer>(MemoryKind::host_hugepage, p, len, HostBuffer::Release::munmap);
    b->set_size(r.size);
    b->set_alignment(k2M);
    if (madvise(p, len, MADV_HUGEPAGE) != 0) return std::unexpected(sys_error(errno, "madvise(MADV_HUGEPAGE)"));
    b->add_flags(buffer_flags::transparent_huge);
    b->set_reason("no hugetlbfs pages (" + why +
                  "): transparent huge pages via madvise(MADV_HUGEPAGE), huge where the kernel can assemble them");
    return b;
  } catch (...) {
    return std::unexpected(exception_error("hugepage allocation"));
  }
}

// ---- host_pinned -------------------------------------------------------------------

Result<BufferPtr> alloc_pinned(const KindRequest &r) noexcept {
  try {
    const size_t page = host_page_size();
    const size_t align = std::max(page, r.alignment);
    const size_t len = round_up(r.size, page);
    const cuda::Runtime &rt = cuda::Runtime::get();
#if LAVAFLOW_HAVE_CUDA
    if (!rt.available().has_value() && align <= page) {
      void *p = nullptr;
      cudaError_t rc = rt.api().HostAlloc(&p, len, cudaHostAllocPortable);
      if (rc != cudaSuccess) return std::unexpected(rt.error(rc, "cudaHostAlloc", __FILE__, __LINE__));
      auto b = std::make_unique<HostBuffer>(MemoryKind::host_pinned, p, len, HostBuffer::Release::cuda_free_host);
      b->set_alignment(page);
      b->add_flags(buffer_flags::locked | buffer_flags::cuda_registered);
      b->set_size(r.size);
      return b;
    }
#endif
    const size_t map_len = align > page ? len + align : len;
    char *raw = static_cast<char *>(map_anon(map_len, 0));
    if (!raw) return std::unexpected(sys_error(errno, "mmap(%zu) for pinned memory", map_len));
    char *p = reinterpret_cast<char *>(round_up(reinterpret_cast<uintptr_t>(raw), align));
    if (p > raw) munmap(raw, static_cast<size_t>(p - raw));
    if (size_t tail = map_len - static_cast<size_t>(p - raw) - len) munmap(p + len, tail);
    auto b = std::make_unique<HostBuffer>(MemoryKind::host_pinned, p, len, HostBuffer::Release::munmap);
    b->set_alignment(align);
    b->set_size(r.size);
    if (mlock(p, len) != 0) {
      int err = errno;
      struct rlimit rl {};
      getrlimit(RLIMIT_MEMLOCK, &rl);
      std::string limit = rl.rlim_cur == RLIM_INFINITY ? "unlimited" : human(rl.rlim_cur);
      return LF_FAIL(LF_ERR_UNAVAILABLE, "mlock(%zu bytes): %s (RLIMIT_MEMLOCK %s)", len, std::strerror(err),
                     limit.c_str());
    }
    b->add_flags(buffer_flags::locked);
    b->set_numa_node(node_of_address(p));
    b->set_reason("page-locked with mlock, not registered with CUDA (" +
                  rt.available().value_or(std::string("alignment above a page")) + ")");
    return b;
  } catch (...) {
    return std::unexpected(exception_error("pinned allocation"));
  }
}

// ---- host_shared ----------------------------------------------------------------

ShmBuffer::ShmBuffer(std::shared_ptr<SharedSegment> segment, size_t offset, size_t length,
                     std::shared_ptr<ShmArena> arena)
    : segment_(std::move(segment)), arena_(std::move(arena)) {
  kind_ = MemoryKind::host_shared;
  requested_ = MemoryKind::host_shared;
  data_ = static_cast<char *>(segment_->base()) + offset;
  size_ = length;
  // The largest power of two (up to a page) that divides the offset: the
  // segment base is page aligned.
  size_t a = offset ? (offset & (~offset + 1)) : host_page_size();
  alignment_ = std::min(a, host_page_size());
  page_size_ = host_page_size();
  ref_ = segment_->ref(offset, length);
  export_.kind = MemoryKind::host_shared;
  export_.fd = segment_->fd();
  export_.allocation_size = segment_->size();
  export_.offset = offset;
  export_.length = length;
  export_.segment_id = segment_->id();
  if (segment_->imported()) flags_ |= buffer_flags::imported;
}

ShmBuffer::~ShmBuffer() {
  if (arena_) arena_->release(segment_.get(), ref_.offset, ref_.length);
}

Result<BufferPtr> alloc_shared(const KindRequest &r) noexcept {
  try {
    if (r.alignment > host_page_size())
      return LF_FAIL(LF_ERR_INVALID_ARG, "host-shared memory is page aligned; %zu is not possible", r.alignment);
    auto seg = SharedSegment::create(r.size, "lavaflow-buffer");
    if (!seg) return std::unexpected(seg.error());
    return std::make_unique<ShmBuffer>(std::move(*seg), 0, r.size);
  } catch (...) {
    return std::unexpected(exception_error("shared allocation"));
  }
}

Result<BufferPtr> import_shared(const ExportHandle &h) noexcept {
  try {
    if (h.length == 0 || h.offset > h.allocation_size || h.length > h.allocation_size - h.offset)
      return LF_FAIL(LF_ERR_INVALID_ARG, "shared import: range [%zu, +%zu) outside a segment of %zu bytes", h.offset,
                     h.length, h.allocation_size);
    int fd = fcntl(h.fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return std::unexpected(sys_error(errno, "dup(shared fd %d)", h.fd));
    auto seg = SharedSegment::map(fd, h.allocation_size, h.segment_id);
    if (!seg) return std::unexpected(seg.error());
    return std::make_unique<ShmBuffer>(std::move(*seg), h.offset, h.length);
  } catch (...) {
    return std::unexpected(exception_error("shared import"));
  }
}

}  // namespace lf::detail
