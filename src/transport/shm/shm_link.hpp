// What the parts of one shm endpoint share (shm_endpoint.cpp composes them):
// the mapped rings of both directions, the connection with its failure
// state, and the doorbell primitives. Header only: all of it is on the data
// path.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <optional>

#include "transport/shm/shm_endpoint.hpp"
#include "transport/shm/shm_protocol.hpp"

namespace lf::shm {

// Shared (not private) futexes: the word lives in a MAP_SHARED memfd mapping
// that the peer process waits on or wakes.
inline void futex_wait(std::atomic<uint32_t> *word, uint32_t expected, long timeout_us) noexcept {
  timespec ts{timeout_us / 1000000, (timeout_us % 1000000) * 1000L};
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

inline void futex_wake(std::atomic<uint32_t> *word) noexcept {
  syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

/// Wake the consumer of `d` if it said it sleeps. Callers publish, issue a
/// seq_cst fence, then call this; the sleeper raises `sleeping` (seq_cst)
/// and re-checks its rings before FUTEX_WAIT, so one of the two sees the
/// other. The credit path (Receiver::wake_blocked_producer) checks its flag
/// without a fence on the hot path, so a sleeper's first sleep after raising
/// `sleeping` is short (kFirstSleepUs) and `sleeping` stays raised across
/// further sleeps until progress() finds work.
inline void ring_bell(DirControl *d) noexcept {
  if (d->sleeping.load(std::memory_order_relaxed)) {
    d->bell.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(&d->bell);
  }
}

/// First futex sleep after the consumer raised `sleeping` (see ring_bell).
inline constexpr long kFirstSleepUs = 50;

inline void copy_slot(SlotImage &out, const Slot &in) noexcept {
  std::memcpy(static_cast<void *>(&out), static_cast<const void *>(&in), sizeof out);  // the first 64 bytes
}

inline void write_body_header(Slot &s, Kind k, uint64_t tag, uint64_t size) noexcept {
  s.kind = static_cast<uint8_t>(k);
  s.flags = 0;
  s.reserved = 0;
  s.tag = tag;
  s.size = size;
}

/// Where everything of the segment lives, for this rank's role: tx is the
/// direction it writes, rx the one it reads. Set once, read by every thread.
struct Rings {
  Rings(const SharedSegment &seg, int role) noexcept {
    auto *base = static_cast<char *>(seg.base());
    const auto *h = reinterpret_cast<const SegmentHeader *>(base);
    Layout l{};
    compute_layout(h->slot_count, h->ctl_count, h->fifo_bytes, l);  // checked at the handshake
    char *txd = base + l.dir_offset[role], *rxd = base + l.dir_offset[1 - role];
    tx_dir = reinterpret_cast<DirControl *>(txd);
    rx_dir = reinterpret_cast<DirControl *>(rxd);
    tx_slots = reinterpret_cast<Slot *>(txd + l.slots_off);
    rx_slots = reinterpret_cast<Slot *>(rxd + l.slots_off);
    tx_ctl = reinterpret_cast<Slot *>(txd + l.ctl_off);
    rx_ctl = reinterpret_cast<Slot *>(rxd + l.ctl_off);
    tx_fifo = txd + l.fifo_off;
    rx_fifo = rxd + l.fifo_off;
    slot_count = h->slot_count;
    slot_mask = h->slot_count - 1;
    ctl_count = h->ctl_count;
    fifo = h->fifo_bytes;
  }
  DirControl *tx_dir, *rx_dir;
  Slot *tx_slots, *rx_slots, *tx_ctl, *rx_ctl;
  char *tx_fifo, *rx_fifo;
  uint64_t slot_count, slot_mask, ctl_count, fifo;
};

/// The connection as the parts see it. A part that finds the connection
/// broken records why here (fail) and returns; the endpoint then fails every
/// operation all parts hold (ShmEndpoint::fail_held).
class Link {
 public:
  explicit Link(Connection c) : conn(std::move(c)) {}
  Connection conn;
  void fail(const Error &e) noexcept {
    if (!failed_) {
      try {
        failed_ = e;
      } catch (...) {
        failed_ = Error{e.code, {}};
      }
    }
    broken.store(true, std::memory_order_relaxed);
  }
  const std::optional<Error> &failed() const noexcept { return failed_; }
  /// Record a malformed message from the peer; returns -1 for rx paths.
  int protocol_error(const char *what, const SlotImage &s) noexcept {
    fail(make_error(LF_ERR_PROTOCOL, "shm: malformed message from rank %d (kind %u, size %llu): %s", conn.peer_rank,
                    static_cast<unsigned>(s.kind), static_cast<unsigned long long>(s.size), what));
    return -1;
  }
  int peer() const noexcept { return conn.peer_rank; }
  /// Also read by wait_for_activity() without the channel's lock.
  std::atomic<bool> broken{false}, peer_gone{false};

 private:
  std::optional<Error> failed_;
};

}  // namespace lf::shm
