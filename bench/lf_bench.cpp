// lf-bench: ping-pong latency, windowed bandwidth and zero-copy latency
// between two ranks over one lavaflow channel, through the public C API
// (what an application sees). The patterns are those of bench_common.h, which
// lf-bench-mpi shares so that scripts/bench-compare.sh compares like for like.
//
//   mpirun -np 2 --bind-to core -x LF_TRANSPORTS=shm ./lf-bench
//   ./lf-bench --fork --bind                     (starts rank 1 itself)
//   LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/b.sock ./lf-bench & (and rank 1)
#include <lavaflow/lavaflow.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.h"

namespace {

#define CHECK(call)                                                                                          \
  do {                                                                                                       \
    lf_status_t st_ = (call);                                                                                \
    if (st_ < 0) {                                                                                           \
      std::fprintf(stderr, "lf-bench: %s failed: %s (%s)\n", #call, lf_status_string(st_), lf_last_error()); \
      std::exit(1);                                                                                          \
    }                                                                                                        \
  } while (0)

constexpr uint64_t kTag = 1, kAckTag = 2;

struct Bench {
  bench_opts o;
  lf_context_t ctx;
  lf_channel_t ch;
  int rank;
  std::vector<char> buf;
  std::vector<lf_request_t> reqs;
};

void latency(Bench &b, size_t n) {
  const int iters = bench_iters_latency(n, b.o.scale);
  double v[BENCH_MAX_SAMPLES];
  char *p = b.buf.data();
  for (int s = -2; s < b.o.samples; ++s) {  // two warm-up samples
    double t0 = bench_now_us();
    for (int i = 0; i < iters; ++i) {
      if (b.rank == 0) {
        CHECK(lf_send(b.ch, p, n, kTag));
        CHECK(lf_recv(b.ch, p, n, kTag, nullptr));
      } else {
        CHECK(lf_recv(b.ch, p, n, kTag, nullptr));
        CHECK(lf_send(b.ch, p, n, kTag));
      }
    }
    if (s >= 0) v[s] = (bench_now_us() - t0) / iters / 2;
  }
  if (b.rank == 0) bench_row(&b.o, "latency", n, v, b.o.samples, static_cast<double>(n));
}

void bandwidth(Bench &b, size_t n) {
  const int iters = bench_iters_bw(n, b.o.scale), w = b.o.window;
  double v[BENCH_MAX_SAMPLES];
  // Each request of a window has its own buffer region only on the receiver
  // in osu_bw; both sides reuse one buffer here, as osu_bw does for sends.
  char *p = b.buf.data();
  for (int s = -1; s < b.o.samples; ++s) {
    double t0 = bench_now_us();
    for (int i = 0; i < iters; ++i) {
      for (int k = 0; k < w; ++k) {
        if (b.rank == 0)
          CHECK(lf_isend(b.ch, p, n, kTag, &b.reqs[static_cast<size_t>(k)]));
        else
          CHECK(lf_irecv(b.ch, p, n, kTag, &b.reqs[static_cast<size_t>(k)]));
      }
      for (int k = 0; k < w; ++k) CHECK(lf_wait(b.reqs[static_cast<size_t>(k)], nullptr));
    }
    char ack = 0;
    if (b.rank == 0)
      CHECK(lf_recv(b.ch, &ack, 1, kAckTag, nullptr));
    else
      CHECK(lf_send(b.ch, &ack, 1, kAckTag));
    if (s >= 0) v[s] = (bench_now_us() - t0) / iters;
  }
  if (b.rank == 0) bench_row(&b.o, "bw", n, v, b.o.samples, static_cast<double>(n) * w);
}

void zero_copy(Bench &b, lf_pool_t pool, size_t n) {
  const int iters = bench_iters_latency(n < 4096 ? n : 4096, b.o.scale);  // flat with size: same count
  double v[BENCH_MAX_SAMPLES];
  auto send_one = [&] {
    lf_buffer_t out;
    CHECK(lf_pool_acquire(pool, n, &out));
    lf_request_t r;
    CHECK(lf_isend_buffer(b.ch, out, kTag, &r));
    CHECK(lf_wait(r, nullptr));
  };
  auto recv_one = [&] {
    lf_request_t r;
    CHECK(lf_irecv_buffer(b.ch, kTag, &r));
    lf_buffer_t in;
    CHECK(lf_wait_buffer(r, &in, nullptr));
    CHECK(lf_free(in));  // back to the sender's pool
  };
  for (int s = -2; s < b.o.samples; ++s) {
    double t0 = bench_now_us();
    for (int i = 0; i < iters; ++i) {
      if (b.rank == 0) {
        send_one();
        recv_one();
      } else {
        recv_one();
        send_one();
      }
    }
    if (s >= 0) v[s] = (bench_now_us() - t0) / iters / 2;
  }
  if (b.rank == 0) bench_row(&b.o, "zc", n, v, b.o.samples, static_cast<double>(n));
}

void bind_to(int rank) {
  cpu_set_t all;
  if (sched_getaffinity(0, sizeof all, &all) != 0) return;
  int count = CPU_COUNT(&all), want = rank % (count ? count : 1);
  for (int c = 0, seen = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &all)) continue;
    if (seen++ == want) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(c, &one);
      sched_setaffinity(0, sizeof one, &one);
      return;
    }
  }
}

}  // namespace

