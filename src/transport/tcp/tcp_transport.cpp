// TCP transport (listener/transport role): REMOTE scope without an MPI
// launcher, and the last resort for LOCAL scope. One connection per channel;
// the handshake in connection.hpp, frames in frame.hpp, the data path in
// endpoint.cpp.
//
// start(). Only when LF_TRANSPORTS permits tcp: draw the acceptor nonce,
// listen on LF_TCP_PORT (any free port for 0) on each IPv4 address of the
// network namespace and on 127.0.0.1 (never on 0.0.0.0: an address that
// appears later is not served, and nothing listens on addresses that were
// not published), and publish
//     tcp://<ip>/<prefix>,...,127.0.0.1/8:<port>;netns=<boot id>:<inode>;nonce=<hex>
//
// connect(). For each channel the lower rank dials the higher one:
// 127.0.0.1 when both sit in the same network namespace, else the first peer
// address in a subnet the dialler has an address in, else the peer's other
// addresses in order; it sends its hello and returns at once (the peer's
// kernel completed the TCP handshake from its backlog, and sends queue in the
// socket). The accepting side returns at once too, with an endpoint that
// picks its verified connection up in progress(). connect() never waits for
// the peer, so ranks opening channels in any order, across transports, never
// deadlock; a peer that never opens its side is LF_ERR_TIMEOUT after
// LF_CONNECT_TIMEOUT.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>

#include "core/config.hpp"
#include "core/log.hpp"
#include "transport/filter.hpp"
#include "transport/tcp/connection.hpp"
#include "transport/tcp/endpoint.hpp"
#include "transport/tcp/tcp_address.hpp"
#include "transport/transport.hpp"

namespace lf {

namespace {

std::string read_first_line(const char *path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

/// The kernel's identity of this process's network namespace.
std::string netns_identity() {
  struct stat st {};
  uint64_t ino = ::stat("/proc/self/ns/net", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
  return read_first_line("/proc/sys/kernel/random/boot_id") + ":" + std::to_string(ino);
}

/// IPv4 addresses of the interfaces that are up, loopback excluded.
std::vector<tcp::Ipv4Net> interface_addresses() {
  std::vector<tcp::Ipv4Net> out;
  ifaddrs *ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return out;
  for (ifaddrs *p = ifa; p; p = p->ifa_next) {
    if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET || !(p->ifa_flags & IFF_UP)) continue;
    if (p->ifa_flags & IFF_LOOPBACK) continue;
    uint32_t a = ntohl(reinterpret_cast<sockaddr_in *>(p->ifa_addr)->sin_addr.s_addr);
    uint32_t mask = p->ifa_netmask ? ntohl(reinterpret_cast<sockaddr_in *>(p->ifa_netmask)->sin_addr.s_addr) : ~0u;
    out.push_back({a, __builtin_popcount(mask)});
  }
  freeifaddrs(ifa);
  return out;
}

std::string ip_text(uint32_t addr) {
  char ip[INET_ADDRSTRLEN];
  in_addr ia{htonl(addr)};
  inet_ntop(AF_INET, &ia, ip, sizeof ip);
  return ip;
}

/// Listening sockets on every address of `nets`, all on one port: `port`,
/// or for 0 the one the kernel picks for the first address (retried when
/// another address has it taken).
Result<std::pair<std::vector<Fd>, int>> listen_all(const std::vector<tcp::Ipv4Net> &nets, int port) {
  Error last = make_error(LF_ERR_UNAVAILABLE, "tcp: no address to listen on");
  for (int attempt = 0; attempt < (port ? 1 : 16); ++attempt) {
    std::vector<Fd> fds;
    int chosen = port;
    bool ok = true;
    for (const tcp::Ipv4Net &n : nets) {
      SockAddr sa{SockAddr::Family::tcp, ip_text(n.addr), chosen};
      auto lfd = listen_on(sa, 256);
      if (!lfd) {
        last = lfd.error();
        ok = false;
        break;
      }
      if (!chosen) {
        auto bound = bound_address(lfd->get(), sa);
        if (!bound) return std::unexpected(bound.error());
        chosen = bound->port;
      }
      if (auto st = set_nonblocking(lfd->get(), true); !st) return std::unexpected(st.error());
      fds.push_back(std::move(*lfd));
    }
    if (ok && !fds.empty()) return std::pair{std::move(fds), chosen};
  }
  return std::unexpected(last);
}

class TcpTransport final : public Transport {
 public:
  const char *name() const noexcept override { return "tcp"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.local = true;  // last resort within a host: below shm
    c.remote = true;
    c.memory_kinds = kHostKinds;
    return c;
  }

  std::optional<Cost> estimate(const CostQuery &q) const noexcept override {
    // Loopback within a host (docs/performance.md); across hosts a 10 GbE
    // class network. Device memory is staged through the host.
    Cost c;
    if (q.scope == Scope::local)
      c = {9, 5};
    else if (q.scope == Scope::remote)
      c = {25, 1.2};
    else
      return std::nullopt;
    return kHostKinds & kind_bit(q.kind) ? c : staged(c);
  }

  Result<std::string> start(World &world) override {
    if (!TransportFilter::from_environment().permits("tcp"))
      return LF_FAIL(LF_ERR_UNAVAILABLE, "excluded by LF_TRANSPORTS (nothing listens)");
    rank_ = world.rank();
    s_ = tcp::Settings::from_config();
    key_ = world.bootstrap().job_key();
    if (!key_.set()) {
      // Until every bootstrap hands its key over, the standalone one's
      // source is read here too (the same rules, core/job_key.hpp).
      auto k = JobKey::from_environment();
      if (!k) return std::unexpected(k.error());
      key_ = std::move(*k);
    }
    int64_t port = config::get_int("LF_TCP_PORT");
    if (port < 0 || port > 65535) return LF_FAIL(LF_ERR_INVALID_ARG, "LF_TCP_PORT=%lld is not a port", (long long)port);
    tcp::PublishedAddress me;
    me.nets = interface_addresses();
    me.nets.push_back({0x7f000001u, 8});
    auto l = listen_all(me.nets, static_cast<int>(port));
    if (!l) return std::unexpected(l.error());
    me.port = l->second;
    me.netns = netns_identity();
    me.nonce = random_nonce();
    netns_ = me.netns;
    mine_ = me.nets;
    tcp::ListenerLimits limits;
    limits.handshake_timeout = std::chrono::milliseconds(static_cast<int64_t>(s_.handshake_s * 1000));
    limits.stash_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(config::get_seconds("LF_CONNECT_TIMEOUT") * 1000));
    closer_ = std::make_shared<tcp::Closer>(s_.linger_s);
    listener_ = std::make_unique<tcp::Listener>(std::move(l->first), key_, rank_, me.nonce, limits);
    std::string text = tcp::format_address(me);
    LF_LOG(debug, "tcp: rank %d listens at %s (job key: %s)", rank_, text.c_str(), key_.source().c_str());
    return text;
  }

  /// Same answer on both ranks: computed from what both published.
  std::optional<std::string> unusable_for(World &world, int peer) const override {
    int lo = std::min(world.rank(), peer), hi = std::max(world.rank(), peer);
    auto from = tcp::parse_address(world.address(lo, "tcp"));
    auto to = tcp::parse_address(world.address(hi, "tcp"));
    if (!from || !to) return "a tcp address published by rank " + std::to_string(!from ? lo : hi) + " is unreadable";
    if (tcp::choose_addresses(from->nets, from->netns, *to).empty())
      return "rank " + std::to_string(lo) + " has no IPv4 address from which to reach rank " + std::to_string(hi);
    return std::nullopt;
  }

  Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline deadline) override {
    if (!listener_) return LF_FAIL(LF_ERR_UNAVAILABLE, "tcp did not start on rank %d", rank_);
    if (peer == rank_ || peer < 0 || peer >= world.size())
      return LF_FAIL(LF_ERR_INVALID_ARG, "tcp: cannot connect rank %d to rank %d", rank_, peer);
    uint32_t seq;
    {
      std::lock_guard g(mu_);
      seq = next_seq_[peer]++;
    }
    if (peer > rank_) return dial(world, peer, seq, deadline);
    return tcp::accepting_endpoint(*listener_, s_, peer, seq, deadline, closer_);
  }

