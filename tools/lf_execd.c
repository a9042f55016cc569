/*
 * lf-execd: an execution service (lavaflow_exec.h) serving the built-in ops
 * at an address, until SIGINT or SIGTERM.
 *
 *   LF_EXEC_TOKEN=secret lf-execd tcp://0.0.0.0:7000     # prints its address and device
 *   lf-execd unix:/run/lf-exec.sock
 *   LF_EXEC_TOKEN=secret lf-execd --health tcp://node:7000   # a running service's health, as JSON
 *
 * The first line on stdout is "lf-execd: serving at ADDRESS on DEVICE", so a
 * script can read the resolved address (port 0 picks one).
 */
#define _POSIX_C_SOURCE 200809L
#include <lavaflow/lavaflow.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static int usage(void) {
  fprintf(stderr,
          "usage: lf-execd ADDRESS            serve the built-in ops at ADDRESS (tcp://HOST:PORT, unix:/path)\n"
          "       lf-execd --health ADDRESS   print the health of the service at ADDRESS\n"
          "Over tcp both sides need LF_EXEC_TOKEN or LF_EXEC_TOKEN_FILE.\n");
  return 2;
}

static int fail(const char *what, lf_status_t st) {
  fprintf(stderr, "lf-execd: %s: %s: %s\n", what, lf_status_string(st), lf_last_error());
  return 1;
}

static int health(lf_context_t ctx, const char *addr) {
  lf_exec_client_t c;
  lf_status_t st = lf_exec_connect_addr(ctx, addr, &c);
  if (st != LF_OK) return fail("connect", st);
  char json[4096];
  st = lf_exec_health(c, json, sizeof json);
  lf_exec_disconnect(c);
  if (st != LF_OK) return fail("health", st);
  printf("%s\n", json);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return usage();
  const int query = !strcmp(argv[1], "--health");
  if (query && argc != 3) return usage();
  /* A service or a query is a world of its own, whatever launched it. */
  setenv("LF_SIZE", "1", 1);
  setenv("LF_RANK", "0", 1);
  unsetenv("LF_BOOTSTRAP");
  lf_context_t ctx;
  lf_status_t st = lf_init(&ctx);
  if (st != LF_OK) return fail("init", st);
  int rc = 0;
  if (query) {
    rc = health(ctx, argv[2]);
  } else {
    lf_exec_server_t s;
    st = lf_exec_server_start(ctx, argv[1], &s);
    if (st != LF_OK) {
      rc = fail("start", st);
    } else {
      char addr[512];
      lf_exec_server_address(s, addr, sizeof addr);
      printf("lf-execd: serving at %s on %s\n", addr, lf_exec_server_device(s));
      fflush(stdout);
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = on_signal;
      sigaction(SIGINT, &sa, NULL);
      sigaction(SIGTERM, &sa, NULL);
      while (!g_stop) pause();
      lf_exec_server_stop(s);
      printf("lf-execd: stopped\n");
    }
  }
  lf_finalize(ctx);
  return rc;
}
