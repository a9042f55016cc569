#include "transport/dpdk/dpdk_port.hpp"

#include <rte_bus_vdev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <cstring>

#include "core/log.hpp"

namespace lf::dpdk {

namespace {
constexpr uint16_t kRingSize = 1024;
}

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
    if (key == "loss")
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
  if (auto st = p->setup(); !st) return std::unexpected(st.error());
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
  if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS) conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
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
  if (!attached_ && !setup()) {
    teardown();
    return false;
  }
  if (rte_eth_dev_start(id_) != 0) {
    teardown();
    return false;
  }
  started_.store(true, std::memory_order_release);
  return true;
}

Port::~Port() {
  if (held_) rte_pktmbuf_free(held_);
  teardown();
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
  return rte_eth_rx_burst(id_, 0, pkts, n);
}

uint16_t Port::tx(rte_mbuf **pkts, uint16_t n) noexcept {
  std::lock_guard g(tx_mu_);
  if (!started_) return 0;
  if (faults_.any()) return tx_faulty(pkts, n);
  return rte_eth_tx_burst(id_, 0, pkts, n);
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
