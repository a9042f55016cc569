/*
 * zero_copy: rank 0 sends buffers from the context's shared pool; over a
 * shared-memory channel only a descriptor travels and rank 1 receives a
 * view of the same physical memory. Freeing the view returns the buffer to
 * rank 0's pool.
 *
 * Ownership rules shown here:
 *  - lf_isend_buffer takes the buffer: the sender must not touch or free it
 *    afterwards (the pool gets it back when the receiver frees its view).
 *  - lf_wait_buffer hands the receiver a buffer it owns; lf_free releases it.
 *    A view stays readable even if the channel closes first.
 *
 *   mpirun -np 2 ./zero_copy
 *   LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-zc.sock ./zero_copy &
 *   LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-zc.sock ./zero_copy
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
  if (lf_size(ctx) != 2) {
    fprintf(stderr, "zero_copy needs exactly 2 ranks\n");
    lf_finalize(ctx);
    return 1;
  }
  int rank = lf_rank(ctx);
  lf_channel_t ch;
  CHECK(lf_channel_open(ctx, 1 - rank, &ch));
  lf_pool_t pool;
  CHECK(lf_shared_pool(ctx, &pool));

  enum { ROUNDS = 1000 };
  const size_t bytes = 4u << 20;
  if (rank == 0) {
    printf("transport: %s (%s)\n", lf_channel_transport(ch), lf_channel_reason(ch));
    double t0 = now_us();
    for (int i = 0; i < ROUNDS; ++i) {
      lf_buffer_t buf;
      CHECK(lf_pool_acquire(pool, bytes, &buf));
      ((int *)lf_buffer_data(buf))[0] = i; /* the receiver sees this very memory */
      lf_request_t req;
      CHECK(lf_isend_buffer(ch, buf, 7, &req)); /* buf belongs to lavaflow now */
      CHECK(lf_wait(req, NULL));
      char ack;
      CHECK(lf_recv(ch, &ack, 1, 8, NULL)); /* the receiver has freed its view */
    }
    double us = (now_us() - t0) / ROUNDS;
    lf_pool_stats_t st = LF_POOL_STATS_INIT;
    CHECK(lf_pool_stats(pool, &st));
    printf("%d rounds of %zu MiB: %.2f us per round (send + view + free + ack)\n", ROUNDS, bytes >> 20, us);
    printf("pool: %llu hits, %llu misses, %llu buffers in use\n", (unsigned long long)st.hits,
           (unsigned long long)st.misses, (unsigned long long)st.in_use_buffers);
  } else {
    for (int i = 0; i < ROUNDS; ++i) {
      lf_request_t req;
      CHECK(lf_irecv_buffer(ch, 7, &req));
      lf_buffer_t view;
      lf_completion_t info = LF_COMPLETION_INIT;
      CHECK(lf_wait_buffer(req, &view, &info));
      if (((int *)lf_buffer_data(view))[0] != i || info.bytes != bytes) {
        fprintf(stderr, "round %d: unexpected content or size\n", i);
        return 1;
      }
      if (i == 0)
        printf("rank 1 got a %s buffer of %zu bytes\n", lf_memory_kind_string(lf_buffer_kind(view)), info.bytes);
      CHECK(lf_free(view)); /* returns the memory to rank 0's pool */
      CHECK(lf_send(ch, "k", 1, 8));
    }
  }
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  return 0;
}
