// The shared-memory transport: connection setup.
//
// Every rank listens on an abstract Unix socket (no file anywhere; scoped by
// the network namespace) named lavaflow-<boot id prefix>-<pid>-<random>. For
// a channel the lower rank connects to the higher rank's listener; the higher
// rank accepts, checks SO_PEERCRED (same user only), creates the ring segment
// (a sealed memfd) and passes it back with SCM_RIGHTS. Both sides probe
// process_vm_readv on each other during the handshake, so CMA is used only
// where the kernel allows it (containers often forbid it).
//
// While a rank waits in connect() it keeps serving its listener: handshakes
// from other peers complete at once and the connections are stashed for
// their own connect() call, so ranks that open channels in different orders
// never wait on each other in a cycle. All handshakes under way are polled
// together, so connections that stay silent (from another user, refused at
// accept, or from this one, dropped after 5 s) delay no real rank.
//
// The same class, with another name, is the GPU IPC transports "vulkan-ipc"
// and "cuda-ipc" (transport/gpu/gpu_ipc.hpp): they listen on sockets of their
// own, publish the devices this process can import on next to the address,
// refuse peers with no device in common, and their endpoints send exportable
// device buffers as descriptors. Everything else is shm's.
#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "core/config.hpp"
#include "core/log.hpp"
#include "transport/filter.hpp"
#include "transport/gpu/gpu_ipc.hpp"
#include "transport/shm/shm_endpoint.hpp"
#include "transport/shm/shm_protocol.hpp"
#include "transport/shm/shm_rings.hpp"
#include "transport/transport.hpp"
#include "transport/world.hpp"

