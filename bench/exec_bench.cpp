// lf-bench-exec: the execution service (lavaflow_exec.h) between two
// processes on one machine, with its floors measured in the same run:
//
//  - empty plan: round trip (median, p99) and jobs/s with 16 in flight,
//    beside an 8-byte lf_send/lf_recv round trip over a channel of the same
//    kind between the same two processes (the floor);
//  - fetch of a 1-64 MiB result: on shm the time of lf_exec_fetch (a view by
//    descriptor); on tcp its bandwidth beside one message of the same size
//    over the same kind of channel (the transport's bandwidth);
//  - cancel: lf_exec_cancel until lf_exec_wait reports LF_ERR_CANCELLED
//    (an upper bound on the time until the op sees its token);
//  - health latency while every worker runs a job.
// Rounds alternate the measurements; figures are medians over rounds.
//
//   build/bench/lf-bench-exec [--transport shm|tcp] [--rounds 5] [--iters 20000]
//
// The service runs in a forked child pinned to CPU 0, the client on CPU 1;
// the floors' far end is a second child on CPU 0, blocked when idle.
#include <lavaflow/lavaflow.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    lf_status_t st_ = (call);                                                                                          \
    if (st_ != LF_OK) {                                                                                                \
      std::fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call, lf_status_string(st_), lf_last_error()); \
      std::exit(1);                                                                                                    \
    }                                                                                                                  \
  } while (0)

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double pct(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

double median(std::vector<double> v) { return pct(std::move(v), 0.5); }

void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu % static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)), &s);
  sched_setaffinity(0, sizeof s, &s);
}

lf_status_t spin(lf_exec_op_t op, void *) {
  while (!lf_exec_op_cancelled(op)) sched_yield();
  return LF_ERR_CANCELLED;
}

void world_of_one() {
  setenv("LF_SIZE", "1", 1);
  setenv("LF_RANK", "0", 1);
  unsetenv("LF_BOOTSTRAP");
}

