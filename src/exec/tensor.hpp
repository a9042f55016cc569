// Tensors resident on the execution service, and the memory accounts that
// cap them: each client's tensors count against its own cap
// (LF_EXEC_CLIENT_MEM_MAX) and the service's total (reported by health).
//
// A tensor's memory comes from the context's shared pool, so that a client on
// the same host can be handed it by descriptor (docs/exec.md, "Fetch").
#pragma once

#include <lavaflow/lavaflow.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "core/status.hpp"
#include "memory/buffer.hpp"

namespace lf::exec {

struct Account {
  Account(uint64_t cap_bytes, std::shared_ptr<std::atomic<uint64_t>> total) noexcept
      : cap(cap_bytes), service_total(std::move(total)) {}
  const uint64_t cap;
  std::atomic<uint64_t> used{0};
  std::shared_ptr<std::atomic<uint64_t>> service_total;
};

class Tensor {
 public:
  /// A tensor of `bytes`, charged to `acct`; LF_ERR_BUSY past the cap.
  static Result<std::shared_ptr<Tensor>> create(lf_pool_t pool, uint64_t bytes, std::shared_ptr<Account> acct) noexcept;
  ~Tensor();
  Tensor(const Tensor &) = delete;
  Tensor &operator=(const Tensor &) = delete;

  uint64_t bytes() const noexcept { return bytes_; }
  float *data() const noexcept { return static_cast<float *>(lf_buffer_data(buf_)); }
  /// The C handle (owned by the tensor; user ops see it, never free it).
  lf_buffer_t handle() const noexcept { return buf_; }

  /// Bytes of an upload received so far (x.put).
  std::atomic<uint64_t> filled{0};

 private:
  Tensor() = default;
  uint64_t bytes_ = 0;
  uint64_t charged_ = 0;
  lf_buffer_t buf_ = nullptr;
  std::shared_ptr<Account> acct_;
};

/// A second owner of a tensor's memory, to hand to lf_isend_buffer: it
/// presents the same bytes and shared-memory reference, and keeps the tensor
/// alive until the transport (or the peer's view) lets go of it, however
/// soon the service itself releases the tensor.
BufferPtr alias(std::shared_ptr<Tensor> t);

}  // namespace lf::exec
