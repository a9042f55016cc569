// The large messages of one mpi channel in flight, both directions: a ring
// message's envelope and payload chunks, a direct-stream receive that could
// not go straight into place, and their pipelines (pipeline.hpp). Transfers
// are reused, so the hot path of a large message allocates nothing once a
// few have been made.
#pragma once

#include <mpi.h>

#include <memory>
#include <vector>

#include "memory/buffer.hpp"
#include "transport/mpi/device.hpp"
#include "transport/mpi/pipeline.hpp"
#include "transport/transport.hpp"

namespace lf::mpi {

class SendQueue;

/// One large message in flight, either direction.
struct Transfer {
  SendOp *sop = nullptr;
  RecvOp *rop = nullptr;
  uint64_t size = 0;
  int mpi_tag = 0;
  int env_slot = -1;                // send: the send slot holding the envelope (its request is direct[0])
  std::vector<MPI_Request> direct;  // the envelope (sends), then chunks straight on the caller's memory
  Pipeline pipe;
  // A direct-stream receive that could not go straight into place (larger
  // than the receive, or device memory): copied from here when complete.
  BufferPtr bounce;
  char *dst = nullptr;
  uint64_t keep = 0;
  bool dst_device = false;
};

class Transfers {
 public:
  /// Payload chunks travel to or from `peer` on `comm`; envelope slots come
  /// from `sends`.
  Transfers(SendQueue &sends, int peer, MPI_Comm comm) noexcept : sends_(sends), peer_(peer), comm_(comm) {}

  /// A transfer with room for two requests (pushing an envelope's or a
  /// direct message's request cannot fail), or null without memory.
  std::unique_ptr<Transfer> take() noexcept;
  void recycle(std::unique_ptr<Transfer> x) noexcept;

  /// Post MPI transfers for the chunks of [0, n) straight on `mem`.
  Status post_chunks(Transfer &x, char *mem, uint64_t n, uint64_t chunk, bool send) noexcept;
  /// Stage [from, end) of `mem` through bounce buffers (Pipeline::start).
  Status start_pipeline(Transfer &x, bool send, bool device, char *mem, uint64_t cap, uint64_t from, uint64_t end,
                        uint64_t chunk) noexcept {
    return x.pipe.start(send, device, mem, cap, from, end, chunk, copies_);
  }

  /// Keep `x` for progress(); on error (no memory) `x` is left to the caller.
  Status track(std::unique_ptr<Transfer> &x) noexcept;
  /// A receive's MPI requests are posted (st) or failed (!st): complete it
  /// now if MPI already moved the data, keep it otherwise. An error means
  /// the receive was abandoned and the stream is broken.
  Status run_recv(std::unique_ptr<Transfer> x, Status st) noexcept;
  /// Progress every transfer; an error means the stream is broken.
  Status progress() noexcept { return list_.empty() ? Status{} : advance_all(); }
  bool empty() const noexcept { return list_.empty(); }

  /// Stop a transfer: receives are cancelled, sends left to MPI.
  void abandon(Transfer &x, const Error &e) noexcept;
  /// Abandon every transfer, except those MPI has finished meanwhile.
  void drop(const Error &e) noexcept;

 private:
  Status advance_all() noexcept;
  /// Progress a transfer; true when it completed (its op is then complete).
  Result<bool> advance(Transfer &x) noexcept;

  SendQueue &sends_;
  int peer_;
  MPI_Comm comm_;
  CopyStream copies_;
  std::vector<std::unique_ptr<Transfer>> list_;
  std::vector<std::unique_ptr<Transfer>> spare_;
};

}  // namespace lf::mpi
