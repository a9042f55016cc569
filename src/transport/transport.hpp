// The transport interface.
//
// A Transport is one way of moving bytes between two ranks (self, shm, tcp,
// mpi, vulkan-ipc, cuda-ipc, ...). It is created once per context, says what
// it can do (TransportCaps), publishes an address for peers at startup, and
// connects an Endpoint to one peer when a channel opens.
//
// Tag matching is NOT the transport's business: the channel owns the posted-
// receive and unexpected-message queues (both FIFO, which gives MPI's
// non-overtaking rule). A transport only has to report arrived messages to
// the Matcher in the order they were sent, and move data when asked.
//
// Rules every Endpoint follows:
//  1. send(op): start sending; the op stays valid and owned by the caller
//     until the transport sets op.status to something other than
//     LF_IN_PROGRESS. Completion may happen inside send() or in progress().
//  2. progress(m): for each newly arrived message, in order, call
//     m.take_posted(tag); if it returns a RecvOp, place the data into it
//     (complete_copy() handles copy/truncation/buffer receives); otherwise
//     hand an Incoming to m.add_unexpected(). Also complete in-flight sends
//     and receives.
//  3. When the connection breaks (peer died, protocol error), fail every op
//     the endpoint holds with the error and return it from progress(); the
//     channel then fails its posted receives and refuses new operations.
//     Messages already handed to the Matcher (matched, or queued as
//     unexpected) stay deliverable; messages the endpoint had not yet taken
//     from the peer are lost with the connection. A transport with several
//     internal streams (shm's control and data rings, mpi's ring and direct
//     stream) promises no order between an error on one and data on another.
//     An orderly close by the peer is LF_ERR_PEER_GONE, not a protocol error.
//  4. The destructor completes every op still held with LF_ERR_CLOSED and
//     must not block for long (the peer may be gone).
//  5. Nothing on the data path throws; allocate on the slow path only.
//  6. Threads: the channel calls send() and progress() with its mutex held,
//     so they never run concurrently on one endpoint. It calls
//     wait_for_activity() WITHOUT the mutex, from any number of threads,
//     while another thread may be in send() or progress(): that function may
//     only touch what is safe to race (fds, atomics). The endpoint outlives
//     every such call (the channel holds it in a shared_ptr), so a close
//     never frees it under a sleeping waiter. The destructor runs once the
//     channel has let go of the endpoint, without the mutex, on whichever
//     thread drops the last reference (the closer, or a waiter that was
//     asleep on it); nothing else runs on the endpoint by then.
//
// Cancel, deadlines and health are the channel's: a posted receive is
// cancelled by taking it out of the channel's posted queue (under its
// mutex), so a transport never sees a cancelled op; a send is never
// cancelled once send() was called. Transport-level work (a UCX worker, a
// DPDK port) goes in Transport::progress(), and every fd that signals work
// joins the context's one epoll set through event_fd().
//
// Memory registration (ucp_mem_map, DPDK external memory, a verbs MR) goes
// through Transport::register_memory and transport_registration(): a unit
// of memory (pool slab, shared segment, allocation) is registered once per
// transport and keeps the handle until it frees its memory.
//
// Gather send: a SendOp with a header is one message, the header followed by
// the payload, and the transport copies neither into a staging buffer of its
// own (writev, two-source copies into a ring, an iovec datatype). The peer
// sees one message of header_size + size bytes; matching, truncation and
// order are as for any message.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/net.hpp"
#include "core/status.hpp"
#include "memory/buffer.hpp"
#include "transport/world.hpp"

