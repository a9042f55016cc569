// Remote execution (lavaflow_exec.h) between forked ranks: rank 0 runs the
// service (for the world, or at an address), the others are clients. On shm
// the results come over by descriptor; on tcp they are pushed on fetch.
//
// Covered: a plan add -> matmul -> sum on 4 MiB tensors checked against the
// CPU, resident inputs, invalid plans naming the op, cancel and deadlines
// reaching a running op, cancel racing completion, fetch after release or
// cancel, a write into a fetched view faulting (in a child), a killed
// service, a killed client whose memory returns, malformed requests beside a
// well-behaved client, admission caps under 10,000 submits, tokens.
// Ranks synchronise over pipes or the service's own answers, never by sleeping.
#include <lavaflow/lavaflow.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "multiprocess.hpp"
#include "own_world.hpp"

using namespace lftest;

namespace {

/// A user op that runs until its job is cancelled (bounded: a broken token
/// fails the test instead of hanging it).
lf_status_t spin(lf_exec_op_t op, void *) {
  const int64_t end = monotonic_ns() + int64_t{20} * 1000000000;
  while (!lf_exec_op_cancelled(op)) {
    if (monotonic_ns() > end) return LF_ERR_INTERNAL;
    sched_yield();
  }
  return LF_ERR_CANCELLED;
}

/// A user op: out = in + 1, any shape.
lf_status_t plus_one(lf_exec_op_t op, void *) {
  const int64_t *shape;
  int nd;
  lf_buffer_t in = lf_exec_op_input(op, 0, &shape, &nd);
  if (!in) return LF_ERR_INVALID_ARG;
  lf_buffer_t out;
  if (lf_status_t st = lf_exec_op_output(op, shape, nd, &out); st != LF_OK) return st;
  const float *a = static_cast<const float *>(lf_buffer_data(in));
  float *o = static_cast<float *>(lf_buffer_data(out));
  for (size_t i = 0; i < lf_buffer_size(in) / 4; ++i) o[i] = a[i] + 1;
  return LF_OK;
}

lf_status_t die(lf_exec_op_t, void *) {
  raise(SIGKILL);
  return LF_OK;
}

struct Client {
  lf_context_t ctx = nullptr;
  lf_exec_client_t c = nullptr;
};

/// Rank 0: a service for the world; serve until the parent says stop (once
/// every client said it is done). `finalize` is false when a rank was
/// killed: the world cannot finish together then.
void serve_world(Rank &r, bool finalize = true) {
  lf_context_t ctx;
  REQUIRE_OK(r, lf_init(&ctx));
  lf_exec_server_t s;
  REQUIRE_OK(r, lf_exec_server_start(ctx, nullptr, &s));
  REQUIRE_OK(r, lf_exec_server_register(s, "spin", spin, nullptr));
  REQUIRE_OK(r, lf_exec_server_register(s, "plus_one", plus_one, nullptr));
  REQUIRE_OK(r, lf_exec_server_register(s, "die", die, nullptr));
  r.signal('s');
  (void)r.await();
  REQUIRE_OK(r, lf_exec_server_stop(s));
  if (!finalize) _exit(0);
  REQUIRE_OK(r, lf_finalize(ctx));
}

Client connect_world(Rank &r) {
  Client c;
  REQUIRE_OK(r, lf_init(&c.ctx));
  REQUIRE_OK(r, lf_exec_connect(c.ctx, 0, &c.c));
  return c;
}

void done(Rank &r, Client &c, bool finalize = true) {
  REQUIRE_OK(r, lf_exec_disconnect(c.c));
  r.signal('d');
  if (!finalize) _exit(0);
  REQUIRE_OK(r, lf_finalize(c.ctx));
}

lf_buffer_t tensor(Rank &r, lf_context_t ctx, size_t n, float base) {
  lf_buffer_t b;
  REQUIRE_OK(r, lf_alloc(ctx, n * 4, LF_MEM_HOST, &b));
  float *f = static_cast<float *>(lf_buffer_data(b));
  for (size_t i = 0; i < n; ++i) f[i] = base + static_cast<float>(i % 7) * 0.25f;
  return b;
}

uint64_t health_number(Rank &r, lf_exec_client_t c, const char *key) {
  char json[2048];
  REQUIRE_OK(r, lf_exec_health(c, json, sizeof json));
  const std::string k = std::string("\"") + key + "\":";
  const char *p = std::strstr(json, k.c_str());
  REQUIRE(r, p, "health has no %s: %s", key, json);
  return std::strtoull(p + k.size(), nullptr, 10);
}

/// Poll health until `key` is `want` (the service frees a dead client's
/// memory when it notices; this waits for that, bounded).
void await_health(Rank &r, lf_exec_client_t c, const char *key, uint64_t want) {
  const int64_t end = monotonic_ns() + int64_t{20} * 1000000000;
  uint64_t v;
  while ((v = health_number(r, c, key)) != want) {
    REQUIRE(r, monotonic_ns() < end, "%s stays %" PRIu64 ", not %" PRIu64, key, v, want);
    sched_yield();
  }
}

lf_plan_t spin_plan(Rank &r) {
  lf_plan_t p;
  REQUIRE_OK(r, lf_plan_create(&p));
  REQUIRE_OK(r, lf_plan_op(p, "spin", nullptr, 0, "x", nullptr));
  return p;
}

class Exec : public MultiProcess, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    env.push_back({"LF_TRANSPORTS", GetParam()});
    env.push_back({"LF_STRICT", "1"});
    env.push_back({"LF_LOG_LEVEL", "error"});
  }
  /// Rank 0 serves the world, ranks 1..n-1 run `client` and end with done().
  void with_service(int n, const std::function<void(Rank &)> &client) {
    spawn(n, [&](Rank &r) {
      if (r.rank == 0) return serve_world(r);
      client(r);
    });
    // Generous: the 10,000-job tests run beside other tests on two cores.
    ASSERT_EQ(await(0, 300000), 's');
    for (int k = 1; k < n; ++k) ASSERT_EQ(await(k, 300000), 'd') << "client " << k;
    signal(0, 'o');
    expect_all_ok(300);
  }
};

