// Every memory kind: allocate, write, read back, free; and the buffer's
// description (kind, node, alignment, pages, locking) checked against what the
// kernel or driver says.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "core/location.hpp"
#include "lavaflow_features.h"
#include "mem_test_util.hpp"
#include "memory/allocator.hpp"
#include "memory/cuda_rt.hpp"
#include "memory/vulkan_device.hpp"

#if LAVAFLOW_HAVE_NUMA
#include <numaif.h>
#endif

namespace lf {
namespace {

using test::check;
using test::fill;

constexpr size_t KiB = 1024, MiB = 1024 * KiB;

bool aligned(const void *p, size_t a) { return a && reinterpret_cast<uintptr_t>(p) % a == 0; }

BufferPtr must(Result<BufferPtr> r) {
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return r ? std::move(*r) : nullptr;
}

// ---- host -------------------------------------------------------------------------

TEST(HostKind, WriteReadAndAlignment) {
  for (size_t size : {size_t{1}, size_t{100}, 4 * KiB, 64 * KiB, 3 * MiB + 5}) {
    BufferPtr b = must(allocate(size, MemoryKind::host));
    ASSERT_TRUE(b);
    EXPECT_EQ(b->kind(), MemoryKind::host);
    EXPECT_EQ(b->requested_kind(), MemoryKind::host);
    EXPECT_EQ(b->fallback_reason(), "");
    EXPECT_EQ(b->size(), size);
    ASSERT_NE(b->data(), nullptr);
    EXPECT_TRUE(aligned(b->data(), b->alignment())) << size;
    EXPECT_GE(b->alignment(), 64u);
    EXPECT_EQ(b->page_size(), 4096u);
    // Page alignment from the threshold (16 KiB by default) up.
    if (size >= 16 * KiB) {
      EXPECT_GE(b->alignment(), 4096u) << size;
    }
    fill(b->data(), size, 3);
    EXPECT_TRUE(check(b->data(), size, 3));
  }
}

TEST(HostKind, ExplicitAlignment) {
  BufferPtr b = must(allocate(1000, AllocOptions{.kind = MemoryKind::host, .alignment = 1 * MiB}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->alignment(), 1 * MiB);
  EXPECT_TRUE(aligned(b->data(), 1 * MiB));
}

TEST(Allocate, RejectsBadArguments) {
  auto zero = allocate(0, MemoryKind::host);
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, LF_ERR_INVALID_ARG);
  auto huge = allocate(SIZE_MAX, MemoryKind::host);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, LF_ERR_INVALID_ARG);
  auto kind = allocate(64, static_cast<MemoryKind>(42));
  ASSERT_FALSE(kind);
  EXPECT_EQ(kind.error().code, LF_ERR_INVALID_ARG);
  auto align = allocate(64, AllocOptions{.alignment = 48});
  ASSERT_FALSE(align);
  EXPECT_EQ(align.error().code, LF_ERR_INVALID_ARG);
}

TEST(Allocate, LargeButPlausibleSizeIsNoMemoryNotACrash) {
  if (test::read_long("/proc/sys/vm/overcommit_memory") == 1)
    GTEST_SKIP() << "vm.overcommit_memory=1: the kernel grants any mapping";
  // 32 TiB passes the plausibility check and must fail cleanly.
  auto r = allocate(size_t{1} << 45, MemoryKind::host);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, LF_ERR_NO_MEMORY) << r.error().message;
}

// ---- NUMA -----------------------------------------------------------------------------

#if LAVAFLOW_HAVE_NUMA
TEST(NumaKind, LandsOnTheReportedNodeEveryPage) {
  if (auto why = kind_unavailable_reason(MemoryKind::host_numa)) GTEST_SKIP() << *why;
  const size_t size = 2 * MiB;
  BufferPtr b = must(allocate(size, MemoryKind::host_numa));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind(), MemoryKind::host_numa);
  ASSERT_GE(b->numa_node(), 0);
  EXPECT_TRUE(aligned(b->data(), b->alignment()));
  fill(b->data(), size, 9);
  EXPECT_TRUE(check(b->data(), size, 9));
  // The kernel's word for every page: move_pages with nodes == NULL queries.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<void *> pages;
  for (size_t off = 0; off < size; off += page) pages.push_back(static_cast<char *>(b->data()) + off);
  std::vector<int> status(pages.size(), -100);
  ASSERT_EQ(move_pages(0, pages.size(), pages.data(), nullptr, status.data(), 0), 0) << std::strerror(errno);
  for (size_t i = 0; i < status.size(); ++i) ASSERT_EQ(status[i], b->numa_node()) << "page " << i;
  int node = -1;
  ASSERT_EQ(get_mempolicy(&node, nullptr, 0, b->data(), MPOL_F_NODE | MPOL_F_ADDR), 0);
  EXPECT_EQ(node, b->numa_node());
}

