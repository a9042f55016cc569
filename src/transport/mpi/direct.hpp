// The direct stream of one mpi channel: its own communicator, where a
// message is one MPI message with MPI tag = lavaflow tag + 1, sent straight
// from the caller's memory and found by the receiver with MPI_Improbe, which
// gives tag and size and leaves the data in MPI until MPI_Imrecv moves it
// straight into the receive. Tag 0 carries the stream markers (kRing, kBye).
// Only the first LF_MPI_STREAMS channels of a pair of ranks have one; the
// endpoint sends large host messages here (wire.hpp, "Stream switches").
#pragma once

#include <mpi.h>

#include "transport/mpi/link.hpp"
#include "transport/mpi/wire.hpp"
#include "transport/transport.hpp"

namespace lf::mpi {

class DirectStream {
 public:
  /// The stream on `comm`; MPI_COMM_NULL: the channel has none.
  DirectStream(Link &link, MPI_Comm comm) noexcept : link_(link), comm_(comm) {}

  bool open() const noexcept { return comm_ != MPI_COMM_NULL; }
  /// One MPI message straight from the caller's memory.
  void send(SendOp &op, const char *src) noexcept;
  /// The sender's later messages travel in the ring.
  Status send_marker() noexcept { return link_.send_marker(kRing, comm_, 0); }
  void send_bye() noexcept { link_.send_bye(comm_, 0); }

  /// The next message of the stream, if one has arrived: matched, or handed
  /// to the channel as unexpected; `switched` after the peer's kRing.
  Result<Next> next(Matcher &m) noexcept;

  /// A receive matched a direct message that arrived before it.
  void start(RecvOp &op, MPI_Message msg, uint64_t tag, size_t n) noexcept;

 private:
  /// Receive the direct message `msg` (n bytes, lavaflow tag `tag`) into
  /// `op` (MPI lock held).
  void begin_recv(RecvOp &op, MPI_Message msg, uint64_t tag, size_t n) noexcept;
  /// Take a probed message whose receive failed (no memory, or the channel
  /// broke), so the stream goes on (MPI lock held).
  void discard(MPI_Message msg, size_t n) noexcept;

  Link &link_;
  MPI_Comm comm_;
};

}  // namespace lf::mpi
