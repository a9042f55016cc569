// File ingest through the C API, in one process: every byte of every size,
// both engines, O_DIRECT and its fallbacks, a file that shrinks or vanishes
// while read, bad input, the memory-lock limit, cancel, a stalled consumer,
// many small files and concurrent ingests. Children (forked before any
// thread) take the tests that change process-wide state: credentials,
// limits, a seccomp filter.
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <atomic>
#include <thread>

#include "ingest_test_util.hpp"
#include "multiprocess.hpp"

using namespace lftest;

namespace {

constexpr size_t kChunk = 64 * 1024;

// "" when io_uring works here, else why not (the path a probe ingest took):
// a build without liburing, or a kernel or sandbox without io_uring.
std::string no_uring() {
  static const std::string why = [] {
    TempDir dir;
    const std::string f = dir.file("probe");
    write_pattern_file(f, 1);
    lf_ingest_t in;
    if (lf_ingest_open(nullptr, f.c_str(), 0, 0, nullptr, &in) != LF_OK) return std::string(lf_last_error());
    std::string taken = lf_ingest_path_taken(in);
    lf_ingest_close(in);
    return taken.rfind("io_uring", 0) == 0 ? std::string() : taken;
  }();
  return why;
}

#define SKIP_WITHOUT_URING(engine)                                                         \
  do {                                                                                     \
    if (std::string(engine) != "pread" && !no_uring().empty()) GTEST_SKIP() << no_uring(); \
  } while (0)

lf_ingest_params_t params(size_t chunk = kChunk, int qd = 4, int ring = 8, int direct = 0,
                          lf_memory_kind_t kind = LF_MEM_HOST) {
  lf_ingest_params_t p = LF_INGEST_PARAMS_INIT;
  p.kind = kind;
  p.chunk_bytes = chunk;
  p.queue_depth = qd;
  p.ring_chunks = ring;
  p.direct = direct;
  return p;
}

// Open, read to the end checking every byte, close.
Drained read_whole(const std::string &path, const lf_ingest_params_t &p, uint64_t offset = 0, uint64_t length = 0,
                   std::string *path_taken = nullptr) {
  lf_ingest_t in = nullptr;
  Drained d;
  d.status = lf_ingest_open(nullptr, path.c_str(), offset, length, &p, &in);
  if (d.status != LF_OK) {
    d.error = lf_last_error();
    return d;
  }
  if (path_taken) *path_taken = lf_ingest_path_taken(in);
  d = drain_ingest(in, offset);
  EXPECT_EQ(ingest_stats(in).ring_held, 0u) << "every chunk came back";
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
  return d;
}

// ---- every byte, every size, both engines, direct and buffered -------------------

struct SizeCase {
  const char *engine;
  int direct;
};

class IngestSizes : public ::testing::TestWithParam<SizeCase> {};

TEST_P(IngestSizes, EveryByteOfEverySize) {
  SKIP_WITHOUT_URING(GetParam().engine);
  ScopedEnv engine("LF_INGEST_ENGINE", GetParam().engine);
  TempDir dir;
  for (uint64_t size : {uint64_t(0), uint64_t(1), uint64_t(4095), uint64_t(kChunk - 1), uint64_t(kChunk),
                        uint64_t(kChunk + 1), uint64_t(10 * kChunk + 4097)}) {
    SCOPED_TRACE("size " + std::to_string(size));
    const std::string f = dir.file("f" + std::to_string(size));
    write_pattern_file(f, size);
    std::string taken;
    Drained d = read_whole(f, params(kChunk, 4, 8, GetParam().direct), 0, 0, &taken);
    ASSERT_EQ(d.status, LF_OK) << d.error;
    EXPECT_EQ(d.problem, "");
    EXPECT_EQ(d.bytes, size);
    EXPECT_EQ(d.checksum, pattern_checksum(0, size));
    EXPECT_EQ(d.chunks, (size + kChunk - 1) / kChunk);
    EXPECT_NE(taken.find(std::string(GetParam().engine) == "pread" ? "pread thread" : "io_uring"), std::string::npos)
        << taken;
    if (GetParam().direct) {
      EXPECT_NE(taken.find("O_DIRECT"), std::string::npos) << taken;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, IngestSizes,
                         ::testing::Values(SizeCase{"io_uring", 0}, SizeCase{"io_uring", 1}, SizeCase{"pread", 0},
                                           SizeCase{"pread", 1}),
                         [](const auto &param_info) {
                           return std::string(param_info.param.engine == std::string("pread") ? "Pread" : "IoUring") +
                                  (param_info.param.direct ? "Direct" : "Buffered");
                         });

TEST(Ingest, ByteRangeAtOddOffsets) {
  TempDir dir;
  const std::string f = dir.file("range");
  write_pattern_file(f, 3 * kChunk + 123);
  for (auto [off, len] :
       {std::pair<uint64_t, uint64_t>{4097, 100000}, {1, 1}, {kChunk, kChunk}, {3 * kChunk + 122, 0}}) {
    Drained d = read_whole(f, params(), off, len);
    ASSERT_EQ(d.status, LF_OK) << d.error;
    EXPECT_EQ(d.problem, "");
    const uint64_t want = len ? len : 3 * kChunk + 123 - off;
    EXPECT_EQ(d.bytes, want);
    EXPECT_EQ(d.checksum, pattern_checksum(off, want));
  }
}

TEST(Ingest, SparseFileOfOneGiB) {
  // 1 GiB of holes with three pattern islands: the start, an island that
  // straddles a chunk boundary, and the last bytes.
  TempDir dir;
  const std::string f = dir.file("sparse");
  const uint64_t size = uint64_t(1) << 30;
  int fd = ::open(f.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  const std::pair<uint64_t, size_t> islands[] = {{0, 4096}, {(uint64_t(512) << 20) - 1000, 5000}, {size - 777, 777}};
  std::vector<uint8_t> buf(8192);
  for (auto [off, len] : islands) {
    fill_pattern(buf.data(), len, off);
    ASSERT_EQ(::pwrite(fd, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
  }
  ::close(fd);
  auto expected = [&](uint64_t off) -> uint8_t {
    for (auto [o, l] : islands)
      if (off >= o && off < o + l) return pattern_byte(off);
    return 0;
  };
  lf_ingest_params_t p = params(size_t(1) << 20, 8, 16);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  // Every byte is compared: chunks with an island byte by byte, the rest
  // against zeros (memcmp: 1 GiB must stay quick).
  const std::vector<uint8_t> zeros(size_t(1) << 20, 0);
  uint64_t total = 0;
  std::string problem;
  for (;;) {
    lf_buffer_t c;
    uint64_t off;
    ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK) << lf_last_error();
    if (!c) break;
    const auto *b = static_cast<const uint8_t *>(lf_buffer_data(c));
    const size_t n = lf_buffer_size(c);
    if (off != total && problem.empty()) problem = "out of order at " + std::to_string(off);
    bool island = false;
    for (auto [o, l] : islands) island |= o < off + n && off < o + l;
    if (island) {
      for (size_t i = 0; i < n; ++i)
        if (b[i] != expected(off + i) && problem.empty()) problem = "wrong byte at " + std::to_string(off + i);
    } else if (n > zeros.size() || std::memcmp(b, zeros.data(), n) != 0) {
      if (problem.empty()) problem = "non-zero byte in the hole at chunk " + std::to_string(off);
    }
    total += n;
    lf_free(c);
  }
  EXPECT_EQ(problem, "");
  EXPECT_EQ(total, size);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

TEST(Ingest, MemoryKinds) {
  TempDir dir;
  const std::string f = dir.file("kinds");
  write_pattern_file(f, 5 * kChunk + 3);
  for (lf_memory_kind_t k :
       {LF_MEM_HOST, LF_MEM_HOST_PINNED, LF_MEM_HOST_SHARED, LF_MEM_HOST_HUGEPAGE, LF_MEM_HOST_NUMA}) {
    SCOPED_TRACE(lf_memory_kind_string(k));
    lf_ingest_params_t p = params(kChunk, 4, 8, 0, k);
    lf_ingest_t in;
    ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
    lf_buffer_t c;
    uint64_t off;
    ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK) << lf_last_error();
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(lf_buffer_requested_kind(c), k);
    if (lf_buffer_kind(c) != k) {
      EXPECT_STRNE(lf_buffer_fallback_reason(c), "");
    }
    EXPECT_EQ(pattern_mismatch(lf_buffer_data(c), lf_buffer_size(c), off), SIZE_MAX);
    lf_free(c);
    Drained d = drain_ingest(in, kChunk);
    EXPECT_EQ(d.status, LF_OK) << d.error;
    EXPECT_EQ(d.problem, "");
    EXPECT_EQ(d.bytes, 4 * kChunk + 3);
    EXPECT_EQ(lf_ingest_close(in), LF_OK);
  }
}

TEST(Ingest, DeviceKindsNeedTheirDevice) {
  // CUDA chunks are staged through pinned memory where a GPU is present;
  // without one, open says why. Probed in a child: no CUDA context here.
  TempDir dir;
  const std::string f = dir.file("cuda");
  write_pattern_file(f, 3 * kChunk);
  std::string out = probe_in_child([&]() -> std::string {
    lf_ingest_params_t p = params(kChunk, 2, 4, 0, LF_MEM_CUDA_DEVICE);
    lf_ingest_t in;
    lf_status_t st = lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in);
    if (st == LF_ERR_UNAVAILABLE) return std::string("unavailable: ") + lf_last_error();
    if (st != LF_OK) return std::string("FAIL open: ") + lf_last_error();
    uint64_t bytes = 0;
    for (;;) {
      lf_buffer_t c;
      uint64_t off;
      if (lf_ingest_next(in, &c, &off, -1) != LF_OK) return std::string("FAIL next: ") + lf_last_error();
      if (!c) break;
      if (lf_buffer_kind(c) != LF_MEM_CUDA_DEVICE) return "FAIL: chunk is not CUDA memory";
      bytes += lf_buffer_size(c);
      lf_free(c);
    }
    lf_ingest_close(in);
    return bytes == 3 * kChunk ? "ok" : "FAIL: short";
  });
  EXPECT_EQ(out.find("FAIL"), std::string::npos) << out;
  if (out.rfind("unavailable: ", 0) == 0) {
    EXPECT_NE(out.find("staged through pinned memory"), std::string::npos) << out;
    std::printf("[ info ] without a GPU: %s\n", out.c_str());
  }
}

// ---- O_DIRECT and its fallbacks ---------------------------------------------------

TEST(Ingest, DirectOnExt4) {
  TempDir disk;
  const std::string f = disk.file("direct");
  write_pattern_file(f, 7 * kChunk + 5);
  std::string taken;
  Drained r = read_whole(f, params(kChunk, 4, 8, 1), 0, 0, &taken);
  ASSERT_EQ(r.status, LF_OK) << r.error;
  EXPECT_EQ(r.problem, "");
  EXPECT_EQ(r.bytes, 7 * kChunk + 5);
  std::printf("[ info ] %s: %s\n", disk.path().c_str(), taken.c_str());
  // An unaligned offset cannot be read with O_DIRECT: buffered, and why.
  r = read_whole(f, params(kChunk, 4, 8, 1), 100, 0, &taken);
  ASSERT_EQ(r.status, LF_OK) << r.error;
  EXPECT_EQ(r.problem, "");
  EXPECT_EQ(r.bytes, 7 * kChunk + 5 - 100);
  EXPECT_NE(taken.find("O_DIRECT needs an offset aligned to 4096"), std::string::npos) << taken;
}

TEST(Ingest, DirectRefusedByTheFilesystemGivesBufferedReads) {
  // ramfs has no direct I/O (tmpfs has it since Linux 6.6). Mounted in a
  // child's own mount namespace, so nothing outside sees it.
  TempDir dir;
  std::string out = probe_in_child([&]() -> std::string {
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("lf-ingest-test", dir.path().c_str(), "ramfs", 0, nullptr) != 0)
      return std::string("skip: cannot mount ramfs here: ") + std::strerror(errno);
    const std::string f = dir.file("ram");
    int fd = ::open(f.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<uint8_t> buf(3 * kChunk + 1);
    fill_pattern(buf.data(), buf.size(), 0);
    if (fd < 0 || ::write(fd, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) return "FAIL: write";
    ::close(fd);
    lf_ingest_params_t p = params(kChunk, 4, 8, 1);
    lf_ingest_t in;
    if (lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in) != LF_OK) return std::string("FAIL open: ") + lf_last_error();
    std::string taken = lf_ingest_path_taken(in);
    Drained d = drain_ingest(in, 0);
    lf_ingest_close(in);
    if (d.status != LF_OK || !d.problem.empty() || d.bytes != buf.size()) return "FAIL read: " + d.error + d.problem;
    return taken;
  });
  if (out.rfind("skip", 0) == 0) GTEST_SKIP() << out;
  EXPECT_EQ(out.find("FAIL"), std::string::npos) << out;
  EXPECT_NE(out.find("buffered (O_DIRECT not used: the filesystem refuses O_DIRECT (open: Invalid argument))"),
            std::string::npos)
      << out;
  std::printf("[ info ] ramfs: %s\n", out.c_str());
}

TEST(Ingest, ReadsSplitAtTheLargestIo) {
  // LF_INGEST_MAX_IO stands in for the kernel's 1 GiB cap: every chunk is
  // read in pieces, each registered piece no larger than the cap.
  ScopedEnv max_io("LF_INGEST_MAX_IO", "16K");
  TempDir dir;
  const std::string f = dir.file("pieces");
  write_pattern_file(f, 9 * kChunk + 1000);
  for (int direct : {0, 1}) {
    lf_ingest_params_t p = params(kChunk, 4, 8, direct);
    lf_ingest_t in;
    ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
    Drained d = drain_ingest(in, 0);
    EXPECT_EQ(d.status, LF_OK) << d.error;
    EXPECT_EQ(d.problem, "");
    EXPECT_EQ(d.bytes, 9 * kChunk + 1000);
    lf_ingest_stats_t s = ingest_stats(in);
    EXPECT_GE(s.reads, 9 * 4u + 1);
    EXPECT_GE(s.rereads, 9 * 3u);
    EXPECT_EQ(lf_ingest_close(in), LF_OK);
  }
}

TEST(Ingest, RegisteredBuffersAreReadFixed) {
  TempDir dir;
  const std::string f = dir.file("fixed");
  write_pattern_file(f, 20 * kChunk);
  lf_ingest_params_t p = params(kChunk, 4, 8);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  const std::string taken = lf_ingest_path_taken(in);
  Drained d = drain_ingest(in, 0);
  EXPECT_EQ(d.status, LF_OK) << d.error;
  lf_ingest_stats_t s = ingest_stats(in);
  if (taken.find("registered buffers") != std::string::npos) {
    EXPECT_EQ(s.fixed_reads, s.reads) << "the pool's free list gives back the registered blocks";
  } else {
    std::printf("[ info ] not registered here: %s\n", taken.c_str());
  }
  EXPECT_LE(s.ring_high_water, 8u);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

// ---- files that change underneath ------------------------------------------------

TEST(Ingest, FileTruncatedWhileReading) {
  for (const char *engine : {"io_uring", "pread"}) {
    if (std::string(engine) == "io_uring" && !no_uring().empty()) continue;
    SCOPED_TRACE(engine);
    ScopedEnv e("LF_INGEST_ENGINE", engine);
    TempDir dir;
    const std::string f = dir.file("shrinks");
    write_pattern_file(f, 64 * kChunk);
    lf_ingest_params_t p = params(kChunk, 2, 4);
    lf_ingest_t in;
    ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
    lf_buffer_t c;
    uint64_t off;
    ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK);
    ASSERT_NE(c, nullptr);
    lf_free(c);
    const uint64_t new_size = 8 * kChunk + 100;
    ASSERT_EQ(truncate(f.c_str(), static_cast<off_t>(new_size)), 0);
    Drained d = drain_ingest(in, kChunk);
    EXPECT_EQ(d.status, LF_ERR_IO);
    EXPECT_NE(d.error.find("shrank"), std::string::npos) << d.error;
    EXPECT_EQ(d.problem, "") << "every chunk delivered before the error is whole and correct";
    EXPECT_GE(kChunk + d.bytes, new_size);
    // The error stays; the handle still closes cleanly.
    ASSERT_EQ(lf_ingest_next(in, &c, &off, 0), LF_ERR_IO);
    EXPECT_EQ(ingest_stats(in).ring_held, 0u);
    EXPECT_EQ(lf_ingest_close(in), LF_OK);
  }
}

TEST(Ingest, FileUnlinkedWhileOpen) {
  TempDir dir;
  const std::string f = dir.file("gone");
  write_pattern_file(f, 13 * kChunk + 7);
  lf_ingest_params_t p = params(kChunk, 4, 8);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  ASSERT_EQ(unlink(f.c_str()), 0);
  Drained d = drain_ingest(in, 0);
  EXPECT_EQ(d.status, LF_OK) << d.error;
  EXPECT_EQ(d.problem, "");
  EXPECT_EQ(d.bytes, 13 * kChunk + 7);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

// ---- bad input ---------------------------------------------------------------------

TEST(Ingest, ClearErrors) {
  TempDir dir;
  lf_ingest_t in = nullptr;
  lf_ingest_params_t p = params();
  EXPECT_EQ(lf_ingest_open(nullptr, dir.path().c_str(), 0, 0, &p, &in), LF_ERR_INVALID_ARG);
  EXPECT_NE(std::string(lf_last_error()).find("is a directory"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_ingest_open(nullptr, dir.file("none").c_str(), 0, 0, &p, &in), LF_ERR_NOT_FOUND);
  EXPECT_NE(std::string(lf_last_error()).find("No such file"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_ingest_open_fd(nullptr, 987, 0, 0, &p, &in), LF_ERR_INVALID_ARG);
  EXPECT_NE(std::string(lf_last_error()).find("Bad file descriptor"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_ingest_open_fd(nullptr, -1, 0, 0, &p, &in), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_ingest_open(nullptr, "/dev/null", 0, 0, &p, &in), LF_ERR_INVALID_ARG);
  EXPECT_NE(std::string(lf_last_error()).find("not a regular file"), std::string::npos) << lf_last_error();
  EXPECT_EQ(in, nullptr) << "out is written only on success";

  const std::string f = dir.file("small");
  write_pattern_file(f, 1000);
  EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 1001, 0, &p, &in), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 10, 991, &p, &in), LF_ERR_INVALID_ARG);
  EXPECT_NE(std::string(lf_last_error()).find("past the end"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_ingest_open(nullptr, nullptr, 0, 0, &p, &in), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, nullptr), LF_ERR_INVALID_ARG);
  lf_ingest_params_t bad = p;
  bad.size = 1;
  EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &bad, &in), LF_ERR_INVALID_ARG);
  bad = p;
  bad.kind = static_cast<lf_memory_kind_t>(42);
  EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &bad, &in), LF_ERR_INVALID_ARG);
  bad = p;
  bad.queue_depth = -1;
  EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &bad, &in), LF_ERR_INVALID_ARG);
  bad = p;
  bad.direct = 7;
  EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &bad, &in), LF_ERR_INVALID_ARG);
  {
    ScopedEnv e("LF_INGEST_ENGINE", "carrier-pigeon");
    EXPECT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_ERR_INVALID_ARG);
    EXPECT_NE(std::string(lf_last_error()).find("LF_INGEST_ENGINE"), std::string::npos) << lf_last_error();
  }

  // Handles: NULL, closed, and another type's handle.
  lf_buffer_t c;
  EXPECT_EQ(lf_ingest_next(nullptr, &c, nullptr, 0), LF_ERR_INVALID_ARG);
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, nullptr, &in), LF_OK) << lf_last_error();
  EXPECT_EQ(lf_ingest_next(in, nullptr, nullptr, 0), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
  EXPECT_EQ(lf_ingest_close(in), LF_ERR_CLOSED);
  EXPECT_EQ(lf_ingest_next(in, &c, nullptr, 0), LF_ERR_CLOSED);
  EXPECT_EQ(lf_ingest_cancel(in), LF_ERR_CLOSED);
  EXPECT_EQ(lf_ingest_path_taken(in), nullptr);
  lf_buffer_t b;
  ASSERT_EQ(lf_alloc(nullptr, 64, LF_MEM_HOST, &b), LF_OK);
  EXPECT_EQ(lf_ingest_close(reinterpret_cast<lf_ingest_t>(b)), LF_ERR_CLOSED);
  EXPECT_EQ(lf_free(b), LF_OK);
}

