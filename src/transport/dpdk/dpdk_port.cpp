#include "transport/dpdk/dpdk_port.hpp"

#include <rte_alarm.h>
#include <rte_bus_vdev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <sched.h>
#include <cstring>
#include <ctime>

#include "core/log.hpp"

namespace lf::dpdk {

namespace {
constexpr uint16_t kRingSize = 1024;

/// Run `fn` on DPDK's interrupt thread and wait for it. memif's control
/// channel runs there (its socket callbacks): a peer that dies makes that
/// thread disconnect the device (link down first, then the control channel
/// and the regions) while this thread may be closing the same device, and
/// both free the same memory. Creating, starting, stopping and closing
/// ports there too puts every control-path step of memif on one thread.
/// The alarm runs after whatever callback is running now.
template <typename F>
void on_interrupt_thread(F &&fn) noexcept {
  struct Job {
    F *fn;
    std::atomic<bool> done{false};
  } job{&fn};
  auto run = [](void *arg) {
    auto *j = static_cast<Job *>(arg);
    (*j->fn)();
    j->done.store(true, std::memory_order_release);
  };
  if (rte_eal_alarm_set(1, run, &job) != 0) return fn();  // no alarm: do it here
  for (unsigned spins = 0; !job.done.load(std::memory_order_acquire); ++spins) {
    if (spins < 64) {
      sched_yield();
    } else {
      timespec ts{0, 20000};
      nanosleep(&ts, nullptr);
    }
  }
}

/// Keeps memif's control thread and the datapath apart. When a memif peer
/// dies, DPDK's interrupt thread disconnects the device at once and unmaps
/// the shared rings, while another thread may be inside a receive or
/// transmit burst on them (a SIGSEGV). While memif ports exist, the
/// interrupt thread is parked in an alarm callback of ours most of the time
/// (bursts may run), and leaves it for one round of its event loop only
/// once no burst runs (bursts are skipped meanwhile: nothing waits on it).
class MemifGate {
 public:
  static MemifGate &get() noexcept {
    static MemifGate g;
    return g;
  }
  void add_port() noexcept {
    std::lock_guard l(mu_);
    ++ports_;
    if (running_) return;
    running_ = true;
    if (rte_eal_alarm_set(1, park, this) != 0) open_.store(true);  // no alarms: unguarded
  }
  void remove_port() noexcept {
    std::lock_guard l(mu_);
    --ports_;
  }
  /// Whether a burst may run now; leave() after it when it may.
  bool enter() noexcept {
    users_.fetch_add(1);
    if (open_.load()) return true;
    users_.fetch_sub(1);
    return false;
  }
  void leave() noexcept { users_.fetch_sub(1); }

 private:
  static constexpr long kParkNs = 250000;
  static void park(void *arg) {
    auto *g = static_cast<MemifGate *>(arg);
    {
      std::lock_guard l(g->mu_);
      if (g->ports_ == 0) {
        g->running_ = false;
        return;
      }
    }
    g->open_.store(true);
    timespec ts{0, kParkNs};
    nanosleep(&ts, nullptr);
    g->open_.store(false);
    while (g->users_.load()) sched_yield();
    if (rte_eal_alarm_set(1, park, g) != 0) g->open_.store(true);
  }
  std::mutex mu_;
  int ports_ = 0;         ///< under mu_
  bool running_ = false;  ///< a park alarm is set or running (under mu_)
  std::atomic<bool> open_{false};
  std::atomic<int> users_{0};
};

/// A burst on `kind`'s port inside the gate (memif) or directly. A receive
/// is skipped while the gate is shut (the frames wait in the ring); a send
/// waits for it (the gate shuts for one round of the interrupt thread's
/// loop), since a frame refused here, a FIN say, may never be sent again.
template <typename F>
uint16_t gated(Port::Kind kind, bool wait, F &&burst) noexcept {
  if (kind != Port::Kind::memif) return burst();
  MemifGate &g = MemifGate::get();
  while (!g.enter()) {
    if (!wait) return 0;
    sched_yield();
  }
  const uint16_t n = burst();
  g.leave();
  return n;
}
}  // namespace

std::optional<Faults> Faults::parse(const std::string &text) {
  Faults f;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find(',', at);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(at, end - at);
    at = end + 1;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return std::nullopt;
    char *e = nullptr;
    const double pct = std::strtod(item.c_str() + eq + 1, &e);
    if (!e || *e || pct < 0 || pct > 100) return std::nullopt;
    const auto v = static_cast<uint32_t>(pct * 100 + 0.5);
    const std::string key = item.substr(0, eq);
    if (key == "fin") {
      if (pct != static_cast<uint32_t>(pct)) return std::nullopt;
      f.fins = static_cast<uint32_t>(pct);
    } else if (key == "loss")
      f.loss = v;
    else if (key == "dup")
      f.dup = v;
    else if (key == "reorder")
      f.reorder = v;
    else
      return std::nullopt;
  }
  if (f.loss + f.dup + f.reorder > 10000) return std::nullopt;
  return f;
}

