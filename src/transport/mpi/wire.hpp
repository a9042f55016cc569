// The mpi transport's wire protocol: the envelope, its kinds and the limits
// both ranks rely on, and the few helpers every file of the transport uses.
//
// It talks over the MPI bootstrap's own duplicate of MPI_COMM_WORLD, so its
// traffic never matches the application's receives. Matching of lavaflow's
// 64-bit tags is the channel's business (transport.hpp); MPI only has to
// deliver each channel's messages in order, which MPI's non-overtaking rule
// gives for messages between one pair of ranks on one communicator and tag.
//
// Two streams per channel. The k-th channel opened between two ranks (both
// ranks open them in the same order) has
//  - the ring (ring.hpp): tags k << seq_bits | s on that communicator, where
//      s = 0                 envelopes, in send order, into a ring of receives
//                            kept posted (LF_MPI_EAGER_SLOTS);
//      s = 1 .. 2^seq_bits-1 the payload of one large message, in chunks of
//                            at most LF_MPI_CHUNK bytes.
//    seq_bits is 20 when MPI_TAG_UB allows (Open MPI: 2^31 - 1), leaving 11
//    bits, i.e. 2048 channels per pair of ranks;
//  - for k < LF_MPI_STREAMS, a direct stream (direct.hpp): a duplicate
//    communicator of its own (made at start, shared by all peers since a
//    probe names its source) where a message is one MPI message with MPI
//    tag = lavaflow tag + 1, and tag 0 carries stream markers.
//
// Protocols.
//  - eager (size <= LF_MPI_EAGER_LIMIT, host memory), ring: one MPI message
//    holds the 32-byte envelope and the payload; the payload is copied into a
//    send slot and out of the ring slot (two small memcpys instead of a
//    second MPI message).
//  - large, ring: the envelope (tag, size, sequence number s, chunk size)
//    goes to the ring and the payload chunks are sent at the same time
//    straight from the caller's memory with tag s. When the envelope meets a
//    posted receive, the chunks are received straight into the receive's
//    memory; until then they stay inside MPI (rendezvous), so an unexpected
//    large message costs no memory here and later messages keep flowing.
//  - direct (host memory, up to LF_MPI_CHUNK bytes, lavaflow tags below
//    MPI_TAG_UB): the receiver finds the message with MPI_Improbe, which
//    tells tag and size without moving the data, and MPI_Imrecv moves it
//    straight into the receive. No envelope and no copy: a 64 KiB message
//    costs about what it costs in raw MPI. But a poll by probe costs ~0.13 us
//    more than a test of a posted receive, so small messages do better in
//    the ring.
//  - truncation: what does not fit the receive goes through a bounce buffer
//    (ring: the chunks beyond the capacity; direct: the whole message), and
//    only the part that fits is kept. MPI itself is never handed a receive
//    smaller than its message: Open MPI 4.1's shared-memory rendezvous writes
//    the whole message regardless (a 4000-byte MPI_Irecv of a 64 KiB message
//    writes 64 KiB).
//  - device memory (device.hpp, pipeline.hpp): with CUDA-aware MPI
//    (MPIX_Query_cuda_support() == 1, or LF_MPI_CUDA=on) device pointers go
//    to MPI as they are. Otherwise chunks are staged through two pinned host
//    buffers from the memory layer, double-buffered: the copy of one chunk
//    overlaps the transfer of the other. Device sends always take the ring;
//    a direct message bound for device memory lands in a pinned bounce
//    buffer first.
//
// Stream switches. Which stream carries a message is the sender's choice,
// made per message (endpoint.cpp); the receiver polls only one of them at a
// time (polling both would cost every small message the probe). The sender
// switches with a marker sent as the last message on the stream it leaves
// (kDirect in the ring, kRing on the direct stream), and the receiver moves
// to the other stream only once it has taken the marker: messages are taken
// in the order they were sent. The sender goes direct for a large message
// that qualifies, and back to the ring with the kSmallRun-th small message in
// a row or with a message that does not qualify. So small ping-pong stays in
// the ring, and streams of large messages, small ones among them, stay
// direct.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

#include "transport/transport.hpp"

namespace lf::mpi {

constexpr size_t kEnvSize = 32;
constexpr uint64_t kMaxChunk = uint64_t{1} << 30;  // MPI counts are ints

// kDirect (ring) and kRing (direct stream): the sender's later messages
// travel on the other stream.
enum : uint32_t { kEager = 1, kLarge = 2, kBye = 3, kDirect = 4, kRing = 5 };

/// A direct sender's kSmallRun-th small message in a row returns to the ring
/// (small ones between large ones stay direct: no marker pair per message).
constexpr int kSmallRun = 8;

struct Envelope {
  uint32_t kind = kEager;
  uint32_t seq = 0;    // large: payload sequence number (its MPI tag's low bits)
  uint64_t tag = 0;    // lavaflow tag
  uint64_t size = 0;   // message bytes
  uint64_t chunk = 0;  // large: bytes per MPI message of the payload
};
static_assert(sizeof(Envelope) == kEnvSize);

inline void complete(SendOp &op, lf_status_t st) noexcept {
  op.buffer.reset();
  __atomic_store_n(&op.status, st, __ATOMIC_RELEASE);
}
inline void complete(RecvOp &op, lf_status_t st) noexcept { __atomic_store_n(&op.status, st, __ATOMIC_RELEASE); }

inline void set_truncated(RecvOp &op, uint64_t size) noexcept {
  try {
    op.error = "message of " + std::to_string(size) + " bytes truncated to the receive capacity of " +
               std::to_string(op.capacity);
  } catch (...) {
  }
}

/// Cancel a receive and wait for it (a persistent one stays allocated).
inline void cancel(MPI_Request &req) noexcept {
  if (req == MPI_REQUEST_NULL) return;
  MPI_Cancel(&req);
  MPI_Wait(&req, MPI_STATUS_IGNORE);
}

/// What a stream answers when asked for its next message: none has arrived,
/// one was taken, or the peer's marker moved it to the other stream.
enum class Next { idle, taken, switched };

}  // namespace lf::mpi
