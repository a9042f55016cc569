// Helpers shared by the shm channel tests: opening a channel from a child
// rank, deterministic payloads and their checks.
#pragma once

#include <lavaflow/lavaflow.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "multiprocess.hpp"

namespace lftest {

struct Conn {
  lf_context_t ctx = nullptr;
  lf_channel_t ch = nullptr;
};

/// lf_init + lf_channel_open to `peer`; requires the shm transport.
inline Conn open_shm(const Rank &r, int peer) {
  Conn c;
  REQUIRE_OK(r, lf_init(&c.ctx));
  REQUIRE(r, lf_rank(c.ctx) == r.rank, "rank %d", lf_rank(c.ctx));
  REQUIRE_OK(r, lf_channel_open(c.ctx, peer, &c.ch));
  const char *t = lf_channel_transport(c.ch);
  REQUIRE(r, t && std::string(t) == "shm", "transport %s (%s)", t ? t : "null", lf_channel_reason(c.ch));
  return c;
}

inline void close_all(const Rank &r, Conn &c) {
  if (c.ch) REQUIRE_OK(r, lf_channel_close(c.ch));
  REQUIRE_OK(r, lf_finalize(c.ctx));
}

inline uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/// Fill `n` bytes with a pattern determined by `seed` (fast: 8 bytes per step).
inline void fill(void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<unsigned char *>(p);
  uint64_t x = mix(seed + 1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(b + i, &x, 8);
  }
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  for (; i < n; ++i) b[i] = static_cast<unsigned char>(x >> (8 * (i & 7)));
}

/// Index of the first byte that differs from fill(.., seed), or SIZE_MAX.
inline size_t mismatch(const void *p, size_t n, uint64_t seed) {
  auto *b = static_cast<const unsigned char *>(p);
  uint64_t x = mix(seed + 1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    if (std::memcmp(b + i, &x, 8) != 0) return i;
  }
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  for (; i < n; ++i)
    if (b[i] != static_cast<unsigned char>(x >> (8 * (i & 7)))) return i;
  return SIZE_MAX;
}

}  // namespace lftest
