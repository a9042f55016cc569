// Device memory as the mpi transport sees it: whether CUDA device pointers
// can occur and whether MPI takes them as they are (DeviceSupport, decided
// once at start), telling a device pointer from host memory, placing host
// bytes into a receive that may be device memory, and the CUDA stream on
// which an endpoint stages chunks through pinned host buffers (CopyStream).
// Everything here is a no-op or an error without CUDA in the build.
#pragma once

#include <cstdint>
#include <string>

#include "lavaflow_features.h"
#include "memory/cuda_rt.hpp"
#include "transport/transport.hpp"

namespace lf::mpi {

/// CUDA as seen by this transport: whether device pointers can occur at all
/// (a usable runtime) and whether MPI takes them directly.
struct DeviceSupport {
  bool cuda = false;        // CUDA runtime usable: device buffers may appear
  bool mpi_aware = false;   // pass device pointers to MPI
  std::string description;  // for logs and lf-info
};

/// Decide once, at start: the CUDA runtime, MPIX_Query_cuda_support() and
/// LF_MPI_CUDA. `chunk` only goes into the description.
DeviceSupport detect_device_support(uint64_t chunk);

/// Whether `p` is CUDA device memory (never, when `d` says CUDA is unusable).
bool on_device(const DeviceSupport &d, const void *p) noexcept;

/// Copy host bytes into a receive's memory, which may be device memory.
Status copy_out(void *dst, bool device, const void *src, size_t n) noexcept;

/// Place an eager message into `op` (host or device memory) and complete it.
void deliver_eager(RecvOp &op, bool device, uint64_t tag, const char *src, size_t n) noexcept;

#if LAVAFLOW_HAVE_CUDA
using CopyEvent = cudaEvent_t;
#else
using CopyEvent = void *;
#endif

/// The CUDA stream on which one endpoint's staging copies run, made at the
/// first event. One stream: a younger copy cannot complete before an older
/// one, which keeps a pipeline's chunks in order.
class CopyStream {
 public:
  /// A new event for one bounce buffer (and the stream, the first time).
  Status make_event(CopyEvent &ev) noexcept;
  /// Start copying n bytes device -> host (to_host) or host -> device
  /// (to_device); `ev` completes with the copy.
  Status to_host(void *dst, const void *src, size_t n, CopyEvent ev) noexcept;
  Status to_device(void *dst, const void *src, size_t n, CopyEvent ev) noexcept;
  /// Whether the copy recorded on `ev` is done.
  static Result<bool> done(CopyEvent ev) noexcept;
  /// Destroy `ev` (after waiting for its copy when `wait`), if it exists.
  static void destroy(CopyEvent &ev, bool wait) noexcept;

 private:
#if LAVAFLOW_HAVE_CUDA
  // Never destroyed: one stream leaks per endpoint that staged (unchanged
  // by the split into files; StreamDestroy in a destructor would fix it).
  cudaStream_t stream_ = nullptr;
#endif
};

}  // namespace lf::mpi
