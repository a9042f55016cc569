// The ucx transport between forked ranks, over the C API: what the
// conformance suite's ucx instances do not check.
//  - Selection: with only tcp and shared-memory lanes (UCX_TLS=tcp,sm,self,
//    whatever the machine has), ucx is never chosen over shm (local) or tcp
//    (remote); LF_TRANSPORTS=ucx forces it and the reason says so; a strict
//    ucx for a pair whose lanes cannot cross hosts is a clear error.
//  - Buffer sends (pool slabs, registered once) and buffer receives.
//  - A peer killed during a 64 MiB rendezvous: LF_ERR_PEER_GONE, no hang.
// "Remote" ranks are declared on different hosts with LF_LOCATION_FILE.
#include <lavaflow/lavaflow.h>
#include <signal.h>

#include <cinttypes>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "multiprocess.hpp"
#include "payload.hpp"

using namespace lftest;

namespace {

constexpr int64_t kWaitMs = 30000;

class UcxChannel : public MultiProcess {
 protected:
  // LF_UCX_START_ALWAYS: ucx starts on both ranks although it has no RDMA
  // lane here, so that what keeps it from being chosen is its estimate.
  void SetUp() override { env = {{"LF_LOG_LEVEL", "error"}, {"UCX_TLS", "tcp,sm,self"}, {"LF_UCX_START_ALWAYS", "1"}}; }
  void TearDown() override {
    for (auto &f : files_) std::remove(f.c_str());
  }
  /// Declare the two ranks on different hosts.
  void declare_remote() {
    for (int r = 0; r < 2; ++r) {
      std::string f = "/tmp/lf-ucx-test-" + std::to_string(getpid()) + "-" + std::to_string(r) + ".json";
      std::ofstream(f) << "{\"hostname\": \"declared-node-" << r << "\", \"boot_id\": \"00000000-0000-4000-8000-"
                       << std::string(11, '0') << r << "\"}\n";
      files_.push_back(f);
      env_rank[r].push_back({"LF_LOCATION_FILE", f});
    }
  }
  std::vector<std::string> files_;
};

/// Open a channel to the other rank; its transport must be `want`.
lf_channel_t open_expecting(Rank &r, lf_context_t ctx, const char *want) {
  lf_channel_t ch = nullptr;
  REQUIRE_OK(r, lf_channel_open(ctx, 1 - r.rank, &ch));
  const char *t = lf_channel_transport(ch);
  REQUIRE(r, t && std::strcmp(t, want) == 0, "transport %s, want %s (%s)", t ? t : "null", want, lf_channel_reason(ch));
  return ch;
}

/// One message each way.
void ping(Rank &r, lf_channel_t ch) {
  uint64_t mine = 100 + static_cast<uint64_t>(r.rank), theirs = 0;
  lf_request_t s, q;
  REQUIRE_OK(r, lf_isend(ch, &mine, sizeof mine, 1, &s));
  REQUIRE_OK(r, lf_irecv(ch, &theirs, sizeof theirs, 1, &q));
  REQUIRE_OK(r, lf_wait_timeout(s, kWaitMs, nullptr));
  REQUIRE_OK(r, lf_wait_timeout(q, kWaitMs, nullptr));
  REQUIRE(r, theirs == 101 - static_cast<uint64_t>(r.rank), "got %" PRIu64, theirs);
}

void close_all(Rank &r, lf_context_t ctx, lf_channel_t ch) {
  REQUIRE_OK(r, lf_barrier(ctx));
  REQUIRE_OK(r, lf_channel_close(ch));
  REQUIRE_OK(r, lf_finalize(ctx));
}

TEST_F(UcxChannel, LocalPairChoosesShmNotUcx) {
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_expecting(r, ctx, "shm");
    ping(r, ch);
    close_all(r, ctx, ch);
  });
  expect_all_ok(60);
}

// Without LF_UCX_START_ALWAYS ucx does not even start (no worker, no UCX
// threads) when it has no RDMA lane and LF_TRANSPORTS does not name it; a
// channel whose own transports name it is then refused with a reason.
TEST_F(UcxChannel, WithoutRdmaUcxStartsOnlyWhenNamed) {
  env = {{"LF_LOG_LEVEL", "error"}, {"UCX_TLS", "tcp,sm,self"}};
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_params_t p = LF_CHANNEL_PARAMS_INIT;
    p.transports = "ucx";
    lf_channel_t ch = nullptr;
    REQUIRE_ST(r, LF_ERR_UNAVAILABLE, lf_channel_open_ex(ctx, 1 - r.rank, &p, &ch));
    const char *why = lf_last_error();
    REQUIRE(r, std::strstr(why, "ucx: not available here"), "error: %s", why);
    ch = open_expecting(r, ctx, "shm");
    close_all(r, ctx, ch);
  });
  expect_all_ok(60);
}

TEST_F(UcxChannel, LocalPairWithoutShmChoosesTcpNotUcx) {
  env.push_back({"LF_TRANSPORTS", "^shm"});
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_expecting(r, ctx, "tcp");
    close_all(r, ctx, ch);
  });
  expect_all_ok(60);
}

