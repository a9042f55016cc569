// The chunks of one large message that go through host bounce buffers:
// device memory without CUDA-aware MPI (both directions), and received
// chunks that do not fit the receive (truncation). Two buffers, chunks
// strictly in order; the copy of one chunk overlaps the MPI transfer of the
// other. Part of a Transfer (transfers.hpp).
#pragma once

#include <mpi.h>

#include <cstdint>

#include "memory/buffer.hpp"
#include "transport/mpi/device.hpp"

namespace lf::mpi {

class Pipeline {
 public:
  /// Where the chunks travel: MPI tag `tag` to or from `peer` on `comm`.
  struct Wire {
    int peer;
    int tag;
    MPI_Comm comm;
  };

  /// Stage bytes [from, end) of `mem` in chunks of `chunk`: send: device ->
  /// host -> MPI; receive: MPI -> host -> `mem` (device or host), keeping
  /// only the first `cap` bytes of `mem`.
  Status start(bool send, bool device, char *mem, uint64_t cap, uint64_t from, uint64_t end, uint64_t chunk,
               CopyStream &copies) noexcept;
  /// Start chunks on idle buffers and move each buffer on, the oldest chunk
  /// first so MPI sees chunks in order.
  Status step(const Wire &w, CopyStream &copies) noexcept;
  bool active() const noexcept { return active_; }
  bool done() const noexcept {
    return !active_ || (next_ >= end_ && b_[0].state == Bounce::idle && b_[1].state == Bounce::idle);
  }
  /// Free the buffers and events of a pipeline that is done.
  void release() noexcept;
  /// Give up: a receive's MPI requests are cancelled, a send's are left to
  /// MPI with their buffers (leaked: MPI may still read them); copies are
  /// waited for.
  void abandon(bool recv) noexcept;

 private:
  struct Bounce {
    BufferPtr host;
    uint64_t index = 0, off = 0, len = 0;
    enum { idle, moving, copying } state = idle;  // moving: MPI transfer; copying: CUDA copy
    MPI_Request req = MPI_REQUEST_NULL;
    CopyEvent ev = nullptr;
  };
  bool active_ = false;
  bool send_ = false;    // send: device -> host -> MPI; receive: MPI -> host -> (device or host) memory
  bool device_ = false;  // the caller's memory is device memory
  char *mem_ = nullptr;  // the caller's memory (source or destination)
  uint64_t cap_ = 0;     // receive: bytes of `mem` that may be written
  uint64_t next_ = 0, end_ = 0, chunk_ = 0, next_index_ = 0;
  Bounce b_[2];
};

}  // namespace lf::mpi