TEST(NumaKind, ExplicitNodeZero) {
  if (auto why = kind_unavailable_reason(MemoryKind::host_numa)) GTEST_SKIP() << *why;
  BufferPtr b = must(allocate(64 * KiB, AllocOptions{.kind = MemoryKind::host_numa, .numa_node = 0, .strict = true}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->numa_node(), 0);
}
#endif

TEST(NumaKind, InvalidNodeFallsBackOrFailsStrict) {
  BufferPtr b = must(allocate(4096, AllocOptions{.kind = MemoryKind::host_numa, .numa_node = 999}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind(), MemoryKind::host);
  EXPECT_EQ(b->requested_kind(), MemoryKind::host_numa);
  EXPECT_NE(b->fallback_reason().find("host-numa unavailable"), std::string::npos) << b->fallback_reason();
  auto strict = allocate(4096, AllocOptions{.kind = MemoryKind::host_numa, .numa_node = 999, .strict = true});
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error().code, LF_ERR_UNAVAILABLE);
#if LAVAFLOW_HAVE_NUMA
  EXPECT_NE(strict.error().message.find("999"), std::string::npos) << strict.error().message;
#else
  EXPECT_NE(strict.error().message.find("without libnuma"), std::string::npos) << strict.error().message;
#endif
}

// ---- hugepages -------------------------------------------------------------------------

TEST(HugepageKind, HugetlbfsPagesForReal) {
  const long free = test::free_hugepages_2m();
  if (free < 2)
    GTEST_SKIP() << "no 2 MiB hugetlbfs pages reserved (nr_hugepages=" << test::nr_hugepages() << ", free=" << free
                 << "); echo 16 > /proc/sys/vm/nr_hugepages to run this";
  const size_t size = 3 * MiB;  // two pages
  BufferPtr b = must(allocate(size, AllocOptions{.kind = MemoryKind::host_hugepage, .strict = true}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind(), MemoryKind::host_hugepage);
  EXPECT_EQ(b->fallback_reason(), "");
  EXPECT_EQ(b->page_size(), 2 * MiB);
  EXPECT_TRUE(b->flags() & buffer_flags::hugetlb);
  EXPECT_EQ(b->alignment(), 2 * MiB);
  EXPECT_TRUE(aligned(b->data(), 2 * MiB));
  const char *resv = "/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages";
  const long resv_before = test::read_long(resv);
  EXPECT_GE(resv_before, 2) << "hugetlb reserves its pages at mmap: a shortage fails there, not at first touch";
  fill(b->data(), size, 5);
  EXPECT_TRUE(check(b->data(), size, 5));
  EXPECT_EQ(test::free_hugepages_2m(), free - 2) << "touched: two huge pages left the free pool";
  EXPECT_EQ(test::read_long(resv), resv_before - 2);
  const std::string smaps = test::smaps_of(b->data());
  ASSERT_FALSE(smaps.empty());
  EXPECT_EQ(test::field_kb(smaps, "KernelPageSize"), 2048) << smaps;
  EXPECT_GE(test::field_kb(smaps, "Private_Hugetlb"), 4096) << smaps;
  b.reset();
  EXPECT_EQ(test::free_hugepages_2m(), free);
}

TEST(HugepageKind, TransparentHugePagesWhenHugetlbfsCannotServe) {
  // More than every reserved page (total, not free: other tests running in
  // parallel change the free count): hugetlbfs must fail, THP takes over.
  const long reserved = std::max(0L, std::atol(test::read_file("/proc/sys/vm/nr_hugepages").c_str()));
  const size_t size = static_cast<size_t>(reserved + 2) * 2 * MiB;
  const bool thp_never =
      test::read_file("/sys/kernel/mm/transparent_hugepage/enabled").find("[never]") != std::string::npos;
  BufferPtr b = must(allocate(size, MemoryKind::host_hugepage));
  ASSERT_TRUE(b);
  if (thp_never) {
    EXPECT_EQ(b->kind(), MemoryKind::host);
    EXPECT_NE(b->fallback_reason().find("disabled"), std::string::npos) << b->fallback_reason();
    return;
  }
  EXPECT_EQ(b->kind(), MemoryKind::host_hugepage);
  EXPECT_TRUE(b->flags() & buffer_flags::transparent_huge);
  EXPECT_FALSE(b->flags() & buffer_flags::hugetlb);
  EXPECT_NE(b->fallback_reason().find("transparent huge pages"), std::string::npos) << b->fallback_reason();
  EXPECT_TRUE(aligned(b->data(), 2 * MiB));
  fill(b->data(), size, 1);
  EXPECT_TRUE(check(b->data(), size, 1));
  const std::string smaps = test::smaps_of(b->data());
  EXPECT_NE(smaps.find(" hg"), std::string::npos) << "VmFlags should carry hg (MADV_HUGEPAGE):\n" << smaps;
  EXPECT_GT(test::field_kb(smaps, "AnonHugePages"), 0) << smaps;

  auto strict = allocate(size, AllocOptions{.kind = MemoryKind::host_hugepage, .strict = true});
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error().code, LF_ERR_UNAVAILABLE);
  EXPECT_NE(strict.error().message.find("hugetlbfs"), std::string::npos) << strict.error().message;
}

// ---- pinned -------------------------------------------------------------------------------

TEST(PinnedKind, LockedAndResident) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer intercepts mlock and makes it a no-op";
#endif
  const size_t size = 1 * MiB;
  const long before = test::vm_locked_kb();
  BufferPtr b = must(allocate(size, MemoryKind::host_pinned));
  ASSERT_TRUE(b);
  ASSERT_EQ(b->kind(), MemoryKind::host_pinned) << b->fallback_reason();
  EXPECT_TRUE(b->flags() & buffer_flags::locked);
  EXPECT_TRUE(aligned(b->data(), 4096));
  EXPECT_EQ(test::resident_pages(b->data(), size), size / 4096);
  if (b->flags() & buffer_flags::cuda_registered) {
    EXPECT_EQ(b->fallback_reason(), "");
  } else {
    // Truthful: mlock, and why not CUDA.
    EXPECT_NE(b->fallback_reason().find("mlock"), std::string::npos) << b->fallback_reason();
    EXPECT_GE(test::vm_locked_kb() - before, static_cast<long>(size / 1024));
  }
  fill(b->data(), size, 2);
  EXPECT_TRUE(check(b->data(), size, 2));
  b.reset();
  EXPECT_EQ(test::vm_locked_kb(), before);
}

