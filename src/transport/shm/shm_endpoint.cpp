// The shared-memory endpoint: one connection to one peer on this host.
// shm_transport.cpp sets the connection up; this file composes the parts
// that move the messages and drives them from progress():
//
//   Sender       (shm_sender)    the data ring and fifo this rank writes
//   Receiver     (shm_receiver)  the data ring and fifo the peer writes
//   ControlTx    (shm_control)   acks, releases, park/cut/resume to the peer
//   PeerSegments (shm_segments)  the peer's announcements on the socket
//   DeviceLane   (device_lane)   GPU IPC variants only: device descriptors
//
// Protocols (docs/performance.md, Layer 2, has the measurements):
//
//   size <= 40 B            inline in one ring slot (one cache line)
//   size <= eager limit     one piece in the fifo, copied in and out
//   CMA, when enabled       descriptor; the receiver process_vm_readv()s the
//                           sender's buffer after the match and acks
//   larger                  pipelined through the fifo in chunks: the sender
//                           copies chunk i+1 while the receiver copies chunk i
//   shared-pool buffers     descriptor only (zero copy); the receiver's view
//                           sends a release when freed
//
// Credits: a sender uses a slot and fifo bytes only when the consumer has
// published that it is done with them, so a slow receiver stops the sender
// (its operations stay LF_IN_PROGRESS, queued without a copy). Unexpected
// messages are copied out of the ring so it keeps flowing, up to
// LF_SHM_UNEXPECTED_MAX; beyond that the receiver stops draining the ring and
// the backpressure reaches the sender. An unexpected pipelined message larger
// than the fifo that does not fit the budget is not copied out: the receiver
// parks it at its sender (Kind::park, Kind::cut) and asks for it again when
// a receive takes it (Kind::resume), so it costs no memory here meanwhile.
#include "transport/shm/shm_endpoint.hpp"

#include <immintrin.h>
#include <poll.h>
#include <time.h>

#include <algorithm>
#include <bit>

#include "core/config.hpp"
#include "transport/shm/device_lane.hpp"
#include "transport/shm/shm_control.hpp"
#include "transport/shm/shm_receiver.hpp"
#include "transport/shm/shm_segments.hpp"
#include "transport/shm/shm_sender.hpp"

namespace lf::shm {

namespace {

std::unique_ptr<DeviceLane> make_lane(Link &link, const DeviceIpc &dev, uint64_t slot_count) {
  if (!dev.api) return nullptr;
  return std::make_unique<DeviceLane>(link, static_cast<gpu_ipc::Api>(dev.api), dev.peer_identity, slot_count);
}

class ShmEndpoint final : public Endpoint {
 public:
  ShmEndpoint(Connection c, const Tunables &t, const DeviceIpc &dev)
      : link_(std::move(c)),
        r_(*link_.conn.segment, link_.conn.role),
        ctl_tx_(std::make_shared<ControlTx>(r_.tx_ctl, static_cast<uint32_t>(r_.ctl_count), r_.tx_dir)),
        lane_(make_lane(link_, dev, r_.slot_count)),
        segments_(link_, lane_.get()),
        tx_(link_, r_, t, ctl_tx_, lane_.get()),
        rx_(link_, r_, t, ctl_tx_, segments_, lane_.get()),
        spin_(t.spin),
        hup_every_(std::max(1, t.hup_every)) {}

  ~ShmEndpoint() override {
    if (!link_.failed() && ctl_ready()) (void)drain_control();  // releases already published
    fail_held(make_error(LF_ERR_CLOSED, "channel was closed"));
    ctl_tx_->close();
  }

  void send(SendOp &op) noexcept override {
    if (link_.failed()) return fail_op(op, *link_.failed());
    tx_.send(op);
  }

