/*
 * multihost: every rank opens a channel to every other rank, says where each
 * peer runs (self / local / remote) and which transport the channel chose,
 * then passes a checksummed 16 MiB block around a ring and reports the
 * bandwidth of each hop. The same binary runs unchanged on one host, across
 * real hosts and across simulated ones; only the launch differs.
 *
 * A real cluster (lavaflow picks shm within a node, mpi across nodes):
 *   mpirun -np 4 --host nodeA:2,nodeB:2 ./multihost
 *
 * Without MPI (tcp across hosts): start rank 0 on nodeA, the others anywhere,
 * all with the same rendezvous address (rank 0 serves it):
 *   LF_RANK=0 LF_SIZE=4 LF_BOOTSTRAP=tcp://nodeA:7700 ./multihost   # on nodeA
 *   LF_RANK=1 LF_SIZE=4 LF_BOOTSTRAP=tcp://nodeA:7700 ./multihost   # ...
 *
 * Two simulated hosts on one Linux machine (root; see docs/transports.md):
 *   scripts/netns-hosts.sh up                    # hosts 1 and 2: 10.77.0.1, 10.77.0.2
 *   for r in 0 1 2 3; do
 *     LF_RANK=$r LF_SIZE=4 LF_BOOTSTRAP=tcp://10.77.0.1:7700 \
 *       scripts/netns-hosts.sh exec $((r / 2 + 1)) ./multihost &
 *   done; wait
 *   # or mpirun itself across them:
 *   scripts/netns-hosts.sh exec 1 mpirun --allow-run-as-root \
 *     --mca plm_rsh_agent "$PWD/scripts/netns-hosts.sh rsh" --host lf-host1:2,lf-host2:2 -np 4 ./multihost
 *   scripts/netns-hosts.sh down
 */
#include <lavaflow/lavaflow.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "example_util.h"

enum { kBlock = 16 << 20, kRounds = 8 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

int main(void) {
  lf_context_t ctx;
  CHECK(lf_init(&ctx));
  int rank = lf_rank(ctx), size = lf_size(ctx);

  /* Where is everybody, and what would carry the traffic? */
  lf_channel_t *ch = calloc((size_t)size, sizeof *ch);
  for (int k = 1; k < size; ++k) {
    int peer = (rank + k) % size; /* any order works; each rank uses its own */
    CHECK(lf_channel_open(ctx, peer, &ch[peer]));
  }
  for (int peer = 0; peer < size; ++peer) {
    char why[256];
    CHECK(lf_scope_explain(ctx, peer, why, sizeof why));
    printf("rank %d -> %d: %-6s %-4s (%s)\n", rank, peer, lf_scope_string(lf_scope(ctx, peer)),
           peer == rank ? "-" : lf_channel_transport(ch[peer]), peer == rank ? why : lf_channel_reason(ch[peer]));
  }
  fflush(stdout);
  CHECK(lf_barrier(ctx));
  if (size < 2) {
    printf("a world of one rank: nothing to pass around\n");
    CHECK(lf_finalize(ctx));
    return 0;
  }

  /* The ring: receive from the left, send to the right, kRounds times. */
  int left = (rank + size - 1) % size, right = (rank + 1) % size;
  unsigned char *out = malloc(kBlock), *in = malloc(kBlock);
  for (size_t i = 0; i < kBlock; ++i) out[i] = (unsigned char)(i * 131 + (size_t)rank * 7);
  uint64_t want = 0;
  {
    /* What the left neighbour sends, for checking. */
    unsigned char *tmp = malloc(kBlock);
    for (size_t i = 0; i < kBlock; ++i) tmp[i] = (unsigned char)(i * 131 + (size_t)left * 7);
    want = fnv1a(tmp, kBlock);
    free(tmp);
  }
  double t0 = now_s();
  for (int r = 0; r < kRounds; ++r) {
    lf_request_t rq, sq;
    CHECK(lf_irecv(ch[left], in, kBlock, (uint64_t)r, &rq));
    CHECK(lf_isend(ch[right], out, kBlock, (uint64_t)r, &sq));
    size_t got = 0;
    CHECK(lf_wait(rq, &got));
    CHECK(lf_wait(sq, NULL));
    if (got != kBlock || fnv1a(in, kBlock) != want) {
      fprintf(stderr, "rank %d: round %d from rank %d arrived damaged\n", rank, r, left);
      return 1;
    }
  }
  double secs = now_s() - t0;
  printf("rank %d: %d x %d MiB from rank %d over %s, checksums ok, %.2f GB/s\n", rank, kRounds, kBlock >> 20, left,
         lf_channel_transport(ch[left]), (double)kBlock * kRounds / secs / 1e9);
  fflush(stdout);

  CHECK(lf_barrier(ctx));
  for (int peer = 0; peer < size; ++peer)
    if (ch[peer]) CHECK(lf_channel_close(ch[peer]));
  free(ch);
  free(in);
  free(out);
  CHECK(lf_finalize(ctx));
  return 0;
}
