// The algorithms over channels. Every message of a collective carries the
// same tag (coll/wire.hpp): the collective's kind, a hash of its arguments
// and of its group, and its sequence number. Receives take the next message from the peer (the channels are
// the collectives' own, and a pair's messages arrive in order) and check
// tag and size, so that ranks disagreeing on a collective get an error
// where a specific-tag receive would wait forever.
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include "coll/engine.hpp"
#include "coll/reduce.hpp"
#include "core/log.hpp"
#include "core/scope.hpp"

namespace lf::coll {

namespace {

// Large transfers travel as segments: a receiver reduces or forwards one
// while the next is in flight, and scratch space stays bounded.
constexpr size_t kSegment = size_t(1) << 20;
constexpr size_t kWindow = 8;  // segments in flight per receive-and-reduce
// Up to this many bytes an allreduce uses recursive doubling (log2 n
// latency-bound steps); above it the ring (bandwidth-optimal).
constexpr size_t kRingFrom = 64u << 10;

const char *algo_name(Algo a) noexcept {
  switch (a) {
    case Algo::ring: return "ring";
    case Algo::recursive_doubling: return "recursive doubling";
    case Algo::cma: return "single copy";
    case Algo::hierarchical: return "hierarchical";
    case Algo::automatic: break;
  }
  return "auto";
}

}  // namespace

class Run {
 public:
  Run(Engine &e, const Args &a, uint32_t seq)
      : e_(e),
        a_(a),
        n_(e.size_),
        r_(e.rank_),
        seq_(seq),
        tag_(wire::make_tag(a.kind, wire::signature(a.kind, a.count, a.dt, a.op, a.root, e.size_, e.group_), seq)) {}
  ~Run() { drain(); }
  Run(const Run &) = delete;
  Run &operator=(const Run &) = delete;

  Status go() {
    switch (a_.kind) {
      case Kind::barrier: return barrier();
      case Kind::bcast: return bcast();
      case Kind::reduce: return reduce_to_root();
      case Kind::allreduce: return allreduce();
      case Kind::allgather: return allgather();
      case Kind::alltoall: return alltoall();
      case Kind::group: return hello();
    }
    return LF_FAIL(LF_ERR_INTERNAL, "unknown collective");
  }

 private:
  struct Xfer {
    int peer = -1;
    bool is_send = false;
    SendOp s;
    RecvOp r;
    std::unique_ptr<RecvOp> watched;  // the message comes from a watch receive, copied into r
    lf_status_t &status() noexcept { return is_send ? s.status : watched ? watched->status : r.status; }
  };

  // ---- transfers ----------------------------------------------------------------

  Channel &channel(int peer) const noexcept { return *e_.peers_[static_cast<size_t>(peer)]; }

  // The group rank of rank `i` of the current view.
  int at(int i) const noexcept { return view_.empty() ? i : view_[static_cast<size_t>(i)]; }
  // Run `f` with the ranks of `ranks` (group ranks, this one among them) as
  // its world: the algorithms then address them as 0..size-1.
  template <typename F>
  Status within(const std::vector<int> &ranks, F &&f) {
    const int n = n_, r = r_;
    view_ = ranks;
    n_ = static_cast<int>(ranks.size());
    r_ = static_cast<int>(std::find(ranks.begin(), ranks.end(), e_.rank_) - ranks.begin());
    Status st = f();
    view_.clear();
    n_ = n;
    r_ = r;
    return st;
  }

