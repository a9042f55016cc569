// The CUDA runtime, reached through dlopen.
//
// lavaflow never links libcudart or libcuda: every binary must start on a
// machine without a driver. Runtime::get() loads libcudart once (the path in
// LF_CUDA_LIBRARY, else "libcudart.so", "libcudart.so.13", "libcudart.so.12")
// and resolves the functions below into a table; the toolkit headers are used
// for the types only. available() says whether CUDA can be used and, if not,
// why, in CUDA's own words (e.g. "CUDA driver version is insufficient for
// CUDA runtime version", error 35, when libcudart is present but no driver).
//
// Used by the memory layer (cuda_device and CUDA-registered pinned memory) and
// by the cuda-ipc transport.
#pragma once

#include <optional>
#include <string>

#include "core/status.hpp"
#include "lavaflow_features.h"

#if LAVAFLOW_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace lf::cuda {

#if LAVAFLOW_HAVE_CUDA
/// Entry points of libcudart, named after the CUDA function without "cuda".
/// Every pointer is non-null once Runtime::available() returned nullopt.
struct Api {
  cudaError_t (*GetDeviceCount)(int *count);
  cudaError_t (*SetDevice)(int device);
  cudaError_t (*GetDevice)(int *device);
  cudaError_t (*DeviceSynchronize)();
  cudaError_t (*DeviceGetPCIBusId)(char *bus_id, int len, int device);
  cudaError_t (*DriverGetVersion)(int *version);
  cudaError_t (*RuntimeGetVersion)(int *version);
  const char *(*GetErrorString)(cudaError_t error);
  const char *(*GetErrorName)(cudaError_t error);
  cudaError_t (*GetLastError)();
  cudaError_t (*PointerGetAttributes)(cudaPointerAttributes *attributes, const void *ptr);

  cudaError_t (*Malloc)(void **ptr, size_t size);
  cudaError_t (*Free)(void *ptr);
  cudaError_t (*HostAlloc)(void **ptr, size_t size, unsigned int flags);
  cudaError_t (*FreeHost)(void *ptr);
  cudaError_t (*HostRegister)(void *ptr, size_t size, unsigned int flags);
  cudaError_t (*HostUnregister)(void *ptr);
  cudaError_t (*Memset)(void *ptr, int value, size_t count);
  cudaError_t (*Memcpy)(void *dst, const void *src, size_t count, cudaMemcpyKind kind);
  cudaError_t (*MemcpyAsync)(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t stream);

  cudaError_t (*IpcGetMemHandle)(cudaIpcMemHandle_t *handle, void *ptr);
  cudaError_t (*IpcOpenMemHandle)(void **ptr, cudaIpcMemHandle_t handle, unsigned int flags);
  cudaError_t (*IpcCloseMemHandle)(void *ptr);
  cudaError_t (*IpcGetEventHandle)(cudaIpcEventHandle_t *handle, cudaEvent_t event);
  cudaError_t (*IpcOpenEventHandle)(cudaEvent_t *event, cudaIpcEventHandle_t handle);

  cudaError_t (*EventCreate)(cudaEvent_t *event);
  cudaError_t (*EventCreateWithFlags)(cudaEvent_t *event, unsigned int flags);
  cudaError_t (*EventRecord)(cudaEvent_t event, cudaStream_t stream);
  cudaError_t (*EventQuery)(cudaEvent_t event);
  cudaError_t (*EventSynchronize)(cudaEvent_t event);
  cudaError_t (*EventDestroy)(cudaEvent_t event);

  cudaError_t (*StreamCreate)(cudaStream_t *stream);
  cudaError_t (*StreamCreateWithFlags)(cudaStream_t *stream, unsigned int flags);
  cudaError_t (*StreamSynchronize)(cudaStream_t stream);
  cudaError_t (*StreamQuery)(cudaStream_t stream);
  cudaError_t (*StreamWaitEvent)(cudaStream_t stream, cudaEvent_t event, unsigned int flags);
  cudaError_t (*StreamDestroy)(cudaStream_t stream);
};
#endif

class Runtime {
 public:
  /// The process-wide runtime; loads libcudart and counts devices on first use.
  static const Runtime &get() noexcept;

  /// nullopt when CUDA is usable (library loaded and at least one device),
  /// otherwise the reason, e.g. "cudaGetDeviceCount: CUDA driver version is
  /// insufficient for CUDA runtime version (cudaErrorInsufficientDriver, error 35)".
  const std::optional<std::string> &available() const noexcept { return unavailable_; }
  /// Devices found (0 when unavailable).
  int device_count() const noexcept { return device_count_; }
  /// The library that was loaded ("" if none).
  const std::string &library() const noexcept { return library_; }

#if LAVAFLOW_HAVE_CUDA
  /// The function table. Only call through it when available() is nullopt
  /// (or, for diagnostics, when library() is not empty).
  const Api &api() const noexcept { return api_; }
  /// "<call>: <cudaGetErrorString> (<name>, error N)".
  std::string error_text(cudaError_t err, const char *call) const;
  /// An lf::Error for a failed CUDA call: no memory, unavailable (driver,
  /// device) or LF_ERR_IO for the rest.
  Error error(cudaError_t err, const char *call, const char *file, int line) const;
#endif

  Runtime(const Runtime &) = delete;
  Runtime &operator=(const Runtime &) = delete;

 private:
  Runtime();
  ~Runtime();
  void *handle_ = nullptr;
  std::string library_;
  std::optional<std::string> unavailable_;
  int device_count_ = 0;
#if LAVAFLOW_HAVE_CUDA
  Api api_{};
#endif
};

/// Run a CUDA call through `rt` (an lf::cuda::Runtime); on failure return an
/// lf::Error naming the call, CUDA's error text, file and line from the
/// enclosing function (which must return lf::Result<...>).
#define LF_CUDA_CHECK(rt, expr)                                                                                 \
  do {                                                                                                          \
    cudaError_t lf_cuda_rc_ = (expr);                                                                           \
    if (lf_cuda_rc_ != cudaSuccess) return std::unexpected((rt).error(lf_cuda_rc_, #expr, __FILE__, __LINE__)); \
  } while (0)

}  // namespace lf::cuda
