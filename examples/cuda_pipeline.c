/*
 * cuda_pipeline: a producer fills CUDA device memory, a consumer on the same
 * host reads it with no copy between the processes.
 *
 *   rank 0 (producer)  takes device buffers from a CUDA pool, writes a
 *                      pattern into each (lf_buffer_write: pinned,
 *                      double-buffered staging) and sends it;
 *   rank 1 (consumer)  receives a view of the producer's memory (on one host
 *                      the channel uses "cuda-ipc": the allocation's IPC
 *                      handle crosses once and is cached, then only a
 *                      descriptor), checks it, and frees the view, which
 *                      returns the buffer to the producer's pool.
 *
 * The device pointer of a view (lf_buffer_device_pointer) can be handed to
 * kernels or libraries in the consumer directly.
 *
 *   LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-cuda.sock ./cuda_pipeline &
 *   LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-cuda.sock ./cuda_pipeline
 *
 * Exits with 77 (and CUDA's reason) where CUDA cannot run.
 */
#include <lavaflow/lavaflow.h>
#include <lavaflow/lavaflow_gpu.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "example_util.h"

enum { ROUNDS = 16, TAG = 7 };
#define BYTES ((size_t)8 << 20)

int main(void) {
  /* CUDA is initialised in each process after any fork a launcher did. */
  lf_alloc_params_t ap = LF_ALLOC_PARAMS_INIT;
  ap.strict = 1;
  lf_buffer_t probe;
  if (lf_alloc_ex(NULL, 4096, LF_MEM_CUDA_DEVICE, &ap, &probe) != LF_OK) {
    printf("cuda_pipeline: no CUDA device memory here: %s\n", lf_last_error());
    return 77;
  }
  CHECK(lf_free(probe));

  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  if (lf_size(ctx) != 2) {
    fprintf(stderr, "cuda_pipeline needs exactly 2 ranks\n");
    return 1;
  }
  const int rank = lf_rank(ctx);
  lf_channel_params_t cp = LF_CHANNEL_PARAMS_INIT;
  cp.memory_kind = LF_MEM_CUDA_DEVICE;
  lf_channel_t ch;
  CHECK(lf_channel_open_ex(ctx, 1 - rank, &cp, &ch));
  printf("rank %d: transport %s (%s)\n", rank, lf_channel_transport(ch), lf_channel_reason(ch));

  uint32_t *host = malloc(BYTES);
  const size_t words = BYTES / 4;
  if (rank == 0) {
    lf_pool_params_t pp = LF_POOL_PARAMS_INIT;
    pp.kind = LF_MEM_CUDA_DEVICE;
    pp.strict = 1;
    lf_pool_t pool;
    CHECK(lf_pool_create(ctx, &pp, &pool));
    for (uint32_t r = 0; r < ROUNDS; ++r) {
      lf_buffer_t buf;
      CHECK(lf_pool_acquire(pool, BYTES, &buf));
      for (size_t i = 0; i < words; ++i) host[i] = r * 1000003u + (uint32_t)i;
      CHECK(lf_buffer_write(buf, 0, host, BYTES));
      lf_request_t req;
      CHECK(lf_isend_buffer(ch, buf, TAG, &req));
      CHECK(lf_wait(req, NULL));
    }
    /* Wait for the consumer before the pool goes: its views are our memory. */
    CHECK(lf_barrier(ctx));
    lf_pool_stats_t s = LF_POOL_STATS_INIT;
    CHECK(lf_pool_stats(pool, &s));
    printf("rank 0: pool hit rate %.0f%% (buffers came back from rank 1)\n", 100 * s.hit_rate);
    CHECK(lf_pool_destroy(pool));
  } else {
    for (uint32_t r = 0; r < ROUNDS; ++r) {
      lf_request_t req;
      lf_buffer_t view;
      CHECK(lf_irecv_buffer(ch, TAG, &req));
      CHECK(lf_wait_buffer(req, &view, NULL));
      void *dev;
      CHECK(lf_buffer_device_pointer(view, &dev));
      CHECK(lf_buffer_read(view, 0, host, BYTES));
      for (size_t i = 0; i < words; ++i) {
        if (host[i] != r * 1000003u + (uint32_t)i) {
          fprintf(stderr, "rank 1: round %u word %zu is %u\n", r, i, host[i]);
          return 1;
        }
      }
      CHECK(lf_free(view)); /* back to rank 0's pool */
    }
    printf("rank 1: %d buffers of %zu MiB checked\n", ROUNDS, BYTES >> 20);
    CHECK(lf_barrier(ctx));
  }
  free(host);
  CHECK(lf_channel_close(ch));
  CHECK(lf_finalize(ctx));
  return 0;
}
