#include "memory/dlpack.hpp"

#include <new>

namespace lf {

namespace {
// One allocation holds the tensor, its shape and strides, and the buffer, so
// the deleter has a single thing to free.
struct DlpackHolder {
  DLManagedTensor tensor{};
  int64_t shape[1] = {0};
  int64_t strides[1] = {1};
  BufferPtr buffer;
};

void dlpack_deleter(DLManagedTensor *self) {
  if (self) delete static_cast<DlpackHolder *>(self->manager_ctx);
}

// kDLBool (6) arrived after DLPack 0.6; accept it so newer consumers can ask for it.
constexpr uint8_t kMaxDtypeCode = 6;
}  // namespace

DLDevice dlpack_device(const Buffer &b) noexcept {
  switch (b.kind()) {
    case MemoryKind::cuda_device: return DLDevice{kDLCUDA, b.device() < 0 ? 0 : b.device()};
    case MemoryKind::vulkan_device:
    case MemoryKind::vulkan_host_visible: return DLDevice{kDLVulkan, b.device() < 0 ? 0 : b.device()};
    default: break;
  }
  if (b.flags() & buffer_flags::cuda_registered) return DLDevice{kDLCUDAHost, 0};
  return DLDevice{kDLCPU, 0};
}

Result<DLManagedTensor *> to_dlpack(BufferPtr &buf, uint8_t dtype_code, uint8_t dtype_bits) noexcept {
  if (!buf) return LF_FAIL(LF_ERR_INVALID_ARG, "to_dlpack: no buffer");
  if (dtype_code > kMaxDtypeCode)
    return LF_FAIL(LF_ERR_INVALID_ARG, "to_dlpack: unknown DLPack type code %u", dtype_code);
  if (dtype_bits == 0 || dtype_bits % 8)
    return LF_FAIL(LF_ERR_INVALID_ARG, "to_dlpack: element of %u bits is not a whole number of bytes", dtype_bits);
  const size_t elem = dtype_bits / 8;
  if (buf->size() % elem)
    return LF_FAIL(LF_ERR_INVALID_ARG, "to_dlpack: %zu bytes are not a whole number of %zu-byte elements", buf->size(),
                   elem);
  void *data = buf->data();
  const MemoryKind k = buf->kind();
  if (k == MemoryKind::cuda_device || k == MemoryKind::vulkan_device || k == MemoryKind::vulkan_host_visible)
    data = reinterpret_cast<void *>(static_cast<uintptr_t>(buf->device_handle()));
  if (!data) return LF_FAIL(LF_ERR_INVALID_ARG, "to_dlpack: buffer has neither a host pointer nor a device handle");

  auto *h = new (std::nothrow) DlpackHolder;
  if (!h) return LF_FAIL(LF_ERR_NO_MEMORY, "to_dlpack: out of memory");
  h->shape[0] = static_cast<int64_t>(buf->size() / elem);
  DLTensor &t = h->tensor.dl_tensor;
  t.data = data;
  t.device = dlpack_device(*buf);
  t.ndim = 1;
  t.dtype = DLDataType{dtype_code, dtype_bits, 1};
  t.shape = h->shape;
  t.strides = h->strides;
  t.byte_offset = 0;
  h->tensor.manager_ctx = h;
  h->tensor.deleter = dlpack_deleter;
  h->buffer = std::move(buf);
  return &h->tensor;
}

}  // namespace lf
