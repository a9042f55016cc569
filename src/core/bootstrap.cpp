#include "core/bootstrap.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "core/bootstrap_wire.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/net.hpp"
#include "lavaflow_features.h"
#if LAVAFLOW_HAVE_MPI
#include "core/bootstrap_mpi.hpp"
#endif

namespace lf {

namespace {

class SingleBootstrap final : public Bootstrap {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  const char *name() const noexcept override { return "single"; }
  Result<std::vector<std::string>> allgather(const std::string &mine) override { return std::vector{mine}; }
  Status barrier(const Idle &) override { return {}; }
};

namespace wire = bootstrap_wire;

constexpr double kDefaultTimeoutSeconds = 60;

/// How long one pending connection may take to complete its handshake at
/// rank 0 (capped by LF_BOOTSTRAP_TIMEOUT). Handshakes are served together,
/// so this bounds resources held by a silent stranger, not anyone's wait.
constexpr double kHandshakeSeconds = 5;
/// Connections rank 0 keeps in handshake at once; a new one beyond this
/// drops the oldest (a real rank that is dropped connects again).
constexpr size_t kMaxPending = 64;

/// Same user, or root: the only peers a unix: bootstrap talks to.
Status check_peer_user(int fd, const char *who) {
  auto cred = peer_credentials(fd);
  if (!cred) return std::unexpected(cred.error());
  if (cred->uid != ::geteuid() && cred->uid != 0)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "bootstrap: %s runs as uid %u, not %u (or root); refused", who,
                   static_cast<unsigned>(cred->uid), static_cast<unsigned>(::geteuid()));
  return {};
}

/// Wait without a time limit until `fd` has something to read (data or a
/// hang-up): the entry of a barrier, which waits for the slowest rank,
/// calling `idle` (when set) every millisecond meanwhile.
Status wait_readable(int fd, const Bootstrap::Idle &idle) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, idle ? 1 : -1);
    if (rc > 0) return {};
    if (rc < 0 && errno != EINTR) return std::unexpected(sys_error(errno, "poll"));
    if (rc == 0) idle();
  }
}

// Star topology around rank 0: fine for the handful of collectives the
// bootstrap does (startup, barriers); data never flows through it. Every
// connection proves the job key before rank 0 counts it as a rank, and rank
// 0 proves the key back before a joiner sends it anything (bootstrap_wire.hpp).
class RendezvousBootstrap final : public Bootstrap {
 public:
  RendezvousBootstrap(int rank, int size, bool unix_socket, JobKey key, double timeout_s)
      : rank_(rank), size_(size), unix_(unix_socket), timeout_s_(timeout_s) {
    set_job_key(std::move(key));
  }
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char *name() const noexcept override { return unix_ ? "unix" : "tcp"; }

  Status start(const SockAddr &addr) { return rank_ == 0 ? serve(addr) : join(addr); }

  Result<std::vector<std::string>> allgather(const std::string &mine) override { return gather(mine, nullptr); }

  Status barrier(const Idle &idle) override {
    static const Idle none;
    auto r = gather({}, idle ? &idle : &none);
    if (!r) return std::unexpected(r.error());
    return {};
  }