  Xfer &post_send(int peer, const void *data, size_t bytes) {
    peer = at(peer);
    Xfer &x = xfers_.emplace_back();
    x.peer = peer;
    x.is_send = true;
    x.s.tag = tag_;
    x.s.data = data;
    x.s.size = bytes;
    channel(peer).post_send(x.s);
    return x;
  }
  Xfer &post_recv(int peer, void *data, size_t bytes) {
    peer = at(peer);
    Xfer &x = xfers_.emplace_back();
    x.peer = peer;
    x.r.tag = LF_ANY_TAG;  // the next message from the peer: checked, not filtered
    x.r.data = bytes ? data : &dummy_;
    x.r.capacity = bytes;
    auto &watched = e_.watch_[static_cast<size_t>(peer)];
    if (!watched.empty()) {
      // A watch receive posted earlier takes the peer's next message: it is this one.
      x.watched = std::move(watched.front());
      watched.pop_front();
      return x;
    }
    channel(peer).post_recv(x.r);
    return x;
  }
  // Copy a watched message into the receive it belongs to, as a direct
  // receive would have completed it.
  static void settle(Xfer &x) noexcept {
    RecvOp &w = *x.watched;
    x.r.matched_tag = w.matched_tag;
    x.r.message_bytes = w.message_bytes;
    if (w.status != LF_OK) {
      x.r.error = w.error;
      x.r.status = w.status;
    } else {
      size_t n = std::min(w.message_bytes, x.r.capacity);
      if (n && w.buffer) std::memcpy(x.r.data, w.buffer->data(), n);
      x.r.bytes = n;
      x.r.status = w.message_bytes > x.r.capacity ? LF_ERR_TRUNCATED : LF_OK;
    }
    x.watched.reset();
  }

  // A wait that takes long may be a deadlock between ranks that disagree
  // (each waits on a peer whose mismatched message sits unread at a third
  // rank). Post a receive of whatever comes next on every channel this
  // collective does not read now, and look at what arrives: a message of
  // this collective number with other arguments is a mismatch. A message
  // that belongs here waits in the watch queue for its receive.
  void watch() {
    for (int p = 0; p < e_.size_; ++p) {
      if (p == e_.rank_) continue;
      auto &q = e_.watch_[static_cast<size_t>(p)];
      if (!q.empty()) continue;
      bool reading = false;
      for (Xfer &x : xfers_)
        if (x.peer == p && !x.is_send && !x.watched && __atomic_load_n(&x.r.status, __ATOMIC_ACQUIRE) == LF_IN_PROGRESS)
          reading = true;
      if (reading) continue;
      auto op = std::make_unique<RecvOp>();
      op->tag = LF_ANY_TAG;
      op->want_buffer = true;
      channel(p).post_recv(*op);
      q.push_back(std::move(op));
    }
  }
  Status check_watched() const {
    for (int p = 0; p < e_.size_; ++p)
      for (const auto &op : e_.watch_[static_cast<size_t>(p)]) {
        if (__atomic_load_n(&op->status, __ATOMIC_ACQUIRE) != LF_OK) continue;
        // This collective's message waits for its receive, whose size is
        // checked there; the next collective's first message is no sign of
        // trouble.
        if (wire::classify(tag_, op->matched_tag, op->message_bytes, op->message_bytes) == wire::Verdict::mismatch)
          return mismatch(p, op->matched_tag, op->message_bytes, 0);
      }
    return {};
  }
  static size_t segments(size_t bytes) noexcept { return bytes == 0 ? 1 : (bytes + kSegment - 1) / kSegment; }
  void send(int peer, const void *data, size_t bytes) {
    for (size_t k = 0, nseg = segments(bytes); k < nseg; ++k) {
      size_t off = k * kSegment;
      post_send(peer, static_cast<const char *>(data) + off, std::min(kSegment, bytes - off));
    }
  }
  // Returns the index of the first segment's transfer.
  size_t recv(int peer, void *data, size_t bytes) {
    size_t first = xfers_.size();
    for (size_t k = 0, nseg = segments(bytes); k < nseg; ++k) {
      size_t off = k * kSegment;
      post_recv(peer, static_cast<char *>(data) + off, std::min(kSegment, bytes - off));
    }
    return first;
  }

