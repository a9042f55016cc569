// lf-bench-gpu: GPU memory figures for docs/performance.md ("GPU").
//
//   lf-bench-gpu [--quick] [--only cuda,vulkan,ipc]
//
// cuda     host <-> device bandwidth on the same buffers: raw cudaMemcpy vs
//          the transfer manager, from pinned memory (direct DMA) and from
//          pageable memory (double-buffered pinned staging).
// vulkan   Vulkan OPAQUE_FD export (vkGetMemoryFdKHR) and import
//          (vkAllocateMemory with VkImportMemoryFdInfoKHR) latency per size.
// ipc      two processes over a lavaflow channel: per-message latency of
//          Vulkan / CUDA buffers sent by descriptor (vulkan-ipc / cuda-ipc),
//          the cost of the first message of an allocation (fd passing and
//          import), and the same buffers forced through shm (staged copy).
//
// Where CUDA cannot run, its sections print CUDA's reason and go on.
// Processes for "ipc" are forked before this process touches Vulkan or CUDA
// (neither survives a fork once initialised).
#include <lavaflow/lavaflow.h>
#include <lavaflow/lavaflow_gpu.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench_common.h"
#include "lavaflow_features.h"
#include "memory/cuda_rt.hpp"
#include "memory/transfer.hpp"
#include "memory/vulkan_device.hpp"

