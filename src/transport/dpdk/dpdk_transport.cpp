// DPDK transport (transport role): lavaflow's channels as Ethernet frames
// on a DPDK port, with lavaflow's own reliability (dpdk_flow.hpp), so that
// it runs on virtual devices: net_memif between two processes of a host,
// net_af_packet on the interface LF_DPDK_PORT names between hosts.
//
// Selection. Never silently: start() runs only when LF_TRANSPORTS names
// dpdk or LF_DPDK_PORT names an interface. Its estimates put it after shm
// and tcp on one host (memif copies twice, as shm's pipeline does once), and
// before tcp between hosts when an interface was configured.
//
// start(). Starts the EAL (once per process, dpdk_eal.hpp), creates the
// context's mbuf pool and, with LF_DPDK_PORT, the af_packet port; publishes
//     epoch=<hex>;host=<boot id>:<netns inode>[;mac=<af_packet port's mac>;mtu=<its mtu>]
// The epoch, drawn per context, tells this context's frames and memif
// socket from those of an earlier one.
//
// connect(). Channel n between two ranks is flow n on their port. A local
// peer gets a memif port of its own at the first channel (memif is
// point to point): the lower rank serves the abstract socket
// "/lavaflow-dpdk-<its epoch>", the higher rank is the client with
// id = its rank, and the memif secret is derived from the job key. connect()
// never waits for the peer; frames of a channel the peer opened first wait
// for it (dpdk_net.hpp).
#include <net/if.h>
#include <rte_errno.h>
#include <rte_mbuf.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include "core/config.hpp"
#include "core/log.hpp"
#include "transport/dpdk/dpdk_eal.hpp"
#include "transport/dpdk/dpdk_endpoint.hpp"
#include "transport/dpdk/dpdk_net.hpp"
#include "transport/dpdk/dpdk_ports.hpp"
#include "transport/filter.hpp"
#include "transport/transport.hpp"

namespace lf {

namespace {

using dpdk::Net;
using dpdk::PeerAddress;
using dpdk::Port;

std::string host_identity() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string boot;
  std::getline(f, boot);
  struct stat st {};
  const uint64_t ino = ::stat("/proc/self/ns/net", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
  return boot + ":" + std::to_string(ino);
}

std::string mac_text(const dpdk::Mac &m) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m.b[0], m.b[1], m.b[2], m.b[3], m.b[4], m.b[5]);
  return buf;
}

/// The kernel's MTU of interface `name`, or 0.
size_t interface_mtu(const std::string &name) {
  ifreq r{};
  if (name.size() >= sizeof r.ifr_name) return 0;
  std::memcpy(r.ifr_name, name.c_str(), name.size());
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  const int rc = ::ioctl(fd, SIOCGIFMTU, &r);
  ::close(fd);
  return rc == 0 && r.ifr_mtu > 0 ? static_cast<size_t>(r.ifr_mtu) : 0;
}

/// Why dpdk does not start without being asked, or "" when it was asked.
std::string not_configured() {
  const TransportFilter filter = TransportFilter::from_environment();
  if (!filter.permits("dpdk")) return "excluded by LF_TRANSPORTS";
  if (filter.allow.count("dpdk") || !config::get_string("LF_DPDK_PORT").empty()) return "";
  return "not configured: dpdk starts only when LF_TRANSPORTS names it (memif between the processes of a host) "
         "or LF_DPDK_PORT names an interface (af_packet between hosts)";
}

/// Largest Ethernet frame af_packet's default ring frames take: 2048 bytes
/// less the tpacket header and alignment a received frame starts after.
constexpr size_t kPlainFrame = 1980;
/// Largest MTU used: jumbo frames need no more, and a receive mbuf holds a
/// whole frame (its data room is 16 bits).
constexpr size_t kMaxMtu = 16000;

/// memif servers created at start for the ranks just above this one
/// (DPDK has at most RTE_MAX_ETHPORTS ports per process).
constexpr int kEagerServers = 8;