  Status progress(Matcher &m) noexcept override {
    if (link_.failed()) return std::unexpected(*link_.failed());
    int n = rx_.drain(m, 64);
    if (n < 0) return broke();
    rx_.publish_rest();
    // Control after data: a release published before a data message is then
    // seen in the same call as that message.
    if (ctl_ready()) {
      if (!drain_control()) return broke();
      n = 1;
    }
    if (n) awake();
    if (tx_.busy()) tx_.pump();
    if (ctl_tx_->has_pending()) ctl_tx_->flush();
    tx_.wake_peer();
    // The socket is checked every hup_every_ calls, and at least every
    // 100 ms of a slow caller's time (lf_channel_status polled each
    // millisecond must see a dead peer within its promise of 1 s).
    if (++polls_ >= hup_every_ || ((polls_ & 63) == 0 && socket_check_due())) {
      polls_ = 0;
      check_socket();
    }
    if (link_.peer_gone.load(std::memory_order_relaxed) && !rx_.has_message()) {
      // Releases the peer published before it hung up return their blocks
      // now; those missed here would stay held until the peer exits.
      if (ctl_ready() && !drain_control()) return broke();
      fail_held(make_error(LF_ERR_PEER_GONE, "shm: rank %d closed the connection or exited", link_.peer()));
      return std::unexpected(*link_.failed());
    }
    return {};
  }

  // Runs without the channel's lock (transport.hpp, rule 6): a thread may be
  // in send() or progress() meanwhile. It touches only atomics in this
  // object and the shared segment, the futex word, and the socket's fd.
  void wait_for_activity(int timeout_ms) noexcept override {
    if (has_work()) return;
    for (int i = 0; i < spin_; ++i) {
      _mm_pause();
      if (has_work()) return;
    }
    if (timeout_ms <= 0) return;
    rx_.wake_blocked_producer();  // about to sleep: nobody would wake the peer later
    DirControl *rx = r_.rx_dir;
    const uint32_t bell = rx->bell.load(std::memory_order_acquire);
    // `sleeping` stays raised until progress() finds work (see ring_bell),
    // unless another thread of this rank is about to sleep (awake()).
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    const bool first = rx->sleeping.load(std::memory_order_seq_cst) == 0;
    if (first) rx->sleeping.store(1, std::memory_order_seq_cst);
    const bool blocked = tx_.blocked();
    if (blocked) r_.tx_dir->credit_waiter.store(1, std::memory_order_seq_cst);
    const long us = first ? kFirstSleepUs : std::min(timeout_ms, 100) * 1000L;
    if (!has_work() && !(blocked && tx_.credits_changed())) futex_wait(&rx->bell, bell, us);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    // A sleeping rank learns of a dead peer here: the futex timeout bounds
    // how long that takes.
    check_socket();
  }

 private:
  /// Awake and busy: the peer need not ring the bell any more. But a thread
  /// in wait_for_activity() may have raised `sleeping` and be about to sleep
  /// (it found no work because this call took it): clearing the flag under
  /// it would leave it asleep until its timeout while messages arrive. The
  /// seq_cst order of the waiter's increment and this re-check settles it.
  void awake() noexcept {
    std::atomic<uint32_t> &sleeping = r_.rx_dir->sleeping;
    if (!sleeping.load(std::memory_order_relaxed) || waiters_.load(std::memory_order_seq_cst)) return;
    sleeping.store(0, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst)) sleeping.store(1, std::memory_order_seq_cst);
  }

  bool ctl_ready() const noexcept {
    return r_.rx_ctl[rx_ctl_pos_ & (r_.ctl_count - 1)].seq.load(std::memory_order_acquire) ==
           static_cast<uint32_t>(rx_ctl_pos_ + 1);
  }

  /// Anything for progress() to do (unlocked: see wait_for_activity).
  bool has_work() const noexcept {
    if (rx_.has_work_unlocked()) return true;
    const uint64_t cpos = r_.rx_dir->ctl_consumed.load(std::memory_order_acquire);
    if (r_.rx_ctl[cpos & (r_.ctl_count - 1)].seq.load(std::memory_order_acquire) == static_cast<uint32_t>(cpos + 1))
      return true;
    return link_.peer_gone.load(std::memory_order_relaxed) || link_.broken.load(std::memory_order_relaxed) ||
           ctl_tx_->has_pending();
  }