TEST(Ingest, NoPermissionIsAClearError) {
  TempDir dir;
  const std::string f = dir.file("secret");
  write_pattern_file(f, 100);
  ASSERT_EQ(chmod(f.c_str(), 0600), 0);
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  std::string out = probe_in_child([&]() -> std::string {
    if (geteuid() == 0 && setuid(65534) != 0) return "skip: cannot become nobody";
    lf_ingest_t in;
    lf_status_t st = lf_ingest_open(nullptr, f.c_str(), 0, 0, nullptr, &in);
    if (st != LF_ERR_IO) return "FAIL: status " + std::to_string(st) + ": " + lf_last_error();
    return lf_last_error();
  });
  if (out.rfind("skip", 0) == 0) GTEST_SKIP() << out;
  EXPECT_EQ(out.find("FAIL"), std::string::npos) << out;
  EXPECT_NE(out.find("Permission denied"), std::string::npos) << out;
}

// ---- fallbacks that say why ------------------------------------------------------

// Drop CAP_IPC_LOCK (root bypasses the memory-lock limit with it), as an
// unprivileged user runs.
bool drop_ipc_lock() {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  if (syscall(SYS_capget, &h, d) != 0) return false;
  d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
  d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
  return syscall(SYS_capset, &h, d) == 0;
}

