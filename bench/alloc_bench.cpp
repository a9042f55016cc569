// Layer 1 allocation latency: each kind next to the plain call it wraps, the
// pool hit path, and first-touch cost measured on its own.
//
//   lf-bench-alloc --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Allocation benchmarks allocate and free without touching the memory (the
// kernel hands out pages on first touch); BM_FirstTouch_* time only the
// touching of a fresh buffer. Kinds this machine lacks report an error row
// with the reason instead of a time.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "lavaflow_features.h"
#include "memory/allocator.hpp"
#include "memory/pool.hpp"
#include "memory/vulkan_device.hpp"

#if LAVAFLOW_HAVE_NUMA
#include <numaif.h>
#endif

namespace {

using lf::AllocOptions;
using lf::MemoryKind;

constexpr size_t KiB = 1024, MiB = 1024 * KiB;

// lf::allocate + release, failing the benchmark (with the reason) when the kind
// would fall back: a fallback's time is not the kind's time.
void lf_alloc_loop(benchmark::State &state, MemoryKind kind) {
  const size_t n = static_cast<size_t>(state.range(0));
  if (auto why = lf::kind_unavailable_reason(kind)) {
    state.SkipWithError(why->c_str());
    return;
  }
  for (auto _ : state) {
    auto b = lf::allocate(n, AllocOptions{.kind = kind, .strict = true});
    if (!b) {
      state.SkipWithError(b.error().message.c_str());
      break;
    }
    benchmark::DoNotOptimize((*b)->data());
  }
}

// ---- host -------------------------------------------------------------------------------

void BM_Plain_malloc(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = std::malloc(n);
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
}
BENCHMARK(BM_Plain_malloc)->Arg(64 * KiB)->Arg(1 * MiB);

void BM_Plain_posix_memalign(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = nullptr;
    if (posix_memalign(&p, 4096, n)) state.SkipWithError("posix_memalign");
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
}
BENCHMARK(BM_Plain_posix_memalign)->Arg(64 * KiB)->Arg(1 * MiB);

void BM_Lf_host(benchmark::State &state) { lf_alloc_loop(state, MemoryKind::host); }
BENCHMARK(BM_Lf_host)->Arg(64 * KiB)->Arg(1 * MiB);

// ---- hugepage -----------------------------------------------------------------------------

void BM_Plain_mmap_hugetlb(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
    if (p == MAP_FAILED) {
      state.SkipWithError("mmap(MAP_HUGETLB) failed: no 2 MiB pages reserved (/proc/sys/vm/nr_hugepages)");
      break;
    }
    munmap(p, n);
  }
}
BENCHMARK(BM_Plain_mmap_hugetlb)->Arg(2 * MiB);

void BM_Lf_hugepage(benchmark::State &state) { lf_alloc_loop(state, MemoryKind::host_hugepage); }
BENCHMARK(BM_Lf_hugepage)->Arg(2 * MiB);

void BM_Plain_mmap_thp(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(p, n, MADV_HUGEPAGE);
    munmap(p, n);
  }
}
BENCHMARK(BM_Plain_mmap_thp)->Arg(2 * MiB);

// ---- NUMA: binding includes populating (the node is only known once pages exist) -------------

#if LAVAFLOW_HAVE_NUMA
void BM_Plain_mmap_mbind_populate(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  unsigned long mask = 1;
  for (auto _ : state) {
    void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    mbind(p, n, MPOL_PREFERRED, &mask, 2, 0);
    madvise(p, n, MADV_POPULATE_WRITE);
    munmap(p, n);
  }
}
BENCHMARK(BM_Plain_mmap_mbind_populate)->Arg(64 * KiB);
#endif

void BM_Lf_numa(benchmark::State &state) { lf_alloc_loop(state, MemoryKind::host_numa); }
BENCHMARK(BM_Lf_numa)->Arg(64 * KiB);

// ---- pinned -----------------------------------------------------------------------------------

void BM_Plain_mmap_mlock(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mlock(p, n)) state.SkipWithError("mlock");
    munmap(p, n);
  }
}
BENCHMARK(BM_Plain_mmap_mlock)->Arg(64 * KiB);

void BM_Lf_pinned(benchmark::State &state) { lf_alloc_loop(state, MemoryKind::host_pinned); }
BENCHMARK(BM_Lf_pinned)->Arg(64 * KiB);

// ---- shared -------------------------------------------------------------------------------------

void BM_Plain_memfd_mmap(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    int fd = memfd_create("bench", MFD_CLOEXEC);
    if (ftruncate(fd, static_cast<off_t>(n))) state.SkipWithError("ftruncate");
    void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    munmap(p, n);
    close(fd);
  }
}
BENCHMARK(BM_Plain_memfd_mmap)->Arg(64 * KiB);

void BM_Lf_shared(benchmark::State &state) { lf_alloc_loop(state, MemoryKind::host_shared); }
BENCHMARK(BM_Lf_shared)->Arg(64 * KiB);

