#include "memory/cuda_rt.hpp"

#include <dlfcn.h>

#include <type_traits>
#include <vector>

#include "core/config.hpp"
#include "core/log.hpp"

namespace lf::cuda {

const Runtime &Runtime::get() noexcept {
  // Never destroyed: other static destructors (pools, buffers) may still call
  // into CUDA at exit, and dlclose-ing libcudart under them would crash.
  static const Runtime *rt = new Runtime;
  return *rt;
}

Runtime::~Runtime() = default;

#if LAVAFLOW_HAVE_CUDA

Runtime::Runtime() {
  std::string override_path;
  try {
    override_path = config::get_string("LF_CUDA_LIBRARY");
  } catch (...) {
  }
  std::vector<std::string> candidates;
  if (!override_path.empty())
    candidates.push_back(override_path);
  else
    candidates = {"libcudart.so", "libcudart.so.13", "libcudart.so.12"};
  std::string errors;
  for (const std::string &name : candidates) {
    handle_ = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_) {
      library_ = name;
      break;
    }
    const char *e = dlerror();
    if (!errors.empty()) errors += "; ";
    errors += e ? e : name;
  }
  if (!handle_) {
    unavailable_ = "the CUDA runtime could not be loaded: " + errors;
    return;
  }
  std::string missing;
  auto load = [&](auto &slot, const char *sym) {
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(dlsym(handle_, sym));
    if (!slot) missing += std::string(missing.empty() ? "" : ", ") + sym;
  };
#define LF_CUDA_LOAD(name) load(api_.name, "cuda" #name)
  LF_CUDA_LOAD(GetDeviceCount);
  LF_CUDA_LOAD(SetDevice);
  LF_CUDA_LOAD(GetDevice);
  LF_CUDA_LOAD(DeviceSynchronize);
  LF_CUDA_LOAD(DeviceGetPCIBusId);
  LF_CUDA_LOAD(DriverGetVersion);
  LF_CUDA_LOAD(RuntimeGetVersion);
  LF_CUDA_LOAD(GetErrorString);
  LF_CUDA_LOAD(GetErrorName);
  LF_CUDA_LOAD(GetLastError);
  LF_CUDA_LOAD(PointerGetAttributes);
  LF_CUDA_LOAD(Malloc);
  LF_CUDA_LOAD(Free);
  LF_CUDA_LOAD(HostAlloc);
  LF_CUDA_LOAD(FreeHost);
  LF_CUDA_LOAD(HostRegister);
  LF_CUDA_LOAD(HostUnregister);
  LF_CUDA_LOAD(Memset);
  LF_CUDA_LOAD(Memcpy);
  LF_CUDA_LOAD(MemcpyAsync);
  LF_CUDA_LOAD(IpcGetMemHandle);
  LF_CUDA_LOAD(IpcOpenMemHandle);
  LF_CUDA_LOAD(IpcCloseMemHandle);
  LF_CUDA_LOAD(IpcGetEventHandle);
  LF_CUDA_LOAD(IpcOpenEventHandle);
  LF_CUDA_LOAD(EventCreate);
  LF_CUDA_LOAD(EventCreateWithFlags);
  LF_CUDA_LOAD(EventRecord);
  LF_CUDA_LOAD(EventQuery);
  LF_CUDA_LOAD(EventSynchronize);
  LF_CUDA_LOAD(EventDestroy);
  LF_CUDA_LOAD(StreamCreate);
  LF_CUDA_LOAD(StreamCreateWithFlags);
  LF_CUDA_LOAD(StreamSynchronize);
  LF_CUDA_LOAD(StreamQuery);
  LF_CUDA_LOAD(StreamWaitEvent);
  LF_CUDA_LOAD(StreamDestroy);
#undef LF_CUDA_LOAD
  if (!missing.empty()) {
    unavailable_ = library_ + " lacks " + missing;
    return;
  }
  int n = 0;
  cudaError_t rc = api_.GetDeviceCount(&n);
  if (rc != cudaSuccess) {
    unavailable_ = error_text(rc, "cudaGetDeviceCount");
    // A failed first call leaves a sticky error that would be reported by the
    // next unrelated call; clear it.
    api_.GetLastError();
    return;
  }
  if (n <= 0) {
    unavailable_ = "cudaGetDeviceCount found no CUDA device";
    return;
  }
  device_count_ = n;
  LF_LOG(debug, "CUDA runtime %s: %d device(s)", library_.c_str(), n);
}

std::string Runtime::error_text(cudaError_t err, const char *call) const {
  const char *text = api_.GetErrorString ? api_.GetErrorString(err) : nullptr;
  const char *name = api_.GetErrorName ? api_.GetErrorName(err) : nullptr;
  std::string out = std::string(call) + ": " + (text ? text : "unknown CUDA error") + " (";
  if (name) out += std::string(name) + ", ";
  out += "error " + std::to_string(static_cast<int>(err)) + ")";
  return out;
}

Error Runtime::error(cudaError_t err, const char *call, const char *file, int line) const {
  lf_status_t code = LF_ERR_IO;
  switch (err) {
    case cudaErrorMemoryAllocation: code = LF_ERR_NO_MEMORY; break;
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
    case cudaErrorInitializationError:
    case cudaErrorStubLibrary:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInvalidDevice: code = LF_ERR_UNAVAILABLE; break;
    default: break;
  }
  return make_error(code, "%s (%s:%d)", error_text(err, call).c_str(), file, line);
}

#else  // !LAVAFLOW_HAVE_CUDA

Runtime::Runtime() { unavailable_ = "lavaflow was built without the CUDA toolkit headers (LAVAFLOW_WITH_CUDA)"; }

#endif

}  // namespace lf::cuda