/// Child 1: the execution service, until the parent closes the pipe.
[[noreturn]] void serve_exec(const std::string &kind, int tell_fd, int stop_fd) {
  pin(0);
  world_of_one();
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  const std::string addr =
      kind == "shm" ? "unix:@lf-bench-exec-" + std::to_string(getpid()) : std::string("tcp://127.0.0.1:0");
  lf_exec_server_t s;
  CHECK(lf_exec_server_start(ctx, addr.c_str(), &s));
  CHECK(lf_exec_server_register(s, "spin", spin, nullptr));
  char a[256];
  CHECK(lf_exec_server_address(s, a, sizeof a));
  const std::string line = std::string(a) + "\n";
  if (write(tell_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(1);
  char c;
  (void)!read(stop_fd, &c, 1);  // EOF: the parent is done
  lf_exec_server_stop(s);
  _exit(0);
}

/// Child 2, on the service's CPU: the floors over a channel of the same
/// kind. 8-byte pings are echoed (tag 1); a size on tag 2 is answered by one
/// message of that size (tag 3). A process of its own, blocked in
/// lf_waitany, so that it takes nothing from the service.
[[noreturn]] void serve_floor(const std::string &kind, int tell_fd) {
  pin(0);
  world_of_one();
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  const std::string addr =
      kind == "shm" ? "unix:@lf-bench-floor-" + std::to_string(getpid()) : std::string("tcp://127.0.0.1:0");
  lf_listener_t l;
  CHECK(lf_listen(ctx, addr.c_str(), &l));
  char b[256];
  CHECK(lf_listener_address(l, b, sizeof b));
  const std::string line = std::string(b) + "\n";
  if (write(tell_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(1);
  lf_channel_t ch;
  CHECK(lf_accept(l, 30000, &ch));
  std::vector<char> big;
  uint64_t x = 0, want = 0;
  lf_request_t rq[2];
  CHECK(lf_irecv(ch, &x, sizeof x, 1, &rq[0]));
  CHECK(lf_irecv(ch, &want, sizeof want, 2, &rq[1]));
  for (;;) {
    size_t i = 0;
    if (lf_waitany(rq, 2, &i, nullptr) != LF_OK) _exit(0);  // the client left
    if (i == 0) {
      CHECK(lf_send(ch, &x, sizeof x, 1));
      CHECK(lf_irecv(ch, &x, sizeof x, 1, &rq[0]));
    } else {
      if (big.size() < want) big.assign(want, 'x');
      CHECK(lf_send(ch, big.data(), want, 3));
      CHECK(lf_irecv(ch, &want, sizeof want, 2, &rq[1]));
    }
  }
}

std::string read_line(int fd) {
  std::string s;
  char c;
  while (read(fd, &c, 1) == 1 && c != '\n') s += c;
  return s;
}

}  // namespace

namespace {

lf_job_t run(lf_exec_client_t c, lf_plan_t p) {
  lf_job_t j;
  CHECK(lf_exec_run(c, p, 0, &j));
  return j;
}

}  // namespace

int main(int argc, char **argv) {
  std::string kind = "shm";
  int rounds = 5, iters = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--transport"))
      kind = argv[i + 1];
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--iters"))
      iters = std::atoi(argv[i + 1]);
  }
  if ((kind != "shm" && kind != "tcp") || rounds < 1 || iters < 100) {
    std::fprintf(stderr, "usage: lf-bench-exec [--transport shm|tcp] [--rounds 5] [--iters 20000]\n");
    return 2;
  }
  if (kind == "tcp" && !getenv("LF_EXEC_TOKEN")) setenv("LF_EXEC_TOKEN", "lf-bench-exec", 1);
  int tell[2], stop[2];
  if (pipe(tell) || pipe(stop)) return 1;
  const pid_t service = fork();
  if (service == 0) {
    close(tell[0]);
    close(stop[1]);
    serve_exec(kind, tell[1], stop[0]);
  }
  const std::string exec_addr = read_line(tell[0]);
  const pid_t floor = fork();
  if (floor == 0) {
    close(tell[0]);
    close(stop[1]);
    serve_floor(kind, tell[1]);
  }
  close(tell[1]);
  close(stop[0]);
  const std::string raw_addr = read_line(tell[0]);
  pin(1);
  world_of_one();
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  lf_exec_client_t cl;
  CHECK(lf_exec_connect_addr(ctx, exec_addr.c_str(), &cl));
  lf_channel_t raw;
  CHECK(lf_connect(ctx, raw_addr.c_str(), 10000, &raw));
  std::printf("# lf-bench-exec: %s (exec client over %s, floor channel over %s); %d rounds of %d\n", kind.c_str(),
              lf_exec_client_transport(cl), lf_channel_transport(raw), rounds, iters);

  lf_plan_t empty;
  CHECK(lf_plan_create(&empty));
  lf_plan_t spinning;
  CHECK(lf_plan_create(&spinning));
  CHECK(lf_plan_op(spinning, "spin", nullptr, 0, "x", nullptr));

  std::vector<double> floor_med, rt_med, rt_p99, rate, cancel_med, health_med, health_p99;
  const size_t fetch_sizes[] = {size_t{1} << 20, size_t{8} << 20, size_t{64} << 20};
  std::vector<std::vector<double>> fetch_us(3), floor_bw(3);
  // One resident result per size, made once (upload, kept as its output).
  std::vector<lf_job_t> held;
  std::vector<lf_buffer_t> inputs;
  for (size_t n : fetch_sizes) {
    lf_buffer_t b;
    CHECK(lf_alloc(ctx, n, LF_MEM_HOST, &b));
    std::memset(lf_buffer_data(b), 1, n);
    lf_plan_t p;
    CHECK(lf_plan_create(&p));
    const int64_t shape[1] = {static_cast<int64_t>(n / 4)};
    CHECK(lf_plan_input(p, "t", b, shape, 1));
    CHECK(lf_plan_output(p, "t"));
    lf_job_t j = run(cl, p);
    CHECK(lf_exec_wait(j, -1));
    CHECK(lf_plan_destroy(p));
    held.push_back(j);
    inputs.push_back(b);
  }
  for (int r = 0; r < rounds; ++r) {
    // Floor: 8-byte round trips on the raw channel.
    std::vector<double> v;
    uint64_t x = 1;
    for (int i = 0; i < iters; ++i) {
      const double t0 = now_us();
      CHECK(lf_send(raw, &x, sizeof x, 1));
      CHECK(lf_recv(raw, &x, sizeof x, 1, nullptr));
      v.push_back(now_us() - t0);
    }
    floor_med.push_back(median(v));
    // Empty plan round trips.
    v.clear();
    for (int i = 0; i < iters; ++i) {
      const double t0 = now_us();
      lf_job_t j = run(cl, empty);
      CHECK(lf_exec_wait(j, -1));
      CHECK(lf_exec_release(j));
      v.push_back(now_us() - t0);
    }
    rt_med.push_back(median(v));
    rt_p99.push_back(pct(v, 0.99));
    // 16 in flight.
    {
      std::vector<lf_job_t> q;
      const double t0 = now_us();
      for (int i = 0; i < iters; ++i) {
        if (q.size() == 16) {
          CHECK(lf_exec_wait(q.front(), -1));
          CHECK(lf_exec_release(q.front()));
          q.erase(q.begin());
        }
        q.push_back(run(cl, empty));
      }
      for (lf_job_t j : q) {
        CHECK(lf_exec_wait(j, -1));
        CHECK(lf_exec_release(j));
      }
      rate.push_back(iters / ((now_us() - t0) / 1e6));
    }
    // Fetch, and the floor of one message of the same size.
    for (size_t k = 0; k < 3; ++k) {
      const size_t n = fetch_sizes[k];
      const int reps = kind == "shm" ? 200 : 5;
      std::vector<double> f;
      for (int i = 0; i < reps; ++i) {
        lf_buffer_t view;
        const double t0 = now_us();
        CHECK(lf_exec_fetch(held[k], "t", &view));
        f.push_back(now_us() - t0);
        CHECK(lf_free(view));
      }
      fetch_us[k].push_back(median(f));
      std::vector<char> sink(n);
      std::vector<double> g;
      for (int i = 0; i < 5; ++i) {
        const uint64_t want = n;
        const double t0 = now_us();
        CHECK(lf_send(raw, &want, sizeof want, 2));
        CHECK(lf_recv(raw, sink.data(), n, 3, nullptr));
        g.push_back(now_us() - t0);
      }
      floor_bw[k].push_back(static_cast<double>(n) / median(g) / 1e3);  // GB/s
    }
    // Cancel: a running op until the wait reports it.
    v.clear();
    for (int i = 0; i < 50; ++i) {
      lf_job_t j = run(cl, spinning);
      (void)lf_exec_wait(j, 1);  // it runs by now, or very soon
      const double t0 = now_us();
      CHECK(lf_exec_cancel(j));
      lf_status_t st = lf_exec_wait(j, -1);
      v.push_back(now_us() - t0);
      if (st != LF_ERR_CANCELLED) std::fprintf(stderr, "cancel: %s\n", lf_status_string(st));
      CHECK(lf_exec_release(j));
    }
    cancel_med.push_back(median(v));
    // Health with every worker busy (LF_EXEC_WORKERS, default 2).
    lf_job_t busy[2] = {run(cl, spinning), run(cl, spinning)};
    (void)lf_exec_wait(busy[1], 5);
    v.clear();
    char json[2048];
    for (int i = 0; i < 2000; ++i) {
      const double t0 = now_us();
      CHECK(lf_exec_health(cl, json, sizeof json));
      v.push_back(now_us() - t0);
    }
    if (!std::strstr(json, "\"jobs_running\":2")) std::fprintf(stderr, "health: not every worker was busy: %s\n", json);
    health_med.push_back(median(v));
    health_p99.push_back(pct(v, 0.99));
    for (lf_job_t j : busy) {
      CHECK(lf_exec_cancel(j));
      (void)lf_exec_wait(j, -1);
      CHECK(lf_exec_release(j));
    }
  }
  std::printf("%-44s %10s\n", "figure (median over rounds)", "value");
  std::printf("%-44s %10.2f\n", "floor: 8 B send/recv round trip, us", median(floor_med));
  std::printf("%-44s %10.2f\n", "empty plan round trip, us", median(rt_med));
  std::printf("%-44s %10.2f\n", "empty plan round trip p99, us", median(rt_p99));
  std::printf("%-44s %10.0f\n", "empty plans/s, 16 in flight", median(rate));
  for (size_t k = 0; k < 3; ++k) {
    const double us = median(fetch_us[k]);
    const double bw = static_cast<double>(fetch_sizes[k]) / us / 1e3;
    char label[64];
    std::snprintf(label, sizeof label, "fetch %zu MiB, us", fetch_sizes[k] >> 20);
    std::printf("%-44s %10.2f", label, us);
    if (kind == "tcp")
      std::printf("   (%.2f GB/s; one message of that size: %.2f GB/s, ratio %.2f)", bw, median(floor_bw[k]),
                  bw / median(floor_bw[k]));
    std::printf("\n");
  }
  std::printf("%-44s %10.1f\n", "cancel until the wait reports it, us", median(cancel_med));
  std::printf("%-44s %10.2f\n", "health with every worker busy, us", median(health_med));
  std::printf("%-44s %10.2f\n", "health with every worker busy p99, us", median(health_p99));
  for (lf_job_t j : held) lf_exec_release(j);
  for (lf_buffer_t b : inputs) lf_free(b);
  lf_plan_destroy(empty);
  lf_plan_destroy(spinning);
  lf_channel_close(raw);  // ends the floor server
  lf_exec_disconnect(cl);
  close(stop[1]);
  int status;
  waitpid(service, &status, 0);
  waitpid(floor, &status, 0);
  lf_finalize(ctx);
  return 0;
}
