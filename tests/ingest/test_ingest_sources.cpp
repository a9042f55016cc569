// File ingest from sources the pattern files of test_ingest.cpp do not
// cover: a file whose reads the kernel really cuts short, and chunks in
// Vulkan host-visible memory (lavapipe where there is no GPU).
#include <cerrno>
#include <utility>

#include "ingest_test_util.hpp"

using namespace lftest;

namespace {

lf_ingest_params_t params(size_t chunk, int qd, int ring, int direct = 0, lf_memory_kind_t kind = LF_MEM_HOST) {
  lf_ingest_params_t p = LF_INGEST_PARAMS_INIT;
  p.kind = kind;
  p.chunk_bytes = chunk;
  p.queue_depth = qd;
  p.ring_chunks = ring;
  p.direct = direct;
  return p;
}

// The engine an ingest takes under LF_INGEST_ENGINE=`engine`: "" when it is
// that engine, else why not (io_uring missing from the build or the kernel).
std::string engine_missing(const char *engine) {
  TempDir dir;
  const std::string f = dir.file("probe");
  write_pattern_file(f, 1);
  ScopedEnv e("LF_INGEST_ENGINE", engine);
  lf_ingest_t in;
  if (lf_ingest_open(nullptr, f.c_str(), 0, 0, nullptr, &in) != LF_OK) return lf_last_error();
  lf_ingest_close(in);
  return {};
}

// ---- short reads -------------------------------------------------------------------
//
// sysfs binary attributes are regular files whose reads the kernel cuts at
// one page (kernfs_file_read_iter reads at most PAGE_SIZE per call), however
// much was asked: a true short read, with the rest there to be read again.
// The test checks first that read(2) really comes back short here.
// /sys/kernel/btf/vmlinux is one, a few MiB, readable by everyone, on every
// kernel built with BTF.

constexpr const char *kShortReadFile = "/sys/kernel/btf/vmlinux";

// Every byte of `path` by plain read() to its end, or why it cannot be had
// with short reads: "" on success.
std::string read_all_reporting_short(const char *path, std::vector<uint8_t> &out) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string(path) + ": " + std::strerror(errno);
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 4 * 4096) {
    ::close(fd);
    return std::string(path) + " is not a regular file of more than 16 KiB here";
  }
  std::vector<uint8_t> probe(1 << 16);
  const ssize_t first = ::pread(fd, probe.data(), probe.size(), 0);
  if (first <= 0 || static_cast<size_t>(first) >= probe.size()) {
    ::close(fd);
    return std::string("this kernel returns whole reads from ") + path + " (asked 65536, got " + std::to_string(first) +
           ")";
  }
  out.assign(static_cast<size_t>(st.st_size), 0);
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got != out.size()) return std::string(path) + ": read " + std::to_string(got) + " of its stat size";
  return {};
}

class IngestShortReads : public ::testing::TestWithParam<const char *> {};

TEST_P(IngestShortReads, TheRestIsReadAgain) {
  if (std::string why = engine_missing(GetParam()); !why.empty()) GTEST_SKIP() << why;
  std::vector<uint8_t> want;
  if (std::string why = read_all_reporting_short(kShortReadFile, want); !why.empty()) GTEST_SKIP() << why;
  ScopedEnv e("LF_INGEST_ENGINE", GetParam());
  // The whole file, and a range that starts and ends mid-page, so that the
  // short reads end off any boundary the reader could have assumed.
  const uint64_t odd_begin = 4096 + 123, odd_len = want.size() - odd_begin - 777;
  for (auto [begin, length] : {std::pair<uint64_t, uint64_t>{0, 0}, {odd_begin, odd_len}}) {
    SCOPED_TRACE("offset " + std::to_string(begin));
    constexpr size_t kChunk = 64 * 1024;
    lf_ingest_params_t p = params(kChunk, 4, 8);
    lf_ingest_t in;
    ASSERT_EQ(lf_ingest_open(nullptr, kShortReadFile, begin, length, &p, &in), LF_OK) << lf_last_error();
    const uint64_t end = length ? begin + length : want.size();
    uint64_t next = begin, chunks = 0;
    std::string problem;
    for (;;) {
      lf_buffer_t c = nullptr;
      uint64_t off = 0;
      ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK) << lf_last_error();
      if (!c) break;
      const size_t n = lf_buffer_size(c);
      if (problem.empty() && off != next)
        problem = "chunk at " + std::to_string(off) + ", expected " + std::to_string(next);
      if (problem.empty() && (off + n > end || std::memcmp(lf_buffer_data(c), want.data() + off, n) != 0))
        problem = "chunk at " + std::to_string(off) + " differs from a plain read of the file";
      next = off + n;
      ++chunks;
      lf_free(c);
    }
    EXPECT_EQ(problem, "");
    EXPECT_EQ(next, end) << "every byte of the range was delivered";
    const lf_ingest_stats_t s = ingest_stats(in);
    EXPECT_EQ(s.bytes, end - begin);
    if (std::string(GetParam()) == "pread") {
      // Each chunk came back short from its first pread (at most a page a
      // call here) and was completed by reads for the rest.
      EXPECT_GE(s.rereads, chunks) << "the kernel cut the reads short and each was read again";
      EXPECT_GT(s.reads, chunks);
    }
    // io_uring completes a short read of a regular file itself before it
    // posts the completion (io_uring/rw.c retries while need_complete_io(),
    // S_ISREG or S_ISBLK), so its completions here are whole: the reader's
    // own re-read of a short completion is reached by a file that shrinks
    // (test_ingest.cpp FileTruncatedWhileReading), not by this file.
    EXPECT_EQ(s.ring_held, 0u);
    EXPECT_EQ(lf_ingest_close(in), LF_OK);
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, IngestShortReads, ::testing::Values("io_uring", "pread"),
                         [](const auto &param_info) { return std::string(param_info.param); });