  ~RendezvousBootstrap() override {
    if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str());
  }

 private:
  struct Pending {
    Fd fd;
    JobKey::Nonce nonce{};
    Deadline until;
    wire::Join join{};
    size_t got = 0;
  };

  // ---- rank 0 --------------------------------------------------------------

  Status serve(const SockAddr &addr) {
    const Deadline deadline = deadline_in(timeout_s_);
    auto lfd = listen_on(addr, size_ + 16);
    if (!lfd) return std::unexpected(lfd.error());
    if (addr.family == SockAddr::Family::unix_path) unlink_path_ = addr.host;
    if (auto st = set_nonblocking(lfd->get(), true); !st) return st;
    peers_.resize(static_cast<size_t>(size_));
    std::deque<Pending> pending;
    int arrived = 1, refused_key = 0;
    while (arrived < size_) {
      Deadline wake = deadline;
      for (const Pending &p : pending) wake = std::min(wake, p.until);
      std::vector<pollfd> fds{{lfd->get(), POLLIN, 0}};
      for (const Pending &p : pending) fds.push_back({p.fd.get(), POLLIN, 0});
      int rc = ::poll(fds.data(), fds.size(), ms_left(wake));
      if (rc < 0 && errno != EINTR) return std::unexpected(sys_error(errno, "poll on the bootstrap listener"));
      // Pending connections first (their indices match fds[1..]), then new ones.
      for (size_t i = pending.size(); i-- > 0;) {
        if (rc <= 0 || !fds[i + 1].revents) continue;
        Pending &p = pending[i];
        if (!receive_join(p)) {
          pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
          continue;
        }
        if (p.got < sizeof p.join) continue;
        Pending done = std::move(p);
        pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
        switch (admit(done)) {
          case wire::kOk: ++arrived; break;
          case wire::kWrongKey: ++refused_key; break;
          default: break;
        }
      }
      if (rc > 0 && (fds[0].revents & POLLIN)) accept_all(lfd->get(), pending);
      const Deadline now = Clock::now();
      while (!pending.empty() && pending.front().until <= now) {
        LF_LOG(warn, "bootstrap: dropped a connection that did not complete the handshake within %g s",
               std::min(timeout_s_, kHandshakeSeconds));
        pending.pop_front();
      }
      if (arrived < size_ && now >= deadline) {
        std::string missing;
        for (int r = 1; r < size_; ++r)
          if (!peers_[static_cast<size_t>(r)]) missing += (missing.empty() ? "" : ",") + std::to_string(r);
        std::string refused =
            refused_key ? "; " + std::to_string(refused_key) +
                              " connection(s) were refused because they could not prove the job key (every rank "
                              "needs the same LF_JOB_KEY or LF_JOB_KEY_FILE)"
                        : std::string();
        return LF_FAIL(LF_ERR_TIMEOUT,
                       "bootstrap at %s: %d of %d ranks arrived within %g s; missing rank(s) %s%s "
                       "(raise LF_BOOTSTRAP_TIMEOUT or check that every rank was started)",
                       addr.to_string().c_str(), arrived, size_, timeout_s_, missing.c_str(), refused.c_str());
      }
    }
    // Nobody else connects after this point; remove the socket file now.
    if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str()), unlink_path_.clear();
    return {};
  }

  /// Accept every waiting connection and send each its challenge.
  void accept_all(int lfd, std::deque<Pending> &pending) {
    for (;;) {
      Fd fd = accept_waiting(lfd, "bootstrap");
      if (!fd) return;
      const int raw = fd.get();
      Pending p;
      p.fd = std::move(fd);
      if (!unix_) {
        int one = 1;
        ::setsockopt(raw, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      } else if (auto st = check_peer_user(raw, "a process connecting to the bootstrap socket"); !st) {
        LF_LOG(warn, "%s", st.error().message.c_str());
        continue;
      }
      p.nonce = random_nonce();
      p.until = std::min(deadline_in(std::min(timeout_s_, kHandshakeSeconds)), deadline_in(timeout_s_));
      wire::Challenge c{
          wire::kChallengeMagic, wire::kVersion, size_, job_key().set() ? uint8_t{1} : uint8_t{0}, {}, p.nonce};
      // 32 bytes into a fresh socket's empty buffer: never blocks.
      if (!send_all(raw, &c, sizeof c, deadline_in(1))) continue;
      if (pending.size() >= kMaxPending) {
        LF_LOG(warn, "bootstrap: %zu connections in handshake at once; dropped the oldest", pending.size());
        pending.pop_front();
      }
      pending.push_back(std::move(p));
    }
  }

  /// Read what has arrived of a Join; false when the connection is done for.
  static bool receive_join(Pending &p) {
    auto *buf = reinterpret_cast<uint8_t *>(&p.join);
    while (p.got < sizeof p.join) {
      ssize_t n = ::recv(p.fd.get(), buf + p.got, sizeof p.join - p.got, MSG_DONTWAIT);
      if (n > 0) {
        p.got += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      LF_LOG(debug, "bootstrap: a connection closed during its handshake");
      return false;
    }
    return true;
  }

  /// Judge a complete Join: a rank is admitted only once its proof verifies.
  int32_t admit(Pending &p) {
    const wire::Join &j = p.join;
    if (j.magic != wire::kJoinMagic) {
      LF_LOG(warn, "bootstrap: dropped a connection that is not a lavaflow rank (greeting %08x)", j.magic);
      return wire::kBadVersion;
    }
    int32_t verdict = wire::kOk;
    if (j.version != wire::kVersion)
      verdict = wire::kBadVersion;
    else if (!job_key().verify(wire::transcript(wire::Side::join, j.rank, j.size, p.nonce, j.nonce), j.proof))
      verdict = wire::kWrongKey;
    else if (j.size != size_)
      verdict = wire::kWrongSize;
    else if (j.rank <= 0 || j.rank >= size_)
      verdict = wire::kBadRank;
    else if (peers_[static_cast<size_t>(j.rank)])
      verdict = wire::kRankTaken;
    wire::Welcome w{wire::kWelcomeMagic, verdict, {}};
    if (verdict == wire::kOk)
      w.proof = job_key().prove(wire::transcript(wire::Side::root, j.rank, j.size, p.nonce, j.nonce));
    if (verdict != wire::kOk)
      LF_LOG(warn, "bootstrap: refused a process claiming rank %d of %d: %s", j.rank, j.size,
             wire::refusal_string(verdict));
    if (auto st = send_all(p.fd.get(), &w, sizeof w, deadline_in(std::min(timeout_s_, kHandshakeSeconds))); !st) {
      LF_LOG(warn, "bootstrap: rank %d left during its handshake: %s", j.rank, st.error().message.c_str());
      return wire::kBadVersion;
    }
    if (verdict == wire::kOk) peers_[static_cast<size_t>(j.rank)] = std::move(p.fd);
    return verdict;
  }

  // ---- ranks 1.. -------------------------------------------------------------

  Status join(const SockAddr &addr) {
    const Deadline deadline = deadline_in(timeout_s_);
    const std::string where = addr.to_string();
    for (int attempt = 0;; ++attempt) {
      if (attempt > 0) {
        // Rank 0 dropped us before our turn (too many connections at once):
        // back off from 1 to 50 ms and connect again; a retry, not ordering.
        if (Clock::now() >= deadline)
          return LF_FAIL(LF_ERR_TIMEOUT, "bootstrap: rank %d: rank 0 at %s kept closing the connection for %g s", rank_,
                         where.c_str(), timeout_s_);
        ::poll(nullptr, 0, std::min(attempt < 6 ? 1 << attempt : 50, std::max(ms_left(deadline), 1)));
      }
      auto fd = connect_to(addr, deadline);
      if (!fd)
        return LF_FAIL(fd.error().code, "bootstrap: rank %d could not reach rank 0 within %g s: %s", rank_, timeout_s_,
                       fd.error().message.c_str());
      if (unix_)
        if (auto st = check_peer_user(fd->get(), ("the process listening at " + where).c_str()); !st) return st;
      wire::Challenge c{};
      if (auto st = recv_all(fd->get(), &c, sizeof c, deadline); !st) {
        if (st.error().code == LF_ERR_PEER_GONE) continue;  // dropped before its turn: connect again
        return LF_FAIL(st.error().code, "bootstrap: rank %d got no challenge from rank 0 at %s within %g s: %s", rank_,
                       where.c_str(), timeout_s_, st.error().message.c_str());
      }
      if (c.magic != wire::kChallengeMagic || c.version != wire::kVersion)
        return LF_FAIL(LF_ERR_PROTOCOL,
                       "bootstrap: the process at %s is not rank 0 of a lavaflow job of this version "
                       "(greeting %08x, version %u)",
                       where.c_str(), c.magic, c.version);
      if (c.size != size_)
        return LF_FAIL(LF_ERR_INVALID_ARG, "bootstrap: rank 0 at %s runs a world of %d ranks; this rank has LF_SIZE=%d",
                       where.c_str(), c.size, size_);
      wire::Join j{wire::kJoinMagic,
                   wire::kVersion,
                   rank_,
                   size_,
                   job_key().set() ? uint8_t{1} : uint8_t{0},
                   {},
                   random_nonce(),
                   {}};
      j.proof = job_key().prove(wire::transcript(wire::Side::join, rank_, size_, c.nonce, j.nonce));
      if (auto st = send_all(fd->get(), &j, sizeof j, deadline); !st) {
        if (st.error().code == LF_ERR_PEER_GONE) continue;
        return st;
      }
      wire::Welcome w{};
      if (auto st = recv_all(fd->get(), &w, sizeof w, deadline); !st) {
        if (st.error().code == LF_ERR_PEER_GONE) continue;
        return LF_FAIL(st.error().code, "bootstrap: rank %d got no answer from rank 0 at %s within %g s: %s", rank_,
                       where.c_str(), timeout_s_, st.error().message.c_str());
      }
      if (w.magic != wire::kWelcomeMagic)
        return LF_FAIL(LF_ERR_PROTOCOL, "bootstrap: malformed answer from the process at %s", where.c_str());
      if (w.status == wire::kWrongKey) {
        const bool mine = job_key().set(), theirs = c.keyed != 0;
        const char *why = mine && theirs ? "the two job keys differ"
                          : mine         ? "rank 0 has no job key and this rank has one"
                          : theirs       ? "rank 0 has a job key and this rank has none"
                                         : "neither has a key, so rank 0 runs another lavaflow";
        return LF_FAIL(LF_ERR_PROTOCOL,
                       "bootstrap: rank 0 at %s refused rank %d: it could not verify this rank's job key (%s; this "
                       "rank's key: %s). Give every rank the same LF_JOB_KEY or LF_JOB_KEY_FILE",
                       where.c_str(), rank_, why, job_key().source().c_str());
      }
      if (w.status != wire::kOk)
        return LF_FAIL(LF_ERR_INVALID_ARG, "bootstrap: rank 0 at %s refused rank %d: %s", where.c_str(), rank_,
                       wire::refusal_string(w.status));
      if (!job_key().verify(wire::transcript(wire::Side::root, rank_, size_, c.nonce, j.nonce), w.proof))
        return LF_FAIL(LF_ERR_PROTOCOL,
                       "bootstrap: the process at %s could not prove that it holds the job key, so it is not rank 0 "
                       "of this job; nothing was sent to it (check LF_BOOTSTRAP and LF_JOB_KEY/LF_JOB_KEY_FILE)",
                       where.c_str());
      root_ = std::move(*fd);
      return {};
    }
  }

  // ---- collectives -----------------------------------------------------------

  /// A record from an admitted rank. In a barrier (`barrier_idle` set) the
  /// wait for its first byte has no limit (a barrier waits for the slowest
  /// rank, and only ranks that proved the key are connected); the rest of
  /// it, and every allgather record, must arrive within LF_BOOTSTRAP_TIMEOUT.
  Result<std::string> recv_record(int fd, Deadline deadline, const Idle *barrier_idle, uint64_t max) {
    if (barrier_idle) {
      if (auto st = wait_readable(fd, *barrier_idle); !st) return std::unexpected(st.error());
      deadline = deadline_in(timeout_s_);
    }
    return recv_msg(fd, deadline, max);
  }

  /// The allgather, or with `barrier` set the barrier that calls it while
  /// it waits.
  Result<std::vector<std::string>> gather(const std::string &mine, const Idle *barrier) {
    if (mine.size() > wire::kMaxRecord)
      return LF_FAIL(LF_ERR_INVALID_ARG, "bootstrap: a record of %zu bytes exceeds the %llu-byte limit", mine.size(),
                     static_cast<unsigned long long>(wire::kMaxRecord));
    const Deadline deadline = deadline_in(timeout_s_);
    std::vector<std::string> all(static_cast<size_t>(size_));
    if (rank_ == 0) {
      all[0] = mine;
      for (int r = 1; r < size_; ++r) {
        auto m = recv_record(peers_[static_cast<size_t>(r)].get(), deadline, barrier, wire::kMaxRecord);
        if (!m) return std::unexpected(annotate(m.error(), r));
        all[static_cast<size_t>(r)] = std::move(*m);
      }
      std::string packed;
      for (const auto &s : all) {
        uint64_t n = s.size();
        packed.append(reinterpret_cast<const char *>(&n), sizeof n).append(s);
      }
      const Deadline out = deadline_in(timeout_s_);
      for (int r = 1; r < size_; ++r)
        if (auto st = send_msg(peers_[static_cast<size_t>(r)].get(), packed, out); !st)
          return std::unexpected(annotate(st.error(), r));
      return all;
    }
    if (auto st = send_msg(root_.get(), mine, deadline); !st) return std::unexpected(annotate(st.error(), 0));
    auto packed = recv_record(root_.get(), deadline, barrier,
                              static_cast<uint64_t>(size_) * (sizeof(uint64_t) + wire::kMaxRecord));
    if (!packed) return std::unexpected(annotate(packed.error(), 0));
    size_t off = 0;
    for (auto &s : all) {
      uint64_t n;
      if (off + sizeof n > packed->size()) return LF_FAIL(LF_ERR_PROTOCOL, "bootstrap: short allgather reply");
      std::memcpy(&n, packed->data() + off, sizeof n);
      off += sizeof n;
      if (n > packed->size() - off) return LF_FAIL(LF_ERR_PROTOCOL, "bootstrap: bad allgather reply");
      s.assign(packed->data() + off, n);
      off += n;
    }
    return all;
  }

  Error annotate(Error e, int peer) const {
    e.message = "bootstrap exchange with rank " + std::to_string(peer) + ": " + e.message;
    return e;
  }
  int rank_, size_;
  bool unix_;
  double timeout_s_;
  Fd root_;
  std::vector<Fd> peers_;
  std::string unlink_path_;
};

Result<int> env_int(const char *name) {
  const char *v = std::getenv(name);
  if (!v || !*v) return LF_FAIL(LF_ERR_INVALID_ARG, "%s is not set", name);
  char *end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end || x < 0 || x > 1 << 24) return LF_FAIL(LF_ERR_INVALID_ARG, "%s=%s is not a valid number", name, v);
  return static_cast<int>(x);
}

}  // namespace

