// One channel's reliable stream over a dpdk port: sequence numbers per
// frame, cumulative and selective acks, retransmission on timeout (and on
// three duplicate acks), a receive window that is the sender's credit,
// duplicates dropped and reordering repaired. What the frames carry is the
// endpoint's business (dpdk_endpoint.cpp); a Flow moves frames.
//
// Send side: send ops queue; fill() cuts them into segments within the
// peer's window, transmit() builds a frame per segment (copied from the
// op's memory: an op stays the caller's until it completes, so a
// retransmission reads it again) and completes an op once the peer's
// cumulative ack covers its last segment: a send completes when the peer
// has the message, not when it left this host.
//
// Receive side: on_frame() keeps in-order frames in `ready` (mbufs, in seq
// order), holds out-of-order ones in a ring until the gap fills, and drops
// duplicates and frames beyond the window. The window advertised is the
// free part of `ready`, so a receiver that stops taking data stops the
// sender.
//
// Threads: every member is guarded by `mu` (the endpoint's calls and the
// transport's poller both take it).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "core/status.hpp"
#include "transport/dpdk/dpdk_frame.hpp"
#include "transport/transport.hpp"

struct rte_mbuf;
struct rte_mempool;

namespace lf::dpdk {

class Port;

struct FlowConfig {
  uint32_t window = 256;     ///< frames a receiver accepts beyond its next expected one
  int64_t rto_ns = 2000000;  ///< first retransmission timeout
  int64_t rto_max_ns = 100000000;
  int64_t peer_timeout_ns = 10000000000;  ///< no word from the peer for this long: gone
};

class Flow {
 public:
  /// `peer_mtu`: the largest Ethernet payload the peer's port takes (0:
  /// unknown, as this port's); frames are cut to the smaller of the two.
  Flow(Port &port, rte_mempool *pool, const FlowConfig &cfg, uint32_t my_rank, uint32_t my_epoch, int peer,
       uint32_t peer_epoch, Mac peer_mac, uint32_t channel, size_t peer_mtu = 0);
  ~Flow();
  Flow(const Flow &) = delete;
  Flow &operator=(const Flow &) = delete;

  std::mutex mu;

  // ---- called with mu held ----
  /// A frame of this flow (decoded into h) from the poller; takes the mbuf.
  void on_frame(const FrameHeader &h, rte_mbuf *m) noexcept;
  /// Queue a send (completed from a later call, or failed now if broken).
  void queue_send(SendOp &op) noexcept;
  /// Timers, new segments, (re)transmission, a due ack. `now` in ns.
  void pump(int64_t now) noexcept;
  /// Fail every op held with `e` (once); later sends fail the same way.
  void fail(const Error &e) noexcept;
  /// Close: fail held sends with LF_ERR_CLOSED, free frames, tell the peer.
  void close() noexcept;

  /// The oldest in-order frame not yet taken, or nullptr; pop() releases it.
  rte_mbuf *front() const noexcept { return ready_.empty() ? nullptr : ready_.front(); }
  void pop() noexcept;
  bool broken() const noexcept { return error_.code != LF_OK; }
  const Error &error() const noexcept { return error_; }
  /// The peer closed its end and every frame it sent before is in `ready`.
  bool peer_finished() const noexcept { return peer_closed_; }
  uint32_t rcv_next() const noexcept { return rcv_nxt_; }
  bool idle() const noexcept { return unacked_.empty() && queued_.empty(); }
  int peer() const noexcept { return peer_; }
  uint32_t peer_epoch() const noexcept { return peer_epoch_; }
  /// Largest payload of one data frame.
  size_t payload_max() const noexcept { return payload_max_; }
  uint32_t channel() const noexcept { return channel_; }
  Port &port() noexcept { return port_; }
  /// Data frames sent again (timeouts and fast retransmits), for tests and lf-info.
  uint64_t retransmits() const noexcept { return retransmits_; }

 private:
  struct Seg {
    SendOp *op;
    size_t off;
    uint16_t len;
    uint8_t flags;
    bool sacked = false;
    int64_t sent_ns = 0;  ///< 0: not (or no longer) on the wire
  };
  void on_ack(uint32_t ack, uint32_t window, uint64_t sack, int64_t now) noexcept;
  void fill() noexcept;
  void transmit(int64_t now) noexcept;
  uint32_t advertised() const noexcept;
  uint64_t sack_bits() const noexcept;
  FrameHeader header(FrameType t) const noexcept;
  rte_mbuf *build(const FrameHeader &h, const Seg *s) noexcept;
  bool send_control(FrameType t, uint8_t flags) noexcept;

  Port &port_;
  rte_mempool *pool_;
  FlowConfig cfg_;
  uint32_t my_rank_, my_epoch_;
  int peer_;
  uint32_t peer_epoch_;
  Mac peer_mac_, my_mac_;
  uint32_t channel_;
  size_t payload_max_;

  // send
  std::deque<Seg> unacked_;  ///< seqs snd_una_ ...
  uint32_t snd_una_ = 0;
  std::deque<SendOp *> queued_;  ///< not yet cut into segments (front: partly)
  size_t queued_off_ = 0;
  std::deque<std::pair<SendOp *, uint32_t>> inflight_;  ///< op, seq after its last segment
  uint32_t peer_ack_ = 0, peer_window_;
  int64_t rto_ns_;
  int dupacks_ = 0;
  int64_t last_probe_ns_ = 0;
  int64_t progress_ns_ = 0;  ///< last ack that moved, or first send into an empty window
  int64_t heard_ns_ = 0;     ///< last frame of any kind from the peer
  uint64_t retransmits_ = 0;

  // receive
  uint32_t rcv_nxt_ = 0;
  std::vector<rte_mbuf *> ooo_;  ///< ring of cfg_.window slots, by seq
  std::deque<rte_mbuf *> ready_;
  uint32_t last_advertised_ = 0;
  bool ack_due_ = false;

  bool peer_closed_ = false;
  bool closed_ = false;
  Error error_{LF_OK, {}};
};

}  // namespace lf::dpdk
