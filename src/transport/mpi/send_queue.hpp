// The send side of one mpi channel that both streams share: send slots
// (envelopes, eager payloads and stream markers are copied into one, which
// MPI reads until the send is done) and the sends MPI has not finished,
// tested together with one MPI_Testsome.
#pragma once

#include <mpi.h>

#include <memory>
#include <vector>

#include "transport/transport.hpp"

namespace lf::mpi {

class MpiTransport;

class SendQueue {
 public:
  /// Slots of `slot_size` bytes; `t` keeps what outlives the channel.
  SendQueue(MpiTransport &t, size_t slot_size) noexcept : t_(t), slot_size_(slot_size) {}

  Result<int> take_slot() noexcept;
  char *slot(int s) noexcept { return send_slots_[static_cast<size_t>(s)].get(); }
  /// Never throws: take_slot() reserved the room.
  void free_slot(int s) noexcept { free_slots_.push_back(s); }
  /// Hand slot `s` to the transport until `req`, which reads it, is done.
  void bury_slot(int s, MPI_Request req) noexcept;

  /// A send just started, of `op` (null for a marker) from slot `slot` (-1:
  /// the caller's memory): complete it if MPI already has (small messages),
  /// or keep it for test(). An error (the op failed, the slot is free) means
  /// the stream is broken.
  Status keep(SendOp *op, MPI_Request req, int slot) noexcept;
  /// Complete the sends MPI has finished.
  Status test() noexcept { return out_.empty() ? Status{} : test_some(); }
  bool empty() const noexcept { return out_.empty(); }
  /// Give up on the sends in flight: fail their ops; MPI finishes them alone
  /// (a slot is kept until it has). A send MPI has finished meanwhile
  /// completes as it would have: one the peer received before it closed, say
  /// (its acknowledgement can arrive in the same progress call as the bye,
  /// after the sends were last tested).
  void drop(const Error &e) noexcept;

 private:
  /// A send MPI has not finished (its request is in out_reqs_ at the same
  /// index): an eager message or a stream marker (op null) from send slot
  /// `slot`, or a direct message from the caller's memory (slot -1).
  struct Out {
    SendOp *op;
    int slot;
  };

  Status test_some() noexcept;

  MpiTransport &t_;
  size_t slot_size_;
  std::vector<std::unique_ptr<char[]>> send_slots_;
  std::vector<int> free_slots_;
  std::vector<Out> out_;
  std::vector<MPI_Request> out_reqs_;
  std::vector<int> out_done_;
};

}  // namespace lf::mpi
