// MPI transport: REMOTE scope for jobs launched by mpirun/mpiexec.
//
// It talks over the MPI bootstrap's own duplicate of MPI_COMM_WORLD, so its
// traffic never matches the application's receives. Matching of lavaflow's
// 64-bit tags is the channel's business (transport.hpp); MPI only has to
// deliver each channel's messages in order, which MPI's non-overtaking rule
// gives for messages between one pair of ranks on one communicator and tag.
//
// Two streams per channel. The k-th channel opened between two ranks (both
// ranks open them in the same order) has
//  - the ring: tags k << seq_bits | s on that communicator, where
//      s = 0                 envelopes, in send order, into a ring of receives
//                            kept posted (LF_MPI_EAGER_SLOTS);
//      s = 1 .. 2^seq_bits-1 the payload of one large message, in chunks of
//                            at most LF_MPI_CHUNK bytes.
//    seq_bits is 20 when MPI_TAG_UB allows (Open MPI: 2^31 - 1), leaving 11
//    bits, i.e. 2048 channels per pair of ranks;
//  - for k < LF_MPI_STREAMS, a direct stream: a duplicate communicator of its
//    own (made at start, shared by all peers since a probe names its source)
//    where a message is one MPI message with MPI tag = lavaflow tag + 1, and
//    tag 0 carries stream markers.
//
// Protocols.
//  - eager (size <= LF_MPI_EAGER_LIMIT, host memory), ring: one MPI message
//    holds the 32-byte envelope and the payload; the payload is copied into a
//    send slot and out of the ring slot (two small memcpys instead of a
//    second MPI message).
//  - large, ring: the envelope (tag, size, sequence number s, chunk size)
//    goes to the ring and the payload chunks are sent at the same time
//    straight from the caller's memory with tag s. When the envelope meets a
//    posted receive, the chunks are received straight into the receive's
//    memory; until then they stay inside MPI (rendezvous), so an unexpected
//    large message costs no memory here and later messages keep flowing.
//  - direct (host memory, up to LF_MPI_CHUNK bytes, lavaflow tags below
//    MPI_TAG_UB): the receiver finds the message with MPI_Improbe, which
//    tells tag and size without moving the data, and MPI_Imrecv moves it
//    straight into the receive. No envelope and no copy: a 64 KiB message
//    costs about what it costs in raw MPI. But a poll by probe costs ~0.13 us
//    more than a test of a posted receive, so small messages do better in
//    the ring.
//  - truncation: what does not fit the receive goes through a bounce buffer
//    (ring: the chunks beyond the capacity; direct: the whole message), and
//    only the part that fits is kept. MPI itself is never handed a receive
//    smaller than its message: Open MPI 4.1's shared-memory rendezvous writes
//    the whole message regardless (a 4000-byte MPI_Irecv of a 64 KiB message
//    writes 64 KiB).
//  - device memory: with CUDA-aware MPI (MPIX_Query_cuda_support() == 1, or
//    LF_MPI_CUDA=on) device pointers go to MPI as they are. Otherwise chunks
//    are staged through two pinned host buffers from the memory layer,
//    double-buffered: the copy of one chunk overlaps the transfer of the
//    other. Device sends always take the ring; a direct message bound for
//    device memory lands in a pinned bounce buffer first.
//
// Stream switches. Which stream carries a message is the sender's choice,
// made per message; the receiver polls only one of them at a time (polling
// both would cost every small message the probe). The sender switches with a
// marker sent as the last message on the stream it leaves (kDirect in the
// ring, kRing on the direct stream), and the receiver moves to the other
// stream only once it has taken the marker: messages are taken in the order
// they were sent. The sender goes direct for a large message that qualifies,
// and back to the ring with the kSmallRun-th small message in a row or with
// a message that does not qualify. So small ping-pong stays in the ring, and
// streams of large messages, small ones among them, stay direct.
//
// Threads. With MPI_THREAD_MULTIPLE the channel's own lock is enough; with
// less, every MPI call of this transport is made under one mutex (the
// application must then not call MPI concurrently itself).
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

#include <algorithm>
#include <climits>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "core/bootstrap_mpi.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "lavaflow_features.h"
#include "memory/allocator.hpp"
#include "memory/cuda_rt.hpp"
#include "transport/transport.hpp"

namespace lf {

namespace {

constexpr size_t kEnvSize = 32;
constexpr uint64_t kMaxChunk = uint64_t{1} << 30;  // MPI counts are ints

// kDirect (ring) and kRing (direct stream): the sender's later messages
// travel on the other stream.
enum : uint32_t { kEager = 1, kLarge = 2, kBye = 3, kDirect = 4, kRing = 5 };

/// A direct sender's kSmallRun-th small message in a row returns to the ring
/// (small ones between large ones stay direct: no marker pair per message).
constexpr int kSmallRun = 8;

struct Envelope {
  uint32_t kind = kEager;
  uint32_t seq = 0;    // large: payload sequence number (its MPI tag's low bits)
  uint64_t tag = 0;    // lavaflow tag
  uint64_t size = 0;   // message bytes
  uint64_t chunk = 0;  // large: bytes per MPI message of the payload
};
static_assert(sizeof(Envelope) == kEnvSize);

inline void complete(SendOp &op, lf_status_t st) noexcept {
  op.buffer.reset();
  __atomic_store_n(&op.status, st, __ATOMIC_RELEASE);
}
inline void complete(RecvOp &op, lf_status_t st) noexcept { __atomic_store_n(&op.status, st, __ATOMIC_RELEASE); }

void set_truncated(RecvOp &op, uint64_t size) noexcept {
  try {
    op.error = "message of " + std::to_string(size) + " bytes truncated to the receive capacity of " +
               std::to_string(op.capacity);
  } catch (...) {
  }
}

// ---- device memory ---------------------------------------------------------------

/// CUDA as seen by this transport: whether device pointers can occur at all
/// (a usable runtime) and whether MPI takes them directly.
struct DeviceSupport {
  bool cuda = false;        // CUDA runtime usable: device buffers may appear
  bool mpi_aware = false;   // pass device pointers to MPI
  std::string description;  // for logs and lf-info
};

#if LAVAFLOW_HAVE_CUDA
bool is_device_pointer(const void *p) noexcept {
  const cuda::Runtime &rt = cuda::Runtime::get();
  cudaPointerAttributes a{};
  if (rt.api().PointerGetAttributes(&a, p) != cudaSuccess) {
    rt.api().GetLastError();  // plain host memory on old runtimes: clear the sticky error
    return false;
  }
  return a.type == cudaMemoryTypeDevice;
}
#endif

/// Copy host bytes into a receive's memory, which may be device memory.
Status copy_out(void *dst, bool device, const void *src, size_t n) noexcept {
  if (!n) return {};
  if (!device) {
    std::memcpy(dst, src, n);
    return {};
  }
#if LAVAFLOW_HAVE_CUDA
  const cuda::Runtime &rt = cuda::Runtime::get();
  LF_CUDA_CHECK(rt, rt.api().Memcpy(dst, src, n, cudaMemcpyHostToDevice));
  return {};
#else
  return LF_FAIL(LF_ERR_UNSUPPORTED, "device memory without CUDA support in this build");
#endif
}

/// Place an eager message into `op` (host or device memory).
void deliver_eager(RecvOp &op, bool device, uint64_t tag, const char *src, size_t n) noexcept {
  if (!device || op.want_buffer) return complete_copy(op, tag, src, n);
  op.matched_tag = tag;
  op.message_bytes = n;
  size_t len = n <= op.capacity ? n : op.capacity;
  if (auto st = copy_out(op.data, true, src, len); !st) return fail_op(op, st.error());
  op.bytes = len;
  if (n > op.capacity) {
    set_truncated(op, n);
    return complete(op, LF_ERR_TRUNCATED);
  }
  complete(op, LF_OK);
}

class MpiTransport;
class MpiEndpoint;

/// An eager message that arrived before its receive: a host copy that may
/// still have to go to device memory.
class MpiEagerIncoming final : public Incoming {
 public:
  MpiEagerIncoming(uint64_t tag, const char *data, size_t n, MpiEndpoint *ep)
      : Incoming(tag, n), copy_(new char[n ? n : 1]), ep_(ep) {
    if (n) std::memcpy(copy_.get(), data, n);
  }
  void deliver(RecvOp &op) noexcept override;