TEST_P(Exec, AddMatmulSumOnFourMiBTensorsMatchesTheCpu) {
  with_service(2, [](Rank &r) {
    Client c = connect_world(r);
    constexpr int64_t N = 1024;  // 4 MiB each: several upload batches
    const int64_t shape[2] = {N, N};
    lf_buffer_t a = tensor(r, c.ctx, N * N, 1.0f), b = tensor(r, c.ctx, N * N, -0.5f);
    lf_buffer_t v;
    const int64_t vshape[2] = {N, 1};
    REQUIRE_OK(r, lf_alloc(c.ctx, N * 4, LF_MEM_HOST, &v));
    for (int64_t i = 0; i < N; ++i) static_cast<float *>(lf_buffer_data(v))[i] = (i % 3) ? 0.5f : -1.0f;
    lf_plan_t p;
    REQUIRE_OK(r, lf_plan_create(&p));
    REQUIRE_OK(r, lf_plan_input(p, "a", a, shape, 2));
    REQUIRE_OK(r, lf_plan_input(p, "b", b, shape, 2));
    REQUIRE_OK(r, lf_plan_input(p, "v", v, vshape, 2));
    const char *ab[] = {"a", "b"}, *cv[] = {"c", "v"}, *d[] = {"d"};
    REQUIRE_OK(r, lf_plan_op(p, "add", ab, 2, "c", nullptr));
    REQUIRE_OK(r, lf_plan_op(p, "matmul", cv, 2, "d", nullptr));
    REQUIRE_OK(r, lf_plan_op(p, "sum", d, 1, "s", nullptr));
    REQUIRE_OK(r, lf_plan_output(p, "s"));
    REQUIRE_OK(r, lf_plan_output(p, "d"));
    lf_job_t j;
    REQUIRE_OK(r, lf_exec_run(c.c, p, 60000, &j));
    REQUIRE_OK(r, lf_plan_destroy(p));
    REQUIRE_OK(r, lf_exec_wait(j, -1));
    // CPU reference in double.
    const float *fa = static_cast<const float *>(lf_buffer_data(a)),
                *fb = static_cast<const float *>(lf_buffer_data(b));
    const float *fv = static_cast<const float *>(lf_buffer_data(v));
    std::vector<double> dref(N);
    double sref = 0;
    for (int64_t i = 0; i < N; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < N; ++k) acc += (double(fa[i * N + k]) + fb[i * N + k]) * fv[k];
      dref[static_cast<size_t>(i)] = acc;
      sref += acc;
    }
    lf_buffer_t dv, sv;
    REQUIRE_OK(r, lf_exec_fetch(j, "d", &dv));
    REQUIRE_OK(r, lf_exec_fetch(j, "s", &sv));
    REQUIRE(r, lf_buffer_size(dv) == N * 4 && lf_buffer_size(sv) == 4, "sizes %zu, %zu", lf_buffer_size(dv),
            lf_buffer_size(sv));
    const float *got = static_cast<const float *>(lf_buffer_data(dv));
    for (int64_t i = 0; i < N; ++i)
      REQUIRE(r,
              std::fabs(got[i] - dref[static_cast<size_t>(i)]) <= 1e-3 * (1 + std::fabs(dref[static_cast<size_t>(i)])),
              "d[%" PRId64 "] = %g, want %g", i, double(got[i]), dref[static_cast<size_t>(i)]);
    const float s = *static_cast<const float *>(lf_buffer_data(sv));
    REQUIRE(r, std::fabs(s - sref) <= 1e-3 * (1 + std::fabs(sref)), "sum %g, want %g", double(s), sref);
    int64_t shp[8];
    int nd = -1;
    REQUIRE_OK(r, lf_exec_output_shape(j, "d", shp, &nd));
    REQUIRE(r, nd == 2 && shp[0] == N && shp[1] == 1, "shape of d: %d dims", nd);
    char info[2048];
    REQUIRE_OK(r, lf_exec_job_info(j, info, sizeof info));
    REQUIRE(r, std::strstr(info, "\"op\":\"matmul\"") && std::strstr(info, "\"device\":\""), "info: %s", info);
    // A second job reads the first one's result where it lies.
    lf_plan_t p2;
    REQUIRE_OK(r, lf_plan_create(&p2));
    REQUIRE_OK(r, lf_plan_input_resident(p2, "d", j, "d"));
    const char *dd[] = {"d"};
    REQUIRE_OK(r, lf_plan_op(p2, "scale", dd, 1, "e", "factor=2"));
    REQUIRE_OK(r, lf_plan_output(p2, "e"));
    lf_job_t j2;
    REQUIRE_OK(r, lf_exec_run(c.c, p2, 0, &j2));
    REQUIRE_OK(r, lf_plan_destroy(p2));
    REQUIRE_OK(r, lf_exec_wait(j2, -1));
    lf_buffer_t ev;
    REQUIRE_OK(r, lf_exec_fetch(j2, "e", &ev));
    for (int64_t i = 0; i < N; ++i)
      REQUIRE(r, static_cast<const float *>(lf_buffer_data(ev))[i] == 2 * got[i], "e[%" PRId64 "]", i);
    for (lf_buffer_t x : {dv, sv, ev, a, b, v}) REQUIRE_OK(r, lf_free(x));
    REQUIRE_OK(r, lf_exec_release(j));
    REQUIRE_OK(r, lf_exec_release(j2));
    await_health(r, c.c, "bytes_in_use", 0);
    done(r, c);
  });
}