namespace {

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Median over `samples` runs of `fn` (which returns microseconds or a rate).
[[maybe_unused]] double sample(int samples, const std::function<double()> &fn) {
  std::vector<double> v;
  for (int s = 0; s < samples; ++s) v.push_back(fn());
  return median(v);
}

[[maybe_unused]] std::string human(size_t n) {
  char b[32];
  if (n >= (size_t{1} << 20))
    std::snprintf(b, sizeof b, "%zuM", n >> 20);
  else if (n >= 1024)
    std::snprintf(b, sizeof b, "%zuK", n >> 10);
  else
    std::snprintf(b, sizeof b, "%zu", n);
  return b;
}

struct Options {
  bool quick = false;
  bool cuda = true, vulkan = true, ipc = true;
};

// ---- cuda --------------------------------------------------------------------------

void bench_cuda(const Options &o) {
  std::printf("\n== CUDA host <-> device (GB/s, median) ==\n");
  const lf::cuda::Runtime &rt = lf::cuda::Runtime::get();
  if (auto why = rt.available()) {
    std::printf("cannot run: %s\n", why->c_str());
    return;
  }
#if LAVAFLOW_HAVE_CUDA
  const lf::cuda::Api &a = rt.api();
  auto tm = lf::cuda::TransferManager::create({.device = 0});
  if (!tm) {
    std::printf("cannot run: %s\n", tm.error().message.c_str());
    return;
  }
  const std::vector<size_t> sizes = o.quick ? std::vector<size_t>{1 << 20, 16 << 20}
                                            : std::vector<size_t>{1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20};
  const size_t max = sizes.back();
  void *dev = nullptr, *pinned = nullptr;
  if (a.Malloc(&dev, max) != cudaSuccess || a.HostAlloc(&pinned, max, cudaHostAllocDefault) != cudaSuccess) {
    std::printf("cannot allocate %zu bytes on device and pinned host\n", max);
    return;
  }
  std::vector<char> pageable(max, 1);
  std::memset(pinned, 1, max);
  const int samples = o.quick ? 5 : 15;
  auto gbps = [](size_t n, double us) { return n / us / 1e3; };
  std::printf("%-6s %12s %12s %6s %12s %12s %6s %14s %14s %6s\n", "size", "memcpy H2D", "manager H2D", "ratio",
              "memcpy D2H", "manager D2H", "ratio", "pageable H2D", "pageable D2H", "vs pin");
  for (size_t n : sizes) {
    auto timed = [&](const std::function<void()> &fn) {
      return sample(samples, [&] {
        double t0 = now_us();
        fn();
        return gbps(n, now_us() - t0);
      });
    };
    double raw_h2d = timed([&] { a.Memcpy(dev, pinned, n, cudaMemcpyHostToDevice); });
    double tm_h2d = timed([&] { (void)(*tm)->h2d(dev, pinned, n); });
    double raw_d2h = timed([&] { a.Memcpy(pinned, dev, n, cudaMemcpyDeviceToHost); });
    double tm_d2h = timed([&] { (void)(*tm)->d2h(pinned, dev, n); });
    double pg_h2d = timed([&] { (void)(*tm)->h2d(dev, pageable.data(), n); });
    double pg_d2h = timed([&] { (void)(*tm)->d2h(pageable.data(), dev, n); });
    std::printf("%-6s %12.2f %12.2f %5.0f%% %12.2f %12.2f %5.0f%% %14.2f %14.2f %5.0f%%\n", human(n).c_str(), raw_h2d,
                tm_h2d, 100 * tm_h2d / raw_h2d, raw_d2h, tm_d2h, 100 * tm_d2h / raw_d2h, pg_h2d, pg_d2h,
                100 * std::min(pg_h2d / tm_h2d, pg_d2h / tm_d2h));
  }
  a.FreeHost(pinned);
  a.Free(dev);
#else
  (void)o;
#endif
}

// ---- vulkan ------------------------------------------------------------------------

void bench_vulkan(const Options &o) {
  std::printf("\n== Vulkan OPAQUE_FD export / import (microseconds, median) ==\n");
#if LAVAFLOW_HAVE_VULKAN
  auto dev = lf::vk::Device::shared(0);
  if (!dev) {
    std::printf("cannot run: %s\n", dev.error().message.c_str());
    return;
  }
  const lf::vk::Device &d = **dev;
  std::printf("device: %s\n", d.name().c_str());
  std::printf("%-6s %12s %12s %14s\n", "size", "allocate", "export fd", "import fd");
  const int samples = o.quick ? 11 : 51;
  for (size_t n : {size_t{4096}, size_t{1} << 20, size_t{64} << 20}) {
    double alloc_us = 0, export_us = 0, import_us = 0;
    std::vector<double> va, ve, vi;
    for (int s = 0; s < samples; ++s) {
      auto buf = d.create_external_buffer(n);
      if (!buf) {
        std::printf("cannot run: %s\n", buf.error().message.c_str());
        return;
      }
      VkMemoryRequirements req{};
      vkGetBufferMemoryRequirements(d.device(), *buf, &req);
      int type = d.find_memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
      VkExportMemoryAllocateInfo exp{VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO};
      exp.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
      VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
      mai.pNext = &exp;
      mai.allocationSize = req.size;
      mai.memoryTypeIndex = static_cast<uint32_t>(type);
      VkDeviceMemory mem = VK_NULL_HANDLE, imported = VK_NULL_HANDLE;
      double t0 = now_us();
      if (vkAllocateMemory(d.device(), &mai, nullptr, &mem) != VK_SUCCESS) {
        std::printf("cannot allocate %zu bytes\n", n);
        return;
      }
      double t1 = now_us();
      auto fd = d.export_fd(mem);
      double t2 = now_us();
      if (fd) {
        auto im = d.import_fd(*fd, req.size, static_cast<uint32_t>(type), VK_NULL_HANDLE);
        double t3 = now_us();
        if (im) imported = *im;
        vi.push_back(t3 - t2);
      }
      va.push_back(t1 - t0);
      ve.push_back(t2 - t1);
      if (imported) vkFreeMemory(d.device(), imported, nullptr);
      vkFreeMemory(d.device(), mem, nullptr);
      vkDestroyBuffer(d.device(), *buf, nullptr);
    }
    alloc_us = median(va);
    export_us = median(ve);
    import_us = median(vi);
    std::printf("%-6s %12.1f %12.1f %14.1f\n", human(n).c_str(), alloc_us, export_us, import_us);
  }
#else
  (void)o;
  std::printf("cannot run: lavaflow was built without Vulkan\n");
#endif
}

// ---- ipc ---------------------------------------------------------------------------

#define BCHECK(call)                                                                                             \
  do {                                                                                                           \
    lf_status_t st_ = (call);                                                                                    \
    if (st_ < 0) {                                                                                               \
      std::fprintf(stderr, "lf-bench-gpu: %s failed: %s (%s)\n", #call, lf_status_string(st_), lf_last_error()); \
      _exit(1);                                                                                                  \
    }                                                                                                            \
  } while (0)

constexpr uint64_t kMsg = 1, kAck = 2;

/// One round trip: rank 0 sends a buffer (pooled or fresh), rank 1 receives
/// it as a buffer, frees it and answers 1 byte. Returns microseconds per
/// round trip on rank 0 (median of samples of `iters`).
double buffer_round_trips(lf_context_t ctx, lf_channel_t ch, int rank, lf_memory_kind_t kind, size_t bytes, bool pooled,
                          int samples, int iters) {
  lf_pool_t pool = nullptr;
  if (rank == 0 && pooled) {
    lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
    pp.kind = kind;
    pp.strict = 1;
    if (kind == LF_MEM_HOST_SHARED)
      BCHECK(lf_shared_pool(ctx, &pool));
    else
      BCHECK(lf_pool_create(ctx, &pp, &pool));
  }
  std::vector<double> v;
  for (int s = -1; s < samples; ++s) {  // one warm-up sample
    const double t0 = now_us();
    for (int i = 0; i < iters; ++i) {
      char ack = 0;
      if (rank == 0) {
        lf_buffer_t b;
        if (pooled) {
          BCHECK(lf_pool_acquire(pool, bytes, &b));
        } else {
          lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
          ap.strict = 1;
          BCHECK(lf_alloc_ex(ctx, bytes, kind, &ap, &b));
        }
        lf_request_t req;
        BCHECK(lf_isend_buffer(ch, b, kMsg, &req));
        BCHECK(lf_wait(req, nullptr));
        BCHECK(lf_recv(ch, &ack, 1, kAck, nullptr));
      } else {
        lf_request_t req;
        lf_buffer_t view;
        BCHECK(lf_irecv_buffer(ch, kMsg, &req));
        BCHECK(lf_wait_buffer(req, &view, nullptr));
        BCHECK(lf_free(view));
        BCHECK(lf_send(ch, &ack, 1, kAck));
      }
    }
    if (s >= 0) v.push_back((now_us() - t0) / iters);
  }
  if (pool && kind != LF_MEM_HOST_SHARED) BCHECK(lf_pool_destroy(pool));
  return median(v);
}

/// 8-byte ping-pong round trip on `ch`, microseconds.
double small_round_trips(lf_channel_t ch, int rank, int samples, int iters) {
  std::vector<double> v;
  char buf[8] = {};
  for (int s = -1; s < samples; ++s) {
    const double t0 = now_us();
    for (int i = 0; i < iters; ++i) {
      if (rank == 0) {
        BCHECK(lf_send(ch, buf, 8, kMsg));
        BCHECK(lf_recv(ch, buf, 8, kAck, nullptr));
      } else {
        BCHECK(lf_recv(ch, buf, 8, kMsg, nullptr));
        BCHECK(lf_send(ch, buf, 8, kAck));
      }
    }
    if (s >= 0) v.push_back((now_us() - t0) / iters);
  }
  return median(v);
}

/// Body of each forked rank for one GPU API.
void ipc_rank(int rank, lf_memory_kind_t kind, const char *expect, const Options &o) {
  const char *api = kind == LF_MEM_CUDA_DEVICE ? "CUDA" : "Vulkan";
  lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
  ap.strict = 1;
  lf_buffer_t probe;
  if (lf_alloc_ex(nullptr, 4096, kind, &ap, &probe) != LF_OK) {
    if (rank == 0) std::printf("%s: cannot run: %s\n", api, lf_last_error());
    std::fflush(stdout);
    _exit(0);
  }
  lf_free(probe);
  lf_context_t ctx;
  BCHECK(lf_init(&ctx));
  lf_channel_params_t cp = LF_CHANNEL_PARAMS_INIT;
  cp.memory_kind = kind;
  lf_channel_t ch;
  BCHECK(lf_channel_open_ex(ctx, 1 - rank, &cp, &ch));
  lf_channel_params_t sp = LF_CHANNEL_PARAMS_INIT;
  sp.transports = "shm";
  lf_channel_t shm_ch;  // for comparison: host memory over shm
  BCHECK(lf_channel_open_ex(ctx, 1 - rank, &sp, &shm_ch));
  lf_channel_params_t xp = cp;
  xp.transports = kind == LF_MEM_CUDA_DEVICE ? "^cuda-ipc" : "^vulkan-ipc";
  lf_channel_t staged_ch;  // the same device buffers, staged through shm
  BCHECK(lf_channel_open_ex(ctx, 1 - rank, &xp, &staged_ch));

  const int samples = o.quick ? 5 : 11, iters = o.quick ? 200 : 1000;
  if (rank == 0) {
    std::printf("%s: channel transport %s (%s)\n", api, lf_channel_transport(ch), lf_channel_reason(ch));
    if (std::strcmp(lf_channel_transport(ch), expect) != 0)
      std::printf("%s: note: %s was not selected, figures below are for %s\n", api, expect, lf_channel_transport(ch));
    std::printf("round trip = rank 0 sends a buffer, rank 1 receives it, frees it, answers 1 byte (us, median)\n");
    std::printf("%-40s %10s %10s %10s\n", "", "4K", "1M", "64M");
  }
  auto row = [&](const char *name, const std::function<double(size_t)> &fn) {
    double v[3];
    const size_t sizes[3] = {4096, size_t{1} << 20, size_t{64} << 20};
    for (int i = 0; i < 3; ++i) v[i] = fn(sizes[i]);
    if (rank == 0) std::printf("%-40s %10.2f %10.2f %10.2f\n", name, v[0], v[1], v[2]);
  };
  const double small = small_round_trips(shm_ch, rank, samples, iters);
  if (rank == 0) std::printf("%-40s %10.2f %10s %10s\n", "shm, 8-byte message + 1-byte answer", small, "", "");
  row("shm, shared-pool buffer (descriptor)",
      [&](size_t n) { return buffer_round_trips(ctx, shm_ch, rank, LF_MEM_HOST_SHARED, n, true, samples, iters); });
  std::string name = std::string(lf_channel_transport(ch)) + ", pooled " + api + " buffer";
  row(name.c_str(), [&](size_t n) { return buffer_round_trips(ctx, ch, rank, kind, n, true, samples, iters); });
  name = std::string(lf_channel_transport(ch)) + ", fresh allocation each (import)";
  row(name.c_str(),
      [&](size_t n) { return buffer_round_trips(ctx, ch, rank, kind, n, false, samples, std::max(10, iters / 20)); });
  if (kind != LF_MEM_CUDA_DEVICE) {
    // Once the application holds lavaflow's queue (lf_buffer_vulkan_info) it
    // may have work in flight there: every send then drains the queue first.
    lf_buffer_t b;
    BCHECK(lf_alloc_ex(ctx, 4096, kind, &ap, &b));
    lf_vulkan_buffer_info_t vi = LF_VULKAN_BUFFER_INFO_INIT;
    BCHECK(lf_buffer_vulkan_info(b, &vi));
    BCHECK(lf_free(b));
    name = std::string(lf_channel_transport(ch)) + ", pooled, queue drained per send";
    row(name.c_str(), [&](size_t n) { return buffer_round_trips(ctx, ch, rank, kind, n, true, samples, iters); });
  }
  name = std::string(lf_channel_transport(staged_ch)) + ", pooled " + api + " buffer (staged copy)";
  row(name.c_str(), [&](size_t n) {
    return buffer_round_trips(ctx, staged_ch, rank, kind, n, true, samples,
                              std::max(5, n > (1 << 20) ? 5 : iters / 10));
  });
  BCHECK(lf_channel_close(staged_ch));
  BCHECK(lf_channel_close(shm_ch));
  BCHECK(lf_channel_close(ch));
  BCHECK(lf_finalize(ctx));
}

/// Fork two ranks (before this process touched Vulkan or CUDA) and wait.
void bench_ipc(const Options &o) {
  std::printf("\n== GPU IPC between two processes ==\n");
  std::fflush(stdout);
  const std::pair<lf_memory_kind_t, const char *> apis[] = {{LF_MEM_VULKAN_DEVICE, "vulkan-ipc"},
                                                            {LF_MEM_CUDA_DEVICE, "cuda-ipc"}};
  int n = 0;
  for (auto [kind, expect] : apis) {
    const std::string boot = "unix:/tmp/lf-bench-gpu-" + std::to_string(getpid()) + "-" + std::to_string(n++);
    pid_t pids[2];
    bench_job_key();
    for (int r = 0; r < 2; ++r) {
      pids[r] = fork();
      if (pids[r] == 0) {
        setenv("LF_RANK", std::to_string(r).c_str(), 1);
        setenv("LF_SIZE", "2", 1);
        setenv("LF_BOOTSTRAP", boot.c_str(), 1);
        setenv("LF_BOOTSTRAP_MODE", "env", 1);
        ipc_rank(r, kind, expect, o);
        std::fflush(stdout);
        _exit(0);
      }
    }
    for (pid_t p : pids) {
      int st = 0;
      waitpid(p, &st, 0);
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) std::printf("(a rank failed: status %d)\n", st);
    }
  }
}

}  // namespace

int main(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--only" && i + 1 < argc) {
      std::string s = argv[++i];
      o.cuda = s.find("cuda") != std::string::npos;
      o.vulkan = s.find("vulkan") != std::string::npos;
      o.ipc = s.find("ipc") != std::string::npos;
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--only cuda,vulkan,ipc]\n", argv[0]);
      return 2;
    }
  }
  std::printf("lf-bench-gpu (lavaflow %s)\n", lf_version());
  // First: the ranks must be forked while this process is free of Vulkan and CUDA.
  if (o.ipc) bench_ipc(o);
  if (o.cuda) bench_cuda(o);
  if (o.vulkan) bench_vulkan(o);
  return 0;
}