 private:
  std::unique_ptr<char[]> copy_;
  MpiEndpoint *ep_;  // the channel drops its unexpected messages before its endpoint
};

/// A large message whose payload is still inside MPI.
class MpiLargeIncoming final : public Incoming {
 public:
  MpiLargeIncoming(const Envelope &e, MpiEndpoint *ep) noexcept : Incoming(e.tag, e.size), env_(e), ep_(ep) {}
  void deliver(RecvOp &op) noexcept override;

 private:
  Envelope env_;
  MpiEndpoint *ep_;
};

/// A direct-stream message taken off MPI's queue by MPI_Improbe before its
/// receive was posted: MPI keeps it (a large one stays at the sender) until
/// MPI_Imrecv. Dropped unreceived (its channel closed), it stays with MPI,
/// like the payload of an unexpected large message of the ring: receiving it
/// then would end its send as delivered although nobody received it, and
/// could read memory whose sender has been told the send failed.
class MpiDirectIncoming final : public Incoming {
 public:
  MpiDirectIncoming(uint64_t tag, size_t n, MPI_Message msg, MpiEndpoint *ep) noexcept
      : Incoming(tag, n), msg_(msg), ep_(ep) {}
  void deliver(RecvOp &op) noexcept override;

 private:
  MPI_Message msg_;
  MpiEndpoint *ep_;
};

/// Chunks of a large message that go through host bounce buffers: device
/// memory without CUDA-aware MPI (both directions), and received chunks that
/// do not fit the receive (truncation). Two buffers, chunks strictly in order.
struct Pipeline {
  struct Bounce {
    BufferPtr host;
    uint64_t index = 0, off = 0, len = 0;
    enum { idle, moving, copying } state = idle;  // moving: MPI transfer; copying: CUDA copy
    MPI_Request req = MPI_REQUEST_NULL;
#if LAVAFLOW_HAVE_CUDA
    cudaEvent_t ev = nullptr;
#endif
  };
  bool active = false;
  bool send = false;    // send: device -> host -> MPI; receive: MPI -> host -> (device or host) memory
  bool device = false;  // the caller's memory is device memory
  char *mem = nullptr;  // the caller's memory (source or destination)
  uint64_t cap = 0;     // receive: bytes of `mem` that may be written
  uint64_t next = 0, end = 0, chunk = 0, next_index = 0;
  Bounce b[2];

  bool done() const noexcept {
    return !active || (next >= end && b[0].state == Bounce::idle && b[1].state == Bounce::idle);
  }
};

/// One large message in flight, either direction.
struct Transfer {
  SendOp *sop = nullptr;
  RecvOp *rop = nullptr;
  uint64_t size = 0;
  int mpi_tag = 0;
  int env_slot = -1;                // send: the send slot holding the envelope (its request is direct[0])
  std::vector<MPI_Request> direct;  // the envelope (sends), then chunks straight on the caller's memory
  Pipeline pipe;
  // A direct-stream receive that could not go straight into place (larger
  // than the receive, or device memory): copied from here when complete.
  BufferPtr bounce;
  char *dst = nullptr;
  uint64_t keep = 0;
  bool dst_device = false;
};

class MpiTransport final : public Transport {
 public:
  const char *name() const noexcept override { return "mpi"; }

  TransportCaps caps() const noexcept override {
    TransportCaps c;
    c.remote = true;
    c.memory_kinds = kHostKinds;
#if LAVAFLOW_HAVE_CUDA
    if (!cuda::Runtime::get().available()) c.memory_kinds |= kind_bit(MemoryKind::cuda_device);
#endif
    c.priority = 30;  // above tcp: MPI may ride RDMA (UCX) where tcp cannot
    return c;
  }

  std::optional<std::string> unavailable_reason() const override {
    if (Bootstrap::launched_by_mpi() || config::get_string("LF_BOOTSTRAP_MODE") == "mpi") return std::nullopt;
    return "not started by mpirun/mpiexec (the mpi transport rides the MPI bootstrap)";
  }

  Result<std::string> start(World &world) override {
    if (std::string(world.bootstrap().name()) != "mpi")
      return LF_FAIL(LF_ERR_UNAVAILABLE,
                     "the job was not started by mpirun (bootstrap '%s'); the mpi transport needs the MPI bootstrap",
                     world.bootstrap().name());
    auto *b = dynamic_cast<MpiBootstrap *>(&world.bootstrap());
    if (!b) return LF_FAIL(LF_ERR_INTERNAL, "bootstrap says 'mpi' but is not an MpiBootstrap");
    comm_ = b->comm();
    serialize_ = b->thread_level() < MPI_THREAD_MULTIPLE;
    void *ub = nullptr;
    int flag = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
    long tag_ub = flag && ub ? *static_cast<int *>(ub) : 32767;
    int bits = 0;
    while (bits < 31 && (1L << (bits + 1)) - 1 <= tag_ub) ++bits;
    seq_bits_ = bits >= 24 ? 20 : bits - 4;
    chan_bits_ = bits - seq_bits_;
    eager_limit_ = static_cast<uint64_t>(std::max<int64_t>(0, config::get_int("LF_MPI_EAGER_LIMIT")));
    if (eager_limit_ > (1u << 20)) eager_limit_ = 1u << 20;
    slots_ = static_cast<int>(std::clamp<int64_t>(config::get_int("LF_MPI_EAGER_SLOTS"), 1, 1024));
    chunk_ = static_cast<uint64_t>(std::clamp<int64_t>(config::get_int("LF_MPI_CHUNK"), 4096, kMaxChunk));
    direct_tag_max_ = static_cast<uint64_t>(tag_ub) - 1;
    if (auto st = make_streams(); !st) return std::unexpected(st.error());
    dev_ = detect_device_support();
    LF_LOG(info,
           "mpi transport: tag bits %d+%d, eager limit %llu, chunk %llu, %zu direct streams, thread level %d; device "
           "memory: %s",
           chan_bits_, seq_bits_, (unsigned long long)eager_limit_, (unsigned long long)chunk_, streams_.size(),
           b->thread_level(), dev_.description.c_str());
    // Peers size their send protocol by our eager receive slots.
    return "mpi:eager=" + std::to_string(eager_limit_);
  }

  Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline) override;

  ~MpiTransport() override {
    drain_graveyard(true);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      for (MPI_Comm &c : streams_) MPI_Comm_free(&c);
  }