Result<std::unique_ptr<Port>> Port::open(Kind kind, const std::string &vdev, const std::string &devargs,
                                         rte_mempool *pool, Faults faults) {
  std::unique_ptr<Port> p(new Port(kind, vdev, devargs, pool));
  p->faults_ = faults;
  p->fins_left_ = faults.fins;
  if (kind == Kind::memif) MemifGate::get().add_port();
  Status st;
  on_interrupt_thread([&] { st = p->setup(); });
  if (!st) return std::unexpected(st.error());
  if (!p->try_start() && kind != Kind::memif)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "dpdk: rte_eth_dev_start of port %s failed", vdev.c_str());
  return p;
}

Status Port::setup() {
  if (int rc = rte_vdev_init(vdev_.c_str(), devargs_.c_str()); rc < 0)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "dpdk: cannot create the virtual device %s,%s: %s", vdev_.c_str(),
                   devargs_.c_str(), rte_strerror(-rc));
  attached_ = true;
  uint16_t id = 0;
  if (rte_eth_dev_get_port_by_name(vdev_.c_str(), &id) != 0)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "dpdk: device %s created, but it has no ethdev port", vdev_.c_str());
  id_ = id;
  auto fail = [&](const char *what, int rc) {
    return LF_FAIL(LF_ERR_UNAVAILABLE, "dpdk: %s of port %s: %s", what, vdev_.c_str(), rte_strerror(rc < 0 ? -rc : rc));
  };
  rte_eth_dev_info info{};
  if (int rc = rte_eth_dev_info_get(id, &info); rc != 0) return fail("rte_eth_dev_info_get", rc);
  rte_eth_conf conf{};
  multi_seg_ = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
  if (multi_seg_) conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
  if (int rc = rte_eth_dev_configure(id, 1, 1, &conf); rc != 0) return fail("rte_eth_dev_configure", rc);
  uint16_t rxd = kRingSize, txd = kRingSize;
  (void)rte_eth_dev_adjust_nb_rx_tx_desc(id, &rxd, &txd);
  if (int rc = rte_eth_rx_queue_setup(id, 0, rxd, static_cast<unsigned>(rte_eth_dev_socket_id(id)), nullptr, pool_);
      rc != 0)
    return fail("rte_eth_rx_queue_setup", rc);
  if (int rc = rte_eth_tx_queue_setup(id, 0, txd, static_cast<unsigned>(rte_eth_dev_socket_id(id)), nullptr); rc != 0)
    return fail("rte_eth_tx_queue_setup", rc);
  uint16_t mtu = 0;
  if (rte_eth_dev_get_mtu(id, &mtu) == 0 && mtu > kHeaderSize) mtu_ = mtu;
  rte_ether_addr a{};
  if (rte_eth_macaddr_get(id, &a) == 0) std::memcpy(mac_.b, a.addr_bytes, 6);
  return {};
}

