// What both kernel implementations share: argument checks, the cancel poll,
// and the error every op returns once cancelled.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/status.hpp"
#include "exec/kernels/kernels.hpp"

namespace lf::exec::detail {

/// Elements per chunk of the elementwise ops and of sum on the CPU: small
/// enough that a chunk takes tens of microseconds, large enough that the
/// poll (a std::function call and usually one atomic load) is noise.
inline constexpr size_t kCpuChunk = size_t{64} << 10;
/// Multiply-adds per chunk of matmul (row blocks are sized to about this).
inline constexpr uint64_t kMatmulChunkMacs = uint64_t{1} << 22;

/// An empty check never cancels.
inline bool poll(const CancelCheck &cancelled) { return cancelled && cancelled(); }

/// LF_ERR_CANCELLED naming the op and the backend.
Error cancelled_error(const char *backend, const char *op) noexcept;

/// LF_ERR_INVALID_ARG when a pointer the op needs is null while n > 0, or
/// n * 4 bytes does not fit in size_t. `b` may be null for unary ops
/// (pass need_b = false).
Status check_elementwise(const char *backend, const char *op, const float *a, const float *b, bool need_b,
                         const void *out, size_t n) noexcept;

/// LF_ERR_INVALID_ARG for null operands of a non-empty product, or shapes
/// whose element counts overflow.
Status check_matmul(const char *backend, const float *a, const float *b, const float *out, size_t m, size_t k,
                    size_t n) noexcept;

/// LF_ERR_INTERNAL for an exception (from the cancel check or an
/// allocation) caught at the noexcept boundary of an op.
Error exception_error(const char *backend, const char *op) noexcept;

/// vulkan_kernels() with every staging buffer capped at `max_buffer_bytes`
/// (at least 1 KiB), so that tests reach the chunked paths -- matmul's
/// column panels and single-row blocks -- with small shapes.
Result<std::unique_ptr<Kernels>> vulkan_kernels_capped(uint64_t max_buffer_bytes) noexcept;

}  // namespace lf::exec::detail