class DpdkTransport final : public Transport {
 public:
  ~DpdkTransport() override = default;

  const char *name() const noexcept override { return "dpdk"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.local = true;
    c.remote = true;
    c.memory_kinds = kHostKinds;
    return c;
  }

  std::optional<Cost> estimate(const CostQuery &q) const noexcept override {
    if (q.scope == Scope::self) return std::nullopt;
    const Cost c = q.scope == Scope::local ? Cost{12, 2} : Cost{12, 1.5};
    return kHostKinds & kind_bit(q.kind) ? c : staged(c);
  }

  std::optional<std::string> unavailable_reason() const override {
    if (std::string why = not_configured(); !why.empty()) return why;
    // Asked for: the EAL starts here (once per process), so that lf-info and
    // the context report why it cannot.
    if (auto st = dpdk::ensure_eal(); !st) return st.error().message;
    return std::nullopt;
  }

  std::vector<std::string> details() const override {
    std::vector<std::string> out;
    for (std::string &port : dpdk::describe_ports()) out.push_back("port: " + std::move(port));
    return out;
  }

  Result<std::string> start(World &world) override {
    if (std::string why = not_configured(); !why.empty()) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why.c_str());
    if (auto st = dpdk::ensure_eal(); !st) return std::unexpected(st.error());
    char pool_name[RTE_MEMPOOL_NAMESIZE];
    std::snprintf(pool_name, sizeof pool_name, "lf_pool_%" PRIu64, instance_id());
    const auto mbufs = static_cast<unsigned>(std::max<int64_t>(1023, config::get_int("LF_DPDK_MBUFS")));
    rte_mempool *pool = rte_pktmbuf_pool_create(pool_name, mbufs, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    if (!pool)
      return LF_FAIL(LF_ERR_UNAVAILABLE, "dpdk: cannot create a pool of %u mbufs: %s (raise -m in LF_DPDK_EAL)", mbufs,
                     rte_strerror(rte_errno));
    dpdk::FlowConfig cfg;
    cfg.window = static_cast<uint32_t>(std::clamp<int64_t>(config::get_int("LF_DPDK_WINDOW"), 8, 4096));
    cfg.rto_ns = static_cast<int64_t>(config::get_seconds("LF_DPDK_RTO") * 1e9);
    if (cfg.rto_ns < 10000) cfg.rto_ns = 10000;
    cfg.rto_max_ns = std::max(cfg.rto_ns, int64_t{100000000});
    cfg.peer_timeout_ns = static_cast<int64_t>(config::get_seconds("LF_DPDK_PEER_TIMEOUT") * 1e9);
    const auto faults = dpdk::Faults::parse(config::get_string("LF_DPDK_FAULTS"));
    if (!faults) {
      rte_mempool_free(pool);
      return LF_FAIL(LF_ERR_INVALID_ARG, "dpdk: LF_DPDK_FAULTS=%s is not of the form loss=P,dup=P,reorder=P",
                     config::get_string("LF_DPDK_FAULTS").c_str());
    }
    faults_ = *faults;
    std::random_device rd;
    uint32_t epoch = 0;
    while (!epoch) epoch = rd();
    auto net = std::make_shared<Net>(static_cast<uint32_t>(world.rank()), static_cast<uint32_t>(world.size()), epoch,
                                     pool, cfg);
    PeerAddress me;
    me.epoch = epoch;
    me.host = host_identity();
    if (const std::string iface = config::get_string("LF_DPDK_PORT"); !iface.empty()) {
      size_t mtu = std::min<size_t>(interface_mtu(iface), kMaxMtu);
      if (mtu <= dpdk::kHeaderSize) mtu = 1500;
      std::string args = "iface=" + iface + ",qpairs=1,qdisc_bypass=0";
      rte_mempool *rx_pool = pool;
      if (mtu + dpdk::kEthHeaderSize > kPlainFrame) {
        // Jumbo frames: af_packet's ring frames (2048 bytes by default) and
        // the mbufs it receives into (one per frame) must hold a whole frame
        // and its tpacket header. Sends are chains of ordinary mbufs.
        // One frame per block, the block a whole number of pages: the PMD
        // finds frame i at i * framesz, which is where the kernel puts it
        // only when blocks hold no gaps.
        const size_t frame = (mtu + dpdk::kEthHeaderSize + 128 + 4095) / 4096 * 4096;
        args += ",framesz=" + std::to_string(frame) + ",blocksz=" + std::to_string(frame) + ",framecnt=512";
        char name[RTE_MEMPOOL_NAMESIZE];
        std::snprintf(name, sizeof name, "lf_pool_j%" PRIu64, instance_id());
        const unsigned n = std::max(1023u, mbufs / 8);
        net->rx_pool =
            rte_pktmbuf_pool_create(name, n, 0, 0, static_cast<uint16_t>(frame + RTE_PKTMBUF_HEADROOM), SOCKET_ID_ANY);
        if (!net->rx_pool)
          return LF_FAIL(LF_ERR_UNAVAILABLE,
                         "dpdk: cannot create a pool of %u mbufs of %zu bytes for %s's %zu-byte MTU: %s (raise -m in "
                         "LF_DPDK_EAL)",
                         n, frame, iface.c_str(), mtu, rte_strerror(rte_errno));
        rx_pool = net->rx_pool;
      }
      auto p =
          Port::open(Port::Kind::af_packet, "net_af_packet_lf" + std::to_string(instance_id()), args, rx_pool, faults_);
      if (!p)
        return LF_FAIL(LF_ERR_UNAVAILABLE, "%s (LF_DPDK_PORT=%s; af_packet needs CAP_NET_RAW)",
                       p.error().message.c_str(), iface.c_str());
      (*p)->set_mtu(mtu);
      me.has_mac = true;
      me.mac = (*p)->mac();
      me.mtu = static_cast<uint32_t>((*p)->mtu());
      LF_LOG(info, "dpdk: rank %d on %s (af_packet, mac %s, mtu %zu)", world.rank(), iface.c_str(),
             mac_text(me.mac).c_str(), (*p)->mtu());
      net->af_packet = std::move(*p);
    }
    net_ = std::move(net);
    job_key_ = world.bootstrap().job_key();
    // memif servers for the next few ranks listen before the address
    // exchange, so that a peer's client finds its server at its first
    // connect whatever order the two ranks open their channel in (a client
    // that found no server is created again, every 10 ms, from its polls).
    // Which of them are local is not known yet; an unused one costs a
    // listening socket.
    for (int r = world.rank() + 1; r < world.size() && r <= world.rank() + kEagerServers; ++r) {
      auto p = open_memif(world.rank(), r, epoch);
      if (!p) return std::unexpected(p.error());
      net_->memif[r] = std::move(*p);
    }
    return me.text();
  }

