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
// never wait on each other in a cycle.
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

#include "core/config.hpp"
#include "core/log.hpp"
#include "transport/filter.hpp"
#include "transport/gpu/gpu_ipc.hpp"
#include "transport/shm/shm_endpoint.hpp"
#include "transport/shm/shm_protocol.hpp"
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
    c.max_message = kMaxMessage;
    if (api_ == 0) {
      c.memory_kinds = kHostKinds;
      c.priority = 90;  // above tcp and mpi: on one host, shared memory wins
    } else {
      // Native for their device kinds only: host channels keep using shm
      // (and fall to tcp, not to a GPU variant, when shm is excluded).
      c.memory_kinds = api_ == static_cast<int>(gpu_ipc::Api::vulkan)
                           ? kind_bit(MemoryKind::vulkan_device) | kind_bit(MemoryKind::vulkan_host_visible)
                           : kind_bit(MemoryKind::cuda_device);
      c.priority = 85;
    }
    return c;
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
      pollfd p[2] = {{sock->get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
      int rc = ::poll(p, 2, ms_left(deadline));
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) return std::unexpected(sys_error(errno, "poll"));
      if (rc == 0) return LF_FAIL(LF_ERR_TIMEOUT, "shm: rank %d did not answer the handshake in time", peer);
      if (p[1].revents & POLLIN) serve_one(world, deadline, t);
      if (p[0].revents) break;
    }
    Reply r{};
    auto fd = recv_fd(sock->get(), &r, sizeof r, deadline);
    if (!fd) return std::unexpected(fd.error());
    if (r.magic != kSegmentMagic || r.version != kVersion || r.from_rank != peer)
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: malformed handshake reply from rank %d", peer);
    if (r.status != LF_OK)
      return LF_FAIL(r.status, "shm: rank %d refused the connection (%s)", peer, status_string(r.status));
    int seals = fcntl(fd->get(), F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: rank %d sent a ring segment that is not sealed against shrinking", peer);
    if (r.segment_bytes < sizeof(SegmentHeader) || r.segment_bytes > (uint64_t{1} << 40))
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: rank %d announced a ring segment of %" PRIu64 " bytes", peer,
                     r.segment_bytes);
    auto seg = SharedSegment::map(fd->release(), r.segment_bytes, 0);
    if (!seg) return std::unexpected(seg.error());
    SegmentHeader hdr;
    std::memcpy(&hdr, (*seg)->base(), sizeof hdr);
    if (const char *err = check_header(hdr, (*seg)->size()))
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: ring segment from rank %d: %s", peer, err);
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

  /// Higher rank: take a stashed connection from `peer` or accept until it
  /// arrives, stashing the others.
  Result<Connection> await(World &world, int peer, Deadline deadline, const Tunables &t) {
    for (;;) {
      if (auto it = stash_.find(peer); it != stash_.end() && !it->second.empty()) {
        Connection c = std::move(it->second.front());
        it->second.pop_front();
        return c;
      }
      pollfd p{listener_.get(), POLLIN, 0};
      int rc = ::poll(&p, 1, ms_left(deadline));
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) return std::unexpected(sys_error(errno, "poll"));
      if (rc == 0) return LF_FAIL(LF_ERR_TIMEOUT, "shm: rank %d never connected", peer);
      serve_one(world, deadline, t);
    }
  }

  /// Accept one connection and complete its handshake; the result goes to
  /// the stash. Failures concern that one peer only: they are logged.
  void serve_one(World &world, Deadline deadline, const Tunables &t) {
    auto c = accept_and_handshake(world, deadline, t);
    if (!c) {
      LF_LOG(warn, "shm: refused an incoming connection: %s", c.error().message.c_str());
      return;
    }
    try {
      stash_[c->peer_rank].push_back(std::move(*c));
    } catch (const std::bad_alloc &) {
      LF_LOG(error, "shm: no memory to keep an incoming connection");
    }
  }

  Result<Connection> accept_and_handshake(World &world, Deadline outer, const Tunables &t) {
    // A stranger that connects and stays silent must not hold this rank for
    // the whole connect timeout.
    const Deadline deadline = std::min(outer, deadline_in(5));
    auto sock = accept_one(listener_.get(), deadline);
    if (!sock) return std::unexpected(sock.error());
    auto cred = peer_credentials(sock->get());
    if (!cred) return std::unexpected(cred.error());
    Hello h{};
    if (auto st = recv_all(sock->get(), &h, sizeof h, deadline); !st) return std::unexpected(st.error());
    if (h.magic != kSegmentMagic || h.version != kVersion || h.to_rank != rank_ || h.from_rank < 0 ||
        h.from_rank >= rank_ || h.from_rank >= world.size())
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: malformed handshake (from rank %d to %d)", h.from_rank, h.to_rank);
    auto refuse = [&](lf_status_t code) {
      Reply r{kSegmentMagic, kVersion, rank_, code, 0, 0, 0, 0};
      (void)send_all(sock->get(), &r, sizeof r, deadline);
    };
    if (auto st = check_same_user(sock->get(), h.from_rank); !st) {
      // No fd goes to a stranger; a plain reply tells it why it failed.
      refuse(st.error().code);
      return std::unexpected(st.error());
    }
    Layout l;
    if (!compute_layout(t.ring_slots, kMinCtl * 16, t.fifo_bytes, l))
      return LF_FAIL(LF_ERR_INVALID_ARG, "shm: LF_SHM_RING_SLOTS/LF_SHM_FIFO_BYTES out of bounds");
    auto seg = SharedSegment::create(l.total_bytes, "lf-shm-ring");
    if (!seg) return std::unexpected(seg.error());
    SegmentHeader hdr{
        kSegmentMagic, kVersion, t.ring_slots, kMinCtl * 16, 0, t.fifo_bytes, {l.dir_offset[0], l.dir_offset[1]},
        l.total_bytes};
    std::memcpy((*seg)->base(), &hdr, sizeof hdr);  // the rest of a new memfd reads as zero
    volatile uint64_t probe = random64() | 1;
    Reply r{kSegmentMagic,
            kVersion,
            rank_,
            LF_OK,
            cma_probe(cred->pid, h.probe_addr, h.probe_value) ? 1u : 0u,
            (*seg)->size(),
            reinterpret_cast<uintptr_t>(&probe),
            probe};
    if (auto st = send_fd(sock->get(), (*seg)->fd(), &r, sizeof r); !st) return std::unexpected(st.error());
    Final f{};
    if (auto st = recv_all(sock->get(), &f, sizeof f, deadline); !st) return std::unexpected(st.error());
    if (f.magic != kSegmentMagic)
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: malformed handshake end from rank %d", h.from_rank);
    Connection c;
    c.sock = std::move(*sock);
    c.segment = std::move(*seg);
    c.role = 1;
    c.peer_rank = h.from_rank;
    c.peer_pid = cred->pid;
    c.peer_reads_me = f.can_read_you != 0;
    return c;
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