TEST(Ingest, MemlockOf64KGivesUnregisteredReads) {
  SKIP_WITHOUT_URING("io_uring");
  TempDir dir;
  const std::string f = dir.file("memlock");
  write_pattern_file(f, 10 * (size_t(1) << 20) + 3);
  std::string out = probe_in_child([&]() -> std::string {
    if (!drop_ipc_lock()) return "FAIL: capset";
    rlimit rl{64 * 1024, 64 * 1024};
    if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0) return "FAIL: setrlimit";
    lf_ingest_params_t p = params(size_t(1) << 20, 8, 16);
    lf_ingest_t in;
    if (lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in) != LF_OK) return std::string("FAIL open: ") + lf_last_error();
    std::string taken = lf_ingest_path_taken(in);
    Drained d = drain_ingest(in, 0);
    lf_ingest_stats_t s = ingest_stats(in);
    lf_ingest_close(in);
    if (d.status != LF_OK) return "FAIL read: " + d.error;
    if (!d.problem.empty()) return "FAIL data: " + d.problem;
    if (d.bytes != 10 * (size_t(1) << 20) + 3) return "FAIL: short";
    if (s.fixed_reads != 0) return "FAIL: fixed reads without a registration";
    return taken;
  });
  EXPECT_EQ(out.find("FAIL"), std::string::npos) << out;
  EXPECT_NE(out.find("io_uring, unregistered reads (registering 16 MiB of chunk buffers failed"), std::string::npos)
      << out;
  EXPECT_NE(out.find("RLIMIT_MEMLOCK is 64 KiB"), std::string::npos) << out;
  std::printf("[ info ] memlock 64K: %s\n", out.c_str());
}

