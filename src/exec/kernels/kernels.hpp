// The execution service's built-in float32 kernels, behind one interface with
// two implementations: Vulkan compute shaders on the process's Vulkan device
// (lavapipe where there is no GPU) and plain loops on the CPU.
//
//   auto k = lf::exec::vulkan_kernels();          // or cpu_kernels()
//   if (!k) k = lf::exec::cpu_kernels();          // k.error().message() says why not Vulkan
//   (*k)->add(a, b, out, n, [&] { return token.load(); });
//
// Tensors are row-major float32 in host memory the caller owns. Every call
// works in chunks and polls `cancelled` between chunks, so a cancel or a
// deadline is seen within one chunk; it then returns LF_ERR_CANCELLED and
// `out` holds garbage. Calls are thread-safe; one object may serve every
// worker thread of a service.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "core/status.hpp"

namespace lf::exec {

/// Polled between chunks; true once the work is no longer wanted.
using CancelCheck = std::function<bool()>;

class Kernels {
 public:
  virtual ~Kernels() = default;

  /// Where the kernels run, for health reports and job results: "cpu", or
  /// "vulkan:<device name>".
  virtual const std::string &device() const noexcept = 0;

  /// out[i] = a[i] + b[i], i < n.
  virtual Status add(const float *a, const float *b, float *out, size_t n, const CancelCheck &cancelled) noexcept = 0;
  /// out[i] = a[i] * b[i], i < n.
  virtual Status mul(const float *a, const float *b, float *out, size_t n, const CancelCheck &cancelled) noexcept = 0;
  /// out[i] = a[i] * factor, i < n.
  virtual Status scale(const float *a, float factor, float *out, size_t n, const CancelCheck &cancelled) noexcept = 0;
  /// *out = sum of a[0..n) (n may be 0: *out = 0).
  virtual Status sum(const float *a, size_t n, float *out, const CancelCheck &cancelled) noexcept = 0;
  /// out (m x n) = a (m x k) * b (k x n).
  virtual Status matmul(const float *a, const float *b, float *out, size_t m, size_t k, size_t n,
                        const CancelCheck &cancelled) noexcept = 0;
};

/// Plain loops; never fails.
Result<std::unique_ptr<Kernels>> cpu_kernels() noexcept;

/// Compute shaders on the first Vulkan device. LF_ERR_UNAVAILABLE with the
/// reason when the build has no Vulkan, the loader or a device is missing, or
/// a pipeline cannot be built.
Result<std::unique_ptr<Kernels>> vulkan_kernels() noexcept;

}  // namespace lf::exec