  Status wait(Xfer &x) {
    lf_status_t &st = x.status();
    auto done = [&] { return __atomic_load_n(&st, __ATOMIC_ACQUIRE) != LF_IN_PROGRESS; };
    Channel &ch = channel(x.peer);
    for (int64_t i = 0; !done(); ++i) {
      if (!ch.try_progress()) std::this_thread::yield();
      if (done()) break;
      // A send to one peer may need this rank's progress while it waits on
      // another: drive every collective channel now and then.
      if ((i & 7) == 7)
        for (auto &c : e_.peers_)
          if (c && c.get() != &ch) c->try_progress();
      if ((i & 63) == 63) {
        // With more ranks than cores the peer this rank waits for may be
        // waiting for this core: offer it now and then, even while spinning.
        std::this_thread::yield();
        // A peer that died leaves nothing to wait for: health() notices.
        if (auto err = ch.health(); err && !done()) return fail_from(x.peer, *err);
        e_.ctx_.progress_all();
        if (i >= e_.spin_) {
          if ((i & 4095) == 4095 || i < e_.spin_ + 64) watch();
          if (auto bad = check_watched(); !bad) return bad;
        }
      }
      // Past the spin budget, give the core away: with more ranks than
      // cores the peer this rank waits for needs it.
      if (i >= e_.spin_) {
        if (x.is_send)
          std::this_thread::yield();
        else
          ch.wait_for_activity(1);
      }
    }
    if (x.watched) settle(x);
    if (x.is_send) {
      if (x.s.status < 0) return fail_from(x.peer, make_error(x.s.status, "%s", x.s.error.c_str()));
      return {};
    }
    if ((x.r.status == LF_OK || x.r.status == LF_ERR_TRUNCATED) &&
        (x.r.status == LF_ERR_TRUNCATED ||
         wire::classify(tag_, x.r.matched_tag, x.r.capacity, x.r.message_bytes) != wire::Verdict::ok))
      return mismatch(x.peer, x.r.matched_tag, x.r.message_bytes, x.r.capacity);
    if (x.r.status < 0) return fail_from(x.peer, make_error(x.r.status, "%s", x.r.error.c_str()));
    return {};
  }
  Status wait_all() {
    for (Xfer &x : xfers_)
      if (auto st = wait(x); !st) return st;
    xfers_.clear();
    return {};
  }
  // After a failure the engine has closed the channels, which fails what is
  // still posted: wait for that before the operations' memory goes.
  void drain() noexcept {
    for (Xfer &x : xfers_) {
      lf_status_t &st = x.status();
      while (__atomic_load_n(&st, __ATOMIC_ACQUIRE) == LF_IN_PROGRESS) {
        channel(x.peer).progress();
        std::this_thread::yield();
      }
    }
    xfers_.clear();
  }

  // Errors name peers by world rank, and by group rank too in a group.
  std::string who(int peer) const {
    std::string w = "rank " + std::to_string(e_.world_rank(peer));
    if (e_.members_.size() != static_cast<size_t>(e_.ctx_.size()) || e_.world_rank(peer) != peer)
      w += " (group rank " + std::to_string(peer) + ")";
    return w;
  }
  Status fail_from(int peer, const Error &e) const {
    return LF_FAIL(e.code, "%s #%u: %s: %s", kind_name(a_.kind), seq_, who(peer).c_str(), e.message.c_str());
  }
  Status mismatch(int peer, uint64_t tag, size_t got, size_t want) const {
    std::string m = wire::describe_mismatch(e_.world_rank(peer), tag, got, tag_, want);
    if (a_.kind == Kind::group) return LF_FAIL(LF_ERR_INVALID_ARG, "%s", m.c_str());
    return LF_FAIL(LF_ERR_INVALID_ARG,
                   "%s (count %zu, %s, %s, root %d, a group of %d); every rank must call the same collectives in the "
                   "same order with the same arguments",
                   m.c_str(), a_.count, dtype_name(a_.dt), op_name(a_.op), a_.root, e_.size_);
  }

  // Receive `count` elements from `peer` and reduce them into `acc` as the
  // segments arrive, through a bounded window of scratch.
  Status recv_reduce(int peer, void *acc, size_t count) {
    const size_t es = dtype_size(a_.dt), bytes = count * es, nseg = segments(bytes);
    const size_t window = std::min(nseg, kWindow);
    char *tmp = static_cast<char *>(e_.scratch(window * std::min(kSegment, std::max<size_t>(bytes, 1))));
    const size_t slot = std::min(kSegment, std::max<size_t>(bytes, 1));
    std::vector<size_t> at(nseg);
    auto post = [&](size_t k) {
      size_t off = k * kSegment;
      at[k] = xfers_.size();
      post_recv(peer, tmp + (k % window) * slot, std::min(kSegment, bytes - off));
    };
    for (size_t k = 0; k < window; ++k) post(k);
    for (size_t k = 0; k < nseg; ++k) {
      if (auto st = wait(xfers_[at[k]]); !st) return st;
      size_t off = k * kSegment, len = std::min(kSegment, bytes - off);
      reduce(static_cast<char *>(acc) + off, tmp + (k % window) * slot, len / es, a_.dt, a_.op);
      if (k + window < nseg) post(k + window);
    }
    return {};
  }

