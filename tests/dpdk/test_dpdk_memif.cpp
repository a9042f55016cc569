// The dpdk transport between forked ranks over net_memif, through the C API:
// what the conformance suite's dpdk instance does not check.
//  - 9000-byte messages (seven frames each at memif's 1500-byte MTU) both
//    ways at once, into plain and buffer receives;
//  - a checksummed stream of mixed sizes, also with a credit of 8 frames and
//    a pool of 1023 mbufs, where flow control, not the wire, sets the pace,
//    and through 1% loss, 1% duplication and 2% reordering (LF_DPDK_FAULTS);
//  - a rank in lf_barrier still acknowledges what its peer sends;
//  - a receiver learns of a close whose FIN was lost;
//  - three ranks, every pair over its own memif port;
//  - selection: dpdk only when asked for, never silently.
#include <lavaflow/lavaflow.h>

#include <cinttypes>
#include <cstring>
#include <string>
#include <vector>

#include "multiprocess.hpp"
#include "payload.hpp"

using namespace lftest;

namespace {

constexpr int64_t kWaitMs = 30000;

class DpdkMemif : public MultiProcess {
 protected:
  void SetUp() override { env = {{"LF_LOG_LEVEL", "error"}, {"LF_TRANSPORTS", "dpdk"}, {"LF_STRICT", "1"}}; }
};

lf_channel_t open_dpdk(Rank &r, lf_context_t ctx, int peer) {
  lf_channel_t ch = nullptr;
  REQUIRE_OK(r, lf_channel_open(ctx, peer, &ch));
  const char *t = lf_channel_transport(ch);
  REQUIRE(r, t && std::strcmp(t, "dpdk") == 0, "transport %s (%s)", t ? t : "null", lf_channel_reason(ch));
  REQUIRE(r, std::strstr(lf_channel_reason(ch), "memif"), "reason: %s", lf_channel_reason(ch));
  return ch;
}

void wait_ok(Rank &r, lf_request_t q, size_t *bytes = nullptr) {
  lf_status_t st = lf_wait_timeout(q, kWaitMs, bytes);
  REQUIRE(r, st == LF_OK, "wait: %s (%s)", lf_status_string(st), lf_last_error());
}

TEST_F(DpdkMemif, NineKilobyteMessagesBothWays) {
  run(2, [](Rank &r) {
    constexpr int kCount = 300;
    constexpr size_t kSize = 9000;
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_dpdk(r, ctx, 1 - r.rank);
    std::vector<std::vector<char>> out(kCount, std::vector<char>(kSize)), in(kCount, std::vector<char>(kSize));
    std::vector<lf_request_t> sends(kCount), recvs(kCount);
    for (int i = 0; i < kCount; ++i) {
      REQUIRE_OK(r, lf_irecv(ch, in[i].data(), kSize, 5, &recvs[i]));
      fill(out[i].data(), kSize, static_cast<uint64_t>(r.rank * 100000 + i));
      REQUIRE_OK(r, lf_isend(ch, out[i].data(), kSize, 5, &sends[i]));
    }
    for (int i = 0; i < kCount; ++i) {
      size_t got = 0;
      wait_ok(r, recvs[i], &got);
      REQUIRE(r, got == kSize, "message %d: %zu bytes", i, got);
      const size_t bad = mismatch(in[i].data(), kSize, static_cast<uint64_t>((1 - r.rank) * 100000 + i));
      REQUIRE(r, bad == SIZE_MAX, "message %d differs at byte %zu", i, bad);
    }
    for (lf_request_t q : sends) wait_ok(r, q);
    // One more each way into a buffer receive.
    lf_request_t b, s;
    REQUIRE_OK(r, lf_irecv_buffer(ch, 6, &b));
    REQUIRE_OK(r, lf_isend(ch, out[0].data(), kSize, 6, &s));
    lf_buffer_t view = nullptr;
    lf_completion_t info = LF_COMPLETION_INIT;
    REQUIRE_OK(r, lf_wait_buffer(b, &view, &info));
    REQUIRE(r, info.bytes == kSize && lf_buffer_size(view) == kSize, "buffer receive: %zu bytes", info.bytes);
    REQUIRE(r, mismatch(lf_buffer_data(view), kSize, static_cast<uint64_t>((1 - r.rank) * 100000)) == SIZE_MAX,
            "buffer receive differs");
    REQUIRE_OK(r, lf_free(view));
    wait_ok(r, s);
    REQUIRE_OK(r, lf_barrier(ctx));
    REQUIRE_OK(r, lf_channel_close(ch));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

/// FNV-1a over the stream's bytes.
uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const auto *b = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

/// Rank 1 streams messages of mixed sizes (a window of them outstanding);
/// rank 0 checksums what it gets, in order; the sender's own checksum
/// arrives last, on another tag, and must match.
void checksummed_stream(Rank &r, int count) {
  constexpr int kWindow = 32;
  constexpr size_t kMax = 20000;
  auto size_of = [](int i) -> size_t {
    const uint64_t h = mix(static_cast<uint64_t>(i));
    return h % 4 == 0 ? h % kMax : h % 200;
  };
  lf_context_t ctx;
  REQUIRE_OK(r, lf_init(&ctx));
  lf_channel_t ch = open_dpdk(r, ctx, 1 - r.rank);
  uint64_t sum = 0xcbf29ce484222325ull;
  std::vector<std::vector<char>> bufs(kWindow, std::vector<char>(kMax));
  std::vector<lf_request_t> reqs(kWindow, nullptr);
  auto finish = [&](int i) {
    size_t got = 0;
    wait_ok(r, reqs[i % kWindow], &got);
    reqs[i % kWindow] = nullptr;
    if (r.rank == 0) {
      REQUIRE(r, got == size_of(i), "message %d: %zu bytes, want %zu", i, got, size_of(i));
      sum = fnv(sum, bufs[i % kWindow].data(), got);
    }
  };
  for (int i = 0; i < count; ++i) {
    if (i >= kWindow) finish(i - kWindow);
    char *b = bufs[i % kWindow].data();
    if (r.rank == 1) {
      fill(b, size_of(i), static_cast<uint64_t>(i));
      sum = fnv(sum, b, size_of(i));
      REQUIRE_OK(r, lf_isend(ch, b, size_of(i), 9, &reqs[i % kWindow]));
    } else {
      REQUIRE_OK(r, lf_irecv(ch, b, kMax, 9, &reqs[i % kWindow]));
    }
  }
  for (int i = std::max(0, count - kWindow); i < count; ++i) finish(i);
  if (r.rank == 1) {
    REQUIRE_OK(r, lf_send(ch, &sum, sizeof sum, 10));
  } else {
    uint64_t theirs = 0;
    REQUIRE_OK(r, lf_recv(ch, &theirs, sizeof theirs, 10, nullptr));
    REQUIRE(r, theirs == sum, "stream checksum %016" PRIx64 ", sender's %016" PRIx64, sum, theirs);
  }
  REQUIRE_OK(r, lf_barrier(ctx));
  REQUIRE_OK(r, lf_channel_close(ch));
  REQUIRE_OK(r, lf_finalize(ctx));
}

TEST_F(DpdkMemif, ChecksummedStream) {
  run(2, [](Rank &r) { checksummed_stream(r, 20000); });
}

TEST_F(DpdkMemif, ChecksummedStreamUnderTightCredit) {
  env.push_back({"LF_DPDK_WINDOW", "8"});
  env.push_back({"LF_DPDK_MBUFS", "1023"});
  env.push_back({"LF_DPDK_UNEXPECTED_BYTES", "64K"});
  run(2, [](Rank &r) { checksummed_stream(r, 5000); });
}

TEST_F(DpdkMemif, ChecksummedStreamThroughLossDuplicationAndReordering) {
  // memif loses nothing by itself: the transport's fault injection drops,
  // duplicates and holds back frames (acks included) on both sides.
  env.push_back({"LF_DPDK_FAULTS", "loss=1,dup=1,reorder=2"});
  run(2, [](Rank &r) { checksummed_stream(r, 5000); });
}

TEST_F(DpdkMemif, MalformedFaultSettingIsAClearError) {
  env.push_back({"LF_DPDK_FAULTS", "loss=banana"});
  run(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = nullptr;
    REQUIRE_ST(r, LF_ERR_UNAVAILABLE, lf_channel_open(ctx, 1 - r.rank, &ch));
    REQUIRE(r, std::strstr(lf_last_error(), "dpdk"), "error: %s", lf_last_error());
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

// dpdk acknowledges only when polled, so a rank sitting in lf_barrier must
// still poll: rank 1 enters the barrier without ever polling its channel,
// and rank 0 enters it only once its send is acknowledged. Without the
// polling rank 0 gives rank 1 up for gone after LF_DPDK_PEER_TIMEOUT.
TEST_F(DpdkMemif, ARankInTheBarrierStillAcknowledges) {
  env.push_back({"LF_DPDK_PEER_TIMEOUT", "5"});
  run(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_dpdk(r, ctx, 1 - r.rank);
    uint64_t v = 42;
    if (r.rank == 0) {
      lf_request_t s;
      REQUIRE_OK(r, lf_isend(ch, &v, sizeof v, 1, &s));
      wait_ok(r, s);
      REQUIRE_OK(r, lf_barrier(ctx));
    } else {
      REQUIRE_OK(r, lf_barrier(ctx));
      v = 0;
      REQUIRE_OK(r, lf_recv(ch, &v, sizeof v, 1, nullptr));
      REQUIRE(r, v == 42, "received %" PRIu64, v);
    }
    REQUIRE_OK(r, lf_barrier(ctx));
    REQUIRE_OK(r, lf_channel_close(ch));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

// A FIN is sent once. When it is lost, a rank that only receives learns of
// the close from the FIN the closed side answers its idle probe with (one
// after a second of silence): its receive fails with LF_ERR_PEER_GONE well
// before its own 30 s limit. Rank 0 loses its first FIN (LF_DPDK_FAULTS=fin=1)
// and stays in lf_barrier meanwhile, which keeps its port answering.
TEST_F(DpdkMemif, AReceiverLearnsOfACloseWhoseFinWasLost) {
  env_rank[0] = {{"LF_DPDK_FAULTS", "fin=1"}};
  run(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_dpdk(r, ctx, 1 - r.rank);
    char x = 'r';
    if (r.rank == 0) {
      REQUIRE_OK(r, lf_recv(ch, &x, 1, 2, nullptr));  // rank 1's receive is posted
      REQUIRE_OK(r, lf_channel_close(ch));
    } else {
      lf_request_t q;
      REQUIRE_OK(r, lf_irecv(ch, &x, 1, 1, &q));
      REQUIRE_OK(r, lf_send(ch, &x, 1, 2));
      lf_status_t st = lf_wait_timeout(q, 30000, nullptr);
      REQUIRE(r, st == LF_ERR_PEER_GONE, "the receive ended with %s (%s)", lf_status_string(st), lf_last_error());
      REQUIRE_OK(r, lf_channel_close(ch));
    }
    REQUIRE_OK(r, lf_barrier(ctx));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

TEST_F(DpdkMemif, ThreeRanksEachPairOnItsOwnPort) {
  run(3, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch[3] = {};
    // Every rank opens its channels in rank order, so that each pair opens
    // its first channel... in whatever order the two ranks get to it.
    for (int p = 0; p < 3; ++p)
      if (p != r.rank) ch[p] = open_dpdk(r, ctx, p);
    std::vector<lf_request_t> reqs;
    uint64_t in[3] = {}, out = 1000 + static_cast<uint64_t>(r.rank);
    for (int p = 0; p < 3; ++p) {
      if (p == r.rank) continue;
      lf_request_t a, b;
      REQUIRE_OK(r, lf_irecv(ch[p], &in[p], sizeof in[p], 1, &a));
      REQUIRE_OK(r, lf_isend(ch[p], &out, sizeof out, 1, &b));
      reqs.push_back(a);
      reqs.push_back(b);
    }
    for (lf_request_t q : reqs) wait_ok(r, q);
    for (int p = 0; p < 3; ++p)
      if (p != r.rank) REQUIRE(r, in[p] == 1000 + static_cast<uint64_t>(p), "from %d: %" PRIu64, p, in[p]);
    REQUIRE_OK(r, lf_barrier(ctx));
    for (int p = 0; p < 3; ++p)
      if (ch[p]) REQUIRE_OK(r, lf_channel_close(ch[p]));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

TEST_F(DpdkMemif, NeverChosenSilently) {
  // Not named: dpdk does not even start, and shm carries the channel.
  env = {{"LF_LOG_LEVEL", "error"}};
  run(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch;
    REQUIRE_OK(r, lf_channel_open(ctx, 1 - r.rank, &ch));
    REQUIRE(r, std::strcmp(lf_channel_transport(ch), "dpdk") != 0, "dpdk chosen unasked: %s", lf_channel_reason(ch));
    REQUIRE_OK(r, lf_barrier(ctx));
    REQUIRE_OK(r, lf_channel_close(ch));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

TEST_F(DpdkMemif, AllowedButCostlierThanShmOnOneHost) {
  // Named among others: it starts, but shm is cheaper between two processes.
  env = {{"LF_LOG_LEVEL", "error"}, {"LF_TRANSPORTS", "shm,dpdk"}};
  run(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch;
    REQUIRE_OK(r, lf_channel_open(ctx, 1 - r.rank, &ch));
    REQUIRE(r, std::strcmp(lf_channel_transport(ch), "shm") == 0, "chose %s", lf_channel_reason(ch));
    REQUIRE(r, std::strstr(lf_channel_reason(ch), "dpdk"), "the runner-up is not named: %s", lf_channel_reason(ch));
    REQUIRE_OK(r, lf_barrier(ctx));
    REQUIRE_OK(r, lf_channel_close(ch));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

}  // namespace