  // For endpoints.
  std::unique_lock<std::mutex> mpi_lock() noexcept {
    return serialize_ ? std::unique_lock(mpi_mu_) : std::unique_lock<std::mutex>();
  }
  MPI_Comm comm() const noexcept { return comm_; }
  uint64_t chunk() const noexcept { return chunk_; }
  uint64_t eager_limit() const noexcept { return eager_limit_; }
  int slots() const noexcept { return slots_; }
  int seq_bits() const noexcept { return seq_bits_; }
  const DeviceSupport &device() const noexcept { return dev_; }
  /// The direct stream of the k-th channel between two ranks, if it has one.
  MPI_Comm stream(uint32_t k) const noexcept { return k < streams_.size() ? streams_[k] : MPI_COMM_NULL; }
  uint64_t direct_tag_max() const noexcept { return direct_tag_max_; }

  /// Requests that must finish after their endpoint is gone, with the memory
  /// they use (MPI may still read or write it).
  void bury(MPI_Request req, std::unique_ptr<char[]> mem) noexcept {
    std::lock_guard g(grave_mu_);
    try {
      grave_.push_back({req, std::move(mem)});
    } catch (const std::bad_alloc &) {
      (void)mem.release();  // leaking is safer than freeing memory MPI may still use
      MPI_Request_free(&req);
    }
  }
  void drain_graveyard(bool final) noexcept {
    auto lock = mpi_lock();  // lock order: MPI, then graveyard (bury runs under the MPI lock)
    std::lock_guard g(grave_mu_);
    if (grave_.empty()) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) {
      for (auto &gr : grave_) (void)gr.mem.release();
      grave_.clear();
      return;
    }
    for (int round = 0; round < (final ? 100000 : 1) && !grave_.empty(); ++round)
      std::erase_if(grave_, [](Grave &gr) {
        int flag = 0;
        MPI_Test(&gr.req, &flag, MPI_STATUS_IGNORE);
        return flag != 0;
      });
    if (final)
      for (auto &gr : grave_) {
        // Still pending at shutdown: let MPI finish on its own and keep the memory.
        MPI_Request_free(&gr.req);
        (void)gr.mem.release();
      }
  }

 private:
  DeviceSupport detect_device_support() {
    DeviceSupport d;
#if LAVAFLOW_HAVE_CUDA
    const auto &why = cuda::Runtime::get().available();
    if (why) {
      d.description = "none (CUDA unavailable: " + *why + ")";
      return d;
    }
    d.cuda = true;
    int query = 0;
#if defined(OMPI_HAVE_MPI_EXT_CUDA) && OMPI_HAVE_MPI_EXT_CUDA
    query = MPIX_Query_cuda_support();
    std::string probe = "MPIX_Query_cuda_support() = " + std::to_string(query);
#else
    std::string probe = "this MPI has no MPIX_Query_cuda_support";
#endif
    std::string mode = config::get_string("LF_MPI_CUDA");
    d.mpi_aware = mode == "on" || (mode != "off" && query == 1);
    if (mode == "on" && query != 1) LF_LOG(warn, "LF_MPI_CUDA=on although %s", probe.c_str());
    d.description = d.mpi_aware ? "device pointers passed to MPI (" + probe + ", LF_MPI_CUDA=" + mode + ")"
                                : "staged through pinned host memory in chunks of " + std::to_string(chunk_) +
                                      " bytes, double-buffered (" + probe + ", LF_MPI_CUDA=" + mode + ")";
#else
    d.description = "none (built without CUDA)";
#endif
    return d;
  }

  /// Communicators for the channels' direct streams, one per channel index
  /// (shared by all peers: a probe names its source). MPI_Comm_dup is
  /// collective, so every rank makes the same number, agreed on first.
  Status make_streams() {
    int want = static_cast<int>(std::clamp<int64_t>(config::get_int("LF_MPI_STREAMS"), 0, 256));
    int n = 0;
    int rc = MPI_Allreduce(&want, &n, 1, MPI_INT, MPI_MIN, comm_);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Allreduce (direct streams)"));
    for (int i = 0; i < n; ++i) {
      MPI_Comm c = MPI_COMM_NULL;
      rc = MPI_Comm_dup(comm_, &c);
      if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Comm_dup (direct streams)"));
      MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
      try {
        streams_.push_back(c);
      } catch (const std::bad_alloc &) {
        MPI_Comm_free(&c);
        return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for direct streams");
      }
    }
    return {};
  }

  struct Grave {
    MPI_Request req;
    std::unique_ptr<char[]> mem;
  };

  MPI_Comm comm_ = MPI_COMM_NULL;
  bool serialize_ = false;
  int seq_bits_ = 20, chan_bits_ = 11, slots_ = 16;
  uint64_t eager_limit_ = 1024, chunk_ = 8u << 20, direct_tag_max_ = 0;
  std::vector<MPI_Comm> streams_;
  DeviceSupport dev_;
  std::mutex mpi_mu_;
  std::mutex grave_mu_;
  std::vector<Grave> grave_;
  std::mutex connect_mu_;
  std::map<int, uint32_t> next_channel_;
  friend class MpiEndpoint;
};

class MpiEndpoint final : public Endpoint {
 public:
  MpiEndpoint(MpiTransport &t, int peer, int base_tag, uint64_t peer_eager, MPI_Comm stream)
      : t_(t), comm_(t.comm()), scomm_(stream), peer_(peer), base_(base_tag), seq_max_((1u << t.seq_bits()) - 1) {
    send_eager_ = std::min(t.eager_limit(), peer_eager);
    slot_size_ = kEnvSize + t.eager_limit();
  }

  Status post_ring() noexcept {
    auto lock = t_.mpi_lock();
    try {
      ring_.resize(static_cast<size_t>(t_.slots()));
      for (Ring &r : ring_) r.buf.reset(new char[slot_size_]);
    } catch (const std::bad_alloc &) {
      return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for %d receive slots", t_.slots());
    }
    // Persistent receives: re-arming one is a single MPI_Start.
    for (Ring &r : ring_) {
      int rc = MPI_Recv_init(r.buf.get(), static_cast<int>(slot_size_), MPI_BYTE, peer_, base_, comm_, &r.req);
      if (rc == MPI_SUCCESS) rc = MPI_Start(&r.req);
      if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Recv_init/MPI_Start"));
      r.active = true;
    }
    return {};
  }

  ~MpiEndpoint() override {
    Error closed = make_error(LF_ERR_CLOSED, "channel was closed");
    {
      auto lock = t_.mpi_lock();
      // Tell the peer, unless the connection already failed.
      if (!broken_) {
        Envelope bye;
        bye.kind = kBye;
        std::unique_ptr<char[]> buf(new (std::nothrow) char[kEnvSize]);
        MPI_Request req = MPI_REQUEST_NULL;
        if (buf) {
          std::memcpy(buf.get(), &bye, kEnvSize);
          // On the stream the peer reads now.
          if (MPI_Isend(buf.get(), kEnvSize, MPI_BYTE, peer_, send_direct_ ? 0 : base_, send_direct_ ? scomm_ : comm_,
                        &req) == MPI_SUCCESS)
            t_.bury(req, std::move(buf));
        }
      }
      for (Ring &r : ring_) {
        if (r.active) cancel(r.req);
        if (r.req != MPI_REQUEST_NULL) MPI_Request_free(&r.req);
      }
      drop_in_flight(closed);
    }
    t_.drain_graveyard(false);
  }