  // ---- algorithms ------------------------------------------------------------------

  // A new group's members check that they agree on it: each sends every
  // other member its list's identity. The tags carry it too, so a member
  // with another list (or channels paired with another group's, when
  // members created their shared groups in different orders) sees a
  // mismatch rather than waiting.
  Status hello() {
    std::vector<unsigned char> got(static_cast<size_t>(n_) * wire::kHelloBytes);
    unsigned char mine[wire::kHelloBytes];
    wire::encode_hello(wire::Hello{e_.group_, static_cast<uint32_t>(n_), static_cast<uint32_t>(r_)}, mine);
    for (int s = 1; s < n_; ++s) {
      int from = (r_ - s + n_) % n_;
      recv(from, got.data() + static_cast<size_t>(from) * wire::kHelloBytes, wire::kHelloBytes);
    }
    for (int s = 1; s < n_; ++s) send((r_ + s) % n_, mine, sizeof mine);
    if (auto st = wait_all(); !st) return st;
    for (int p = 0; p < n_; ++p) {
      std::string why;
      if (p != r_ && !wire::check_hello(got.data() + static_cast<size_t>(p) * wire::kHelloBytes, wire::kHelloBytes,
                                        e_.group_, n_, p, why))
        return LF_FAIL(LF_ERR_INVALID_ARG, "group mismatch with %s: %s", who(p).c_str(), why.c_str());
    }
    return {};
  }

  Status barrier() {
    // Dissemination: ceil(log2 n) rounds, each a message to rank + k and one from rank - k.
    for (int k = 1; k < n_; k <<= 1) {
      post_recv((r_ - k + n_) % n_, nullptr, 0);
      post_send((r_ + k) % n_, nullptr, 0);
      if (auto st = wait_all(); !st) return st;
    }
    return {};
  }

  Status bcast() {
    if (n_ == 1) return {};
    // Binomial tree rooted at `root`, pipelined by segment: a rank forwards
    // a segment to its children as soon as it has it.
    const int vr = (r_ - a_.root + n_) % n_;
    int parent = -1, mask = 1;
    for (; mask < n_; mask <<= 1)
      if (vr & mask) {
        parent = (vr - mask + a_.root) % n_;
        break;
      }
    std::vector<int> children;
    for (int m = mask >> 1; m > 0; m >>= 1)
      if (vr + m < n_) children.push_back((vr + m + a_.root) % n_);
    log_choice(0, "binomial tree");
    char *buf = static_cast<char *>(a_.recv);
    const size_t bytes = a_.count, nseg = segments(bytes);
    size_t first = parent >= 0 ? recv(parent, buf, bytes) : 0;
    for (size_t k = 0; k < nseg; ++k) {
      if (parent >= 0)
        if (auto st = wait(xfers_[first + k]); !st) return st;
      size_t off = k * kSegment;
      for (int c : children) post_send(c, buf + off, std::min(kSegment, bytes - off));
    }
    return wait_all();
  }

  Status reduce_to_root() {
    const size_t es = dtype_size(a_.dt), bytes = a_.count * es;
    const bool root = r_ == a_.root;
    const void *input = a_.send == LF_IN_PLACE ? a_.recv : a_.send;
    log_choice(0, "binomial tree");
    // The accumulator: the result buffer at the root, a private copy elsewhere.
    std::unique_ptr<std::byte[]> own;
    char *acc;
    if (root) {
      acc = static_cast<char *>(a_.recv);
      if (input != acc && bytes) std::memcpy(acc, input, bytes);
    } else {
      own.reset(new std::byte[std::max<size_t>(bytes, 1)]);
      acc = reinterpret_cast<char *>(own.get());
      if (bytes) std::memcpy(acc, input, bytes);
    }
    if (n_ == 1) return {};
    const int vr = (r_ - a_.root + n_) % n_;
    for (int mask = 1; mask < n_; mask <<= 1) {
      if ((vr & mask) == 0) {
        int src = vr | mask;
        if (src < n_)
          if (auto st = recv_reduce((src + a_.root) % n_, acc, a_.count); !st) return st;
      } else {
        send(((vr & ~mask) + a_.root) % n_, acc, bytes);
        return wait_all();
      }
    }
    return wait_all();
  }