 private:
  Result<std::unique_ptr<Endpoint>> dial(World &world, int peer, uint32_t seq, Deadline deadline) {
    auto addr = tcp::parse_address(world.address(peer, "tcp"));
    if (!addr)
      return LF_FAIL(LF_ERR_PROTOCOL, "rank %d published an unreadable tcp address: %s", peer,
                     addr.error().message.c_str());
    std::vector<uint32_t> candidates = tcp::choose_addresses(mine_, netns_, *addr);
    if (candidates.empty())
      return LF_FAIL(LF_ERR_UNAVAILABLE, "rank %d published no address reachable from here", peer);
    Fd fd;
    std::string errors;
    for (size_t i = 0; i < candidates.size() && !fd; ++i) {
      SockAddr sa{SockAddr::Family::tcp, ip_text(candidates[i]), addr->port};
      // Leave time for the other candidates when this one does not answer.
      Deadline d = i + 1 < candidates.size() ? std::min(deadline, Clock::now() + std::chrono::seconds(3)) : deadline;
      auto c = connect_to(sa, d);
      if (c) {
        fd = std::move(*c);
        LF_LOG(debug, "tcp: rank %d -> rank %d via %s", rank_, peer, sa.to_string().c_str());
      } else {
        errors += (errors.empty() ? "" : "; ") + c.error().message;
      }
    }
    if (!fd) return LF_FAIL(LF_ERR_TIMEOUT, "cannot reach rank %d over tcp: %s", peer, errors.c_str());
    tcp::AckCheck check;
    tcp::HandshakeBytes hello =
        tcp::make_hello(key_, static_cast<uint32_t>(rank_), static_cast<uint32_t>(peer), seq, addr->nonce, &check);
    // Into a fresh socket's empty buffer: does not wait for the peer.
    if (auto st = send_all(fd.get(), hello.data(), hello.size(), deadline); !st) return std::unexpected(st.error());
    return tcp::connected_endpoint(std::move(fd), s_, peer, std::move(check), closer_);
  }

  int rank_ = 0;
  tcp::Settings s_;
  JobKey key_;
  std::string netns_;
  std::vector<tcp::Ipv4Net> mine_;
  std::unique_ptr<tcp::Listener> listener_;
  std::shared_ptr<tcp::Closer> closer_;  // closed channels' sockets, lingering

  std::mutex mu_;  // next_seq_: channels may open from any thread
  std::map<int, uint32_t> next_seq_;
};

}  // namespace

std::unique_ptr<Transport> make_tcp_transport() { return std::make_unique<TcpTransport>(); }

}  // namespace lf
