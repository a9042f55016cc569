// lf-bench-mpi-protocols: what a protocol over MPI costs before any lavaflow
// code runs. Raw MPI, and raw MPI moving messages the two ways the mpi
// transport could, measured in one run, interleaved round by round:
//
//   raw       MPI_Isend / MPI_Irecv posted before the message (the baseline)
//   envelope  the mpi transport's protocol: a 40-byte envelope into a ring of
//             persistent receives, then the payload on a tag of its own,
//             received once its envelope is seen
//   probe     one MPI message per message on a communicator of its own; the
//             receiver takes it with MPI_Improbe and MPI_Imrecv (what a
//             transport that lets MPI carry the tag would do)
//
//   mpirun -np 2 --bind-to core lf-bench-mpi-protocols [--rounds N] [--level single|multiple]
//
// Per size: one-way latency (ping-pong / 2) and time per message in a window
// of 16, as medians of rounds. --level is the thread level asked of MPI
// (lavaflow asks for multiple); it changes what every MPI call costs.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kWindow = 16, kSlots = 16, kEnv = 40, kSlotBytes = 8192 + kEnv, kMaxRounds = 99 };

static int peer, me;
static MPI_Comm ring_comm, probe_comm;
static MPI_Request ring[kSlots];
static char slots[kSlots][kSlotBytes];
static char env_out[kWindow][kEnv];
static int head;
static int next_send_tag = 1, next_recv_tag = 1;  // payload tags of the envelope protocol

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return v[n / 2];
}

static void wait_all(int n, MPI_Request *q) { MPI_Waitall(n, q, MPI_STATUSES_IGNORE); }

// ---- raw ------------------------------------------------------------------------
/// w messages on `comm` with tag 1, then wait for all.
static void send_window(char *p, int n, int w, MPI_Comm comm) {
  MPI_Request q[kWindow];
  for (int i = 0; i < w; ++i) MPI_Isend(p + (size_t)i * n, n, MPI_BYTE, peer, 1, comm, &q[i]);
  wait_all(w, q);
}
static void raw_send(char *p, int n, int w) { send_window(p, n, w, MPI_COMM_WORLD); }
static void raw_recv(char *p, int n, int w) {
  MPI_Request q[kWindow];
  for (int i = 0; i < w; ++i) MPI_Irecv(p + (size_t)i * n, n, MPI_BYTE, peer, 1, MPI_COMM_WORLD, &q[i]);
  wait_all(w, q);
}

// ---- envelope: envelope to the ring, payload on its own tag ---------------------
static int payload_tag(int *next) {
  int t = *next;
  *next = t == 1 << 20 ? 1 : t + 1;
  return t;
}
static void env_send(char *p, int n, int w) {
  MPI_Request q[2 * kWindow];
  for (int i = 0; i < w; ++i) {
    MPI_Isend(env_out[i], kEnv, MPI_BYTE, peer, 0, ring_comm, &q[2 * i]);
    MPI_Isend(p + (size_t)i * n, n, MPI_BYTE, peer, payload_tag(&next_send_tag), ring_comm, &q[2 * i + 1]);
  }
  wait_all(2 * w, q);
}
static void env_recv(char *p, int n, int w) {
  MPI_Request q[kWindow];
  int posted = 0, done = 0;
  while (done < w) {
    while (posted < w) {  // every envelope seen: post its payload's receive
      int flag = 0;
      MPI_Test(&ring[head], &flag, MPI_STATUS_IGNORE);
      if (!flag) break;
      MPI_Irecv(p + (size_t)posted * n, n, MPI_BYTE, peer, payload_tag(&next_recv_tag), ring_comm, &q[posted]);
      ++posted;
      MPI_Start(&ring[head]);
      head = (head + 1) % kSlots;
    }
    while (done < posted) {
      int flag = 0;
      MPI_Test(&q[done], &flag, MPI_STATUS_IGNORE);
      if (!flag) break;
      ++done;
    }
  }
}

// ---- probe: one message, taken with MPI_Improbe -----------------------------------
static void probe_send(char *p, int n, int w) { send_window(p, n, w, probe_comm); }
static void probe_recv(char *p, int n, int w) {
  MPI_Request q[kWindow];
  int posted = 0, done = 0;
  while (done < w) {
    while (posted < w) {
      int flag = 0, count = 0;
      MPI_Message msg;
      MPI_Status st;
      MPI_Improbe(peer, MPI_ANY_TAG, probe_comm, &flag, &msg, &st);
      if (!flag) break;
      MPI_Get_count(&st, MPI_BYTE, &count);
      MPI_Imrecv(p + (size_t)posted * n, count, MPI_BYTE, &msg, &q[posted]);
      ++posted;
    }
    while (done < posted) {
      int flag = 0;
      MPI_Test(&q[done], &flag, MPI_STATUS_IGNORE);
      if (!flag) break;
      ++done;
    }
  }
}