  void send(SendOp &op) noexcept override {
    if (broken_) return fail_op(op, *broken_);
    const char *src = static_cast<const char *>(op.data);
    bool device = false;
    if (op.buffer && !op.buffer->data() && op.size) {
      if (op.buffer->kind() != MemoryKind::cuda_device)
        return fail_op(op, make_error(LF_ERR_UNSUPPORTED, "the mpi transport cannot move %s memory",
                                      memory_kind_name(op.buffer->kind())));
      src = reinterpret_cast<const char *>(static_cast<uintptr_t>(op.buffer->device_handle()));
      device = true;
    } else {
      device = is_device(src);
    }
    auto lock = t_.mpi_lock();
    bool large = op.size > send_eager_ || device;
    bool direct_ok = scomm_ != MPI_COMM_NULL && !device && op.size <= t_.chunk() && op.tag <= t_.direct_tag_max();
    if (send_direct_) {
      if (direct_ok && (large || small_run_ + 1 < kSmallRun)) {
        small_run_ = large ? 0 : small_run_ + 1;
        return send_direct(op, src);
      }
      if (auto st = post_control(kRing); !st) return fail_op(op, st.error());
      send_direct_ = false;
    } else if (direct_ok && large) {
      if (auto st = post_control(kDirect); !st) return fail_op(op, st.error());
      send_direct_ = true;
      small_run_ = 0;
      return send_direct(op, src);
    }
    if (!large) return send_eager(op, src);
    send_large(op, src, device);
  }

  Status progress(Matcher &m) noexcept override {
    if (broken_) return std::unexpected(*broken_);
    auto lock = t_.mpi_lock();
    // Sends first: their completion frees slots and lets the peer go on.
    // One MPI_Testsome for all of them: an MPI_Test each would run MPI's
    // progress engine once per send still in flight.
    if (!out_.empty()) {
      int done = 0;
      out_done_.resize(out_.size());  // within the capacity finish_or_keep() reserved
      int rc =
          MPI_Testsome(static_cast<int>(out_.size()), out_reqs_.data(), &done, out_done_.data(), MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) return broken(mpi_error(rc, "MPI_Testsome (sends)"));
      if (done > 0) {
        for (int k = 0; k < done; ++k) {
          Out &o = out_[static_cast<size_t>(out_done_[static_cast<size_t>(k)])];
          if (o.slot >= 0) free_slots_.push_back(o.slot);
          if (o.op) complete(*o.op, LF_OK);
        }
        // Completed requests are MPI_REQUEST_NULL now: close the gaps.
        size_t j = 0;
        for (size_t i = 0; i < out_.size(); ++i)
          if (out_reqs_[i] != MPI_REQUEST_NULL) {
            out_[j] = out_[i];
            out_reqs_[j++] = out_reqs_[i];
          }
        out_.resize(j);
        out_reqs_.resize(j);
      }
    }
    // Messages in the order they were sent, from the stream the peer is on.
    for (;;) {
      auto more = recv_direct_ ? next_direct(m) : next_envelope(m);
      if (!more) return std::unexpected(more.error());
      if (!*more) break;
    }
    // Large messages, both directions.
    for (size_t i = 0; i < transfers_.size();) {
      auto st = advance(*transfers_[i]);
      if (!st) return broken(st.error());
      if (*st) {
        recycle(std::move(transfers_[i]));
        transfers_.erase(transfers_.begin() + static_cast<long>(i));
        continue;
      }
      ++i;
    }
    return {};
  }

  /// A receive matched an unexpected large message: fetch its payload.
  void start_large(RecvOp &op, const Envelope &e) noexcept {
    if (broken_) return fail_op(op, *broken_);
    auto lock = t_.mpi_lock();
    begin_large_recv(op, e);
  }

  /// A receive matched a direct message that arrived before it.
  void start_direct(RecvOp &op, MPI_Message msg, uint64_t tag, size_t n) noexcept {
    auto lock = t_.mpi_lock();
    if (broken_) {
      fail_op(op, *broken_);
      return discard(msg, n);
    }
    begin_direct_recv(op, msg, tag, n);
  }

  /// Take a probed message whose receive failed (no memory, or the channel
  /// broke), so the stream goes on: into memory kept until MPI is done with
  /// it (MPI lock held).
  void discard(MPI_Message msg, size_t n) noexcept {
    std::unique_ptr<char[]> mem(new (std::nothrow) char[n ? n : 1]);
    MPI_Request req;
    if (mem && MPI_Imrecv(mem.get(), static_cast<int>(n), MPI_BYTE, &msg, &req) == MPI_SUCCESS)
      t_.bury(req, std::move(mem));
  }

  void deliver_unexpected(RecvOp &op, uint64_t tag, const char *data, size_t n) noexcept {
    deliver_eager(op, !op.want_buffer && is_device(op.data), tag, data, n);
  }

 private:
  struct Ring {
    std::unique_ptr<char[]> buf;
    MPI_Request req = MPI_REQUEST_NULL;  // persistent
    bool active = false;
  };
  /// A send MPI has not finished (its request is in out_reqs_ at the same
  /// index): an eager message or a stream marker (op null) from send slot
  /// `slot`, or a direct message from the caller's memory (slot -1).
  struct Out {
    SendOp *op;
    int slot;
  };