TEST_P(Exec, InvalidPlansAreRefusedNamingTheOp) {
  with_service(2, [](Rank &r) {
    Client c = connect_world(r);
    lf_buffer_t a = tensor(r, c.ctx, 6, 1), b = tensor(r, c.ctx, 6, 2);
    const int64_t s23[2] = {2, 3}, s32[2] = {3, 2};
    struct Case {
      const char *why;
      const char *op;
      std::vector<const char *> in;
      const char *out;
      const char *attrs;
      const char *expect;
    } cases[] = {
        {"unknown op", "fft", {"a"}, "x", "", "'fft'"},
        {"shape mismatch", "add", {"a", "b"}, "x", "", "'add'"},
        {"matmul shapes", "matmul", {"a", "a"}, "x", "", "'matmul'"},
        {"missing input", "mul", {"a", "nope"}, "x", "", "'nope'"},
        {"scale without factor", "scale", {"a"}, "x", "", "factor"},
        {"cycle", "add", {"y", "a"}, "x", "", "cycle"},
    };
    for (const Case &k : cases) {
      lf_plan_t p;
      REQUIRE_OK(r, lf_plan_create(&p));
      REQUIRE_OK(r, lf_plan_input(p, "a", a, s23, 2));
      REQUIRE_OK(r, lf_plan_input(p, "b", b, s32, 2));
      REQUIRE_OK(r, lf_plan_op(p, k.op, k.in.data(), static_cast<int>(k.in.size()), k.out, k.attrs));
      if (std::strcmp(k.expect, "cycle") == 0) {
        const char *x[] = {"x"};
        REQUIRE_OK(r, lf_plan_op(p, "scale", x, 1, "y", "factor=1"));
      }
      REQUIRE_OK(r, lf_plan_output(p, "x"));
      lf_job_t j;
      REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &j));
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_exec_wait(j, -1));
      REQUIRE(r, std::strstr(lf_last_error(), k.expect), "%s: the error does not name %s: %s", k.why, k.expect,
              lf_last_error());
      lf_buffer_t view;
      REQUIRE_ST(r, LF_ERR_CLOSED, lf_exec_fetch(j, "x", &view));
      REQUIRE_OK(r, lf_exec_release(j));
      REQUIRE_OK(r, lf_plan_destroy(p));
    }
    // Bad arguments on the client side.
    lf_plan_t p;
    REQUIRE_OK(r, lf_plan_create(&p));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_plan_input(p, "a", a, s32, 1));  // 6 floats are not 3
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_plan_input(p, "bad name", a, s23, 2));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_plan_op(p, "add", nullptr, 2, "x", nullptr));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_exec_run(nullptr, p, 0, nullptr));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_exec_wait(reinterpret_cast<lf_job_t>(p), 0));
    REQUIRE_OK(r, lf_plan_destroy(p));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_plan_destroy(p));
    REQUIRE_OK(r, lf_free(a));
    REQUIRE_OK(r, lf_free(b));
    done(r, c);
  });
}

