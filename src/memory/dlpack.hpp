// Buffers as DLPack tensors, so numpy / PyTorch / CuPy consume them without a copy.
#pragma once

#include <dlpack/dlpack.h>

#include "memory/buffer.hpp"

namespace lf {

/// DLPack device of a buffer: kDLCPU for host memory, kDLCUDAHost for host
/// memory registered with CUDA, kDLCUDA for CUDA device memory, kDLVulkan for
/// Vulkan memory (data is then the VkDeviceMemory handle, as device_handle()).
DLDevice dlpack_device(const Buffer &b) noexcept;

/// Export `buf` as a 1-D tensor of size() / (bits / 8) elements of type
/// (code, bits, 1 lane), shape {n}, strides {1}. On success the tensor owns the
/// buffer (`buf` is left empty) and its deleter destroys it; on failure `buf`
/// is untouched. Errors: LF_ERR_INVALID_ARG for an empty buffer, a bad dtype
/// or a size that is not a whole number of elements.
Result<DLManagedTensor *> to_dlpack(BufferPtr &buf, uint8_t dtype_code, uint8_t dtype_bits) noexcept;

}  // namespace lf
