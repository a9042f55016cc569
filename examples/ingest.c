/*
 * ingest: read a file in chunks into lavaflow buffers with io_uring, and
 * (with two ranks) send it on to the peer as it is read.
 *
 *   ./ingest FILE                      one rank: read FILE, print a checksum
 *   mpirun -np 2 ./ingest FILE         rank 0 reads and sends, rank 1 receives
 *   LF_RANK=0 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-ingest.sock ./ingest FILE &
 *   LF_RANK=1 LF_SIZE=2 LF_BOOTSTRAP=unix:/tmp/lf-ingest.sock ./ingest FILE
 *
 * What it shows:
 *  - lf_ingest_next hands out chunks in file order; lf_free gives each back
 *    to the ring (holding them would stall the reads, never grow memory);
 *  - lf_ingest_path_taken says how the file is read and why (io_uring with
 *    registered buffers, or the fallback and its reason);
 *  - lf_ingest_send: host-shared chunks cross a shared-memory channel as
 *    descriptors; the receiver frees each view, which frees the sender's
 *    ring place; a zero-byte message ends the file.
 */
#include <lavaflow/lavaflow.h>

#include <stdio.h>
#include <stdlib.h>
#include "example_util.h"

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FILE\n", argv[0]);
    return 2;
  }
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  const int rank = lf_rank(ctx), size = lf_size(ctx);
  lf_ingest_params_t p = LF_INGEST_PARAMS_INIT;
  p.kind = size > 1 ? LF_MEM_HOST_SHARED : LF_MEM_HOST; /* shared chunks travel by descriptor */
  p.chunk_bytes = 1 << 20;
  p.queue_depth = 8;

  if (size == 1) {
    lf_ingest_t in;
    CHECK(lf_ingest_open(ctx, argv[1], 0, 0, &p, &in));
    printf("path: %s\n", lf_ingest_path_taken(in));
    uint64_t h = 0xcbf29ce484222325ull, bytes = 0;
    const double t0 = now_us();
    for (;;) {
      lf_buffer_t chunk;
      uint64_t offset;
      CHECK(lf_ingest_next(in, &chunk, &offset, -1));
      if (!chunk) break; /* the end of the file */
      h = fnv(h, lf_buffer_data(chunk), lf_buffer_size(chunk));
      bytes += lf_buffer_size(chunk);
      CHECK(lf_free(chunk)); /* back to the ring */
    }
    const double us = now_us() - t0;
    printf("%llu bytes in %.1f ms, checksum %016llx\n", (unsigned long long)bytes, us / 1e3, (unsigned long long)h);
    CHECK(lf_ingest_close(in));
  } else if (rank < 2) {
    lf_channel_t ch;
    CHECK(lf_channel_open(ctx, 1 - rank, &ch));
    if (rank == 0) {
      lf_ingest_t in;
      CHECK(lf_ingest_open(ctx, argv[1], 0, 0, &p, &in));
      printf("path: %s\nchannel: %s (%s)\n", lf_ingest_path_taken(in), lf_channel_transport(ch), lf_channel_reason(ch));
      CHECK(lf_ingest_send(in, ch, 1));
      CHECK(lf_ingest_close(in));
    } else {
      uint64_t h = 0xcbf29ce484222325ull, bytes = 0;
      for (;;) {
        lf_request_t req;
        lf_buffer_t chunk;
        CHECK(lf_irecv_buffer(ch, 1, &req));
        CHECK(lf_wait_buffer(req, &chunk, NULL));
        const size_t n = lf_buffer_size(chunk);
        if (n) h = fnv(h, lf_buffer_data(chunk), n);
        bytes += n;
        CHECK(lf_free(chunk)); /* the sender's ring place frees */
        if (n == 0) break;     /* the zero-byte end marker */
      }
      printf("rank 1 received %llu bytes, checksum %016llx\n", (unsigned long long)bytes, (unsigned long long)h);
    }
    CHECK(lf_channel_close(ch));
  }
  CHECK(lf_finalize(ctx));
  return 0;
}
