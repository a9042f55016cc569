// The Vulkan implementation: each call leases a Slot (host-visible buffers,
// a command buffer, a fence), and per chunk copies the operands in, runs the
// op's compute shader, and copies the result out. Chunks bound both the
// staging memory and the time until a cancel is seen.
#include "lavaflow_features.h"

#include "exec/kernels/kernels.hpp"
#include "exec/kernels/kernels_common.hpp"

#if LAVAFLOW_HAVE_VULKAN

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "exec/kernels/vulkan_pipelines.hpp"

namespace lf::exec {

namespace {

using detail::poll;
using vkk::Op;

constexpr const char *kBackend = "vulkan";
/// Elements per dispatch of the elementwise ops and sum.
constexpr size_t kChunk = size_t{256} << 10;
/// Multiply-adds per matmul dispatch.
constexpr uint64_t kMatmulChunkMacs = uint64_t{1} << 23;
/// Work groups per dispatch. On a GPU, enough to fill it; on a CPU device
/// (lavapipe) a few per thread, since each group costs a fixed setup and the
/// sum's barriers. The sum's groups are the partials the host adds.
constexpr uint32_t kGpuSumGroups = 256;
constexpr uint32_t kCpuSumGroups = 16;
constexpr uint32_t kCpuElementwiseGroups = 64;
/// A slot returned with more staging than this frees it, so that one large
/// matmul does not pin its buffers for the life of the service.
constexpr uint64_t kKeepBytes = uint64_t{48} << 20;

uint32_t div_up(uint64_t x, uint64_t y) { return static_cast<uint32_t>((x + y - 1) / y); }
uint64_t round4(uint64_t x) { return (x + 3) & ~uint64_t{3}; }

class VulkanKernels final : public Kernels {
 public:
  VulkanKernels(std::shared_ptr<vk::Device> dev, std::unique_ptr<vkk::Pipelines> p)
      : dev_(std::move(dev)), pipelines_(std::move(p)), device_("vulkan:" + dev_->name()) {}

  const std::string &device() const noexcept override { return device_; }

  Status add(const float *a, const float *b, float *out, size_t n, const CancelCheck &cancelled) noexcept override {
    return elementwise(Op::add, "add", a, b, 0.0f, out, n, cancelled);
  }
  Status mul(const float *a, const float *b, float *out, size_t n, const CancelCheck &cancelled) noexcept override {
    return elementwise(Op::mul, "mul", a, b, 0.0f, out, n, cancelled);
  }
  Status scale(const float *a, float factor, float *out, size_t n, const CancelCheck &cancelled) noexcept override {
    return elementwise(Op::scale, "scale", a, nullptr, factor, out, n, cancelled);
  }
  Status sum(const float *a, size_t n, float *out, const CancelCheck &cancelled) noexcept override;
  Status matmul(const float *a, const float *b, float *out, size_t m, size_t k, size_t n,
                const CancelCheck &cancelled) noexcept override;

 private:
  /// A slot for the duration of one call, returned to the free list after.
  class Lease {
   public:
    Lease(VulkanKernels &k, std::unique_ptr<vkk::Slot> s) : k_(k), s_(std::move(s)) {}
    ~Lease() { k_.give_back(std::move(s_)); }
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;
    vkk::Slot *operator->() const noexcept { return s_.get(); }

   private:
    VulkanKernels &k_;
    std::unique_ptr<vkk::Slot> s_;
  };

  Result<std::unique_ptr<vkk::Slot>> take() noexcept {
    {
      std::lock_guard g(mu_);
      if (!free_.empty()) {
        auto s = std::move(free_.back());
        free_.pop_back();
        return s;
      }
    }
    // One slot per concurrent caller: the free list never holds more than
    // the largest number of calls that were in flight at once.
    return vkk::Slot::create(*pipelines_);
  }

  void give_back(std::unique_ptr<vkk::Slot> s) noexcept {
    if (!s) return;
    if (s->held_bytes() > kKeepBytes) s->release_buffers();
    try {
      std::lock_guard g(mu_);
      free_.push_back(std::move(s));
    } catch (...) {
      // Out of memory growing the list: dropping the slot frees it.
    }
  }

  /// Elements per chunk that fit one staging buffer: a multiple of 4, since
  /// the shaders work on vec4s.
  size_t chunk_elements() const noexcept {
    return static_cast<size_t>(std::min<uint64_t>(kChunk, pipelines_->max_buffer_bytes() / sizeof(float)) & ~3u);
  }
  uint32_t sum_groups() const noexcept { return pipelines_->cpu_device() ? kCpuSumGroups : kGpuSumGroups; }
  uint32_t elementwise_groups(size_t vec4s) const noexcept {
    const uint32_t cap = pipelines_->cpu_device() ? kCpuElementwiseGroups : pipelines_->max_groups_x();
    return std::min(div_up(vec4s, vkk::kGroupSize), cap);
  }

  Status elementwise(Op op, const char *name, const float *a, const float *b, float factor, float *out, size_t n,
                     const CancelCheck &cancelled) noexcept;

