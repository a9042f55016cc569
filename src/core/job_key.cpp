#include "core/job_key.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/config.hpp"

namespace lf {

namespace {

Status fill_random(void *out, size_t n) noexcept {
  auto *p = static_cast<uint8_t *>(out);
  while (n) {
    ssize_t got = ::getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return LF_FAIL(LF_ERR_IO, "getrandom: %s", std::strerror(errno));
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
  return {};
}

JobKey::Bytes digest(std::span<const uint8_t> material) noexcept {
  JobKey::Bytes out{};
  unsigned len = 0;
  EVP_Digest(material.data(), material.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

std::span<const uint8_t> as_bytes(const std::string &s) noexcept {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

}  // namespace

Result<JobKey> JobKey::from_environment() { return from_environment("LF_JOB_KEY", "LF_JOB_KEY_FILE"); }

Result<JobKey> JobKey::from_environment(const char *var, const char *file_var) {
  std::string env = config::get_string(var);
  if (!env.empty()) return of(digest(as_bytes(env)), var);
  std::string path = config::get_string(file_var);
  if (path.empty()) return JobKey{};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return LF_FAIL(LF_ERR_IO, "%s=%s: %s", file_var, path.c_str(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return LF_FAIL(LF_ERR_INVALID_ARG, "%s=%s is not a regular file", file_var, path.c_str());
  }
  if ((st.st_mode & 077) != 0 || st.st_uid != ::geteuid()) {
    ::close(fd);
    return LF_FAIL(LF_ERR_INVALID_ARG, "%s=%s can be read by other users or is not ours (mode %03o): chmod 600 it",
                   file_var, path.c_str(), static_cast<unsigned>(st.st_mode & 0777));
  }
  std::string content;
  char chunk[4096];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    content.append(chunk, static_cast<size_t>(n));
    if (content.size() > (1u << 20)) break;
  }
  ::close(fd);
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r')) content.pop_back();
  if (content.empty()) return LF_FAIL(LF_ERR_INVALID_ARG, "%s=%s is empty", file_var, path.c_str());
  return of(digest(as_bytes(content)), "key file " + path);
}

Result<JobKey> JobKey::random(std::string source) {
  Bytes b{};
  if (auto st = fill_random(b.data(), b.size()); !st) return std::unexpected(st.error());
  return of(b, std::move(source));
}

JobKey JobKey::of(const Bytes &bytes, std::string source) {
  JobKey k;
  k.bytes_ = bytes;
  k.set_ = true;
  k.source_ = std::move(source);
  return k;
}

JobKey::Proof JobKey::prove(std::span<const uint8_t> message) const noexcept {
  Proof out{};
  unsigned len = 0;
  HMAC(EVP_sha256(), bytes_.data(), static_cast<int>(bytes_.size()), message.data(), message.size(), out.data(), &len);
  return out;
}

bool JobKey::verify(std::span<const uint8_t> message, std::span<const uint8_t> proof) const noexcept {
  if (proof.size() != kProofBytes) return false;
  Proof want = prove(message);
  return equal_constant_time(want.data(), proof.data(), kProofBytes);
}

JobKey::Nonce random_nonce() noexcept {
  JobKey::Nonce n{};
  // getrandom on a 16-byte request does not fail once the pool is
  // initialised; should it, a nonce of zeros still forces a fresh HMAC per
  // connection because the other side contributes its own nonce.
  (void)fill_random(n.data(), n.size());
  return n;
}

bool equal_constant_time(const void *a, const void *b, size_t n) noexcept { return CRYPTO_memcmp(a, b, n) == 0; }

}  // namespace lf