TEST_P(Exec, CancelAndDeadlinesReachARunningOp) {
  with_service(2, [](Rank &r) {
    Client c = connect_world(r);
    lf_plan_t p = spin_plan(r);
    lf_job_t j;
    REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &j));
    REQUIRE_ST(r, LF_IN_PROGRESS, lf_exec_wait(j, 0));  // a test returns at once
    REQUIRE_ST(r, LF_IN_PROGRESS, lf_exec_wait(j, 20));
    REQUIRE_OK(r, lf_exec_cancel(j));
    REQUIRE_ST(r, LF_ERR_CANCELLED, lf_exec_wait(j, 30000));
    REQUIRE_ST(r, LF_ERR_CANCELLED, lf_exec_wait(j, 0));  // the same status again
    lf_buffer_t view;
    REQUIRE_ST(r, LF_ERR_CLOSED, lf_exec_fetch(j, "x", &view));
    REQUIRE_OK(r, lf_exec_release(j));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_exec_fetch(j, "x", &view));  // released
    REQUIRE_OK(r, lf_exec_run(c.c, p, 30, &j));
    REQUIRE_ST(r, LF_ERR_TIMEOUT, lf_exec_wait(j, 30000));
    REQUIRE_OK(r, lf_exec_release(j));
    // A deadline that passes while the job waits for a worker: the first
    // job holds the only... (two workers: hold both).
    lf_job_t hold[2];
    for (auto &h : hold) REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &h));
    REQUIRE_OK(r, lf_exec_run(c.c, p, 1, &j));
    REQUIRE_ST(r, LF_ERR_TIMEOUT, lf_exec_wait(j, 30000));
    REQUIRE_OK(r, lf_exec_release(j));
    for (auto &h : hold) REQUIRE_OK(r, lf_exec_release(h));  // running: cancelled, settled later
    REQUIRE_OK(r, lf_plan_destroy(p));
    await_health(r, c.c, "jobs_running", 0);
    done(r, c);
  });
}

