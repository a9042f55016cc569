// lf-bench-remote: the remote transports against what they are built on,
// measured in the same run, interleaved round by round (these machines are
// noisy: medians of rounds, never single best times).
//
//   mpirun -np 2 lf-bench-remote mpi   lavaflow over the mpi transport vs raw
//                                      MPI_Send/MPI_Recv on MPI_COMM_WORLD.
//                                      The two ranks declare different
//                                      locations (LF_LOCATION_FILE) so the
//                                      scope is remote and mpi is chosen.
//   lf-bench-remote tcp                lavaflow over the tcp transport vs raw
//                                      blocking TCP on 127.0.0.1 (TCP_NODELAY),
//                                      between this process and a child it forks
//                                      (pinned to cores 0 and 1 unless
//                                      LF_BENCH_NO_PIN is set).
//   lf-bench-remote ucx                lavaflow over the ucx transport vs
//                                      lavaflow over tcp, one context each in
//                                      the same two pinned processes (UCX_TLS
//                                      picks UCX's lanes; scripts/bench-ucx.sh
//                                      adds ucx_perftest).
// Options: --rounds N (default 7), --quick (fewer iterations), --size N (that
// size only), --large (tcp: one 1 GiB message against 1 MiB messages, raw and
// lavaflow, instead of the usual tables), --raw-blocking
// (raw TCP with blocking calls instead of polled non-blocking ones).
//
// Reported per size: one-way latency (ping-pong / 2) and windowed bandwidth,
// raw and lavaflow, with the difference.
#include <arpa/inet.h>
#include <lavaflow/lavaflow.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "lavaflow_features.h"
#if LAVAFLOW_HAVE_MPI
#include <mpi.h>
#endif