int main(int argc, char **argv) {
  Bench b{};
  if (bench_parse(argc, argv, &b.o, 1) != 0) return 2;

  pid_t child = -1;
  if (b.o.fork_ranks) {
    // Standalone: become a world of two. Fork before lavaflow starts any thread.
    std::string addr = "unix:/tmp/lf-bench-" + std::to_string(getpid()) + ".sock";
    setenv("LF_BOOTSTRAP", addr.c_str(), 1);
    setenv("LF_SIZE", "2", 1);
    setenv("LF_BOOTSTRAP_MODE", "env", 1);
    bench_job_key();
    child = fork();
    if (child < 0) {
      std::perror("fork");
      return 1;
    }
    setenv("LF_RANK", child == 0 ? "1" : "0", 1);
  }

  CHECK(lf_init(&b.ctx));
  b.rank = lf_rank(b.ctx);
  if (lf_size(b.ctx) != 2) {
    std::fprintf(stderr, "lf-bench needs exactly 2 ranks (got %d); use mpirun -np 2, --fork or LF_RANK/LF_SIZE\n",
                 lf_size(b.ctx));
    return 2;
  }
  if (b.o.bind) bind_to(b.rank);
  CHECK(lf_channel_open(b.ctx, 1 - b.rank, &b.ch));
  b.buf.assign(b.o.max_size ? b.o.max_size : 1, 1);
  b.reqs.resize(static_cast<size_t>(b.o.window));

  if (b.rank == 0) {
    const char *tl = std::getenv("LF_TRANSPORTS");
    std::printf("# lf-bench %s: transport %s (%s); LF_TRANSPORTS=%s\n", lf_version(), lf_channel_transport(b.ch),
                lf_channel_reason(b.ch), tl ? tl : "");
    bench_header(&b.o);
  }
  for (size_t n = b.o.min_size; n <= b.o.max_size; n *= 2)
    if (b.o.latency) latency(b, n);
  for (size_t n = b.o.min_size; n <= b.o.max_size; n *= 2)
    if (b.o.bw) bandwidth(b, n);
  if (b.o.zc) {
    lf_pool_t pool;
    CHECK(lf_shared_pool(b.ctx, &pool));
    for (size_t n = b.o.min_size; n <= b.o.max_size; n *= 2) zero_copy(b, pool, n);
  }

  CHECK(lf_channel_close(b.ch));
  CHECK(lf_finalize(b.ctx));
  if (child > 0) {
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  }
  return 0;
}