  // Declared in this order so that slots go before the pipelines, and the
  // pipelines before the device.
  std::shared_ptr<vk::Device> dev_;
  std::unique_ptr<vkk::Pipelines> pipelines_;
  std::string device_;
  std::mutex mu_;
  std::vector<std::unique_ptr<vkk::Slot>> free_;
};

Status VulkanKernels::elementwise(Op op, const char *name, const float *a, const float *b, float factor, float *out,
                                  size_t n, const CancelCheck &cancelled) noexcept {
  try {
    const bool need_b = op != Op::scale;
    if (auto st = detail::check_elementwise(kBackend, name, a, b, need_b, out, n); !st) return st;
    if (poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, name));
    if (n == 0) return {};
    auto s = take();
    if (!s) return std::unexpected(s.error());
    Lease slot(*this, std::move(*s));
    const size_t chunk = std::min(n, chunk_elements());
    const uint64_t bytes = round4(chunk) * sizeof(float);  // whole vec4s
    if (auto st = slot->reserve(bytes, need_b ? bytes : 0, bytes); !st) return st;
    for (size_t off = 0; off < n; off += chunk) {
      if (off && poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, name));
      const size_t cnt = std::min(chunk, n - off);
      std::memcpy(slot->a(), a + off, cnt * sizeof(float));
      if (need_b) std::memcpy(slot->b(), b + off, cnt * sizeof(float));
      // The last vec4 of a chunk may run past the data: its extra lanes
      // compute on whatever the buffer holds, and are not copied out.
      const size_t vec4s = round4(cnt) / 4;
      vkk::Push push{static_cast<uint32_t>(vec4s), 0, 0, factor};
      if (auto st = slot->run(op, push, elementwise_groups(vec4s), 1); !st) return st;
      std::memcpy(out + off, slot->c(), cnt * sizeof(float));
    }
    return {};
  } catch (...) {
    return std::unexpected(detail::exception_error(kBackend, name));
  }
}

Status VulkanKernels::sum(const float *a, size_t n, float *out, const CancelCheck &cancelled) noexcept {
  try {
    if (!out) return LF_FAIL(LF_ERR_INVALID_ARG, "vulkan sum: NULL output");
    if (auto st = detail::check_elementwise(kBackend, "sum", a, nullptr, false, out, n); !st) return st;
    if (poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "sum"));
    if (n == 0) {
      *out = 0.0f;
      return {};
    }
    auto s = take();
    if (!s) return std::unexpected(s.error());
    Lease slot(*this, std::move(*s));
    const size_t chunk = std::min(n, chunk_elements());
    const uint32_t max_groups = std::min(sum_groups(), pipelines_->max_groups_x());
    if (auto st = slot->reserve(round4(chunk) * sizeof(float), 0, max_groups * sizeof(float)); !st) return st;
    // The shader reduces each chunk to per-group partials in float (a tree,
    // so the error grows with log n); partials and chunks add up in double.
    double total = 0;
    for (size_t off = 0; off < n; off += chunk) {
      if (off && poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "sum"));
      const size_t cnt = std::min(chunk, n - off);
      std::memcpy(slot->a(), a + off, cnt * sizeof(float));
      // Zeros complete the last vec4, so that it adds nothing.
      std::fill(slot->a() + cnt, slot->a() + round4(cnt), 0.0f);
      const size_t vec4s = round4(cnt) / 4;
      const uint32_t groups = std::min(div_up(vec4s, vkk::kGroupSize), max_groups);
      vkk::Push push{static_cast<uint32_t>(vec4s), 0, 0, 0.0f};
      if (auto st = slot->run(Op::sum, push, groups, 1); !st) return st;
      const float *partial = slot->c();
      for (uint32_t g = 0; g < groups; ++g) total += static_cast<double>(partial[g]);
    }
    *out = static_cast<float>(total);
    return {};
  } catch (...) {
    return std::unexpected(detail::exception_error(kBackend, "sum"));
  }
}

