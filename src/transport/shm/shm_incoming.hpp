// What a shm receiver hands the channel: unexpected messages (Incoming) in
// their four forms -- copied out of the ring (inline, eager, a pipelined
// message gathered while it streams), read from the sender on match (CMA),
// or parked at the sender and streamed again on match -- plus the view of a
// zero-copy buffer, and the helpers that place bytes into a receive.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>

#include "transport/shm/shm_budget.hpp"
#include "transport/shm/shm_control.hpp"
#include "transport/transport.hpp"

namespace lf::shm {

/// Complete a receive whose bytes were placed piecewise (pipelined or CMA):
/// `placed` bytes of a `total`-byte message went into a destination of `cap`.
void finish_recv(RecvOp &op, uint64_t tag, uint64_t total, uint64_t cap) noexcept;

/// Where a receive puts its bytes; allocates the buffer of a buffer receive.
/// False when the op failed (no memory for the buffer).
bool prepare_destination(RecvOp &op, uint64_t total, char *&dst, uint64_t &cap) noexcept;

/// An unexpected eager message, copied out of the ring into a recycled block.
class CopyIncoming final : public Incoming {
 public:
  CopyIncoming(uint64_t tag, const void *data, size_t n, std::shared_ptr<Budget> b);
  ~CopyIncoming() override;
  void deliver(RecvOp &op) noexcept override { complete_copy(op, tag(), copy_, size()); }

 private:
  int64_t cost() const noexcept { return static_cast<int64_t>(size()) + kIncomingOverhead; }
  char *copy_ = nullptr;
  std::shared_ptr<Budget> budget_;
};

/// An unexpected message of at most 40 bytes: one allocation, payload inside.
class InlineIncoming final : public Incoming {
 public:
  InlineIncoming(uint64_t tag, const void *data, size_t n, std::shared_ptr<Budget> b);
  ~InlineIncoming() override { budget_->uncharge(kIncomingOverhead); }
  void deliver(RecvOp &op) noexcept override { complete_copy(op, tag(), data_, size()); }

 private:
  unsigned char data_[kInlineMax];
  std::shared_ptr<Budget> budget_;
};

/// A pipelined message (at most a fifo's worth) that arrived before its
/// receive: its chunks are gathered on the heap until a receive claims it; a
/// receive that claims it mid-stream takes the prefix and then the rest
/// straight from the fifo.
struct PipeState {
  PipeState() = default;
  PipeState(const PipeState &) = delete;
  PipeState &operator=(const PipeState &) = delete;
  ~PipeState() { release_heap(); }
  void release_heap() noexcept {
    if (heap) budget->blocks.put(std::exchange(heap, nullptr), total);
  }
  void uncharge() noexcept {
    if (charged) budget->uncharge(std::exchange(charged, 0));
  }
  uint64_t tag = 0, total = 0, received = 0;
  char *heap = nullptr;  ///< from budget->blocks
  RecvOp *op = nullptr;  ///< claimed mid-stream
  char *dst = nullptr;
  uint64_t cap = 0;
  bool complete = false;
  bool abandoned = false;  ///< nobody will ever receive it (closing): swallow the rest
  std::shared_ptr<Budget> budget;
  int64_t charged = 0;
};

class PipeIncoming final : public Incoming {
 public:
  explicit PipeIncoming(std::shared_ptr<PipeState> st) : Incoming(st->tag, st->total), st_(std::move(st)) {}
  ~PipeIncoming() override;
  void deliver(RecvOp &op) noexcept override;

 private:
  std::shared_ptr<PipeState> st_;
};

/// What a CMA read needs after the endpoint may be gone.
struct CmaPeer {
  pid_t pid;
  std::shared_ptr<ControlTx> ctl;
};

/// Read a CMA message into `op` and ack it. The sender's buffer stays valid
/// until the ack: its send completes only then.
void cma_deliver(CmaPeer &peer, RecvOp &op, uint64_t tag, uint64_t size, uint64_t addr, uint64_t cookie) noexcept;

class CmaIncoming final : public Incoming {
 public:
  CmaIncoming(uint64_t tag, uint64_t size, uint64_t addr, uint64_t cookie, std::shared_ptr<CmaPeer> peer)
      : Incoming(tag, size), addr_(addr), cookie_(cookie), peer_(std::move(peer)) {}
  void deliver(RecvOp &op) noexcept override { cma_deliver(*peer_, op, tag(), size(), addr_, cookie_); }

 private:
  uint64_t addr_, cookie_;
  std::shared_ptr<CmaPeer> peer_;
};

/// A large unexpected message left at its sender (Kind::park). Its name on
/// both sides is the ring position of its first slot.
struct Parked {
  uint64_t pos = 0, tag = 0, total = 0;
  RecvOp *op = nullptr;  ///< the receive that took it, waiting for the stream
  char *dst = nullptr;
  uint64_t cap = 0;
  bool discard = false;                ///< taken, but there is nowhere to put it
  std::atomic<bool> abandoned{false};  ///< dropped untaken (the channel closed)
};

/// What a parked message needs after the endpoint may be gone.
struct ParkLink {
  ParkLink(std::shared_ptr<ControlTx> c, std::shared_ptr<Budget> b) : ctl(std::move(c)), budget(std::move(b)) {}
  std::shared_ptr<ControlTx> ctl;
  std::shared_ptr<Budget> budget;
  std::atomic<bool> broken{false};  ///< the connection failed: nothing more comes from the sender
};

/// Holds no payload: taking it asks the sender for the stream (Kind::resume).
class ParkedIncoming final : public Incoming {
 public:
  ParkedIncoming(std::shared_ptr<Parked> p, std::shared_ptr<ParkLink> link);
  ~ParkedIncoming() override;
  void deliver(RecvOp &op) noexcept override;

 private:
  std::shared_ptr<Parked> p_;
  std::shared_ptr<ParkLink> link_;
  bool taken_ = false;
};

/// A received zero-copy message: a view of the sender's shared-pool buffer.
/// The mapping stays alive through `segment_` even after the channel closes;
/// destroying the view tells the sender to return its buffer to the pool.
class ShmView final : public Buffer {
 public:
  ShmView(std::shared_ptr<SharedSegment> seg, uint64_t offset, uint64_t length, std::shared_ptr<ControlTx> tx,
          uint64_t cookie);
  ~ShmView() override { tx_->push(Kind::release, cookie_, 0); }
  const SharedRef *shared_ref() const noexcept override { return &ref_; }

 private:
  std::shared_ptr<SharedSegment> segment_;
  std::shared_ptr<ControlTx> tx_;
  uint64_t cookie_;
  SharedRef ref_;
};

}  // namespace lf::shm