  Status allreduce() {
    const size_t es = dtype_size(a_.dt), bytes = a_.count * es;
    char *data = static_cast<char *>(a_.recv);
    Algo algo = e_.algo_;
    // Every rank takes the same branch: the arguments agree, scopes are
    // symmetric and the probe's outcome is agreed on by all.
    if (n_ > 1 && (algo == Algo::cma || (algo == Algo::automatic && bytes > kRingFrom)) && all_local()) {
      if (e_.cma_ == 0)
        if (auto st = cma_probe(); !st) return st;
      if (e_.cma_ == 1) {
        log_choice(3, "single copy (each rank reduces its share reading the peers' buffers, process_vm_readv)");
        return cma_allreduce();
      }
    }
    if (algo == Algo::cma) algo = Algo::ring;  // not available here
    if (a_.send != LF_IN_PLACE && a_.send != a_.recv && bytes) std::memcpy(data, a_.send, bytes);
    if (n_ == 1) return {};
    if (algo == Algo::hierarchical || algo == Algo::automatic) {
      Hosts h = hosts();
      if (algo == Algo::hierarchical || (h.leaders.size() > 1 && h.leaders.size() < static_cast<size_t>(n_))) {
        log_choice(4, "hierarchical (reduce within each host, allreduce across host leaders, bcast within each host)");
        return hier_allreduce(data, h);
      }
    }
    if (algo == Algo::automatic) algo = bytes <= kRingFrom ? Algo::recursive_doubling : Algo::ring;
    log_choice(algo == Algo::ring ? 1 : 2, algo_name(algo));
    return algo == Algo::ring ? ring_allreduce(data) : rd_allreduce(data);
  }

  // ---- hierarchical: hosts, then their leaders ----------------------------------------

  struct Hosts {
    std::vector<int> mine;     // group ranks on this rank's host, the leader (lowest) first
    std::vector<int> leaders;  // the lowest group rank of every host
  };
  // Every rank computes the same partition: from the locations every rank
  // published, not from what this rank can reach.
  Hosts hosts() const {
    std::vector<int> host(static_cast<size_t>(n_));
    for (int i = 0; i < n_; ++i) {
      host[static_cast<size_t>(i)] = i;
      const ProcessLocation &li = e_.ctx_.location(e_.world_rank(i));
      for (int j = 0; j < i; ++j)
        if (host[static_cast<size_t>(j)] == j &&
            decide_scope(e_.ctx_.location(e_.world_rank(j)), li).scope == Scope::local) {
          host[static_cast<size_t>(i)] = j;
          break;
        }
    }
    Hosts h;
    for (int i = 0; i < n_; ++i) {
      if (host[static_cast<size_t>(i)] == host[static_cast<size_t>(r_)]) h.mine.push_back(i);
      if (host[static_cast<size_t>(i)] == i) h.leaders.push_back(i);
    }
    return h;
  }

  // `data` holds this rank's input. Reduce it to the host's leader (a
  // binomial tree over shared memory), allreduce among the leaders (over
  // the network: recursive doubling or ring by size), bcast within the host.
  // One tag for all three phases: a pair's messages stay in order.
  Status hier_allreduce(char *data, const Hosts &h) {
    const size_t bytes = a_.count * dtype_size(a_.dt);
    const Args saved = a_;
    quiet_ = true;
    a_.send = LF_IN_PLACE;
    a_.recv = data;
    a_.root = 0;  // the leader, first in h.mine
    Status st;
    if (h.mine.size() > 1) st = within(h.mine, [&] { return reduce_to_root(); });
    if (st && h.mine.front() == r_ && h.leaders.size() > 1)
      st = within(h.leaders, [&] { return bytes <= kRingFrom ? rd_allreduce(data) : ring_allreduce(data); });
    if (st && h.mine.size() > 1) {
      a_.count = bytes;  // bcast counts bytes
      st = within(h.mine, [&] { return bcast(); });
    }
    a_ = saved;
    quiet_ = false;
    return st;
  }

  // ---- single copy on one host -------------------------------------------------------

  bool all_local() const {
    for (int p = 0; p < n_; ++p)
      if (p != r_ && e_.ctx_.scope(e_.world_rank(p)).scope != Scope::local) return false;
    return true;
  }

