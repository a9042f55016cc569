// Data path of the shared-memory transport. See shm_protocol.hpp for the
// segment layout and docs/performance.md (Layer 2) for the measurements
// behind the protocol choices:
//
//   size <= 40 B            inline in one ring slot (one cache line)
//   size <= eager limit     one piece in the fifo, copied in and out
//   CMA, when enabled       descriptor; the receiver process_vm_readv()s the
//                           sender's buffer after the match and acks
//   larger                  pipelined through the fifo in chunks: the sender
//                           copies chunk i+1 while the receiver copies chunk i
//   shared-pool buffers     descriptor only (zero copy); the receiver's view
//                           sends a release when freed
//
// Credits: a sender uses a slot and fifo bytes only when the consumer has
// published that it is done with them, so a slow receiver stops the sender
// (its operations stay LF_IN_PROGRESS, queued without a copy). Unexpected
// messages are copied out of the ring so it keeps flowing, up to
// LF_SHM_UNEXPECTED_MAX; beyond that the receiver stops draining the ring and
// the backpressure reaches the sender.
#include "transport/shm/shm_endpoint.hpp"

#include <fcntl.h>
#include <immintrin.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/config.hpp"
#include "core/log.hpp"
#include "memory/allocator.hpp"
#include "memory/device_copy.hpp"
#include "transport/gpu/gpu_ipc.hpp"
#include "transport/shm/shm_protocol.hpp"

namespace lf::shm {

namespace {

// Shared (not private) futexes: the word lives in a MAP_SHARED memfd mapping
// that the peer process waits on or wakes.
void futex_wait(std::atomic<uint32_t> *word, uint32_t expected, long timeout_us) noexcept {
  timespec ts{timeout_us / 1000000, (timeout_us % 1000000) * 1000L};
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake(std::atomic<uint32_t> *word) noexcept {
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

/// Wake the consumer of `d` if it said it sleeps. Callers publish, issue a
/// seq_cst fence, then call this; the sleeper raises `sleeping` (seq_cst)
/// and re-checks its rings before FUTEX_WAIT, so one of the two sees the
/// other. The credit path (wake_blocked_producer) checks its flag without a
/// fence on the hot path, so a sleeper's first sleep after raising
/// `sleeping` is short (kFirstSleepUs) and `sleeping` stays raised across
/// further sleeps until progress() finds work.
void ring_bell(DirControl *d) noexcept {
  if (d->sleeping.load(std::memory_order_relaxed)) {
    d->bell.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(&d->bell);
  }
}

/// First futex sleep after the consumer raised `sleeping` (see ring_bell).
constexpr long kFirstSleepUs = 50;

inline void copy_slot(SlotImage &out, const Slot &in) noexcept {
  std::memcpy(static_cast<void *>(&out), static_cast<const void *>(&in), sizeof out);  // the first 64 bytes
}

inline void write_body_header(Slot &s, Kind k, uint64_t tag, uint64_t size) noexcept {
  s.kind = static_cast<uint8_t>(k);
  s.flags = 0;
  s.reserved = 0;
  s.tag = tag;
  s.size = size;
}

void set_error(RecvOp &op, const std::string &msg) noexcept {
  try {
    op.error = msg;
  } catch (...) {
  }
}

/// Complete a receive whose bytes were placed piecewise (pipelined or CMA):
/// `placed` bytes of a `total`-byte message went into a destination of `cap`.
void finish_recv(RecvOp &op, uint64_t tag, uint64_t total, uint64_t cap) noexcept {
  op.matched_tag = tag;
  op.message_bytes = total;
  op.bytes = std::min(total, cap);
  if (total > cap) {
    set_error(op, "message of " + std::to_string(total) + " bytes truncated to the receive capacity of " +
                      std::to_string(cap));
    complete_status(op.status, LF_ERR_TRUNCATED);
    return;
  }
  complete_status(op.status, LF_OK);
}

/// Where a receive puts its bytes; allocates the buffer of a buffer receive.
bool prepare_destination(RecvOp &op, uint64_t total, char *&dst, uint64_t &cap) noexcept {
  if (op.want_buffer) {
    // Only large messages (total > 0) are placed piecewise.
    auto b = allocate(total, MemoryKind::host);
    if (!b) return fail_op(op, b.error()), false;
    op.buffer = std::move(*b);
    dst = static_cast<char *>(op.buffer->data());
    cap = total;
    return true;
  }
  dst = static_cast<char *>(op.data);
  cap = op.capacity;
  return true;
}

/// Heap blocks for unexpected copies, recycled: blocks of tens of KiB that
/// come and go with every unexpected message are otherwise handed back to
/// the kernel by malloc and page-fault anew each time (measured: most of the
/// receiver's time in a windowed 8 KiB stream).
class BlockCache {
 public:
  static constexpr int kMinShift = 6, kMaxShift = 20;  // classes of 64 B .. 1 MiB
  explicit BlockCache(size_t limit) : limit_(limit) {}
  ~BlockCache() {
    for (auto &l : free_)
      for (char *p : l) ::operator delete(p);
  }
  /// A block of at least n bytes; throws std::bad_alloc.
  char *get(size_t n) {
    const int c = shift(n);
    if (c <= kMaxShift) {
      std::lock_guard g(mu_);
      auto &l = free_[c - kMinShift];
      if (!l.empty()) {
        char *p = l.back();
        l.pop_back();
        cached_ -= size_t{1} << c;
        return p;
      }
    }
    return static_cast<char *>(::operator new(c <= kMaxShift ? size_t{1} << c : n));
  }
  void put(char *p, size_t n) noexcept {
    if (!p) return;
    const int c = shift(n);
    if (c <= kMaxShift) {
      std::lock_guard g(mu_);
      if (cached_ + (size_t{1} << c) <= limit_) {
        try {
          free_[c - kMinShift].push_back(p);
          cached_ += size_t{1} << c;
          return;
        } catch (const std::bad_alloc &) {
        }
      }
    }
    ::operator delete(p);
  }

 private:
  static int shift(size_t n) noexcept { return n <= 64 ? kMinShift : static_cast<int>(std::bit_width(n - 1)); }
  std::mutex mu_;
  std::vector<char *> free_[kMaxShift - kMinShift + 1];
  size_t cached_ = 0, limit_;
};

/// Bytes held by unexpected messages of one endpoint, and their heap blocks.
/// Incoming objects may outlive the endpoint (the channel owns them), hence
/// the shared block.
struct Budget {
  explicit Budget(int64_t m) : max(m), blocks(std::min<size_t>(static_cast<size_t>(m), 8u << 20)) {}
  std::atomic<int64_t> used{0};
  int64_t max = 0;
  BlockCache blocks;
  void charge(int64_t n) noexcept { used.fetch_add(n, std::memory_order_relaxed); }
  void uncharge(int64_t n) noexcept { used.fetch_sub(n, std::memory_order_relaxed); }
};
// What a queued message costs beyond its payload (object, allocation).
constexpr int64_t kIncomingOverhead = 64;

/// Producer side of the control ring (acks, releases). Shared with received
/// zero-copy views, which may be freed on any thread and after the endpoint
/// is gone, hence the mutex and the `open` flag.
class ControlTx final : public gpu_ipc::ReleaseSink {
 public:
  ControlTx(Slot *ring, uint32_t count, DirControl *peer_dir)
      : ring_(ring), mask_(count - 1), count_(count), dir_(peer_dir) {}

  /// A received device view was freed (gpu_ipc::View).
  void release(uint64_t cookie) noexcept override { push(Kind::release, cookie, 0); }

  void push(Kind k, uint64_t cookie, int64_t status) noexcept {
    std::lock_guard g(mu_);
    if (!open_) return;  // the connection is gone: nobody to tell
    if (pending_.empty() && try_push_locked(k, cookie, status)) return wake_locked();
    try {
      pending_.push_back({k, cookie, status});
      has_pending_.store(true, std::memory_order_relaxed);
    } catch (const std::bad_alloc &) {
      // Dropping an ack would hang the peer's send; a release only delays a
      // pool return. Both are logged; neither can be recovered here.
      LF_LOG(error, "shm: no memory to queue a control message; the peer may wait for it");
    }
  }

  /// Move queued control messages into the ring (progress calls it).
  void flush() noexcept {
    std::lock_guard g(mu_);
    size_t i = 0;
    for (; i < pending_.size() && open_; ++i)
      if (!try_push_locked(pending_[i].kind, pending_[i].cookie, pending_[i].status)) break;
    if (i) {
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(i));
      wake_locked();
    }
    has_pending_.store(!pending_.empty() && open_, std::memory_order_relaxed);
  }

  bool has_pending() const noexcept { return has_pending_.load(std::memory_order_relaxed); }
  bool open() noexcept {
    std::lock_guard g(mu_);
    return open_;
  }
  void close() noexcept {
    std::lock_guard g(mu_);
    open_ = false;
    pending_.clear();
    has_pending_.store(false, std::memory_order_relaxed);
  }

 private:
  struct Pending {
    Kind kind;
    uint64_t cookie;
    int64_t status;
  };
  bool try_push_locked(Kind k, uint64_t cookie, int64_t status) noexcept {
    if (head_ >= limit_) {
      limit_ = dir_->ctl_consumed.load(std::memory_order_acquire) + count_;
      if (head_ >= limit_) return false;
    }
    Slot &s = ring_[head_ & mask_];
    write_body_header(s, k, 0, 0);
    s.body.words[kCookie] = cookie;
    s.body.words[kStatus] = static_cast<uint64_t>(status);
    s.seq.store(static_cast<uint32_t>(head_ + 1), std::memory_order_release);
    ++head_;
    return true;
  }
  void wake_locked() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ring_bell(dir_);
  }

  std::mutex mu_;
  bool open_ = true;
  Slot *ring_;
  uint32_t mask_, count_;
  DirControl *dir_;
  uint64_t head_ = 0, limit_ = 0;
  std::vector<Pending> pending_;
  std::atomic<bool> has_pending_{false};
};

/// A received zero-copy message: a view of the sender's shared-pool buffer.
/// The mapping stays alive through `segment_` even after the channel closes;
/// destroying the view tells the sender to return its buffer to the pool.
class ShmView final : public Buffer {
 public:
  ShmView(std::shared_ptr<SharedSegment> seg, uint64_t offset, uint64_t length, std::shared_ptr<ControlTx> tx,
          uint64_t cookie)
      : segment_(std::move(seg)), tx_(std::move(tx)), cookie_(cookie) {
    kind_ = requested_ = MemoryKind::host_shared;
    data_ = static_cast<char *>(segment_->base()) + offset;
    size_ = length;
    const auto addr = reinterpret_cast<uintptr_t>(data_);
    alignment_ = addr ? std::min<size_t>(addr & (~addr + 1), kPage) : kPage;
    page_size_ = kPage;
    flags_ = buffer_flags::imported;
    // The view can be forwarded zero-copy to a third rank: it names the same
    // segment (the id is the creator's) and holds its fd.
    ref_ = segment_->ref(offset, length);
  }
  ~ShmView() override { tx_->push(Kind::release, cookie_, 0); }
  const SharedRef *shared_ref() const noexcept override { return &ref_; }

