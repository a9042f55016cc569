// The dpdk transport when a peer dies and comes back (issue 14): one
// surviving process and, cycle after cycle, a new peer process that is
// SIGKILLed at a random point while the two stream to each other.
//
// Every cycle the survivor brings up a new context (new epoch, new memif
// socket) against the new peer, so each cycle after the first is a restart:
//  - the two first exchange messages whose contents name the cycle, so a
//    frame of an earlier cycle's flow taken as this one's shows;
//  - after the kill, the survivor's waits end with LF_ERR_PEER_GONE within
//    their bound (never a hang, a crash, or another status);
//  - after it closed its channel, no mbuf of its pool is in use; after
//    lf_finalize no ethdev port and no lavaflow mempool is left, and DPDK's
//    heap grows by no more than memif's own leak (see survive()); ports
//    and pools that leaked would also run out: DPDK has 32 ports per
//    process.
// The killed rank alternates, so both memif roles (server: the lower rank,
// client: the higher) see their peer die. The parent never starts DPDK: it
// only forks, kills and reads the survivor's reports.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <poll.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mempool.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "payload.hpp"

using namespace lftest;

namespace {

#ifdef LF_DPDK_STRESS
constexpr int kCycles = 1000;
#else
constexpr int kCycles = 30;
#endif
constexpr int kWindow = 8;
constexpr size_t kSize = 3000;  // three frames at memif's MTU
constexpr int64_t kBoundMs = 20000;
constexpr size_t kMemifLeakBound = 64 * 1024;  // per cycle; see survive()

struct Report {
  int32_t ok = 0;
  int64_t gone_ns = 0;  ///< CLOCK_MONOTONIC when the survivor saw the peer gone
  char text[400] = {};
};

int64_t mono_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec;
}

std::string bootstrap_for(pid_t parent, int cycle) {
  return "unix:/tmp/lf-dpdk-restart-" + std::to_string(parent) + "-" + std::to_string(cycle);
}

void rank_env(int rank, const std::string &boot) {
  setenv("LF_RANK", std::to_string(rank).c_str(), 1);
  setenv("LF_SIZE", "2", 1);
  setenv("LF_BOOTSTRAP", boot.c_str(), 1);
  setenv("LF_BOOTSTRAP_MODE", "env", 1);
  setenv("LF_BOOTSTRAP_TIMEOUT", "30", 1);
  setenv("LF_TRANSPORTS", "dpdk", 1);
  setenv("LF_STRICT", "1", 1);
  setenv("LF_LOG_LEVEL", "error", 1);
  // The memif link going down tells of a death within milliseconds; the
  // ack timeout is the fallback, well inside the test's bound.
  setenv("LF_DPDK_PEER_TIMEOUT", "5", 1);
}

uint64_t seed(int cycle, int from, int i) {
  return uint64_t(static_cast<uint32_t>(cycle)) << 32 | uint64_t(static_cast<uint32_t>(from)) << 24 |
         static_cast<uint32_t>(i);
}

/// Both sides: send kWindow messages naming the cycle, receive the peer's
/// and check them. Returns "" or what was wrong. The survivor's sends may
/// end with LF_ERR_PEER_GONE: the victim may die before its last ack left.
std::string greet(lf_channel_t ch, int cycle, int rank, bool survivor) {
  std::vector<std::vector<char>> out(kWindow, std::vector<char>(kSize)), in(kWindow, std::vector<char>(kSize));
  std::vector<lf_request_t> s(kWindow), r(kWindow);
  for (int i = 0; i < kWindow; ++i) {
    fill(out[i].data(), kSize, seed(cycle, rank, i));
    if (lf_irecv(ch, in[i].data(), kSize, 1, &r[i]) != LF_OK || lf_isend(ch, out[i].data(), kSize, 1, &s[i]) != LF_OK)
      return std::string("post: ") + lf_last_error();
  }
  for (int i = 0; i < kWindow; ++i) {
    size_t got = 0;
    if (lf_status_t st = lf_wait_timeout(r[i], kBoundMs, &got); st != LF_OK)
      return std::string("greeting receive: ") + lf_status_string(st) + " " + lf_last_error();
    if (got != kSize || mismatch(in[i].data(), kSize, seed(cycle, 1 - rank, i)) != SIZE_MAX)
      return "greeting " + std::to_string(i) + " is not this cycle's (" + std::to_string(got) + " bytes)";
    if (lf_status_t st = lf_wait_timeout(s[i], kBoundMs, nullptr); st != LF_OK && !(survivor && st == LF_ERR_PEER_GONE))
      return std::string("greeting send: ") + lf_status_string(st) + " " + lf_last_error();
  }
  return "";
}

