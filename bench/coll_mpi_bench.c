/*
 * lf-bench-coll-mpi: the patterns of lf-bench-coll (coll_bench.cpp) with
 * Open MPI's collectives, for scripts/bench-coll.sh. Same options, same
 * rows, same cache-line floor.
 */
#include <fcntl.h>
#include <mpi.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int cmp(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

static double pick(double *v, int n, double q) { return v[(int)(q * (n - 1) + 0.5)]; }

static double floor_us(int rank, int samples) {
  char name[64] = {0};
  if (rank == 0) snprintf(name, sizeof name, "/lf-bench-coll-mpi-%d", (int)getpid());
  MPI_Bcast(name, sizeof name, MPI_CHAR, 0, MPI_COMM_WORLD);
  int fd = rank == 0 ? shm_open(name, O_CREAT | O_RDWR | O_EXCL, 0600) : -1;
  if (rank == 0 && (fd < 0 || ftruncate(fd, 4096) != 0)) exit(1);
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 1) fd = shm_open(name, O_RDWR, 0600);
  double result = 0;
  if (rank <= 1) {
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) exit(1);
    _Atomic uint64_t *line = (_Atomic uint64_t *)p;
    MPI_Barrier(MPI_COMM_WORLD);
    const int iters = 10000;
    double v[102];
    uint64_t seq = 0;
    for (int s = 0; s < samples + 1; ++s) {
      double t0 = MPI_Wtime();
      for (int i = 0; i < iters; ++i) {
        if (rank == 0) {
          atomic_store_explicit(line, ++seq, memory_order_release);
          while (atomic_load_explicit(line, memory_order_acquire) != seq + 1) {
          }
          ++seq;
        } else {
          while (atomic_load_explicit(line, memory_order_acquire) != seq + 1) {
          }
          seq += 2;
          atomic_store_explicit(line, seq, memory_order_release);
        }
      }
      if (s > 0) v[s - 1] = (MPI_Wtime() - t0) * 1e6 / iters / 2;
    }
    qsort(v, (size_t)samples, sizeof v[0], cmp);
    result = pick(v, samples, 0.5);
    munmap(p, 4096);
    close(fd);
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) shm_unlink(name);
  return result;
}

static int csv = 0, samples = 21, rank, size;
static const char *ops = "barrier,allreduce,bcast,allgather";

static int wanted(const char *op) {
  char a[256], b[64];
  snprintf(a, sizeof a, ",%s,", ops);
  snprintf(b, sizeof b, ",%s,", op);
  return strstr(a, b) != NULL;
}

static void row(const char *op, size_t bytes, double *v, int n) {
  if (rank != 0) return;
  qsort(v, (size_t)n, sizeof v[0], cmp);
  if (csv)
    printf("%s,%zu,%.3f,%.3f,%.3f\n", op, bytes, pick(v, n, 0.5), pick(v, n, 0.1), pick(v, n, 0.9));
  else
    printf("%-10s %10zu %10.3f %10.3f %10.3f\n", op, bytes, pick(v, n, 0.5), pick(v, n, 0.1), pick(v, n, 0.9));
  fflush(stdout);
}

enum { BARRIER, IBARRIER, ALLREDUCE, BCAST, ALLGATHER };

static void call(int op, size_t bytes, char *a, char *b) {
  switch (op) {
    case BARRIER: MPI_Barrier(MPI_COMM_WORLD); break;
    case IBARRIER: {
      MPI_Request r;
      MPI_Ibarrier(MPI_COMM_WORLD, &r);
      MPI_Wait(&r, MPI_STATUS_IGNORE);
      break;
    }
    case ALLREDUCE: MPI_Allreduce(a, b, (int)(bytes / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case BCAST: MPI_Bcast(a, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD); break;
    case ALLGATHER: MPI_Allgather(a, (int)bytes, MPI_BYTE, b, (int)bytes, MPI_BYTE, MPI_COMM_WORLD); break;
  }
}

static void measure(const char *name, int op, size_t bytes, char *a, char *b) {
  int iters = bytes <= 65536 ? 1000 : bytes <= (1u << 20) ? 50 : 10;
  for (int i = 0; i < iters / 5 + 2; ++i) call(op, bytes, a, b);
  double v[101];
  for (int s = 0; s < samples; ++s) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < iters; ++i) call(op, bytes, a, b);
    v[s] = (MPI_Wtime() - t0) * 1e6 / iters;
  }
  row(name, bytes, v, samples);
}

int main(int argc, char **argv) {
  size_t max_bytes = 16u << 20;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--csv"))
      csv = 1;
    else if (!strcmp(argv[i], "--samples") && i + 1 < argc)
      samples = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--max") && i + 1 < argc)
      max_bytes = strtoull(argv[++i], NULL, 0);
    else if (!strcmp(argv[i], "--ops") && i + 1 < argc)
      ops = argv[++i];
    else {
      if (rank == 0) fprintf(stderr, "usage: lf-bench-coll-mpi [--csv] [--samples N] [--max BYTES] [--ops ...]\n");
      MPI_Finalize();
      return 2;
    }
  }
  if (samples < 1) samples = 1;
  if (samples > 101) samples = 101;
  size_t cap = (max_bytes < 8 ? 8 : max_bytes) * (size_t)size;
  char *a = malloc(cap), *b = malloc(cap);
  if (!a || !b) MPI_Abort(MPI_COMM_WORLD, 1);
  memset(a, 1, cap);
  memset(b, 0, cap);
  if (rank == 0) {
    if (csv)
      printf("op,bytes,median_us,p10_us,p90_us\n");
    else
      printf("# lf-bench-coll-mpi: %d ranks; us per call on rank 0, median of %d samples\n%-10s %10s %10s %10s %10s\n",
             size, samples, "op", "bytes", "median_us", "p10_us", "p90_us");
  }
  if (size >= 2) {
    double f = floor_us(rank, samples);
    row("floor", 64, &f, 1);
  }
  if (wanted("barrier")) {
    measure("barrier", BARRIER, 0, a, b);
    measure("ibarrier", IBARRIER, 0, a, b);
    measure("allreduce", ALLREDUCE, 0, a, b);
  }
  const size_t sizes[] = {8, 64, 1024, 65536, 1u << 20, 4u << 20, 16u << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
    if (sizes[i] > max_bytes) break;
    if (wanted("allreduce")) measure("allreduce", ALLREDUCE, sizes[i], a, b);
    if (wanted("bcast")) measure("bcast", BCAST, sizes[i], a, b);
    if (wanted("allgather")) measure("allgather", ALLGATHER, sizes[i], a, b);
  }
  free(a);
  free(b);
  MPI_Finalize();
  return 0;
}
