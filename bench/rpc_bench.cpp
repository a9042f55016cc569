// lf-bench-rpc: request channels (lavaflow_rpc.h) against the channel they
// run on, in one run: the floor is an 8-byte lf_send/lf_recv round trip on
// the same channel; beside it an empty call's round trip (median and p99)
// and the call rate with 16 calls in flight. Rounds alternate the three.
//
//   build/bench/lf-bench-rpc [--transport shm|tcp] [--rounds 5] [--iters 20000]
//
// Forks its two ranks (rank 0 calls, rank 1 serves with one handler thread).
#include <lavaflow/lavaflow.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_common.h"

namespace {

constexpr uint64_t kPhase = 8, kPing = 9;

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    lf_status_t st_ = (call);                                                                                          \
    if (st_ != LF_OK) {                                                                                                \
      std::fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call, lf_status_string(st_), lf_last_error()); \
      std::exit(1);                                                                                                    \
    }                                                                                                                  \
  } while (0)

lf_status_t nothing(lf_rpc_call_t, void *) { return LF_OK; }

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double pct(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

void serve(lf_channel_t ch) {
  for (;;) {
    char phase = 0;
    int64_t n = 0;
    char msg[9];
    CHECK(lf_recv(ch, msg, sizeof msg, kPhase, nullptr));
    phase = msg[0];
    std::memcpy(&n, msg + 1, 8);
    if (phase == 'q') return;
    if (phase == 'r') {
      uint64_t x;
      for (int64_t i = 0; i < n; ++i) {
        CHECK(lf_recv(ch, &x, sizeof x, kPing, nullptr));
        CHECK(lf_send(ch, &x, sizeof x, kPing));
      }
    } else if (phase == 'p') {
      lf_rpc_server_t s;
      CHECK(lf_rpc_server_create(1, &s));
      CHECK(lf_rpc_server_register(s, "nothing", nothing, nullptr));
      CHECK(lf_rpc_server_serve(s, ch));
      char ready = 'y';
      CHECK(lf_send(ch, &ready, 1, kPhase));
      CHECK(lf_recv(ch, msg, sizeof msg, kPhase, nullptr));  // end of the phase
      CHECK(lf_rpc_server_destroy(s));
    }
  }
}

void phase(lf_channel_t ch, char p, int64_t n) {
  char msg[9];
  msg[0] = p;
  std::memcpy(msg + 1, &n, 8);
  CHECK(lf_send(ch, msg, sizeof msg, kPhase));
}

}  // namespace

int main(int argc, char **argv) {
  std::string transport = "shm";
  int rounds = 5, iters = 20000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--transport" && i + 1 < argc)
      transport = argv[++i];
    else if (a == "--rounds" && i + 1 < argc)
      rounds = std::atoi(argv[++i]);
    else if (a == "--iters" && i + 1 < argc)
      iters = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--transport shm|tcp] [--rounds N] [--iters N]\n", argv[0]);
      return 2;
    }
  }
  std::string addr = "unix:/tmp/lf-bench-rpc-" + std::to_string(getpid()) + ".sock";
  setenv("LF_BOOTSTRAP", addr.c_str(), 1);
  setenv("LF_SIZE", "2", 1);
  setenv("LF_BOOTSTRAP_MODE", "env", 1);
  setenv("LF_TRANSPORTS", transport.c_str(), 1);
  setenv("LF_STRICT", "1", 1);
  bench_job_key();
  pid_t child = fork();
  if (child < 0) return 1;
  const int rank = child == 0 ? 1 : 0;
  setenv("LF_RANK", rank ? "1" : "0", 1);
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(rank % static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)), &set);
  (void)sched_setaffinity(0, sizeof set, &set);  // rank r on CPU r; its threads stay there

  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  lf_channel_t ch;
  CHECK(lf_channel_open(ctx, 1 - rank, &ch));
  if (rank == 1) {
    serve(ch);
    CHECK(lf_finalize(ctx));
    return 0;
  }
  std::printf("# lf-bench-rpc %s: transport %s; %d rounds of %d iterations; medians of the rounds\n", lf_version(),
              lf_channel_transport(ch), rounds, iters);
  std::printf("%-6s %14s %14s %14s %14s %14s\n", "round", "floor_rt_us", "call_rt_us", "call_p99_us", "calls_per_s",
              "ratio_rt");
  std::vector<double> floor_m, call_m, call_p99, rate;
  lf_rpc_client_t c;
  CHECK(lf_rpc_client_create(ch, &c));
  std::vector<double> t(static_cast<size_t>(iters));
  for (int round = 0; round < rounds; ++round) {
    // The floor: 8 bytes there and back on the same channel.
    phase(ch, 'r', iters);
    uint64_t x = 0;
    for (int i = 0; i < iters; ++i) {
      const double t0 = now_us();
      CHECK(lf_send(ch, &x, sizeof x, kPing));
      CHECK(lf_recv(ch, &x, sizeof x, kPing, nullptr));
      t[static_cast<size_t>(i)] = now_us() - t0;
    }
    floor_m.push_back(pct(t, 0.5));
    // Empty calls, one at a time, then 16 in flight.
    phase(ch, 'p', 0);
    char ready;
    CHECK(lf_recv(ch, &ready, 1, kPhase, nullptr));
    for (int i = 0; i < iters; ++i) {
      const double t0 = now_us();
      lf_rpc_request_t q;
      CHECK(lf_rpc_call(c, "nothing", nullptr, 0, nullptr, 0, 0, &q));
      CHECK(lf_rpc_wait(q, -1));
      CHECK(lf_rpc_release(q));
      t[static_cast<size_t>(i)] = now_us() - t0;
    }
    call_m.push_back(pct(t, 0.5));
    call_p99.push_back(pct(t, 0.99));
    lf_rpc_request_t win[16];
    const double t0 = now_us();
    for (int i = 0; i < iters; ++i) {
      lf_rpc_request_t &q = win[i % 16];
      if (i >= 16) {
        CHECK(lf_rpc_wait(q, -1));
        CHECK(lf_rpc_release(q));
      }
      CHECK(lf_rpc_call(c, "nothing", nullptr, 0, nullptr, 0, 0, &q));
    }
    for (int i = std::max(0, iters - 16); i < iters; ++i) {
      CHECK(lf_rpc_wait(win[i % 16], -1));
      CHECK(lf_rpc_release(win[i % 16]));
    }
    rate.push_back(iters / ((now_us() - t0) * 1e-6));
    phase(ch, 'e', 0);
    std::printf("%-6d %14.3f %14.3f %14.3f %14.0f %14.2f\n", round, floor_m.back(), call_m.back(), call_p99.back(),
                rate.back(), call_m.back() / floor_m.back());
  }
  phase(ch, 'q', 0);
  const double f = pct(floor_m, 0.5), m = pct(call_m, 0.5);
  std::printf("%-6s %14.3f %14.3f %14.3f %14.0f %14.2f\n", "median", f, m, pct(call_p99, 0.5), pct(rate, 0.5), m / f);
  CHECK(lf_rpc_client_destroy(c));
  CHECK(lf_finalize(ctx));
  int st = 0;
  waitpid(child, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
