// Deterministic payloads for multi-process tests: a pattern any rank can
// produce from a seed, and the check that finds where a received copy
// differs from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace lftest {

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