 private:
  std::shared_ptr<SharedSegment> segment_;
  std::shared_ptr<ControlTx> tx_;
  uint64_t cookie_;
  SharedRef ref_;
};

/// An unexpected eager message, copied out of the ring.
class CopyIncoming final : public Incoming {
 public:
  CopyIncoming(uint64_t tag, const void *data, size_t n, std::shared_ptr<Budget> b)
      : Incoming(tag, n), budget_(std::move(b)) {
    copy_ = budget_->blocks.get(n);
    if (n) std::memcpy(copy_, data, n);
    budget_->charge(cost());
  }
  ~CopyIncoming() override {
    budget_->blocks.put(copy_, size());
    budget_->uncharge(cost());
  }
  void deliver(RecvOp &op) noexcept override { complete_copy(op, tag(), copy_, size()); }

 private:
  int64_t cost() const noexcept { return static_cast<int64_t>(size()) + kIncomingOverhead; }
  char *copy_ = nullptr;
  std::shared_ptr<Budget> budget_;
};

/// An unexpected message of at most 40 bytes: one allocation, payload inside.
class InlineIncoming final : public Incoming {
 public:
  InlineIncoming(uint64_t tag, const void *data, size_t n, std::shared_ptr<Budget> b)
      : Incoming(tag, n), budget_(std::move(b)) {
    if (n) std::memcpy(data_, data, n);
    budget_->charge(kIncomingOverhead);
  }
  ~InlineIncoming() override { budget_->uncharge(kIncomingOverhead); }
  void deliver(RecvOp &op) noexcept override { complete_copy(op, tag(), data_, size()); }