/// The killed rank: greet, tell the parent, then stream until killed.
[[noreturn]] void victim(int cycle, int rank, const std::string &boot, int to_parent) {
  rank_env(rank, boot);
  lf_context_t ctx;
  lf_channel_t ch;
  if (lf_init(&ctx) != LF_OK || lf_channel_open(ctx, 1 - rank, &ch) != LF_OK) _exit(2);
  if (!greet(ch, cycle, rank, false).empty()) _exit(3);
  char c = 'V';
  if (::write(to_parent, &c, 1) != 1) _exit(4);
  std::vector<char> out(kSize), in(kSize);
  fill(out.data(), kSize, seed(cycle, rank, 99));
  for (;;) {
    lf_request_t s, r;
    if (lf_irecv(ch, in.data(), kSize, 2, &r) != LF_OK || lf_isend(ch, out.data(), kSize, 2, &s) != LF_OK) pause();
    if (lf_wait(s, nullptr) != LF_OK || lf_wait(r, nullptr) != LF_OK) pause();
  }
}

/// Sum of the mbufs in use in lavaflow's pools.
unsigned mbufs_in_use() {
  unsigned n = 0;
  rte_mempool_walk(
      [](rte_mempool *mp, void *arg) {
        if (std::strncmp(mp->name, "lf_pool_", 8) == 0) *static_cast<unsigned *>(arg) += rte_mempool_in_use_count(mp);
      },
      &n);
  return n;
}

unsigned lavaflow_pools() {
  unsigned n = 0;
  rte_mempool_walk(
      [](rte_mempool *mp, void *arg) {
        if (std::strncmp(mp->name, "lf_pool_", 8) == 0) ++*static_cast<unsigned *>(arg);
      },
      &n);
  return n;
}

size_t heap_bytes() {
  size_t n = 0;
  for (unsigned i = 0; i < rte_socket_count(); ++i) {
    rte_malloc_socket_stats st{};
    if (rte_malloc_get_socket_stats(rte_socket_id_by_idx(i), &st) == 0) n += st.heap_allocsz_bytes;
  }
  return n;
}

/// One cycle on the surviving side. `heap` holds the first cycle's heap
/// figure (0 before it).
Report survive(int cycle, int rank, const std::string &boot, size_t *heap) {
  Report rep;
  auto failed = [&](const std::string &what) {
    std::snprintf(rep.text, sizeof rep.text, "cycle %d (survivor rank %d): %s", cycle, rank, what.c_str());
    return rep;
  };
  rank_env(rank, boot);
  lf_context_t ctx;
  if (lf_init(&ctx) != LF_OK) return failed(std::string("lf_init: ") + lf_last_error());
  lf_channel_t ch;
  if (lf_channel_open(ctx, 1 - rank, &ch) != LF_OK) return failed(std::string("open: ") + lf_last_error());
  if (std::string why = greet(ch, cycle, rank, true); !why.empty()) return failed(why);
  // Stream until the peer's death fails a request.
  std::vector<std::vector<char>> out(kWindow, std::vector<char>(kSize)), in(kWindow, std::vector<char>(kSize));
  std::vector<lf_request_t> s(kWindow, nullptr), r(kWindow, nullptr);
  lf_status_t gone = LF_OK;
  std::string gone_why;
  for (int i = 0; gone == LF_OK; i = (i + 1) % kWindow) {
    for (lf_request_t *q : {&s[i], &r[i]}) {
      if (!*q || gone != LF_OK) continue;
      const lf_status_t st = lf_wait_timeout(*q, kBoundMs, nullptr);
      if (st == LF_ERR_TIMEOUT) return failed("the peer was killed and no wait ended within 20 s");
      *q = nullptr;
      if (st != LF_OK) {
        gone = st;
        gone_why = lf_last_error();
        rep.gone_ns = mono_ns();
      }
    }
    if (gone != LF_OK) break;
    fill(out[i].data(), kSize, seed(cycle, rank, i));
    if (lf_irecv(ch, in[i].data(), kSize, 2, &r[i]) != LF_OK || lf_isend(ch, out[i].data(), kSize, 2, &s[i]) != LF_OK) {
      gone = LF_ERR_PEER_GONE;  // a channel already failed refuses new requests
      gone_why = lf_last_error();
      rep.gone_ns = mono_ns();
      r[i] = s[i] = nullptr;
    }
  }
  if (gone != LF_ERR_PEER_GONE) return failed(std::string("ended with ") + lf_status_string(gone) + ": " + gone_why);
  for (int i = 0; i < kWindow; ++i)
    for (lf_request_t q : {s[i], r[i]}) {
      if (!q) continue;
      const lf_status_t st = lf_wait_timeout(q, kBoundMs, nullptr);
      if (st != LF_OK && st != LF_ERR_PEER_GONE)
        return failed(std::string("a later request ended with ") + lf_status_string(st) + ": " + lf_last_error());
    }
  if (lf_channel_close(ch) != LF_OK) return failed(std::string("close: ") + lf_last_error());
  if (unsigned n = mbufs_in_use(); n != 0)
    return failed(std::to_string(n) + " mbufs still in use after the channel closed");
  if (lf_finalize(ctx) != LF_OK) return failed(std::string("finalize: ") + lf_last_error());
  if (unsigned n = rte_eth_dev_count_total(); n != 0)
    return failed(std::to_string(n) + " ethdev ports left after lf_finalize");
  if (unsigned n = lavaflow_pools(); n != 0) return failed(std::to_string(n) + " mempools left after lf_finalize");
  // DPDK 22.11's memif leaks, per port, the interrupt handle of its
  // transmit queue (memif_tx_queue_release), and per server port its
  // listening socket and EAL's copy of that socket's interrupt handle
  // (memif_socket_remove_device): about 27 KB of DPDK heap each. Growth
  // beyond that is lavaflow's.
  const size_t now = heap_bytes();
  if (*heap == 0) *heap = now;
  if (now > *heap + static_cast<size_t>(cycle) * kMemifLeakBound)
    return failed("DPDK's heap grew by " + std::to_string(now - *heap) + " bytes in " + std::to_string(cycle) +
                  " cycles, more than memif's own leak");
  rep.ok = 1;
  return rep;
}