TEST(Ingest, NoIoUringGivesAPreadThread) {
  SKIP_WITHOUT_URING("io_uring");  // without it every ingest is this test
  // A seccomp filter answers io_uring_setup with ENOSYS, as an old kernel
  // or a container's profile does.
  TempDir dir;
  const std::string f = dir.file("seccomp");
  write_pattern_file(f, 5 * kChunk + 9);
  std::string out = probe_in_child([&]() -> std::string {
    sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog fp{static_cast<unsigned short>(sizeof prog / sizeof prog[0]), prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp) != 0)
      return "FAIL: seccomp";
    lf_ingest_params_t p = params();
    lf_ingest_t in;
    if (lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in) != LF_OK) return std::string("FAIL open: ") + lf_last_error();
    std::string taken = lf_ingest_path_taken(in);
    Drained d = drain_ingest(in, 0);
    lf_ingest_close(in);
    if (d.status != LF_OK) return "FAIL read: " + d.error;
    if (!d.problem.empty() || d.bytes != 5 * kChunk + 9) return "FAIL data: " + d.problem;
    setenv("LF_INGEST_ENGINE", "io_uring", 1);
    if (lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in) != LF_ERR_UNAVAILABLE)
      return "FAIL: LF_INGEST_ENGINE=io_uring did not fail without io_uring";
    return taken;
  });
  EXPECT_EQ(out.find("FAIL"), std::string::npos) << out;
  EXPECT_NE(out.find("pread thread (io_uring unavailable: io_uring_queue_init: Function not implemented)"),
            std::string::npos)
      << out;
}