 private:
  unsigned char data_[kInlineMax];
  std::shared_ptr<Budget> budget_;
};

/// A pipelined message that arrived before its receive: its chunks are
/// gathered on the heap until a receive claims it; a receive that claims it
/// mid-stream takes the prefix and then the rest straight from the fifo.
struct PipeState {
  PipeState() = default;
  PipeState(const PipeState &) = delete;
  PipeState &operator=(const PipeState &) = delete;
  ~PipeState() { release_heap(); }
  void release_heap() noexcept {
    if (heap) budget->blocks.put(std::exchange(heap, nullptr), total);
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
  void uncharge() noexcept {
    if (charged) budget->uncharge(std::exchange(charged, 0));
  }
};

class PipeIncoming final : public Incoming {
 public:
  explicit PipeIncoming(std::shared_ptr<PipeState> st) : Incoming(st->tag, st->total), st_(std::move(st)) {}
  ~PipeIncoming() override {
    if (!st_->op) {
      st_->abandoned = true;
      st_->release_heap();
      st_->uncharge();
    }
  }
  void deliver(RecvOp &op) noexcept override {
    PipeState &s = *st_;
    if (s.complete) {
      complete_copy(op, s.tag, s.heap, s.total);
      s.release_heap();
      s.uncharge();
      return;
    }
    char *dst;
    uint64_t cap;
    if (!prepare_destination(op, s.total, dst, cap)) {
      s.abandoned = true;
      s.release_heap();
      s.uncharge();
      return;
    }
    if (uint64_t n = std::min(s.received, cap)) std::memcpy(dst, s.heap, n);
    s.release_heap();
    s.uncharge();
    s.dst = dst;
    s.cap = cap;
    s.op = &op;  // the endpoint completes it when the last chunk arrives
  }

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
void cma_deliver(CmaPeer &peer, RecvOp &op, uint64_t tag, uint64_t size, uint64_t addr, uint64_t cookie) noexcept {
  if (!peer.ctl->open()) {
    fail_op(op, make_error(LF_ERR_CLOSED, "shm: the connection closed before a CMA message was read"));
    return;
  }
  char *dst;
  uint64_t cap;
  if (!prepare_destination(op, size, dst, cap)) {
    peer.ctl->push(Kind::ack, cookie, op.status);
    return;
  }
  uint64_t n = std::min(size, cap), done = 0;
  while (done < n) {
    iovec local{dst + done, n - done};
    iovec remote{reinterpret_cast<void *>(addr + done), n - done};
    ssize_t got = process_vm_readv(peer.pid, &local, 1, &remote, 1, 0);
    if (got > 0) {
      done += static_cast<uint64_t>(got);
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    int err = got < 0 ? errno : EFAULT;
    lf_status_t code = err == ESRCH ? LF_ERR_PEER_GONE : LF_ERR_IO;
    fail_op(op, make_error(code, "shm: process_vm_readv of %llu bytes from pid %d: %s",
                           static_cast<unsigned long long>(n), static_cast<int>(peer.pid), strerror(err)));
    peer.ctl->push(Kind::ack, cookie, code);
    return;
  }
  finish_recv(op, tag, size, cap);
  peer.ctl->push(Kind::ack, cookie, LF_OK);
}

class CmaIncoming final : public Incoming {
 public:
  CmaIncoming(uint64_t tag, uint64_t size, uint64_t addr, uint64_t cookie, std::shared_ptr<CmaPeer> peer)
      : Incoming(tag, size), addr_(addr), cookie_(cookie), peer_(std::move(peer)) {}
  void deliver(RecvOp &op) noexcept override { cma_deliver(*peer_, op, tag(), size(), addr_, cookie_); }

 private:
  uint64_t addr_, cookie_;
  std::shared_ptr<CmaPeer> peer_;
};

class ShmEndpoint final : public Endpoint {
 public:
  ShmEndpoint(Connection c, const Tunables &t, const DeviceIpc &dev) : conn_(std::move(c)) {
    if (dev.api) device_api_ = static_cast<gpu_ipc::Api>(dev.api);
    peer_devices_ = dev.peer_identity;
    auto *base = static_cast<char *>(conn_.segment->base());
    const auto *h = reinterpret_cast<const SegmentHeader *>(base);
    compute_layout(h->slot_count, h->ctl_count, h->fifo_bytes, layout_);
    const int tx = conn_.role, rx = 1 - conn_.role;
    char *txd = base + layout_.dir_offset[tx], *rxd = base + layout_.dir_offset[rx];
    tx_dir_ = reinterpret_cast<DirControl *>(txd);
    rx_dir_ = reinterpret_cast<DirControl *>(rxd);
    tx_slots_ = reinterpret_cast<Slot *>(txd + layout_.slots_off);
    rx_slots_ = reinterpret_cast<Slot *>(rxd + layout_.slots_off);
    rx_ctl_ = reinterpret_cast<Slot *>(rxd + layout_.ctl_off);
    tx_fifo_ = txd + layout_.fifo_off;
    rx_fifo_ = rxd + layout_.fifo_off;
    slot_count_ = h->slot_count;
    slot_mask_ = h->slot_count - 1;
    ctl_count_ = h->ctl_count;
    fifo_ = h->fifo_bytes;
    tx_slot_limit_ = slot_count_;
    tx_fifo_limit_ = fifo_;
    ctl_tx_ = std::make_shared<ControlTx>(reinterpret_cast<Slot *>(txd + layout_.ctl_off), ctl_count_, tx_dir_);
    cma_peer_ = std::make_shared<CmaPeer>(CmaPeer{conn_.peer_pid, ctl_tx_});
    budget_ = std::make_shared<Budget>(static_cast<int64_t>(t.unexpected_max));
    // A piece never exceeds a quarter of the fifo (eager) or half of it
    // (chunk), so that two pieces are always in flight.
    eager_limit_ = std::clamp<uint64_t>(t.eager_limit, kInlineMax, fifo_ / 4);
    chunk_ = std::clamp<uint64_t>(t.chunk, 4096, fifo_ / 2);
    cma_threshold_ = conn_.peer_reads_me ? t.cma_threshold : 0;
    spin_ = t.spin;
    hold_us_ = t.hold_us;
    hup_every_ = std::max(1, t.hup_every);
    inflight_.reserve(256);
    free_inflight_.reserve(256);
  }

  ~ShmEndpoint() override {
    fail_held(make_error(LF_ERR_CLOSED, "channel was closed"));
    ctl_tx_->close();
  }

  void send(SendOp &op) noexcept override {
    if (failed_) return fail_op(op, *failed_);
    if (op.buffer && !is_host_kind(op.buffer->kind()) && !prepare_device_copy(op)) return;
    if (txq_.empty() && start(op)) return wake_peer();
    try {
      txq_.push_back(&op);
    } catch (const std::bad_alloc &) {
      return fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to queue a send"));
    }
    queued_.store(txq_.size(), std::memory_order_relaxed);
    wake_peer();
  }

  Status progress(Matcher &m) noexcept override {
    if (failed_) return std::unexpected(*failed_);
    int n = 0;
    for (; n < 64; ++n) {
      int r = rx_one(m);
      if (r < 0) return std::unexpected(*failed_);
      if (r == 0) break;
    }
    if (rx_pos_ != published_pos_) publish_consumed();
    // publish_consumed() checks for a blocked producer without a fence, so
    // it can miss one that blocks at that very moment; looking again here,
    // once the ring ran dry, catches it (the producer's flag is visible now).
    wake_blocked_producer();
    // Control after data: a release published before a data message is then
    // seen in the same call as that message.
    if (ctl_ready()) {
      if (!drain_control()) return std::unexpected(*failed_);
      n = 1;
    }
    // Awake and busy: the peer need not ring the bell any more.
    if (n && rx_dir_->sleeping.load(std::memory_order_relaxed)) rx_dir_->sleeping.store(0, std::memory_order_relaxed);
    if (!txq_.empty()) pump();
    if (ctl_tx_->has_pending()) ctl_tx_->flush();
    wake_peer();
    if (++polls_ >= hup_every_) {
      polls_ = 0;
      check_socket();
    }
    if (peer_gone_.load(std::memory_order_relaxed) && !(data_ready() && stalled_at() != rx_pos_)) {
      fail_held(make_error(LF_ERR_PEER_GONE, "shm: rank %d closed the connection or exited", conn_.peer_rank));
      return std::unexpected(*failed_);
    }
    return {};
  }

  // Runs without the channel's lock (a progress thread may be in progress()
  // meanwhile): it reads only atomics and the shared segment.
  void wait_for_activity(int timeout_ms) noexcept override {
    if (has_work()) return;
    for (int i = 0; i < spin_; ++i) {
      _mm_pause();
      if (has_work()) return;
    }
    if (timeout_ms <= 0) return;
    wake_blocked_producer();  // about to sleep: nobody would wake the peer later
    const uint32_t bell = rx_dir_->bell.load(std::memory_order_acquire);
    // `sleeping` stays raised until progress() finds work (see ring_bell).
    const bool first = rx_dir_->sleeping.load(std::memory_order_relaxed) == 0;
    if (first) rx_dir_->sleeping.store(1, std::memory_order_seq_cst);
    const bool blocked = queued_.load(std::memory_order_relaxed) != 0;
    if (blocked) tx_dir_->credit_waiter.store(1, std::memory_order_seq_cst);
    const long us = first ? kFirstSleepUs : std::min(timeout_ms, 100) * 1000L;
    if (!has_work() && !(blocked && credits_changed())) futex_wait(&rx_dir_->bell, bell, us);
    // A sleeping rank learns of a dead peer here: the futex timeout bounds
    // how long that takes.
    check_socket();
  }

 private:
  struct Inflight {
    uint32_t gen = 0;
    bool live = false;
    SendOp *op = nullptr;  ///< CMA: completes on the ack
    BufferPtr buf;         ///< zero copy: destroyed (back to its pool) on the release
  };
  struct RxStream {
    bool active = false;
    uint64_t tag = 0, total = 0, received = 0;
    RecvOp *op = nullptr;
    char *dst = nullptr;
    uint64_t cap = 0;
    bool discard = false;
    std::shared_ptr<PipeState> pipe;
  };

  // ---- send side --------------------------------------------------------------

  bool slot_credit() noexcept {
    if (tx_head_ < tx_slot_limit_) return true;
    const uint64_t consumed = tx_dir_->slots_consumed.load(std::memory_order_acquire);
    tx_slot_limit_ = consumed + slot_count_;
    if (tx_head_ < tx_slot_limit_) return true;
    seen_slots_.store(consumed, std::memory_order_relaxed);
    return false;
  }

  bool fifo_credit(uint64_t advance) noexcept {
    if (tx_fifo_head_ + advance <= tx_fifo_limit_) return true;
    const uint64_t consumed = tx_dir_->fifo_consumed.load(std::memory_order_acquire);
    tx_fifo_limit_ = consumed + fifo_;
    if (tx_fifo_head_ + advance <= tx_fifo_limit_) return true;
    seen_fifo_.store(consumed, std::memory_order_relaxed);
    return false;
  }

  /// The consumer freed something since a credit check last failed.
  bool credits_changed() const noexcept {
    return tx_dir_->slots_consumed.load(std::memory_order_seq_cst) != seen_slots_.load(std::memory_order_relaxed) ||
           tx_dir_->fifo_consumed.load(std::memory_order_seq_cst) != seen_fifo_.load(std::memory_order_relaxed);
  }

  Slot &next_tx_slot() noexcept { return tx_slots_[tx_head_ & slot_mask_]; }

  void publish(Slot &s) noexcept {
    s.seq.store(static_cast<uint32_t>(tx_head_ + 1), std::memory_order_release);
    ++tx_head_;
    wake_due_ = true;
  }

  void wake_peer() noexcept {
    if (!wake_due_) return;
    wake_due_ = false;
    // Pairs with the sleeper's seq_cst store of `sleeping` and its re-check
    // of the ring. Measured: with the fence the 8-byte ping-pong is ~10 ns
    // faster than without (the store completes before this rank starts
    // polling for the answer), and the small-message rate is the same.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ring_bell(tx_dir_);
  }

  static void complete_send(SendOp &op) noexcept {
    op.buffer.reset();  // a handed-over buffer was copied: release it now
    complete_status(op.status, LF_OK);
  }

  /// Try to send `op` now. True when the op needs no more queue time (it
  /// completed, failed, or waits only for an ack/release).
  bool start(SendOp &op) noexcept {
    const uint64_t n = op.size;
    if (device_api_ && op.buffer && n > 0)
      if (const ExportHandle *h = device_export(op)) return send_device(op, *h);
    if (n && !op.data) {
      fail_op(op, make_error(LF_ERR_UNSUPPORTED, "shm moves host memory only; this buffer has no host address"));
      return true;
    }
    if (op.buffer && n > 0) {
      const SharedRef *ref = op.buffer->shared_ref();
      if (ref && ref->fd >= 0 && n <= ref->length) return send_zero_copy(op, *ref);
    }
    if (n <= kInlineMax) return send_inline(op);
    if (n <= eager_limit_) return send_eager(op);
    if (cma_threshold_ && n >= cma_threshold_) return send_cma(op);
    return send_stream(op);
  }

  bool send_inline(SendOp &op) noexcept {
    if (!slot_credit()) return false;
    Slot &s = next_tx_slot();
    write_body_header(s, Kind::inline_data, op.tag, op.size);
    if (op.size) std::memcpy(s.body.bytes, op.data, op.size);
    publish(s);
    complete_send(op);
    return true;
  }

  bool send_eager(SendOp &op) noexcept {
    if (!slot_credit()) return false;
    const FifoPlace p = fifo_place(tx_fifo_head_, fifo_, op.size);
    if (!fifo_credit(p.advance)) return false;
    std::memcpy(tx_fifo_ + p.offset, op.data, op.size);
    Slot &s = next_tx_slot();
    write_body_header(s, Kind::eager, op.tag, op.size);
    s.body.words[kLen] = op.size;
    tx_fifo_head_ += p.advance;
    publish(s);
    complete_send(op);
    return true;
  }

  bool send_stream(SendOp &op) noexcept {
    const auto *src = static_cast<const char *>(op.data);
    while (tx_stream_off_ < op.size) {
      const uint64_t len = std::min(chunk_, op.size - tx_stream_off_);
      if (!slot_credit()) return false;
      const FifoPlace p = fifo_place(tx_fifo_head_, fifo_, len);
      if (!fifo_credit(p.advance)) return false;
      std::memcpy(tx_fifo_ + p.offset, src + tx_stream_off_, len);
      Slot &s = next_tx_slot();
      write_body_header(s, tx_stream_off_ == 0 ? Kind::pipe_first : Kind::pipe_next, op.tag, op.size);
      s.body.words[kLen] = len;
      tx_fifo_head_ += p.advance;
      tx_stream_off_ += len;
      publish(s);
      // Wake a sleeping receiver at the first chunk, not after the last.
      wake_peer();
    }
    tx_stream_off_ = 0;
    complete_send(op);
    return true;
  }

  /// Entry of the in-flight table, or UINT64_MAX when out of memory.
  uint64_t add_inflight(SendOp *op, BufferPtr &buf) noexcept {
    uint32_t idx;
    try {
      if (free_inflight_.empty()) {
        inflight_.emplace_back();
        idx = static_cast<uint32_t>(inflight_.size() - 1);
      } else {
        idx = free_inflight_.back();
        free_inflight_.pop_back();
      }
    } catch (const std::bad_alloc &) {
      return UINT64_MAX;
    }
    Inflight &e = inflight_[idx];
    e.live = true;
    e.op = op;
    e.buf = std::move(buf);
    return (static_cast<uint64_t>(e.gen) << 32) | idx;
  }

  void retire_inflight(uint32_t idx) noexcept {
    Inflight &e = inflight_[idx];
    e.live = false;
    e.op = nullptr;
    e.buf.reset();
    ++e.gen;
    try {
      free_inflight_.push_back(idx);
    } catch (const std::bad_alloc &) {
      // The entry is merely not reused.
    }
  }

  bool send_cma(SendOp &op) noexcept {
    if (!slot_credit()) return false;
    BufferPtr none;
    const uint64_t cookie = add_inflight(&op, none);
    if (cookie == UINT64_MAX) {
      fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a send"));
      return true;
    }
    Slot &s = next_tx_slot();
    write_body_header(s, Kind::rts_cma, op.tag, op.size);
    s.body.words[kAddr] = reinterpret_cast<uintptr_t>(op.data);
    s.body.words[kCookie] = cookie;
    publish(s);
    return true;  // completes on the ack
  }

  bool send_zero_copy(SendOp &op, const SharedRef &ref) noexcept {
    if (!slot_credit()) return false;
    if (!sent_segments_.count(ref.segment_id)) {
      // First buffer of this segment on this connection: the peer needs the
      // memfd. It is written before the descriptor is published, so the
      // peer finds it on the socket when it meets the descriptor.
      SegmentAnnounce a{kSegmentMagic, ref.segment_id, ref.segment_size};
      if (auto st = send_fd(conn_.sock.get(), ref.fd, &a, sizeof a); !st) {
        fail_op(op, st.error());
        return true;
      }
      try {
        sent_segments_.insert(ref.segment_id);
      } catch (const std::bad_alloc &) {
        // The peer ignores a second copy of the fd: sending it again is harmless.
      }
    }
    const uint64_t segment = ref.segment_id, offset = ref.offset;
    const uint64_t cookie = add_inflight(nullptr, op.buffer);
    if (cookie == UINT64_MAX) {
      fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a send"));
      return true;
    }
    Slot &s = next_tx_slot();
    write_body_header(s, Kind::zero_copy, op.tag, op.size);
    s.body.words[kCookie] = cookie;
    s.body.words[kSegment] = segment;
    s.body.words[kOffset] = offset;
    publish(s);
    complete_status(op.status, LF_OK);  // the buffer now belongs to the in-flight table
    return true;
  }

  // ---- device memory (GPU IPC variants) -------------------------------------------

  /// The export handle through which `op`'s buffer goes as a device
  /// descriptor, or nullptr when it must be copied: not this variant's memory,
  /// not exportable, or on a device the peer did not publish.
  const ExportHandle *device_export(const SendOp &op) noexcept {
    if (gpu_ipc::api_of(op.buffer->kind()) != device_api_) return nullptr;
    const ExportHandle *h = op.buffer->export_handle();
    if (!h || h->segment_id == 0 || op.size > h->length) return nullptr;
    const int dev = op.buffer->device();
    auto it = device_ok_.find(dev);
    if (it == device_ok_.end()) {
      try {
        const bool ok = gpu_ipc::identity_listed(peer_devices_, gpu_ipc::identity_of(*h, dev));
        if (!ok)
          LF_LOG(info, "shm: rank %d cannot import memory of %s device %d: staged copies", conn_.peer_rank,
                 gpu_ipc::api_name(*device_api_), dev);
        it = device_ok_.emplace(dev, ok).first;
      } catch (const std::bad_alloc &) {
        return nullptr;
      }
    }
    return it->second ? h : nullptr;
  }

  /// Device memory that goes through the host: its GPU writes must be
  /// complete first, and memory the host cannot map is staged into a host
  /// copy (which then travels like any host buffer). False when `op` failed.
  bool prepare_device_copy(SendOp &op) noexcept {
    if (device_api_ && op.size > 0 && device_export(op)) return true;  // a descriptor, not a copy
    if (auto st = complete_device_writes(*op.buffer); !st) return fail_op(op, st.error()), false;
    if (op.data || op.size == 0) return true;
    auto host = allocate(op.size, MemoryKind::host);
    if (!host) return fail_op(op, host.error()), false;
    if (auto st = buffer_read(*op.buffer, 0, (*host)->data(), op.size); !st) return fail_op(op, st.error()), false;
    op.buffer = std::move(*host);  // the device buffer is released: its bytes are in the copy
    op.data = op.buffer->data();
    return true;
  }

  /// Announcements whose descriptors the peer has not consumed yet. Bounded,
  /// so that the socket never fills up (a blocked sendmsg could deadlock two
  /// ranks that both send); beyond it the send waits like one without credit.
  bool announce_credit() noexcept {
    const uint64_t consumed = tx_dir_->slots_consumed.load(std::memory_order_acquire);
    while (!announced_at_.empty() && announced_at_.front() < consumed) announced_at_.pop_front();
    if (announced_at_.size() < kMaxAnnouncementsInFlight) return true;
    seen_slots_.store(consumed, std::memory_order_relaxed);
    return false;
  }

  bool send_device(SendOp &op, const ExportHandle &h) noexcept {
    if (!slot_credit()) return false;
    const uint64_t id = h.segment_id;
    const bool known = sent_devices_.contains(id);
    if (!known && !announce_credit()) return false;
    // Earlier GPU work on the buffer completes (Vulkan) or is ordered (CUDA
    // event) before the peer can see the descriptor.
    if (auto st = device_sync_.before_publish(*op.buffer); !st) return fail_op(op, st.error()), true;
    try {
      if (known) {
        sent_devices_.touch(id);
      } else {
        // Written before the descriptor is published, so the peer finds it on
        // the socket when it meets the descriptor. The receiver's cache
        // evicts exactly when this mirror does (gpu_ipc::IdLru).
        struct {
          SegmentAnnounce a;
          gpu_ipc::Record r;
        } msg{{gpu_ipc::kDeviceMagic, id, sizeof(gpu_ipc::Record)},
              gpu_ipc::make_record(h, op.buffer->device(), device_sync_)};
        Status st = h.fd >= 0 ? send_fd(conn_.sock.get(), h.fd, &msg, sizeof msg)
                              : send_all(conn_.sock.get(), &msg, sizeof msg, deadline_in(10));
        if (!st) return fail_op(op, st.error()), true;
        announced_at_.push_back(tx_head_);
        sent_devices_.insert(id, 0);
      }
    } catch (const std::bad_alloc &) {
      return fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a device allocation")), true;
    }
    const uint64_t offset = h.offset;
    const uint64_t cookie = add_inflight(nullptr, op.buffer);
    if (cookie == UINT64_MAX) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a send")), true;
    Slot &s = next_tx_slot();
    write_body_header(s, Kind::zero_copy, op.tag, op.size);
    s.flags = kFlagDevice;
    s.body.words[kCookie] = cookie;
    s.body.words[kSegment] = id;
    s.body.words[kOffset] = offset;
    publish(s);
    complete_status(op.status, LF_OK);  // the buffer belongs to the in-flight table until the release
    return true;
  }

  void pump() noexcept {
    while (!txq_.empty()) {
      if (!start(*txq_.front())) break;
      txq_.pop_front();
      queued_.store(txq_.size(), std::memory_order_relaxed);
    }
  }

  // ---- receive side -------------------------------------------------------------

  bool data_ready() const noexcept {
    return rx_slots_[rx_pos_ & slot_mask_].seq.load(std::memory_order_acquire) == static_cast<uint32_t>(rx_pos_ + 1);
  }
  bool ctl_ready() const noexcept {
    return rx_ctl_[rx_ctl_pos_ & (ctl_count_ - 1)].seq.load(std::memory_order_acquire) ==
           static_cast<uint32_t>(rx_ctl_pos_ + 1);
  }
  uint64_t stalled_at() const noexcept { return stalled_at_.load(std::memory_order_relaxed); }

  /// Anything for progress() to do. Reads the positions from the shared
  /// counters (equal to rx_pos_/rx_ctl_pos_ at rest), not from the members
  /// that progress() updates, so that a waiting thread races with nobody.
  bool has_work() const noexcept {
    const uint64_t pos = rx_dir_->slots_consumed.load(std::memory_order_acquire);
    if (rx_slots_[pos & slot_mask_].seq.load(std::memory_order_acquire) == static_cast<uint32_t>(pos + 1) &&
        stalled_at() != pos)
      return true;
    const uint64_t cpos = rx_dir_->ctl_consumed.load(std::memory_order_acquire);
    if (rx_ctl_[cpos & (ctl_count_ - 1)].seq.load(std::memory_order_acquire) == static_cast<uint32_t>(cpos + 1))
      return true;
    // A held message is work: the hold is short and must end in progress().
    return holding_.load(std::memory_order_relaxed) || peer_gone_.load(std::memory_order_relaxed) ||
           broken_.load(std::memory_order_relaxed) || ctl_tx_->has_pending();
  }

  /// Consumption is published in batches: a producer that waits for credits
  /// polls these counters, and a store per message would pull their cache
  /// line back from it every time (measured: a third of the small-message
  /// rate). progress() publishes whatever is left before it returns.
  void consumed(uint64_t fifo_advance) noexcept {
    unhold();
    ++rx_pos_;
    rx_fifo_pos_ += fifo_advance;
    if (fifo_advance >= 4096 || rx_pos_ - published_pos_ >= 16) publish_consumed();
  }

  void publish_consumed() noexcept {
    if (rx_fifo_pos_ != published_fifo_) {
      published_fifo_ = rx_fifo_pos_;
      rx_dir_->fifo_consumed.store(rx_fifo_pos_, std::memory_order_release);
    }
    published_pos_ = rx_pos_;
    rx_dir_->slots_consumed.store(rx_pos_, std::memory_order_release);
    wake_blocked_producer();
  }

  /// The producer sleeps until credits come back: wake it.
  void wake_blocked_producer() noexcept {
    if (rx_dir_->credit_waiter.load(std::memory_order_relaxed)) {
      rx_dir_->credit_waiter.store(0, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      ring_bell(tx_dir_);
    }
  }

  bool over_budget(uint64_t bytes) const noexcept {
    // One message is always accepted into an empty budget, so that a message
    // larger than the whole budget does not block the ring for good.
    const int64_t used = budget_->used.load(std::memory_order_relaxed);
    return used > 0 && used + static_cast<int64_t>(bytes) + kIncomingOverhead > budget_->max;
  }

  int protocol_error(const char *what, const SlotImage &s) noexcept {
    fail_held(make_error(LF_ERR_PROTOCOL, "shm: malformed message from rank %d (kind %u, size %llu): %s",
                         conn_.peer_rank, static_cast<unsigned>(s.kind), static_cast<unsigned long long>(s.size),
                         what));
    return -1;
  }

  /// Handle one data-ring message: 1 consumed, 0 nothing to do (or held back
  /// by the unexpected budget), -1 the connection broke.
  int rx_one(Matcher &m) noexcept {
    if (!data_ready()) {
      draining_ = false;  // the burst is over: the next unmatched message may be held again
      return 0;
    }
    // Held and still nothing posted: nothing can match it, skip the decode.
    if (hold_pos_ == rx_pos_ && !m.has_posted() && still_holding()) return 0;
    SlotImage s;
    copy_slot(s, rx_slots_[rx_pos_ & slot_mask_]);
    RxState st{fifo_, stream_.active, stream_.active ? stream_.total - stream_.received : 0};
    Decoded d;
    if (const char *err = decode_data(s, st, d)) return protocol_error(err, s);
    switch (d.kind) {
      case Kind::inline_data: {
        if (RecvOp *op = m.take_posted(d.tag)) {
          complete_copy(*op, d.tag, s.body.bytes, d.size);
        } else {
          if (hold(m)) return 0;
          if (over_budget(d.size)) return stall();
          if (!add_copy(m, d.tag, s.body.bytes, d.size)) return -1;
        }
        consumed(0);
        return 1;
      }
      case Kind::eager: {
        const FifoPlace p = fifo_place(rx_fifo_pos_, fifo_, d.len);
        const char *src = rx_fifo_ + p.offset;
        if (RecvOp *op = m.take_posted(d.tag)) {
          complete_copy(*op, d.tag, src, d.size);
        } else {
          if (hold(m)) return 0;
          if (over_budget(d.size)) return stall();
          if (!add_copy(m, d.tag, src, d.size)) return -1;
        }
        consumed(p.advance);
        return 1;
      }
      case Kind::pipe_first: {
        RxStream rs;
        rs.active = true;
        rs.tag = d.tag;
        rs.total = d.size;
        if (RecvOp *op = m.take_posted(d.tag)) {
          rs.op = op;
          if (!prepare_destination(*op, d.size, rs.dst, rs.cap)) rs.discard = true, rs.op = nullptr;
        } else {
          if (hold(m)) return 0;
          if (over_budget(d.size)) return stall();
          std::shared_ptr<PipeState> ps;
          try {
            ps = std::make_shared<PipeState>();
            ps->budget = budget_;
            ps->total = d.size;
            ps->heap = budget_->blocks.get(d.size);
          } catch (const std::bad_alloc &) {
            return stall();  // as if over budget: wait for a receive to take it directly
          }
          ps->tag = d.tag;
          ps->charged = static_cast<int64_t>(d.size) + kIncomingOverhead;
          budget_->charge(ps->charged);
          try {
            m.add_unexpected(std::make_unique<PipeIncoming>(ps));
          } catch (const std::bad_alloc &) {
            fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
            return -1;
          }
          rs.pipe = std::move(ps);
        }
        stream_ = std::move(rs);
        stalled_at_.store(UINT64_MAX, std::memory_order_relaxed);
        return rx_chunk(d.len);
      }
      case Kind::pipe_next: return rx_chunk(d.len);
      case Kind::rts_cma: {
        if (RecvOp *op = m.take_posted(d.tag)) {
          cma_deliver(*cma_peer_, *op, d.tag, d.size, d.addr, d.cookie);
        } else {
          if (over_budget(0)) return stall();
          try {
            m.add_unexpected(std::make_unique<CmaIncoming>(d.tag, d.size, d.addr, d.cookie, cma_peer_));
          } catch (const std::bad_alloc &) {
            fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
            return -1;
          }
        }
        consumed(0);
        return 1;
      }
      case Kind::zero_copy: {
        if (d.device) return rx_device(m, d, s);
        std::shared_ptr<SharedSegment> seg = find_segment(d.segment);
        if (!seg) return failed_ ? -1 : protocol_error("descriptor names a segment the peer never sent", s);
        if (const char *err = check_range(seg->size(), d.offset, d.size)) return protocol_error(err, s);
        BufferPtr view;
        try {
          view = std::make_unique<ShmView>(std::move(seg), d.offset, d.size, ctl_tx_, d.cookie);
        } catch (const std::bad_alloc &) {
          return stall();
        }
        if (RecvOp *op = m.take_posted(d.tag)) {
          // A buffer receive gets the view; a plain one copies and releases at once.
          EagerIncoming whole(d.tag, std::move(view));
          whole.deliver(*op);
        } else {
          try {
            m.add_unexpected(std::make_unique<EagerIncoming>(d.tag, std::move(view)));
          } catch (const std::bad_alloc &) {
            fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
            return -1;
          }
        }
        consumed(0);
        return 1;
      }
      default: return protocol_error("unexpected kind in the data ring", s);
    }
  }

  /// A message that matches no receive stays in the ring for a short while
  /// when no receive is posted at all (nobody can be waiting for a message
  /// behind it): a receive posted meanwhile, the usual case in a stream of
  /// windows, takes it with one copy and no allocation, and the sender waits
  /// for ring space instead of running ahead into the receiver's heap. When
  /// the hold expires the ring is drained as unexpected messages until it
  /// runs dry, so a program that sends before it receives only pays the hold
  /// once per burst and cannot deadlock. True while holding.
  bool hold(const Matcher &m) noexcept {
    if (hold_us_ <= 0 || draining_ || m.has_posted()) return false;
    if (hold_pos_ != rx_pos_) {
      hold_pos_ = rx_pos_;
      hold_checks_ = 0;
      hold_until_ = Clock::now() + std::chrono::microseconds(hold_us_);
      holding_.store(true, std::memory_order_relaxed);
      return true;
    }
    return still_holding();
  }
  /// The clock is read on every 32nd check only: a receiver posting one
  /// receive after another re-checks the held message each time.
  bool still_holding() noexcept {
    if ((++hold_checks_ & 31) != 0 || Clock::now() < hold_until_) return true;
    unhold();
    draining_ = true;
    return false;
  }
  /// A message left the ring: whatever was held has been taken.
  void unhold() noexcept {
    if (hold_pos_ == UINT64_MAX) return;
    hold_pos_ = UINT64_MAX;
    holding_.store(false, std::memory_order_relaxed);
  }

  int stall() noexcept {
    stalled_at_.store(rx_pos_, std::memory_order_relaxed);
    return 0;
  }

  bool add_copy(Matcher &m, uint64_t tag, const void *src, uint64_t n) noexcept {
    try {
      if (n <= kInlineMax)
        m.add_unexpected(std::make_unique<InlineIncoming>(tag, src, n, budget_));
      else
        m.add_unexpected(std::make_unique<CopyIncoming>(tag, src, n, budget_));
      stalled_at_.store(UINT64_MAX, std::memory_order_relaxed);
      return true;
    } catch (const std::bad_alloc &) {
      fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
      return false;
    }
  }

  /// Place one chunk of the current pipelined message.
  int rx_chunk(uint64_t len) noexcept {
    const FifoPlace p = fifo_place(rx_fifo_pos_, fifo_, len);
    const char *src = rx_fifo_ + p.offset;
    RxStream &rs = stream_;
    const uint64_t at = rs.received;
    if (rs.op) {
      if (at < rs.cap) std::memcpy(rs.dst + at, src, std::min(len, rs.cap - at));
    } else if (rs.pipe && !rs.pipe->abandoned) {
      PipeState &ps = *rs.pipe;
      if (ps.op) {
        if (at < ps.cap) std::memcpy(ps.dst + at, src, std::min(len, ps.cap - at));
      } else {
        std::memcpy(ps.heap + at, src, len);
      }
      ps.received = at + len;
    }
    rs.received = at + len;
    consumed(p.advance);
    if (rs.received == rs.total) {
      if (rs.op) finish_recv(*rs.op, rs.tag, rs.total, rs.cap);
      if (rs.pipe) {
        PipeState &ps = *rs.pipe;
        ps.complete = true;
        if (ps.op) {
          finish_recv(*ps.op, ps.tag, ps.total, ps.cap);
          ps.op = nullptr;
        }
      }
      stream_ = RxStream{};
    }
    return 1;
  }

  /// The mapping of a peer segment, receiving its fd from the socket the
  /// first time. nullptr when the peer never sent it (or failed_ is set).
  std::shared_ptr<SharedSegment> find_segment(uint64_t id) noexcept {
    if (last_segment_ && last_segment_->id() == id) return last_segment_;
    for (;;) {
      if (auto it = segments_.find(id); it != segments_.end()) return last_segment_ = it->second;
      if (!read_announcement()) return nullptr;
    }
  }

  /// The peer's device allocation `id`, imported on its first descriptor.
  /// nullptr when the peer never announced it (or failed_ is set).
  std::shared_ptr<gpu_ipc::Imported> find_device(uint64_t id) noexcept {
    try {
      if (auto *m = devices_.touch(id)) return *m;
      for (;;) {
        if (auto it = pending_devices_.find(id); it != pending_devices_.end()) {
          gpu_ipc::Record rec = it->second.record;
          Fd fd = std::move(it->second.fd);
          pending_devices_.erase(it);
          auto m = gpu_ipc::import(rec, std::move(fd));
          if (!m) {
            Error e = m.error();
            e.message = "shm: rank " + std::to_string(conn_.peer_rank) + ": " + e.message;
            fail_held(e);
            return nullptr;
          }
          LF_LOG(debug, "shm: imported rank %d's %s allocation %llx (%llu bytes)", conn_.peer_rank,
                 memory_kind_name((*m)->kind()), static_cast<unsigned long long>(id),
                 static_cast<unsigned long long>((*m)->size()));
          devices_.insert(id, *m);
          return *m;
        }
        if (!read_announcement()) return nullptr;
      }
    } catch (const std::bad_alloc &) {
      fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory to import a device allocation"));
      return nullptr;
    }
  }

  /// Read one announcement from the socket: a memfd segment (mapped and
  /// cached) or a device allocation (kept until its first descriptor).
  /// Announcements precede their first descriptor, so what a descriptor needs
  /// is already queued: read without waiting. False when nothing is queued
  /// (the descriptor is bogus: the caller reports it) or on failure.
  bool read_announcement() noexcept {
    SegmentAnnounce a{};
    auto fd = recv_fd(conn_.sock.get(), &a, sizeof a, Clock::now(), /*require_fd=*/false);
    if (!fd) {
      // A broken socket means the peer is gone.
      if (fd.error().code != LF_ERR_TIMEOUT) fail_held(fd.error());
      return false;
    }
    if (a.magic == gpu_ipc::kDeviceMagic) return read_device_announcement(a, std::move(*fd));
    if (a.magic != kSegmentMagic || a.segment_id == 0 || a.segment_bytes == 0 || a.segment_bytes > kMaxMessage)
      return fail_held(make_error(LF_ERR_PROTOCOL, "shm: rank %d announced a malformed segment", conn_.peer_rank)),
             false;
    if (!*fd)
      return fail_held(make_error(LF_ERR_PROTOCOL, "shm: rank %d announced a segment without its fd", conn_.peer_rank)),
             false;
    // The segment must be sealed against shrinking: a peer that truncated
    // it later would turn our reads into SIGBUS.
    int seals = fcntl(fd->get(), F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
      return fail_held(make_error(LF_ERR_PROTOCOL, "shm: rank %d sent a segment that is not sealed against shrinking",
                                  conn_.peer_rank)),
             false;
    auto seg = SharedSegment::map(fd->release(), a.segment_bytes, a.segment_id);
    if (!seg) return fail_held(seg.error()), false;
    try {
      segments_[a.segment_id] = *seg;
    } catch (const std::bad_alloc &) {
      return fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory to cache a segment")), false;
    }
    return true;
  }

  bool read_device_announcement(const SegmentAnnounce &a, Fd fd) noexcept {
    auto bad = [&](const char *what) {
      fail_held(make_error(LF_ERR_PROTOCOL, "shm: rank %d announced a malformed device allocation: %s", conn_.peer_rank,
                           what));
      return false;
    };
    if (!device_api_) return bad("this connection does not carry device memory");
    if (a.segment_id == 0 || a.segment_bytes != sizeof(gpu_ipc::Record)) return bad("bad id or record size");
    gpu_ipc::Record rec{};
    // The record is part of the message just read from: already queued.
    if (auto st = recv_all(conn_.sock.get(), &rec, sizeof rec, deadline_in(1)); !st) {
      fail_held(st.error().code == LF_ERR_TIMEOUT ? make_error(LF_ERR_PROTOCOL, "shm: truncated device announcement")
                                                  : st.error());
      return false;
    }
    if (const char *err = gpu_ipc::check_record(rec, *device_api_)) return bad(err);
    // Nothing travels without a descriptor in the ring behind it; more
    // pending announcements than ring slots means a peer flooding us.
    if (pending_devices_.size() >= slot_count_) return bad("more announcements than the ring has slots");
    if (auto st = recv_sync_.adopt(rec); !st) return fail_held(st.error()), false;
    try {
      pending_devices_[a.segment_id] = PendingDevice{rec, std::move(fd)};
    } catch (const std::bad_alloc &) {
      fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory for a device announcement"));
      return false;
    }
    return true;
  }

  /// A descriptor of a device allocation: deliver a view of it.
  int rx_device(Matcher &m, const Decoded &d, const SlotImage &s) noexcept {
    if (!device_api_) return protocol_error("device descriptor on a connection without GPU IPC", s);
    if (d.size == 0) return protocol_error("empty device descriptor", s);
    std::shared_ptr<gpu_ipc::Imported> mem = find_device(d.segment);
    if (!mem) return failed_ ? -1 : protocol_error("descriptor names a device allocation the peer never announced", s);
    if (const char *err = check_range(mem->size(), d.offset, d.size)) return protocol_error(err, s);
    if (auto st = recv_sync_.before_deliver(*mem); !st) return fail_held(st.error()), -1;
    BufferPtr view;
    try {
      view = std::make_unique<gpu_ipc::View>(std::move(mem), d.offset, d.size, ctl_tx_, d.cookie);
    } catch (const std::bad_alloc &) {
      return stall();
    }
    if (RecvOp *op = m.take_posted(d.tag)) {
      gpu_ipc::deliver_view(*op, d.tag, std::move(view));
    } else {
      try {
        m.add_unexpected(std::make_unique<gpu_ipc::ViewIncoming>(d.tag, std::move(view)));
      } catch (const std::bad_alloc &) {
        fail_held(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
        return -1;
      }
    }
    consumed(0);
    return 1;
  }

  bool drain_control() noexcept {
    while (ctl_ready()) {
      SlotImage s;
      copy_slot(s, rx_ctl_[rx_ctl_pos_ & (ctl_count_ - 1)]);
      Decoded d;
      if (const char *err = decode_control(s, d)) return protocol_error(err, s), false;
      const uint32_t idx = static_cast<uint32_t>(d.cookie & 0xffffffffu);
      if (!cookie_index_in_range(d.cookie, inflight_.size()) || !inflight_[idx].live ||
          inflight_[idx].gen != static_cast<uint32_t>(d.cookie >> 32))
        return protocol_error("control message names no send in flight", s), false;
      Inflight &e = inflight_[idx];
      if (d.kind == Kind::ack) {
        if (!e.op) return protocol_error("ack for a zero-copy send", s), false;
        SendOp &op = *e.op;
        if (d.status == LF_OK) {
          complete_send(op);
        } else {
          fail_op(op, make_error(static_cast<lf_status_t>(d.status),
                                 "shm: rank %d could not read this send with process_vm_readv (%s)", conn_.peer_rank,
                                 status_string(static_cast<lf_status_t>(d.status))));
        }
      } else if (!e.buf) {
        return protocol_error("release for a send that was not zero copy", s), false;
      }
      retire_inflight(idx);  // a zero-copy buffer returns to its pool here
      ++rx_ctl_pos_;
      rx_dir_->ctl_consumed.store(rx_ctl_pos_, std::memory_order_release);
    }
    return true;
  }

  void check_socket() noexcept {
    if (peer_gone_.load(std::memory_order_relaxed)) return;
    pollfd p{conn_.sock.get(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
      peer_gone_.store(true, std::memory_order_relaxed);
  }

  /// Fail every operation this endpoint holds (rule 3/4 of transport.hpp).
  void fail_held(const Error &e) noexcept {
    if (!failed_) {
      try {
        failed_ = e;
      } catch (...) {
        failed_ = Error{e.code, {}};
      }
    }
    broken_.store(true, std::memory_order_relaxed);
    for (SendOp *op : txq_) fail_op(*op, e);
    txq_.clear();
    queued_.store(0, std::memory_order_relaxed);
    tx_stream_off_ = 0;
    for (Inflight &f : inflight_) {
      if (f.op) fail_op(*f.op, e);
      f.op = nullptr;
      f.buf.reset();
      f.live = false;
    }
    if (stream_.op) fail_op(*stream_.op, e);
    if (stream_.pipe && stream_.pipe->op) {
      fail_op(*stream_.pipe->op, e);
      stream_.pipe->op = nullptr;
      stream_.pipe->abandoned = true;
    }
    stream_ = RxStream{};
  }

  Connection conn_;
  Layout layout_{};
  DirControl *tx_dir_, *rx_dir_;
  Slot *tx_slots_, *rx_slots_, *rx_ctl_;
  char *tx_fifo_, *rx_fifo_;
  uint64_t slot_count_, slot_mask_, ctl_count_, fifo_;
  uint64_t eager_limit_, chunk_, cma_threshold_;
  int spin_, hup_every_, polls_ = 0;

  // send side
  uint64_t tx_head_ = 0, tx_slot_limit_ = 0, tx_fifo_head_ = 0, tx_fifo_limit_ = 0;
  uint64_t tx_stream_off_ = 0;
  bool wake_due_ = false;
  std::deque<SendOp *> txq_;
  std::vector<Inflight> inflight_;
  std::vector<uint32_t> free_inflight_;
  std::unordered_set<uint64_t> sent_segments_;
  std::shared_ptr<ControlTx> ctl_tx_;
  // send side, device memory (GPU IPC variants)
  static constexpr size_t kMaxAnnouncementsInFlight = 64;
  std::optional<gpu_ipc::Api> device_api_;
  std::string peer_devices_;                 ///< what the peer published
  std::unordered_map<int, bool> device_ok_;  ///< device index -> the peer can import its memory
  gpu_ipc::IdLru<char> sent_devices_;        ///< mirror of the peer's import cache
  std::deque<uint64_t> announced_at_;        ///< ring positions of announced descriptors not yet consumed
  gpu_ipc::SendSync device_sync_;

  // receive side
  uint64_t rx_pos_ = 0, rx_fifo_pos_ = 0, rx_ctl_pos_ = 0;
  uint64_t published_pos_ = 0, published_fifo_ = 0;
  Clock::time_point hold_until_{};
  uint64_t hold_pos_ = UINT64_MAX;  ///< ring position held (UINT64_MAX: none)
  uint32_t hold_checks_ = 0;
  int hold_us_ = 0;
  bool draining_ = false;                         ///< a hold expired: drain until the ring is empty
  std::atomic<uint64_t> stalled_at_{UINT64_MAX};  ///< data ring position held back by the budget
  RxStream stream_;
  std::unordered_map<uint64_t, std::shared_ptr<SharedSegment>> segments_;
  std::shared_ptr<SharedSegment> last_segment_;
  // receive side, device memory
  struct PendingDevice {
    gpu_ipc::Record record;
    Fd fd;
  };
  gpu_ipc::IdLru<std::shared_ptr<gpu_ipc::Imported>> devices_;   ///< imports, evicted as the sender's mirror says
  std::unordered_map<uint64_t, PendingDevice> pending_devices_;  ///< announced, no descriptor consumed yet
  gpu_ipc::RecvSync recv_sync_;
  std::shared_ptr<Budget> budget_;
  std::shared_ptr<CmaPeer> cma_peer_;
  // Also read by wait_for_activity() without the channel's lock.
  std::atomic<bool> peer_gone_{false}, broken_{false}, holding_{false};
  std::atomic<size_t> queued_{0};
  std::atomic<uint64_t> seen_slots_{0}, seen_fifo_{0};
  std::optional<Error> failed_;
};

}  // namespace

Tunables Tunables::from_config() {
  Tunables t;
  auto pos = [](const char *name, int64_t lo, int64_t hi) {
    return static_cast<uint64_t>(std::clamp<int64_t>(config::get_int(name), lo, hi));
  };
  t.ring_slots = static_cast<uint32_t>(std::bit_ceil(pos("LF_SHM_RING_SLOTS", kMinSlots, kMaxSlots)));
  t.fifo_bytes = std::bit_ceil(pos("LF_SHM_FIFO_BYTES", kMinFifo, kMaxFifo));
  t.eager_limit = pos("LF_SHM_EAGER_LIMIT", 0, INT64_MAX);
  t.chunk = pos("LF_SHM_CHUNK", 4096, INT64_MAX);
  t.cma_threshold = pos("LF_SHM_CMA_THRESHOLD", 0, INT64_MAX);
  t.unexpected_max = pos("LF_SHM_UNEXPECTED_MAX", 0, INT64_MAX);
  t.spin = static_cast<int>(pos("LF_SHM_SPIN", 0, INT32_MAX));
  t.hup_every = static_cast<int>(pos("LF_SHM_HUP_CHECK", 1, INT32_MAX));
  t.hold_us = static_cast<int>(pos("LF_SHM_HOLD_US", 0, 10'000'000));
  return t;
}

Result<std::unique_ptr<Endpoint>> make_endpoint(Connection conn, const Tunables &t, const DeviceIpc &device) {
  try {
    return std::unique_ptr<Endpoint>(std::make_unique<ShmEndpoint>(std::move(conn), t, device));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "shm: no memory for an endpoint");
  }
}

}  // namespace lf::shm
