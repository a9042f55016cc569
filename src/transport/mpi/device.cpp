// Device memory for the mpi transport: detection of CUDA and CUDA-aware MPI,
// device pointer checks, host -> receive copies, and the staging stream.
#include "transport/mpi/device.hpp"

#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

#include <cstring>

#include "core/config.hpp"
#include "core/log.hpp"
#include "transport/mpi/wire.hpp"

namespace lf::mpi {

DeviceSupport detect_device_support(uint64_t chunk) {
  DeviceSupport d;
#if LAVAFLOW_HAVE_CUDA
  const auto &why = cuda::Runtime::get().available();
  if (why) {
    d.description = "none (CUDA unavailable: " + *why + ")";
    return d;
  }
  d.cuda = true;
  int query = 0;
#if defined(OMPI_HAVE_MPI_EXT_CUDA) && OMPI_HAVE_MPI_EXT_CUDA
  query = MPIX_Query_cuda_support();
  std::string probe = "MPIX_Query_cuda_support() = " + std::to_string(query);
#else
  std::string probe = "this MPI has no MPIX_Query_cuda_support";
#endif
  std::string mode = config::get_string("LF_MPI_CUDA");
  d.mpi_aware = mode == "on" || (mode != "off" && query == 1);
  if (mode == "on" && query != 1) LF_LOG(warn, "LF_MPI_CUDA=on although %s", probe.c_str());
  d.description = d.mpi_aware ? "device pointers passed to MPI (" + probe + ", LF_MPI_CUDA=" + mode + ")"
                              : "staged through pinned host memory in chunks of " + std::to_string(chunk) +
                                    " bytes, double-buffered (" + probe + ", LF_MPI_CUDA=" + mode + ")";
#else
  (void)chunk;
  d.description = "none (built without CUDA)";
#endif
  return d;
}

bool on_device(const DeviceSupport &d, const void *p) noexcept {
#if LAVAFLOW_HAVE_CUDA
  if (!d.cuda || !p) return false;
  const cuda::Runtime &rt = cuda::Runtime::get();
  cudaPointerAttributes a{};
  if (rt.api().PointerGetAttributes(&a, p) != cudaSuccess) {
    rt.api().GetLastError();  // plain host memory on old runtimes: clear the sticky error
    return false;
  }
  return a.type == cudaMemoryTypeDevice;
#else
  (void)d, (void)p;
  return false;
#endif
}

Status copy_out(void *dst, bool device, const void *src, size_t n) noexcept {
  if (!n) return {};
  if (!device) {
    std::memcpy(dst, src, n);
    return {};
  }
#if LAVAFLOW_HAVE_CUDA
  const cuda::Runtime &rt = cuda::Runtime::get();
  LF_CUDA_CHECK(rt, rt.api().Memcpy(dst, src, n, cudaMemcpyHostToDevice));
  return {};
#else
  return LF_FAIL(LF_ERR_UNSUPPORTED, "device memory without CUDA support in this build");
#endif
}

void deliver_eager(RecvOp &op, bool device, uint64_t tag, const char *src, size_t n) noexcept {
  if (!device || op.want_buffer) return complete_copy(op, tag, src, n);
  op.matched_tag = tag;
  op.message_bytes = n;
  size_t len = n <= op.capacity ? n : op.capacity;
  if (auto st = copy_out(op.data, true, src, len); !st) return fail_op(op, st.error());
  op.bytes = len;
  if (n > op.capacity) {
    set_truncated(op, n);
    return complete(op, LF_ERR_TRUNCATED);
  }
  complete(op, LF_OK);
}

#if LAVAFLOW_HAVE_CUDA

Status CopyStream::make_event(CopyEvent &ev) noexcept {
  const auto &rt = cuda::Runtime::get();
  if (!stream_) LF_CUDA_CHECK(rt, rt.api().StreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  LF_CUDA_CHECK(rt, rt.api().EventCreateWithFlags(&ev, cudaEventDisableTiming));
  return {};
}

Status CopyStream::to_host(void *dst, const void *src, size_t n, CopyEvent ev) noexcept {
  const auto &rt = cuda::Runtime::get();
  LF_CUDA_CHECK(rt, rt.api().MemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, stream_));
  LF_CUDA_CHECK(rt, rt.api().EventRecord(ev, stream_));
  return {};
}

Status CopyStream::to_device(void *dst, const void *src, size_t n, CopyEvent ev) noexcept {
  const auto &rt = cuda::Runtime::get();
  LF_CUDA_CHECK(rt, rt.api().MemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream_));
  LF_CUDA_CHECK(rt, rt.api().EventRecord(ev, stream_));
  return {};
}

Result<bool> CopyStream::done(CopyEvent ev) noexcept {
  const auto &rt = cuda::Runtime::get();
  cudaError_t q = rt.api().EventQuery(ev);
  if (q == cudaErrorNotReady) return false;
  if (q != cudaSuccess) return std::unexpected(rt.error(q, "cudaEventQuery", __FILE__, __LINE__));
  return true;
}

void CopyStream::destroy(CopyEvent &ev, bool wait) noexcept {
  if (!ev) return;
  const auto &rt = cuda::Runtime::get();
  if (wait) rt.api().EventSynchronize(ev);
  rt.api().EventDestroy(ev);
  ev = nullptr;
}

#else

Status CopyStream::make_event(CopyEvent &) noexcept {
  return LF_FAIL(LF_ERR_UNSUPPORTED, "device memory without CUDA support in this build");
}
Status CopyStream::to_host(void *, const void *, size_t, CopyEvent) noexcept {
  return LF_FAIL(LF_ERR_UNSUPPORTED, "device memory without CUDA support in this build");
}
Status CopyStream::to_device(void *, const void *, size_t, CopyEvent) noexcept {
  return LF_FAIL(LF_ERR_UNSUPPORTED, "device memory without CUDA support in this build");
}
Result<bool> CopyStream::done(CopyEvent) noexcept { return true; }
void CopyStream::destroy(CopyEvent &ev, bool) noexcept { ev = nullptr; }

#endif

}  // namespace lf::mpi
