// The receive side of a shm endpoint (shm_receiver.hpp).
#include "transport/shm/shm_receiver.hpp"

#include "transport/shm/device_lane.hpp"
#include "transport/shm/shm_segments.hpp"

namespace lf::shm {

Receiver::Receiver(Link &link, const Rings &r, const Tunables &t, std::shared_ptr<ControlTx> ctl,
                   PeerSegments &segments, DeviceLane *lane)
    : link_(link),
      r_(r),
      ctl_(std::move(ctl)),
      segments_(segments),
      lane_(lane),
      budget_(std::make_shared<Budget>(static_cast<int64_t>(t.unexpected_max))),
      cma_peer_(std::make_shared<CmaPeer>(CmaPeer{link.conn.peer_pid, ctl_})),
      park_link_(std::make_shared<ParkLink>(ctl_, budget_)),
      hold_(t.hold_us) {}

int Receiver::drain(Matcher &m, int max) noexcept {
  int n = 0;
  for (; n < max; ++n) {
    const int r = rx_one(m);
    if (r < 0) return -1;
    if (r == 0) break;
  }
  return n;
}

void Receiver::publish_rest() noexcept {
  if (rx_pos_ != published_pos_) publish_consumed();
  // publish_consumed() checks for a blocked producer without a fence, so it
  // can miss one that blocks at that very moment; looking again here, once
  // the ring ran dry, catches it (the producer's flag is visible now).
  wake_blocked_producer();
}

/// Consumption is published in batches: a producer that waits for credits
/// polls these counters, and a store per message would pull their cache line
/// back from it every time (measured: a third of the small-message rate).
/// progress() publishes whatever is left before it returns.
void Receiver::consumed(uint64_t fifo_advance) noexcept {
  hold_.unhold();
  ++rx_pos_;
  rx_fifo_pos_ += fifo_advance;
  if (fifo_advance >= 4096 || rx_pos_ - published_pos_ >= 16) publish_consumed();
}

void Receiver::publish_consumed() noexcept {
  if (rx_fifo_pos_ != published_fifo_) {
    published_fifo_ = rx_fifo_pos_;
    r_.rx_dir->fifo_consumed.store(rx_fifo_pos_, std::memory_order_release);
  }
  published_pos_ = rx_pos_;
  r_.rx_dir->slots_consumed.store(rx_pos_, std::memory_order_release);
  wake_blocked_producer();
}

bool Receiver::queue(Matcher &m, std::unique_ptr<Incoming> in) noexcept {
  m.add_unexpected(std::move(in));
  stalled_at_.store(UINT64_MAX, std::memory_order_relaxed);
  return true;
}

/// Handle one data-ring message: 1 consumed, 0 nothing to do (or held back
/// by the unexpected budget), -1 the connection broke.
int Receiver::rx_one(Matcher &m) noexcept {
  if (!data_ready()) {
    hold_.burst_over();
    return 0;
  }
  if (cut_wait_ == rx_pos_) return 0;  // parked: its sender has not said where the stream stops
  if (hold_.skip(m, rx_pos_)) return 0;
  SlotImage s;
  copy_slot(s, r_.rx_slots[rx_pos_ & r_.slot_mask]);
  RxState st{r_.fifo, stream_.active, stream_.active ? stream_.total - stream_.received : 0};
  Decoded d;
  if (const char *err = decode_data(s, st, d)) return link_.protocol_error(err, s);
  switch (d.kind) {
    case Kind::inline_data:
    case Kind::eager: return rx_small(m, d, s);
    case Kind::pipe_first: return d.resume ? rx_resumed(d, s) : rx_stream_first(m, d, s);
    case Kind::pipe_next: return rx_chunk(d.len);
    case Kind::rts_cma: {
      if (RecvOp *op = m.take_posted(d.tag)) {
        cma_deliver(*cma_peer_, *op, d.tag, d.size, d.addr, d.cookie);
      } else {
        if (budget_->over(0)) return stall();
        try {
          m.add_unexpected(std::make_unique<CmaIncoming>(d.tag, d.size, d.addr, d.cookie, cma_peer_));
        } catch (const std::bad_alloc &) {
          link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
          return -1;
        }
      }
      consumed(0);
      return 1;
    }
    case Kind::zero_copy: return rx_zero_copy(m, d, s);
    default: return link_.protocol_error("unexpected kind in the data ring", s);
  }
}

/// Inline and eager messages: copied into the receive, or out of the ring.
int Receiver::rx_small(Matcher &m, const Decoded &d, const SlotImage &s) noexcept {
  const bool in_slot = d.kind == Kind::inline_data;
  const FifoPlace p = in_slot ? FifoPlace{0, 0} : fifo_place(rx_fifo_pos_, r_.fifo, d.len);
  const void *src = in_slot ? static_cast<const void *>(s.body.bytes) : r_.rx_fifo + p.offset;
  if (RecvOp *op = m.take_posted(d.tag)) {
    complete_copy(*op, d.tag, src, d.size);
  } else {
    if (hold_.hold(m, rx_pos_)) return 0;
    if (budget_->over(d.size)) return stall();
    try {
      if (d.size <= kInlineMax)
        queue(m, std::make_unique<InlineIncoming>(d.tag, src, d.size, budget_));
      else
        queue(m, std::make_unique<CopyIncoming>(d.tag, src, d.size, budget_));
    } catch (const std::bad_alloc &) {
      link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
      return -1;
    }
  }
  consumed(p.advance);
  return 1;
}

int Receiver::rx_stream_first(Matcher &m, const Decoded &d, const SlotImage &s) noexcept {
  (void)s;
  Stream rs;
  rs.active = true;
  rs.tag = d.tag;
  rs.total = d.size;
  if (cut_slots_) {
    // The parked stream's first slots: skip them, the message is at its sender.
    rs.discard = true;
    rs.cut_left = std::exchange(cut_slots_, 0);
  } else if (RecvOp *op = m.take_posted(d.tag)) {
    rs.op = op;
    if (!prepare_destination(*op, d.size, rs.dst, rs.cap)) rs.discard = true, rs.op = nullptr;
  } else {
    if (hold_.hold(m, rx_pos_)) return 0;
    // Larger than the fifo and beyond the budget: leave it at the sender.
    // Within the budget it is copied out as before, so that two ranks that
    // send to each other before receiving keep working.
    if (d.size > r_.fifo && budget_->over_strictly(d.size)) return park(m, d);
    if (budget_->over(d.size)) return stall();
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
      link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
      return -1;
    }
    rs.pipe = std::move(ps);
  }
  stream_ = std::move(rs);
  stalled_at_.store(UINT64_MAX, std::memory_order_relaxed);
  return rx_chunk(d.len);
}

