// The job key: a secret every rank of one job holds, so that a process
// outside the job (another local user, a stranger on the network) can neither
// join the bootstrap nor open a connection to a rank.
//
// A key never travels in clear. Whoever accepts a connection sends a fresh
// nonce; the connector answers with HMAC-SHA256(key, context || nonces), and
// the acceptor proves itself the same way, so both sides know the other holds
// the key (see docs/threading-and-security.md).
//
// Where a key comes from:
//  - under mpirun: rank 0 draws random bytes and shares them over MPI;
//  - standalone: LF_JOB_KEY (any string, hashed to 32 bytes) or
//    LF_JOB_KEY_FILE (a file only its owner can read);
//  - neither: the job is unauthenticated, and lf-info and a warning say so.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/status.hpp"

namespace lf {

class JobKey {
 public:
  static constexpr size_t kBytes = 32;
  static constexpr size_t kNonceBytes = 16;
  static constexpr size_t kProofBytes = 32;
  using Bytes = std::array<uint8_t, kBytes>;
  using Nonce = std::array<uint8_t, kNonceBytes>;
  using Proof = std::array<uint8_t, kProofBytes>;

  /// An unset key: the job is unauthenticated.
  JobKey() = default;
  /// LF_JOB_KEY, else LF_JOB_KEY_FILE, else an unset key. A key file that
  /// cannot be read, is empty, or can be read by other users is an error.
  static Result<JobKey> from_environment();
  /// The same rules for another pair of tunables (LF_EXEC_TOKEN, LF_EXEC_TOKEN_FILE).
  static Result<JobKey> from_environment(const char *var, const char *file_var);
  /// 32 random bytes from the kernel (rank 0 under mpirun).
  static Result<JobKey> random(std::string source);
  /// A key of the given bytes (the ranks that received rank 0's key).
  static JobKey of(const Bytes &bytes, std::string source);

  bool set() const noexcept { return set_; }
  const Bytes &bytes() const noexcept { return bytes_; }
  /// Where the key came from ("LF_JOB_KEY", "key file /path", "mpi"), or
  /// "none" when unset.
  const std::string &source() const noexcept { return source_; }

  /// HMAC-SHA256 of `message` under the key. With an unset key the proof is
  /// the HMAC under 32 zero bytes, so an unauthenticated job still detects
  /// garbage and a peer of another protocol.
  Proof prove(std::span<const uint8_t> message) const noexcept;
  /// Whether `proof` is prove(message), compared in constant time.
  bool verify(std::span<const uint8_t> message, std::span<const uint8_t> proof) const noexcept;

 private:
  Bytes bytes_{};
  bool set_ = false;
  std::string source_ = "none";
};

/// Fresh random bytes for a challenge.
JobKey::Nonce random_nonce() noexcept;

/// Constant-time equality of two byte ranges of the same length.
bool equal_constant_time(const void *a, const void *b, size_t n) noexcept;

}  // namespace lf
