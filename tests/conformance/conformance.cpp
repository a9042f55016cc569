// One conformance suite for every transport: the rules of
// src/transport/transport.hpp and the request calls of lavaflow.h, checked
// the same way on each transport that starts here at run time.
//
// Instances (ctest names "Conformance/<transport>.<Check>", with '_' for '-'
// in the transport's name: a '-' would start a negative --gtest_filter):
//  - self: one rank, the single-rank subset of the checks;
//  - shm, tcp: two ranks forked by this process (tests/common/multiprocess.hpp);
//  - vulkan-ipc: the same, with the channel opened for LF_MEM_VULKAN_DEVICE
//    (lavapipe where there is no GPU), when Vulkan device memory can be had;
//  - cuda-ipc: the same for LF_MEM_CUDA_DEVICE, when a CUDA device exists;
//  - mpi: this executable run by `mpiexec -n 2` (--conformance-rank=<Check>),
//    the two ranks declared on different hosts (tests/remote/declared_remote.sh)
//    so that their scope is remote; the world comes from MPI.
// Every instance forces its transport (LF_TRANSPORTS=<name>, LF_STRICT=1) and
// checks lf_channel_transport. A transport that cannot start here has no
// instance: one skipped test, "Conformance/<transport>.NotAvailableHere",
// says why (like UCX's gtest, but the reason is printed once).
//
// Rank 0 is the receiver (and the survivor of faults), rank 1 the sender.
// Ranks synchronise over the channel (a control tag) or, for the faults the
// parent injects (SIGKILL, SIGSTOP/SIGCONT of rank 1), over the harness's
// pipes; nothing sleeps to order processes, and every wait has a deadline.
#include <lavaflow/lavaflow.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "lavaflow_features.h"
#include "multiprocess.hpp"
#include "payload.hpp"

using namespace lftest;

