/* A long-lived service and its clients, connected by address, with request
 * channels (lavaflow_rpc.h).
 *
 *   LF_EXEC_TOKEN=secret rpc_service serve ADDRESS [ADDRESS_FILE]
 *       listens on ADDRESS (tcp://HOST:PORT, unix:/path), writes the bound
 *       address to ADDRESS_FILE, and serves "sum" (the float32 payload's sum,
 *       as a float32 response) until a client calls "stop".
 *   LF_EXEC_TOKEN=secret rpc_service call ADDRESS [CALLS]
 *       connects, prints the transport chosen and why, checks CALLS sums of
 *       1 MiB of floats and prints the median round trip; then "stop".
 *
 * Both processes are worlds of one: neither is launched with the other. */
#include <lavaflow/lavaflow.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                                               \
  do {                                                                                                            \
    lf_status_t st_ = (call);                                                                                     \
    if (st_ != LF_OK) {                                                                                           \
      fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call, lf_status_string(st_), lf_last_error()); \
      exit(1);                                                                                                    \
    }                                                                                                             \
  } while (0)

static atomic_int g_stop; /* set by the "stop" handler on a server thread */

static lf_status_t sum(lf_rpc_call_t call, void *user) {
  (void)user;
  size_t n = 0;
  const float *x = lf_rpc_call_payload(call, &n);
  float s = 0;
  for (size_t i = 0; i < n / sizeof(float); ++i) {
    if ((i & 65535) == 0 && lf_rpc_call_cancelled(call)) return LF_ERR_CANCELLED;
    s += x[i];
  }
  return lf_rpc_call_respond(call, NULL, 0, &s, sizeof s);
}

static lf_status_t stop(lf_rpc_call_t call, void *user) {
  (void)call, (void)user;
  atomic_store(&g_stop, 1);
  return LF_OK;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int serve(const char *address, const char *address_file) {
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  lf_listener_t l;
  CHECK(lf_listen(ctx, address, &l));
  char bound[256];
  CHECK(lf_listener_address(l, bound, sizeof bound));
  printf("rpc_service: serving on %s\n", bound);
  fflush(stdout);
  if (address_file) {
    FILE *f = fopen(address_file, "w");
    if (!f || fprintf(f, "%s\n", bound) < 0 || fclose(f) != 0) return 1;
  }
  lf_rpc_server_t s;
  CHECK(lf_rpc_server_create(2, &s));
  CHECK(lf_rpc_server_register(s, "sum", sum, NULL));
  CHECK(lf_rpc_server_register(s, "stop", stop, NULL));
  while (!atomic_load(&g_stop)) {
    lf_channel_t ch;
    lf_status_t st = lf_accept(l, 100, &ch);
    if (st == LF_OK) {
      printf("rpc_service: a client: %s (%s)\n", lf_channel_transport(ch), lf_channel_reason(ch));
      fflush(stdout);
      CHECK(lf_rpc_server_serve(s, ch));
    } else if (st != LF_ERR_TIMEOUT) {
      printf("rpc_service: refused a client: %s\n", lf_last_error());
    }
  }
  CHECK(lf_rpc_server_destroy(s));
  CHECK(lf_listener_close(l));
  CHECK(lf_finalize(ctx));
  return 0;
}

static int call(const char *address, int calls) {
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  lf_channel_t ch;
  CHECK(lf_connect(ctx, address, 10000, &ch));
  printf("rpc_service: connected over %s (%s)\n", lf_channel_transport(ch), lf_channel_reason(ch));
  lf_rpc_client_t c;
  CHECK(lf_rpc_client_create(ch, &c));
  const size_t n = (1u << 20) / sizeof(float);
  float *x = malloc(n * sizeof(float));
  double *t = malloc((size_t)calls * sizeof(double));
  if (!x || !t) return 1;
  for (size_t i = 0; i < n; ++i) x[i] = (float)(i % 7);
  float want = 0;
  for (size_t i = 0; i < n; ++i) want += x[i];
  for (int i = 0; i < calls; ++i) {
    double t0 = now_us();
    lf_rpc_request_t r;
    CHECK(lf_rpc_call(c, "sum", NULL, 0, x, n * sizeof(float), 5000, &r));
    CHECK(lf_rpc_wait(r, -1));
    const void *p;
    size_t pl;
    CHECK(lf_rpc_response(r, NULL, NULL, &p, &pl));
    float got;
    memcpy(&got, p, sizeof got);
    if (pl != sizeof got || got != want) {
      fprintf(stderr, "rpc_service: sum %g, want %g\n", got, want);
      return 1;
    }
    CHECK(lf_rpc_release(r));
    t[i] = now_us() - t0;
  }
  qsort(t, (size_t)calls, sizeof *t, cmp);
  printf("rpc_service: %d calls of sum(1 MiB of float32) checked; median round trip %.1f us\n", calls, t[calls / 2]);
  lf_rpc_request_t r;
  CHECK(lf_rpc_call(c, "stop", NULL, 0, NULL, 0, 5000, &r));
  CHECK(lf_rpc_wait(r, -1));
  CHECK(lf_rpc_release(r));
  CHECK(lf_rpc_client_destroy(c));
  CHECK(lf_finalize(ctx));
  free(x);
  free(t);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "serve")) return serve(argv[2], argc > 3 ? argv[3] : NULL);
  if (argc >= 3 && !strcmp(argv[1], "call")) return call(argv[2], argc > 3 ? atoi(argv[3]) : 200);
  fprintf(stderr, "usage: %s serve ADDRESS [ADDRESS_FILE] | call ADDRESS [CALLS]\n", argv[0]);
  return 2;
}
