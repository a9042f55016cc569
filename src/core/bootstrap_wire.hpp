// The rendezvous bootstrap's handshake on the wire (tcp:// and unix:), shared
// by core/bootstrap.cpp and the tests that play a stranger or an impostor.
//
//   rank 0 -> joiner   Challenge  {magic, version, size, keyed, nonce_r}
//   joiner -> rank 0   Join       {magic, version, rank, size, keyed, nonce_j,
//                                  HMAC(key, "join" transcript)}
//   rank 0 -> joiner   Welcome    {magic, status, HMAC(key, "root" transcript)}
//
// A transcript is label || rank || size || nonce_r || nonce_j, so a proof is
// good for one connection, one rank and one direction only. Rank 0 answers a
// Join whose proof does not verify with a Welcome that says so (and carries
// no proof); the joiner accepts rank 0 only once rank 0's proof verifies.
// After a Welcome of kOk, both sides exchange length-prefixed records (u64
// length, at most kMaxRecord bytes per record).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "core/job_key.hpp"

namespace lf::bootstrap_wire {

constexpr uint32_t kChallengeMagic = 0x4c464243;  // "LFBC"
constexpr uint32_t kJoinMagic = 0x4c46424a;       // "LFBJ"
constexpr uint32_t kWelcomeMagic = 0x4c464257;    // "LFBW"
constexpr uint32_t kVersion = 2;
/// Largest record one rank may contribute to an allgather.
constexpr uint64_t kMaxRecord = uint64_t{1} << 20;

/// Welcome::status.
enum Refusal : int32_t {
  kOk = 0,
  kWrongKey = 1,    ///< the Join's proof did not verify
  kWrongSize = 2,   ///< the joiner believes in another world size
  kBadRank = 3,     ///< rank outside [1, size)
  kRankTaken = 4,   ///< another process already proved this rank
  kBadVersion = 5,  ///< another protocol version
};

inline const char *refusal_string(int32_t s) noexcept {
  switch (s) {
    case kOk: return "accepted";
    case kWrongKey: return "its job key differs from rank 0's";
    case kWrongSize: return "it was started with another LF_SIZE than rank 0";
    case kBadRank: return "its rank is outside the world";
    case kRankTaken: return "another process already joined with that rank";
    case kBadVersion: return "it speaks another bootstrap protocol version";
  }
  return "unknown reason";
}

struct Challenge {
  uint32_t magic;
  uint32_t version;
  int32_t size;
  uint8_t keyed;  ///< rank 0 holds a job key (only for clearer errors)
  uint8_t pad[3];
  JobKey::Nonce nonce;
};

struct Join {
  uint32_t magic;
  uint32_t version;
  int32_t rank;
  int32_t size;
  uint8_t keyed;
  uint8_t pad[3];
  JobKey::Nonce nonce;
  JobKey::Proof proof;
};

struct Welcome {
  uint32_t magic;
  int32_t status;
  JobKey::Proof proof;  ///< rank 0's proof; zeros unless status is kOk
};

static_assert(sizeof(Challenge) == 32 && sizeof(Join) == 68 && sizeof(Welcome) == 40);

/// Who proves: the joiner ("join") or rank 0 ("root").
enum class Side { join, root };

using Transcript = std::array<uint8_t, 16 + 4 + 4 + 2 * JobKey::kNonceBytes>;

inline Transcript transcript(Side side, int32_t rank, int32_t size, const JobKey::Nonce &root_nonce,
                             const JobKey::Nonce &join_nonce) noexcept {
  Transcript t{};
  const char *label = side == Side::join ? "lf-bootstrap-jn" : "lf-bootstrap-rt";  // 15 chars + NUL
  uint8_t *p = t.data();
  std::memcpy(p, label, 16), p += 16;
  std::memcpy(p, &rank, 4), p += 4;
  std::memcpy(p, &size, 4), p += 4;
  std::memcpy(p, root_nonce.data(), root_nonce.size()), p += root_nonce.size();
  std::memcpy(p, join_nonce.data(), join_nonce.size());
  return t;
}

}  // namespace lf::bootstrap_wire
