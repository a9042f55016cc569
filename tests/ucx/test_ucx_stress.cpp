// 10^6 checksummed messages of mixed sizes over the ucx transport arrive
// complete and in order (issue 13). Sizes follow a fixed pseudo-random mix:
// mostly 0 B to 4 KiB (eager), some 16-256 KiB and a few 1 MiB
// (rendezvous); up to 64 sends in flight. LF_UCX_STRESS_COUNT changes the
// count, UCX_TLS (default here: tcp) the lanes.
#include <lavaflow/lavaflow.h>

#include <cinttypes>
#include <cstdlib>
#include <vector>

#include "multiprocess.hpp"
#include "payload.hpp"

using namespace lftest;

namespace {

size_t size_of(uint64_t i) {
  const uint64_t x = mix(i * 2654435761u + 17);
  const unsigned pick = static_cast<unsigned>(x % 1000);
  if (pick < 900) return static_cast<size_t>((x >> 10) % 4097);
  if (pick < 995) return static_cast<size_t>(16 << 10) + static_cast<size_t>((x >> 10) % (240 << 10));
  return size_t{1} << 20;
}

class UcxStress : public MultiProcess {};

TEST_F(UcxStress, MillionMixedMessagesInOrder) {
  const char *n_env = std::getenv("LF_UCX_STRESS_COUNT");
  const uint64_t count = n_env ? std::strtoull(n_env, nullptr, 10) : 1000000;
  env = {{"LF_LOG_LEVEL", "error"}, {"LF_TRANSPORTS", "ucx"}, {"LF_STRICT", "1"}};
  if (!std::getenv("UCX_TLS")) env.push_back({"UCX_TLS", "tcp"});
  spawn(2, [count](Rank &r) {
    lf_context_t ctx;
    REQUIRE_OK(r, lf_init(&ctx));
    lf_channel_t ch;
    REQUIRE_OK(r, lf_channel_open(ctx, 1 - r.rank, &ch));
    constexpr int kWindow = 64;
    std::vector<std::vector<char>> bufs(kWindow, std::vector<char>(1 << 20));
    std::vector<lf_request_t> reqs(kWindow, nullptr);
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < count; ++i) {
      const int slot = static_cast<int>(i % kWindow);
      if (reqs[slot]) {
        size_t got = 0;
        REQUIRE_OK(r, lf_wait_timeout(reqs[slot], 60000, &got));
        if (r.rank == 0) {
          const uint64_t j = i - kWindow;
          REQUIRE(r, got == size_of(j), "message %" PRIu64 ": %zu bytes, want %zu", j, got, size_of(j));
          REQUIRE(r, mismatch(bufs[slot].data(), got, j) == SIZE_MAX, "message %" PRIu64 " corrupted or reordered", j);
        }
      }
      if (r.rank == 1) {
        fill(bufs[slot].data(), size_of(i), i);
        REQUIRE_OK(r, lf_isend(ch, bufs[slot].data(), size_of(i), 3, &reqs[slot]));
      } else {
        REQUIRE_OK(r, lf_irecv(ch, bufs[slot].data(), bufs[slot].size(), 3, &reqs[slot]));
      }
      bytes += size_of(i);
    }
    for (uint64_t i = count > kWindow ? count - kWindow : 0; i < count; ++i) {
      const int slot = static_cast<int>(i % kWindow);
      size_t got = 0;
      REQUIRE_OK(r, lf_wait_timeout(reqs[slot], 60000, &got));
      if (r.rank == 0)
        REQUIRE(r, got == size_of(i) && mismatch(bufs[slot].data(), got, i) == SIZE_MAX,
                "message %" PRIu64 " corrupted", i);
    }
    if (r.rank == 0)
      std::fprintf(stderr, "[ucx] %" PRIu64 " messages, %.1f MiB, in order\n", count,
                   static_cast<double>(bytes) / (1 << 20));
    REQUIRE_OK(r, lf_barrier(ctx));
    REQUIRE_OK(r, lf_channel_close(ch));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  expect_all_ok(580);
}

}  // namespace