Status VulkanKernels::matmul(const float *a, const float *b, float *out, size_t m, size_t k, size_t n,
                             const CancelCheck &cancelled) noexcept {
  try {
    if (auto st = detail::check_matmul(kBackend, a, b, out, m, k, n); !st) return st;
    if (poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "matmul"));
    if (m == 0 || n == 0) return {};
    if (k == 0) {
      std::fill(out, out + m * n, 0.0f);
      return {};
    }
    const uint64_t limit = pipelines_->max_buffer_bytes() / sizeof(float);  // elements per buffer
    const uint64_t block = vkk::kMatmulBlock;
    // b is staged in column panels whose rows are padded to whole vec4s (out
    // likewise); a panel of 4 columns must fit one buffer.
    if (k > limit / 4)
      return LF_FAIL(LF_ERR_UNSUPPORTED,
                     "vulkan matmul: k = %zu exceeds what %s's storage buffers hold (%llu floats / 4)", k,
                     dev_->name().c_str(), static_cast<unsigned long long>(limit));
    uint64_t pw = std::min<uint64_t>({n, (limit / k) & ~uint64_t{3}, uint64_t{pipelines_->max_groups_x()} * block});
    if (pw < n && pw > block) pw -= pw % block;
    const uint64_t ld = round4(pw);  // row stride of the staged b and out
    uint64_t rows = std::max<uint64_t>(1, kMatmulChunkMacs / (k * ld));
    rows = std::min<uint64_t>({rows, m, limit / k, limit / ld, uint64_t{pipelines_->max_groups_y()} * block});
    if (rows > block) rows -= rows % block;

    auto s = take();
    if (!s) return std::unexpected(s.error());
    Lease slot(*this, std::move(*s));
    if (auto st = slot->reserve(rows * k * sizeof(float), k * ld * sizeof(float), rows * ld * sizeof(float)); !st)
      return st;
    bool first = true;
    for (size_t c0 = 0; c0 < n; c0 += pw) {
      const size_t cols = std::min<size_t>(pw, n - c0);
      const size_t ldc = round4(cols);
      if (ldc == n) {
        std::memcpy(slot->b(), b, k * n * sizeof(float));
      } else {
        // Padding columns compute garbage that is never copied out.
        for (size_t p = 0; p < k; ++p) std::memcpy(slot->b() + p * ldc, b + p * n + c0, cols * sizeof(float));
      }
      for (size_t r0 = 0; r0 < m; r0 += rows) {
        if (!first && poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "matmul"));
        first = false;
        const size_t nr = std::min<size_t>(rows, m - r0);
        std::memcpy(slot->a(), a + r0 * k, nr * k * sizeof(float));
        vkk::Push push{static_cast<uint32_t>(nr), static_cast<uint32_t>(k), static_cast<uint32_t>(ldc), 0.0f};
        if (auto st = slot->run(Op::matmul, push, div_up(ldc, block), div_up(nr, block)); !st) return st;
        if (ldc == n) {
          std::memcpy(out + r0 * n, slot->c(), nr * n * sizeof(float));
        } else {
          for (size_t i = 0; i < nr; ++i)
            std::memcpy(out + (r0 + i) * n + c0, slot->c() + i * ldc, cols * sizeof(float));
        }
      }
    }
    return {};
  } catch (...) {
    return std::unexpected(detail::exception_error(kBackend, "matmul"));
  }
}

Result<std::unique_ptr<Kernels>> open_vulkan(uint64_t buffer_cap) noexcept {
  try {
    // The first device that opens and builds the pipelines: a GPU where the
    // loader lists one first, lavapipe otherwise.
    std::string why;
    for (int i = 0; i < 8; ++i) {
      auto dev = vk::Device::shared(i);
      if (!dev) {
        if (dev.error().code == LF_ERR_NOT_FOUND && i > 0) break;
        why += (why.empty() ? "" : "; ") + dev.error().message;
        // No instance (no loader or no driver) or no device at all: the
        // other indices cannot do better.
        if (dev.error().code == LF_ERR_NOT_FOUND || dev.error().message.find("vkCreateInstance") != std::string::npos)
          break;
        continue;
      }
      auto p = vkk::Pipelines::create(*dev, buffer_cap);
      if (!p) {
        why += (why.empty() ? "" : "; ") + (*dev)->name() + ": " + p.error().message;
        continue;
      }
      return std::unique_ptr<Kernels>(new VulkanKernels(*dev, std::move(*p)));
    }
    return LF_FAIL(LF_ERR_UNAVAILABLE, "no Vulkan device can run the kernels: %s", why.c_str());
  } catch (...) {
    return std::unexpected(detail::exception_error(kBackend, "kernels"));
  }
}

}  // namespace

Result<std::unique_ptr<Kernels>> vulkan_kernels() noexcept { return open_vulkan(vkk::kBufferCap); }

namespace detail {
Result<std::unique_ptr<Kernels>> vulkan_kernels_capped(uint64_t max_buffer_bytes) noexcept {
  if (max_buffer_bytes < 1024)
    return LF_FAIL(LF_ERR_INVALID_ARG, "vulkan kernels: a cap of %llu bytes is below 1 KiB",
                   static_cast<unsigned long long>(max_buffer_bytes));
  return open_vulkan(std::min(max_buffer_bytes, vkk::kBufferCap));
}
}  // namespace detail

}  // namespace lf::exec

#else  // !LAVAFLOW_HAVE_VULKAN

namespace lf::exec {

namespace {
constexpr const char *kNoVulkan =
    "lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN=OFF, or no Vulkan headers or glslangValidator at "
    "configure time)";
}  // namespace

Result<std::unique_ptr<Kernels>> vulkan_kernels() noexcept { return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", kNoVulkan); }

Result<std::unique_ptr<Kernels>> detail::vulkan_kernels_capped(uint64_t) noexcept {
  return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", kNoVulkan);
}

}  // namespace lf::exec

#endif  // LAVAFLOW_HAVE_VULKAN