namespace {

// ---- instances --------------------------------------------------------------------------

struct Instance {
  std::string name;  ///< the transport, as lf_channel_transport names it
  /// The name in test names: '-' would start a negative --gtest_filter
  /// pattern, so "vulkan-ipc" is "vulkan_ipc" there.
  std::string test_name() const {
    std::string t = variant.empty() ? name : name + "_" + variant;
    std::replace(t.begin(), t.end(), '-', '_');
    return t;
  }
  int ranks = 2;
  bool mpi = false;  ///< run by mpiexec instead of forked
  lf_memory_kind_t kind = LF_MEM_HOST;
  std::string unavailable;                               ///< why there is no instance here ("" when there is)
  std::string variant;                                   ///< one of several instances of a transport (ucx: its UCX_TLS)
  std::vector<std::pair<std::string, std::string>> env;  ///< set for the ranks
};

constexpr int64_t kWaitMs = 30000;  ///< bound on any single wait in a check
constexpr uint64_t kCtl = 1000000;  ///< control messages between the ranks
constexpr int kFaultStopMs = 3000;  ///< how long rank 1 stays stopped

/// What a check's body sees: its rank, the instance, an open channel.
struct Peer {
  Rank &r;
  const Instance &inst;
  lf_context_t ctx = nullptr;
  lf_channel_t ch = nullptr;
  int other = 0;
  pid_t peer_pid = -1;
  bool peer_killed = false;
  bool single() const { return inst.ranks == 1; }
  bool receiver() const { return r.rank == 0; }  // also the sender when single
  bool sender() const { return r.rank == 1 || single(); }
};

#define P_REQUIRE(p, ...) REQUIRE((p).r, __VA_ARGS__)
#define P_OK(p, call) REQUIRE_OK((p).r, call)
#define P_ST(p, want, call) REQUIRE_ST((p).r, want, call)

/// A message whose first 8 bytes carry `id` and whose rest is fill(id).
void make_msg(std::vector<char> &b, size_t n, uint64_t id) {
  b.resize(std::max<size_t>(n, 1));
  fill(b.data(), n, id);
  if (n >= 8) std::memcpy(b.data(), &id, 8);
}
/// The id of a message made by make_msg, checking the rest of its bytes.
uint64_t check_msg(Peer &p, const char *b, size_t n) {
  P_REQUIRE(p, n >= 8, "message of %zu bytes has no id", n);
  uint64_t id;
  std::memcpy(&id, b, 8);
  std::vector<char> want(n);
  fill(want.data(), n, id);
  P_REQUIRE(p, std::memcmp(want.data() + 8, b + 8, n - 8) == 0, "message %" PRIu64 " (%zu bytes) corrupted", id, n);
  return id;
}

/// What the check is doing, for the message of a wait that timed out.
char g_step[160] = "";
#define STEP(...) std::snprintf(g_step, sizeof g_step, __VA_ARGS__)

/// Wait for `req` with the suite's bound; the status is the caller's to check.
lf_status_t wait_b(Peer &p, lf_request_t req, size_t *bytes = nullptr, int64_t ms = kWaitMs) {
  lf_status_t st = lf_wait_timeout(req, ms, bytes);
  if (st == LF_ERR_TIMEOUT)
    leave(p.r, 1, __FILE__, __LINE__, "a request did not complete within %" PRId64 " ms (%s)", ms, g_step);
  return st;
}
lf_status_t wait_completion_b(Peer &p, lf_request_t req, lf_completion_t &info) {
  // lf_wait_completion has no deadline, and lf_wait_timeout frees a completed
  // request without the completion: test until done, then take it.
  const int64_t end = monotonic_ns() + kWaitMs * 1000000;
  for (int i = 0;; ++i) {
    int done = 0;
    lf_status_t st = lf_test(req, &done);
    if (st != LF_OK || done) return lf_wait_completion(req, &info);
    if (monotonic_ns() > end)
      leave(p.r, 1, __FILE__, __LINE__, "a request did not complete within %" PRId64 " ms (%s)", kWaitMs, g_step);
    if (i > 1000)
      ::poll(nullptr, 0, 1);  // let the peer run on a busy machine
    else
      sched_yield();
  }
}
void send_b(Peer &p, const void *data, size_t n, uint64_t tag) {
  lf_request_t req;
  P_OK(p, lf_isend(p.ch, data, n, tag, &req));
  P_ST(p, LF_OK, wait_b(p, req));
}
size_t recv_b(Peer &p, void *data, size_t cap, uint64_t tag, lf_status_t want = LF_OK) {
  lf_request_t req;
  P_OK(p, lf_irecv(p.ch, data, cap, tag, &req));
  size_t got = 0;
  P_ST(p, want, wait_b(p, req, &got));
  return got;
}
void ctl_send(Peer &p, char c) { send_b(p, &c, 1, kCtl); }
char ctl_recv(Peer &p) {
  char c = 0;
  P_REQUIRE(p, recv_b(p, &c, 1, kCtl) == 1, "control message size");
  return c;
}

// ---- faults --------------------------------------------------------------------------
// Forked instances ask the parent, which owns rank 1's process; under mpiexec
// rank 0 signals its peer itself (same host, its pid came over the channel).

/// Stop rank 1, call `during()` while it is stopped (for the fault's 3 s),
/// then continue it.
void stop_peer_for_a_while(Peer &p, const std::function<void()> &during) {
  if (p.inst.mpi) {
    P_REQUIRE(p, kill(p.peer_pid, SIGSTOP) == 0, "SIGSTOP %d: %s", p.peer_pid, strerror(errno));
    const int64_t end = monotonic_ns() + int64_t{kFaultStopMs} * 1000000;
    while (monotonic_ns() < end) during();
    P_REQUIRE(p, kill(p.peer_pid, SIGCONT) == 0, "SIGCONT %d: %s", p.peer_pid, strerror(errno));
    return;
  }
  p.r.signal('S');  // the parent stops rank 1, keeps it stopped 3 s, continues it, then answers 'c'
  for (;;) {
    char c;
    if (p.r.poll_parent(c)) {
      P_REQUIRE(p, c == 'c', "parent answered '%c'", c);
      return;
    }
    during();
  }
}

/// Have rank 1 killed (SIGKILL); returns the time of the kill (monotonic ns)
/// once the parent reports it. `blocked()` runs between the request and the
/// report: the survivor blocks there while its peer dies.
int64_t kill_peer(Peer &p, const std::function<void()> &blocked) {
  p.r.signal('K');
  p.peer_killed = true;
  blocked();
  int64_t t_kill = 0;
  p.r.receive(&t_kill, sizeof t_kill);
  return t_kill;
}

// ---- opening ------------------------------------------------------------------------

Peer open_peer(Rank &r, const Instance &inst) {
  Peer p{r, inst};
  P_OK(p, lf_init(&p.ctx));
  P_REQUIRE(p, lf_size(p.ctx) == inst.ranks, "world of %d ranks", lf_size(p.ctx));
  P_REQUIRE(p, lf_rank(p.ctx) == r.rank, "rank %d", lf_rank(p.ctx));
  p.other = inst.ranks == 1 ? 0 : 1 - r.rank;
  lf_channel_params_t params = LF_CHANNEL_PARAMS_INIT;
  params.memory_kind = inst.kind;
  P_OK(p, lf_channel_open_ex(p.ctx, p.other, &params, &p.ch));
  const char *t = lf_channel_transport(p.ch);
  P_REQUIRE(p, t && inst.name == t, "transport %s, want %s (%s)", t ? t : "null", inst.name.c_str(),
            lf_channel_reason(p.ch));
  if (!p.single()) {
    // Each rank learns the other's pid (rank 0 signals it under mpiexec).
    const int64_t me = getpid();
    int64_t them = 0;
    lf_request_t s, q;
    P_OK(p, lf_isend(p.ch, &me, sizeof me, kCtl, &s));
    P_OK(p, lf_irecv(p.ch, &them, sizeof them, kCtl, &q));
    P_OK(p, wait_b(p, s));
    P_OK(p, wait_b(p, q));
    p.peer_pid = static_cast<pid_t>(them);
  }
  return p;
}

void close_peer(Peer &p) {
  // Neither rank closes while the other may still wait for a send of its to
  // be confirmed (a close racing that is DeliveredSendSurvivesThePeersClose's
  // business, not every check's).
  if (!p.single() && !p.peer_killed) P_OK(p, lf_barrier(p.ctx));
  if (p.ch) P_OK(p, lf_channel_close(p.ch));
  P_OK(p, lf_finalize(p.ctx));
}

// ---- the checks -----------------------------------------------------------------------

// The channel says which transport it uses and why, and carries a message
// each way.
void transport_is_the_forced_one(Peer &p) {
  const char *why = lf_channel_reason(p.ch);
  P_REQUIRE(p, why && std::strstr(why, p.inst.name.c_str()), "reason: %s", why ? why : "null");
  P_REQUIRE(p, lf_channel_peer(p.ch) == p.other, "peer %d", lf_channel_peer(p.ch));
  P_OK(p, lf_channel_status(p.ch));
  char in[16] = {};
  if (p.single()) {
    send_b(p, "ping", 5, 1);
    P_REQUIRE(p, recv_b(p, in, sizeof in, 1) == 5 && !std::strcmp(in, "ping"), "got %s", in);
    return;
  }
  const char *mine = p.r.rank == 0 ? "from0" : "from1";
  lf_request_t s;
  P_OK(p, lf_isend(p.ch, mine, 6, 1, &s));
  P_REQUIRE(p, recv_b(p, in, sizeof in, 1) == 6, "size");
  P_REQUIRE(p, std::strcmp(in, p.r.rank == 0 ? "from1" : "from0") == 0, "got %s", in);
  P_OK(p, wait_b(p, s));
}

// Several tags interleaved, sizes across every protocol of the transports
// (inline, eager, pipelined); part received by receives posted before the
// messages arrive, the rest taken tag by tag in another order than sent, so
// most wait as unexpected. Within a tag nothing is overtaken.
void per_tag_order_no_overtaking(Peer &p) {
  constexpr int kTags = 4, kPer = 150, kPosted = 40;
  auto size_of = [](int tag, int seq) -> size_t {
    uint64_t h = mix(static_cast<uint64_t>(tag) * 100003 + static_cast<uint64_t>(seq));
    switch (h % 10) {
      case 0: return 20000 + h % 300000;
      case 1:
      case 2: return 41 + h % 16000;
      default: return 8 + h % 33;
    }
  };
  auto id_of = [](int tag, int seq) { return static_cast<uint64_t>(tag) << 32 | static_cast<uint64_t>(seq); };
  std::vector<lf_request_t> sends;
  std::vector<std::vector<char>> kept;
  std::vector<std::vector<char>> posted_buf(kPosted, std::vector<char>(400000));
  std::vector<lf_request_t> posted(kPosted);
  if (p.receiver()) {
    // The first kPosted messages of tag 0 find their receives waiting.
    for (int i = 0; i < kPosted; ++i)
      P_OK(p, lf_irecv(p.ch, posted_buf[i].data(), posted_buf[i].size(), 100, &posted[i]));
    if (!p.single()) ctl_send(p, 'g');
  }
  if (p.sender()) {
    if (!p.single()) P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    // Non-blocking: a send may complete only once a receive matches it (mpi's
    // rendezvous above 1 KiB), and the receiver takes the tags in another
    // order than they are sent.
    int seq[kTags] = {};
    std::vector<lf_request_t> reqs(kTags * kPer);
    std::vector<std::vector<char>> keep(kTags * kPer);
    for (int i = 0; i < kTags * kPer; ++i) {
      int tag = static_cast<int>(mix(static_cast<uint64_t>(i)) % kTags);
      while (seq[tag] == kPer) tag = (tag + 1) % kTags;
      make_msg(keep[i], size_of(tag, seq[tag]), id_of(tag, seq[tag]));
      P_OK(p, lf_isend(p.ch, keep[i].data(), size_of(tag, seq[tag]), static_cast<uint64_t>(100 + tag), &reqs[i]));
      ++seq[tag];
    }
    if (!p.single()) {
      for (int i = 0; i < kTags * kPer; ++i) {
        STEP("send %d of %d", i, kTags * kPer);
        P_OK(p, wait_b(p, reqs[i]));
      }
    } else {
      sends = std::move(reqs);  // to oneself: completed by the receives below
      kept = std::move(keep);
    }
  }
  if (p.receiver()) {
    for (int i = 0; i < kPosted; ++i) {
      STEP("posted receive %d of tag 0", i);
      size_t got = 0;
      P_OK(p, wait_b(p, posted[i], &got));
      P_REQUIRE(p, got == size_of(0, i), "tag 0 seq %d: %zu bytes", i, got);
      uint64_t id = check_msg(p, posted_buf[i].data(), got);
      P_REQUIRE(p, id == id_of(0, i), "tag 0: message %" PRIx64 " where seq %d was due", id, i);
    }
    std::vector<char> buf(400000);
    for (int tag = kTags - 1; tag >= 0; --tag) {
      for (int s = tag == 0 ? kPosted : 0; s < kPer; ++s) {
        STEP("receiving tag %d seq %d (%zu bytes)", tag, s, size_of(tag, s));
        size_t got = recv_b(p, buf.data(), buf.size(), static_cast<uint64_t>(100 + tag));
        P_REQUIRE(p, got == size_of(tag, s), "tag %d seq %d: %zu bytes", tag, s, got);
        uint64_t id = check_msg(p, buf.data(), got);
        P_REQUIRE(p, id == id_of(tag, s), "tag %d: message %" PRIx64 " where seq %d was due", tag, id, s);
      }
    }
    for (lf_request_t q : sends) P_OK(p, wait_b(p, q));
    if (!p.single()) ctl_send(p, 'd');  // the sender's last sends are done before it closes
  } else {
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
  }
}

// LF_ANY_TAG takes messages in arrival order, whatever their tags; the
// completion names each message's tag. The first receives wait posted, the
// rest find the messages queued.
void any_tag_takes_arrival_order(Peer &p) {
  constexpr int kMsgs = 60, kPosted = 10;
  auto tag_of = [](int i) -> uint64_t {
    const uint64_t tags[] = {5, 9, 5, 7, 1ull << 63, 0, 3};
    return tags[mix(static_cast<uint64_t>(i) + 7) % 7];
  };
  auto size_of = [](int i) -> size_t { return i % 9 == 4 ? 300000 : 8 + static_cast<size_t>(i) * 37 % 5000; };
  std::vector<std::vector<char>> buf(kMsgs, std::vector<char>(300000));
  std::vector<lf_request_t> reqs(kMsgs);
  if (p.receiver()) {
    for (int i = 0; i < kPosted; ++i) P_OK(p, lf_irecv(p.ch, buf[i].data(), buf[i].size(), LF_ANY_TAG, &reqs[i]));
    if (!p.single()) ctl_send(p, 'g');
  }
  if (p.sender()) {
    if (!p.single()) {
      // A receive on the control tag only: the ANY_TAG receives must not see it.
      P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    }
    std::vector<char> m;
    for (int i = 0; i < kMsgs; ++i) {
      make_msg(m, size_of(i), static_cast<uint64_t>(i));
      send_b(p, m.data(), size_of(i), tag_of(i));
    }
  }
  if (p.receiver()) {
    for (int i = 0; i < kMsgs; ++i) {
      if (i >= kPosted) P_OK(p, lf_irecv(p.ch, buf[i].data(), buf[i].size(), LF_ANY_TAG, &reqs[i]));
      lf_completion_t info = LF_COMPLETION_INIT;
      P_OK(p, wait_completion_b(p, reqs[i], info));
      P_REQUIRE(p, info.bytes == size_of(i) && info.message_bytes == size_of(i), "message %d: %zu bytes", i,
                info.bytes);
      uint64_t id = check_msg(p, buf[i].data(), info.bytes);
      P_REQUIRE(p, id == static_cast<uint64_t>(i), "ANY_TAG receive %d got message %" PRIu64, i, id);
      P_REQUIRE(p, info.tag == tag_of(i), "message %d: tag %" PRIu64 ", sent with %" PRIu64, i, info.tag, tag_of(i));
    }
    if (!p.single()) ctl_send(p, 'd');
  } else {
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
  }
}

// Zero-byte messages: with and without a data pointer, into no buffer, into a
// buffer (nothing written), as a buffer receive, between non-empty ones.
void zero_byte_messages(Peer &p) {
  const size_t sizes[] = {0, 1, 0, 0, 17, 0};
  if (p.sender()) {
    if (!p.single()) P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    char data[32];
    for (size_t i = 0; i < std::size(sizes); ++i) {
      fill(data, sizes[i], i);
      send_b(p, i % 2 ? data : (sizes[i] ? data : nullptr), sizes[i], 40 + i % 2);
    }
    send_b(p, nullptr, 0, 42);
  }
  if (p.receiver()) {
    lf_request_t first;
    P_OK(p, lf_irecv(p.ch, nullptr, 0, 40, &first));  // posted before it arrives
    if (!p.single()) ctl_send(p, 'g');
    lf_completion_t info = LF_COMPLETION_INIT;
    P_OK(p, wait_completion_b(p, first, info));
    P_REQUIRE(p, info.bytes == 0 && info.message_bytes == 0 && info.tag == 40, "first: %zu bytes tag %" PRIu64,
              info.bytes, info.tag);
    for (size_t i = 1; i < std::size(sizes); ++i) {
      char buf[32];
      std::memset(buf, 0x5a, sizeof buf);
      size_t got = recv_b(p, buf, sizeof buf, 40 + i % 2);
      P_REQUIRE(p, got == sizes[i], "message %zu: %zu bytes, want %zu", i, got, sizes[i]);
      if (got == 0)
        P_REQUIRE(p, static_cast<unsigned char>(buf[0]) == 0x5a, "a zero-byte message wrote into the buffer");
      else
        P_REQUIRE(p, mismatch(buf, got, i) == SIZE_MAX, "message %zu corrupted", i);
    }
    lf_request_t b;
    P_OK(p, lf_irecv_buffer(p.ch, 42, &b));
    lf_buffer_t view = nullptr;
    lf_completion_t binfo = LF_COMPLETION_INIT;
    P_OK(p, lf_wait_buffer(b, &view, &binfo));
    P_REQUIRE(p, binfo.bytes == 0 && lf_buffer_size(view) == 0, "buffer receive: %zu bytes", binfo.bytes);
    P_OK(p, lf_free(view));
    if (!p.single()) ctl_send(p, 'd');
  } else {
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
  }
}

// A message larger than the receive: LF_ERR_TRUNCATED with exactly the first
// `capacity` bytes (nothing written beyond), the full size in the completion,
// and the channel goes on. Both with the receive posted first and with the
// message waiting first.
void truncation_keeps_the_prefix(Peer &p) {
  const size_t sizes[] = {30, 1000, 100000, (1u << 20) + 3};
  constexpr size_t kCap = 10;
  std::vector<char> big;
  std::vector<lf_request_t> sends;
  for (int round = 0; round < 2; ++round) {  // 0: receive posted first, 1: message first
    for (size_t n : sizes) {
      STEP("round %d (%s first), %zu-byte message", round, round ? "message" : "receive", n);
      lf_request_t req = nullptr;
      char small[kCap + 6];
      std::memset(small, 0x5a, sizeof small);
      if (p.receiver() && round == 0) {
        P_OK(p, lf_irecv(p.ch, small, kCap, 3, &req));
        if (!p.single()) ctl_send(p, 'g');
      }
      if (p.sender()) {
        if (!p.single() && round == 0) P_REQUIRE(p, ctl_recv(p) == 'g', "go");
        big.resize(n);
        fill(big.data(), n, n);
        // Non-blocking: under mpi a large send completes only once matched.
        lf_request_t sb, sa;
        P_OK(p, lf_isend(p.ch, big.data(), n, 3, &sb));
        P_OK(p, lf_isend(p.ch, "after", 5, 4, &sa));
        if (!p.single() && round == 1) ctl_send(p, 's');
        if (p.single()) {
          P_OK(p, wait_b(p, sb));  // to oneself: buffered, complete at once
          P_OK(p, wait_b(p, sa));
        } else {
          sends = {sb, sa};
        }
      }
      if (p.receiver()) {
        if (round == 1) {
          if (!p.single()) P_REQUIRE(p, ctl_recv(p) == 's', "sent");
          P_OK(p, lf_irecv(p.ch, small, kCap, 3, &req));
        }
        lf_completion_t info = LF_COMPLETION_INIT;
        P_ST(p, LF_ERR_TRUNCATED, wait_completion_b(p, req, info));
        P_REQUIRE(p, info.bytes == kCap && info.message_bytes == n && info.tag == 3, "%zu: bytes %zu of %zu", n,
                  info.bytes, info.message_bytes);
        std::vector<char> want(n);
        fill(want.data(), n, n);
        P_REQUIRE(p, std::memcmp(small, want.data(), kCap) == 0, "%zu: truncated prefix differs", n);
        P_REQUIRE(p, static_cast<unsigned char>(small[kCap]) == 0x5a, "%zu: wrote beyond the capacity", n);
        char after[8] = {};
        P_REQUIRE(p, recv_b(p, after, sizeof after, 4) == 5 && !std::strcmp(after, "after"), "follow-up: %s", after);
      } else {
        for (lf_request_t q : sends) P_OK(p, wait_b(p, q));
      }
    }
  }
  if (p.single()) return;
  if (p.receiver())
    ctl_send(p, 'd');
  else
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
}

// 64 MiB with a checksum, into a posted receive; then 32 MiB + 5, sent
// while that receive is being checked, into a receive posted afterwards.
void large_messages(Peer &p) {
  const size_t sizes[] = {size_t{64} << 20, (size_t{32} << 20) + 5};
  std::vector<char> buf(sizes[0]);
  lf_request_t first = nullptr;
  if (p.receiver()) {
    P_OK(p, lf_irecv(p.ch, buf.data(), buf.size(), 6, &first));
    if (!p.single()) ctl_send(p, 'g');
  }
  if (p.sender()) {
    if (!p.single()) P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    std::vector<char> out(sizes[0]);
    for (size_t n : sizes) {
      fill(out.data(), n, n);
      send_b(p, out.data(), n, 6);  // to oneself: buffered (copied at send time)
    }
  }
  if (p.receiver()) {
    size_t got = 0;
    P_OK(p, wait_b(p, first, &got));
    P_REQUIRE(p, got == sizes[0], "%zu bytes", got);
    size_t bad = mismatch(buf.data(), got, sizes[0]);
    P_REQUIRE(p, bad == SIZE_MAX, "64 MiB message differs at byte %zu", bad);
    got = recv_b(p, buf.data(), buf.size(), 6);
    P_REQUIRE(p, got == sizes[1], "%zu bytes", got);
    bad = mismatch(buf.data(), got, sizes[1]);
    P_REQUIRE(p, bad == SIZE_MAX, "32 MiB message differs at byte %zu", bad);
    if (!p.single()) ctl_send(p, 'd');
  } else {
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
  }
}

// Gather sends (lf_isend_gather): header + payload arrive as one message,
// for header/payload splits on each side of every protocol boundary (inline
// slot, eager fifo, pipelined stream, mpi's eager limit and its 8 MiB chunk,
// which the 3-byte header makes a chunk span both pieces), then a truncated
// one.
void gather_sends(Peer &p) {
  const std::pair<size_t, size_t> parts[] = {{0, 0},    {1, 0},        {0, 1},         {8, 32},
                                             {16, 40},  {64, 1000},    {7, 20000},     {4096, 1},
                                             {1, 4096}, {4096, 70000}, {13, 1u << 20}, {3, size_t{9} << 20}};
  const size_t big = (size_t{9} << 20) + 3;
  std::vector<char> buf(big);
  if (p.sender()) {
    if (!p.single()) P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    std::vector<char> msg(big);
    for (size_t i = 0; i < std::size(parts); ++i) {
      const auto [h, n] = parts[i];
      STEP("gather send %zu: %zu + %zu bytes", i, h, n);
      fill(msg.data(), h + n, i);
      lf_request_t req;
      P_OK(p, lf_isend_gather(p.ch, h ? msg.data() : nullptr, h, n ? msg.data() + h : nullptr, n, 50, &req));
      P_ST(p, LF_OK, wait_b(p, req));
      if (p.single()) {  // to oneself: buffered at send time, received here
        size_t got = recv_b(p, buf.data(), buf.size(), 50);
        P_REQUIRE(p, got == h + n && mismatch(buf.data(), got, i) == SIZE_MAX, "gather %zu: %zu bytes", i, got);
      }
    }
    fill(msg.data(), 110, 99);
    lf_request_t req;
    P_OK(p, lf_isend_gather(p.ch, msg.data(), 10, msg.data() + 10, 100, 51, &req));
    P_ST(p, LF_OK, wait_b(p, req));
  }
  if (p.receiver()) {
    if (!p.single()) {
      ctl_send(p, 'g');
      for (size_t i = 0; i < std::size(parts); ++i) {
        const auto [h, n] = parts[i];
        STEP("gather receive %zu: %zu + %zu bytes", i, h, n);
        size_t got = recv_b(p, buf.data(), buf.size(), 50);
        P_REQUIRE(p, got == h + n, "gather %zu: %zu bytes, want %zu + %zu", i, got, h, n);
        size_t bad = mismatch(buf.data(), got, i);
        P_REQUIRE(p, bad == SIZE_MAX, "gather %zu (%zu + %zu bytes) differs at byte %zu", i, h, n, bad);
      }
    }
    size_t got = recv_b(p, buf.data(), 50, 51, LF_ERR_TRUNCATED);
    P_REQUIRE(p, got == 50 && mismatch(buf.data(), 50, 99) == SIZE_MAX, "truncated gather: %zu bytes", got);
    if (!p.single()) ctl_send(p, 'd');
  } else {
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
  }
}

// Bound of the receiver's memory growth while messages it does not receive
// pile up: the transport's cap on copied-out unexpected messages (set to
// 8 MiB for shm and tcp by the test's environment; mpi keeps messages above
// its 1 KiB eager limit inside MPI's rendezvous) plus slack for the rings.
constexpr size_t kUnexpectedCap = size_t{8} << 20;
// Under a sanitizer every allocation also costs shadow memory (TSan: several
// times its size), so RSS says little: the growth is printed, not checked.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kRssMeaningful = false;
#else
constexpr bool kRssMeaningful = true;
#endif
constexpr size_t kRssSlack = size_t{16} << 20;

// 32 MiB of 64 KiB messages that nobody receives yet: the receiver drives
// progress for a while (with another receive posted, so transports cannot
// just leave them in place) and its memory stays within the cap; then every
// message is received, in order, intact.
void unexpected_messages_stay_bounded(Peer &p) {
  constexpr size_t kSize = 64 << 10, kCount = 512;
  if (p.sender()) {
    P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    std::vector<std::vector<char>> msgs(kCount);
    std::vector<lf_request_t> reqs(kCount);
    for (size_t i = 0; i < kCount; ++i) {
      make_msg(msgs[i], kSize, i);
      P_OK(p, lf_isend(p.ch, msgs[i].data(), kSize, 1, &reqs[i]));
    }
    for (size_t i = 0; i < kCount; ++i) P_OK(p, wait_b(p, reqs[i], nullptr, 60000));
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
    return;
  }
  std::vector<char> buf(kSize);
  fill(buf.data(), buf.size(), 1);  // touched before the baseline
  char unused;
  lf_request_t other;
  P_OK(p, lf_irecv(p.ch, &unused, 1, 77, &other));
  const size_t base = rss_bytes();
  size_t peak = base;
  ctl_send(p, 'g');
  // A measuring window, not synchronisation: a correct transport stays
  // within the bound however long the window is.
  const int64_t end = monotonic_ns() + 1500 * int64_t{1000000};
  while (monotonic_ns() < end) {
    P_OK(p, lf_channel_status(p.ch));
    int done = 0;
    P_OK(p, lf_test(other, &done));
    P_REQUIRE(p, !done, "a receive on an unused tag completed");
    peak = std::max(peak, rss_bytes());
    P_REQUIRE(p, !kRssMeaningful || peak - base <= kUnexpectedCap + kRssSlack,
              "RSS grew by %zu MiB with %zu MiB unreceived", (peak - base) >> 20, (kSize * kCount) >> 20);
  }
  P_OK(p, lf_cancel(other));
  P_ST(p, LF_ERR_CANCELLED, wait_b(p, other));
  for (size_t i = 0; i < kCount; ++i) {
    size_t got = recv_b(p, buf.data(), buf.size(), 1);
    P_REQUIRE(p, got == kSize, "message %zu: %zu bytes", i, got);
    uint64_t id = check_msg(p, buf.data(), got);
    P_REQUIRE(p, id == i, "message %" PRIu64 " arrived where %zu was due", id, i);
  }
  std::fprintf(stderr, "[%s] receiver RSS grew by %.1f MiB with %zu MiB sent before any receive\n", p.inst.name.c_str(),
               static_cast<double>(peak - base) / (1 << 20), (kSize * kCount) >> 20);
  ctl_send(p, 'd');
}

// A posted receive that has not matched is cancelled (LF_ERR_CANCELLED, one
// status, the handle then gone) and swallows nothing: the message sent after
// goes to the next receive. A cancelled send either completed (the message
// arrives) or did not (it never does).
void cancel_a_posted_receive(Peer &p) {
  if (p.receiver()) {
    char buf[16] = {};
    lf_request_t a, b;
    P_OK(p, lf_irecv(p.ch, buf, sizeof buf, 7, &a));
    P_OK(p, lf_irecv(p.ch, buf, sizeof buf, LF_ANY_TAG, &b));
    P_OK(p, lf_cancel(a));
    P_OK(p, lf_cancel(a));  // still live until waited: a second cancel is harmless
    P_OK(p, lf_cancel(b));
    P_ST(p, LF_ERR_CANCELLED, wait_b(p, a));
    P_ST(p, LF_ERR_CANCELLED, wait_b(p, b));
    P_ST(p, LF_ERR_CLOSED, lf_cancel(a));  // waited: the handle is gone
    P_ST(p, LF_ERR_CLOSED, lf_wait(a, nullptr));
    if (!p.single()) ctl_send(p, 'g');
  }
  if (p.sender()) {
    if (!p.single()) P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    send_b(p, "payload", 8, 7);
    lf_request_t s;
    static const char kMaybe[] = "maybe";
    P_OK(p, lf_isend(p.ch, kMaybe, sizeof kMaybe, 8, &s));
    P_OK(p, lf_cancel(s));
    lf_status_t st = wait_b(p, s);
    P_REQUIRE(p, st == LF_OK || st == LF_ERR_CANCELLED, "cancelled send ended with %s", lf_status_string(st));
    send_b(p, "sentinel", 9, 8);
    const char outcome = st == LF_OK ? 'o' : 'c';
    if (p.single()) {
      char buf[16] = {};
      P_REQUIRE(p, recv_b(p, buf, sizeof buf, 7) == 8 && !std::strcmp(buf, "payload"), "got %s", buf);
      recv_b(p, buf, sizeof buf, 8);
      P_REQUIRE(p, !std::strcmp(buf, outcome == 'o' ? "maybe" : "sentinel"), "after a %s send: %s",
                outcome == 'o' ? "completed" : "cancelled", buf);
      return;
    }
    ctl_send(p, outcome);
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
    return;
  }
  char buf[16] = {};
  P_REQUIRE(p, recv_b(p, buf, sizeof buf, 7) == 8 && !std::strcmp(buf, "payload"), "got %s", buf);
  const char outcome = ctl_recv(p);
  recv_b(p, buf, sizeof buf, 8);
  P_REQUIRE(p, !std::strcmp(buf, outcome == 'o' ? "maybe" : "sentinel"), "after a %s send: %s",
            outcome == 'o' ? "completed" : "cancelled", buf);
  if (outcome == 'o') {
    recv_b(p, buf, sizeof buf, 8);
    P_REQUIRE(p, !std::strcmp(buf, "sentinel"), "got %s", buf);
  }
  ctl_send(p, 'd');
}

// A cancel racing the arrival of the message the receive would match, 10,000
// times, in four ways (cancel at once; after a test; after a zero-deadline
// wait; from another thread while this one tests): every request ends with
// exactly one status (LF_OK with the next message in order, or
// LF_ERR_CANCELLED), no message is lost, none is delivered twice.
void cancel_racing_arrival(Peer &p) {
  constexpr uint64_t kRounds = 10000, kData = 11, kGo = 12, kEnd = UINT64_MAX - 1;
  if (p.sender() && !p.single()) {
    for (uint64_t i = 0; i < kRounds; ++i) {
      uint64_t go = 0;
      P_REQUIRE(p, recv_b(p, &go, sizeof go, kGo) == sizeof go && go == i, "go %" PRIu64 " for round %" PRIu64, go, i);
      send_b(p, &i, sizeof i, kData);
    }
    send_b(p, &kEnd, sizeof kEnd, kData);
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
    return;
  }
  // The canceller thread: cancels `target` when asked, then says so.
  std::atomic<lf_request_t> target{nullptr};
  std::atomic<bool> quit{false};
  std::atomic<int> cancel_status{LF_OK};
  std::thread canceller([&] {
    while (!quit.load()) {
      lf_request_t t = target.load();
      if (!t) {
        sched_yield();
        continue;
      }
      cancel_status = lf_cancel(t);
      target = nullptr;
    }
  });
  uint64_t next = 0, cancelled = 0, delivered = 0;
  for (uint64_t i = 0; i < kRounds; ++i) {
    uint64_t got = UINT64_MAX;
    lf_request_t req;
    P_OK(p, lf_irecv(p.ch, &got, sizeof got, kData, &req));
    // To oneself the message is buffered at once and matched by the next
    // progress: half the rounds send it only after the cancel.
    const bool send_after_cancel = p.single() && i % 8 < 4;
    if (!p.single())
      send_b(p, &i, sizeof i, kGo);
    else if (!send_after_cancel)
      send_b(p, &i, sizeof i, kData);
    lf_status_t st = LF_IN_PROGRESS;
    switch (i % 4) {
      case 0: P_OK(p, lf_cancel(req)); break;
      case 1: {
        // lf_test returns the request's own status once it is done with an error.
        int done = 0;
        lf_status_t ts = lf_test(req, &done);
        P_REQUIRE(p, ts == LF_OK || done, "lf_test: %s", lf_status_string(ts));
        P_OK(p, lf_cancel(req));
        break;
      }
      case 2:
        st = lf_wait_timeout(req, 0, nullptr);
        if (st == LF_ERR_TIMEOUT) {
          st = LF_IN_PROGRESS;
          P_OK(p, lf_cancel(req));
        }
        break;
      case 3: {
        target = req;
        while (target.load()) {
          int done = 0;
          lf_status_t ts = lf_test(req, &done);
          P_REQUIRE(p, ts == LF_OK || done, "lf_test: %s", lf_status_string(ts));
        }
        P_REQUIRE(p, cancel_status.load() == LF_OK, "lf_cancel from a thread: %s", lf_status_string(cancel_status));
        break;
      }
    }
    if (send_after_cancel) send_b(p, &i, sizeof i, kData);
    if (st == LF_IN_PROGRESS) st = wait_b(p, req);
    if (st == LF_ERR_CANCELLED) {
      ++cancelled;
      P_REQUIRE(p, got == UINT64_MAX, "round %" PRIu64 ": a cancelled receive wrote %" PRIu64, i, got);
      continue;
    }
    P_REQUIRE(p, st == LF_OK, "round %" PRIu64 ": %s (%s)", i, lf_status_string(st), lf_last_error());
    P_REQUIRE(p, got == next, "round %" PRIu64 ": message %" PRIu64 " where %" PRIu64 " was due", i, got, next);
    ++next;
    ++delivered;
  }
  quit = true;
  canceller.join();
  // Every message not taken by a raced receive goes to the next receives.
  while (next < kRounds) {
    uint64_t got = UINT64_MAX;
    recv_b(p, &got, sizeof got, kData);
    P_REQUIRE(p, got == next, "message %" PRIu64 " where %" PRIu64 " was due", got, next);
    ++next;
  }
  if (!p.single()) {
    uint64_t end = 0;
    recv_b(p, &end, sizeof end, kData);
    P_REQUIRE(p, end == kEnd, "message %" PRIu64 " after the last one: delivered twice?", end);
    ctl_send(p, 'd');
  } else {
    char any;
    lf_request_t extra;
    P_OK(p, lf_irecv(p.ch, &any, 1, LF_ANY_TAG, &extra));
    P_ST(p, LF_ERR_TIMEOUT, lf_wait_timeout(extra, 0, nullptr));
    P_OK(p, lf_cancel(extra));
    P_ST(p, LF_ERR_CANCELLED, wait_b(p, extra));
  }
  std::fprintf(stderr, "[%s] %" PRIu64 " raced receives: %" PRIu64 " completed, %" PRIu64 " cancelled\n",
               p.inst.name.c_str(), kRounds, delivered, cancelled);
}

// lf_wait_timeout: LF_ERR_TIMEOUT after the deadline (not before), the
// request still valid (tested, waited again, then completed with its data);
// a request that timed out can be cancelled.
void wait_timeout_leaves_the_request_valid(Peer &p) {
  if (p.sender() && !p.single()) {
    P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    send_b(p, "late", 5, 3);
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
    return;
  }
  char buf[8] = {};
  lf_request_t req;
  P_OK(p, lf_irecv(p.ch, buf, sizeof buf, 3, &req));
  P_ST(p, LF_ERR_TIMEOUT, lf_wait_timeout(req, 0, nullptr));
  const int64_t t0 = monotonic_ns();
  P_ST(p, LF_ERR_TIMEOUT, lf_wait_timeout(req, 40, nullptr));
  const int64_t ms = (monotonic_ns() - t0) / 1000000;
  P_REQUIRE(p, ms >= 40 && ms < 40 + 5000, "a 40 ms deadline returned after %" PRId64 " ms", ms);
  P_REQUIRE(p, std::strlen(lf_last_error()) > 0, "no error text");
  int done = 1;
  P_OK(p, lf_test(req, &done));
  P_REQUIRE(p, !done, "done without a message");
  if (p.single())
    send_b(p, "late", 5, 3);
  else
    ctl_send(p, 'g');
  size_t got = 0;
  P_OK(p, lf_wait_timeout(req, kWaitMs, &got));
  P_REQUIRE(p, got == 5 && !std::strcmp(buf, "late"), "got %zu bytes: %s", got, buf);
  P_ST(p, LF_ERR_CLOSED, lf_wait_timeout(req, 0, nullptr));  // completed: freed
  // Timed out, then cancelled.
  lf_request_t again;
  P_OK(p, lf_irecv(p.ch, buf, sizeof buf, 3, &again));
  P_ST(p, LF_ERR_TIMEOUT, lf_wait_timeout(again, 1, nullptr));
  P_OK(p, lf_cancel(again));
  P_ST(p, LF_ERR_CANCELLED, lf_wait_timeout(again, kWaitMs, nullptr));
  if (!p.single()) ctl_send(p, 'd');
}

// lf_waitany returns the one that completed (its index and status), frees
// only it, skips NULL entries, and refuses an array of NULLs.
void waitany_returns_the_completed_one(Peer &p) {
  if (p.sender() && !p.single()) {
    P_REQUIRE(p, ctl_recv(p) == '1', "go 1");
    send_b(p, "eleven", 7, 11);
    P_REQUIRE(p, ctl_recv(p) == '2', "go 2");
    send_b(p, "twelve", 7, 12);
    send_b(p, "ten-and-more", 13, 10);  // truncated by the receive of 4
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
    return;
  }
  char b10[4], b11[16], b12[16];
  lf_request_t reqs[5] = {};
  P_OK(p, lf_irecv(p.ch, b10, sizeof b10, 10, &reqs[0]));
  P_OK(p, lf_irecv(p.ch, b11, sizeof b11, 11, &reqs[2]));
  P_OK(p, lf_irecv(p.ch, b12, sizeof b12, 12, &reqs[3]));
  size_t index = 99, bytes = 0;
  if (p.single())
    send_b(p, "eleven", 7, 11);
  else
    ctl_send(p, '1');
  P_OK(p, lf_waitany(reqs, 5, &index, &bytes));
  P_REQUIRE(p, index == 2 && bytes == 7 && !std::strcmp(b11, "eleven"), "index %zu, %zu bytes", index, bytes);
  reqs[2] = nullptr;
  int done = 1;
  P_OK(p, lf_test(reqs[0], &done));  // the others are still valid
  P_OK(p, lf_test(reqs[3], &done));
  if (p.single()) {
    send_b(p, "twelve", 7, 12);
    send_b(p, "ten-and-more", 13, 10);
  } else {
    ctl_send(p, '2');
  }
  bool seen[5] = {};
  for (int k = 0; k < 2; ++k) {
    lf_status_t st = lf_waitany(reqs, 5, &index, &bytes);
    P_REQUIRE(p, index == 0 || index == 3, "index %zu", index);
    P_REQUIRE(p, !seen[index], "index %zu twice", index);
    seen[index] = true;
    if (index == 0)
      P_REQUIRE(p, st == LF_ERR_TRUNCATED && bytes == 4 && !std::memcmp(b10, "ten-", 4), "tag 10: %s, %zu bytes",
                lf_status_string(st), bytes);
    else
      P_REQUIRE(p, st == LF_OK && bytes == 7 && !std::strcmp(b12, "twelve"), "tag 12: %s", lf_status_string(st));
    reqs[index] = nullptr;
  }
  P_ST(p, LF_ERR_INVALID_ARG, lf_waitany(reqs, 5, &index, &bytes));
  if (!p.single()) ctl_send(p, 'd');
}

// lf_waitall waits for and frees every request (sends and receives), sets
// each entry to NULL, and returns the first failure's status.
void waitall_waits_for_every_request(Peer &p) {
  if (p.sender() && !p.single()) {
    P_REQUIRE(p, ctl_recv(p) == 'g', "go");
    char in[8];
    P_REQUIRE(p, recv_b(p, in, sizeof in, 30) == 3, "tag 30");
    P_REQUIRE(p, recv_b(p, in, sizeof in, 31) == 3, "tag 31");
    for (uint64_t t = 20; t < 24; ++t) send_b(p, "0123456789", 10, t);
    P_REQUIRE(p, ctl_recv(p) == 'd', "done");
    return;
  }
  char in[4][16];
  lf_request_t reqs[8] = {};
  for (int i = 0; i < 4; ++i)
    P_OK(p, lf_irecv(p.ch, in[i], i == 3 ? 2 : sizeof in[i], static_cast<uint64_t>(20 + i), &reqs[i]));
  const uint64_t out_tag0 = p.single() ? 20 : 30;  // to oneself: these are the messages
  if (p.single()) {
    for (uint64_t t = 20; t < 24; ++t) P_OK(p, lf_isend(p.ch, "0123456789", 10, t, &reqs[4 + t - 20]));
  } else {
    P_OK(p, lf_isend(p.ch, "abc", 3, out_tag0, &reqs[5]));
    P_OK(p, lf_isend(p.ch, "def", 3, out_tag0 + 1, &reqs[7]));
    ctl_send(p, 'g');
  }
  // Bounded: every message is under way once the go is out.
  P_ST(p, LF_ERR_TRUNCATED, lf_waitall(reqs, 8));
  for (int i = 0; i < 8; ++i) P_REQUIRE(p, reqs[i] == nullptr, "entry %d not cleared", i);
  for (int i = 0; i < 3; ++i) P_REQUIRE(p, !std::memcmp(in[i], "0123456789", 10), "receive %d", i);
  P_REQUIRE(p, !std::memcmp(in[3], "01", 2), "truncated receive");
  P_OK(p, lf_waitall(reqs, 8));  // all NULL now: nothing to do
  if (!p.single()) ctl_send(p, 'd');
}

// Latency allowed between a peer's death and the survivor's error. The
// transports promise 1 s; the slack is for a loaded CI machine (2 cores).
constexpr int64_t kGoneMs = 1000, kGoneSlackMs = 1000;

// The peer is SIGKILLed while the survivor is blocked in a receive: the
// receive fails with LF_ERR_PEER_GONE within 1 s, and so do
// lf_channel_status and new operations.
void peer_killed_fails_a_blocked_receive(Peer &p) {
  if (p.sender()) {
    P_REQUIRE(p, ctl_recv(p) == 'n', "never");  // killed while waiting here
    return;
  }
  char buf[8];
  lf_request_t req;
  P_OK(p, lf_irecv(p.ch, buf, sizeof buf, 9, &req));
  lf_status_t st = LF_OK;
  int64_t t_done = 0;
  const int64_t t_kill = kill_peer(p, [&] {
    st = lf_wait_timeout(req, 10000, nullptr);
    t_done = monotonic_ns();
  });
  P_REQUIRE(p, st == LF_ERR_PEER_GONE, "blocked receive ended with %s (%s)", lf_status_string(st), lf_last_error());
  const int64_t ms = (t_done - t_kill) / 1000000;
  std::fprintf(stderr, "[%s] blocked receive failed %" PRId64 " ms after the kill\n", p.inst.name.c_str(), ms);
  P_REQUIRE(p, ms <= kGoneMs + kGoneSlackMs, "PEER_GONE after %" PRId64 " ms", ms);
  P_ST(p, LF_ERR_PEER_GONE, lf_channel_status(p.ch));
  lf_request_t s;
  lf_status_t sst = lf_isend(p.ch, "x", 1, 1, &s);
  if (sst == LF_OK) sst = wait_b(p, s);
  P_REQUIRE(p, sst == LF_ERR_PEER_GONE, "send after the death: %s", lf_status_string(sst));
  recv_b(p, buf, sizeof buf, 9, LF_ERR_PEER_GONE);
}

// The peer is SIGKILLed while the survivor has nothing posted and only polls
// lf_channel_status: it reports LF_ERR_PEER_GONE within 1 s.
void peer_killed_shows_in_channel_status(Peer &p) {
  if (p.sender()) {
    P_REQUIRE(p, ctl_recv(p) == 'n', "never");
    return;
  }
  lf_status_t st = LF_OK;
  int64_t t_done = 0;
  const int64_t t_kill = kill_peer(p, [&] {
    const int64_t end = monotonic_ns() + 10000 * int64_t{1000000};
    while ((st = lf_channel_status(p.ch)) == LF_OK && monotonic_ns() < end) ::poll(nullptr, 0, 1);
    t_done = monotonic_ns();
  });
  P_REQUIRE(p, st == LF_ERR_PEER_GONE, "lf_channel_status: %s (%s)", lf_status_string(st), lf_last_error());
  const int64_t ms = (t_done - t_kill) / 1000000;
  std::fprintf(stderr, "[%s] lf_channel_status saw the death %" PRId64 " ms after the kill\n", p.inst.name.c_str(), ms);
  P_REQUIRE(p, ms <= kGoneMs + kGoneSlackMs, "PEER_GONE after %" PRId64 " ms", ms);
}

// The peer is stopped (SIGSTOP) for 3 s in the middle of two streams, one
// each way, then continued: no error on either side at any time, and every
// message arrives, in order, intact.
void peer_stopped_then_continued(Peer &p) {
  constexpr int kCount = 1500, kWindow = 16;
  auto size_of = [](int i) -> size_t { return 8 + static_cast<size_t>(mix(static_cast<uint64_t>(i)) % 65536); };
  std::vector<std::vector<char>> out(kWindow), in(kWindow, std::vector<char>(65544));
  std::vector<lf_request_t> sreq(kWindow, nullptr), rreq(kWindow, nullptr);
  int sent = 0, received = 0, posted = 0;
  bool stopped_once = p.r.rank == 1;  // only rank 0 asks for the fault
  // One step of both streams; returns whether anything is left.
  auto step = [&](bool block) {
    // Each side sends at most a window ahead of what it received, so both
    // streams are still running when the peer stops.
    while (sent < kCount && sent < received + kWindow && !sreq[sent % kWindow]) {
      make_msg(out[sent % kWindow], size_of(sent), static_cast<uint64_t>(sent));
      P_OK(p, lf_isend(p.ch, out[sent % kWindow].data(), size_of(sent), 5, &sreq[sent % kWindow]));
      ++sent;
    }
    while (posted < kCount && posted - received < kWindow) {
      P_OK(p, lf_irecv(p.ch, in[posted % kWindow].data(), in[posted % kWindow].size(), 5, &rreq[posted % kWindow]));
      ++posted;
    }
    for (int k = 0; k < kWindow; ++k) {
      if (!sreq[k]) continue;
      int done = 0;
      P_OK(p, lf_test(sreq[k], &done));
      if (done) {
        P_OK(p, lf_wait(sreq[k], nullptr));
        sreq[k] = nullptr;
      }
    }
    if (received < posted) {
      lf_request_t &r = rreq[received % kWindow];
      size_t got = 0;
      lf_status_t st = block ? wait_b(p, r, &got) : lf_wait_timeout(r, 1, &got);
      if (st != LF_ERR_TIMEOUT) {
        P_REQUIRE(p, st == LF_OK, "receive %d: %s (%s)", received, lf_status_string(st), lf_last_error());
        r = nullptr;
        P_REQUIRE(p, got == size_of(received), "message %d: %zu bytes", received, got);
        uint64_t id = check_msg(p, in[received % kWindow].data(), got);
        P_REQUIRE(p, id == static_cast<uint64_t>(received), "message %" PRIu64 " where %d was due", id, received);
        ++received;
      }
    }
    P_OK(p, lf_channel_status(p.ch));
    bool sends_left = false;
    for (lf_request_t r : sreq) sends_left |= r != nullptr;
    return received < kCount || sent < kCount || sends_left;
  };
  while (step(stopped_once)) {
    if (!stopped_once && received >= 100) {
      stopped_once = true;
      int64_t t0 = monotonic_ns();
      stop_peer_for_a_while(p, [&] { step(false); });
      std::fprintf(stderr, "[%s] peer stopped for %.1f s; %d received, %d sent\n", p.inst.name.c_str(),
                   static_cast<double>(monotonic_ns() - t0) / 1e9, received, sent);
    }
  }
  P_REQUIRE(p, stopped_once, "never stopped the peer");
  // Neither closes before both are done (a close is PEER_GONE for the other).
  ctl_send(p, 'd');
  P_REQUIRE(p, ctl_recv(p) == 'd', "done");
}

// lf_channel_close with receives posted and large sends in flight: every
// request still completes (receives LF_ERR_CLOSED, sends LF_OK or
// LF_ERR_CLOSED), promptly, and the peer's blocked receive ends with
// LF_ERR_PEER_GONE (an orderly close) rather than hanging.
void close_with_operations_in_flight(Peer &p) {
  constexpr int kRecvs = 6, kSends = 3;
  constexpr size_t kBig = size_t{8} << 20;
  if (p.sender() && !p.single()) {
    char buf[8];
    lf_request_t req;
    P_OK(p, lf_irecv(p.ch, buf, sizeof buf, 99, &req));
    ctl_send(p, 'r');
    lf_status_t st = wait_b(p, req);
    P_REQUIRE(p, st == LF_ERR_PEER_GONE, "receive after the peer closed: %s (%s)", lf_status_string(st),
              lf_last_error());
    P_ST(p, LF_ERR_PEER_GONE, lf_channel_status(p.ch));
    return;
  }
  if (!p.single()) P_REQUIRE(p, ctl_recv(p) == 'r', "ready");
  std::vector<char> big(kBig, 'b');
  char small[kRecvs][8];
  std::vector<lf_request_t> reqs;
  for (int i = 0; i < kRecvs; ++i) {
    lf_request_t r;
    P_OK(p, lf_irecv(p.ch, small[i], sizeof small[i], i % 2 ? 5 : LF_ANY_TAG, &r));
    reqs.push_back(r);
  }
  std::vector<bool> is_send(kRecvs, false);
  for (int i = 0; i < kSends && !p.single(); ++i) {
    lf_request_t r;
    P_OK(p, lf_isend(p.ch, big.data(), kBig, 6, &r));
    reqs.push_back(r);
    is_send.push_back(true);
  }
  P_OK(p, lf_channel_close(p.ch));
  const int64_t t0 = monotonic_ns();
  for (size_t i = 0; i < reqs.size(); ++i) {
    lf_status_t st = wait_b(p, reqs[i], nullptr, 5000);
    if (is_send[i])
      P_REQUIRE(p, st == LF_OK || st == LF_ERR_CLOSED, "send %zu after close: %s", i, lf_status_string(st));
    else
      P_REQUIRE(p, st == LF_ERR_CLOSED, "receive %zu after close: %s", i, lf_status_string(st));
  }
  const int64_t ms = (monotonic_ns() - t0) / 1000000;
  P_REQUIRE(p, ms < 5000, "requests took %" PRId64 " ms to end after the close", ms);
  P_ST(p, LF_ERR_CLOSED, lf_channel_status(p.ch));
  P_ST(p, LF_ERR_CLOSED, lf_channel_close(p.ch));
  lf_request_t r;
  P_ST(p, LF_ERR_CLOSED, lf_isend(p.ch, "x", 1, 1, &r));
  p.ch = nullptr;  // closed
}

// Malformed input at the C API on this transport's channel: NULL and
// foreign handles, NULL pointers with sizes, absurd sizes, LF_ANY_TAG on a
// send, bad parameter structs and ranks. Each is an error with a message,
// never a crash or a hang, and the channel still works afterwards.
void malformed_input_at_the_c_api(Peer &p) {
  char buf[16] = {};
  lf_request_t req = nullptr;
  // A handle that is not what it claims: an error (which one is not promised).
  auto bad = [&](lf_status_t st, const char *what) {
    P_REQUIRE(p, st < 0, "%s returned %s", what, lf_status_string(st));
    P_REQUIRE(p, std::strlen(lf_last_error()) > 0, "%s: no error text", what);
  };
  // NULL where a pointer is needed, absurd sizes: LF_ERR_INVALID_ARG.
  auto invalid = [&](lf_status_t st, const char *what) {
    P_REQUIRE(p, st == LF_ERR_INVALID_ARG, "%s returned %s, want LF_ERR_INVALID_ARG", what, lf_status_string(st));
    P_REQUIRE(p, std::strlen(lf_last_error()) > 0, "%s: no error text", what);
  };
  invalid(lf_isend(nullptr, buf, 1, 1, &req), "isend on NULL");
  invalid(lf_isend(p.ch, nullptr, 10, 1, &req), "isend of NULL data");
  invalid(lf_isend(p.ch, buf, SIZE_MAX, 1, &req), "isend of SIZE_MAX bytes");
  invalid(lf_isend(p.ch, buf, SIZE_MAX / 2, 1, &req), "isend of SIZE_MAX/2 bytes");
  invalid(lf_isend(p.ch, buf, 1, LF_ANY_TAG, &req), "isend with LF_ANY_TAG");
  invalid(lf_isend(p.ch, buf, 1, 1, nullptr), "isend without req");
  invalid(lf_isend_gather(nullptr, buf, 1, buf, 1, 1, &req), "gather send on NULL");
  invalid(lf_isend_gather(p.ch, nullptr, 4, buf, 1, 1, &req), "gather send of a NULL header");
  invalid(lf_isend_gather(p.ch, buf, 4, nullptr, 1, 1, &req), "gather send of a NULL payload");
  invalid(lf_isend_gather(p.ch, buf, SIZE_MAX / 2, buf, SIZE_MAX / 2, 1, &req), "gather send of SIZE_MAX bytes");
  invalid(lf_isend_gather(p.ch, buf, 1, buf, 1, LF_ANY_TAG, &req), "gather send with LF_ANY_TAG");
  invalid(lf_isend_gather(p.ch, buf, 1, buf, 1, 1, nullptr), "gather send without req");
  invalid(lf_irecv(p.ch, nullptr, 10, 1, &req), "irecv into NULL");
  invalid(lf_irecv(p.ch, buf, SIZE_MAX, 1, &req), "irecv of SIZE_MAX capacity");
  invalid(lf_irecv(p.ch, buf, 1, 1, nullptr), "irecv without req");
  invalid(lf_irecv_buffer(p.ch, 1, nullptr), "irecv_buffer without req");
  invalid(lf_send(p.ch, nullptr, 5, 1), "send of NULL data");
  invalid(lf_recv(nullptr, buf, 1, 1, nullptr), "recv on NULL");
  invalid(lf_isend_buffer(p.ch, nullptr, 1, &req), "isend_buffer of NULL");
  invalid(lf_channel_status(nullptr), "status of NULL");
  invalid(lf_wait(nullptr, nullptr), "wait on NULL");
  invalid(lf_wait_timeout(nullptr, 0, nullptr), "wait_timeout on NULL");
  invalid(lf_cancel(nullptr), "cancel of NULL");
  int done;
  invalid(lf_test(nullptr, &done), "test of NULL");
  size_t index;
  invalid(lf_waitany(nullptr, 3, &index, nullptr), "waitany of NULL array");
  invalid(lf_waitall(nullptr, 3), "waitall of NULL array");
  P_REQUIRE(p, lf_channel_peer(nullptr) == -1, "peer of NULL");
  // Handles of another type, and made-up ones.
  lf_request_t live;
  P_OK(p, lf_irecv(p.ch, buf, sizeof buf, 555, &live));
  invalid(lf_test(live, nullptr), "test without done");
  lf_buffer_t not_a_buffer = nullptr;
  invalid(lf_wait_buffer(live, &not_a_buffer, nullptr), "wait_buffer on a plain receive");
  bad(lf_isend(reinterpret_cast<lf_channel_t>(live), buf, 1, 1, &req), "isend on a request handle");
  bad(lf_channel_status(reinterpret_cast<lf_channel_t>(live)), "status of a request handle");
  bad(lf_channel_close(reinterpret_cast<lf_channel_t>(live)), "close of a request handle");
  bad(lf_wait(reinterpret_cast<lf_request_t>(p.ch), nullptr), "wait on a channel handle");
  bad(lf_cancel(reinterpret_cast<lf_request_t>(p.ch)), "cancel of a channel handle");
  bad(lf_wait_timeout(reinterpret_cast<lf_request_t>(p.ctx), 0, nullptr), "wait on a context handle");
  const auto made_up = static_cast<uintptr_t>(0x5eed0000deadbeefull);
  bad(lf_isend(reinterpret_cast<lf_channel_t>(made_up), buf, 1, 1, &req), "isend on a made-up handle");
  bad(lf_cancel(reinterpret_cast<lf_request_t>(made_up)), "cancel of a made-up handle");
  lf_completion_t wrong = LF_COMPLETION_INIT;
  wrong.size = 1;
  invalid(lf_wait_completion(live, &wrong), "wait_completion with a bad size");
  P_OK(p, lf_cancel(live));
  P_ST(p, LF_ERR_CANCELLED, wait_b(p, live));
  bad(lf_wait(live, nullptr), "second wait");
  bad(lf_test(live, &done), "test after the wait");
  bad(lf_cancel(live), "cancel after the wait");
  // Opening with bad parameters.
  lf_channel_t other = nullptr;
  invalid(lf_channel_open(p.ctx, p.inst.ranks, &other), "open to rank == size");
  invalid(lf_channel_open(p.ctx, -1, &other), "open to rank -1");
  invalid(lf_channel_open(p.ctx, p.other, nullptr), "open without out");
  lf_channel_params_t params = LF_CHANNEL_PARAMS_INIT;
  params.size = 3;
  invalid(lf_channel_open_ex(p.ctx, p.other, &params, &other), "open with params.size 3");
  params = LF_CHANNEL_PARAMS_INIT;
  params.memory_kind = static_cast<lf_memory_kind_t>(99);
  invalid(lf_channel_open_ex(p.ctx, p.other, &params, &other), "open with memory kind 99");
  P_REQUIRE(p, other == nullptr, "an out-parameter was written on failure");
  // The channel is unharmed.
  P_OK(p, lf_channel_status(p.ch));
  if (p.single()) {
    send_b(p, "still", 6, 2);
    P_REQUIRE(p, recv_b(p, buf, sizeof buf, 2) == 6 && !std::strcmp(buf, "still"), "got %s", buf);
    return;
  }
  lf_request_t s;
  P_OK(p, lf_isend(p.ch, "still", 6, 2, &s));
  P_REQUIRE(p, recv_b(p, buf, sizeof buf, 2) == 6 && !std::strcmp(buf, "still"), "got %s", buf);
  P_OK(p, wait_b(p, s));
}

// A message the peer received is reported sent (LF_OK), even when the peer
// closes its end right after receiving it: the close must not turn a
// delivered send into LF_ERR_PEER_GONE. 200 channels, each opened, used for
// one message and closed by the receiver at once.
void delivered_send_survives_the_peers_close(Peer &p) {
  constexpr uint64_t kRounds = 200;
  int late = 0;
  for (uint64_t i = 0; i < kRounds; ++i) {
    STEP("round %" PRIu64, i);
    lf_channel_params_t params = LF_CHANNEL_PARAMS_INIT;
    params.memory_kind = p.inst.kind;
    lf_channel_t ch;
    P_OK(p, lf_channel_open_ex(p.ctx, p.other, &params, &ch));
    if (p.r.rank == 0) {
      lf_request_t req;
      P_OK(p, lf_isend(ch, &i, sizeof i, 1, &req));
      lf_status_t st = wait_b(p, req);
      P_REQUIRE(p, st == LF_OK, "round %" PRIu64 ": a send the peer received ended with %s (%s)", i,
                lf_status_string(st), lf_last_error());
      late += lf_channel_status(ch) != LF_OK;
    } else {
      uint64_t got = UINT64_MAX;
      lf_request_t req;
      P_OK(p, lf_irecv(ch, &got, sizeof got, 1, &req));
      P_OK(p, wait_b(p, req));
      P_REQUIRE(p, got == i, "round %" PRIu64 ": got %" PRIu64, i, got);
    }
    P_OK(p, lf_channel_close(ch));
  }
  if (p.r.rank == 0)
    std::fprintf(stderr, "[%s] %d of %" PRIu64 " sends completed after the peer had closed\n", p.inst.name.c_str(),
                 late, kRounds);
}

// ---- the table --------------------------------------------------------------------------

struct Check {
  const char *name;
  void (*body)(Peer &);
  bool single_rank;  ///< also runs on self (one rank)
  /// Why it does not apply to an instance ("" when it does).
  std::string (*skip)(const Instance &);
  std::vector<std::pair<std::string, std::string>> env;
};

std::string applies(const Instance &) { return ""; }
std::string needs_a_killable_peer(const Instance &inst) {
  if (inst.mpi)
    return "under mpiexec a rank that dies ends the whole job (Open MPI's error manager kills the survivor), so "
           "there is no survivor to check";
  return "";
}

/// Checks that fail on an instance for a bug the owner of that transport
/// must fix: skipped with the reason unless LF_CONFORMANCE_KNOWN_BUGS=1.
std::string known_bug(const Instance &inst, const std::string &check) {
  if (const char *run = std::getenv("LF_CONFORMANCE_KNOWN_BUGS"); run && std::strcmp(run, "1") == 0) return "";
  (void)inst, (void)check;  // none known today
  return "";
}

const std::vector<Check> &checks() {
  static const std::vector<Check> table = {
      {"TransportIsTheForcedOne", transport_is_the_forced_one, true, applies, {}},
      {"PerTagOrderNoOvertaking", per_tag_order_no_overtaking, true, applies, {}},
      {"AnyTagTakesArrivalOrder", any_tag_takes_arrival_order, true, applies, {}},
      {"ZeroByteMessages", zero_byte_messages, true, applies, {}},
      {"TruncationKeepsThePrefix", truncation_keeps_the_prefix, true, applies, {}},
      {"LargeMessages64MiB", large_messages, true, applies, {}},
      {"GatherSendIsOneMessage", gather_sends, true, applies, {}},
      {"UnexpectedMessagesStayBounded",
       unexpected_messages_stay_bounded,
       false,
       applies,
       {{"LF_SHM_UNEXPECTED_MAX", "8M"}, {"LF_TCP_UNEXPECTED_BYTES", "8M"}}},
      {"CancelPostedReceive", cancel_a_posted_receive, true, applies, {}},
      {"CancelRacingArrival", cancel_racing_arrival, true, applies, {}},
      {"WaitTimeoutLeavesTheRequestValid", wait_timeout_leaves_the_request_valid, true, applies, {}},
      {"WaitAnyReturnsTheCompletedOne", waitany_returns_the_completed_one, true, applies, {}},
      {"WaitAllWaitsForEveryRequest", waitall_waits_for_every_request, true, applies, {}},
      {"PeerKilledFailsABlockedReceive", peer_killed_fails_a_blocked_receive, false, needs_a_killable_peer, {}},
      {"PeerKilledShowsInChannelStatus", peer_killed_shows_in_channel_status, false, needs_a_killable_peer, {}},
      {"PeerStoppedThenContinued", peer_stopped_then_continued, false, applies, {}},
      {"CloseWithOperationsInFlight", close_with_operations_in_flight, true, applies, {}},
      {"MalformedInputAtTheCApi", malformed_input_at_the_c_api, true, applies, {}},
      {"DeliveredSendSurvivesThePeersClose", delivered_send_survives_the_peers_close, false, applies, {}},
  };
  return table;
}

const Check *find_check(const std::string &name) {
  for (const Check &c : checks())
    if (name == c.name) return &c;
  return nullptr;
}

void run_body(Rank &r, const Instance &inst, const Check &check) {
  Peer p = open_peer(r, inst);
  check.body(p);
  close_peer(p);
}

// ---- the parent's side -------------------------------------------------------------------

class ConformanceTest : public MultiProcess {
 public:
  ConformanceTest(Instance inst, const Check *check) : inst_(std::move(inst)), check_(check) {}

