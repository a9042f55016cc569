// Copies between host memory and a buffer of any kind: the one place that
// knows how to reach each kind's bytes from the host.
//
//   host kinds                  memcpy
//   Vulkan, host-visible        earlier GPU writes complete (the queue is
//                               drained when work may be pending), then memcpy
//   Vulkan, device-local only   vkCmdCopyBuffer through a staging buffer
//   CUDA device                 the process's TransferManager for the device
//                               (pinned direct or double-buffered staging)
//
// Used by the C API (lf_buffer_read / lf_buffer_write) and by transports
// that must stage device memory through the host (a channel whose transport
// cannot move the memory kind natively).
#pragma once

#include <cstddef>

#include "core/status.hpp"
#include "memory/buffer.hpp"

namespace lf {

struct CopyOptions {
  /// Vulkan: take the staging path even when the memory is host-visible
  /// (tests exercise the DEVICE_LOCAL-only path on devices where every
  /// memory type is mappable, e.g. lavapipe).
  bool force_staging = false;
};

/// Copy `n` bytes from `src` to [offset, offset + n) of `dst`.
/// LF_ERR_INVALID_ARG when the range lies outside the buffer.
Status buffer_write(const Buffer &dst, size_t offset, const void *src, size_t n, const CopyOptions &o = {}) noexcept;

/// Copy [offset, offset + n) of `src` to `dst`.
Status buffer_read(const Buffer &src, size_t offset, void *dst, size_t n, const CopyOptions &o = {}) noexcept;

/// Make earlier GPU writes to `b` complete before the host or another
/// process reads it: drains the Vulkan queue when work lavaflow did not wait
/// for may be pending on it (vk::complete_pending) / synchronises the CUDA
/// device; nothing for host kinds.
Status complete_device_writes(const Buffer &b) noexcept;

}  // namespace lf
