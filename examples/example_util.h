/*
 * Helpers shared by the examples: fail loudly on any lavaflow error (with
 * lf_last_error's detail), and a monotonic clock in microseconds.
 */
#ifndef LAVAFLOW_EXAMPLE_UTIL_H
#define LAVAFLOW_EXAMPLE_UTIL_H

#include <lavaflow/lavaflow.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(call)                                                                           \
  do {                                                                                        \
    lf_status_t st_ = (call);                                                                 \
    if (st_ < 0) {                                                                            \
      fprintf(stderr, "%s failed: %s (%s)\n", #call, lf_status_string(st_), lf_last_error()); \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

static inline double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

#endif /* LAVAFLOW_EXAMPLE_UTIL_H */