  void TestBody() override {
    if (std::string why = check_->skip(inst_); !why.empty()) GTEST_SKIP() << why;
    if (std::string why = known_bug(inst_, check_->name); !why.empty()) GTEST_SKIP() << why;
    if (inst_.mpi) return run_under_mpiexec();
    env = {{"LF_TRANSPORTS", inst_.name}, {"LF_STRICT", "1"}, {"LF_LOG_LEVEL", "error"}};
    for (auto &kv : inst_.env) env.push_back(kv);
    for (auto &kv : check_->env) env.push_back(kv);
    const Instance inst = inst_;
    const Check *check = check_;
    spawn(inst_.ranks, [inst, check](Rank &r) { run_body(r, inst, *check); });
    if (HasFatalFailure()) return;
    bool killed = false;
    if (inst_.ranks == 2) serve_faults(killed);
    expect_all_ok(120, killed ? std::vector<int>{1} : std::vector<int>{});
  }

 private:
  /// Rank 0's requests for faults on rank 1, until rank 0 exits.
  void serve_faults(bool &killed) {
    for (;;) {
      const char c = await(0, 120000);
      if (c == 0) return;  // rank 0 exited (or hung: expect_all_ok says so)
      if (c == 'S') {
        ASSERT_EQ(kill(pid_of(1), SIGSTOP), 0);
        // The fault itself: 3 s stopped, on the parent's clock (rank 0 keeps
        // driving its channel meanwhile and waits for 'c', not for time).
        const int64_t end = monotonic_ns() + int64_t{kFaultStopMs} * 1000000;
        for (int64_t left; (left = end - monotonic_ns()) > 0;) ::poll(nullptr, 0, static_cast<int>(left / 1000000) + 1);
        ASSERT_EQ(kill(pid_of(1), SIGCONT), 0);
        signal(0, 'c');
      } else if (c == 'K') {
        ASSERT_EQ(kill(pid_of(1), SIGKILL), 0);
        const int64_t t = monotonic_ns();
        send_to(0, &t, sizeof t);
        reap(1);
        killed = true;
      } else {
        FAIL() << "rank 0 asked for '" << c << "'";
      }
    }
  }