// ---- Vulkan host-visible chunks ----------------------------------------------------------

// "" when Vulkan host-visible memory is available here, else why not.
std::string no_vulkan_host_visible() {
  static const std::string why = [] {
    lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
    ap.strict = 1;
    lf_buffer_t b = nullptr;
    if (lf_alloc_ex(nullptr, 4096, LF_MEM_VULKAN_HOST_VISIBLE, &ap, &b) != LF_OK)
      return std::string("Vulkan host-visible memory is not available here: ") + lf_last_error();
    lf_free(b);
    return std::string();
  }();
  return why;
}

struct VulkanCase {
  const char *engine;
  int direct;
};

class IngestVulkan : public ::testing::TestWithParam<VulkanCase> {};

TEST_P(IngestVulkan, EveryByteLandsInHostVisibleChunks) {
  if (std::string why = no_vulkan_host_visible(); !why.empty()) GTEST_SKIP() << why;
  if (std::string why = engine_missing(GetParam().engine); !why.empty()) GTEST_SKIP() << why;
  ScopedEnv e("LF_INGEST_ENGINE", GetParam().engine);
  TempDir dir;  // /tmp (ext4 here): O_DIRECT is possible, or it falls back with a reason
  const std::string f = dir.file("vk");
  constexpr size_t kChunk = 256 * 1024;
  const uint64_t size = 9 * kChunk + 4097;
  write_pattern_file(f, size);
  lf_ingest_params_t p = params(kChunk, 4, 8, GetParam().direct, LF_MEM_VULKAN_HOST_VISIBLE);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  const std::string taken = lf_ingest_path_taken(in);
  EXPECT_EQ(taken.find("chunks are"), std::string::npos) << "no fallback to another kind: " << taken;
  uint64_t next = 0, chunks = 0;
  for (;;) {
    lf_buffer_t c = nullptr;
    uint64_t off = 0;
    ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK) << lf_last_error();
    if (!c) break;
    EXPECT_EQ(lf_buffer_kind(c), LF_MEM_VULKAN_HOST_VISIBLE) << lf_buffer_fallback_reason(c);
    EXPECT_EQ(off, next);
    ASSERT_NE(lf_buffer_data(c), nullptr);
    const size_t bad = pattern_mismatch(lf_buffer_data(c), lf_buffer_size(c), off);
    EXPECT_EQ(bad, SIZE_MAX) << "wrong byte at file offset " << off + bad << " (" << taken << ")";
    next = off + lf_buffer_size(c);
    ++chunks;
    lf_free(c);
  }
  EXPECT_EQ(next, size);
  EXPECT_EQ(chunks, 10u);
  const lf_ingest_stats_t s = ingest_stats(in);
  EXPECT_EQ(s.bytes, size);
  EXPECT_LE(s.ring_high_water, 8u);
  EXPECT_EQ(s.ring_held, 0u);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

INSTANTIATE_TEST_SUITE_P(Engines, IngestVulkan,
                         ::testing::Values(VulkanCase{"io_uring", 0}, VulkanCase{"io_uring", 1}, VulkanCase{"pread", 0},
                                           VulkanCase{"pread", 1}),
                         [](const auto &param_info) {
                           return std::string(param_info.param.engine) + (param_info.param.direct ? "_direct" : "");
                         });

}  // namespace