  /// The control ring, always drained: acks and releases, park and resume
  /// for the send side, cuts for the receive side.
  bool drain_control() noexcept {
    while (ctl_ready()) {
      SlotImage s;
      copy_slot(s, r_.rx_ctl[rx_ctl_pos_ & (r_.ctl_count - 1)]);
      Decoded d;
      const char *err = decode_control(s, d);
      if (!err)
        err = d.kind != Kind::cut           ? tx_.on_control(d)
              : rx_.on_cut(d.cookie, d.len) ? nullptr
                                            : "cut names no parked stream";
      if (err) return link_.protocol_error(err, s), false;
      if (link_.failed()) return false;
      ++rx_ctl_pos_;
      r_.rx_dir->ctl_consumed.store(rx_ctl_pos_, std::memory_order_release);
    }
    return true;
  }

  bool socket_check_due() noexcept {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);  // a vDSO read, no system call
    int64_t ms = int64_t(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
    if (ms - last_check_ms_ < 100) return false;
    last_check_ms_ = ms;
    return true;
  }

  void check_socket() noexcept {
    if (link_.peer_gone.load(std::memory_order_relaxed)) return;
    pollfd p{link_.conn.sock.get(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
      link_.peer_gone.store(true, std::memory_order_relaxed);
  }

  /// A part recorded why the connection broke: fail everything held.
  Status broke() noexcept {
    fail_held(*link_.failed());
    return std::unexpected(*link_.failed());
  }

  /// Fail every operation this endpoint holds (rule 3/4 of transport.hpp).
  void fail_held(const Error &e) noexcept {
    link_.fail(e);
    tx_.fail_all(e);
    rx_.fail_all(e);
  }

  Link link_;
  const Rings r_;
  std::shared_ptr<ControlTx> ctl_tx_;
  std::unique_ptr<DeviceLane> lane_;
  PeerSegments segments_;
  Sender tx_;
  Receiver rx_;
  uint64_t rx_ctl_pos_ = 0;
  int spin_, hup_every_, polls_ = 0;
  int64_t last_check_ms_ = 0;    ///< CLOCK_MONOTONIC_COARSE of the last timed socket check
  std::atomic<int> waiters_{0};  ///< threads in wait_for_activity() past raising `sleeping`
};

}  // namespace

Tunables Tunables::from_config() {
  Tunables t;
  auto pos = [](const char *name, int64_t lo, int64_t hi) {
    return static_cast<uint64_t>(std::clamp<int64_t>(config::get_int(name), lo, hi));
  };
  t.ring_slots = static_cast<uint32_t>(std::bit_ceil(pos("LF_SHM_RING_SLOTS", kMinSlots, kMaxSlots)));
  t.fifo_bytes = std::bit_ceil(pos("LF_SHM_FIFO_BYTES", kMinFifo, kMaxFifo));
  t.eager_limit = pos("LF_SHM_EAGER_LIMIT", 0, INT64_MAX);
  t.chunk = pos("LF_SHM_CHUNK", 4096, INT64_MAX);
  t.cma_threshold = pos("LF_SHM_CMA_THRESHOLD", 0, INT64_MAX);
  t.unexpected_max = pos("LF_SHM_UNEXPECTED_MAX", 0, INT64_MAX);
  t.spin = static_cast<int>(pos("LF_SHM_SPIN", 0, INT32_MAX));
  t.hup_every = static_cast<int>(pos("LF_SHM_HUP_CHECK", 1, INT32_MAX));
  t.hold_us = static_cast<int>(pos("LF_SHM_HOLD_US", 0, 10'000'000));
  return t;
}

Result<std::unique_ptr<Endpoint>> make_endpoint(Connection conn, const Tunables &t, const DeviceIpc &device) {
  try {
    return std::unique_ptr<Endpoint>(std::make_unique<ShmEndpoint>(std::move(conn), t, device));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "shm: no memory for an endpoint");
  }
}

}  // namespace lf::shm
