// A rank of the harness that becomes a process on its own: for tests of
// channels by address (lf_listen / lf_connect) and the services built on them.
#pragma once

#include <lavaflow/lavaflow.h>
#include <stdlib.h>

#include "multiprocess.hpp"

namespace lftest {

/// Make this child (started by the harness as a rank) a world of one, with
/// LF_EXEC_TOKEN set to `token` (unset when NULL): a process that reaches
/// others by address (lf_listen / lf_connect) rather than as a rank.
inline lf_context_t own_world(Rank &r, const char *token) {
  unsetenv("LF_BOOTSTRAP");
  unsetenv("LF_BOOTSTRAP_MODE");
  setenv("LF_SIZE", "1", 1);
  setenv("LF_RANK", "0", 1);
  if (token)
    setenv("LF_EXEC_TOKEN", token, 1);
  else
    unsetenv("LF_EXEC_TOKEN");
  lf_context_t ctx;
  REQUIRE_OK(r, lf_init(&ctx));
  return ctx;
}

}  // namespace lftest