/// Place one chunk of the current pipelined message.
int Receiver::rx_chunk(uint64_t len) noexcept {
  const FifoPlace p = fifo_place(rx_fifo_pos_, r_.fifo, len);
  const char *src = r_.rx_fifo + p.offset;
  Stream &rs = stream_;
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
  if (rs.cut_left && --rs.cut_left == 0 && rs.received < rs.total) {
    stream_ = Stream{};  // the rest of a parked message comes when a receive takes it
    return 1;
  }
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
    stream_ = Stream{};
  }
  return 1;
}

/// An unexpected message too large for the fifo stays at its sender: queue a
/// ParkedIncoming (no payload) and ask the sender to stop the stream. The
/// ring waits at its first slot until the sender says how many slots the
/// stream took (on_cut); until then the sender cannot complete the send.
int Receiver::park(Matcher &m, const Decoded &d) noexcept {
  if (budget_->over(0)) return stall();
  std::erase_if(parked_, [](const auto &kv) {
    return !kv.second->op && !kv.second->discard && kv.second->abandoned.load(std::memory_order_relaxed);
  });
  try {
    auto p = std::make_shared<Parked>();
    p->pos = rx_pos_;
    p->tag = d.tag;
    p->total = d.size;
    auto in = std::make_unique<ParkedIncoming>(p, park_link_);
    parked_.emplace(rx_pos_, std::move(p));
    m.add_unexpected(std::move(in));
  } catch (const std::bad_alloc &) {
    return stall();
  }
  ctl_->push(Kind::park, rx_pos_, 0);
  cut_wait_ = rx_pos_;
  return stall();
}

