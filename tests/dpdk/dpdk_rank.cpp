// One rank of the dpdk tests that run on namespace hosts (test_dpdk_netem):
// started by scripts/netns-hosts.sh exec with LF_RANK, LF_SIZE,
// LF_BOOTSTRAP and the dpdk variables in its environment.
//
//   lf_dpdk_rank stream COUNT [SIZE]
//     Two ranks; each sends COUNT messages of mixed sizes (up to 64 KiB,
//     among them 9000-byte ones; all of SIZE bytes when given, at most
//     64 KiB) to the other while receiving the other's,
//     checksums both streams and exchanges the checksums at the end. Prints
//       channel <rank> <peer> <transport> <reason>
//       ok <rank> <bytes received> <checksum>
//     and exits 0, or prints the failure and exits 1.
#include <lavaflow/lavaflow.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "payload.hpp"

using namespace lftest;

namespace {

#define CHECK(call)                                                                     \
  do {                                                                                  \
    lf_status_t st_ = (call);                                                           \
    if (st_ != LF_OK) {                                                                 \
      std::printf("fail %s: %s (%s)\n", #call, lf_status_string(st_), lf_last_error()); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const auto *b = static_cast<const unsigned char *>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

size_t fixed_size = 0;

size_t size_of(int i) {
  if (fixed_size) return fixed_size;
  const uint64_t h = mix(static_cast<uint64_t>(i) + 17);
  switch (h % 8) {
    case 0: return 9000;
    case 1: return h % 65536;
    default: return h % 300;
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3 || std::strcmp(argv[1], "stream") != 0) {
    std::fprintf(stderr, "usage: %s stream COUNT [SIZE]\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);
  const int count = std::atoi(argv[2]);
  if (argc > 3) fixed_size = std::min<size_t>(std::strtoull(argv[3], nullptr, 10), 65536);
  constexpr int kWindow = 16;
  constexpr size_t kMax = 65536;
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  const int rank = lf_rank(ctx), peer = 1 - rank;
  lf_channel_t ch;
  CHECK(lf_channel_open(ctx, peer, &ch));
  std::printf("channel %d %d %s %s\n", rank, peer, lf_channel_transport(ch), lf_channel_reason(ch));
  std::vector<std::vector<char>> out(kWindow, std::vector<char>(kMax)), in(kWindow, std::vector<char>(kMax));
  std::vector<lf_request_t> sreq(kWindow, nullptr), rreq(kWindow, nullptr);
  uint64_t sent_sum = 0xcbf29ce484222325ull, got_sum = sent_sum, got_bytes = 0;
  // Sender and receiver seeds differ by rank, so the two streams differ.
  auto retire = [&](int i) {
    CHECK(lf_wait(sreq[i % kWindow], nullptr));
    size_t got = 0;
    CHECK(lf_wait(rreq[i % kWindow], &got));
    if (got != size_of(i)) {
      std::printf("fail message %d: %zu bytes, want %zu\n", i, got, size_of(i));
      std::exit(1);
    }
    if (size_t bad =
            mismatch(in[i % kWindow].data(), got, static_cast<uint64_t>(peer) << 32 | static_cast<uint64_t>(i));
        bad != SIZE_MAX) {
      std::printf("fail message %d differs at byte %zu\n", i, bad);
      std::exit(1);
    }
    got_sum = fnv(got_sum, in[i % kWindow].data(), got);
    got_bytes += got;
  };
  for (int i = 0; i < count; ++i) {
    if (i >= kWindow) retire(i - kWindow);
    const size_t n = size_of(i);
    fill(out[i % kWindow].data(), n, static_cast<uint64_t>(rank) << 32 | static_cast<uint64_t>(i));
    sent_sum = fnv(sent_sum, out[i % kWindow].data(), n);
    CHECK(lf_irecv(ch, in[i % kWindow].data(), kMax, 3, &rreq[i % kWindow]));
    CHECK(lf_isend(ch, out[i % kWindow].data(), n, 3, &sreq[i % kWindow]));
  }
  for (int i = count > kWindow ? count - kWindow : 0; i < count; ++i) retire(i);
  uint64_t theirs = 0;
  lf_request_t s, r;
  CHECK(lf_irecv(ch, &theirs, sizeof theirs, 4, &r));
  CHECK(lf_isend(ch, &sent_sum, sizeof sent_sum, 4, &s));
  CHECK(lf_wait(r, nullptr));
  CHECK(lf_wait(s, nullptr));
  if (theirs != got_sum) {
    std::printf("fail checksum %016" PRIx64 ", the sender's %016" PRIx64 "\n", got_sum, theirs);
    return 1;
  }
  CHECK(lf_barrier(ctx));
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  std::printf("ok %d %" PRIu64 " %016" PRIx64 "\n", rank, got_bytes, got_sum);
  return 0;
}