TEST_P(Exec, CancelRacingCompletionEndsEachJobOnceAndLeaksNothing) {
  with_service(2, [](Rank &r) {
    Client c = connect_world(r);
    lf_buffer_t a = tensor(r, c.ctx, 16, 3);
    const int64_t s[1] = {16};
    lf_plan_t p;
    REQUIRE_OK(r, lf_plan_create(&p));
    REQUIRE_OK(r, lf_plan_input(p, "a", a, s, 1));
    const char *in[] = {"a"};
    REQUIRE_OK(r, lf_plan_op(p, "scale", in, 1, "x", "factor=3"));
    REQUIRE_OK(r, lf_plan_output(p, "x"));
    int ok = 0, cancelled = 0;
    // 10,000 races on shared memory; tcp's round trips cost several times
    // more, and 2,000 cover the same interleavings.
    const int races = std::getenv("LF_TRANSPORTS") == std::string("tcp") ? 2000 : 10000;
    for (int i = 0; i < races; ++i) {
      lf_job_t j;
      REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &j));
      REQUIRE_OK(r, lf_exec_cancel(j));
      lf_status_t st = lf_exec_wait(j, 30000);
      REQUIRE(r, st == LF_OK || st == LF_ERR_CANCELLED, "job %d: %s", i, lf_status_string(st));
      REQUIRE_ST(r, st, lf_exec_wait(j, 0));
      if (st == LF_OK) {
        lf_buffer_t v;
        REQUIRE_OK(r, lf_exec_fetch(j, "x", &v));
        REQUIRE(r, static_cast<const float *>(lf_buffer_data(v))[1] == 3 * (3 + 0.25f), "job %d: wrong result", i);
        REQUIRE_OK(r, lf_free(v));
      }
      (st == LF_OK ? ok : cancelled)++;
      REQUIRE_OK(r, lf_exec_release(j));
    }
    REQUIRE(r, ok + cancelled == races, "%d + %d terminal statuses for %d jobs", ok, cancelled, races);
    REQUIRE_OK(r, lf_plan_destroy(p));
    REQUIRE_OK(r, lf_free(a));
    await_health(r, c.c, "bytes_in_use", 0);
    done(r, c);
  });
}

TEST_P(Exec, WritingIntoAFetchedViewFaults) {
  with_service(2, [](Rank &r) {
    Client c = connect_world(r);
    lf_buffer_t a = tensor(r, c.ctx, 4096, 1);
    const int64_t s[1] = {4096};
    lf_plan_t p;
    REQUIRE_OK(r, lf_plan_create(&p));
    REQUIRE_OK(r, lf_plan_input(p, "a", a, s, 1));
    const char *in[] = {"a"};
    REQUIRE_OK(r, lf_plan_op(p, "plus_one", in, 1, "x", nullptr));
    REQUIRE_OK(r, lf_plan_output(p, "x"));
    lf_job_t j;
    REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &j));
    REQUIRE_OK(r, lf_exec_wait(j, -1));
    lf_buffer_t v;
    REQUIRE_OK(r, lf_exec_fetch(j, "x", &v));
    float *f = static_cast<float *>(lf_buffer_data(v));
    REQUIRE(r, f[5] == static_cast<const float *>(lf_buffer_data(a))[5] + 1, "plus_one gave %g", double(f[5]));
    const pid_t child = fork();
    if (child == 0) {
      f[5] = 0;  // must fault
      _exit(0);
    }
    int status = 0;
    REQUIRE(r, waitpid(child, &status, 0) == child, "waitpid");
    REQUIRE(r, WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS),
            "the write into the view did not fault (status %#x)", status);
    REQUIRE_OK(r, lf_free(v));
    REQUIRE_OK(r, lf_exec_release(j));
    REQUIRE_OK(r, lf_plan_destroy(p));
    REQUIRE_OK(r, lf_free(a));
    done(r, c);
  });
}

TEST_P(Exec, AFetchedViewOutlivesReleaseAndDisconnect) {
  // Rank 1 fetches a view, releases the job and disconnects; rank 2 then
  // runs a job of the same size (the service would reuse freed memory for
  // it); rank 1's view must still read what its own job computed.
  spawn(3, [](Rank &r) {
    if (r.rank == 0) return serve_world(r);
    Client c = connect_world(r);
    lf_buffer_t a = tensor(r, c.ctx, 100000, 5);
    const int64_t s[1] = {100000};
    lf_plan_t p;
    REQUIRE_OK(r, lf_plan_create(&p));
    REQUIRE_OK(r, lf_plan_input(p, "a", a, s, 1));
    const char *in[] = {"a"};
    REQUIRE_OK(r, lf_plan_op(p, "scale", in, 1, "x", r.rank == 1 ? "factor=-1" : "factor=7"));
    REQUIRE_OK(r, lf_plan_output(p, "x"));
    if (r.rank == 2) (void)r.await();  // after rank 1 let go of everything
    lf_job_t j;
    REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &j));
    REQUIRE_OK(r, lf_exec_wait(j, -1));
    lf_buffer_t v;
    REQUIRE_OK(r, lf_exec_fetch(j, "x", &v));
    REQUIRE_OK(r, lf_exec_release(j));
    if (r.rank == 2) {
      REQUIRE_OK(r, lf_free(v));
      r.signal('x');
    } else {
      REQUIRE_OK(r, lf_exec_disconnect(c.c));
      r.signal('r');
      (void)r.await();  // rank 2 ran its job
      const float *fa = static_cast<const float *>(lf_buffer_data(a));
      const float *fv = static_cast<const float *>(lf_buffer_data(v));
      for (int i = 0; i < 100000; ++i)
        REQUIRE(r, fv[i] == -fa[i], "view[%d] = %g after release and disconnect", i, double(fv[i]));
      REQUIRE_OK(r, lf_free(v));
    }
    REQUIRE_OK(r, lf_plan_destroy(p));
    REQUIRE_OK(r, lf_free(a));
    if (r.rank == 2) REQUIRE_OK(r, lf_exec_disconnect(c.c));
    r.signal('d');
    REQUIRE_OK(r, lf_finalize(c.ctx));
  });
  ASSERT_EQ(await(0), 's');
  ASSERT_EQ(await(1), 'r');
  signal(2, 'o');
  ASSERT_EQ(await(2), 'x');
  signal(1, 'o');
  ASSERT_EQ(await(1), 'd');
  ASSERT_EQ(await(2), 'd');
  signal(0, 'o');
  expect_all_ok(100);
}