  /// Give up on the operations in flight: fail their ops; MPI finishes sends
  /// alone (a slot is kept until it has), receives are cancelled. An
  /// operation MPI has finished meanwhile completes as it would have: a send
  /// the peer received before it closed, say (its acknowledgement can arrive
  /// in the same progress call as the bye, after the sends were last tested).
  void drop_in_flight(const Error &e) noexcept {
    for (size_t i = 0; i < out_.size(); ++i) {
      int flag = 0;
      if (MPI_Test(&out_reqs_[i], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
        if (out_[i].slot >= 0) free_slots_.push_back(out_[i].slot);
        if (out_[i].op) complete(*out_[i].op, LF_OK);
        continue;
      }
      if (out_[i].op) fail_op(*out_[i].op, e);
      if (out_[i].slot >= 0)
        t_.bury(out_reqs_[i], std::move(send_slots_[static_cast<size_t>(out_[i].slot)]));
      else
        MPI_Request_free(&out_reqs_[i]);
    }
    out_.clear();
    out_reqs_.clear();
    for (auto &x : transfers_) {
      // One last test (a pipeline is not stepped: that would start more).
      if (!x->pipe.active)
        if (auto done = advance(*x); done && *done) continue;
      abandon(*x, e);
    }
    transfers_.clear();
  }

  bool is_device(const void *p) const noexcept {
#if LAVAFLOW_HAVE_CUDA
    return t_.device().cuda && p && is_device_pointer(p);
#else
    (void)p;
    return false;
#endif
  }

  Status broken(Error e) noexcept {
    if (!broken_) broken_ = e;
    drop_in_flight(e);
    return std::unexpected(e);
  }

  /// Cancel a receive and wait for it (a persistent one stays allocated).
  static void cancel(MPI_Request &req) noexcept {
    if (req == MPI_REQUEST_NULL) return;
    MPI_Cancel(&req);
    MPI_Wait(&req, MPI_STATUS_IGNORE);
  }

  /// Stop a large transfer: receives are cancelled, sends left to MPI.
  void abandon(Transfer &x, const Error &e) noexcept {
    if (x.sop) {
      fail_op(*x.sop, e);
      for (size_t i = 0; i < x.direct.size(); ++i) {
        if (x.direct[i] == MPI_REQUEST_NULL) continue;
        if (i == 0 && x.env_slot >= 0)  // the envelope: its slot must outlive the request
          t_.bury(x.direct[0], std::move(send_slots_[static_cast<size_t>(x.env_slot)]));
        else
          MPI_Request_free(&x.direct[i]);
      }
      x.direct.clear();
      x.env_slot = -1;
    }
    if (x.rop) {
      fail_op(*x.rop, e);
      for (MPI_Request &r : x.direct) cancel(r);
    }
    for (auto &b : x.pipe.b) {
      if (b.req == MPI_REQUEST_NULL) continue;
      if (x.rop) {
        cancel(b.req);
      } else {
        // A send from a bounce buffer: MPI may still read it.
        MPI_Request_free(&b.req);
        (void)b.host.release();
      }
    }
#if LAVAFLOW_HAVE_CUDA
    for (auto &b : x.pipe.b)
      if (b.ev) {
        const auto &rt = cuda::Runtime::get();
        rt.api().EventSynchronize(b.ev);
        rt.api().EventDestroy(b.ev);
        b.ev = nullptr;
      }
#endif
  }

  /// Transfers are reused: the hot path of a large message allocates nothing
  /// once a few have been made (their request vectors keep their capacity).
  std::unique_ptr<Transfer> take_transfer() noexcept {
    if (spare_.empty()) {
      // Room for two requests: pushing an envelope's or a direct message's
      // request cannot fail.
      std::unique_ptr<Transfer> x(new (std::nothrow) Transfer);
      if (x) try {
          x->direct.reserve(2);
        } catch (const std::bad_alloc &) {
          x.reset();
        }
      return x;
    }
    std::unique_ptr<Transfer> x = std::move(spare_.back());
    spare_.pop_back();
    return x;
  }
  void recycle(std::unique_ptr<Transfer> x) noexcept {
    x->sop = nullptr;
    x->rop = nullptr;
    x->env_slot = -1;
    x->direct.clear();
    x->pipe = Pipeline();
    x->bounce.reset();
    x->dst = nullptr;
    x->keep = 0;
    x->dst_device = false;
    if (spare_.size() < 8) {
      try {
        spare_.push_back(std::move(x));
      } catch (const std::bad_alloc &) {
      }
    }
  }

  Result<int> take_slot() noexcept {
    if (!free_slots_.empty()) {
      int s = free_slots_.back();
      free_slots_.pop_back();
      return s;
    }
    try {
      send_slots_.emplace_back(new char[kEnvSize + send_eager_]);
      free_slots_.reserve(send_slots_.size());
    } catch (const std::bad_alloc &) {
      return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for a send slot");
    }
    return static_cast<int>(send_slots_.size() - 1);
  }

  /// Copy an envelope (eager: with its payload) into a send slot and start
  /// sending it to the ring. When MPI refuses, the slot is free again and the
  /// stream is broken: the peer's ring order can no longer be trusted.
  Result<std::pair<int, MPI_Request>> post_envelope(const Envelope &e, const char *payload, size_t n,
                                                    bool ring = true) noexcept {
    auto slot = take_slot();
    if (!slot) return std::unexpected(slot.error());
    char *buf = send_slots_[static_cast<size_t>(*slot)].get();
    std::memcpy(buf, &e, kEnvSize);
    if (n) std::memcpy(buf + kEnvSize, payload, n);
    MPI_Request req;
    int rc =
        MPI_Isend(buf, static_cast<int>(kEnvSize + n), MPI_BYTE, peer_, ring ? base_ : 0, ring ? comm_ : scomm_, &req);
    if (rc != MPI_SUCCESS) {
      free_slots_.push_back(*slot);
      Error err = mpi_error(rc, "MPI_Isend");
      (void)broken(err);
      return std::unexpected(err);
    }
    return std::pair{*slot, req};
  }

  void send_eager(SendOp &op, const char *src) noexcept {
    Envelope e;
    e.kind = kEager;
    e.tag = op.tag;
    e.size = op.size;
    auto sent = post_envelope(e, src, op.size);
    if (!sent) return fail_op(op, sent.error());
    finish_or_keep(&op, sent->second, sent->first);
  }

  /// A send just started: complete it if MPI already has (small messages),
  /// or keep it for progress().
  void finish_or_keep(SendOp *op, MPI_Request req, int slot) noexcept {
    int flag = 0;
    if (int rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE); rc != MPI_SUCCESS) {
      Error err = mpi_error(rc, "MPI_Test (send)");
      if (slot >= 0) free_slots_.push_back(slot);
      if (op) fail_op(*op, err);
      return (void)broken(err);
    }
    if (!flag) {
      try {
        // Room first, so that neither the pushes nor progress()'s resize can
        // throw; grown geometrically.
        size_t n = out_.size() + 1;
        auto room = [n](auto &v) {
          if (v.capacity() < n) v.reserve(std::max<size_t>(n, 2 * v.capacity()));
        };
        room(out_);
        room(out_reqs_);
        room(out_done_);
        out_.push_back(Out{op, slot});
        out_reqs_.push_back(req);
        return;
      } catch (const std::bad_alloc &) {
        // The data is MPI's now (a slot, kept until MPI is done): the send
        // completes regardless. The caller's memory cannot be kept: wait.
        if (slot >= 0)
          t_.bury(req, std::move(send_slots_[static_cast<size_t>(slot)]));
        else
          MPI_Wait(&req, MPI_STATUS_IGNORE);
      }
    } else if (slot >= 0) {
      free_slots_.push_back(slot);
    }
    if (op) complete(*op, LF_OK);
  }

  /// Tell the peer that this rank's later messages travel on the other
  /// stream (kDirect in the ring, kRing on the direct stream).
  Status post_control(uint32_t kind) noexcept {
    Envelope e;
    e.kind = kind;
    auto sent = post_envelope(e, nullptr, 0, /*ring=*/kind == kDirect);
    if (!sent) return std::unexpected(sent.error());
    finish_or_keep(nullptr, sent->second, sent->first);
    return {};
  }

  /// One MPI message straight from the caller's memory, MPI tag = tag + 1.
  void send_direct(SendOp &op, const char *src) noexcept {
    MPI_Request req;
    int rc = MPI_Isend(src, static_cast<int>(op.size), MPI_BYTE, peer_, static_cast<int>(op.tag + 1), scomm_, &req);
    if (rc != MPI_SUCCESS) {
      Error err = mpi_error(rc, "MPI_Isend (direct)");
      fail_op(op, err);
      (void)broken(err);  // the peer now waits on this stream for a message that will not come
      return;
    }
    finish_or_keep(&op, req, -1);
  }

