// Helpers shared by the shm channel tests: opening a channel from a child
// rank, deterministic payloads and their checks.
#pragma once

#include <lavaflow/lavaflow.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "multiprocess.hpp"
#include "payload.hpp"

namespace lftest {

struct Conn {
  lf_context_t ctx = nullptr;
  lf_channel_t ch = nullptr;
};

/// lf_init + lf_channel_open to `peer`; requires the shm transport.
inline Conn open_shm(const Rank &r, int peer) {
  Conn c;
  REQUIRE_OK(r, lf_init(&c.ctx));
  REQUIRE(r, lf_rank(c.ctx) == r.rank, "rank %d", lf_rank(c.ctx));
  REQUIRE_OK(r, lf_channel_open(c.ctx, peer, &c.ch));
  const char *t = lf_channel_transport(c.ch);
  REQUIRE(r, t && std::string(t) == "shm", "transport %s (%s)", t ? t : "null", lf_channel_reason(c.ch));
  return c;
}

inline void close_all(const Rank &r, Conn &c) {
  if (c.ch) REQUIRE_OK(r, lf_channel_close(c.ch));
  REQUIRE_OK(r, lf_finalize(c.ctx));
}

}  // namespace lftest