  static Status read_peer(int pid, uint64_t remote, void *local, size_t bytes) {
    auto *dst = static_cast<char *>(local);
    while (bytes) {
      iovec l{dst, bytes}, r{reinterpret_cast<void *>(remote), bytes};
      ssize_t got = ::process_vm_readv(pid, &l, 1, &r, 1, 0);
      if (got <= 0)
        return LF_FAIL(errno == ESRCH ? LF_ERR_PEER_GONE : LF_ERR_IO, "process_vm_readv from pid %d: %s", pid,
                       got == 0 ? "nothing read" : std::strerror(errno));
      dst += got;
      remote += static_cast<uint64_t>(got);
      bytes -= static_cast<size_t>(got);
    }
    return {};
  }

  // Every rank's `bytes`-byte record into all[rank] (a ring over channels).
  Status exchange(const void *mine, size_t bytes, void *all) {
    char *out = static_cast<char *>(all);
    std::memcpy(out + static_cast<size_t>(r_) * bytes, mine, bytes);
    const int right = (r_ + 1) % n_, left = (r_ - 1 + n_) % n_;
    for (int s = 0; s < n_ - 1; ++s) {
      int give = ((r_ - s) % n_ + n_) % n_, take = ((r_ - s - 1) % n_ + n_) % n_;
      recv(left, out + static_cast<size_t>(take) * bytes, bytes);
      send(right, out + static_cast<size_t>(give) * bytes, bytes);
      if (auto st = wait_all(); !st) return st;
    }
    return {};
  }

  // Can every rank read every other's memory? Each reads a random cookie at
  // the address its owner announced: a pid of another namespace, or a
  // kernel that forbids it (Yama, seccomp), fails the comparison or the
  // call. The ranks then agree, so that all take the same algorithm.
  Status cma_probe() {
    if (!e_.cookie_[0]) {
      std::random_device rd;
      e_.cookie_[0] = (uint64_t(rd()) << 32 | rd()) | 1;
      e_.cookie_[1] = uint64_t(rd()) << 32 | rd();
    }
    struct Rec {
      int64_t pid;
      uint64_t addr, c0, c1;
    };
    Rec mine{static_cast<int64_t>(::getpid()), reinterpret_cast<uint64_t>(&e_.cookie_[0]), e_.cookie_[0],
             e_.cookie_[1]};
    std::vector<Rec> all(static_cast<size_t>(n_));
    if (auto st = exchange(&mine, sizeof mine, all.data()); !st) return st;
    uint8_t ok = 1;
    std::string why;
    for (int k = 0; k < n_ && ok; ++k) {
      if (k == r_) continue;
      const Rec &p = all[static_cast<size_t>(k)];
      uint64_t got[2] = {};
      auto st = read_peer(static_cast<int>(p.pid), p.addr, got, sizeof got);
      if (!st || got[0] != p.c0 || got[1] != p.c1) {
        ok = 0;
        why = st ? "read another process's memory (another pid namespace?)" : st.error().message;
      }
    }
    std::vector<uint8_t> oks(static_cast<size_t>(n_));
    if (auto st = exchange(&ok, 1, oks.data()); !st) return st;
    bool every = std::all_of(oks.begin(), oks.end(), [](uint8_t v) { return v == 1; });
    e_.cma_ = every ? 1 : -1;
    if (every) {
      e_.pids_.resize(static_cast<size_t>(n_));
      for (int k = 0; k < n_; ++k) e_.pids_[static_cast<size_t>(k)] = static_cast<int>(all[static_cast<size_t>(k)].pid);
    }
    LF_LOG(info, "collectives: single-copy reads between the ranks of this host: %s%s%s",
           every ? "available" : "not available", why.empty() ? "" : ": ", why.c_str());
    return {};
  }