namespace lf {

namespace {

using namespace shm;

uint64_t random64() noexcept {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != sizeof v)
    v = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^ getpid();
  return v;
}

/// True when this process can read `value` at `addr` in `pid`.
bool cma_probe(pid_t pid, uint64_t addr, uint64_t value) noexcept {
  uint64_t got = 0;
  iovec local{&got, sizeof got}, remote{reinterpret_cast<void *>(addr), sizeof got};
  return process_vm_readv(pid, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(sizeof got) && got == value;
}

Status check_same_user(int sock, int peer) {
  auto cred = peer_credentials(sock);
  if (!cred) return std::unexpected(cred.error());
  if (cred->uid != geteuid())
    return LF_FAIL(LF_ERR_UNAVAILABLE, "shm: the process claiming to be rank %d runs as uid %u, not %u; refused", peer,
                   static_cast<unsigned>(cred->uid), static_cast<unsigned>(geteuid()));
  return {};
}

/// The address a rank published: the socket, then "#<device identity>" for
/// the GPU IPC variants.
std::string socket_part(const std::string &address) { return address.substr(0, address.find('#')); }
std::string identity_part(const std::string &address) {
  const size_t at = address.find('#');
  return at == std::string::npos ? std::string() : address.substr(at + 1);
}

class ShmTransport final : public Transport {
 public:
  /// `api` 0: plain shm; else a gpu_ipc::Api (vulkan-ipc, cuda-ipc).
  explicit ShmTransport(int api = 0) : api_(api) {}

  const char *name() const noexcept override {
    return api_ == 0 ? "shm" : api_ == static_cast<int>(gpu_ipc::Api::vulkan) ? "vulkan-ipc" : "cuda-ipc";
  }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.local = true;
    c.zero_copy = true;
    if (api_ == 0) {
      c.memory_kinds = kHostKinds;
    } else {
      // Native for their device kinds only: host channels keep using shm
      // (and fall to tcp, not to a GPU variant, when shm is excluded).
      c.memory_kinds = api_ == static_cast<int>(gpu_ipc::Api::vulkan)
                           ? kind_bit(MemoryKind::vulkan_device) | kind_bit(MemoryKind::vulkan_host_visible)
                           : kind_bit(MemoryKind::cuda_device);
    }
    return c;
  }

  std::optional<Cost> estimate(const CostQuery &q) const noexcept override {
    if (q.scope != Scope::local) return std::nullopt;
    const Cost rings{0.15, 30};  // docs/performance.md: 8 B one-way, 1 MiB windowed bandwidth
    if (api_ == 0) return kHostKinds & kind_bit(q.kind) ? rings : staged(rings);
    // A GPU variant moves its device kinds by handle (zero copy, imports
    // cached); host messages it would carry on shm's rings, so it never
    // beats shm for them, and never serves them at all: a host channel with
    // shm excluded goes to tcp, as the design card says.
    if (!(caps().memory_kinds & kind_bit(q.kind))) return std::nullopt;
    return Cost{2, 100};
  }

  std::optional<std::string> unavailable_reason() const override {
    if (api_ == static_cast<int>(gpu_ipc::Api::vulkan) && !LAVAFLOW_HAVE_VULKAN)
      return std::string("lavaflow was built without Vulkan (LAVAFLOW_WITH_VULKAN)");
    if (api_ == static_cast<int>(gpu_ipc::Api::cuda) && !LAVAFLOW_HAVE_CUDA)
      return std::string("lavaflow was built without CUDA (LAVAFLOW_WITH_CUDA)");
    if (api_ != 0 && !TransportFilter::from_environment().permits(name()))
      return std::string("not started: LF_TRANSPORTS excludes it");
    if (api_ != 0 && !identity()) return identity().error().message;
    return std::nullopt;
  }

  Result<std::string> start(World &world) override {
    std::string identity;
    if (api_ != 0) {
      if (!this->identity()) return std::unexpected(this->identity().error());
      identity = *this->identity();
    }
    // Locations are exchanged after start(): read the boot id here. It only
    // makes the name readable in /proc/net/unix; the random part makes it unique.
    char boot[9] = "nobootid";
    if (FILE *f = std::fopen("/proc/sys/kernel/random/boot_id", "r")) {
      if (std::fscanf(f, "%8[0-9a-f]", boot) != 1) std::strcpy(boot, "nobootid");
      std::fclose(f);
    }
    char name[96];
    std::snprintf(name, sizeof name, "lavaflow-%s-%d-%016" PRIx64, boot, static_cast<int>(getpid()), random64());
    SockAddr a;
    a.family = SockAddr::Family::unix_abstract;
    a.host = name;
    auto fd = listen_on(a);
    if (!fd) return std::unexpected(fd.error());
    if (auto st = set_nonblocking(fd->get(), true); !st) return std::unexpected(st.error());
    listener_ = std::move(*fd);
    rank_ = world.rank();
    return api_ == 0 ? a.to_string() : a.to_string() + "#" + identity;
  }

  std::optional<std::string> unusable_for(World &world, int peer) const override {
    // Only what both ranks know: the two locations and the published address.
    const ProcessLocation &me = world.location(world.rank()), &other = world.location(peer);
    const std::string &mine = world.address(world.rank(), name()), &theirs = world.address(peer, name());
    if (mine.empty() || theirs.empty()) return std::string("no ") + name() + " address published";
    ScopeDecision sd = world.scope(peer);
    if (sd.scope != Scope::local) return "scope is " + std::string(scope_name(sd.scope)) + ", shm needs local";
    if (me.net_ns != other.net_ns)
      return "different network namespaces (" + std::to_string(me.net_ns) + " vs " + std::to_string(other.net_ns) +
             "): the abstract Unix socket is unreachable";
    if (me.uid != other.uid)
      return "different users (uid " + std::to_string(me.uid) + " vs " + std::to_string(other.uid) +
             "): SO_PEERCRED would refuse the connection";
    if (api_ != 0)
      return gpu_ipc::identity_mismatch(static_cast<gpu_ipc::Api>(api_), identity_part(mine), identity_part(theirs));
    return std::nullopt;
  }

  Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline deadline) override {
    std::lock_guard g(mu_);
    if (!listener_) return LF_FAIL(LF_ERR_UNAVAILABLE, "shm transport did not start");
    if (peer == rank_ || peer < 0 || peer >= world.size())
      return LF_FAIL(LF_ERR_INVALID_ARG, "shm: cannot connect rank %d to rank %d", rank_, peer);
    const Tunables t = Tunables::from_config();
    auto conn = rank_ < peer ? dial(world, peer, deadline, t) : await(world, peer, deadline, t);
    if (!conn) return std::unexpected(conn.error());
    return make_endpoint(std::move(*conn), t, DeviceIpc{api_, identity_part(world.address(peer, name()))});
  }