// ---- cancel, a stalled consumer ------------------------------------------------------

class IngestEngines : public ::testing::TestWithParam<const char *> {};

TEST_P(IngestEngines, CancelMidIngestReturnsEveryChunk) {
  SKIP_WITHOUT_URING(GetParam());
  ScopedEnv e("LF_INGEST_ENGINE", GetParam());
  TempDir dir;
  const std::string f = dir.file("cancel");
  write_pattern_file(f, 64 * kChunk);
  lf_ingest_params_t p = params(kChunk, 4, 8);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  lf_buffer_t held = nullptr, c;
  uint64_t off;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK);
    ASSERT_EQ(off, i * kChunk);
    if (i == 1)
      held = c;
    else
      lf_free(c);
  }
  ASSERT_EQ(lf_ingest_cancel(in), LF_OK);
  // Every read in flight was collected: only the chunk we hold is out.
  EXPECT_EQ(ingest_stats(in).ring_held, 1u);
  EXPECT_EQ(lf_ingest_next(in, &c, &off, -1), LF_ERR_CANCELLED);
  EXPECT_EQ(pattern_mismatch(lf_buffer_data(held), lf_buffer_size(held), kChunk), SIZE_MAX);
  lf_free(held);
  EXPECT_EQ(ingest_stats(in).ring_held, 0u);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

