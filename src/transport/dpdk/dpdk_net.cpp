#include "transport/dpdk/dpdk_net.hpp"

#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace lf::dpdk {

namespace {
constexpr size_t kPendingMax = 4096;  // frames held for channels not opened yet
constexpr size_t kClosedMax = 8192;   // closed channels whose final ack is remembered
constexpr uint16_t kBurst = 32;

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
}  // namespace

bool PeerAddress::parse(const std::string &text, PeerAddress *out) {
  PeerAddress a;
  size_t at = 0;
  bool have_epoch = false;
  while (at <= text.size()) {
    size_t end = text.find(';', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    at = end + 1;
    if (item.rfind("epoch=", 0) == 0) {
      char *e = nullptr;
      unsigned long v = std::strtoul(item.c_str() + 6, &e, 16);
      if (!e || *e || v == 0 || v > UINT32_MAX) return false;
      a.epoch = static_cast<uint32_t>(v);
      have_epoch = true;
    } else if (item.rfind("host=", 0) == 0) {
      a.host = item.substr(5);
    } else if (item.rfind("mac=", 0) == 0) {
      unsigned b[6];
      char tail;
      if (std::sscanf(item.c_str() + 4, "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
        return false;
      for (int i = 0; i < 6; ++i) {
        if (b[i] > 255) return false;
        a.mac.b[i] = static_cast<uint8_t>(b[i]);
      }
      a.has_mac = true;
    } else if (item.rfind("mtu=", 0) == 0) {
      char *e = nullptr;
      const unsigned long v = std::strtoul(item.c_str() + 4, &e, 10);
      if (!e || *e || v <= kHeaderSize || v > 65535) return false;
      a.mtu = static_cast<uint32_t>(v);
    } else if (!item.empty()) {
      return false;
    }
  }
  if (!have_epoch || a.host.empty()) return false;
  *out = a;
  return true;
}

std::string PeerAddress::text() const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "epoch=%08" PRIx32, epoch);
  std::string s = buf;
  s += ";host=" + host;
  if (has_mac) {
    std::snprintf(buf, sizeof buf, ";mac=%02x:%02x:%02x:%02x:%02x:%02x", mac.b[0], mac.b[1], mac.b[2], mac.b[3],
                  mac.b[4], mac.b[5]);
    s += buf;
  }
  if (mtu) s += ";mtu=" + std::to_string(mtu);
  return s;
}

Mac memif_mac(uint32_t rank) noexcept {
  return Mac{{0x02, 0x4c, 0x46, static_cast<uint8_t>(rank >> 16), static_cast<uint8_t>(rank >> 8),
              static_cast<uint8_t>(rank)}};
}

Net::Net(uint32_t r, uint32_t s, uint32_t e, rte_mempool *p, FlowConfig c)
    : rank(r), size(s), epoch(e), pool(p), cfg(c), next_channel(s, 0) {}

Net::~Net() {
  // Flows first (they hold mbufs), then the ports, then the pool they draw from.
  flows_.clear();
  for (auto &[h, m] : pending_) rte_pktmbuf_free(m);
  pending_.clear();
  memif.clear();
  af_packet.reset();
  rte_mempool_free(rx_pool);
  rte_mempool_free(pool);
}

void Net::attach(const std::shared_ptr<Flow> &f) {
  std::lock_guard g(mu);
  flows_[key(static_cast<uint32_t>(f->peer()), f->channel())] = f;
  std::lock_guard fg(f->mu);
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->first.src_rank == static_cast<uint32_t>(f->peer()) && it->first.channel == f->channel()) {
      f->on_frame(it->first, it->second);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

void Net::detach(Flow &f) noexcept {
  std::lock_guard g(mu);
  const uint64_t k = key(static_cast<uint32_t>(f.peer()), f.channel());
  flows_.erase(k);
  try {
    if (closed_order_.size() >= kClosedMax) {
      closed_.erase(closed_order_.front());
      closed_order_.pop_front();
    }
    closed_[k] = f.rcv_next();
    closed_order_.push_back(k);
  } catch (...) {
  }
}

void Net::unknown_flow(Port &p, const FrameHeader &h, rte_mbuf *m) noexcept {
  // Called with mu held.
  if (h.src_rank >= peers.size() || peers[h.src_rank].epoch != h.src_epoch) return (void)rte_pktmbuf_free(m);
  if (!seq_before(h.channel, next_channel[h.src_rank])) {
    if (pending_.size() < kPendingMax) {
      try {
        pending_.emplace_back(h, m);
        return;
      } catch (...) {
      }
    }
    return (void)rte_pktmbuf_free(m);  // the peer sends it again
  }
  rte_pktmbuf_free(m);
  // A closed channel: answer data and probes (never acks or FINs, which
  // would ping-pong) with a FIN saying what arrived.
  if (h.type != FrameType::data && !(h.flags & kAckReq)) return;
  auto it = closed_.find(key(h.src_rank, h.channel));
  FrameHeader f;
  f.type = FrameType::fin;
  f.src_rank = rank;
  f.dst_rank = h.src_rank;
  f.src_epoch = epoch;
  f.dst_epoch = h.src_epoch;
  f.channel = h.channel;
  f.ack = it == closed_.end() ? 0 : it->second;
  rte_mbuf *r = rte_pktmbuf_alloc(pool);
  if (!r) return;
  auto *out = reinterpret_cast<uint8_t *>(rte_pktmbuf_append(r, kFrameOverhead));
  if (!out) return (void)rte_pktmbuf_free(r);
  const Mac dst = p.kind() == Port::Kind::memif ? memif_mac(h.src_rank) : peers[h.src_rank].mac;
  encode_frame(out, dst, p.mac(), f);
  if (p.tx(&r, 1) != 1) rte_pktmbuf_free(r);
}

void Net::poll(Port &p) noexcept {
  std::unique_lock rx(p.rx_mu, std::try_to_lock);
  if (!rx.owns_lock()) return;  // another thread is polling this port
  if (!p.try_start()) return;
  rte_mbuf *pkts[kBurst];
  const uint16_t n = p.rx(pkts, kBurst);
  if (!n) return;
  std::shared_ptr<Flow> touched[kBurst];
  int ntouched = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf *m = pkts[i];
    uint8_t copy[kFrameOverhead];
    const auto *head = static_cast<const uint8_t *>(rte_pktmbuf_read(m, 0, kFrameOverhead, copy));
    FrameHeader h;
    if (!head || decode_frame(head, rte_pktmbuf_pkt_len(m), size, &h) || h.dst_rank != rank || h.dst_epoch != epoch) {
      rte_pktmbuf_free(m);  // not lavaflow's, not well formed, or not for this context
      continue;
    }
    std::shared_ptr<Flow> f;
    {
      std::lock_guard g(mu);
      auto it = flows_.find(key(h.src_rank, h.channel));
      if (it == flows_.end()) {
        unknown_flow(p, h, m);
        continue;
      }
      f = it->second;
    }
    if (h.src_epoch != f->peer_epoch()) {
      // An earlier context of the peer's rank: its flow is not this one.
      rte_pktmbuf_free(m);
      continue;
    }
    {
      std::lock_guard fg(f->mu);
      f->on_frame(h, m);
    }
    int j = 0;
    while (j < ntouched && touched[j] != f) ++j;
    if (j == ntouched) touched[ntouched++] = std::move(f);
  }
  // Acks (and whatever the acks let go) leave now, not at the endpoint's
  // next call: the peer's sends complete on them.
  const int64_t now = now_ns();
  for (int j = 0; j < ntouched; ++j) {
    std::lock_guard fg(touched[j]->mu);
    touched[j]->pump(now);
  }
}

void Net::poll_all() noexcept {
  std::vector<Port *> ports;
  {
    std::lock_guard g(mu);
    if (af_packet) ports.push_back(af_packet.get());
    for (auto &[peer, port] : memif) ports.push_back(port.get());
  }
  for (Port *p : ports) poll(*p);
}

}  // namespace lf::dpdk