TEST_P(Exec, AKilledServiceFailsEveryPendingJob) {
  spawn(2, [](Rank &r) {
    if (r.rank == 0) return serve_world(r, false);
    Client c = connect_world(r);
    (void)r.await();  // the service is up
    lf_plan_t p = spin_plan(r);
    lf_job_t j[3];
    for (auto &x : j) REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &x));
    REQUIRE_ST(r, LF_IN_PROGRESS, lf_exec_wait(j[0], 10));
    r.signal('c');
    const int64_t t0 = monotonic_ns();
    for (auto &x : j) REQUIRE_ST(r, LF_ERR_PEER_GONE, lf_exec_wait(x, 30000));
    const int64_t ms = (monotonic_ns() - t0) / 1000000;
    REQUIRE(r, ms < 1000, "noticed the dead service after %" PRId64 " ms", ms);
    lf_job_t late;
    REQUIRE(r, lf_exec_run(c.c, p, 0, &late) != LF_OK, "a run on a dead service succeeded");
    for (auto &x : j) REQUIRE_OK(r, lf_exec_release(x));
    REQUIRE_OK(r, lf_exec_disconnect(c.c));
    _exit(0);
  });
  ASSERT_EQ(await(0), 's');
  signal(1, 'o');
  ASSERT_EQ(await(1), 'c');
  kill(pid_of(0), SIGKILL);
  expect_all_ok(60, {0});
}

TEST_P(Exec, AKilledClientsJobsStopAndItsMemoryReturns) {
  spawn(3, [](Rank &r) {
    if (r.rank == 0) return serve_world(r, false);
    Client c = connect_world(r);
    if (r.rank == 1) {
      lf_buffer_t a = tensor(r, c.ctx, 1 << 18, 1);  // 1 MiB resident
      const int64_t s[1] = {1 << 18};
      lf_plan_t p;
      REQUIRE_OK(r, lf_plan_create(&p));
      REQUIRE_OK(r, lf_plan_input(p, "a", a, s, 1));
      REQUIRE_OK(r, lf_plan_output(p, "a"));
      lf_job_t j;
      REQUIRE_OK(r, lf_exec_run(c.c, p, 0, &j));
      REQUIRE_OK(r, lf_exec_wait(j, -1));
      lf_plan_t sp = spin_plan(r);
      lf_job_t spinning;
      REQUIRE_OK(r, lf_exec_run(c.c, sp, 0, &spinning));
      REQUIRE_ST(r, LF_IN_PROGRESS, lf_exec_wait(spinning, 10));
      r.signal('k');
      for (;;) pause();  // killed by the parent
    }
    (void)r.await();  // rank 1 holds memory and a running job, and is dead now
    await_health(r, c.c, "jobs_running", 0);
    await_health(r, c.c, "bytes_in_use", 0);
    await_health(r, c.c, "clients", 1);
    done(r, c, false);
  });
  ASSERT_EQ(await(0), 's');
  ASSERT_EQ(await(1), 'k');
  kill(pid_of(1), SIGKILL);
  signal(2, 'o');
  ASSERT_EQ(await(2), 'd');
  signal(0, 'o');
  expect_all_ok(60, {1});
}