 private:
  /// Lower rank: connect to the peer's listener and complete the handshake,
  /// serving our own listener meanwhile.
  Result<Connection> dial(World &world, int peer, Deadline deadline, const Tunables &t) {
    auto addr = SockAddr::parse(socket_part(world.address(peer, name())));
    if (!addr) return std::unexpected(addr.error());
    auto sock = connect_to(*addr, deadline);
    if (!sock) return std::unexpected(sock.error());
    if (auto st = check_same_user(sock->get(), peer); !st) return std::unexpected(st.error());
    auto cred = peer_credentials(sock->get());
    if (!cred) return std::unexpected(cred.error());
    // The peer reads this word with process_vm_readv during the handshake;
    // it lives on this stack frame until the reply arrived.
    volatile uint64_t probe = random64() | 1;
    Hello h{kSegmentMagic, kVersion, rank_, peer, 0, reinterpret_cast<uintptr_t>(&probe), probe};
    if (auto st = send_all(sock->get(), &h, sizeof h, deadline); !st) return std::unexpected(st.error());
    for (;;) {
      pollfd p{sock->get(), POLLIN, 0};
      if (auto st = serve(world, &p, deadline, t); !st) return std::unexpected(st.error());
      if (p.revents) break;
      if (Clock::now() >= deadline)
        return LF_FAIL(LF_ERR_TIMEOUT, "shm: rank %d did not answer the handshake in time", peer);
    }
    Reply r{};
    auto fd = recv_fd(sock->get(), &r, sizeof r, deadline);
    if (!fd) return std::unexpected(fd.error());
    if (r.magic != kSegmentMagic || r.version != kVersion || r.from_rank != peer)
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: malformed handshake reply from rank %d", peer);
    if (r.status != LF_OK)
      return LF_FAIL(r.status, "shm: rank %d refused the connection (%s)", peer, status_string(r.status));
    const std::string who = "rank " + std::to_string(peer);
    auto seg = map_rings(std::move(*fd), r.segment_bytes, who.c_str());
    if (!seg) return std::unexpected(seg.error());
    Final f{kSegmentMagic, cma_probe(cred->pid, r.probe_addr, r.probe_value) ? 1u : 0u, 0};
    if (auto st = send_all(sock->get(), &f, sizeof f, deadline); !st) return std::unexpected(st.error());
    Connection c;
    c.sock = std::move(*sock);
    c.segment = std::move(*seg);
    c.role = 0;
    c.peer_rank = peer;
    c.peer_pid = cred->pid;
    c.peer_reads_me = r.can_read_you != 0;
    return c;
  }

  /// Higher rank: take a stashed connection from `peer` or serve the
  /// listener until it arrives, stashing the others.
  Result<Connection> await(World &world, int peer, Deadline deadline, const Tunables &t) {
    for (;;) {
      if (auto it = stash_.find(peer); it != stash_.end() && !it->second.empty()) {
        Connection c = std::move(it->second.front());
        it->second.pop_front();
        return c;
      }
      if (Clock::now() >= deadline) return LF_FAIL(LF_ERR_TIMEOUT, "shm: rank %d never connected", peer);
      if (auto st = serve(world, nullptr, deadline, t); !st) return std::unexpected(st.error());
    }
  }