typedef void (*move_fn)(char *, int, int);
typedef struct {
  const char *name;
  move_fn send, recv;
} protocol;

static const protocol protocols[] = {
    {"raw", raw_send, raw_recv}, {"envelope", env_send, env_recv}, {"probe", probe_send, probe_recv}};
enum { kProtocols = sizeof protocols / sizeof protocols[0] };

/// Microseconds per message: ping-pong (w == 1, one way) or a window of w
/// messages answered by one byte.
static double run(const protocol *pr, char *buf, int n, int w, int iters) {
  char ack = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) {
    if (me == 0) {
      pr->send(buf, n, w);
      pr->recv(w == 1 ? buf : &ack, w == 1 ? n : 1, 1);
    } else {
      pr->recv(buf, n, w);
      pr->send(w == 1 ? buf : &ack, w == 1 ? n : 1, 1);
    }
  }
  double us = (MPI_Wtime() - t0) * 1e6;
  return w == 1 ? us / iters / 2 : us / iters / w;
}

int main(int argc, char **argv) {
  int rounds = 9, want = MPI_THREAD_MULTIPLE, got = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    if (!strcmp(argv[i], "--level") && i + 1 < argc)
      want = !strcmp(argv[++i], "single") ? MPI_THREAD_SINGLE : MPI_THREAD_MULTIPLE;
  }
  if (rounds < 1 || rounds > kMaxRounds) rounds = 9;
  MPI_Init_thread(&argc, &argv, want, &got);
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (me == 0) fprintf(stderr, "lf-bench-mpi-protocols: run me with mpirun -np 2\n");
    MPI_Finalize();
    return 2;
  }
  peer = 1 - me;
  MPI_Comm_dup(MPI_COMM_WORLD, &ring_comm);
  MPI_Comm_dup(MPI_COMM_WORLD, &probe_comm);
  for (int i = 0; i < kSlots; ++i) {
    MPI_Recv_init(slots[i], kSlotBytes, MPI_BYTE, peer, 0, ring_comm, &ring[i]);
    MPI_Start(&ring[i]);
  }
  const int sizes[] = {8, 4096, 65536, 1 << 20};
  char *buf = malloc((size_t)kWindow * (1 << 20));
  memset(buf, 1, (size_t)kWindow * (1 << 20));
  if (me == 0) {
    printf("# MPI thread level %d; medians of %d rounds, protocols interleaved\n", got, rounds);
    printf("%8s %6s %10s %10s %10s %10s %10s\n", "bytes", "window", "raw us", "envelope", "added", "probe", "added");
  }
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
    for (int w = 1; w <= kWindow; w += kWindow - 1) {
      int n = sizes[s];
      int iters = (n <= 4096 ? 20000 : n <= 65536 ? 3000 : 300) / w;
      double t[kProtocols][kMaxRounds];
      for (int p = 0; p < kProtocols; ++p) run(&protocols[p], buf, n, w, iters / 10 + 1);  // warm-up
      for (int r = 0; r < rounds; ++r)
        for (int k = 0; k < kProtocols; ++k) {
          int p = (k + r) % kProtocols;  // rotate which goes first
          t[p][r] = run(&protocols[p], buf, n, w, iters);
        }
      double m[kProtocols];
      for (int p = 0; p < kProtocols; ++p) m[p] = median(t[p], rounds);
      if (me == 0)
        printf("%8d %6d %10.3f %10.3f %+10.3f %10.3f %+10.3f\n", n, w, m[0], m[1], m[1] - m[0], m[2], m[2] - m[0]);
      fflush(stdout);
    }
  }
  for (int i = 0; i < kSlots; ++i) {
    MPI_Cancel(&ring[i]);
    MPI_Wait(&ring[i], MPI_STATUS_IGNORE);
    MPI_Request_free(&ring[i]);
  }
  free(buf);
  MPI_Comm_free(&probe_comm);
  MPI_Comm_free(&ring_comm);
  MPI_Finalize();
  return 0;
}
