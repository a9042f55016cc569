// lf-bench-coll: osu-style collective latency through the C API
// (lavaflow_coll.h), with the hardware floor in the same run; its twin
// lf-bench-coll-mpi (coll_mpi_bench.c) measures Open MPI's collectives the
// same way, and scripts/bench-coll.sh runs both side by side.
//
//   mpirun --allow-run-as-root -np 2 --bind-to core lf-bench-coll [--csv]
//          [--samples N] [--max BYTES] [--ops barrier,allreduce,bcast,allgather,allreduce_g]
//
// Rows: barrier (lf_barrier), ibarrier (lf_ibarrier + lf_wait), allreduce
// of 0 bytes (a barrier made of the collectives' messages), then allreduce
// (float32 sum), bcast and allgather (bytes per rank) by size. allreduce_g
// (not in the default --ops) is lf_allreduce_g over a group of every rank,
// listed in reverse: what a group costs next to the world's allreduce.
// Each sample is the mean of `iters` back-to-back calls on rank 0 (iters
// shrinks as the size grows), the figure the median of the samples. The
// floor row ("floor,64") is one 64-byte cache line written by rank 0 and
// read by rank 1 and back (one-way = round trip / 2), through a page both
// ranks map: what any one-way message between these two cores costs at
// least.
#include <fcntl.h>
#include <lavaflow/lavaflow.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#define CHECK(call)                                                                         \
  do {                                                                                      \
    lf_status_t st_ = (call);                                                               \
    if (st_ != LF_OK) {                                                                     \
      std::fprintf(stderr, "%s: %s (%s)\n", #call, lf_status_string(st_), lf_last_error()); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

struct Stats {
  double median, p10, p90;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)]; };
  return {at(0.5), at(0.1), at(0.9)};
}

// The cache-line floor between ranks 0 and 1 (see the top of the file).
double floor_us(lf_context_t ctx, int samples) {
  char name[64] = {};
  if (lf_rank(ctx) == 0) std::snprintf(name, sizeof name, "/lf-bench-coll-%d", static_cast<int>(getpid()));
  CHECK(lf_bcast(ctx, name, sizeof name, 0));
  int fd = lf_rank(ctx) == 0 ? shm_open(name, O_CREAT | O_RDWR | O_EXCL, 0600) : -1;
  if (lf_rank(ctx) == 0 && (fd < 0 || ftruncate(fd, 4096) != 0)) std::exit(1);
  CHECK(lf_barrier(ctx));
  if (lf_rank(ctx) == 1) fd = shm_open(name, O_RDWR, 0600);
  double result = 0;
  if (lf_rank(ctx) <= 1) {
    void *p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) std::exit(1);
    auto *line = static_cast<std::atomic<uint64_t> *>(p);
    CHECK(lf_barrier(ctx));
    const int iters = 10000;
    std::vector<double> v;
    uint64_t seq = 0;
    for (int s = 0; s < samples + 1; ++s) {
      double t0 = now_us();
      for (int i = 0; i < iters; ++i) {
        if (lf_rank(ctx) == 0) {
          line->store(++seq, std::memory_order_release);
          while (line->load(std::memory_order_acquire) != seq + 1) {
          }
          ++seq;
        } else {
          while (line->load(std::memory_order_acquire) != seq + 1) {
          }
          line->store(seq += 2, std::memory_order_release);
        }
      }
      if (s > 0) v.push_back((now_us() - t0) / iters / 2);
    }
    result = stats(v).median;
    munmap(p, 4096);
    close(fd);
  } else {
    CHECK(lf_barrier(ctx));
  }
  CHECK(lf_barrier(ctx));
  if (lf_rank(ctx) == 0) shm_unlink(name);
  return result;
}

}  // namespace

