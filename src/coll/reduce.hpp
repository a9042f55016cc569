// Element-wise reduction kernels for every lf_dtype_t x lf_op_t.
#pragma once

#include <lavaflow/lavaflow.h>

#include <cstddef>

namespace lf::coll {

/// Bytes per element of `dt`; 0 for an unknown type.
size_t dtype_size(lf_dtype_t dt) noexcept;
/// Static names for logs and errors ("float32", "sum"; "?" when unknown).
const char *dtype_name(lf_dtype_t dt) noexcept;
const char *op_name(lf_op_t op) noexcept;

/// inout[i] = inout[i] op in[i] for `count` elements. Integers wrap; for the
/// float types a NaN in either operand gives NaN for every op. The ops are
/// commutative bit for bit (except which NaN payload survives), which the
/// algorithms rely on to give every rank the same result.
void reduce(void *inout, const void *in, size_t count, lf_dtype_t dt, lf_op_t op) noexcept;
/// out[i] = a[i] op b[i]: a copy and a reduction in one pass. `out` may be `a`.
void reduce_into(void *out, const void *a, const void *b, size_t count, lf_dtype_t dt, lf_op_t op) noexcept;

}  // namespace lf::coll