  void run_under_mpiexec() {
#ifdef LF_MPIEXEC
    Env e = {{"LF_TRANSPORTS", "mpi"}, {"LF_STRICT", "1"}, { "LF_LOG_LEVEL", "error" }};
    for (auto &[k, v] : check_->env) e[k] = v;
    std::vector<std::string> argv = {LF_MPIEXEC,
                                     "--allow-run-as-root",
                                     "--oversubscribe",
                                     "-n",
                                     "2",
                                     LF_DECLARED_REMOTE,
                                     "1",
                                     self_exe(),
                                     std::string("--conformance-rank=") + check_->name};
    Procs procs;
    procs.spawn(argv, e);
    const bool finished = procs.wait_all(150);
    EXPECT_TRUE(finished) << "mpiexec did not finish within 150 s\n" << procs.dump();
    if (finished) {
      EXPECT_EQ(procs[0].exit_code(), 0) << procs.dump();
    }
    if (!HasFailure() && procs[0].output.find("[") != std::string::npos) std::fputs(procs[0].output.c_str(), stderr);
#else
    GTEST_SKIP() << "built without MPI";
#endif
  }

  static std::string self_exe() {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

  Instance inst_;
  const Check *check_;
};

class NotAvailable : public ::testing::Test {
 public:
  explicit NotAvailable(std::string why) : why_(std::move(why)) {}
  void TestBody() override { GTEST_SKIP() << why_; }