namespace lf {

class World;

/// A send in flight. Owned by the request that started it.
struct SendOp {
  uint64_t tag = 0;
  const void *data = nullptr;
  size_t size = 0;
  /// Gather send: `header_size` bytes at `header` go first, then the payload
  /// (data/size or the buffer). Borrowed like data, for the op's life.
  const void *header = nullptr;
  size_t header_size = 0;
  size_t total() const noexcept { return header_size + size; }
  /// For lf_isend_buffer: the buffer handed over (data/size point into it).
  /// A zero-copy transport keeps it until the peer releases it; others
  /// release it when the copy is done.
  BufferPtr buffer;
  lf_status_t status = LF_IN_PROGRESS;  ///< Set by the transport.
  std::string error;                    ///< Detail when status < 0.
};

/// Copy `len` bytes of `op`'s message (its gather header, then its payload)
/// starting at message offset `off` to `dst`.
inline void copy_message(const SendOp &op, size_t off, void *dst, size_t len) noexcept {
  auto *out = static_cast<char *>(dst);
  if (off < op.header_size) {
    const size_t k = std::min(len, op.header_size - off);
    std::memcpy(out, static_cast<const char *>(op.header) + off, k);
    out += k, len -= k, off = 0;
  } else {
    off -= op.header_size;
  }
  if (len) std::memcpy(out, static_cast<const char *>(op.data) + off, len);
}

/// A receive in flight. Owned by the request that started it.
struct RecvOp {
  uint64_t tag = 0;  ///< Tag to match, or LF_ANY_TAG.
  void *data = nullptr;
  size_t capacity = 0;
  bool want_buffer = false;  ///< lf_irecv_buffer: deliver into `buffer` instead.
  BufferPtr buffer;          ///< Result of a buffer receive.
  lf_status_t status = LF_IN_PROGRESS;
  std::string error;
  size_t bytes = 0;          ///< Bytes placed into data/buffer.
  size_t message_bytes = 0;  ///< Size of the message as sent.
  uint64_t matched_tag = 0;  ///< Tag of the message received.
};

/// Set an op's final status, after every other field of the op: a waiter
/// on another thread (the application while a progress thread completes its
/// ops) reads the status with acquire (Channel::wait) and then the rest.
inline void complete_status(lf_status_t &status, lf_status_t value) noexcept {
  __atomic_store_n(&status, value, __ATOMIC_RELEASE);
}

/// Place an eagerly available message into `op`: copies min(n, capacity)
/// bytes (LF_ERR_TRUNCATED if n > capacity) or, for a buffer receive,
/// allocates a host buffer of n bytes and copies into it. Completes the op.
void complete_copy(RecvOp &op, uint64_t tag, const void *src, size_t n) noexcept;

/// Complete `op` once min(n, capacity) bytes of an n-byte message are in
/// place: sets the byte count, and LF_ERR_TRUNCATED if n > capacity.
void complete_length(RecvOp &op, size_t n) noexcept;

/// Complete `op` with an error (status < 0) and its detail.
void fail_op(SendOp &op, const Error &e) noexcept;
void fail_op(RecvOp &op, const Error &e) noexcept;

/// A message that arrived before a matching receive was posted.
class Incoming {
 public:
  Incoming(uint64_t tag, size_t size) noexcept : tag_(tag), size_(size) {}
  virtual ~Incoming() = default;  ///< Discarding it releases what it holds.
  uint64_t tag() const noexcept { return tag_; }
  size_t size() const noexcept { return size_; }
  /// Place the message into `op`. Either completes the op now or leaves it
  /// LF_IN_PROGRESS and completes it from the endpoint's progress().
  virtual void deliver(RecvOp &op) noexcept = 0;

 private:
  uint64_t tag_;
  size_t size_;
};

/// An Incoming whose payload is already a copy in host memory (or a buffer
/// that was handed over whole). Transports use it for unexpected eager data.
class EagerIncoming final : public Incoming {
 public:
  EagerIncoming(uint64_t tag, const void *data, size_t n);
  /// A copy of `op`'s whole message (gather header and payload).
  explicit EagerIncoming(const SendOp &op);
  EagerIncoming(uint64_t tag, BufferPtr whole);
  void deliver(RecvOp &op) noexcept override;