  void send_large(SendOp &op, const char *src, bool device) noexcept {
    uint32_t seq = next_seq_;
    next_seq_ = next_seq_ == seq_max_ ? 1 : next_seq_ + 1;
    std::unique_ptr<Transfer> x = take_transfer();
    if (!x) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "mpi: no memory to start a send"));
    Envelope e;
    e.kind = kLarge;
    e.seq = seq;
    e.tag = op.tag;
    e.size = op.size;
    e.chunk = t_.chunk();
    auto sent = post_envelope(e, nullptr, 0);
    if (!sent) return fail_op(op, sent.error());
    auto [slot, env_req] = *sent;
    x->sop = &op;
    x->size = op.size;
    x->mpi_tag = base_ | static_cast<int>(seq);
    x->env_slot = slot;
    // One MPI_Testall covers envelope and payload; within the capacity
    // take_transfer() gives.
    x->direct.push_back(env_req);
    Status st;
    if (device && !t_.device().mpi_aware)
      st = start_pipeline(*x, /*send=*/true, true, const_cast<char *>(src), op.size, 0, op.size, e.chunk);
    else
      st = post_direct(*x, const_cast<char *>(src), op.size, e.chunk, /*send=*/true);
    if (st) {
      try {
        transfers_.push_back(std::move(x));
        return;
      } catch (const std::bad_alloc &) {
        st = LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory to track a send");
      }
    }
    // The envelope is out: the stream cannot be repaired.
    (void)broken(st.error());
    abandon(*x, *broken_);
  }

  /// Post MPI transfers for the chunks of [0, n) straight on `mem`.
  Status post_direct(Transfer &x, char *mem, uint64_t n, uint64_t chunk, bool send) noexcept {
    try {
      x.direct.reserve(x.direct.size() + static_cast<size_t>((n + chunk - 1) / chunk));
    } catch (const std::bad_alloc &) {
      return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for chunk requests");
    }
    for (uint64_t off = 0; off < n; off += chunk) {
      int len = static_cast<int>(std::min(chunk, n - off));
      MPI_Request req;
      int rc = send ? MPI_Isend(mem + off, len, MPI_BYTE, peer_, x.mpi_tag, comm_, &req)
                    : MPI_Irecv(mem + off, len, MPI_BYTE, peer_, x.mpi_tag, comm_, &req);
      if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, send ? "MPI_Isend" : "MPI_Irecv"));
      x.direct.push_back(req);
    }
    return {};
  }

  Status start_pipeline(Transfer &x, bool send, bool device, char *mem, uint64_t cap, uint64_t from, uint64_t end,
                        uint64_t chunk) noexcept {
    Pipeline &p = x.pipe;
    p.active = true;
    p.send = send;
    p.device = device;
    p.mem = mem;
    p.cap = cap;
    p.next = from;
    p.end = end;
    p.chunk = chunk;
    // Pinned memory when device copies are involved (DMA); plain host memory
    // for a truncation's bounce buffer.
    MemoryKind kind = device ? MemoryKind::host_pinned : MemoryKind::host;
    int need = end - from > chunk ? 2 : 1;
    for (int i = 0; i < need; ++i) {
      auto buf = allocate(chunk, kind);
      if (!buf) return std::unexpected(buf.error());
      p.b[i].host = std::move(*buf);
    }
#if LAVAFLOW_HAVE_CUDA
    if (device) {
      const auto &rt = cuda::Runtime::get();
      if (!stream_) LF_CUDA_CHECK(rt, rt.api().StreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      for (int i = 0; i < need; ++i)
        LF_CUDA_CHECK(rt, rt.api().EventCreateWithFlags(&p.b[i].ev, cudaEventDisableTiming));
    }
#else
    if (device) return LF_FAIL(LF_ERR_UNSUPPORTED, "device memory without CUDA support in this build");
#endif
    return {};
  }

  /// Drive a pipeline: start chunks on idle buffers and move each buffer on,
  /// the oldest chunk first so MPI sees chunks in order.
  Status step(Transfer &x) noexcept {
    Pipeline &p = x.pipe;
    for (int guard = 0; guard < 8; ++guard) {
      bool moved = false;
      // Start the next chunk on a free buffer.
      for (auto &b : p.b) {
        if (!b.host || b.state != Pipeline::Bounce::idle || p.next >= p.end) continue;
        b.index = p.next_index++;
        b.off = p.next;
        b.len = std::min(p.chunk, p.end - p.next);
        p.next += b.len;
        moved = true;
        if (p.send) {  // device -> bounce
#if LAVAFLOW_HAVE_CUDA
          const auto &rt = cuda::Runtime::get();
          LF_CUDA_CHECK(rt,
                        rt.api().MemcpyAsync(b.host->data(), p.mem + b.off, b.len, cudaMemcpyDeviceToHost, stream_));
          LF_CUDA_CHECK(rt, rt.api().EventRecord(b.ev, stream_));
#endif
          b.state = Pipeline::Bounce::copying;
        } else {  // MPI -> bounce
          int rc = MPI_Irecv(b.host->data(), static_cast<int>(b.len), MPI_BYTE, peer_, x.mpi_tag, comm_, &b.req);
          if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Irecv"));
          b.state = Pipeline::Bounce::moving;
        }
      }
      // Advance buffers, oldest chunk first.
      int order[2] = {0, 1};
      if (p.b[1].host && p.b[1].state != Pipeline::Bounce::idle &&
          (p.b[0].state == Pipeline::Bounce::idle || p.b[1].index < p.b[0].index))
        order[0] = 1, order[1] = 0;
      for (int k : order) {
        auto &b = p.b[k];
        if (b.state == Pipeline::Bounce::moving) {
          int flag = 0;
          int rc = MPI_Test(&b.req, &flag, MPI_STATUS_IGNORE);
          if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Test (chunk)"));
          if (!flag) continue;
          moved = true;
          if (p.send) {
            b.state = Pipeline::Bounce::idle;
            continue;
          }
          // Received: keep what fits the receive.
          uint64_t keep = b.off >= p.cap ? 0 : std::min(b.len, p.cap - b.off);
          if (keep && !p.device) std::memcpy(p.mem + b.off, b.host->data(), keep);
#if LAVAFLOW_HAVE_CUDA
          if (keep && p.device) {
            const auto &rt = cuda::Runtime::get();
            LF_CUDA_CHECK(rt,
                          rt.api().MemcpyAsync(p.mem + b.off, b.host->data(), keep, cudaMemcpyHostToDevice, stream_));
            LF_CUDA_CHECK(rt, rt.api().EventRecord(b.ev, stream_));
            b.state = Pipeline::Bounce::copying;
            continue;
          }
#endif
          b.state = Pipeline::Bounce::idle;
        } else if (b.state == Pipeline::Bounce::copying) {
#if LAVAFLOW_HAVE_CUDA
          const auto &rt = cuda::Runtime::get();
          cudaError_t q = rt.api().EventQuery(b.ev);
          // One stream: a younger copy cannot be done before this one, and
          // its chunk must not reach MPI first.
          if (q == cudaErrorNotReady) break;
          if (q != cudaSuccess) return std::unexpected(rt.error(q, "cudaEventQuery", __FILE__, __LINE__));
#endif
          moved = true;
          if (p.send) {  // bounce -> MPI
            int rc = MPI_Isend(b.host->data(), static_cast<int>(b.len), MPI_BYTE, peer_, x.mpi_tag, comm_, &b.req);
            if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Isend"));
            b.state = Pipeline::Bounce::moving;
          } else {
            b.state = Pipeline::Bounce::idle;
          }
        }
      }
      if (!moved) break;
    }
    return {};
  }

  /// Progress a transfer; true when it completed (its op is then complete).
  Result<bool> advance(Transfer &x) noexcept {
    if (!x.direct.empty()) {
      int flag = 0;
      int rc = MPI_Testall(static_cast<int>(x.direct.size()), x.direct.data(), &flag, MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Testall (payload)"));
      if (flag) {
        x.direct.clear();
        if (x.env_slot >= 0) free_slots_.push_back(x.env_slot);
        x.env_slot = -1;
      }
    }
    if (x.pipe.active)
      if (auto st = step(x); !st) return std::unexpected(st.error());
    if (!x.direct.empty() || !x.pipe.done()) return false;
    release_pipeline(x.pipe);
    if (x.sop) {
      complete(*x.sop, LF_OK);
      return true;
    }
    RecvOp &op = *x.rop;
    if (x.bounce) {
      auto st = copy_out(x.dst, x.dst_device, x.bounce->data(), x.keep);
      x.bounce.reset();
      if (!st) {
        fail_op(op, st.error());
        return true;
      }
    }
    if (!op.want_buffer && x.size > op.capacity) {
      set_truncated(op, x.size);
      complete(op, LF_ERR_TRUNCATED);
    } else {
      complete(op, LF_OK);
    }
    return true;
  }

  void release_pipeline(Pipeline &p) noexcept {
#if LAVAFLOW_HAVE_CUDA
    for (auto &b : p.b)
      if (b.ev) {
        cuda::Runtime::get().api().EventDestroy(b.ev);
        b.ev = nullptr;
      }
#endif
    for (auto &b : p.b) b.host.reset();
    p.active = false;
  }

  Status on_envelope(Matcher &m, const char *buf, size_t count) noexcept {
    if (count < kEnvSize) return broken(make_error(LF_ERR_PROTOCOL, "rank %d sent a %zu-byte envelope", peer_, count));
    Envelope e;
    std::memcpy(&e, buf, kEnvSize);
    switch (e.kind) {
      case kEager: {
        if (e.size != count - kEnvSize)
          return broken(make_error(LF_ERR_PROTOCOL, "rank %d: eager message announces %llu bytes but carries %zu",
                                   peer_, (unsigned long long)e.size, count - kEnvSize));
        if (RecvOp *op = m.take_posted(e.tag)) {
          deliver_eager(*op, !op->want_buffer && is_device(op->data), e.tag, buf + kEnvSize, e.size);
          return {};
        }
        MpiEagerIncoming *in = nullptr;
        try {
          in = new MpiEagerIncoming(e.tag, buf + kEnvSize, e.size, this);
        } catch (const std::bad_alloc &) {
          return broken(make_error(LF_ERR_NO_MEMORY, "mpi: no memory to keep an unexpected message; channel broken"));
        }
        m.add_unexpected(std::unique_ptr<Incoming>(in));
        return {};
      }
      case kLarge: {
        if (count != kEnvSize || e.seq == 0 || e.seq > seq_max_ || e.chunk == 0 || e.chunk > kMaxChunk)
          return broken(make_error(LF_ERR_PROTOCOL, "rank %d sent a malformed large-message envelope", peer_));
        if (RecvOp *op = m.take_posted(e.tag)) {
          begin_large_recv(*op, e);
          return {};
        }
        auto *in = new (std::nothrow) MpiLargeIncoming(e, this);
        if (!in) return broken(make_error(LF_ERR_NO_MEMORY, "mpi: no memory to note an unexpected message"));
        m.add_unexpected(std::unique_ptr<Incoming>(in));
        return {};
      }
      case kDirect:
        if (count != kEnvSize || scomm_ == MPI_COMM_NULL)
          return broken(make_error(LF_ERR_PROTOCOL, "rank %d switched to a direct stream this channel lacks", peer_));
        recv_direct_ = true;
        return {};
      case kBye: return broken(make_error(LF_ERR_PEER_GONE, "rank %d closed its end of the channel", peer_));
      default: return broken(make_error(LF_ERR_PROTOCOL, "rank %d sent an envelope of unknown kind %u", peer_, e.kind));
    }
  }

  /// Where a receive's message goes: the caller's memory, or for a buffer
  /// receive a new host buffer of the message's size.
  struct Dest {
    char *mem;
    uint64_t cap;
    bool device;
  };
  Result<Dest> recv_dest(RecvOp &op, uint64_t size) noexcept {
    if (!op.want_buffer) return Dest{static_cast<char *>(op.data), op.capacity, is_device(op.data)};
    auto buf = allocate(size ? size : 1, MemoryKind::host);
    if (!buf) return std::unexpected(buf.error());
    (*buf)->set_size(size);
    op.buffer = std::move(*buf);
    return Dest{static_cast<char *>(op.buffer->data()), size, false};
  }

  /// Receive the payload of the large message `e` into `op` (MPI lock held).
  void begin_large_recv(RecvOp &op, const Envelope &e) noexcept {
    op.matched_tag = e.tag;
    op.message_bytes = e.size;
    std::unique_ptr<Transfer> x = take_transfer();
    if (!x) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "mpi: no memory to start a receive"));
    x->rop = &op;
    x->size = e.size;
    x->mpi_tag = base_ | static_cast<int>(e.seq);
    auto d = recv_dest(op, e.size);
    if (!d) {
      // The payload must still be consumed, or the next message with this
      // sequence number would meet it: the stream is lost.
      fail_op(op, d.error());
      return (void)broken(make_error(LF_ERR_NO_MEMORY, "mpi: no memory for a %llu-byte buffer; channel broken",
                                     (unsigned long long)e.size));
    }
    op.bytes = std::min<uint64_t>(e.size, d->cap);
    Status st;
    if (d->device && !t_.device().mpi_aware) {
      st = start_pipeline(*x, false, true, d->mem, d->cap, 0, e.size, e.chunk);
    } else {
      // Whole chunks that fit go straight into place; the rest (truncation)
      // through a bounce buffer.
      uint64_t fit = std::min<uint64_t>(e.size, d->cap) / e.chunk * e.chunk;
      if (e.size <= d->cap) fit = e.size;
      st = post_direct(*x, d->mem, fit, e.chunk, /*send=*/false);
      if (st && fit < e.size) st = start_pipeline(*x, false, d->device, d->mem, d->cap, fit, e.size, e.chunk);
    }
    run_recv(std::move(x), st);
  }

  /// Receive the direct message `msg` (n bytes, lavaflow tag `tag`) into
  /// `op` (MPI lock held). It goes straight into place unless it is larger
  /// than the receive or bound for device memory.
  void begin_direct_recv(RecvOp &op, MPI_Message msg, uint64_t tag, size_t n) noexcept {
    op.matched_tag = tag;
    op.message_bytes = n;
    auto d = recv_dest(op, n);
    BufferPtr bounce;
    if (d && (n > d->cap || d->device)) {
      auto b = allocate(n ? n : 1, d->device ? MemoryKind::host_pinned : MemoryKind::host);
      if (b)
        bounce = std::move(*b);
      else
        d = std::unexpected(b.error());
    }
    std::unique_ptr<Transfer> x;
    if (d && bounce && !(x = take_transfer())) d = LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory to start a receive");
    if (!d) {
      // Only this receive fails: the message is taken all the same, so the
      // stream goes on.
      fail_op(op, d.error());
      return discard(msg, n);
    }
    op.bytes = std::min<uint64_t>(n, d->cap);
    MPI_Request req;
    int rc = MPI_Imrecv(bounce ? bounce->data() : d->mem, static_cast<int>(n), MPI_BYTE, &msg, &req);
    int flag = 0;
    if (rc == MPI_SUCCESS && !bounce) rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      Error err = mpi_error(rc, "MPI_Imrecv");
      fail_op(op, err);
      return (void)broken(err);
    }
    // Straight into place, MPI usually moves it within MPI_Imrecv (see
    // run_recv): then there is nothing to keep track of.
    if (flag) return complete(op, LF_OK);
    if (!x && !(x = take_transfer())) {
      cancel(req);  // matched: waits until the data is in place
      Error err = make_error(LF_ERR_NO_MEMORY, "mpi: no memory to track a receive; channel broken");
      fail_op(op, err);
      return (void)broken(err);
    }
    x->rop = &op;
    x->size = n;
    if (bounce) {
      x->bounce = std::move(bounce);
      x->dst = d->mem;
      x->keep = op.bytes;
      x->dst_device = d->device;
    }
    x->direct.push_back(req);  // within the capacity take_transfer() gives
    run_recv(std::move(x), {});
  }

  /// A receive's MPI requests are posted (st) or failed (!st): complete it
  /// now if MPI already moved the data, keep it for progress() otherwise.
  void run_recv(std::unique_ptr<Transfer> x, Status st) noexcept {
    if (st) {
      // The payload's request usually reached MPI before its receive was
      // posted, and MPI moves it within MPI_Irecv/MPI_Imrecv (shared memory:
      // one copy by this process): complete now rather than on the next pass.
      auto finished = advance(*x);
      if (finished && *finished) return recycle(std::move(x));
      if (!finished) st = std::unexpected(finished.error());
    }
    if (st) {
      try {
        transfers_.push_back(std::move(x));
        return;
      } catch (const std::bad_alloc &) {
        st = LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory to track a receive");
      }
    }
    Error err = st.error();
    abandon(*x, err);
    (void)broken(err);
  }

  /// The next message of the ring, if one has arrived.
  Result<bool> next_envelope(Matcher &m) noexcept {
    Ring &r = ring_[head_];
    int flag = 0;
    MPI_Status status{};
    int rc = MPI_Test(&r.req, &flag, &status);
    if (rc != MPI_SUCCESS) {
      r.active = false;  // completed, with an error
      if (rc == MPI_ERR_TRUNCATE || status.MPI_ERROR == MPI_ERR_TRUNCATE)
        return lost(make_error(LF_ERR_PROTOCOL, "rank %d sent an envelope larger than this rank's slots", peer_));
      return lost(mpi_error(rc, "MPI_Test (envelope)"));
    }
    if (!flag) return false;
    r.active = false;
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    if (auto st = on_envelope(m, r.buf.get(), static_cast<size_t>(count)); !st) return std::unexpected(st.error());
    if (broken_) return std::unexpected(*broken_);
    rc = MPI_Start(&r.req);
    if (rc != MPI_SUCCESS) return lost(mpi_error(rc, "MPI_Start"));
    r.active = true;
    head_ = (head_ + 1) % ring_.size();
    return true;
  }

  /// The next message of the direct stream, if one has arrived. MPI_Improbe
  /// takes it off MPI's queue, so the next probe sees the one after it.
  Result<bool> next_direct(Matcher &m) noexcept {
    // With no receive posted, a message is as well kept by MPI as by the
    // channel (in order, a large one still at its sender): leave it there
    // rather than note it as unexpected, and take it on the first progress
    // after a receive is posted. Unless sends are in flight: the peer's bye
    // may be waiting on this stream, and it is what ends them if the peer
    // closed.
    if (!m.has_posted() && out_.empty() && transfers_.empty()) return false;
    int flag = 0;
    MPI_Message msg = MPI_MESSAGE_NULL;
    MPI_Status status{};
    int rc = MPI_Improbe(peer_, MPI_ANY_TAG, scomm_, &flag, &msg, &status);
    if (rc != MPI_SUCCESS) return lost(mpi_error(rc, "MPI_Improbe"));
    if (!flag) return false;
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    size_t n = static_cast<size_t>(count);
    if (status.MPI_TAG == 0) {  // a marker
      if (n != kEnvSize) return lost(make_error(LF_ERR_PROTOCOL, "rank %d sent a %zu-byte stream marker", peer_, n));
      Envelope e;
      rc = MPI_Mrecv(&e, kEnvSize, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) return lost(mpi_error(rc, "MPI_Mrecv (marker)"));
      if (e.kind == kBye) return lost(make_error(LF_ERR_PEER_GONE, "rank %d closed its end of the channel", peer_));
      if (e.kind != kRing)
        return lost(make_error(LF_ERR_PROTOCOL, "rank %d sent a stream marker of unknown kind %u", peer_, e.kind));
      recv_direct_ = false;
      return true;
    }
    uint64_t tag = static_cast<uint64_t>(status.MPI_TAG) - 1;
    if (RecvOp *op = m.take_posted(tag)) {
      begin_direct_recv(*op, msg, tag, n);
    } else if (auto *in = new (std::nothrow) MpiDirectIncoming(tag, n, msg, this)) {
      m.add_unexpected(std::unique_ptr<Incoming>(in));
    } else {
      discard(msg, n);
      return lost(make_error(LF_ERR_NO_MEMORY, "mpi: no memory to note an unexpected message; channel broken"));
    }
    if (broken_) return std::unexpected(*broken_);
    return true;
  }

  Result<bool> lost(Error e) noexcept {
    (void)broken(std::move(e));
    return std::unexpected(*broken_);
  }

  MpiTransport &t_;
  MPI_Comm comm_;
  MPI_Comm scomm_;  // this channel's direct stream, or MPI_COMM_NULL
  int peer_;
  int base_;  // channel bits; envelopes use it as is
  uint32_t seq_max_;
  uint32_t next_seq_ = 1;
  uint64_t send_eager_ = 0;  // the smaller of our and the peer's eager limit
  size_t slot_size_ = 0;

  std::vector<Ring> ring_;
  size_t head_ = 0;
  std::vector<std::unique_ptr<char[]>> send_slots_;
  std::vector<int> free_slots_;
  std::vector<Out> out_;
  std::vector<MPI_Request> out_reqs_;
  std::vector<int> out_done_;
  std::vector<std::unique_ptr<Transfer>> transfers_;
  std::vector<std::unique_ptr<Transfer>> spare_;