  /// An accepted connection whose handshake is under way. All of them are
  /// served together from one poll(): a connection that stays silent costs
  /// a slot until its 5 s are up, never another handshake's time.
  struct Incoming {
    Fd sock;
    PeerCred cred{};
    Deadline until;  ///< for its Hello; a rank that sent one may take longer
    Hello hello{};
    size_t got = 0;
    bool replied = false;  ///< Reply and segment sent; waiting for Final
    std::shared_ptr<SharedSegment> segment;
    std::unique_ptr<uint64_t> probe;  ///< read by the peer's process_vm_readv until Final
    Final fin{};
    size_t fin_got = 0;
  };
  static constexpr double kHelloSeconds = 5;
  static constexpr size_t kMaxSilent = 64;

  /// One round of serving the listener and the handshakes under way, until
  /// something happened or `deadline`; `extra` (the caller's own socket) is
  /// polled along and its revents filled in.
  Status serve(World &world, pollfd *extra, Deadline deadline, const Tunables &t) {
    std::vector<pollfd> fds;
    if (extra) fds.push_back(*extra);
    const size_t first = fds.size();
    fds.push_back({listener_.get(), POLLIN, 0});
    Deadline wake = deadline;
    for (const Incoming &in : incoming_) {
      fds.push_back({in.sock.get(), POLLIN, 0});
      if (!in.replied) wake = std::min(wake, in.until);
    }
    int rc = ::poll(fds.data(), fds.size(), ms_left(wake));
    if (rc < 0 && errno != EINTR) return std::unexpected(sys_error(errno, "poll"));
    if (extra) extra->revents = rc > 0 ? fds[0].revents : 0;
    if (rc > 0) {
      for (size_t i = incoming_.size(); i-- > 0;)
        if (fds[first + 1 + i].revents && !advance(world, incoming_[i], t))
          incoming_.erase(incoming_.begin() + static_cast<std::ptrdiff_t>(i));
      if (fds[first].revents & POLLIN) accept_new();
    }
    const Deadline now = Clock::now();
    std::erase_if(incoming_, [&](const Incoming &in) {
      if (in.replied || in.until > now) return false;
      LF_LOG(warn, "shm: dropped a connection that sent no handshake within %.0f s", kHelloSeconds);
      return true;
    });
    return {};
  }

  /// Accept every waiting connection. Another user's is refused at once
  /// (SO_PEERCRED), before it sends anything.
  void accept_new() {
    for (;;) {
      Fd fd = accept_waiting(listener_.get(), "shm");
      if (!fd) return;
      const int raw = fd.get();
      Incoming in;
      in.sock = std::move(fd);
      auto cred = peer_credentials(raw);
      if (!cred) {
        LF_LOG(warn, "shm: refused an incoming connection: %s", cred.error().message.c_str());
        continue;
      }
      if (cred->uid != geteuid()) {
        LF_LOG(warn, "shm: refused a connection from pid %d, uid %u (not %u)", static_cast<int>(cred->pid),
               static_cast<unsigned>(cred->uid), static_cast<unsigned>(geteuid()));
        // No fd goes to a stranger; a plain reply tells it why it failed.
        Reply r{kSegmentMagic, kVersion, rank_, LF_ERR_UNAVAILABLE, 0, 0, 0, 0};
        (void)::send(raw, &r, sizeof r, MSG_NOSIGNAL | MSG_DONTWAIT);
        continue;
      }
      in.cred = *cred;
      in.until = deadline_in(kHelloSeconds);
      if (std::count_if(incoming_.begin(), incoming_.end(), [](const Incoming &x) { return !x.replied; }) >=
          static_cast<std::ptrdiff_t>(kMaxSilent)) {
        auto oldest = std::find_if(incoming_.begin(), incoming_.end(), [](const Incoming &x) { return !x.replied; });
        LF_LOG(warn, "shm: %zu connections sent no handshake yet; dropped the oldest", kMaxSilent);
        incoming_.erase(oldest);
      }
      incoming_.push_back(std::move(in));
    }
  }