 private:
  std::unique_ptr<char[]> copy_;
  BufferPtr whole_;
};

/// The channel's matching queues, as seen by a transport.
class Matcher {
 public:
  virtual ~Matcher() = default;
  /// Remove and return the first posted receive matching `tag`, or nullptr.
  virtual RecvOp *take_posted(uint64_t tag) noexcept = 0;
  /// Queue a message for a receive that is posted later.
  virtual void add_unexpected(std::unique_ptr<Incoming> msg) noexcept = 0;
  /// Whether any receive is posted. A transport may leave a message that
  /// matches nothing where it is (in its ring) for a while when nothing is
  /// posted at all, instead of copying it out as unexpected: no receive can
  /// be waiting for a message behind it. The default answers "maybe".
  virtual bool has_posted() const noexcept { return true; }
};

/// A connection to one peer.
class Endpoint {
 public:
  virtual ~Endpoint() = default;
  virtual void send(SendOp &op) noexcept = 0;
  virtual Status progress(Matcher &m) noexcept = 0;
  /// Block for at most `timeout_ms` until progress() may have work (a futex
  /// on a doorbell, poll() on a socket). Spurious returns are fine.
  virtual void wait_for_activity(int timeout_ms) noexcept;
  /// An fd that becomes readable when progress() may have work, or -1. It
  /// joins the context's one epoll set (level-triggered, EPOLLIN), so that a
  /// progress thread sleeps on one fd for every channel. It must stay open
  /// and the same for the endpoint's life. An endpoint whose work all comes
  /// through its transport's fd (a UCX endpoint on the transport's worker)
  /// returns kTransportFd.
  virtual int event_fd() const noexcept { return -1; }
  static constexpr int kTransportFd = -2;
};

/// What a transport can do.
struct TransportCaps {
  bool self = false;          ///< Serves a rank talking to itself.
  bool local = false;         ///< Serves LOCAL scope.
  bool remote = false;        ///< Serves REMOTE scope.
  uint32_t memory_kinds = 0;  ///< Bit (1 << MemoryKind) for each kind it moves natively.
  bool zero_copy = false;     ///< Delivers shared buffers by descriptor.
};

/// What selection asks a transport: the cost of one message of `bytes` of
/// `kind` memory to `peer`, which sits at `scope`. Only data both ranks have
/// goes in, so both reach the same answer.
struct CostQuery {
  int peer = 0;
  Scope scope = Scope::remote;
  MemoryKind kind = MemoryKind::host;
  size_t bytes = 0;
};

/// A transport's estimate for a CostQuery: a fixed latency plus bytes over a
/// bandwidth, as UCX's estimates are. Coarse on purpose: the figures order
/// the transports (docs/transports.md lists them with their source), they do
/// not predict a run.
struct Cost {
  double latency_us = 0;
  double bandwidth_gbs = 1;  ///< GB/s (1e9 bytes per second).
  double time_us(size_t bytes) const noexcept {
    return latency_us + static_cast<double>(bytes) / (bandwidth_gbs * 1e3);
  }
};

/// The cost of moving a kind the transport does not move natively: staged
/// through host memory on each side.
Cost staged(Cost c) noexcept;

constexpr uint32_t kind_bit(MemoryKind k) noexcept { return 1u << static_cast<int>(k); }
constexpr uint32_t kHostKinds = kind_bit(MemoryKind::host) | kind_bit(MemoryKind::host_numa) |
                                kind_bit(MemoryKind::host_hugepage) | kind_bit(MemoryKind::host_pinned) |
                                kind_bit(MemoryKind::host_shared);

class Transport {
 public:
  Transport() noexcept;
  virtual ~Transport() = default;
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;
  /// Unique within the process for its life (unlike the address, which a
  /// later transport may reuse): the owner id of its memory registrations.
  uint64_t instance_id() const noexcept { return instance_id_; }
  virtual const char *name() const noexcept = 0;
  virtual TransportCaps caps() const noexcept = 0;
  /// The estimated cost of a message, or nullopt when this transport cannot
  /// serve the query (wrong scope). Selection picks the cheapest transport
  /// that is allowed, started on both ranks and usable for the peer.
  virtual std::optional<Cost> estimate(const CostQuery &q) const noexcept = 0;
  /// Why the transport cannot run in this process at all (no MPI launcher,
  /// no Vulkan device, no CUDA driver...), or nullopt. Shown by lf-info.
  virtual std::optional<std::string> unavailable_reason() const { return std::nullopt; }
  /// What the transport found here and would use, one "what: detail" line
  /// each (UCX's lanes, DPDK's ports), printed by lf-info under its row.
  virtual std::vector<std::string> details() const { return {}; }
  /// Per-context setup before the address exchange (listening sockets...).
  /// Returns the address peers need to reach this rank ("" if none).
  virtual Result<std::string> start(World &world) = 0;
  /// Why this transport cannot serve `peer` although caps fit (e.g.
  /// different Vulkan devices), or nullopt. Must give the same answer on
  /// both sides (use only data both ranks have: locations, addresses).
  virtual std::optional<std::string> unusable_for(World &world, int peer) const {
    (void)world, (void)peer;
    return std::nullopt;
  }
  /// A short note on how this transport would reach `peer` (UCX: the lanes
  /// it shares with it), shown after its name in a channel's reason; "" for
  /// none. Same answer on both ranks (published addresses only).
  virtual std::string describe(World &world, int peer) const {
    (void)world, (void)peer;
    return {};
  }
  /// Connect to `peer`; both ranks call it. While waiting, serve other
  /// peers' incoming connection attempts (and keep them for their own
  /// connect call), so that ranks opening channels in different orders
  /// never deadlock.
  virtual Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline deadline) = 0;
  /// Work that belongs to the transport rather than to one endpoint (a UCX
  /// worker, a DPDK port): called once per sweep of the context's channels,
  /// from any thread, possibly concurrently with endpoint calls; the
  /// transport serialises what it needs. An error is logged, not fatal.
  virtual Status progress() noexcept { return {}; }
  /// As Endpoint::event_fd, for the transport's own progress. A transport
  /// whose progress() has work must return one, or a sleeping progress
  /// thread would not wake for it; -1 means progress() has nothing to do.
  virtual int event_fd() const noexcept { return -1; }
  /// Called before a thread sleeps on event_fd(): re-arm the fd (UCX's
  /// ucp_worker_arm) and return false when work is already pending, in which
  /// case the sleep is skipped. Thread-safety as for progress().
  virtual bool arm() noexcept { return true; }
  /// Register [base, base + length) of `kind` memory for zero-copy use by
  /// this transport. The handle's deleter deregisters; an empty handle means
  /// this transport needs no registration (the default). Called at most once
  /// per unit of memory (transport_registration caches it), never on the
  /// data path of a hit.
  virtual Result<RegistrationHandle> register_memory(void *base, size_t length, MemoryKind kind) noexcept {
    (void)base, (void)length, (void)kind;
    return RegistrationHandle{};
  }

 private:
  uint64_t instance_id_;
};

/// A buffer's registration with `t`: the handle of the unit it lies in
/// (Buffer::registered_range), registered on first use and kept with the
/// memory. `unit_base` (optional) receives the unit's base address, from
/// which the transport computes the buffer's offset. Memory with no
/// registrable range gives an empty handle.
Result<RegistrationHandle> transport_registration(Transport &t, const Buffer &b, void **unit_base = nullptr);

/// Every transport built into this library, in registry order (the order
/// of src/transport/CMakeLists.txt; it breaks ties between equal costs).
std::vector<std::unique_ptr<Transport>> make_transports();

}  // namespace lf
