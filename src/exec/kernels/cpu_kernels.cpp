// The CPU implementation: plain loops the compiler vectorises (this file is
// built with -O3, see CMakeLists.txt), one thread per call; the service's
// worker pool supplies the parallelism across jobs.
#include <algorithm>
#include <cstring>

#include "exec/kernels/kernels.hpp"
#include "exec/kernels/kernels_common.hpp"

namespace lf::exec {

namespace {

using detail::kCpuChunk;
using detail::poll;

constexpr const char *kBackend = "cpu";

/// Sum of a[0..n) in double: eight independent accumulators so that the
/// loop vectorises without reassociating anything the caller could see
/// (the order is fixed, so results are reproducible run to run).
double sum_double(const float *a, size_t n) noexcept {
  double acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t j = 0; j < 8; ++j) acc[j] += static_cast<double>(a[i + j]);
  for (; i < n; ++i) acc[i % 8] += static_cast<double>(a[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/// Rows [r0, r1) of out = a * b: i-p-j order, so the inner loop streams a row
/// of b and a row of out with unit stride.
void matmul_rows(const float *a, const float *b, float *out, size_t r0, size_t r1, size_t k, size_t n) noexcept {
  for (size_t i = r0; i < r1; ++i) {
    float *__restrict o = out + i * n;
    std::fill(o, o + n, 0.0f);
    const float *ai = a + i * k;
    for (size_t p = 0; p < k; ++p) {
      const float s = ai[p];
      const float *__restrict bp = b + p * n;
      for (size_t j = 0; j < n; ++j) o[j] += s * bp[j];
    }
  }
}

class CpuKernels final : public Kernels {
 public:
  const std::string &device() const noexcept override { return device_; }

  Status add(const float *a, const float *b, float *out, size_t n, const CancelCheck &cancelled) noexcept override {
    return binary("add", a, b, out, n, cancelled, [](float x, float y) { return x + y; });
  }
  Status mul(const float *a, const float *b, float *out, size_t n, const CancelCheck &cancelled) noexcept override {
    return binary("mul", a, b, out, n, cancelled, [](float x, float y) { return x * y; });
  }

  Status scale(const float *a, float factor, float *out, size_t n, const CancelCheck &cancelled) noexcept override {
    try {
      if (auto st = detail::check_elementwise(kBackend, "scale", a, nullptr, false, out, n); !st) return st;
      if (poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "scale"));
      for (size_t off = 0; off < n; off += kCpuChunk) {
        if (off && poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "scale"));
        const size_t end = std::min(n, off + kCpuChunk);
        for (size_t i = off; i < end; ++i) out[i] = a[i] * factor;
      }
      return {};
    } catch (...) {
      return std::unexpected(detail::exception_error(kBackend, "scale"));
    }
  }

  Status sum(const float *a, size_t n, float *out, const CancelCheck &cancelled) noexcept override {
    try {
      if (!out) return LF_FAIL(LF_ERR_INVALID_ARG, "cpu sum: NULL output");
      if (auto st = detail::check_elementwise(kBackend, "sum", a, nullptr, false, out, n); !st) return st;
      if (poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "sum"));
      double total = 0;
      for (size_t off = 0; off < n; off += kCpuChunk) {
        if (off && poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "sum"));
        total += sum_double(a + off, std::min(kCpuChunk, n - off));
      }
      *out = static_cast<float>(total);
      return {};
    } catch (...) {
      return std::unexpected(detail::exception_error(kBackend, "sum"));
    }
  }

  Status matmul(const float *a, const float *b, float *out, size_t m, size_t k, size_t n,
                const CancelCheck &cancelled) noexcept override {
    try {
      if (auto st = detail::check_matmul(kBackend, a, b, out, m, k, n); !st) return st;
      if (poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "matmul"));
      if (m == 0 || n == 0) return {};
      if (k == 0) {
        std::fill(out, out + m * n, 0.0f);
        return {};
      }
      const uint64_t per_row = static_cast<uint64_t>(k) * n;
      const size_t rows = static_cast<size_t>(std::max<uint64_t>(1, detail::kMatmulChunkMacs / per_row));
      for (size_t r0 = 0; r0 < m; r0 += rows) {
        if (r0 && poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, "matmul"));
        matmul_rows(a, b, out, r0, std::min(m, r0 + rows), k, n);
      }
      return {};
    } catch (...) {
      return std::unexpected(detail::exception_error(kBackend, "matmul"));
    }
  }

 private:
  template <typename F>
  Status binary(const char *op, const float *a, const float *b, float *out, size_t n, const CancelCheck &cancelled,
                F f) noexcept {
    try {
      if (auto st = detail::check_elementwise(kBackend, op, a, b, true, out, n); !st) return st;
      if (poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, op));
      for (size_t off = 0; off < n; off += kCpuChunk) {
        if (off && poll(cancelled)) return std::unexpected(detail::cancelled_error(kBackend, op));
        const size_t end = std::min(n, off + kCpuChunk);
        for (size_t i = off; i < end; ++i) out[i] = f(a[i], b[i]);
      }
      return {};
    } catch (...) {
      return std::unexpected(detail::exception_error(kBackend, op));
    }
  }

  std::string device_ = "cpu";
};

}  // namespace

Result<std::unique_ptr<Kernels>> cpu_kernels() noexcept {
  try {
    return std::unique_ptr<Kernels>(new CpuKernels);
  } catch (...) {
    return std::unexpected(detail::exception_error(kBackend, "kernels"));
  }
}

}  // namespace lf::exec