TEST_P(Exec, AdmissionHoldsUnderTenThousandSubmits) {
  env.push_back({"LF_EXEC_QUEUE_MAX", "16"});
  env.push_back({"LF_EXEC_CLIENT_MEM_MAX", "256K"});
  with_service(2, [](Rank &r) {
    Client c = connect_world(r);
    lf_buffer_t a = tensor(r, c.ctx, 1024, 1);  // 4 KiB in, 4 KiB kept per job
    const int64_t s[1] = {1024};
    lf_plan_t p;
    REQUIRE_OK(r, lf_plan_create(&p));
    REQUIRE_OK(r, lf_plan_input(p, "a", a, s, 1));
    const char *in[] = {"a"};
    REQUIRE_OK(r, lf_plan_op(p, "scale", in, 1, "x", "factor=2"));
    REQUIRE_OK(r, lf_plan_output(p, "x"));
    std::vector<lf_job_t> jobs;
    int refused = 0;
    for (int i = 0; i < 10000; ++i) {
      lf_job_t j;
      lf_status_t st = lf_exec_run(c.c, p, 0, &j);
      REQUIRE(r, st == LF_OK || st == LF_ERR_BUSY, "submit %d: %s", i, lf_last_error());
      if (st == LF_OK)
        jobs.push_back(j);
      else
        ++refused;
      if (i % 64 == 0) {
        REQUIRE(r, health_number(r, c.c, "bytes_in_use") <= 256 * 1024, "past the memory cap");
        REQUIRE(r, health_number(r, c.c, "jobs_queued") <= 16, "past the queue");
      }
    }
    int ok = 0, busy = 0;
    for (lf_job_t j : jobs) {
      lf_status_t st = lf_exec_wait(j, -1);
      REQUIRE(r, st == LF_OK || st == LF_ERR_BUSY, "%s", lf_last_error());
      (st == LF_OK ? ok : busy)++;
    }
    REQUIRE(r, ok > 0 && ok <= 64 && refused + busy > 0, "ok %d, refused %d, busy %d", ok, refused, busy);
    for (lf_job_t j : jobs) REQUIRE_OK(r, lf_exec_release(j));
    await_health(r, c.c, "bytes_in_use", 0);
    REQUIRE_OK(r, lf_plan_destroy(p));
    REQUIRE_OK(r, lf_free(a));
    done(r, c);
  });
}

INSTANTIATE_TEST_SUITE_P(Transports, Exec, ::testing::Values("shm", "tcp"), [](const auto &p) { return p.param; });

/// By address: a service alone in its world, clients that come and go.
class ExecByAddress : public MultiProcess {
 protected:
  void SetUp() override { env.push_back({"LF_LOG_LEVEL", "error"}); }
  void relay(int to) {
    uint32_t n = 0;
    ASSERT_TRUE(read_report(0, &n, sizeof n));
    std::string a(n, '\0');
    ASSERT_TRUE(read_report(0, a.data(), n));
    for (int k = 1; k <= to; ++k) {
      send_to(k, &n, sizeof n);
      send_to(k, a.data(), n);
    }
  }
};

std::string hear_address(const Rank &r) {
  uint32_t n = 0;
  r.receive(&n, sizeof n);
  std::string s(n, '\0');
  r.receive(s.data(), n);
  return s;
}

/// Serve at `addr` until the parent says stop.
void serve_at(Rank &r, const char *addr, const char *token) {
  lf_context_t ctx = own_world(r, token);
  lf_exec_server_t s;
  REQUIRE_OK(r, lf_exec_server_start(ctx, addr, &s));
  char buf[256];
  REQUIRE_OK(r, lf_exec_server_address(s, buf, sizeof buf));
  uint32_t n = static_cast<uint32_t>(std::strlen(buf));
  r.report(&n, sizeof n);
  r.report(buf, n);
  (void)r.await();
  REQUIRE_OK(r, lf_exec_server_stop(s));
  REQUIRE_OK(r, lf_finalize(ctx));
}

