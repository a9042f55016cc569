// The io_uring engine: up to queue_depth reads in flight, submitted and
// reaped by the thread that asks for the next chunk (no thread of its own).
// Chunk blocks are registered once (io_uring_register_buffers over the
// ring's blocks, split at the 1 GiB a fixed buffer may span) and read with
// READ_FIXED; short reads are resubmitted for the rest.
#pragma once

#include "ingest/reader.hpp"

namespace lf::ingest {

/// An io_uring reader, or why there cannot be one (no io_uring: the caller
/// falls back to a pread thread). With `register_buffers`, a registration
/// the memory-lock limit refuses leaves the reads unregistered and says why
/// in describe().
Result<std::unique_ptr<Reader>> make_uring_reader(Plan plan, bool register_buffers);

}  // namespace lf::ingest