TEST_P(IngestEngines, CancelFromAnotherThreadWakesAWaiter) {
  SKIP_WITHOUT_URING(GetParam());
  ScopedEnv e("LF_INGEST_ENGINE", GetParam());
  TempDir dir;
  const std::string f = dir.file("cancel2");
  write_pattern_file(f, 16 * kChunk);
  lf_ingest_params_t p = params(kChunk, 2, 2);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  lf_buffer_t a, b, c;
  ASSERT_EQ(lf_ingest_next(in, &a, nullptr, -1), LF_OK);
  ASSERT_EQ(lf_ingest_next(in, &b, nullptr, -1), LF_OK);
  // The ring is full (we hold both): the next call waits until cancelled.
  std::atomic<bool> entered{false};
  std::thread canceller([&] {
    while (!entered.load()) std::this_thread::yield();
    EXPECT_EQ(lf_ingest_cancel(in), LF_OK);
  });
  entered.store(true);
  EXPECT_EQ(lf_ingest_next(in, &c, nullptr, -1), LF_ERR_CANCELLED);
  canceller.join();
  lf_free(a);
  lf_free(b);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

TEST_P(IngestEngines, StalledConsumerStaysBounded) {
  SKIP_WITHOUT_URING(GetParam());
  ScopedEnv e("LF_INGEST_ENGINE", GetParam());
  TempDir dir;
  const std::string f = dir.file("stall");
  write_pattern_file(f, 32 * kChunk);
  lf_ingest_params_t p = params(kChunk, 4, 4);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  std::vector<lf_buffer_t> held;
  for (int i = 0; i < 4; ++i) {
    lf_buffer_t c;
    ASSERT_EQ(lf_ingest_next(in, &c, nullptr, -1), LF_OK);
    held.push_back(c);
  }
  // Holding the whole ring: nothing more is read, however often we ask.
  lf_buffer_t c;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lf_ingest_next(in, &c, nullptr, i), LF_ERR_TIMEOUT);
  EXPECT_NE(std::string(lf_last_error()).find("held"), std::string::npos) << lf_last_error();
  lf_ingest_stats_t s = ingest_stats(in);
  EXPECT_EQ(s.ring_held, 4u);
  EXPECT_EQ(s.ring_high_water, 4u);
  EXPECT_EQ(s.chunks, 4u);
  // Free one: exactly one more chunk can come.
  lf_free(held.front());
  held.erase(held.begin());
  uint64_t off;
  ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK);
  EXPECT_EQ(off, 4 * kChunk);
  EXPECT_EQ(pattern_mismatch(lf_buffer_data(c), lf_buffer_size(c), off), SIZE_MAX);
  held.push_back(c);
  for (lf_buffer_t h : held) lf_free(h);
  Drained d = drain_ingest(in, 5 * kChunk);
  EXPECT_EQ(d.status, LF_OK) << d.error;
  EXPECT_EQ(d.problem, "");
  EXPECT_LE(ingest_stats(in).ring_high_water, 4u);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

