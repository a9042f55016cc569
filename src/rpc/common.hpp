// Pieces the rpc client and server share (client.cpp, server.cpp).
#pragma once

#include <lavaflow/lavaflow.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "rpc/wire.hpp"

namespace lf::rpc {

using Clock = std::chrono::steady_clock;

/// A message to send: the prefix, method and header copied into `block`
/// (small), the payload borrowed. Sent with lf_isend_gather.
struct Outgoing {
  std::vector<uint8_t> block;
  const void *payload = nullptr;
  size_t payload_len = 0;
};

/// Build a message. Throws std::bad_alloc only.
Outgoing make_message(const Prefix &p, std::string_view method, const void *header, size_t header_len,
                      const void *payload, size_t payload_len);

/// Start sending `m` on `ch`; the request handle completes when it is out.
lf_status_t send_message(lf_channel_t ch, const Outgoing &m, lf_request_t *req) noexcept;

/// Receive-side state of one channel: the buffer receive posted for the next
/// rpc message, and what broke the channel.
class Inbox {
 public:
  explicit Inbox(lf_channel_t ch) noexcept : ch_(ch) {}
  ~Inbox();
  Inbox(const Inbox &) = delete;
  Inbox &operator=(const Inbox &) = delete;
  /// The next message within `timeout_ms` (0: poll, -1: no limit). LF_OK
  /// with *buf set and `msg` decoded; LF_ERR_TIMEOUT when none came; any
  /// other error breaks the inbox (LF_ERR_PROTOCOL for a malformed message).
  lf_status_t next(int64_t timeout_ms, lf_buffer_t *buf, Message &msg) noexcept;
  lf_status_t broken() const noexcept { return broken_; }
  const std::string &why() const noexcept { return why_; }

 private:
  lf_status_t fail(lf_status_t st, const char *why) noexcept;
  lf_channel_t ch_;
  lf_request_t rx_ = nullptr;
  lf_status_t broken_ = LF_OK;
  std::string why_;
};

/// Deadline `ms` from now (<= 0: none, Clock::time_point::max()).
inline Clock::time_point deadline_in(int64_t ms) noexcept {
  return ms > 0 ? Clock::now() + std::chrono::milliseconds(ms) : Clock::time_point::max();
}

/// Remaining nanoseconds to `t` for the wire (0: no deadline; at least 1 when past).
int64_t remaining_ns(Clock::time_point t) noexcept;

}  // namespace lf::rpc