std::unique_ptr<Bootstrap> Bootstrap::single() {
  auto b = std::make_unique<SingleBootstrap>();
  // No peer ever needs this key: a random one means nobody can connect to
  // this rank's transports.
  if (auto key = JobKey::random("random (a world of one)")) b->set_job_key(std::move(*key));
  return b;
}

bool Bootstrap::launched_by_mpi() noexcept {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK") ||
         std::getenv("MPI_LOCALNRANKS");
}

Result<std::unique_ptr<Bootstrap>> Bootstrap::rendezvous(int rank, int size, const std::string &address,
                                                         double timeout_s, JobKey key) {
  if (size < 1 || rank < 0 || rank >= size)
    return LF_FAIL(LF_ERR_INVALID_ARG, "bootstrap: rank %d is not in a world of %d", rank, size);
  auto addr = SockAddr::parse(address);
  if (!addr) return std::unexpected(addr.error());
  if (!(timeout_s > 0)) {
    // Every wait of the bootstrap has a real deadline: 0 does not mean "forever".
    LF_LOG(warn, "LF_BOOTSTRAP_TIMEOUT=%g is not a positive number of seconds; using %g", timeout_s,
           kDefaultTimeoutSeconds);
    timeout_s = kDefaultTimeoutSeconds;
  }
  auto b = std::make_unique<RendezvousBootstrap>(rank, size, addr->family != SockAddr::Family::tcp, std::move(key),
                                                 timeout_s);
  if (auto st = b->start(*addr); !st) return std::unexpected(st.error());
  return b;
}