TEST_P(IngestEngines, ChunksFreedAfterCloseStayValid) {
  SKIP_WITHOUT_URING(GetParam());
  ScopedEnv e("LF_INGEST_ENGINE", GetParam());
  TempDir dir;
  const std::string f = dir.file("late");
  write_pattern_file(f, 8 * kChunk);
  lf_ingest_params_t p = params(kChunk, 2, 4);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
  lf_buffer_t c;
  uint64_t off;
  ASSERT_EQ(lf_ingest_next(in, &c, &off, -1), LF_OK);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
  EXPECT_EQ(pattern_mismatch(lf_buffer_data(c), lf_buffer_size(c), off), SIZE_MAX);
  EXPECT_EQ(lf_free(c), LF_OK);
}

INSTANTIATE_TEST_SUITE_P(Engines, IngestEngines, ::testing::Values("io_uring", "pread"), [](const auto &param_info) {
  return std::string(param_info.param) == "pread" ? "Pread" : "IoUring";
});

// ---- many files, several ingests ---------------------------------------------------

TEST(Ingest, TenThousandSmallFiles) {
  TempDir dir;
  constexpr int kFiles = 10000;
  std::vector<uint8_t> buf(8192);
  for (int i = 0; i < kFiles; ++i) {
    const size_t n = static_cast<size_t>(i * 37 % 8192);
    fill_pattern(buf.data(), n, 0);
    int fd = ::open(dir.file(std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, buf.data(), n), static_cast<ssize_t>(n));
    ::close(fd);
  }
  lf_ingest_params_t p = params(16 * 1024, 1, 1);
  uint64_t total = 0, want = 0;
  for (int i = 0; i < kFiles; ++i) {
    const size_t n = static_cast<size_t>(i * 37 % 8192);
    lf_ingest_t in;
    ASSERT_EQ(lf_ingest_open(nullptr, dir.file(std::to_string(i)).c_str(), 0, 0, &p, &in), LF_OK) << lf_last_error();
    Drained d = drain_ingest(in, 0);
    ASSERT_EQ(d.status, LF_OK) << d.error;
    ASSERT_EQ(d.problem, "") << "file " << i;
    ASSERT_EQ(d.bytes, n);
    ASSERT_EQ(lf_ingest_close(in), LF_OK);
    total += d.bytes;
    want += n;
  }
  EXPECT_EQ(total, want);
}