bool read_all(int fd, void *p, size_t n, int timeout_ms) {
  auto *c = static_cast<char *>(p);
  while (n) {
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, timeout_ms) != 1) return false;
    const ssize_t got = ::read(fd, c, n);
    if (got <= 0) return false;
    c += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

void reap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
}

#ifdef LF_DPDK_STRESS
TEST(DpdkRestartStress, AThousandConnectKillCycles) {
#else
TEST(DpdkRestart, KilledPeerIsGoneAndANewOneConnects) {
#endif
  const pid_t parent = getpid();
  // The survivor plays rank 0 in even cycles and rank 1 in odd ones; it is
  // told each cycle's number on `ctl` and answers with a Report on `res`.
  int ctl[2], res[2];
  ASSERT_EQ(pipe(ctl), 0);
  ASSERT_EQ(pipe(res), 0);
  std::fflush(nullptr);
  const pid_t survivor = fork();
  ASSERT_GE(survivor, 0);
  if (survivor == 0) {
    ::close(ctl[1]);
    ::close(res[0]);
    size_t heap = 0;
    int32_t cycle = 0;
    while (::read(ctl[0], &cycle, sizeof cycle) == sizeof cycle) {
      const Report rep = survive(cycle, cycle % 2, bootstrap_for(parent, cycle), &heap);
      if (::write(res[1], &rep, sizeof rep) != sizeof rep || !rep.ok) _exit(1);
    }
    _exit(0);
  }
  ::close(ctl[0]);
  ::close(res[1]);
  std::mt19937 rng(static_cast<uint32_t>(parent));
  int64_t worst_ns = 0;
  for (int32_t cycle = 0; cycle < kCycles; ++cycle) {
    int up[2];
    ASSERT_EQ(pipe(up), 0);
    std::fflush(nullptr);
    const pid_t v = fork();
    ASSERT_GE(v, 0);
    if (v == 0) {
      ::close(up[0]);
      ::close(ctl[1]);
      ::close(res[0]);
      victim(cycle, 1 - cycle % 2, bootstrap_for(parent, cycle), up[1]);
    }
    ::close(up[1]);
    ASSERT_EQ(::write(ctl[1], &cycle, sizeof cycle), static_cast<ssize_t>(sizeof cycle));
    char c = 0;
    const bool greeted = read_all(up[0], &c, 1, 60000);
    ::close(up[0]);
    if (!greeted) {
      reap(v);
      Report rep;
      read_all(res[0], &rep, sizeof rep, 1000);
      reap(survivor);
      FAIL() << "cycle " << cycle << ": the new peer never finished its greeting; survivor: " << rep.text;
    }
    // Kill at a random point of the stream: at once, or up to 3 ms into it.
    // The delay only picks the point; nothing waits on it.
    if (const long us = static_cast<long>(rng() % 3000); us > 100) {
      timespec t{0, us * 1000};
      nanosleep(&t, nullptr);
    }
    const int64_t killed_ns = mono_ns();
    reap(v);
    Report rep;
    if (!read_all(res[0], &rep, sizeof rep, static_cast<int>(2 * kBoundMs + 30000))) {
      reap(survivor);
      FAIL() << "cycle " << cycle << ": the survivor hung or died (no report)";
    }
    if (!rep.ok) {
      reap(survivor);
      FAIL() << rep.text;
    }
    worst_ns = std::max(worst_ns, rep.gone_ns - killed_ns);
  }
  ::close(ctl[1]);
  int st = 0;
  ASSERT_EQ(waitpid(survivor, &st, 0), survivor);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "survivor status " << st;
  ::close(res[0]);
  std::printf("%d cycles; the survivor saw LF_ERR_PEER_GONE at most %.1f ms after the kill\n", kCycles,
              static_cast<double>(worst_ns) / 1e6);
}

}  // namespace
