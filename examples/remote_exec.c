/*
 * Remote execution: a client sends two 4 MiB tensors to an execution
 * service (tools/lf-execd), runs add -> matmul -> sum there, fetches the
 * results read-only and checks them against the same computation on its
 * own CPU.
 *
 *   LF_EXEC_TOKEN=secret lf-execd tcp://0.0.0.0:7000 &
 *   LF_EXEC_TOKEN=secret remote_exec tcp://HOST:7000
 *   remote_exec unix:/run/lf-exec.sock      # same host: results by descriptor
 *
 * It prints where each op ran, how the connection went (shared memory or
 * tcp) and the time of each step.
 */
#define _POSIX_C_SOURCE 200809L
#include <lavaflow/lavaflow.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 1024 /* a and b: N x N float32 = 4 MiB each */
#define M 16   /* w: N x M */

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

#define CHECK(call)                                                                                \
  do {                                                                                             \
    lf_status_t st_ = (call);                                                                      \
    if (st_ != LF_OK) {                                                                            \
      fprintf(stderr, "remote_exec: %s: %s: %s\n", #call, lf_status_string(st_), lf_last_error()); \
      return 1;                                                                                    \
    }                                                                                              \
  } while (0)

static lf_buffer_t filled(lf_context_t ctx, size_t n, unsigned seed) {
  lf_buffer_t b;
  if (lf_alloc(ctx, n * sizeof(float), LF_MEM_HOST, &b) != LF_OK) return NULL;
  float *f = lf_buffer_data(b);
  for (size_t i = 0; i < n; ++i) f[i] = (float)((i * 2654435761u + seed) % 1000) / 1000.0f - 0.5f;
  return b;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: remote_exec ADDRESS   (the address lf-execd printed)\n");
    return 2;
  }
  setenv("LF_SIZE", "1", 1); /* a client is a world of its own */
  setenv("LF_RANK", "0", 1);
  unsetenv("LF_BOOTSTRAP");
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  lf_exec_client_t c;
  double t0 = now_ms();
  CHECK(lf_exec_connect_addr(ctx, argv[1], &c));
  double t_connect = now_ms() - t0;
  char health[4096];
  CHECK(lf_exec_health(c, health, sizeof health));
  printf("connected over %s; service: %s\n", lf_exec_client_transport(c), health);

  lf_buffer_t a = filled(ctx, (size_t)N * N, 1), b = filled(ctx, (size_t)N * N, 2), w = filled(ctx, (size_t)N * M, 3);
  if (!a || !b || !w) return 1;
  const int64_t sq[2] = {N, N}, sw[2] = {N, M};
  lf_plan_t p;
  CHECK(lf_plan_create(&p));
  CHECK(lf_plan_input(p, "a", a, sq, 2));
  CHECK(lf_plan_input(p, "b", b, sq, 2));
  CHECK(lf_plan_input(p, "w", w, sw, 2));
  const char *ab[] = {"a", "b"}, *cw[] = {"c", "w"}, *d[] = {"d"};
  CHECK(lf_plan_op(p, "add", ab, 2, "c", NULL));
  CHECK(lf_plan_op(p, "matmul", cw, 2, "d", NULL));
  CHECK(lf_plan_op(p, "sum", d, 1, "s", NULL));
  CHECK(lf_plan_output(p, "d"));
  CHECK(lf_plan_output(p, "s"));

  lf_job_t j;
  t0 = now_ms();
  CHECK(lf_exec_run(c, p, 60000, &j));
  double t_sent = now_ms() - t0;
  CHECK(lf_exec_wait(j, -1));
  double t_done = now_ms() - t0;
  lf_buffer_t dv, sv;
  t0 = now_ms();
  CHECK(lf_exec_fetch(j, "d", &dv));
  double t_fetch = now_ms() - t0;
  CHECK(lf_exec_fetch(j, "s", &sv));

  /* The same on this CPU, in double. */
  const float *fa = lf_buffer_data(a), *fb = lf_buffer_data(b), *fw = lf_buffer_data(w);
  const float *got = lf_buffer_data(dv);
  double sum = 0, worst = 0;
  for (int i = 0; i < N; ++i)
    for (int k = 0; k < M; ++k) {
      double acc = 0;
      for (int x = 0; x < N; ++x) acc += ((double)fa[i * N + x] + fb[i * N + x]) * fw[x * M + k];
      sum += acc;
      double err = fabs(acc - got[i * M + k]) / (1 + fabs(acc));
      if (err > worst) worst = err;
    }
  const float s = *(const float *)lf_buffer_data(sv);
  const double serr = fabs(sum - s) / (1 + fabs(sum));
  char info[2048];
  CHECK(lf_exec_job_info(j, info, sizeof info));
  printf("job: %s\n", info);
  printf("connect %.2f ms; upload 2 x 4 MiB + plan %.2f ms; job done after %.2f ms; fetch of d (%zu B) %.3f ms\n",
         t_connect, t_sent, t_done, lf_buffer_size(dv), t_fetch);
  printf("check against the CPU: d max rel. error %.2e, sum %.6g vs %.6g (rel. error %.2e): %s\n", worst, (double)s,
         sum, serr, worst < 1e-3 && serr < 1e-3 ? "ok" : "WRONG");
  int bad = !(worst < 1e-3 && serr < 1e-3);
  lf_free(dv);
  lf_free(sv);
  lf_exec_release(j);
  lf_plan_destroy(p);
  lf_free(a);
  lf_free(b);
  lf_free(w);
  lf_exec_disconnect(c);
  lf_finalize(ctx);
  return bad;
}