  // Rank r reduces block r of the result, reading that block of every
  // peer's input in place (one copy each, in pieces that stay in cache);
  // then every rank reads the other blocks from their owners' results. Two
  // barriers order it: all blocks reduced before anyone reads a result, all
  // reads done before anyone returns (and reuses its buffers).
  Status cma_allreduce() {
    constexpr size_t kPiece = 256u << 10;
    const size_t es = dtype_size(a_.dt);
    const char *input = static_cast<const char *>(a_.send == LF_IN_PLACE ? a_.recv : a_.send);
    char *out = static_cast<char *>(a_.recv);
    const size_t q = a_.count / static_cast<size_t>(n_), extra = a_.count % static_cast<size_t>(n_);
    auto start = [&](int b) { return (static_cast<size_t>(b) * q + std::min(static_cast<size_t>(b), extra)) * es; };
    auto len = [&](int b) { return (q + (static_cast<size_t>(b) < extra ? 1 : 0)) * es; };
    struct Rec {
      uint64_t in, out;
    };
    Rec mine{reinterpret_cast<uint64_t>(input), reinterpret_cast<uint64_t>(out)};
    std::vector<Rec> all(static_cast<size_t>(n_));
    if (auto st = exchange(&mine, sizeof mine, all.data()); !st) return st;
    char *acc = out + start(r_);
    const char *own = input + start(r_);
    const size_t share = len(r_);
    char *tmp = static_cast<char *>(e_.scratch(std::max<size_t>(std::min(kPiece, share), 1)));
    for (int s = 1; s < n_; ++s) {
      int k = (r_ + s) % n_;
      for (size_t off = 0; off < share; off += kPiece) {
        size_t piece = std::min(kPiece, share - off);
        if (auto st = read_peer(e_.pids_[static_cast<size_t>(k)], all[static_cast<size_t>(k)].in + start(r_) + off, tmp,
                                piece);
            !st)
          return fail_from(k, st.error());
        // The first peer's piece meets this rank's own input on the way
        // into the result: no separate copy of the input.
        if (s == 1)
          reduce_into(acc + off, own + off, tmp, piece / es, a_.dt, a_.op);
        else
          reduce(acc + off, tmp, piece / es, a_.dt, a_.op);
      }
    }
    if (auto st = barrier(); !st) return st;
    for (int s = 1; s < n_; ++s) {
      int k = (r_ + s) % n_;
      if (len(k))
        if (auto st = read_peer(e_.pids_[static_cast<size_t>(k)], all[static_cast<size_t>(k)].out + start(k),
                                out + start(k), len(k));
            !st)
          return fail_from(k, st.error());
    }
    return barrier();
  }

  Status rd_allreduce(char *data) {
    const size_t es = dtype_size(a_.dt), bytes = a_.count * es;
    char *tmp = static_cast<char *>(e_.scratch(std::max<size_t>(bytes, 1)));
    // Ranks beyond the largest power of two fold into a partner first and
    // get the result back at the end.
    int p2 = 1;
    while (p2 * 2 <= n_) p2 *= 2;
    const int rem = n_ - p2;
    int newrank;
    if (r_ < 2 * rem) {
      if (r_ % 2 == 0) {
        send(r_ + 1, data, bytes);
        if (auto st = wait_all(); !st) return st;
        recv(r_ + 1, data, bytes);
        return wait_all();
      }
      recv(r_ - 1, tmp, bytes);
      if (auto st = wait_all(); !st) return st;
      reduce(data, tmp, a_.count, a_.dt, a_.op);
      newrank = r_ / 2;
    } else {
      newrank = r_ - rem;
    }
    for (int mask = 1; mask < p2; mask <<= 1) {
      int np = newrank ^ mask;
      int partner = np < rem ? np * 2 + 1 : np + rem;
      recv(partner, tmp, bytes);
      send(partner, data, bytes);
      // The send reads `data`: reduce into it only once the send is done.
      if (auto st = wait_all(); !st) return st;
      reduce(data, tmp, a_.count, a_.dt, a_.op);
    }
    if (r_ < 2 * rem) {
      send(r_ - 1, data, bytes);
      return wait_all();
    }
    return {};
  }