int main(int argc, char **argv) {
  bool csv = false;
  int samples = 21;
  size_t max_bytes = 16u << 20;
  std::string ops = "barrier,allreduce,bcast,allgather";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--csv")
      csv = true;
    else if (a == "--samples" && i + 1 < argc)
      samples = std::max(1, std::atoi(argv[++i]));
    else if (a == "--max" && i + 1 < argc)
      max_bytes = std::strtoull(argv[++i], nullptr, 0);
    else if (a == "--ops" && i + 1 < argc)
      ops = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: lf-bench-coll [--csv] [--samples N] [--max BYTES] "
                   "[--ops barrier,allreduce,bcast,allgather,allreduce_g]\n");
      return 2;
    }
  }
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  const int rank = lf_rank(ctx), size = lf_size(ctx);
  auto wanted = [&](const char *op) {
    return ("," + ops + ",").find(std::string(",") + op + ",") != std::string::npos;
  };
  std::vector<char> a(std::max<size_t>(max_bytes, 8) * static_cast<size_t>(size)),
      b(std::max<size_t>(max_bytes, 8) * static_cast<size_t>(size));
  std::memset(a.data(), 1, a.size());
  std::memset(b.data(), 0, b.size());
  if (rank == 0) {
    if (csv)
      std::printf("op,bytes,median_us,p10_us,p90_us\n");
    else
      std::printf("# lf-bench-coll: %d ranks; us per call on rank 0, median of %d samples\n%-10s %10s %10s %10s %10s\n",
                  size, samples, "op", "bytes", "median_us", "p10_us", "p90_us");
  }
  auto row = [&](const char *op, size_t bytes, const std::vector<double> &v) {
    if (rank != 0) return;
    Stats s = stats(v);
    if (csv)
      std::printf("%s,%zu,%.3f,%.3f,%.3f\n", op, bytes, s.median, s.p10, s.p90);
    else
      std::printf("%-10s %10zu %10.3f %10.3f %10.3f\n", op, bytes, s.median, s.p10, s.p90);
    std::fflush(stdout);
  };
  auto measure = [&](const char *op, size_t bytes, auto &&call) {
    int iters = bytes <= 65536 ? 1000 : bytes <= (1u << 20) ? 50 : 10;
    for (int i = 0; i < iters / 5 + 2; ++i) call();  // warm up
    std::vector<double> v;
    for (int s = 0; s < samples; ++s) {
      CHECK(lf_barrier(ctx));
      double t0 = now_us();
      for (int i = 0; i < iters; ++i) call();
      v.push_back((now_us() - t0) / iters);
    }
    row(op, bytes, v);
  };
  if (size >= 2) {
    double f = floor_us(ctx, samples);
    row("floor", 64, std::vector<double>{f});
  }
  if (wanted("barrier")) {
    // lf_barrier is the bootstrap's barrier (it needs no channels); the
    // collectives' own barrier is the non-blocking one.
    measure("barrier", 0, [&] { CHECK(lf_barrier(ctx)); });
    measure("ibarrier", 0, [&] {
      lf_request_t r;
      CHECK(lf_ibarrier(ctx, &r));
      CHECK(lf_wait(r, nullptr));
    });
    measure("allreduce", 0, [&] { CHECK(lf_allreduce(ctx, a.data(), b.data(), 0, LF_FLOAT32, LF_SUM)); });
  }
  lf_group_t group = nullptr;
  if (wanted("allreduce_g")) {
    std::vector<int> reversed;
    for (int r = size - 1; r >= 0; --r) reversed.push_back(r);
    CHECK(lf_group_create(ctx, reversed.data(), size, &group));
  }
  const size_t sizes[] = {8, 64, 1024, 65536, 1u << 20, 4u << 20, 16u << 20};
  for (size_t bytes : sizes) {
    if (bytes > max_bytes) break;
    if (wanted("allreduce"))
      measure("allreduce", bytes, [&] { CHECK(lf_allreduce(ctx, a.data(), b.data(), bytes / 4, LF_FLOAT32, LF_SUM)); });
    if (wanted("bcast")) measure("bcast", bytes, [&] { CHECK(lf_bcast(ctx, a.data(), bytes, 0)); });
    if (wanted("allgather")) measure("allgather", bytes, [&] { CHECK(lf_allgather(ctx, a.data(), bytes, b.data())); });
    if (group)
      measure("allreduce_g", bytes,
              [&] { CHECK(lf_allreduce_g(group, a.data(), b.data(), bytes / 4, LF_FLOAT32, LF_SUM)); });
  }
  if (group) CHECK(lf_group_free(group));
  CHECK(lf_finalize(ctx));
  return 0;
}