bool Receiver::on_cut(uint64_t pos, uint64_t slots) noexcept {
  if (cut_wait_ != pos || rx_pos_ != pos || slots > r_.slot_count) return false;
  cut_wait_ = UINT64_MAX;
  cut_slots_ = slots;
  stalled_at_.store(UINT64_MAX, std::memory_order_relaxed);
  return true;
}

/// The stream of a parked message that a receive took.
int Receiver::rx_resumed(const Decoded &d, const SlotImage &s) noexcept {
  auto it = parked_.find(d.cookie);
  if (it == parked_.end() || (!it->second->op && !it->second->discard) || it->second->tag != d.tag ||
      it->second->total != d.size)
    return link_.protocol_error("resumed stream names no parked message that was asked for", s);
  std::shared_ptr<Parked> p = std::move(it->second);
  parked_.erase(it);
  Stream rs;
  rs.active = true;
  rs.tag = d.tag;
  rs.total = d.size;
  rs.op = p->op;
  rs.dst = p->dst;
  rs.cap = p->cap;
  rs.discard = p->discard;
  stream_ = std::move(rs);
  return rx_chunk(d.len);
}

/// A descriptor of a shared-pool buffer or (device lane) a device allocation.
int Receiver::rx_zero_copy(Matcher &m, const Decoded &d, const SlotImage &s) noexcept {
  BufferPtr view;
  if (d.device) {
    if (!lane_) return link_.protocol_error("device descriptor on a connection without GPU IPC", s);
    const char *err = nullptr;
    view = lane_->view(d, segments_, ctl_, err);
    if (err) return link_.protocol_error(err, s);
    if (!view) return link_.failed() ? -1 : stall();
  } else {
    std::shared_ptr<SharedSegment> seg = segments_.find(d.segment);
    if (!seg) return link_.failed() ? -1 : link_.protocol_error("descriptor names a segment the peer never sent", s);
    if (const char *err = check_range(seg->size(), d.offset, d.size)) return link_.protocol_error(err, s);
    try {
      view = std::make_unique<ShmView>(std::move(seg), d.offset, d.size, ctl_, d.cookie);
    } catch (const std::bad_alloc &) {
      return stall();
    }
  }
  if (RecvOp *op = m.take_posted(d.tag)) {
    if (d.device) {
      gpu_ipc::deliver_view(*op, d.tag, std::move(view));
    } else {
      // A buffer receive gets the view; a plain one copies and releases at once.
      EagerIncoming whole(d.tag, std::move(view));
      whole.deliver(*op);
    }
  } else {
    try {
      if (d.device)
        m.add_unexpected(std::make_unique<gpu_ipc::ViewIncoming>(d.tag, std::move(view)));
      else
        m.add_unexpected(std::make_unique<EagerIncoming>(d.tag, std::move(view)));
    } catch (const std::bad_alloc &) {
      link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory for an unexpected message"));
      return -1;
    }
  }
  consumed(0);
  return 1;
}

void Receiver::fail_all(const Error &e) noexcept {
  if (stream_.op) fail_op(*stream_.op, e);
  if (stream_.pipe && stream_.pipe->op) {
    fail_op(*stream_.pipe->op, e);
    stream_.pipe->op = nullptr;
    stream_.pipe->abandoned = true;
  }
  stream_ = Stream{};
  park_link_->broken.store(true, std::memory_order_relaxed);
  for (auto &kv : parked_)
    if (kv.second->op) fail_op(*std::exchange(kv.second->op, nullptr), e);
  parked_.clear();
  cut_wait_ = UINT64_MAX;
  cut_slots_ = 0;
}

}  // namespace lf::shm