  Status ring_allreduce(char *data) {
    const size_t es = dtype_size(a_.dt);
    const size_t q = a_.count / static_cast<size_t>(n_), extra = a_.count % static_cast<size_t>(n_);
    auto start = [&](int b) { return static_cast<size_t>(b) * q + std::min(static_cast<size_t>(b), extra); };
    auto len = [&](int b) { return q + (static_cast<size_t>(b) < extra ? 1 : 0); };
    const int right = (r_ + 1) % n_, left = (r_ - 1 + n_) % n_;
    // Reduce-scatter: after n-1 steps rank r holds block r+1 fully reduced.
    for (int s = 0; s < n_ - 1; ++s) {
      int out = ((r_ - s) % n_ + n_) % n_, in = ((r_ - s - 1) % n_ + n_) % n_;
      send(right, data + start(out) * es, len(out) * es);
      if (auto st = recv_reduce(left, data + start(in) * es, len(in)); !st) return st;
      if (auto st = wait_all(); !st) return st;
    }
    // Allgather of the reduced blocks: every rank gets the same bits.
    for (int s = 0; s < n_ - 1; ++s) {
      int out = ((r_ + 1 - s) % n_ + n_) % n_, in = ((r_ - s) % n_ + n_) % n_;
      recv(left, data + start(in) * es, len(in) * es);
      send(right, data + start(out) * es, len(out) * es);
      if (auto st = wait_all(); !st) return st;
    }
    return {};
  }

  Status allgather() {
    const size_t bpr = a_.count;
    char *out = static_cast<char *>(a_.recv);
    if (a_.send != LF_IN_PLACE && a_.send != out + static_cast<size_t>(r_) * bpr && bpr)
      std::memcpy(out + static_cast<size_t>(r_) * bpr, a_.send, bpr);
    if (n_ == 1) return {};
    log_choice(0, "ring");
    const int right = (r_ + 1) % n_, left = (r_ - 1 + n_) % n_;
    for (int s = 0; s < n_ - 1; ++s) {
      int give = ((r_ - s) % n_ + n_) % n_, take = ((r_ - s - 1) % n_ + n_) % n_;
      recv(left, out + static_cast<size_t>(take) * bpr, bpr);
      send(right, out + static_cast<size_t>(give) * bpr, bpr);
      if (auto st = wait_all(); !st) return st;
    }
    return {};
  }

  Status alltoall() {
    const size_t bpr = a_.count, total = bpr * static_cast<size_t>(n_);
    char *out = static_cast<char *>(a_.recv);
    const char *in = static_cast<const char *>(a_.send);
    if (a_.send == LF_IN_PLACE || a_.send == a_.recv) {
      // The blocks to send are overwritten by the blocks received: send a copy.
      char *copy = static_cast<char *>(e_.scratch(std::max<size_t>(total, 1)));
      if (total) std::memcpy(copy, out, total);
      in = copy;
    }
    const size_t mine = static_cast<size_t>(r_) * bpr;
    if (in + mine != out + mine && bpr) std::memcpy(out + mine, in + mine, bpr);
    if (n_ == 1) return {};
    log_choice(0, "pairwise exchange");
    // Every receive first, then the sends, each peer at a different offset
    // so that no rank is everyone's first target.
    for (int s = 1; s < n_; ++s) {
      int from = (r_ - s + n_) % n_;
      recv(from, out + static_cast<size_t>(from) * bpr, bpr);
    }
    for (int s = 1; s < n_; ++s) {
      int to = (r_ + s) % n_;
      send(to, in + static_cast<size_t>(to) * bpr, bpr);
    }
    return wait_all();
  }

  void log_choice(int variant, const char *what) {
    if (quiet_) return;
    bool &seen = e_.logged_[static_cast<size_t>(a_.kind)][variant];
    if (!seen) {
      seen = true;
      LF_LOG(info, "collectives: %s over %d ranks uses %s (LF_COLL_ALGO forces the allreduce algorithm)",
             kind_name(a_.kind), n_, what);
    }
    LF_LOG(debug, "collectives: %s #%u, count %zu: %s", kind_name(a_.kind), seq_, a_.count, what);
  }

  Engine &e_;
  Args a_;                 // a phase of a hierarchical collective changes root, buffers and count
  int n_, r_;              // size and rank in the current view (the group, or a subset: within())
  std::vector<int> view_;  // group ranks of the current view's ranks; empty: the whole group
  bool quiet_ = false;     // a phase: its choice is not logged
  const uint32_t seq_;
  const uint64_t tag_;
  std::deque<Xfer> xfers_;
  char dummy_ = 0;
};

Status Engine::execute(const Args &a) {
  if (failed_)
    return LF_FAIL(failed_->code, "an earlier collective on this context failed: %s", failed_->message.c_str());
  Status st;
  {
    Run run(*this, a, seq_++);
    st = run.go();
    // Before `run` goes: its operations still posted fail once the channels close.
    if (!st) poison(st.error());
  }
  return st;
}

}  // namespace lf::coll
