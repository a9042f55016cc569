// The send side of a shm endpoint (shm_sender.hpp).
#include "transport/shm/shm_sender.hpp"

#include <algorithm>

#include "memory/allocator.hpp"
#include "memory/device_copy.hpp"
#include "memory/peer_hold.hpp"
#include "transport/shm/device_lane.hpp"

namespace lf::shm {

namespace {
void complete_send(SendOp &op) noexcept {
  op.buffer.reset();  // a handed-over buffer was copied: release it now
  complete_status(op.status, LF_OK);
}
}  // namespace

uint64_t InflightTable::add(SendOp *op, BufferPtr &buf) noexcept {
  uint32_t idx;
  try {
    if (free_.empty()) {
      entries_.emplace_back();
      idx = static_cast<uint32_t>(entries_.size() - 1);
    } else {
      idx = free_.back();
      free_.pop_back();
    }
  } catch (const std::bad_alloc &) {
    return UINT64_MAX;
  }
  Entry &e = entries_[idx];
  e.live = true;
  e.op = op;
  e.buf = std::move(buf);
  return (static_cast<uint64_t>(e.gen) << 32) | idx;
}

void InflightTable::retire(uint32_t idx) noexcept {
  Entry &e = entries_[idx];
  e.live = false;
  e.op = nullptr;
  e.buf.reset();
  ++e.gen;
  try {
    free_.push_back(idx);
  } catch (const std::bad_alloc &) {
    // The entry is merely not reused.
  }
}

const char *InflightTable::complete(const Decoded &d, int peer_rank) noexcept {
  const uint32_t idx = static_cast<uint32_t>(d.cookie & 0xffffffffu);
  if (!cookie_index_in_range(d.cookie, entries_.size()) || !entries_[idx].live ||
      entries_[idx].gen != static_cast<uint32_t>(d.cookie >> 32))
    return "control message names no send in flight";
  Entry &e = entries_[idx];
  if (d.kind == Kind::ack) {
    if (!e.op) return "ack for a zero-copy send";
    SendOp &op = *e.op;
    if (d.status == LF_OK) {
      complete_send(op);
    } else {
      fail_op(op, make_error(static_cast<lf_status_t>(d.status),
                             "shm: rank %d could not read this send with process_vm_readv (%s)", peer_rank,
                             status_string(static_cast<lf_status_t>(d.status))));
    }
  } else if (!e.buf) {
    return "release for a send that was not zero copy";
  }
  retire(idx);  // a zero-copy buffer returns to its pool here
  return nullptr;
}

void InflightTable::fail_all(const Error &e, pid_t peer_pid) noexcept {
  for (Entry &f : entries_) {
    if (f.op) fail_op(*f.op, e);
    f.op = nullptr;
    // No release can come now, but the peer's view may outlive the channel.
    if (f.live && f.buf) hold_until_exit(std::move(f.buf), peer_pid);
    f.buf.reset();
    f.live = false;
  }
}

Sender::Sender(Link &link, const Rings &r, const Tunables &t, std::shared_ptr<ControlTx> ctl, DeviceLane *lane)
    : link_(link), r_(r), ctl_(std::move(ctl)), lane_(lane) {
  // A piece never exceeds a quarter of the fifo (eager) or half of it
  // (chunk), so that two pieces are always in flight.
  eager_limit_ = std::clamp<uint64_t>(t.eager_limit, kInlineMax, r.fifo / 4);
  chunk_ = std::clamp<uint64_t>(t.chunk, 4096, r.fifo / 2);
  cma_threshold_ = link.conn.peer_reads_me ? t.cma_threshold : 0;
  tx_slot_limit_ = r.slot_count;
  tx_fifo_limit_ = r.fifo;
}

void Sender::send(SendOp &op) noexcept {
  if (op.buffer && !is_host_kind(op.buffer->kind()) && !stage_device_buffer(op)) return;
  if (!busy() && start(op)) return wake_peer();
  try {
    txq_.push_back(&op);
  } catch (const std::bad_alloc &) {
    return fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to queue a send"));
  }
  update_queued();
  wake_peer();
}

void Sender::pump() noexcept {
  for (;;) {
    // A resumed stream goes first, but never into the middle of another.
    if (!resumes_.empty() && (tx_stream_off_ == 0 || tx_resuming_)) {
      if (!send_stream(*resumes_.front().op, resumes_.front().pos)) break;
      resumes_.pop_front();
    } else if (!txq_.empty()) {
      if (!start(*txq_.front())) break;
      txq_.pop_front();
    } else {
      break;
    }
    update_queued();
  }
}

void Sender::wake_peer() noexcept {
  if (!wake_due_) return;
  wake_due_ = false;
  // Pairs with the sleeper's seq_cst store of `sleeping` and its re-check
  // of the ring. Measured: with the fence the 8-byte ping-pong is ~10 ns
  // faster than without (the store completes before this rank starts
  // polling for the answer), and the small-message rate is the same.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  ring_bell(r_.tx_dir);
}

const char *Sender::on_control(const Decoded &d) noexcept {
  switch (d.kind) {
    case Kind::park: return park_stream(d.cookie) ? nullptr : "park names no stream in progress";
    case Kind::resume: return resume_stream(d.cookie) ? nullptr : "resume names no parked message";
    default: return inflight_.complete(d, link_.peer());
  }
}

void Sender::fail_all(const Error &e) noexcept {
  for (SendOp *op : txq_) fail_op(*op, e);
  txq_.clear();
  tx_stream_off_ = 0;
  tx_resuming_ = false;
  inflight_.fail_all(e, link_.conn.peer_pid);
  for (auto &kv : parked_) fail_op(*kv.second, e);
  parked_.clear();
  for (auto &r : resumes_) fail_op(*r.op, e);
  resumes_.clear();
  update_queued();
}

bool Sender::fifo_credit(uint64_t advance) noexcept {
  if (tx_fifo_head_ + advance <= tx_fifo_limit_) return true;
  const uint64_t consumed = r_.tx_dir->fifo_consumed.load(std::memory_order_acquire);
  tx_fifo_limit_ = consumed + r_.fifo;
  if (tx_fifo_head_ + advance <= tx_fifo_limit_) return true;
  seen_fifo_.store(consumed, std::memory_order_relaxed);
  return false;
}

/// Device memory that goes through the host: its GPU writes must be complete
/// first, and memory the host cannot map is staged into a host copy (which
/// then travels like any host buffer). False when `op` failed.
bool Sender::stage_device_buffer(SendOp &op) noexcept {
  if (lane_ && op.size > 0 && lane_->export_for(op)) return true;  // a descriptor, not a copy
  if (auto st = complete_device_writes(*op.buffer); !st) return fail_op(op, st.error()), false;
  if (op.data || op.size == 0) return true;
  auto host = allocate(op.size, MemoryKind::host);
  if (!host) return fail_op(op, host.error()), false;
  if (auto st = buffer_read(*op.buffer, 0, (*host)->data(), op.size); !st) return fail_op(op, st.error()), false;
  op.buffer = std::move(*host);  // the device buffer is released: its bytes are in the copy
  op.data = op.buffer->data();
  return true;
}

/// Try to send `op` now. True when the op needs no more queue time (it
/// completed, failed, or waits only for an ack/release).
bool Sender::start(SendOp &op) noexcept {
  const uint64_t n = op.total();
  // A gather send (header + payload) is copied piece by piece; the
  // descriptor and single-address paths carry one piece only.
  const bool whole = op.header_size == 0;
  if (whole && lane_ && op.buffer && n > 0)
    if (const ExportHandle *h = lane_->export_for(op)) return lane_->send(op, *h, *this);
  if (op.size && !op.data) {
    fail_op(op, make_error(LF_ERR_UNSUPPORTED, "shm moves host memory only; this buffer has no host address"));
    return true;
  }
  if (whole && op.buffer && n > 0) {
    const SharedRef *ref = op.buffer->shared_ref();
    if (ref && ref->fd >= 0 && n <= ref->length) return send_zero_copy(op, *ref);
  }
  if (n <= kInlineMax) return send_inline(op);
  if (n <= eager_limit_) return send_eager(op);
  if (whole && cma_threshold_ && n >= cma_threshold_) return send_cma(op);
  return send_stream(op);
}

bool Sender::send_inline(SendOp &op) noexcept {
  if (!slot_credit()) return false;
  Slot &s = next_slot();
  const uint64_t n = op.total();
  write_body_header(s, Kind::inline_data, op.tag, n);
  if (n) copy_message(op, 0, s.body.bytes, n);
  publish(s);
  complete_send(op);
  return true;
}

bool Sender::send_eager(SendOp &op) noexcept {
  if (!slot_credit()) return false;
  const uint64_t n = op.total();
  const FifoPlace p = fifo_place(tx_fifo_head_, r_.fifo, n);
  if (!fifo_credit(p.advance)) return false;
  copy_message(op, 0, r_.tx_fifo + p.offset, n);
  Slot &s = next_slot();
  write_body_header(s, Kind::eager, op.tag, n);
  s.body.words[kLen] = n;
  tx_fifo_head_ += p.advance;
  publish(s);
  complete_send(op);
  return true;
}

/// Stream `op` through the fifo; `resume`: the ring position under which the
/// receiver parked it (UINT64_MAX: a new message).
bool Sender::send_stream(SendOp &op, uint64_t resume) noexcept {
  const uint64_t n = op.total();
  while (tx_stream_off_ < n) {
    const uint64_t len = std::min(chunk_, n - tx_stream_off_);
    if (!slot_credit()) return false;
    const FifoPlace p = fifo_place(tx_fifo_head_, r_.fifo, len);
    if (!fifo_credit(p.advance)) return false;
    copy_message(op, tx_stream_off_, r_.tx_fifo + p.offset, len);
    Slot &s = next_slot();
    const bool first = tx_stream_off_ == 0;
    write_body_header(s, first ? Kind::pipe_first : Kind::pipe_next, op.tag, n);
    s.body.words[kLen] = len;
    if (first) {
      tx_stream_pos_ = tx_head_;
      tx_resuming_ = resume != UINT64_MAX;
      if (tx_resuming_) {
        s.flags = kFlagResume;
        s.body.words[kCookie] = resume;
      }
    }
    tx_fifo_head_ += p.advance;
    tx_stream_off_ += len;
    publish(s);
    // Wake a sleeping receiver at the first chunk, not after the last.
    wake_peer();
  }
  tx_stream_off_ = 0;
  tx_resuming_ = false;
  complete_send(op);
  return true;
}

bool Sender::send_cma(SendOp &op) noexcept {
  if (!slot_credit()) return false;
  BufferPtr none;
  const uint64_t cookie = inflight_.add(&op, none);
  if (cookie == UINT64_MAX) {
    fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a send"));
    return true;
  }
  Slot &s = next_slot();
  write_body_header(s, Kind::rts_cma, op.tag, op.size);
  s.body.words[kAddr] = reinterpret_cast<uintptr_t>(op.data);
  s.body.words[kCookie] = cookie;
  publish(s);
  return true;  // completes on the ack
}

bool Sender::send_zero_copy(SendOp &op, const SharedRef &ref) noexcept {
  if (!slot_credit()) return false;
  if (!sent_segments_.count(ref.segment_id)) {
    // First buffer of this segment on this connection: the peer needs the
    // memfd. It is written before the descriptor is published, so the peer
    // finds it on the socket when it meets the descriptor.
    SegmentAnnounce a{kSegmentMagic, ref.segment_id, ref.segment_size};
    if (auto st = send_fd(link_.conn.sock.get(), ref.fd, &a, sizeof a); !st) {
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
  const uint64_t cookie = inflight_.add(nullptr, op.buffer);
  if (cookie == UINT64_MAX) {
    fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a send"));
    return true;
  }
  Slot &s = next_slot();
  write_body_header(s, Kind::zero_copy, op.tag, op.size);
  s.body.words[kCookie] = cookie;
  s.body.words[kSegment] = segment;
  s.body.words[kOffset] = offset;
  publish(s);
  complete_status(op.status, LF_OK);  // the buffer now belongs to the in-flight table
  return true;
}

/// The receiver parks the stream that began at `pos` (it is unexpected and
/// larger than the fifo, so it cannot have ended): stop it, tell how many of
/// its slots are in the ring, keep the op until it is asked for.
bool Sender::park_stream(uint64_t pos) noexcept {
  if (txq_.empty() || tx_stream_off_ == 0 || tx_resuming_ || tx_stream_pos_ != pos) return false;
  try {
    parked_.emplace(pos, txq_.front());
  } catch (const std::bad_alloc &) {
    link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory to park a send"));
    return true;
  }
  txq_.pop_front();
  update_queued();
  tx_stream_off_ = 0;
  ctl_->push(Kind::cut, pos, static_cast<int64_t>(tx_head_ - pos));
  return true;
}

/// A receive took the parked message `pos`: stream it again, whole.
bool Sender::resume_stream(uint64_t pos) noexcept {
  auto it = parked_.find(pos);
  if (it == parked_.end()) return false;
  try {
    resumes_.push_back({it->second, pos});
  } catch (const std::bad_alloc &) {
    link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory to resume a send"));
    return true;
  }
  parked_.erase(it);
  update_queued();
  return true;
}

}  // namespace lf::shm