Result<std::unique_ptr<Bootstrap>> Bootstrap::from_environment() {
  std::string mode = config::get_string("LF_BOOTSTRAP_MODE");
  bool have_env = config::is_set("LF_RANK") || config::is_set("LF_SIZE") || config::is_set("LF_BOOTSTRAP");
  if (mode == "single") return single();
  if (mode == "mpi" || (mode == "auto" && !have_env && launched_by_mpi())) {
#if LAVAFLOW_HAVE_MPI
    // MpiBootstrap::create shares rank 0's random key over MPI.
    auto b = MpiBootstrap::create();
    if (!b) return std::unexpected(b.error());
    return std::unique_ptr<Bootstrap>(std::move(*b));
#else
    return LF_FAIL(LF_ERR_UNSUPPORTED,
                   "started by an MPI launcher but this lavaflow was built without MPI; rebuild with "
                   "LAVAFLOW_WITH_MPI=ON or launch with LF_RANK, LF_SIZE and LF_BOOTSTRAP");
#endif
  }
  if (mode == "env" || (mode == "auto" && have_env)) {
    auto rank = env_int("LF_RANK");
    if (!rank) return std::unexpected(rank.error());
    auto size = env_int("LF_SIZE");
    if (!size) return std::unexpected(size.error());
    if (*size == 1 && !config::is_set("LF_BOOTSTRAP")) return single();
    std::string addr = config::get_string("LF_BOOTSTRAP");
    if (addr.empty()) return LF_FAIL(LF_ERR_INVALID_ARG, "LF_RANK/LF_SIZE are set but LF_BOOTSTRAP is not");
    auto key = JobKey::from_environment();
    if (!key) return std::unexpected(key.error());
    if (!key->set() && *size > 1)
      LF_LOG(warn,
             "job key: none: this job is unauthenticated; any process that can reach %s (another local user, or "
             "any host for tcp://) can join it or connect to its ranks. Set LF_JOB_KEY or LF_JOB_KEY_FILE on "
             "every rank",
             addr.c_str());
    return rendezvous(*rank, *size, addr, config::get_seconds("LF_BOOTSTRAP_TIMEOUT"), std::move(*key));
  }
  if (mode != "auto")
    return LF_FAIL(LF_ERR_INVALID_ARG, "LF_BOOTSTRAP_MODE=%s is not one of auto, mpi, env, single", mode.c_str());
  return single();
}

}  // namespace lf
