// The ring of one mpi channel: the envelope protocol (wire.hpp). Envelopes
// arrive in send order in a ring of persistent receives kept posted; an
// eager message rides inside its envelope, a large one's payload follows in
// chunks on a tag of its own (a sequence number), received straight into
// the receive once the envelope meets one. Every message can take the ring;
// the endpoint sends small ones, device memory and what the direct stream
// cannot carry here.
#pragma once

#include <mpi.h>

#include <memory>
#include <vector>

#include "transport/mpi/link.hpp"
#include "transport/mpi/wire.hpp"
#include "transport/transport.hpp"

namespace lf::mpi {

class RingStream {
 public:
  /// Envelopes on (comm, base_tag); `has_direct`: the channel has a direct
  /// stream the peer may switch to.
  RingStream(Link &link, MPI_Comm comm, int base_tag, bool has_direct) noexcept;

  /// Post the ring's receives (LF_MPI_EAGER_SLOTS of them).
  Status post() noexcept;
  /// Cancel the ring's receives (the channel closes).
  void cancel_receives() noexcept;

  /// An eager message: copied with its envelope into a send slot.
  void send_eager(SendOp &op, const char *src) noexcept;
  /// A large message: its envelope, and its payload straight from `src`
  /// (staged through host memory for device memory without CUDA-aware MPI).
  void send_large(SendOp &op, const char *src, bool device) noexcept;
  /// The sender's later messages travel on the direct stream.
  Status send_marker() noexcept { return link_.send_marker(kDirect, comm_, base_); }
  void send_bye() noexcept { link_.send_bye(comm_, base_); }

  /// The next message of the ring, if one has arrived: matched, or handed
  /// to the channel as unexpected; `switched` after the peer's kDirect.
  Result<Next> next(Matcher &m) noexcept;

  /// A receive matched an unexpected large message: fetch its payload.
  void start_large(RecvOp &op, const Envelope &e) noexcept;

 private:
  struct Ring {
    std::unique_ptr<char[]> buf;
    MPI_Request req = MPI_REQUEST_NULL;  // persistent
    bool active = false;
  };

  Result<Next> on_envelope(Matcher &m, const char *buf, size_t count) noexcept;
  /// Receive the payload of the large message `e` into `op` (MPI lock held).
  void begin_large_recv(RecvOp &op, const Envelope &e) noexcept;
  /// Break the connection with `e`, for next().
  Result<Next> fault(Error e) noexcept { return std::unexpected(link_.fail(std::move(e)).error()); }

  Link &link_;
  MPI_Comm comm_;
  int base_;  // channel bits; envelopes use it as is
  bool has_direct_;
  uint32_t seq_max_;
  uint32_t next_seq_ = 1;
  size_t slot_size_;  // our eager limit + the envelope
  std::vector<Ring> ring_;
  size_t head_ = 0;
};

}  // namespace lf::mpi
