/*
 * demo: every rank prints where it runs, how it sees every other rank, the
 * transport a channel to that rank picks and why, and a quick ping-pong
 * latency over it.
 *
 *   mpirun -np 2 ./demo
 *   LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf.sock ./demo &
 *   LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf.sock ./demo
 */
#include <lavaflow/lavaflow.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "example_util.h"

int main(void) {
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  int rank = lf_rank(ctx), size = lf_size(ctx);

  char loc[4096];
  CHECK(lf_location_json(ctx, rank, loc, sizeof loc, NULL));
  /* Print rank by rank so the output reads in order. */
  for (int r = 0; r < size; ++r) {
    if (r == rank) {
      printf("rank %d of %d location %s\n", rank, size, loc);
      fflush(stdout);
    }
    CHECK(lf_barrier(ctx));
  }

  /* Every pair opens a channel; ranks open in increasing peer order. */
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    char why[512];
    CHECK(lf_scope_explain(ctx, peer, why, sizeof why));
    lf_channel_t ch;
    CHECK(lf_channel_open(ctx, peer, &ch));

    /* 8-byte ping-pong: the lower rank pings, the higher rank answers. */
    enum { WARMUP = 1000, ITERS = 10000 };
    char msg[8] = "lavaflow";
    double t0 = 0;
    for (int i = 0; i < WARMUP + ITERS; ++i) {
      if (i == WARMUP) t0 = now_us();
      if (rank < peer) {
        CHECK(lf_send(ch, msg, sizeof msg, 7));
        CHECK(lf_recv(ch, msg, sizeof msg, 7, NULL));
      } else {
        CHECK(lf_recv(ch, msg, sizeof msg, 7, NULL));
        CHECK(lf_send(ch, msg, sizeof msg, 7));
      }
    }
    double one_way = (now_us() - t0) / ITERS / 2;
    printf("rank %d -> %d: scope %s (%s); transport %s (%s); 8 B one-way %.2f us\n", rank, peer,
           lf_scope_string(lf_scope(ctx, peer)), why, lf_channel_transport(ch), lf_channel_reason(ch), one_way);
    fflush(stdout);
    CHECK(lf_channel_close(ch));
  }
  CHECK(lf_barrier(ctx));
  CHECK(lf_finalize(ctx));
  return 0;
}