// ---- Vulkan ---------------------------------------------------------------------------------------

#if LAVAFLOW_HAVE_VULKAN
void BM_Plain_vkAllocateMemory(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  auto dev = lf::vk::Device::shared(0);
  if (!dev) {
    state.SkipWithError(dev.error().message.c_str());
    return;
  }
  const VkDevice d = (*dev)->device();
  const int type = (*dev)->find_memory_type(~0u, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  for (auto _ : state) {
    VkExportMemoryAllocateInfo exp{VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO};
    exp.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
    VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    mai.pNext = &exp;
    mai.allocationSize = n;
    mai.memoryTypeIndex = static_cast<uint32_t>(type);
    VkDeviceMemory mem = VK_NULL_HANDLE;
    if (vkAllocateMemory(d, &mai, nullptr, &mem) != VK_SUCCESS) {
      state.SkipWithError("vkAllocateMemory");
      break;
    }
    vkFreeMemory(d, mem, nullptr);
  }
}
BENCHMARK(BM_Plain_vkAllocateMemory)->Arg(64 * KiB)->Arg(1 * MiB);
#endif

void BM_Lf_vulkan_device(benchmark::State &state) { lf_alloc_loop(state, MemoryKind::vulkan_device); }
BENCHMARK(BM_Lf_vulkan_device)->Arg(64 * KiB)->Arg(1 * MiB);

// ---- CUDA: reported as unavailable without a driver ----------------------------------------------------

void BM_Lf_cuda_device(benchmark::State &state) { lf_alloc_loop(state, MemoryKind::cuda_device); }
BENCHMARK(BM_Lf_cuda_device)->Arg(64 * KiB);

// ---- pools ----------------------------------------------------------------------------------------------

void pool_hit(benchmark::State &state, MemoryKind kind) {
  static std::shared_ptr<lf::Pool> pools[LF_MEM_KIND_COUNT_];
  const size_t n = static_cast<size_t>(state.range(0));
  if (state.thread_index() == 0) {
    auto p = lf::Pool::create({.kind = kind});
    if (!p) {
      state.SkipWithError(p.error().message.c_str());
      return;
    }
    pools[static_cast<int>(kind)] = *p;
    // Warm the class: one block per thread is cached before timing.
    std::vector<lf::BufferPtr> warm;
    for (int i = 0; i < state.threads(); ++i) warm.push_back(std::move(*(*p)->acquire(n)));
  }
  // Google Benchmark starts the timed loop of every thread together, after setup.
  for (auto _ : state) {
    auto b = pools[static_cast<int>(kind)]->acquire(n);
    benchmark::DoNotOptimize(b->get()->data());
  }
  if (state.thread_index() == 0) {
    const lf::PoolStats s = pools[static_cast<int>(kind)]->stats();
    state.counters["hit_rate"] = s.hit_rate;
    pools[static_cast<int>(kind)].reset();
  }
}

void BM_PoolHit_host(benchmark::State &state) { pool_hit(state, MemoryKind::host); }
BENCHMARK(BM_PoolHit_host)->Arg(4 * KiB)->Arg(1 * MiB);
BENCHMARK(BM_PoolHit_host)->Arg(4 * KiB)->Threads(2);

void BM_PoolHit_shared(benchmark::State &state) { pool_hit(state, MemoryKind::host_shared); }
BENCHMARK(BM_PoolHit_shared)->Arg(4 * KiB)->Arg(1 * MiB);

// ---- first touch: only the page faults, allocation and free untimed ------------------------------------------

void first_touch(benchmark::State &state, MemoryKind kind) {
  const size_t n = static_cast<size_t>(state.range(0));
  if (auto why = lf::kind_unavailable_reason(kind)) {
    state.SkipWithError(why->c_str());
    return;
  }
  for (auto _ : state) {
    state.PauseTiming();
    auto b = lf::allocate(n, AllocOptions{.kind = kind, .strict = true});
    if (!b) {
      state.SkipWithError(b.error().message.c_str());
      break;
    }
    char *p = static_cast<char *>((*b)->data());
    state.ResumeTiming();
    for (size_t off = 0; off < n; off += 4096) p[off] = 1;
    benchmark::ClobberMemory();
    state.PauseTiming();
    b->reset();
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n));
}

void BM_FirstTouch_host(benchmark::State &state) { first_touch(state, MemoryKind::host); }
BENCHMARK(BM_FirstTouch_host)->Arg(2 * MiB);
void BM_FirstTouch_hugepage(benchmark::State &state) { first_touch(state, MemoryKind::host_hugepage); }
BENCHMARK(BM_FirstTouch_hugepage)->Arg(2 * MiB);
void BM_FirstTouch_shared(benchmark::State &state) { first_touch(state, MemoryKind::host_shared); }
BENCHMARK(BM_FirstTouch_shared)->Arg(2 * MiB);

}  // namespace

BENCHMARK_MAIN();
