// The client side of a request channel (lavaflow_rpc.h).
//
// Whoever waits drives: one waiting thread at a time holds the inbox and
// receives responses for everyone (dispatching them by request id); the
// others sleep on a condition variable until it has dispatched something.
// Sends are reaped by the same driver.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "rpc/common.hpp"

namespace lf::rpc {

class Client;

/// One call in flight or completed: what lf_rpc_request_t points at.
struct Request {
  std::shared_ptr<Client> client;
  uint64_t id = 0;
  Outgoing out;                 ///< the request message (its block must outlive the send)
  lf_request_t send = nullptr;  ///< the gather send until it is out
  Clock::time_point give_up;    ///< deadline + grace: the client stops waiting
  std::atomic<lf_status_t> status{LF_IN_PROGRESS};
  std::string error;  ///< the server's (or the channel's) text when status < 0
  lf_buffer_t response = nullptr;
  Message msg;  ///< views into `response`
};

class Client : public std::enable_shared_from_this<Client> {
 public:
  explicit Client(lf_channel_t ch) : ch_(ch), inbox_(ch) {}
  ~Client();

  /// Start a call; on success `r` is registered and its request sent.
  lf_status_t call(Request &r, const char *method, const void *header, size_t header_len, const void *payload,
                   size_t payload_len, int64_t deadline_ms) noexcept;
  /// lf_rpc_wait.
  lf_status_t wait(Request &r, int64_t timeout_ms) noexcept;
  /// lf_rpc_cancel: tell the server (once), if the call is still pending.
  lf_status_t cancel(Request &r) noexcept;
  /// lf_rpc_release: forget `r` (cancelling it first if pending); returns
  /// once its send is out, so the caller may free the payload.
  void release(Request &r) noexcept;
  /// lf_rpc_client_destroy: fail everything pending with LF_ERR_CLOSED.
  void close() noexcept;

 private:
  /// Receive and dispatch responses for up to `slice_ms`; false when another thread is driving.
  bool drive(int64_t slice_ms) noexcept;
  void reap_sends_locked() noexcept;
  void complete_locked(Request &r, lf_status_t st, std::string_view why) noexcept;
  void fail_all_locked(lf_status_t st, const std::string &why) noexcept;

  lf_channel_t ch_;
  std::mutex drive_mu_;  ///< held by the thread receiving responses
  Inbox inbox_;          ///< guarded by drive_mu_
  std::mutex mu_;        ///< guards what follows
  std::condition_variable progressed_;
  std::unordered_map<uint64_t, Request *> pending_;
  std::vector<Request *> sending_;  ///< sends not yet reaped
  uint64_t next_id_ = 1;
  lf_status_t broken_ = LF_OK;
  std::string broken_why_;
};

}  // namespace lf::rpc