  std::optional<std::string> unusable_for(World &world, int peer) const override {
    PeerAddress a, b;
    if (!PeerAddress::parse(world.address(world.rank(), "dpdk"), &a) ||
        !PeerAddress::parse(world.address(peer, "dpdk"), &b))
      return "a dpdk address is unreadable";
    const int lo = std::min(world.rank(), peer), hi = std::max(world.rank(), peer);
    if (world.scope(peer).scope == Scope::local) {
      if (a.host != b.host)
        return "dpdk: ranks " + std::to_string(lo) + " and " + std::to_string(hi) +
               " are in different network namespaces, so no memif socket reaches both";
      return std::nullopt;
    }
    if (!a.has_mac || !b.has_mac)
      return "dpdk: rank " + std::to_string(!(world.rank() == lo ? a : b).has_mac ? lo : hi) +
             " has no port for other hosts (LF_DPDK_PORT unset)";
    return std::nullopt;
  }

  std::string describe(World &world, int peer) const override {
    return world.scope(peer).scope == Scope::local ? "memif" : "af_packet";
  }

  Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline deadline) override {
    if (!net_) return LF_FAIL(LF_ERR_UNAVAILABLE, "dpdk did not start on rank %d", world.rank());
    if (peer == world.rank() || peer < 0 || peer >= world.size())
      return LF_FAIL(LF_ERR_INVALID_ARG, "dpdk: cannot connect rank %d to rank %d", world.rank(), peer);
    if (auto why = unusable_for(world, peer)) return LF_FAIL(LF_ERR_UNAVAILABLE, "%s", why->c_str());
    const bool local = world.scope(peer).scope == Scope::local;
    Port *port = nullptr;
    uint32_t channel = 0;
    dpdk::Mac peer_mac;
    {
      std::lock_guard g(net_->mu);
      if (net_->peers.empty()) {
        net_->peers.resize(static_cast<size_t>(world.size()));
        for (int r = 0; r < world.size(); ++r) PeerAddress::parse(world.address(r, "dpdk"), &net_->peers[r]);
      }
      if (local) {
        auto &slot = net_->memif[peer];
        if (!slot) {
          auto p = open_memif(world.rank(), peer, net_->peers[std::min(world.rank(), peer)].epoch);
          if (!p) return std::unexpected(p.error());
          slot = std::move(*p);
        }
        port = slot.get();
        peer_mac = dpdk::memif_mac(static_cast<uint32_t>(peer));
      } else {
        if (!net_->af_packet) return LF_FAIL(LF_ERR_UNAVAILABLE, "dpdk: no af_packet port (LF_DPDK_PORT unset)");
        port = net_->af_packet.get();
        peer_mac = net_->peers[peer].mac;
      }
      channel = net_->next_channel[peer]++;
    }
    auto flow =
        std::make_shared<dpdk::Flow>(*port, net_->pool, net_->cfg, net_->rank, net_->epoch, peer,
                                     net_->peers[peer].epoch, peer_mac, channel, local ? 0 : net_->peers[peer].mtu);
    net_->attach(flow);
    LF_LOG(debug, "dpdk: channel %u to rank %d over %s", channel, peer, port->name().c_str());
    return dpdk::make_endpoint(net_, std::move(flow),
                               static_cast<size_t>(std::max<int64_t>(0, config::get_int("LF_DPDK_UNEXPECTED_BYTES"))),
                               deadline);
  }

  Status progress() noexcept override {
    if (net_) net_->poll_all();
    return {};
  }

 private:
  /// The memif port to a local peer, on the socket of the lower rank's
  /// context (its epoch: `server_epoch`).
  Result<std::unique_ptr<Port>> open_memif(int me, int peer, uint32_t server_epoch) {
    const int lo = std::min(me, peer), hi = std::max(me, peer);
    char socket[64];
    std::snprintf(socket, sizeof socket, "/lavaflow-dpdk-%08" PRIx32, server_epoch);
    // The secret keeps other jobs' processes, which cannot compute it, off
    // the socket (memif compares it at connect).
    const std::string what = std::string("lavaflow dpdk memif ") + socket + " " + std::to_string(hi);
    const auto proof = job_key_.prove({reinterpret_cast<const uint8_t *>(what.data()), what.size()});
    char secret[21];
    for (int i = 0; i < 10; ++i) std::snprintf(secret + 2 * i, 3, "%02x", proof[i]);
    const std::string args =
        "id=" + std::to_string(hi) + ",role=" + (me == lo ? "server" : "client") + ",socket=" + socket +
        ",socket-abstract=yes,mac=" + mac_text(dpdk::memif_mac(static_cast<uint32_t>(me))) + ",secret=" + secret;
    return Port::open(Port::Kind::memif, "net_memif_lf" + std::to_string(instance_id()) + "_" + std::to_string(peer),
                      args, net_->pool, faults_);
  }

  std::shared_ptr<Net> net_;
  JobKey job_key_;
  dpdk::Faults faults_;
};

}  // namespace

std::unique_ptr<Transport> make_dpdk_transport() { return std::make_unique<DpdkTransport>(); }

}  // namespace lf