namespace {

#define CHECK(call)                                                                                                 \
  do {                                                                                                              \
    lf_status_t st_ = (call);                                                                                       \
    if (st_ < 0) {                                                                                                  \
      std::fprintf(stderr, "lf-bench-remote: %s failed: %s (%s)\n", #call, lf_status_string(st_), lf_last_error()); \
      std::exit(1);                                                                                                 \
    }                                                                                                               \
  } while (0)

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int g_rounds = 7;
bool g_quick = false;
size_t g_only = 0;  // --size N: measure this size only

int latency_iters(size_t n) {
  int it = n <= 4096 ? 20000 : n <= 65536 ? 4000 : n <= (1 << 20) ? 400 : 100;
  return g_quick ? std::max(10, it / 10) : it;
}
int bw_iters(size_t n) {
  int it = n <= 65536 ? 200 : n <= (1 << 20) ? 40 : 12;
  return g_quick ? std::max(4, it / 4) : it;
}
constexpr int kWindow = 16;

/// One pattern of one side (raw or lavaflow): run `iters` iterations and
/// return the time per iteration in µs as rank 0 sees it.
struct Side {
  std::function<void(char *, size_t)> send, recv;
  std::function<void(char *, size_t, int)> send_window, recv_window;  // kWindow messages, non-blocking
};

double run_latency(const Side &s, int rank, char *buf, size_t n, int iters) {
  double t0 = now_us();
  for (int i = 0; i < iters; ++i) {
    if (rank == 0) {
      s.send(buf, n);
      s.recv(buf, n);
    } else {
      s.recv(buf, n);
      s.send(buf, n);
    }
  }
  return (now_us() - t0) / iters / 2;
}

double run_bandwidth(const Side &s, int rank, char *buf, size_t n, int iters) {
  char ack = 0;
  double t0 = now_us();
  for (int i = 0; i < iters; ++i) {
    if (rank == 0) {
      s.send_window(buf, n, kWindow);
      s.recv(&ack, 1);
    } else {
      s.recv_window(buf, n, kWindow);
      s.send(&ack, 1);
    }
  }
  double us = now_us() - t0;
  return static_cast<double>(n) * kWindow * iters / us / 1e3;  // GB/s
}

/// Interleave raw and lavaflow, alternating which goes first, and print.
void compare(const char *what, const Side &raw, const Side &lf, int rank, const std::vector<size_t> &lat_sizes,
             const std::vector<size_t> &bw_sizes, const std::function<void()> &sync) {
  std::vector<char> buf(kWindow * (size_t{4} << 20) + 64, 1);
  if (rank == 0) {
    std::printf("# %s: one-way latency, median of %d rounds (raw and lavaflow interleaved)\n", what, g_rounds);
    std::printf("%10s %12s %12s %10s %8s\n", "bytes", "raw us", "lavaflow us", "added us", "ratio");
  }
  for (size_t n : lat_sizes) {
    if (g_only && n != g_only) continue;
    std::vector<double> r, l;
    int iters = latency_iters(n);
    run_latency(raw, rank, buf.data(), n, iters / 10 + 1);  // warm-up
    run_latency(lf, rank, buf.data(), n, iters / 10 + 1);
    for (int k = 0; k < g_rounds; ++k) {
      sync();
      if (k % 2 == 0) {
        r.push_back(run_latency(raw, rank, buf.data(), n, iters));
        l.push_back(run_latency(lf, rank, buf.data(), n, iters));
      } else {
        l.push_back(run_latency(lf, rank, buf.data(), n, iters));
        r.push_back(run_latency(raw, rank, buf.data(), n, iters));
      }
    }
    if (rank == 0)
      std::printf("%10zu %12.3f %12.3f %+10.3f %8.3f\n", n, median(r), median(l), median(l) - median(r),
                  median(l) / median(r));
    std::fflush(stdout);
  }
  if (rank == 0) {
    std::printf("# %s: bandwidth, window of %d messages, median of %d rounds\n", what, kWindow, g_rounds);
    std::printf("%10s %12s %12s %8s\n", "bytes", "raw GB/s", "lavaflow GB/s", "ratio");
  }
  for (size_t n : bw_sizes) {
    if (g_only && n != g_only) continue;
    std::vector<double> r, l;
    int iters = bw_iters(n);
    run_bandwidth(raw, rank, buf.data(), n, 2);
    run_bandwidth(lf, rank, buf.data(), n, 2);
    for (int k = 0; k < g_rounds; ++k) {
      sync();
      if (k % 2 == 0) {
        r.push_back(run_bandwidth(raw, rank, buf.data(), n, iters));
        l.push_back(run_bandwidth(lf, rank, buf.data(), n, iters));
      } else {
        l.push_back(run_bandwidth(lf, rank, buf.data(), n, iters));
        r.push_back(run_bandwidth(raw, rank, buf.data(), n, iters));
      }
    }
    if (rank == 0) std::printf("%10zu %12.3f %12.3f %8.3f\n", n, median(r), median(l), median(l) / median(r));
    std::fflush(stdout);
  }
}

Side lavaflow_side(lf_channel_t ch) {
  Side s;
  s.send = [ch](char *p, size_t n) { CHECK(lf_send(ch, p, n, 1)); };
  s.recv = [ch](char *p, size_t n) { CHECK(lf_recv(ch, p, n, 1, nullptr)); };
  s.send_window = [ch](char *p, size_t n, int w) {
    lf_request_t r[kWindow];
    for (int i = 0; i < w; ++i) CHECK(lf_isend(ch, p + static_cast<size_t>(i) * n, n, 1, &r[i]));
    for (int i = 0; i < w; ++i) CHECK(lf_wait(r[i], nullptr));
  };
  s.recv_window = [ch](char *p, size_t n, int w) {
    lf_request_t r[kWindow];
    for (int i = 0; i < w; ++i) CHECK(lf_irecv(ch, p + static_cast<size_t>(i) * n, n, 1, &r[i]));
    for (int i = 0; i < w; ++i) CHECK(lf_wait(r[i], nullptr));
  };
  return s;
}

lf_channel_t open_channel(lf_context_t ctx, const char *expect) {
  int peer = 1 - lf_rank(ctx);
  lf_channel_t ch = nullptr;
  CHECK(lf_channel_open(ctx, peer, &ch));
  if (lf_rank(ctx) == 0) std::printf("# channel: %s (%s)\n", lf_channel_transport(ch), lf_channel_reason(ch));
  if (std::strcmp(lf_channel_transport(ch), expect) != 0) {
    std::fprintf(stderr, "lf-bench-remote: expected the %s transport, got %s\n", expect, lf_channel_transport(ch));
    std::exit(1);
  }
  return ch;
}

// ---- mpi ---------------------------------------------------------------------------

#if LAVAFLOW_HAVE_MPI
int bench_mpi() {
  // Declare this rank a host of its own, so that the scope is remote.
  const char *r = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!r) {
    std::fprintf(stderr, "lf-bench-remote mpi: run me with mpirun -np 2\n");
    return 2;
  }
  std::string path = "/tmp/lf-bench-remote-" + std::to_string(getppid()) + "-" + r + ".json";
  if (FILE *f = std::fopen(path.c_str(), "w")) {
    std::fprintf(f, "{\"hostname\": \"bench-node-%s\", \"boot_id\": \"bench-boot-%s\"}\n", r, r);
    std::fclose(f);
  }
  setenv("LF_LOCATION_FILE", path.c_str(), 1);
  lf_context_t ctx = nullptr;
  CHECK(lf_init(&ctx));
  std::remove(path.c_str());
  if (lf_size(ctx) != 2) {
    std::fprintf(stderr, "lf-bench-remote mpi: needs exactly 2 ranks\n");
    return 2;
  }
  int rank = lf_rank(ctx), peer = 1 - rank;
  lf_channel_t ch = open_channel(ctx, "mpi");
  Side raw;
  raw.send = [peer](char *p, size_t n) { MPI_Send(p, static_cast<int>(n), MPI_BYTE, peer, 1, MPI_COMM_WORLD); };
  raw.recv = [peer](char *p, size_t n) {
    MPI_Recv(p, static_cast<int>(n), MPI_BYTE, peer, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  };
  raw.send_window = [peer](char *p, size_t n, int w) {
    MPI_Request q[kWindow];
    for (int i = 0; i < w; ++i)
      MPI_Isend(p + static_cast<size_t>(i) * n, static_cast<int>(n), MPI_BYTE, peer, 1, MPI_COMM_WORLD, &q[i]);
    MPI_Waitall(w, q, MPI_STATUSES_IGNORE);
  };
  raw.recv_window = [peer](char *p, size_t n, int w) {
    MPI_Request q[kWindow];
    for (int i = 0; i < w; ++i)
      MPI_Irecv(p + static_cast<size_t>(i) * n, static_cast<int>(n), MPI_BYTE, peer, 1, MPI_COMM_WORLD, &q[i]);
    MPI_Waitall(w, q, MPI_STATUSES_IGNORE);
  };
  compare("mpi transport vs raw MPI", raw, lavaflow_side(ch), rank,
          {8, 64, 512, 4096, 8192, 16384, 65536, 262144, 1 << 20, 4 << 20}, {65536, 262144, 1 << 20, 4 << 20},
          [ctx] { CHECK(lf_barrier(ctx)); });
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  return 0;
}
#endif

// ---- tcp ---------------------------------------------------------------------------

bool g_raw_blocking = false;
bool g_large = false;

/// --large: one 1 GiB message (then a 1-byte answer) against the same bytes
/// as 1 MiB messages in windows of kWindow, raw and lavaflow interleaved.
void compare_large(const Side &raw, const Side &lf, int rank, const std::function<void()> &sync) {
  constexpr size_t kLarge = size_t{1} << 30, kSmall = size_t{1} << 20;
  std::vector<char> buf(kLarge, 1);  // touched: no page faults in the timings
  auto one = [&](const Side &s) {
    char ack = 0;
    double t0 = now_us();
    if (rank == 0) {
      s.send(buf.data(), kLarge);
      s.recv(&ack, 1);
    } else {
      s.recv(buf.data(), kLarge);
      s.send(&ack, 1);
    }
    return static_cast<double>(kLarge) / (now_us() - t0) / 1e3;
  };
  auto many = [&](const Side &s) { return run_bandwidth(s, rank, buf.data(), kSmall, kLarge / kSmall / kWindow); };
  std::vector<double> r1, l1, rm, lm;
  (void)one(raw), (void)one(lf);
  for (int k = 0; k < g_rounds; ++k) {
    sync();
    r1.push_back(one(raw));
    l1.push_back(one(lf));
    rm.push_back(many(raw));
    lm.push_back(many(lf));
  }
  if (rank == 0) {
    std::printf("# 1 GiB in one message vs in 1 MiB messages (window %d), GB/s, median of %d rounds\n", kWindow,
                g_rounds);
    std::printf("%12s %12s %12s %12s %14s\n", "raw 1 GiB", "lf 1 GiB", "raw 1 MiB", "lf 1 MiB", "lf 1G / lf 1M");
    std::printf("%12.3f %12.3f %12.3f %12.3f %14.3f\n", median(r1), median(l1), median(rm), median(lm),
                median(l1) / median(lm));
  }
}

/// Raw TCP: blocking calls, or (default) non-blocking calls polled in a loop,
/// which is how lavaflow waits (LF_SPIN_COUNT) and what makes the latencies
/// comparable: on this VM a blocking recv() costs a ~30 us wake-up.
void xfer(int fd, char *p, size_t n, bool out) {
  int flags = g_raw_blocking ? 0 : MSG_DONTWAIT;
  while (n > 0) {
    ssize_t k = out ? ::send(fd, p, n, MSG_NOSIGNAL | flags) : ::recv(fd, p, n, flags);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (k <= 0) {
      std::perror("lf-bench-remote: raw tcp");
      std::exit(1);
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
}

int bench_tcp() {
  // The raw connection is set up before the fork: no ordering by sleeps.
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || listen(lfd, 1) != 0 ||
      getsockname(lfd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
    std::perror("lf-bench-remote: listen");
    return 1;
  }
  std::string sock = "unix:/tmp/lf-bench-remote-" + std::to_string(getpid()) + ".sock";
  pid_t child = fork();
  int rank = child == 0 ? 1 : 0;
  // One core each (when there are two): no migrations in the timings.
  if (std::getenv("LF_BENCH_NO_PIN") == nullptr) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(rank % std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)), &set);
    (void)sched_setaffinity(0, sizeof set, &set);
  }
  int fd;
  if (rank == 1) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) _exit(1);
  } else {
    fd = accept(lfd, nullptr, nullptr);
  }
  close(lfd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setenv("LF_RANK", std::to_string(rank).c_str(), 1);
  setenv("LF_SIZE", "2", 1);
  setenv("LF_BOOTSTRAP", sock.c_str(), 1);
  setenv("LF_TRANSPORTS", "tcp", 1);
  lf_context_t ctx = nullptr;
  CHECK(lf_init(&ctx));
  lf_channel_t ch = open_channel(ctx, "tcp");
  Side raw;
  raw.send = [fd](char *p, size_t n) { xfer(fd, p, n, true); };
  raw.recv = [fd](char *p, size_t n) { xfer(fd, p, n, false); };
  raw.send_window = [fd](char *p, size_t n, int w) {
    for (int i = 0; i < w; ++i) xfer(fd, p + static_cast<size_t>(i) * n, n, true);
  };
  raw.recv_window = [fd](char *p, size_t n, int w) {
    for (int i = 0; i < w; ++i) xfer(fd, p + static_cast<size_t>(i) * n, n, false);
  };
  if (g_large)
    compare_large(raw, lavaflow_side(ch), rank, [ctx] { CHECK(lf_barrier(ctx)); });
  else
    compare(g_raw_blocking ? "tcp transport vs raw blocking TCP on 127.0.0.1"
                           : "tcp transport vs raw TCP on 127.0.0.1 (non-blocking calls, polled)",
            raw, lavaflow_side(ch), rank, {8, 64, 4096, 65536, 1 << 20}, {65536, 1 << 20, 4 << 20},
            [ctx] { CHECK(lf_barrier(ctx)); });
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  close(fd);
  if (rank == 1) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

/// The ucx transport against lavaflow's own tcp, two channels of one
/// context between this process and a forked child (pinned like tcp mode);
/// UCX_TLS picks UCX's lanes. scripts/bench-ucx.sh runs ucx_perftest with the
/// same UCX_TLS alongside.
int bench_ucx() {
  const std::string base = "unix:/tmp/lf-bench-remote-" + std::to_string(getpid());
  pid_t child = fork();
  int rank = child == 0 ? 1 : 0;
  if (std::getenv("LF_BENCH_NO_PIN") == nullptr) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(rank % std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)), &set);
    (void)sched_setaffinity(0, sizeof set, &set);
  }
  setenv("LF_RANK", std::to_string(rank).c_str(), 1);
  setenv("LF_SIZE", "2", 1);
  // One context per transport: a wait sweeps every channel of its context,
  // and a tcp channel's recv() in the ucx channel's sweeps (or the reverse)
  // would be measured too.
  auto open_over = [rank, &base](const char *name, lf_context_t *ctx) {
    setenv("LF_BOOTSTRAP", (base + "-" + name + ".sock").c_str(), 1);
    setenv("LF_TRANSPORTS", name, 1);
    CHECK(lf_init(ctx));
    lf_channel_params_t p = LF_CHANNEL_PARAMS_INIT;
    p.strict = 1;
    lf_channel_t ch = nullptr;
    CHECK(lf_channel_open_ex(*ctx, 1 - rank, &p, &ch));
    if (rank == 0) std::printf("# channel: %s (%s)\n", lf_channel_transport(ch), lf_channel_reason(ch));
    return ch;
  };
  lf_context_t ctx_tcp = nullptr, ctx_ucx = nullptr;
  lf_channel_t tcp = open_over("tcp", &ctx_tcp), ucx = open_over("ucx", &ctx_ucx);
  if (rank == 0) {
    const char *tls = std::getenv("UCX_TLS");
    std::printf("# UCX_TLS=%s; 'raw' columns: lavaflow tcp, 'lavaflow' columns: lavaflow ucx\n", tls ? tls : "(all)");
  }
  compare("ucx transport vs tcp transport", lavaflow_side(tcp), lavaflow_side(ucx), rank, {8, 64, 4096, 65536, 1 << 20},
          {65536, 1 << 20, 4 << 20}, [ctx_tcp] { CHECK(lf_barrier(ctx_tcp)); });
  CHECK(lf_channel_close(tcp));
  CHECK(lf_channel_close(ucx));
  CHECK(lf_finalize(ctx_ucx));
  CHECK(lf_finalize(ctx_tcp));
  if (rank == 1) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) g_quick = true;
    if (!std::strcmp(argv[i], "--raw-blocking")) g_raw_blocking = true;
    if (!std::strcmp(argv[i], "--large")) g_large = true;
    if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) g_rounds = std::max(1, std::atoi(argv[++i]));
    if (!std::strcmp(argv[i], "--size") && i + 1 < argc) g_only = std::strtoull(argv[++i], nullptr, 0);
  }
  if (mode == "tcp") return bench_tcp();
  if (mode == "ucx") return bench_ucx();
#if LAVAFLOW_HAVE_MPI
  if (mode == "mpi") return bench_mpi();
#endif
  std::fprintf(stderr, "usage: lf-bench-remote tcp|ucx|mpi [--rounds N] [--quick]\n");
  return 2;
}