TEST_F(ExecByAddress, AMalformedClientDoesNotDisturbAWellBehavedOne) {
  spawn(3, [](Rank &r) {
    if (r.rank == 0) return serve_at(r, ("unix:@lf-exec-test-" + std::to_string(getppid())).c_str(), nullptr);
    const std::string addr = hear_address(r);
    lf_context_t ctx = own_world(r, nullptr);
    if (r.rank == 1) {
      // Raw rpc on the same kind of channel: garbage plans and uploads.
      lf_channel_t ch;
      REQUIRE_OK(r, lf_connect(ctx, addr.c_str(), 10000, &ch));
      lf_rpc_client_t rc;
      REQUIRE_OK(r, lf_rpc_client_create(ch, &rc));
      const char junk[] = "LFXP-not-a-plan";
      for (const char *m : {"x.run", "x.put", "x.fetch", "x.release"}) {
        lf_rpc_request_t q;
        REQUIRE_OK(r, lf_rpc_call(rc, m, junk, sizeof junk, nullptr, 0, 0, &q));
        REQUIRE_ST(r, LF_ERR_PROTOCOL, lf_rpc_wait(q, 30000));
        REQUIRE_OK(r, lf_rpc_release(q));
      }
      r.signal('g');
      REQUIRE_OK(r, lf_rpc_client_destroy(rc));
      REQUIRE_OK(r, lf_channel_close(ch));
      REQUIRE_OK(r, lf_finalize(ctx));
      return;
    }
    lf_exec_client_t c;
    REQUIRE_OK(r, lf_exec_connect_addr(ctx, addr.c_str(), &c));
    (void)r.await();  // after the garbage
    lf_buffer_t a = tensor(r, ctx, 64, 2);
    const int64_t s[1] = {64};
    lf_plan_t p;
    REQUIRE_OK(r, lf_plan_create(&p));
    REQUIRE_OK(r, lf_plan_input(p, "a", a, s, 1));
    const char *in[] = {"a"};
    REQUIRE_OK(r, lf_plan_op(p, "sum", in, 1, "t", nullptr));
    REQUIRE_OK(r, lf_plan_output(p, "t"));
    lf_job_t j;
    REQUIRE_OK(r, lf_exec_run(c, p, 0, &j));
    REQUIRE_OK(r, lf_exec_wait(j, -1));
    lf_buffer_t v;
    REQUIRE_OK(r, lf_exec_fetch(j, "t", &v));
    double want = 0;
    for (int i = 0; i < 64; ++i) want += static_cast<const float *>(lf_buffer_data(a))[i];
    REQUIRE(r, *static_cast<const float *>(lf_buffer_data(v)) == static_cast<float>(want), "sum");
    char json[2048];
    REQUIRE_OK(r, lf_exec_health(c, json, sizeof json));
    REQUIRE(r, std::strstr(json, "\"device\":\"") && std::strstr(json, "\"matmul\""), "health: %s", json);
    REQUIRE_OK(r, lf_free(v));
    REQUIRE_OK(r, lf_exec_release(j));
    REQUIRE_OK(r, lf_plan_destroy(p));
    REQUIRE_OK(r, lf_free(a));
    REQUIRE_OK(r, lf_exec_disconnect(c));
    r.signal('d');
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  relay(2);
  ASSERT_EQ(await(1), 'g');
  signal(2, 'o');
  ASSERT_EQ(await(2), 'd');
  signal(0, 'o');
  expect_all_ok(60);
}

TEST_F(ExecByAddress, OverTcpAWrongOrMissingTokenIsRefused) {
  spawn(2, [](Rank &r) {
    if (r.rank == 0) return serve_at(r, "tcp://127.0.0.1:0", "the-secret");
    const std::string addr = hear_address(r);
    lf_context_t ctx = own_world(r, "not-the-secret");
    lf_exec_client_t c;
    REQUIRE(r, lf_exec_connect_addr(ctx, addr.c_str(), &c) != LF_OK, "a wrong token was accepted");
    unsetenv("LF_EXEC_TOKEN");
    REQUIRE(r, lf_exec_connect_addr(ctx, addr.c_str(), &c) != LF_OK, "a missing token was accepted");
    setenv("LF_EXEC_TOKEN", "the-secret", 1);
    REQUIRE_OK(r, lf_exec_connect_addr(ctx, addr.c_str(), &c));
    char json[2048];
    REQUIRE_OK(r, lf_exec_health(c, json, sizeof json));
    REQUIRE_OK(r, lf_exec_disconnect(c));
    r.signal('d');
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  relay(1);
  ASSERT_EQ(await(1), 'd');
  signal(0, 'o');
  expect_all_ok(60);
}

}  // namespace