// ---- shared ---------------------------------------------------------------------------------

size_t dev_shm_entries() {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/dev/shm", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

TEST(SharedKind, MemfdWithReference) {
  const size_t shm_before = dev_shm_entries();
  const size_t size = 100 * KiB + 3;
  BufferPtr b = must(allocate(size, MemoryKind::host_shared));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind(), MemoryKind::host_shared);
  const SharedRef *ref = b->shared_ref();
  ASSERT_NE(ref, nullptr);
  EXPECT_GE(ref->fd, 0);
  EXPECT_EQ(ref->offset, 0u);
  EXPECT_EQ(ref->length, size);
  EXPECT_GE(ref->segment_size, size);
  EXPECT_NE(ref->segment_id, 0u);
  EXPECT_EQ(b->alignment(), 4096u);
  EXPECT_EQ(b->page_size(), 4096u);
  EXPECT_TRUE(aligned(b->data(), b->alignment()));
  // A memfd, close-on-exec, sealed against shrinking; nothing in /dev/shm.
  char link[256] = {};
  ASSERT_GT(readlink(("/proc/self/fd/" + std::to_string(ref->fd)).c_str(), link, sizeof link - 1), 0);
  EXPECT_EQ(std::string(link).rfind("/memfd:", 0), 0u) << link;
  EXPECT_TRUE(fcntl(ref->fd, F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(fcntl(ref->fd, F_GET_SEALS) & F_SEAL_SHRINK);
  EXPECT_EQ(dev_shm_entries(), shm_before);
  // The fd really is the memory: a second mapping sees the writes.
  fill(b->data(), size, 4);
  void *again = mmap(nullptr, ref->segment_size, PROT_READ, MAP_SHARED, ref->fd, 0);
  ASSERT_NE(again, MAP_FAILED);
  EXPECT_TRUE(check(static_cast<char *>(again) + ref->offset, size, 4));
  munmap(again, ref->segment_size);
  const ExportHandle *h = b->export_handle();
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->kind, MemoryKind::host_shared);
  EXPECT_EQ(h->fd, ref->fd);
  EXPECT_EQ(h->segment_id, ref->segment_id);
}

TEST(SharedKind, ImportInSameProcessSeesWrites) {
  BufferPtr b = must(allocate(8192, MemoryKind::host_shared));
  ASSERT_TRUE(b);
  BufferPtr view = must(import_buffer(*b->export_handle()));
  ASSERT_TRUE(view);
  EXPECT_TRUE(view->flags() & buffer_flags::imported);
  EXPECT_NE(view->data(), b->data());  // a second mapping
  fill(b->data(), 8192, 8);
  EXPECT_TRUE(check(view->data(), 8192, 8));
}

// ---- CUDA -----------------------------------------------------------------------------------

TEST(CudaKind, DeviceMemoryOrTheCudaReason) {
  const cuda::Runtime &rt = cuda::Runtime::get();
  if (rt.available()) {
    // No driver here: the reason is CUDA's own text.
    auto why = kind_unavailable_reason(MemoryKind::cuda_device);
    ASSERT_TRUE(why);
    if (!rt.library().empty()) {
      EXPECT_NE(why->find("cudaGetDeviceCount"), std::string::npos) << *why;
    }
    GTEST_SKIP() << "CUDA unavailable: " << *why;
  }
  BufferPtr b = must(allocate(1 * MiB, MemoryKind::cuda_device));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind(), MemoryKind::cuda_device);
  EXPECT_EQ(b->data(), nullptr);
  EXPECT_NE(b->device_handle(), 0u);
  ASSERT_NE(b->export_handle(), nullptr);
  EXPECT_EQ(b->export_handle()->cuda_ipc_handle.size(), 64u);
}

