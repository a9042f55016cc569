#include "coll/reduce.hpp"

#include <cstdint>
#include <type_traits>

namespace lf::coll {

namespace {

// Integer arithmetic in the unsigned type of the same width: overflow wraps
// instead of being undefined, and the bits are those of two's complement.
template <typename T>
using Wide = std::make_unsigned_t<T>;

template <typename T, lf_op_t Op>
inline T apply(T a, T b) noexcept {
  if constexpr (std::is_floating_point_v<T>) {
    // NaN propagates through MIN and MAX as through SUM: a comparison alone
    // would drop it whenever it sits in the second operand.
    if constexpr (Op == LF_SUM) return a + b;
    if constexpr (Op == LF_PROD) return a * b;
    if constexpr (Op == LF_MIN) return a != a ? a : (b != b ? b : (b < a ? b : a));
    if constexpr (Op == LF_MAX) return a != a ? a : (b != b ? b : (b > a ? b : a));
  } else {
    if constexpr (Op == LF_SUM)
      return static_cast<T>(static_cast<Wide<T>>(static_cast<Wide<T>>(a) + static_cast<Wide<T>>(b)));
    if constexpr (Op == LF_PROD)
      return static_cast<T>(static_cast<Wide<T>>(static_cast<Wide<T>>(a) * static_cast<Wide<T>>(b)));
    if constexpr (Op == LF_MIN) return b < a ? b : a;
    if constexpr (Op == LF_MAX) return b > a ? b : a;
  }
  return a;
}

template <typename T, lf_op_t Op>
void kernel(void *inout, const void *in, size_t count) noexcept {
  T *__restrict out = static_cast<T *>(inout);
  const T *__restrict src = static_cast<const T *>(in);
  for (size_t i = 0; i < count; ++i) out[i] = apply<T, Op>(out[i], src[i]);
}

template <typename T, lf_op_t Op>
void kernel3(void *out, const void *a, const void *b, size_t count) noexcept {
  // `out` may alias `a` (the same element is read, then written), so only
  // `b` is declared unaliased.
  T *dst = static_cast<T *>(out);
  const T *x = static_cast<const T *>(a);
  const T *__restrict y = static_cast<const T *>(b);
  for (size_t i = 0; i < count; ++i) dst[i] = apply<T, Op>(x[i], y[i]);
}

template <typename T>
void by_op(void *inout, const void *in, size_t count, lf_op_t op) noexcept {
  switch (op) {
    case LF_SUM: return kernel<T, LF_SUM>(inout, in, count);
    case LF_PROD: return kernel<T, LF_PROD>(inout, in, count);
    case LF_MIN: return kernel<T, LF_MIN>(inout, in, count);
    case LF_MAX: return kernel<T, LF_MAX>(inout, in, count);
  }
}

template <typename T>
void by_op3(void *out, const void *a, const void *b, size_t count, lf_op_t op) noexcept {
  switch (op) {
    case LF_SUM: return kernel3<T, LF_SUM>(out, a, b, count);
    case LF_PROD: return kernel3<T, LF_PROD>(out, a, b, count);
    case LF_MIN: return kernel3<T, LF_MIN>(out, a, b, count);
    case LF_MAX: return kernel3<T, LF_MAX>(out, a, b, count);
  }
}

}  // namespace

size_t dtype_size(lf_dtype_t dt) noexcept {
  switch (dt) {
    case LF_INT8:
    case LF_UINT8: return 1;
    case LF_INT32:
    case LF_UINT32:
    case LF_FLOAT32: return 4;
    case LF_INT64:
    case LF_UINT64:
    case LF_FLOAT64: return 8;
  }
  return 0;
}

const char *dtype_name(lf_dtype_t dt) noexcept {
  switch (dt) {
    case LF_INT8: return "int8";
    case LF_UINT8: return "uint8";
    case LF_INT32: return "int32";
    case LF_UINT32: return "uint32";
    case LF_INT64: return "int64";
    case LF_UINT64: return "uint64";
    case LF_FLOAT32: return "float32";
    case LF_FLOAT64: return "float64";
  }
  return "?";
}

const char *op_name(lf_op_t op) noexcept {
  switch (op) {
    case LF_SUM: return "sum";
    case LF_PROD: return "prod";
    case LF_MIN: return "min";
    case LF_MAX: return "max";
  }
  return "?";
}

void reduce(void *inout, const void *in, size_t count, lf_dtype_t dt, lf_op_t op) noexcept {
  switch (dt) {
    case LF_INT8: return by_op<int8_t>(inout, in, count, op);
    case LF_UINT8: return by_op<uint8_t>(inout, in, count, op);
    case LF_INT32: return by_op<int32_t>(inout, in, count, op);
    case LF_UINT32: return by_op<uint32_t>(inout, in, count, op);
    case LF_INT64: return by_op<int64_t>(inout, in, count, op);
    case LF_UINT64: return by_op<uint64_t>(inout, in, count, op);
    case LF_FLOAT32: return by_op<float>(inout, in, count, op);
    case LF_FLOAT64: return by_op<double>(inout, in, count, op);
  }
}

void reduce_into(void *out, const void *a, const void *b, size_t count, lf_dtype_t dt, lf_op_t op) noexcept {
  switch (dt) {
    case LF_INT8: return by_op3<int8_t>(out, a, b, count, op);
    case LF_UINT8: return by_op3<uint8_t>(out, a, b, count, op);
    case LF_INT32: return by_op3<int32_t>(out, a, b, count, op);
    case LF_UINT32: return by_op3<uint32_t>(out, a, b, count, op);
    case LF_INT64: return by_op3<int64_t>(out, a, b, count, op);
    case LF_UINT64: return by_op3<uint64_t>(out, a, b, count, op);
    case LF_FLOAT32: return by_op3<float>(out, a, b, count, op);
    case LF_FLOAT64: return by_op3<double>(out, a, b, count, op);
  }
}

}  // namespace lf::coll
