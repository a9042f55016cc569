#include "transport/dpdk/dpdk_flow.hpp"

#include <rte_mbuf.h>

#include <algorithm>
#include <cstdint>

#include "transport/dpdk/dpdk_port.hpp"

namespace lf::dpdk {

namespace {
constexpr int kBurst = 32;
constexpr int64_t kIdleProbeNs = 1000000000;  // silence after which a flow asks the peer

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
}  // namespace

Flow::Flow(Port &port, rte_mempool *pool, const FlowConfig &cfg, uint32_t my_rank, uint32_t my_epoch, int peer,
           uint32_t peer_epoch, Mac peer_mac, uint32_t channel, size_t peer_mtu)
    : port_(port),
      pool_(pool),
      cfg_(cfg),
      my_rank_(my_rank),
      my_epoch_(my_epoch),
      peer_(peer),
      peer_epoch_(peer_epoch),
      peer_mac_(peer_mac),
      my_mac_(port.mac()),
      channel_(channel),
      peer_window_(cfg.window),
      rto_ns_(cfg.rto_ns) {
  // A frame is Ethernet and lavaflow headers plus the payload, within the
  // port's MTU and, unless the port sends chains of mbufs (jumbo frames on
  // af_packet), within one mbuf's data room.
  const size_t room = port.multi_seg() ? SIZE_MAX : rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
  // A peer whose port takes smaller frames than this one drops the larger
  // ones unseen (a veth or a bridge port does), so both ends cut to the
  // smaller MTU of the two.
  const size_t mtu = peer_mtu ? std::min(port.mtu(), peer_mtu) : port.mtu();
  payload_max_ = std::min(mtu + kEthHeaderSize, room) - kFrameOverhead;
  ooo_.assign(cfg_.window, nullptr);
}

Flow::~Flow() {
  for (rte_mbuf *m : ready_) rte_pktmbuf_free(m);
  for (rte_mbuf *m : ooo_)
    if (m) rte_pktmbuf_free(m);
}

uint32_t Flow::advertised() const noexcept {
  return ready_.size() >= cfg_.window ? 0 : cfg_.window - static_cast<uint32_t>(ready_.size());
}

uint64_t Flow::sack_bits() const noexcept {
  uint64_t bits = 0;
  for (uint32_t i = 0; i < 64 && i + 1 < cfg_.window; ++i)
    if (ooo_[(rcv_nxt_ + 1 + i) % cfg_.window]) bits |= uint64_t{1} << i;
  return bits;
}

FrameHeader Flow::header(FrameType t) const noexcept {
  FrameHeader h;
  h.type = t;
  h.src_rank = my_rank_;
  h.dst_rank = static_cast<uint32_t>(peer_);
  h.src_epoch = my_epoch_;
  h.dst_epoch = peer_epoch_;
  h.channel = channel_;
  h.seq = snd_una_ + static_cast<uint32_t>(unacked_.size());
  h.ack = rcv_nxt_;
  h.window = advertised();
  h.sack = sack_bits();
  return h;
}

rte_mbuf *Flow::build(const FrameHeader &h, const Seg *s) noexcept {
  rte_mbuf *m = rte_pktmbuf_alloc(pool_);
  if (!m) return nullptr;
  // The headers and as much payload as the first mbuf holds; a larger
  // frame goes on in further mbufs chained to it.
  const size_t first = std::min<size_t>(kFrameOverhead + h.len, rte_pktmbuf_tailroom(m));
  auto *p = reinterpret_cast<uint8_t *>(rte_pktmbuf_append(m, static_cast<uint16_t>(first)));
  if (!p || first < kFrameOverhead) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  encode_frame(p, peer_mac_, my_mac_, h);
  if (!s || !h.len) return m;
  size_t done = first - kFrameOverhead;
  copy_message(*s->op, s->off, p + kFrameOverhead, done);
  while (done < h.len) {
    rte_mbuf *seg = rte_pktmbuf_alloc(pool_);
    if (!seg) break;
    const size_t k = std::min<size_t>(h.len - done, rte_pktmbuf_tailroom(seg));
    auto *q = rte_pktmbuf_append(seg, static_cast<uint16_t>(k));
    if (!q || rte_pktmbuf_chain(m, seg) != 0) {
      rte_pktmbuf_free(seg);
      break;
    }
    copy_message(*s->op, s->off + done, q, k);
    done += k;
  }
  if (done < h.len) {
    rte_pktmbuf_free(m);  // the pool ran dry: the frame goes on a later pump
    return nullptr;
  }
  return m;
}

bool Flow::send_control(FrameType t, uint8_t flags) noexcept {
  FrameHeader h = header(t);
  h.flags = flags;
  rte_mbuf *m = build(h, nullptr);
  if (!m) return false;
  if (port_.tx(&m, 1) != 1) {
    rte_pktmbuf_free(m);
    return false;
  }
  last_advertised_ = h.window;
  return true;
}

void Flow::on_ack(uint32_t ack, uint32_t window, uint64_t sack, int64_t now) noexcept {
  const uint32_t snd_nxt = snd_una_ + static_cast<uint32_t>(unacked_.size());
  if (seq_before(ack, snd_una_) || seq_before(snd_nxt, ack)) return;  // stale, or acks what was never sent
  if (ack != snd_una_) {
    unacked_.erase(unacked_.begin(), unacked_.begin() + (ack - snd_una_));
    snd_una_ = ack;
    rto_ns_ = cfg_.rto_ns;
    dupacks_ = 0;
    progress_ns_ = now;
    while (!inflight_.empty() && !seq_before(ack, inflight_.front().second)) {
      SendOp *op = inflight_.front().first;
      inflight_.pop_front();
      op->buffer.reset();
      complete_status(op->status, LF_OK);
    }
  } else if (sack && !unacked_.empty() && ++dupacks_ == 3 && unacked_.front().sent_ns) {
    // Three acks that skip the same hole: the hole was lost, not late.
    unacked_.front().sent_ns = 0;
    ++retransmits_;
  }
  peer_ack_ = ack;
  peer_window_ = window;
  for (uint32_t i = 0; sack && i < 64; ++i)
    if (sack >> i & 1)
      if (uint32_t at = ack + 1 + i - snd_una_; at < unacked_.size()) unacked_[at].sacked = true;
}

void Flow::on_frame(const FrameHeader &h, rte_mbuf *m) noexcept {
  const int64_t now = now_ns();
  if (closed_ || broken()) {
    rte_pktmbuf_free(m);
    return;
  }
  heard_ns_ = now;
  on_ack(h.ack, h.window, h.sack, now);
  if (h.flags & kAckReq) ack_due_ = true;
  if (h.type != FrameType::data) {
    rte_pktmbuf_free(m);
    if (h.type == FrameType::fin) {
      peer_closed_ = true;
      if (!idle())
        fail(make_error(LF_ERR_PEER_GONE, "dpdk: rank %d closed the channel before it received every message", peer_));
    }
    return;
  }
  ack_due_ = true;  // in order or not, the peer learns where this side stands
  switch (classify_seq(h.seq, rcv_nxt_, advertised())) {
    case SeqClass::in_order:
      ready_.push_back(m);
      ++rcv_nxt_;
      // The gap closed: frames held out of order follow it.
      while (rte_mbuf *held = ooo_[rcv_nxt_ % cfg_.window]) {
        ready_.push_back(held);
        ooo_[rcv_nxt_ % cfg_.window] = nullptr;
        ++rcv_nxt_;
      }
      return;
    case SeqClass::ahead:
      if (rte_mbuf *&slot = ooo_[h.seq % cfg_.window]; !slot) {
        slot = m;
        return;
      }
      break;  // a duplicate of a frame held out of order
    case SeqClass::duplicate:
    case SeqClass::beyond: break;
  }
  rte_pktmbuf_free(m);
}

void Flow::pop() noexcept {
  if (ready_.empty()) return;
  rte_pktmbuf_free(ready_.front());
  ready_.pop_front();
  // Tell the peer once its credit grew by a quarter of the window: it may
  // have used all it had and be waiting, and its probe comes only after a
  // retransmission timeout.
  if (advertised() >= last_advertised_ + std::max<uint32_t>(1, cfg_.window / 4)) ack_due_ = true;
}

void Flow::queue_send(SendOp &op) noexcept {
  if (broken()) return fail_op(op, error_);
  try {
    queued_.push_back(&op);
  } catch (...) {
    fail_op(op, make_error(LF_ERR_NO_MEMORY, "dpdk: no memory to queue a send"));
  }
}

void Flow::fill() noexcept {
  while (!queued_.empty()) {
    const uint32_t snd_nxt = snd_una_ + static_cast<uint32_t>(unacked_.size());
    if (!seq_before(snd_nxt, peer_ack_ + peer_window_) || unacked_.size() >= cfg_.window) return;
    SendOp *op = queued_.front();
    const size_t total = op->total();
    const size_t len = std::min(payload_max_, total - queued_off_);
    const uint8_t flags =
        static_cast<uint8_t>((queued_off_ == 0 ? kFirst : 0) | (queued_off_ + len == total ? kLast : 0));
    try {
      if (flags & kLast) inflight_.emplace_back(op, snd_nxt + 1);
      unacked_.push_back(Seg{op, queued_off_, static_cast<uint16_t>(len), flags});
    } catch (...) {
      if (flags & kLast) inflight_.pop_back();
      return;  // tried again on the next pump
    }
    if (unacked_.size() == 1) progress_ns_ = now_ns();
    queued_off_ += len;
    if (flags & kLast) {
      queued_.pop_front();
      queued_off_ = 0;
    }
  }
}

void Flow::transmit(int64_t now) noexcept {
  if (!unacked_.empty() && unacked_.front().sent_ns && now - unacked_.front().sent_ns >= rto_ns_) {
    // Timeout: everything on the wire and not selectively acked goes again.
    for (Seg &s : unacked_)
      if (s.sent_ns && !s.sacked) {
        s.sent_ns = 0;
        ++retransmits_;
      }
    rto_ns_ = std::min(rto_ns_ * 2, cfg_.rto_max_ns);
  }
  rte_mbuf *batch[kBurst];
  size_t index[kBurst];
  size_t i = 0;
  while (i < unacked_.size()) {
    int k = 0;
    for (; i < unacked_.size() && k < kBurst; ++i) {
      Seg &s = unacked_[i];
      if (s.sent_ns || s.sacked) continue;
      FrameHeader h = header(FrameType::data);
      h.seq = snd_una_ + static_cast<uint32_t>(i);
      h.flags = s.flags;
      h.len = s.len;
      if (s.flags & kFirst) {
        h.tag = s.op->tag;
        h.msg_len = s.op->total();
      }
      rte_mbuf *m = build(h, &s);
      if (!m) break;  // pool empty: the rest go on a later pump
      batch[k] = m;
      index[k++] = i;
    }
    if (k == 0) return;
    const uint16_t sent = port_.tx(batch, static_cast<uint16_t>(k));
    for (int j = 0; j < sent; ++j) unacked_[index[j]].sent_ns = now;
    if (sent) {
      ack_due_ = false;  // every data frame carried the ack
      last_advertised_ = advertised();
    }
    if (sent < k) {
      for (int j = sent; j < k; ++j) rte_pktmbuf_free(batch[j]);
      return;  // the ring is full: the rest go on a later pump
    }
  }
}

void Flow::pump(int64_t now) noexcept {
  if (closed_) return;
  if (!broken()) {
    if (!unacked_.empty() && now - progress_ns_ > cfg_.peer_timeout_ns) {
      // A peer still heard from, whose acks never move, is alive but not
      // receiving what this side sends: frames of this size do not reach it.
      if (now - heard_ns_ < cfg_.peer_timeout_ns / 2)
        return fail(make_error(LF_ERR_PEER_GONE,
                               "dpdk: rank %d answers but acknowledged no data for %.1f s: frames of up to %zu bytes "
                               "do not reach it (an MTU on the path smaller than the ports' %zu?)",
                               peer_, static_cast<double>(now - progress_ns_) / 1e9, payload_max_ + kFrameOverhead,
                               payload_max_ + kHeaderSize));
      return fail(make_error(LF_ERR_PEER_GONE, "dpdk: rank %d acknowledged nothing for %.1f s", peer_,
                             static_cast<double>(now - progress_ns_) / 1e9));
    }
    fill();
    transmit(now);
    // The peer's window is shut: probe it until it opens (its update may be lost).
    if (unacked_.empty() && !queued_.empty() && now - last_probe_ns_ >= rto_ns_) {
      last_probe_ns_ = now;
      if (send_control(FrameType::ack, kAckReq)) ack_due_ = false;
    }
    // Nothing heard for a while: ask. A live peer answers with an ack, one
    // that closed the channel with a FIN, so that a rank that only receives
    // learns of a close whose own FIN was lost (it is sent once).
    if (now - std::max(heard_ns_, last_probe_ns_) >= kIdleProbeNs) {
      last_probe_ns_ = now;
      if (send_control(FrameType::ack, kAckReq)) ack_due_ = false;
    }
  }
  if (ack_due_ && send_control(FrameType::ack, 0)) ack_due_ = false;
}

void Flow::fail(const Error &e) noexcept {
  if (broken()) return;
  error_ = e;
  for (auto &[op, end] : inflight_) fail_op(*op, e);
  for (SendOp *op : queued_) fail_op(*op, e);
  inflight_.clear();
  queued_.clear();
  unacked_.clear();
  queued_off_ = 0;
}

void Flow::close() noexcept {
  if (closed_) return;
  FrameHeader h = header(FrameType::fin);
  fail(make_error(LF_ERR_CLOSED, "channel closed"));
  rte_mbuf *m = build(h, nullptr);
  if (m && port_.tx(&m, 1) != 1) rte_pktmbuf_free(m);
  for (rte_mbuf *r : ready_) rte_pktmbuf_free(r);
  ready_.clear();
  for (rte_mbuf *&r : ooo_)
    if (r) rte_pktmbuf_free(r), r = nullptr;
  closed_ = true;
}

}  // namespace lf::dpdk
