// C API, memory part: the bridge between lf_buffer_t / lf_pool_t handles and
// the C++ objects, for the other C API translation units.
//
// Handles are generation-checked slots (capi/handles.hpp): a freed buffer's
// handle is rejected (LF_ERR_CLOSED) rather than dereferenced, also after its
// slot was reused by a new buffer.
#pragma once

#include <lavaflow/lavaflow.h>

#include <memory>

#include "memory/buffer.hpp"
#include "memory/pool.hpp"

namespace lf::capi {

/// Hand a buffer to C: a new live lf_buffer_t owning it. Returns NULL (and
/// destroys the buffer, recording LF_ERR_NO_MEMORY as the last error) only
/// when no handle can be allocated; a NULL `b` gives NULL.
lf_buffer_t wrap(BufferPtr b) noexcept;

/// Take the buffer back from C: the handle is retired (a later lf_free of it
/// gives LF_ERR_CLOSED) and the caller owns the buffer. nullptr for a NULL or
/// stale handle.
BufferPtr unwrap_take(lf_buffer_t h) noexcept;

/// The buffer behind a live handle, still owned by the handle; nullptr for a
/// NULL or stale handle. Does not record an error.
Buffer *peek(lf_buffer_t h) noexcept;

/// A new lf_pool_t referring to `pool` (which must be owned by a
/// std::shared_ptr, as every Pool is). lf_pool_destroy on it releases the
/// handle's reference only: a context's shared pool lives on with the context.
lf_pool_t wrap_pool(Pool &pool) noexcept;
lf_pool_t wrap_pool(std::shared_ptr<Pool> pool) noexcept;

/// The pool behind a live handle, or nullptr.
std::shared_ptr<Pool> pool_of(lf_pool_t h) noexcept;

}  // namespace lf::capi
