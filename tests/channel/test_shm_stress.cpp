// Reliability stream over the shm transport: 10 million messages (override
// with LFTEST_STRESS_MESSAGES) of mixed sizes from 0 B to 1 MiB on several
// interleaved tags, each carrying its tag, a per-tag sequence number and a
// checksum. The receiver checks that nothing is lost, reordered within a tag
// or corrupted. Most messages are small (as in real traffic); a minority are
// large enough to take the pipelined path, so the run stays within minutes.
#include <array>
#include <cmath>
#include <vector>

#include "shm_test_util.hpp"

using namespace lftest;

namespace {

constexpr int kTags = 4;
constexpr size_t kMax = 1u << 20;

struct Header {
  uint64_t tag;
  uint64_t seq;
  uint64_t size;
  uint64_t checksum;
};

/// Four independent multiply-xor lanes: fast enough that the check costs
/// about as much as one more copy.
uint64_t checksum(const unsigned char *p, size_t n) {
  uint64_t h[4] = {0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull, 0x2545f4914f6cdd1dull};
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      h[l] = (h[l] ^ w) * 0x100000001b3ull;
    }
  for (; i < n; ++i) h[i & 3] = (h[i & 3] ^ p[i]) * 0x100000001b3ull;
  return mix(h[0] ^ mix(h[1] ^ mix(h[2] ^ mix(h[3] ^ n))));
}

/// Size of message `i`: 85% 0-64 B, 14% up to 16 KiB, 0.9% up to 256 KiB,
/// 0.1% up to 1 MiB (each bucket log-uniform).
size_t size_of(uint64_t i) {
  uint64_t h = mix(i * 0x9e3779b97f4a7c15ull + 17);
  const uint64_t bucket = h % 1000, r = h >> 20;
  auto log_uniform = [&](size_t lo, size_t hi) {
    const double f = static_cast<double>(r % 1000000) / 1e6;
    return static_cast<size_t>(static_cast<double>(lo) * std::pow(static_cast<double>(hi) / lo, f));
  };
  if (bucket < 850) return r % 65;
  if (bucket < 990) return log_uniform(65, 16384);
  if (bucket < 999) return log_uniform(16385, 256u << 10);
  return log_uniform((256u << 10) + 1, kMax);
}

int tag_of(uint64_t i) { return static_cast<int>(mix(i + 0x51) % kTags); }

class ShmStress : public MultiProcess {};

TEST_F(ShmStress, TenMillionMixedMessages) {
  uint64_t total = 10'000'000;
  if (const char *e = std::getenv("LFTEST_STRESS_MESSAGES")) total = std::strtoull(e, nullptr, 10);
  spawn(2, [total](Rank &r) {
    Conn c = open_shm(r, 1 - r.rank);
    // A source of random bytes; each message's body is a slice of it.
    std::vector<unsigned char> pool(2 * kMax);
    fill(pool.data(), pool.size(), 42);
    if (r.rank == 0) {
      constexpr int kWindow = 8;
      std::vector<std::vector<unsigned char>> bufs(kWindow, std::vector<unsigned char>(kMax + sizeof(Header)));
      std::array<lf_request_t, kWindow> reqs{};
      std::array<bool, kWindow> busy{};
      std::array<uint64_t, kTags> seq{};
      for (uint64_t i = 0; i < total; ++i) {
        const int k = static_cast<int>(i % kWindow);
        if (busy[k]) REQUIRE_OK(r, lf_wait(reqs[k], nullptr));
        const int tag = tag_of(i);
        const size_t n = size_of(i);
        const unsigned char *body = pool.data() + (mix(i) % kMax);
        Header h{static_cast<uint64_t>(tag), seq[tag]++, n, checksum(body, n)};
        unsigned char *b = bufs[k].data();
        std::memcpy(b, &h, sizeof h);
        std::memcpy(b + sizeof h, body, n);
        REQUIRE_OK(r, lf_isend(c.ch, b, sizeof h + n, static_cast<uint64_t>(tag), &reqs[k]));
        busy[k] = true;
      }
      for (int k = 0; k < kWindow; ++k)
        if (busy[k]) REQUIRE_OK(r, lf_wait(reqs[k], nullptr));
      char done;
      REQUIRE_OK(r, lf_recv(c.ch, &done, 1, 1000, nullptr));
    } else {
      // Two receives posted per tag; the oldest of each tag is tested in turn,
      // so messages also arrive unexpected and are matched later.
      constexpr int kDepth = 2;
      struct Slot {
        lf_request_t req;
        std::vector<unsigned char> buf;
      };
      std::array<std::array<Slot, kDepth>, kTags> slots;
      std::array<int, kTags> oldest{};
      std::array<uint64_t, kTags> expect{};
      for (int t = 0; t < kTags; ++t)
        for (auto &s : slots[t]) {
          s.buf.resize(kMax + sizeof(Header));
          REQUIRE_OK(r, lf_irecv(c.ch, s.buf.data(), s.buf.size(), static_cast<uint64_t>(t), &s.req));
        }
      uint64_t received = 0, bytes = 0;
      while (received < total) {
        for (int t = 0; t < kTags; ++t) {
          Slot &s = slots[t][oldest[t]];
          int done = 0;
          REQUIRE_OK(r, lf_test(s.req, &done));
          if (!done) continue;
          lf_completion_t info = LF_COMPLETION_INIT;
          REQUIRE_OK(r, lf_wait_completion(s.req, &info));
          Header h;
          REQUIRE(r, info.bytes >= sizeof h, "message of %zu bytes on tag %d", info.bytes, t);
          std::memcpy(&h, s.buf.data(), sizeof h);
          REQUIRE(r, h.tag == static_cast<uint64_t>(t) && info.tag == h.tag, "tag %d carried tag %llu", t,
                  static_cast<unsigned long long>(h.tag));
          REQUIRE(r, h.seq == expect[t], "tag %d: sequence %llu where %llu was due (lost or reordered)", t,
                  static_cast<unsigned long long>(h.seq), static_cast<unsigned long long>(expect[t]));
          REQUIRE(r, h.size + sizeof h == info.bytes, "tag %d seq %llu: %zu bytes, header says %llu", t,
                  static_cast<unsigned long long>(h.seq), info.bytes, static_cast<unsigned long long>(h.size));
          REQUIRE(r, checksum(s.buf.data() + sizeof h, h.size) == h.checksum, "tag %d seq %llu: corrupted", t,
                  static_cast<unsigned long long>(h.seq));
          ++expect[t];
          ++received;
          bytes += info.bytes;
          REQUIRE_OK(r, lf_irecv(c.ch, s.buf.data(), s.buf.size(), static_cast<uint64_t>(t), &s.req));
          oldest[t] = (oldest[t] + 1) % kDepth;
        }
      }
      // Nothing extra may be waiting: the extra receives still posted must not complete.
      for (int t = 0; t < kTags; ++t)
        for (auto &s : slots[t]) {
          int done = 1;
          REQUIRE_OK(r, lf_test(s.req, &done));
          REQUIRE(r, !done, "a message beyond the stream arrived on tag %d", t);
        }
      std::printf("stress: %llu messages, %.2f GB verified\n", static_cast<unsigned long long>(received),
                  static_cast<double>(bytes) / 1e9);
      std::fflush(stdout);
      REQUIRE_OK(r, lf_send(c.ch, "d", 1, 1000));
    }
    close_all(r, c);
  });
  expect_all_ok(400);
}

}  // namespace