  /// Read what arrived on a handshake under way and take its next step; a
  /// finished one goes to the stash. False when the connection is done for
  /// (failures concern that one peer only: they are logged).
  bool advance(World &world, Incoming &in, const Tunables &t) {
    auto fill = [&](void *buf, size_t len, size_t &got) {
      while (got < len) {
        ssize_t n = ::recv(in.sock.get(), static_cast<char *>(buf) + got, len - got, MSG_DONTWAIT);
        if (n > 0) {
          got += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      }
      return true;
    };
    if (!in.replied) {
      if (!fill(&in.hello, sizeof in.hello, in.got)) return false;
      if (in.got < sizeof in.hello) return true;
      auto st = reply(world, in, t);
      if (!st) LF_LOG(warn, "shm: refused an incoming connection: %s", st.error().message.c_str());
      return st.has_value();
    }
    if (!fill(&in.fin, sizeof in.fin, in.fin_got)) {
      LF_LOG(warn, "shm: rank %d left during its handshake", in.hello.from_rank);
      return false;
    }
    if (in.fin_got < sizeof in.fin) return true;
    if (in.fin.magic != kSegmentMagic) {
      LF_LOG(warn, "shm: malformed handshake end from rank %d", in.hello.from_rank);
      return false;
    }
    if (auto st = set_nonblocking(in.sock.get(), false); !st) {
      LF_LOG(warn, "shm: %s", st.error().message.c_str());
      return false;
    }
    Connection c;
    c.sock = std::move(in.sock);
    c.segment = std::move(in.segment);
    c.role = 1;
    c.peer_rank = in.hello.from_rank;
    c.peer_pid = in.cred.pid;
    c.peer_reads_me = in.fin.can_read_you != 0;
    try {
      stash_[c.peer_rank].push_back(std::move(c));
    } catch (const std::bad_alloc &) {
      LF_LOG(error, "shm: no memory to keep an incoming connection");
    }
    return false;  // done: it left the list for the stash
  }

  /// A complete Hello: check it, create the ring segment and send it.
  Status reply(World &world, Incoming &in, const Tunables &t) {
    const Hello &h = in.hello;
    if (h.magic != kSegmentMagic || h.version != kVersion || h.to_rank != rank_ || h.from_rank < 0 ||
        h.from_rank >= rank_ || h.from_rank >= world.size())
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: malformed handshake (from rank %d to %d)", h.from_rank, h.to_rank);
    auto seg = create_rings(t);
    if (!seg) return std::unexpected(seg.error());
    in.probe = std::make_unique<uint64_t>(random64() | 1);
    Reply r{kSegmentMagic,
            kVersion,
            rank_,
            LF_OK,
            cma_probe(in.cred.pid, h.probe_addr, h.probe_value) ? 1u : 0u,
            (*seg)->size(),
            reinterpret_cast<uintptr_t>(in.probe.get()),
            *in.probe};
    if (auto st = send_fd(in.sock.get(), (*seg)->fd(), &r, sizeof r); !st) return st;
    in.segment = std::move(*seg);
    in.replied = true;
    return {};
  }

  /// The devices this process can import on (gpu_ipc::local_identity),
  /// probed once: unavailable_reason() (lf-info) and start() both need it,
  /// and a Vulkan probe costs an instance creation.
  const Result<std::string> &identity() const {
    std::call_once(identity_once_, [this] { identity_ = gpu_ipc::local_identity(static_cast<gpu_ipc::Api>(api_)); });
    return identity_;
  }

  int api_;
  mutable std::once_flag identity_once_;
  mutable Result<std::string> identity_{std::unexpected(Error{LF_ERR_INTERNAL, "not probed"})};
  std::mutex mu_;
  Fd listener_;
  int rank_ = -1;
  std::map<int, std::deque<Connection>> stash_;
  std::vector<Incoming> incoming_;
};

}  // namespace

std::unique_ptr<Transport> make_shm_transport() { return std::make_unique<ShmTransport>(); }
std::unique_ptr<Transport> make_vulkan_ipc_transport() {
  return std::make_unique<ShmTransport>(static_cast<int>(gpu_ipc::Api::vulkan));
}
std::unique_ptr<Transport> make_cuda_ipc_transport() {
  return std::make_unique<ShmTransport>(static_cast<int>(gpu_ipc::Api::cuda));
}

}  // namespace lf