TEST(CudaKind, FallsBackToPinnedWithTheReasonAndStrictFails) {
  if (!cuda::Runtime::get().available()) GTEST_SKIP() << "CUDA is available: no fallback to observe";
  const std::string why = *cuda::Runtime::get().available();
  BufferPtr b = must(allocate(64 * KiB, MemoryKind::cuda_device));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->requested_kind(), MemoryKind::cuda_device);
  EXPECT_EQ(b->kind(), MemoryKind::host_pinned);
  EXPECT_NE(b->fallback_reason().find(why), std::string::npos) << b->fallback_reason();
  auto strict = allocate(64 * KiB, AllocOptions{.kind = MemoryKind::cuda_device, .strict = true});
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error().code, LF_ERR_UNAVAILABLE);
  EXPECT_NE(strict.error().message.find(why), std::string::npos) << strict.error().message;
}

// ---- Vulkan ----------------------------------------------------------------------------------

#if LAVAFLOW_HAVE_VULKAN
class VulkanKind : public ::testing::TestWithParam<MemoryKind> {};

TEST_P(VulkanKind, AllocateWriteReadExport) {
  const MemoryKind kind = GetParam();
  if (auto why = kind_unavailable_reason(kind)) GTEST_SKIP() << *why;
  auto dev = vk::Device::shared(0);
  ASSERT_TRUE(dev);
  const size_t size = 1 * MiB + 100;
  BufferPtr b = must(allocate(size, AllocOptions{.kind = kind, .strict = true}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind(), kind);
  EXPECT_EQ(b->size(), size);
  EXPECT_NE(b->device_handle(), 0u);
  const ExportHandle *h = b->export_handle();
  ASSERT_NE(h, nullptr);
  EXPECT_GE(h->fd, 0);
  EXPECT_GE(h->allocation_size, size);
  EXPECT_EQ(std::memcmp(h->device_uuid, (*dev)->device_uuid(), 16), 0);
  EXPECT_EQ(std::memcmp(h->driver_uuid, (*dev)->driver_uuid(), 16), 0);
  // The memory type used is the truth about host visibility.
  const VkMemoryPropertyFlags f = (*dev)->memory_properties().memoryTypes[h->memory_type_index].propertyFlags;
  if (kind == MemoryKind::vulkan_device) {
    EXPECT_TRUE(f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  }
  const bool visible = f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
  EXPECT_EQ(visible, (b->flags() & buffer_flags::host_visible) != 0);
  EXPECT_EQ(visible, b->data() != nullptr);
  if (visible) {
    EXPECT_TRUE(aligned(b->data(), b->alignment()));
    fill(b->data(), size, 6);
    EXPECT_TRUE(check(b->data(), size, 6));
    // Import of our own export: a distinct VkDeviceMemory on the same payload.
    BufferPtr view = must(import_buffer(*h));
    ASSERT_TRUE(view);
    EXPECT_NE(view->device_handle(), b->device_handle());
    EXPECT_TRUE(check(view->data(), size, 6));
    fill(view->data(), size, 7);
    EXPECT_TRUE(check(b->data(), size, 7));
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, VulkanKind,
                         ::testing::Values(MemoryKind::vulkan_device, MemoryKind::vulkan_host_visible),
                         [](const ::testing::TestParamInfo<MemoryKind> &p) {
                           return std::string(p.param == MemoryKind::vulkan_device ? "device" : "host_visible");
                         });
#endif

TEST(VulkanFallback, MissingDeviceFallsDownTheChain) {
  BufferPtr b = must(allocate(4096, AllocOptions{.kind = MemoryKind::vulkan_device, .device = 77}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->requested_kind(), MemoryKind::vulkan_device);
  EXPECT_EQ(b->kind(), MemoryKind::host);
  EXPECT_NE(b->fallback_reason().find("vulkan-device unavailable"), std::string::npos) << b->fallback_reason();
  EXPECT_NE(b->fallback_reason().find("vulkan-host-visible unavailable"), std::string::npos) << b->fallback_reason();
  auto strict = allocate(4096, AllocOptions{.kind = MemoryKind::vulkan_device, .device = 77, .strict = true});
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error().code, LF_ERR_UNAVAILABLE);
}

// ---- allocate_auto ---------------------------------------------------------------------------

TEST(AllocateAuto, PicksByScope) {
  auto me = ProcessLocation::detect();
  ASSERT_TRUE(me) << me.error().message;
  BufferPtr self = must(allocate_auto(4096, *me, *me));
  ASSERT_TRUE(self);
  EXPECT_EQ(self->requested_kind(), MemoryKind::host);

  ProcessLocation local = *me;
  local.pid = me->pid + 1;
  EXPECT_EQ(choose_kind(*me, local).kind, MemoryKind::host_shared) << choose_kind(*me, local).reason;
  BufferPtr shared = must(allocate_auto(4096, *me, local));
  ASSERT_TRUE(shared);
  EXPECT_EQ(shared->kind(), MemoryKind::host_shared);
  EXPECT_NE(shared->shared_ref(), nullptr);

  ProcessLocation remote = *me;
  remote.boot_id = "another-kernel";
  remote.hostname = "elsewhere";
  const KindChoice c = choose_kind(*me, remote);
  EXPECT_EQ(c.kind, test::free_hugepages_2m() > 0 ? MemoryKind::host_hugepage : MemoryKind::host_pinned) << c.reason;
  BufferPtr r = must(allocate_auto(64 * KiB, *me, remote));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->requested_kind(), c.kind);
}

TEST(KindNames, MatchTheCApi) {
  EXPECT_STREQ(memory_kind_name(MemoryKind::host_shared), "host-shared");
  EXPECT_STREQ(memory_kind_name(MemoryKind::vulkan_host_visible), "vulkan-host-visible");
  EXPECT_STREQ(memory_kind_name(static_cast<MemoryKind>(99)), "invalid");
  EXPECT_TRUE(is_host_kind(MemoryKind::host_pinned));
  EXPECT_FALSE(is_host_kind(MemoryKind::cuda_device));
}

}  // namespace
}  // namespace lf
