/*
 * lf-bench-mpi: the patterns of lf-bench (bench_common.h) with raw MPI:
 * MPI_Send/MPI_Recv ping-pong and MPI_Isend/MPI_Irecv windows. Run it in the
 * same job setup as lf-bench (scripts/bench-compare.sh does) to get ratios.
 *
 *   mpirun --allow-run-as-root -np 2 --bind-to core ./lf-bench-mpi
 */
#include <mpi.h>

#include "bench_common.h"

static int rank;

static void latency(const bench_opts *o, char *buf, size_t n) {
  int iters = bench_iters_latency(n, o->scale);
  double v[BENCH_MAX_SAMPLES];
  for (int s = -2; s < o->samples; ++s) {
    double t0 = bench_now_us();
    for (int i = 0; i < iters; ++i) {
      if (rank == 0) {
        MPI_Send(buf, (int)n, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
        MPI_Recv(buf, (int)n, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      } else {
        MPI_Recv(buf, (int)n, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Send(buf, (int)n, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
      }
    }
    if (s >= 0) v[s] = (bench_now_us() - t0) / iters / 2;
  }
  if (rank == 0) bench_row(o, "latency", n, v, o->samples, (double)n);
}

static void bandwidth(const bench_opts *o, char *buf, size_t n, MPI_Request *reqs) {
  int iters = bench_iters_bw(n, o->scale), w = o->window;
  double v[BENCH_MAX_SAMPLES];
  for (int s = -1; s < o->samples; ++s) {
    double t0 = bench_now_us();
    for (int i = 0; i < iters; ++i) {
      for (int k = 0; k < w; ++k) {
        if (rank == 0)
          MPI_Isend(buf, (int)n, MPI_BYTE, 1, 1, MPI_COMM_WORLD, &reqs[k]);
        else
          MPI_Irecv(buf, (int)n, MPI_BYTE, 0, 1, MPI_COMM_WORLD, &reqs[k]);
      }
      MPI_Waitall(w, reqs, MPI_STATUSES_IGNORE);
    }
    char ack = 0;
    if (rank == 0)
      MPI_Recv(&ack, 1, MPI_BYTE, 1, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    else
      MPI_Send(&ack, 1, MPI_BYTE, 0, 2, MPI_COMM_WORLD);
    if (s >= 0) v[s] = (bench_now_us() - t0) / iters;
  }
  if (rank == 0) bench_row(o, "bw", n, v, o->samples, (double)n * w);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  bench_opts o;
  if (bench_parse(argc, argv, &o, 0) != 0 || size != 2) {
    if (rank == 0 && size != 2) fprintf(stderr, "lf-bench-mpi needs exactly 2 ranks\n");
    MPI_Finalize();
    return 2;
  }
  char *buf = malloc(o.max_size ? o.max_size : 1);
  MPI_Request *reqs = malloc(sizeof *reqs * (size_t)o.window);
  if (!buf || !reqs) MPI_Abort(MPI_COMM_WORLD, 1);
  memset(buf, 1, o.max_size);
  if (rank == 0) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len;
    MPI_Get_library_version(lib, &len);
    char *nl = strchr(lib, '\n');
    if (nl) *nl = 0;
    printf("# lf-bench-mpi: %s\n", lib);
    bench_header(&o);
  }
  for (size_t n = o.min_size; n <= o.max_size; n *= 2)
    if (o.latency) latency(&o, buf, n);
  for (size_t n = o.min_size; n <= o.max_size; n *= 2)
    if (o.bw) bandwidth(&o, buf, n, reqs);
  free(reqs);
  free(buf);
  MPI_Finalize();
  return 0;
}