#if LAVAFLOW_HAVE_CUDA
  cudaStream_t stream_ = nullptr;
#endif
  std::optional<Error> broken_;
  bool send_direct_ = false;  // this rank's messages go on the direct stream
  bool recv_direct_ = false;  // the peer's messages come on the direct stream
  int small_run_ = 0;         // small messages sent direct in a row
};

void MpiEagerIncoming::deliver(RecvOp &op) noexcept { ep_->deliver_unexpected(op, tag(), copy_.get(), size()); }
void MpiLargeIncoming::deliver(RecvOp &op) noexcept { ep_->start_large(op, env_); }
void MpiDirectIncoming::deliver(RecvOp &op) noexcept { ep_->start_direct(op, msg_, tag(), size()); }

Result<std::unique_ptr<Endpoint>> MpiTransport::connect(World &world, int peer, Deadline) {
  if (comm_ == MPI_COMM_NULL) return LF_FAIL(LF_ERR_UNAVAILABLE, "mpi transport did not start");
  if (peer == world.rank() || peer < 0 || peer >= world.size())
    return LF_FAIL(LF_ERR_INVALID_ARG, "mpi: cannot connect rank %d to rank %d", world.rank(), peer);
  const std::string &addr = world.address(peer, "mpi");
  uint64_t peer_eager = 0;
  if (addr.rfind("mpi:eager=", 0) != 0 || (peer_eager = std::strtoull(addr.c_str() + 10, nullptr, 10)) > (1u << 20))
    return LF_FAIL(LF_ERR_PROTOCOL, "rank %d published a bad mpi address '%s'", peer, addr.c_str());
  uint32_t k;
  {
    std::lock_guard g(connect_mu_);
    k = next_channel_[peer]++;
  }
  if (k >= (1u << chan_bits_) - 1)
    return LF_FAIL(LF_ERR_UNAVAILABLE, "mpi: %u channels were opened between ranks %d and %d; MPI_TAG_UB allows %u", k,
                   world.rank(), peer, (1u << chan_bits_) - 1);
  int base = static_cast<int>(k << seq_bits_);
  std::unique_ptr<MpiEndpoint> ep;
  try {
    ep = std::make_unique<MpiEndpoint>(*this, peer, base, peer_eager, stream(k));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for an endpoint");
  }
  if (auto st = ep->post_ring(); !st) return std::unexpected(st.error());
  return std::unique_ptr<Endpoint>(std::move(ep));
}

}  // namespace

std::unique_ptr<Transport> make_mpi_transport() { return std::make_unique<MpiTransport>(); }

}  // namespace lf
