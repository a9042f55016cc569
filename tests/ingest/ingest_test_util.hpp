// Files with a known pattern, and reading them back through lf_ingest.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace lftest {

/// The byte at `offset` of every test file: position-dependent, so a chunk
/// delivered at the wrong offset or twice is caught.
inline uint8_t pattern_byte(uint64_t offset) {
  uint64_t x = offset / 8 * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  return static_cast<uint8_t>(x >> (8 * (offset % 8)));
}

inline void fill_pattern(uint8_t *p, size_t n, uint64_t offset) {
  for (size_t i = 0; i < n; ++i) p[i] = pattern_byte(offset + i);
}

/// First offset in [0, n) where p differs from the pattern at `offset`, or SIZE_MAX.
inline size_t pattern_mismatch(const void *p, size_t n, uint64_t offset) {
  const auto *b = static_cast<const uint8_t *>(p);
  for (size_t i = 0; i < n; ++i)
    if (b[i] != pattern_byte(offset + i)) return i;
  return SIZE_MAX;
}

/// FNV-1a over bytes, for whole-file checksums.
inline uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const auto *b = static_cast<const uint8_t *>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}
inline constexpr uint64_t kFnvSeed = 0xcbf29ce484222325ull;

inline uint64_t pattern_checksum(uint64_t begin, uint64_t n) {
  std::vector<uint8_t> buf(1 << 16);
  uint64_t h = kFnvSeed;
  for (uint64_t off = 0; off < n; off += buf.size()) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(buf.size(), n - off));
    fill_pattern(buf.data(), len, begin + off);
    h = fnv(h, buf.data(), len);
  }
  return h;
}

/// A directory of its own under `base` (/tmp is ext4 here: O_DIRECT works;
/// /dev/shm is tmpfs: it refuses O_DIRECT), removed at the end.
class TempDir {
 public:
  explicit TempDir(const char *base = nullptr) {
    if (!base) base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    std::string tmpl = std::string(base) + "/lf-ingest-XXXXXX";
    std::vector<char> t(tmpl.begin(), tmpl.end());
    t.push_back('\0');
    if (!mkdtemp(t.data())) std::abort();
    path_ = t.data();
  }
  ~TempDir() { (void)!std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string &path() const { return path_; }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// Write a pattern file of `size` bytes.
inline void write_pattern_file(const std::string &path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t off = 0; off < size; off += buf.size()) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    fill_pattern(buf.data(), len, off);
    ASSERT_EQ(::pwrite(fd, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
  }
  ::close(fd);
}

/// What reading a whole ingest gave.
struct Drained {
  lf_status_t status = LF_OK;  ///< LF_OK at the end of the range, else the error that ended it.
  std::string error;
  uint64_t bytes = 0;
  uint64_t chunks = 0;
  uint64_t checksum = kFnvSeed;
  std::string problem;  ///< Non-empty when a chunk was out of order or its bytes were wrong.
};

/// Read `in` to its end (or an error), checking every chunk against the
/// pattern at its offset and that the chunks come in file order from `begin`.
inline Drained drain_ingest(lf_ingest_t in, uint64_t begin, bool check_pattern = true) {
  Drained d;
  for (;;) {
    lf_buffer_t c = nullptr;
    uint64_t off = 0;
    lf_status_t st = lf_ingest_next(in, &c, &off, -1);
    if (st != LF_OK) {
      d.status = st;
      d.error = lf_last_error();
      return d;
    }
    if (!c) return d;
    const size_t n = lf_buffer_size(c);
    if (off != begin + d.bytes && d.problem.empty())
      d.problem = "chunk " + std::to_string(d.chunks) + " at offset " + std::to_string(off) + ", expected " +
                  std::to_string(begin + d.bytes);
    if (check_pattern && d.problem.empty()) {
      size_t bad = pattern_mismatch(lf_buffer_data(c), n, off);
      if (bad != SIZE_MAX) d.problem = "wrong byte at file offset " + std::to_string(off + bad);
    }
    d.checksum = fnv(d.checksum, lf_buffer_data(c), n);
    d.bytes += n;
    ++d.chunks;
    lf_free(c);
  }
}

inline lf_ingest_stats_t ingest_stats(lf_ingest_t in) {
  lf_ingest_stats_t s = LF_INGEST_STATS_INIT;
  lf_ingest_stats(in, &s);
  return s;
}

/// Sets an environment variable for one scope (the tunables are read at open).
class ScopedEnv {
 public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    if (const char *old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv &) = delete;
  ScopedEnv &operator=(const ScopedEnv &) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

}  // namespace lftest
