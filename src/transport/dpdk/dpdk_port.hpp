// One DPDK ethdev port as the dpdk transport uses it: a virtual device
// hot-plugged into the running EAL (net_memif between two processes of a
// host, net_af_packet on a named interface between hosts), one receive and
// one transmit queue, mbufs from the transport's pool.
//
// Threads: rx() needs rx_mu held (one poller at a time: the caller owns the
// mbufs it gets); tx() takes tx_mu itself. The lock order of the transport
// is rx_mu, then a flow's mutex, then tx_mu.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/net.hpp"
#include "core/status.hpp"
#include "transport/dpdk/dpdk_frame.hpp"

struct rte_mbuf;
struct rte_mempool;

namespace lf::dpdk {

/// Faults injected on transmit (LF_DPDK_FAULTS), in parts per 10,000 of
/// frames: dropped, sent twice, held back behind the next frame. For tests
/// where tc netem is not at hand (and on memif, which netem cannot reach).
struct Faults {
  uint32_t loss = 0, dup = 0, reorder = 0;
  uint32_t fins = 0;  ///< the first this many FIN frames the port sends are lost
  bool any() const noexcept { return loss || dup || reorder || fins; }
  /// "loss=1,dup=1,reorder=2" (percent, fractions allowed), and "fin=N" (a
  /// count); nullopt when malformed.
  static std::optional<Faults> parse(const std::string &text);
};

class Port {
 public:
  enum class Kind { memif, af_packet };

  /// Hot-plug `vdev` (e.g. "net_memif_lf1_2") with `devargs`, configure and
  /// start it. A memif client whose server is not listening yet starts
  /// later (try_start()); anything else that fails is an error.
  static Result<std::unique_ptr<Port>> open(Kind kind, const std::string &vdev, const std::string &devargs,
                                            rte_mempool *pool, Faults faults = {});
  ~Port();
  Port(const Port &) = delete;
  Port &operator=(const Port &) = delete;

  Kind kind() const noexcept { return kind_; }
  const std::string &name() const noexcept { return vdev_; }
  const Mac &mac() const noexcept { return mac_; }
  /// Largest Ethernet payload a frame may carry (the port's MTU).
  size_t mtu() const noexcept { return mtu_; }
  /// Set the MTU: an af_packet port's is its interface's as the kernel has
  /// it (DPDK's ethdev reports 1500 whatever that is), within the frames
  /// its rings and receive mbufs hold (the caller sized them).
  void set_mtu(size_t mtu) noexcept {
    if (mtu > kHeaderSize) mtu_ = mtu;
  }
  /// Whether it transmits frames that are chains of mbufs, so that a frame
  /// may be larger than one mbuf.
  bool multi_seg() const noexcept { return multi_seg_; }
  /// Start the port if it has not started yet; true once it has.
  bool try_start() noexcept;
  /// Whether the link is up now (memif: the peer is attached).
  bool link_up() const noexcept;
  /// The link was up once and is down now (memif: the peer went away).
  bool went_down() const noexcept { return ever_up_.load(std::memory_order_relaxed) && !link_up(); }

  std::mutex rx_mu;
  uint16_t rx(rte_mbuf **pkts, uint16_t n) noexcept;
  /// Transmit up to n frames; the port owns those it took (the count).
  uint16_t tx(rte_mbuf **pkts, uint16_t n) noexcept;

 private:
  Port(Kind kind, std::string vdev, std::string devargs, rte_mempool *pool)
      : kind_(kind), vdev_(std::move(vdev)), devargs_(std::move(devargs)), pool_(pool) {}
  /// Create and configure the device (not started); teardown() undoes it.
  /// Both run on DPDK's interrupt thread (dpdk_port.cpp says why).
  Status setup();
  void teardown() noexcept;
  void teardown_here() noexcept;
  Kind kind_;
  std::string vdev_, devargs_;
  rte_mempool *pool_;
  uint16_t id_ = 0;
  bool attached_ = false;  ///< the vdev exists (under rx_mu once open() returned)
  Clock::time_point next_try_{};
  Mac mac_;
  size_t mtu_ = 1500;
  bool multi_seg_ = false;
  std::atomic<bool> started_{false};
  mutable std::atomic<bool> ever_up_{false};
  std::mutex tx_mu_;
  Faults faults_;
  uint64_t rng_ = 0x9e3779b97f4a7c15ull;  ///< xorshift state for faults (under tx_mu_)
  rte_mbuf *held_ = nullptr;              ///< a frame held back (under tx_mu_)
  uint32_t fins_left_ = 0;                ///< FIN frames still to lose (under tx_mu_)
  uint16_t tx_faulty(rte_mbuf **pkts, uint16_t n) noexcept;
};

}  // namespace lf::dpdk