 private:
  std::string why_;
};

// ---- instances found at run time -------------------------------------------------------

[[maybe_unused]] std::string probe_kind(lf_memory_kind_t kind) {
  return probe_in_child([kind] {
    lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
    ap.strict = 1;
    lf_buffer_t b = nullptr;
    if (lf_alloc_ex(nullptr, 4096, kind, &ap, &b) != LF_OK)
      return std::string("no ") + lf_memory_kind_string(kind) + " memory here: " + lf_last_error();
    lf_free(b);
    return std::string();
  });
}

/// Instances named by a --gtest_filter (all when there is none, or it has
/// wildcards): ctest runs one test per process, and probing a GPU there for
/// a shm test would only cost time.
bool wanted(const std::string &filter, const Instance &inst) {
  if (filter.empty() || filter.find_first_of("*?") != std::string::npos) return true;
  return filter.find("/" + inst.test_name() + ".") != std::string::npos;
}

std::vector<Instance> instances(const std::string &filter) {
  std::vector<Instance> all;
  all.push_back({"self", 1, false, LF_MEM_HOST, ""});
  all.push_back({"shm", 2, false, LF_MEM_HOST, ""});
  all.push_back({"tcp", 2, false, LF_MEM_HOST, ""});
#ifdef LF_MPIEXEC
  all.push_back({"mpi", 2, true, LF_MEM_HOST, ""});
#else
  all.push_back({"mpi", 2, true, LF_MEM_HOST, "built without MPI or no mpiexec found at configure time"});
#endif
  Instance vk{"vulkan-ipc", 2, false, LF_MEM_VULKAN_DEVICE, ""};
  Instance cu{"cuda-ipc", 2, false, LF_MEM_CUDA_DEVICE, ""};
#if LAVAFLOW_HAVE_VULKAN
  if (wanted(filter, vk)) vk.unavailable = probe_kind(vk.kind);
#else
  vk.unavailable = "built without Vulkan";
#endif
#if LAVAFLOW_HAVE_CUDA
  if (wanted(filter, cu)) cu.unavailable = probe_kind(cu.kind);
#else
  cu.unavailable = "built without CUDA";
#endif
  all.push_back(vk);
  all.push_back(cu);
  // ucx: the same checks on each family of UCX lanes found here.
  for (const char *tls : {"tcp", "sm,self", "posix,cma,self"}) {
    Instance u{"ucx", 2, false, LF_MEM_HOST, LAVAFLOW_HAVE_UCX ? "" : "built without UCX", tls, {{"UCX_TLS", tls}}};
    std::replace(u.variant.begin(), u.variant.end(), ',', '_');
    all.push_back(u);
  }
  // dpdk: two processes over net_memif (LF_TRANSPORTS=dpdk starts it).
  all.push_back({"dpdk", 2, false, LF_MEM_HOST, LAVAFLOW_HAVE_DPDK ? "" : "built without DPDK"});
  std::erase_if(all, [&](const Instance &i) { return !wanted(filter, i); });
  return all;
}

// ---- a rank under mpiexec -------------------------------------------------------------

int run_mpi_rank(const std::string &check_name) {
  const Check *check = find_check(check_name);
  if (!check) {
    std::fprintf(stderr, "no check %s\n", check_name.c_str());
    return 2;
  }
  const char *rank = std::getenv("OMPI_COMM_WORLD_RANK");
  Rank r{rank ? std::atoi(rank) : 0, 2, 2, -1, -1};  // failures go to stderr, mpiexec shows them
  Instance inst{"mpi", 2, true, LF_MEM_HOST, ""};
  run_body(r, inst, *check);
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--conformance-rank=", 19) == 0) return run_mpi_rank(argv[i] + 19);
  ::testing::InitGoogleTest(&argc, argv);
  const std::string filter = ::testing::GTEST_FLAG(filter) == "*" ? "" : ::testing::GTEST_FLAG(filter);
  for (const Instance &inst : instances(filter)) {
    const std::string suite = "Conformance/" + inst.test_name();
    if (!inst.unavailable.empty()) {
      const std::string why = inst.name + " does not start here: " + inst.unavailable;
      ::testing::RegisterTest(suite.c_str(), "NotAvailableHere", nullptr, nullptr, __FILE__, __LINE__,
                              [why]() -> ::testing::Test * { return new NotAvailable(why); });
      continue;
    }
    for (const Check &c : checks()) {
      if (inst.ranks == 1 && !c.single_rank) continue;
      const Check *cp = &c;
      ::testing::RegisterTest(suite.c_str(), c.name, nullptr, nullptr, __FILE__, __LINE__,
                              [inst, cp]() -> ::testing::Test * { return new ConformanceTest(inst, cp); });
    }
  }
  return RUN_ALL_TESTS();
}