void Port::teardown() noexcept {
  if (attached_) on_interrupt_thread([&] { teardown_here(); });
}

void Port::teardown_here() noexcept {
  if (!attached_) return;
  if (started_.exchange(false)) rte_eth_dev_stop(id_);
  rte_eth_dev_close(id_);
  rte_vdev_uninit(vdev_.c_str());
  attached_ = false;
}

bool Port::try_start() noexcept {
  if (started_.load(std::memory_order_acquire)) return true;
  // A memif client whose server does not listen yet fails to start, and a
  // memif device that failed to connect does not connect on a second
  // start: it is created again, at most every 10 ms, until the channel's
  // connect deadline.
  const auto now = Clock::now();
  if (now < next_try_) return false;
  next_try_ = now + std::chrono::milliseconds(10);
  bool ok = false;
  on_interrupt_thread([&] {
    if ((attached_ || setup()) && rte_eth_dev_start(id_) == 0) {
      ok = true;
      return;
    }
    teardown_here();
  });
  if (ok) started_.store(true, std::memory_order_release);
  return ok;
}

Port::~Port() {
  if (held_) rte_pktmbuf_free(held_);
  teardown();
  if (kind_ == Kind::memif) MemifGate::get().remove_port();
}

bool Port::link_up() const noexcept {
  if (!started_) return false;
  rte_eth_link l{};
  const bool up = rte_eth_link_get_nowait(id_, &l) == 0 && l.link_status == RTE_ETH_LINK_UP;
  if (up) ever_up_.store(true, std::memory_order_relaxed);
  return up;
}

uint16_t Port::rx(rte_mbuf **pkts, uint16_t n) noexcept {
  if (!started_) return 0;
  return gated(kind_, false, [&] { return rte_eth_rx_burst(id_, 0, pkts, n); });
}

uint16_t Port::tx(rte_mbuf **pkts, uint16_t n) noexcept {
  std::lock_guard g(tx_mu_);
  if (!started_) return 0;
  if (faults_.any()) return gated(kind_, true, [&] { return tx_faulty(pkts, n); });
  return gated(kind_, true, [&] { return rte_eth_tx_burst(id_, 0, pkts, n); });
}

uint16_t Port::tx_faulty(rte_mbuf **pkts, uint16_t n) noexcept {
  // Every frame is taken: what the wire refuses counts as lost, as a
  // dropped frame would.
  rte_mbuf *out[2 * 64 + 1];
  if (n > 64) n = 64;
  uint16_t k = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rng_ ^= rng_ << 13, rng_ ^= rng_ >> 7, rng_ ^= rng_ << 17;
    const auto r = static_cast<uint32_t>(rng_ % 10000);
    rte_mbuf *m = pkts[i];
    if (fins_left_ && rte_pktmbuf_data_len(m) >= kFrameOverhead &&
        *rte_pktmbuf_mtod_offset(m, const uint8_t *, kEthHeaderSize + 3) == static_cast<uint8_t>(FrameType::fin)) {
      --fins_left_;
      rte_pktmbuf_free(m);
      continue;
    }
    if (r < faults_.loss) {
      rte_pktmbuf_free(m);
      continue;
    }
    if (r < faults_.loss + faults_.dup) {
      out[k++] = m;
      if (rte_mbuf *c = rte_pktmbuf_copy(m, m->pool, 0, UINT32_MAX)) out[k++] = c;
      continue;
    }
    if (r < faults_.loss + faults_.dup + faults_.reorder && !held_) {
      held_ = m;
      continue;
    }
    out[k++] = m;
    if (held_) {
      out[k++] = held_;
      held_ = nullptr;
    }
  }
  const uint16_t sent = rte_eth_tx_burst(id_, 0, out, k);
  for (uint16_t j = sent; j < k; ++j) rte_pktmbuf_free(out[j]);
  return n;
}

}  // namespace lf::dpdk
