// What a dpdk transport's endpoints share with it: the mbuf pool, the ports,
// and the table that hands each received frame to its channel's Flow. Held
// by shared_ptr, so that an endpoint that outlives its context (a waiter
// still holding it) never sees a freed port.
//
// Frames for a channel this rank has not opened yet (the peer opened it
// first) wait in `pending` until connect() creates its flow; frames for a
// channel this rank has closed are answered with a FIN carrying the
// channel's final ack, so the peer learns which of its sends arrived.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/dpdk/dpdk_flow.hpp"
#include "transport/dpdk/dpdk_port.hpp"

namespace lf::dpdk {

/// What a rank published: "epoch=<hex>;host=<boot id>:<netns inode>[;mac=<mac>;mtu=<n>]".
struct PeerAddress {
  uint32_t epoch = 0;
  std::string host;  ///< kernel and network namespace (memif's abstract socket lives there)
  bool has_mac = false;
  Mac mac;           ///< of its af_packet port (LF_DPDK_PORT), when it has one
  uint32_t mtu = 0;  ///< of that port (0: not published)
  static bool parse(const std::string &text, PeerAddress *out);
  std::string text() const;
};

/// The MAC of a memif port: locally administered, from the rank.
Mac memif_mac(uint32_t rank) noexcept;

class Net {
 public:
  Net(uint32_t rank, uint32_t size, uint32_t epoch, rte_mempool *pool, FlowConfig cfg);
  ~Net();

  const uint32_t rank, size, epoch;
  rte_mempool *const pool;
  rte_mempool *rx_pool = nullptr;  ///< af_packet's receive mbufs for jumbo frames (owned), or null
  const FlowConfig cfg;

  /// Receive a burst on `p` (unless another thread is), hand each frame to
  /// its flow, and send the acks that are due. Starts a memif client port
  /// whose server was not listening yet.
  void poll(Port &p) noexcept;
  /// Poll every port.
  void poll_all() noexcept;

  /// Register `f` (under mu) and feed it the frames that waited for it.
  void attach(const std::shared_ptr<Flow> &f);
  /// Unregister a closed flow and remember its final ack.
  void detach(Flow &f) noexcept;

  std::mutex mu;                               ///< guards everything below
  std::vector<PeerAddress> peers;              ///< by rank, filled at the first connect
  std::vector<uint32_t> next_channel;          ///< by rank
  std::unique_ptr<Port> af_packet;             ///< LF_DPDK_PORT, for remote peers
  std::map<int, std::unique_ptr<Port>> memif;  ///< one per local peer

 private:
  static uint64_t key(uint32_t peer, uint32_t channel) noexcept { return uint64_t{peer} << 32 | channel; }
  void unknown_flow(Port &p, const FrameHeader &h, rte_mbuf *m) noexcept;
  std::unordered_map<uint64_t, std::shared_ptr<Flow>> flows_;
  std::deque<std::pair<FrameHeader, rte_mbuf *>> pending_;
  std::unordered_map<uint64_t, uint32_t> closed_;  ///< final ack of channels closed here
  std::deque<uint64_t> closed_order_;
};

}  // namespace lf::dpdk