TEST_F(UcxChannel, RemotePairChoosesTcpNotUcx) {
  declare_remote();
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_expecting(r, ctx, "tcp");
    const char *why = lf_channel_reason(ch);
    REQUIRE(r, std::strstr(why, "remote scope"), "reason: %s", why);
    ping(r, ch);
    close_all(r, ctx, ch);
  });
  expect_all_ok(60);
}

// Forced: ucx across the declared hosts (its tcp lane), with pool buffers
// sent by lf_isend_buffer (each slab registered once) and received as
// buffers, sizes on both sides of the rendezvous threshold.
TEST_F(UcxChannel, ForcedUcxMovesPoolBuffers) {
  declare_remote();
  env.push_back({"LF_TRANSPORTS", "ucx"});
  env.push_back({"LF_STRICT", "1"});
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_expecting(r, ctx, "ucx");
    const char *why = lf_channel_reason(ch);
    REQUIRE(r, std::strstr(why, "remote scope") && std::strstr(why, "ucx"), "reason: %s", why);
    const size_t sizes[] = {0, 1, 4096, 16 << 10, 100000, 1 << 20, 3 << 20};
    if (r.rank == 1) {
      lf_pool_t pool;
      REQUIRE_OK(r, lf_pool_create(ctx, nullptr, &pool));
      for (int round = 0; round < 3; ++round)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
          lf_buffer_t b;
          REQUIRE_OK(r, lf_pool_acquire(pool, sizes[i] ? sizes[i] : 1, &b));
          fill(lf_buffer_data(b), sizes[i], 1000 * static_cast<uint64_t>(round) + i);
          lf_request_t s;
          if (sizes[i] == 0) {
            lf_free(b);
            REQUIRE_OK(r, lf_isend(ch, nullptr, 0, 5, &s));
          } else {
            REQUIRE_OK(r, lf_isend_buffer(ch, b, 5, &s));
          }
          REQUIRE_OK(r, lf_wait_timeout(s, kWaitMs, nullptr));
        }
      REQUIRE_OK(r, lf_pool_destroy(pool));
    } else {
      for (int round = 0; round < 3; ++round)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
          lf_request_t q;
          REQUIRE_OK(r, lf_irecv_buffer(ch, 5, &q));
          lf_buffer_t b = nullptr;
          REQUIRE_OK(r, lf_wait_buffer(q, &b, nullptr));
          REQUIRE(r, lf_buffer_size(b) == sizes[i], "round %d: %zu bytes, want %zu", round, lf_buffer_size(b),
                  sizes[i]);
          REQUIRE(r, mismatch(lf_buffer_data(b), sizes[i], 1000 * static_cast<uint64_t>(round) + i) == SIZE_MAX,
                  "round %d, message %zu corrupted", round, i);
          lf_free(b);
        }
    }
    close_all(r, ctx, ch);
  });
  expect_all_ok(90);
}

// UCX_TLS without a lane that crosses hosts: a strict ucx channel to a
// remote peer fails and says why.
TEST_F(UcxChannel, StrictUcxWithoutANetworkLaneIsAClearError) {
  declare_remote();
  env = {{"LF_LOG_LEVEL", "error"}, {"UCX_TLS", "sm,self"}, {"LF_TRANSPORTS", "ucx"}, {"LF_STRICT", "1"}};
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = nullptr;
    REQUIRE_ST(r, LF_ERR_UNAVAILABLE, lf_channel_open(ctx, 1 - r.rank, &ch));
    const char *why = lf_last_error();
    REQUIRE(r, std::strstr(why, "share no UCX transport") && std::strstr(why, "crosses hosts"), "error: %s", why);
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  expect_all_ok(60);
}

// Rank 1 starts a 64 MiB send (a rendezvous: the receiver fetches it) and is
// killed right after; rank 0's receive ends with LF_ERR_PEER_GONE, or LF_OK
// if the whole message made it first, within the wait's bound.
TEST_F(UcxChannel, PeerKilledDuringA64MiBRendezvous) {
  env = {{"LF_LOG_LEVEL", "error"}, {"UCX_TLS", "tcp"}, {"LF_TRANSPORTS", "ucx"}, {"LF_STRICT", "1"}};
  spawn(2, [](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch = open_expecting(r, ctx, "ucx");
    ping(r, ch);
    constexpr size_t kBig = 64 << 20;
    std::vector<char> big(kBig);
    if (r.rank == 1) {
      fill(big.data(), kBig, 7);
      lf_request_t s;
      REQUIRE_OK(r, lf_isend(ch, big.data(), kBig, 9, &s));
      r.signal('K');  // the parent kills this rank now
      (void)lf_wait_timeout(s, kWaitMs, nullptr);
      r.await();  // never answered
      return;
    }
    lf_request_t q;
    REQUIRE_OK(r, lf_irecv(ch, big.data(), kBig, 9, &q));
    size_t got = 0;
    lf_status_t st = lf_wait_timeout(q, kWaitMs, &got);
    REQUIRE(r, st == LF_ERR_PEER_GONE || (st == LF_OK && got == kBig), "receive ended with %s (%s)",
            lf_status_string(st), lf_last_error());
    std::fprintf(stderr, "[ucx] receive during the kill ended with %s\n", lf_status_string(st));
    (void)lf_channel_close(ch);
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  ASSERT_EQ(await(1, 60000), 'K');
  ASSERT_EQ(kill(pid_of(1), SIGKILL), 0);
  expect_all_ok(60, {1});
}

}  // namespace
