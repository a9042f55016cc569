#include "exec/kernels/kernels_common.hpp"

#include <exception>
#include <limits>
#include <new>

namespace lf::exec::detail {

namespace {
constexpr size_t kMaxElements = std::numeric_limits<size_t>::max() / sizeof(float);

bool mul_overflows(size_t x, size_t y, size_t &out) {
  if (__builtin_mul_overflow(x, y, &out)) return true;
  return out > kMaxElements;
}
}  // namespace

Error cancelled_error(const char *backend, const char *op) noexcept {
  return make_error(LF_ERR_CANCELLED, "%s %s: cancelled", backend, op);
}

Status check_elementwise(const char *backend, const char *op, const float *a, const float *b, bool need_b,
                         const void *out, size_t n) noexcept {
  if (n > kMaxElements) return LF_FAIL(LF_ERR_INVALID_ARG, "%s %s: %zu elements do not fit in memory", backend, op, n);
  if (n == 0) return {};
  if (!a || (need_b && !b) || !out)
    return LF_FAIL(LF_ERR_INVALID_ARG, "%s %s: NULL %s with %zu elements", backend, op,
                   !a               ? "input a"
                   : (need_b && !b) ? "input b"
                                    : "output",
                   n);
  return {};
}

Status check_matmul(const char *backend, const float *a, const float *b, const float *out, size_t m, size_t k,
                    size_t n) noexcept {
  size_t mk = 0, kn = 0, mn = 0;
  if (mul_overflows(m, k, mk) || mul_overflows(k, n, kn) || mul_overflows(m, n, mn))
    return LF_FAIL(LF_ERR_INVALID_ARG, "%s matmul: shapes %zux%zu * %zux%zu overflow", backend, m, k, k, n);
  if (mn == 0) return {};
  if (!out) return LF_FAIL(LF_ERR_INVALID_ARG, "%s matmul: NULL output for %zux%zu", backend, m, n);
  if (k > 0 && (!a || !b)) return LF_FAIL(LF_ERR_INVALID_ARG, "%s matmul: NULL input %s", backend, !a ? "a" : "b");
  return {};
}

Error exception_error(const char *backend, const char *op) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc &) {
    return make_error(LF_ERR_NO_MEMORY, "%s %s: out of memory", backend, op);
  } catch (const std::exception &e) {
    return make_error(LF_ERR_INTERNAL, "%s %s: exception: %s", backend, op, e.what());
  } catch (...) {
    return make_error(LF_ERR_INTERNAL, "%s %s: unknown exception", backend, op);
  }
}

}  // namespace lf::exec::detail
