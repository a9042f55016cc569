/*
 * pingpong: two ranks bounce messages of growing size over one channel and
 * print the one-way latency (round trip / 2, median) for each size, plus the
 * transport the channel chose and why. Only the public C API is used.
 *
 *   mpirun -np 2 ./pingpong
 *   LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-pp.sock ./pingpong &
 *   LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-pp.sock ./pingpong
 */
#include <lavaflow/lavaflow.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "example_util.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  int rank = lf_rank(ctx), size = lf_size(ctx);
  if (size != 2) {
    fprintf(stderr, "pingpong needs exactly 2 ranks (got %d)\n", size);
    lf_finalize(ctx);
    return 1;
  }
  int peer = 1 - rank;
  lf_channel_t ch;
  CHECK(lf_channel_open(ctx, peer, &ch));
  if (rank == 0) printf("transport: %s (%s)\n", lf_channel_transport(ch), lf_channel_reason(ch));

  const size_t max_size = 4u << 20;
  char *buf = malloc(max_size);
  if (!buf) return 1;
  memset(buf, rank, max_size);
  enum { SAMPLES = 21 };
  if (rank == 0) printf("%10s %14s\n", "bytes", "one-way (us)");
  for (size_t n = 8; n <= max_size; n *= 4) {
    int iters = n <= 65536 ? 2000 : 50;
    double sample[SAMPLES];
    for (int s = -1; s < SAMPLES; ++s) { /* s == -1 is the warm-up round */
      double t0 = now_us();
      for (int i = 0; i < iters; ++i) {
        if (rank == 0) {
          CHECK(lf_send(ch, buf, n, 1));
          CHECK(lf_recv(ch, buf, n, 1, NULL));
        } else {
          CHECK(lf_recv(ch, buf, n, 1, NULL));
          CHECK(lf_send(ch, buf, n, 1));
        }
      }
      if (s >= 0) sample[s] = (now_us() - t0) / iters / 2;
    }
    qsort(sample, SAMPLES, sizeof sample[0], cmp_double);
    if (rank == 0) printf("%10zu %14.3f\n", n, sample[SAMPLES / 2]);
  }
  free(buf);
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  return 0;
}