TEST(Ingest, TwoIngestsAtOnce) {
  TempDir dir;
  const std::string a = dir.file("a"), b = dir.file("b");
  write_pattern_file(a, 40 * kChunk + 11);
  write_pattern_file(b, 33 * kChunk + 5);
  // Two threads, one ingest each.
  Drained da, db;
  {
    std::thread ta([&] { da = read_whole(a, params(kChunk, 4, 8)); });
    std::thread tb([&] { db = read_whole(b, params(kChunk, 2, 3, 1)); });
    ta.join();
    tb.join();
  }
  EXPECT_EQ(da.status, LF_OK) << da.error;
  EXPECT_EQ(db.status, LF_OK) << db.error;
  EXPECT_EQ(da.problem, "");
  EXPECT_EQ(db.problem, "");
  EXPECT_EQ(da.checksum, pattern_checksum(0, 40 * kChunk + 11));
  EXPECT_EQ(db.checksum, pattern_checksum(0, 33 * kChunk + 5));
  // One thread, two ingests interleaved chunk by chunk.
  lf_ingest_t ia, ib;
  lf_ingest_params_t p = params(kChunk, 4, 8);
  ASSERT_EQ(lf_ingest_open(nullptr, a.c_str(), 0, 0, &p, &ia), LF_OK);
  ASSERT_EQ(lf_ingest_open(nullptr, b.c_str(), 0, 0, &p, &ib), LF_OK);
  uint64_t got[2] = {0, 0};
  bool end[2] = {false, false};
  while (!end[0] || !end[1]) {
    for (int k = 0; k < 2; ++k) {
      if (end[k]) continue;
      lf_buffer_t c;
      uint64_t off;
      ASSERT_EQ(lf_ingest_next(k ? ib : ia, &c, &off, -1), LF_OK);
      if (!c) {
        end[k] = true;
        continue;
      }
      EXPECT_EQ(off, got[k]);
      EXPECT_EQ(pattern_mismatch(lf_buffer_data(c), lf_buffer_size(c), off), SIZE_MAX);
      got[k] += lf_buffer_size(c);
      lf_free(c);
    }
  }
  EXPECT_EQ(got[0], 40 * kChunk + 11);
  EXPECT_EQ(got[1], 33 * kChunk + 5);
  EXPECT_EQ(lf_ingest_close(ia), LF_OK);
  EXPECT_EQ(lf_ingest_close(ib), LF_OK);
}

TEST(Ingest, OneIngestRefusesASecondReader) {
  TempDir dir;
  const std::string f = dir.file("busy");
  write_pattern_file(f, 4 * kChunk);
  lf_ingest_params_t p = params(kChunk, 1, 1);
  lf_ingest_t in;
  ASSERT_EQ(lf_ingest_open(nullptr, f.c_str(), 0, 0, &p, &in), LF_OK);
  lf_buffer_t held, c;
  ASSERT_EQ(lf_ingest_next(in, &held, nullptr, -1), LF_OK);
  // The first thread waits in next (ring full); a second is refused, not queued.
  std::atomic<int> first{1};
  std::thread t([&] {
    lf_status_t st;
    do st = lf_ingest_next(in, &c, nullptr, -1);  // refused while the main thread looks in
    while (st == LF_ERR_INVALID_ARG);
    first = st;
  });
  lf_status_t second = LF_OK;
  for (;;) {
    lf_buffer_t x = nullptr;
    second = lf_ingest_next(in, &x, nullptr, 0);
    if (second == LF_ERR_INVALID_ARG) break;  // the other thread is in
    ASSERT_EQ(second, LF_ERR_TIMEOUT);
    std::this_thread::yield();
  }
  EXPECT_NE(std::string(lf_last_error()).find("another thread"), std::string::npos);
  lf_free(held);
  t.join();
  EXPECT_EQ(first.load(), LF_OK);
  lf_free(c);
  EXPECT_EQ(lf_ingest_close(in), LF_OK);
}

}  // namespace
