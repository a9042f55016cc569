// What the two streams of one mpi channel share (ring.hpp, direct.hpp): the
// transport and the peer, the sends MPI has not finished, the large
// transfers in flight, and whether the connection broke. Breaking it fails
// everything in flight, once, whichever stream found the fault.
#pragma once

#include <mpi.h>

#include <memory>
#include <optional>

#include "transport/mpi/send_queue.hpp"
#include "transport/mpi/transfers.hpp"
#include "transport/mpi/wire.hpp"
#include "transport/transport.hpp"

namespace lf::mpi {

class MpiTransport;

/// MPI_Isend of bytes [off, off + len) of `op`'s message (gather header,
/// then payload), from the caller's memory: a range that spans both pieces
/// goes as one hindexed datatype, so neither is copied.
int isend_message(const SendOp &op, uint64_t off, uint64_t len, int peer, int tag, MPI_Comm comm,
                  MPI_Request *req) noexcept;

class Link {
 public:
  /// `send_eager`: the largest eager payload this rank sends (send slots).
  Link(MpiTransport &t, int peer, uint64_t send_eager) noexcept;

  MpiTransport &transport() const noexcept { return t_; }
  int peer() const noexcept { return peer_; }
  SendQueue &sends() noexcept { return sends_; }
  Transfers &transfers() noexcept { return transfers_; }

  const std::optional<Error> &broken() const noexcept { return broken_; }
  /// The connection is lost: remember the first error, fail what is in
  /// flight, return `e`.
  Status fail(Error e) noexcept;
  /// The same, for a stream's next(): returns the first error.
  Result<Next> lost(Error e) noexcept;
  /// Give up on everything in flight (the channel closes, or broke).
  void drop_in_flight(const Error &e) noexcept;

  /// Copy an envelope (eager: with its payload) into a send slot and start
  /// sending it to `peer` on (comm, tag). When MPI refuses, the slot is free
  /// again and the connection broken: the peer's stream order can no longer
  /// be trusted.
  Result<std::pair<int, MPI_Request>> post_envelope(const Envelope &e, const char *payload, size_t n, MPI_Comm comm,
                                                    int tag) noexcept;
  /// The same, with `op`'s whole message (gather header, then payload) as
  /// the payload.
  Result<std::pair<int, MPI_Request>> post_envelope(const Envelope &e, const SendOp &op, MPI_Comm comm,
                                                    int tag) noexcept;
  /// SendQueue::keep(), breaking the connection when it fails.
  void keep_send(SendOp *op, MPI_Request req, int slot) noexcept {
    if (auto st = sends_.keep(op, req, slot); !st) (void)fail(st.error());
  }
  /// Tell the peer that this rank's later messages travel on the other
  /// stream: a marker of `kind` on (comm, tag), the stream it leaves.
  Status send_marker(uint32_t kind, MPI_Comm comm, int tag) noexcept;
  /// Tell the peer this end closes, on (comm, tag), the stream it reads now.
  /// The message outlives the endpoint (the transport's graveyard).
  void send_bye(MPI_Comm comm, int tag) noexcept;

  /// Complete or keep a receive's transfer (Transfers::run_recv), breaking
  /// the connection when it fails.
  void run_recv(std::unique_ptr<Transfer> x, Status st) noexcept;

  bool is_device(const void *p) const noexcept;
  /// Where a receive's message goes: the caller's memory, or for a buffer
  /// receive a new host buffer of the message's size.
  struct Dest {
    char *mem;
    uint64_t cap;
    bool device;
  };
  Result<Dest> recv_dest(RecvOp &op, uint64_t size) noexcept;

 private:
  MpiTransport &t_;
  int peer_;
  SendQueue sends_;
  Transfers transfers_;
  std::optional<Error> broken_;
};

}  // namespace lf::mpi
