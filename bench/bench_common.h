/*
 * Shared by lf-bench and lf-bench-mpi so that both measure exactly the same
 * pattern and print the same table: options, size list, sample statistics.
 *
 * Patterns (as osu_latency / osu_bw):
 *   latency   ping-pong; one-way = round trip / 2; each sample is the mean of
 *             `iters` round trips, the figure is the median of the samples
 *   bw        rank 0 posts a window of 64 non-blocking sends, rank 1 as many
 *             receives, both wait for all; after `iters` windows rank 1 sends
 *             a 1-byte ack; bandwidth = bytes moved / time, median of samples
 *   zc        (lf-bench only) latency with shared-pool buffers sent by
 *             descriptor; each side frees the received view (the memory
 *             returns to the sender's pool) and sends a fresh pool buffer back
 */
#ifndef LF_BENCH_COMMON_H
#define LF_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_SAMPLES 101

/* A benchmark that forks its own ranks gives them a fresh job key (unless
 * LF_JOB_KEY is set), so that the job is authenticated like a real one and
 * says nothing about being unauthenticated. Call before fork(). */
static inline void bench_job_key(void) {
  if (getenv("LF_JOB_KEY")) return;
  unsigned char raw[16];
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got = f ? fread(raw, 1, sizeof raw, f) : 0;
  if (f) fclose(f);
  if (got != sizeof raw) return; /* the job then runs unauthenticated, and says so */
  char hex[2 * sizeof raw + 1];
  for (size_t i = 0; i < sizeof raw; ++i) snprintf(hex + 2 * i, 3, "%02x", raw[i]);
  setenv("LF_JOB_KEY", hex, 1);
}

typedef struct {
  int latency, bw, zc;
  size_t min_size, max_size;
  int samples;
  int window;
  double scale; /* multiplies the default iteration counts */
  int csv;
  int fork_ranks; /* lf-bench: start rank 1 with fork (no launcher needed) */
  int bind;       /* pin rank r to CPU r */
} bench_opts;

static inline double bench_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static inline size_t bench_parse_size(const char *s) {
  char *end;
  double v = strtod(s, &end);
  switch (*end) {
    case 'k':
    case 'K': v *= 1024; break;
    case 'm':
    case 'M': v *= 1024 * 1024; break;
    case 'g':
    case 'G': v *= 1024.0 * 1024 * 1024; break;
    default: break;
  }
  return (size_t)v;
}

static inline void bench_usage(const char *prog, int zc) {
  fprintf(stderr,
          "usage: %s [--mode latency,bw%s] [--min 8] [--max 4M] [--samples 25] [--window 64]\n"
          "          [--scale 1.0] [--csv]%s\n",
          prog, zc ? ",zc" : "", zc ? " [--fork] [--bind]" : "");
}

/* Returns 0 on success; prints usage and returns -1 on bad options. */
static inline int bench_parse(int argc, char **argv, bench_opts *o, int allow_lf_only) {
  memset(o, 0, sizeof *o);
  o->latency = o->bw = 1;
  o->zc = allow_lf_only;
  o->min_size = 8;
  o->max_size = 4u << 20;
  o->samples = 25;
  o->window = 64;
  o->scale = 1.0;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--mode") && v) {
      o->latency = strstr(v, "latency") != NULL;
      o->bw = strstr(v, "bw") != NULL;
      o->zc = allow_lf_only && strstr(v, "zc") != NULL;
      ++i;
    } else if (!strcmp(a, "--min") && v) {
      o->min_size = bench_parse_size(v), ++i;
    } else if (!strcmp(a, "--max") && v) {
      o->max_size = bench_parse_size(v), ++i;
    } else if (!strcmp(a, "--samples") && v) {
      o->samples = atoi(v), ++i;
    } else if (!strcmp(a, "--window") && v) {
      o->window = atoi(v), ++i;
    } else if (!strcmp(a, "--scale") && v) {
      o->scale = atof(v), ++i;
    } else if (!strcmp(a, "--csv")) {
      o->csv = 1;
    } else if (allow_lf_only && !strcmp(a, "--fork")) {
      o->fork_ranks = 1;
    } else if (allow_lf_only && !strcmp(a, "--bind")) {
      o->bind = 1;
    } else {
      bench_usage(argv[0], allow_lf_only);
      return -1;
    }
  }
  if (o->samples < 1) o->samples = 1;
  if (o->samples > BENCH_MAX_SAMPLES) o->samples = BENCH_MAX_SAMPLES;
  if (o->window < 1) o->window = 1;
  if (o->min_size < 1) o->min_size = 1;
  return 0;
}

/* Round trips per latency sample; windows per bandwidth sample. Chosen so a
 * sample lasts about a millisecond or more at this machine's speeds. */
static inline int bench_iters_latency(size_t n, double scale) {
  int it = n <= 4096 ? 2000 : n <= 65536 ? 500 : n <= (1u << 20) ? 40 : 12;
  it = (int)(it * scale);
  return it < 1 ? 1 : it;
}
static inline int bench_iters_bw(size_t n, double scale) {
  int it = n <= 4096 ? 100 : n <= 65536 ? 20 : n <= (1u << 20) ? 3 : 1;
  it = (int)(it * scale);
  return it < 1 ? 1 : it;
}

static inline int bench_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts `v` and reports its median, 10th and 90th percentiles. */
static inline void bench_stats(double *v, int n, double *med, double *p10, double *p90) {
  qsort(v, (size_t)n, sizeof v[0], bench_cmp);
  *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  *p10 = v[(n - 1) / 10];
  *p90 = v[(n - 1) - (n - 1) / 10];
}

static inline void bench_header(const bench_opts *o) {
  if (o->csv)
    printf("mode,bytes,median_us,p10_us,p90_us,GBps\n");
  else
    printf("%-8s %10s %12s %12s %12s %10s\n", "mode", "bytes", "median_us", "p10_us", "p90_us", "GB/s");
}

/* One row. For latency-type modes `v` holds one-way microseconds; for bw the
 * microseconds per window and `bytes_per_sample` what one window moved. */
static inline void bench_row(const bench_opts *o, const char *mode, size_t n, double *v, int count,
                             double bytes_per_unit) {
  double med, p10, p90;
  bench_stats(v, count, &med, &p10, &p90);
  double gbps = bytes_per_unit / (med * 1e3);
  if (o->csv)
    printf("%s,%zu,%.4f,%.4f,%.4f,%.3f\n", mode, n, med, p10, p90, gbps);
  else
    printf("%-8s %10zu %12.3f %12.3f %12.3f %10.3f\n", mode, n, med, p10, p90, gbps);
  fflush(stdout);
}

#endif
