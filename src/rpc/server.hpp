// The server side of request channels (lavaflow_rpc.h).
//
// Leader/followers: of the server's threads (one more than may run
// handlers) one leads, receiving from every served channel. Cancels flip the
// named call's token at once, so a cancel reaches a running handler however
// busy the others are; calls that cannot run (unknown method, past
// LF_RPC_QUEUE_MAX) are answered on the spot. When a request arrives and
// another thread is idle, the leader runs the handler itself (no thread
// hand-off on the call's path) and leads again afterwards; only if the call
// is still running after kTakeOverNs does the idle thread, woken by a
// timer, lead meanwhile. The timer stays armed through a stream of calls,
// so short calls cost neither a system call nor a context switch each, and
// long ones do not keep cancels and other clients waiting. When no thread is idle the call is
// queued for the next thread that finishes, and the leader keeps receiving. A call's token is its cancel flag, its
// deadline (checked against the clock when asked), its channel's health and the server's stop.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/net.hpp"
#include "rpc/common.hpp"

namespace lf::rpc {

class Server;

/// One channel the server serves.
struct Served {
  explicit Served(lf_channel_t c) noexcept : ch(c), inbox(c) {}
  lf_channel_t ch;
  Inbox inbox;  ///< the poller's only
  std::atomic<bool> broken{false};
  std::mutex mu;
  std::unordered_map<uint64_t, struct Call *> calls;  ///< queued or running, by request id
};

/// One request inside the server: what lf_rpc_call_t points at.
struct Call {
  Server *server = nullptr;
  std::shared_ptr<Served> from;
  lf_rpc_handler_fn fn = nullptr;
  void *user = nullptr;
  uint64_t id = 0;
  std::string method;
  lf_buffer_t buf = nullptr;  ///< the received request; msg points into it
  Message msg;
  Clock::time_point deadline = Clock::time_point::max();
  std::atomic<bool> cancelled{false};
  bool responded = false;  ///< the handler's thread only
  bool cancelled_now() const noexcept;
};

class Server {
 public:
  /// `max_held`: calls queued or running before LF_ERR_BUSY (0: LF_RPC_QUEUE_MAX).
  explicit Server(int threads, size_t max_held = 0);
  ~Server();  ///< stop(), if not done
  /// The call behind `c` when it is the one this thread's handler is
  /// running, else nullptr (a call handle is valid only inside its handler).
  static Call *current(lf_rpc_call_t c) noexcept;
  /// `inline_call`: the receiving thread runs the handler the moment the
  /// request arrives, outside the queue and its bound, so it is answered
  /// however busy the workers are. Such a handler must not block.
  lf_status_t add_handler(const char *method, lf_rpc_handler_fn fn, void *user, bool inline_call = false) noexcept;
  /// Called once for each served channel the server stops serving (its
  /// client died or misbehaved), on the receiving thread, after every token
  /// of its calls flipped. Set before the first serve().
  void on_drop(std::function<void(lf_channel_t)> fn) { on_drop_ = std::move(fn); }
  lf_status_t serve(lf_channel_t ch) noexcept;
  void stop() noexcept;
  bool stopping() const noexcept { return stopping_.load(std::memory_order_relaxed); }
  /// Calls queued or running now.
  size_t held() noexcept {
    std::lock_guard g(mu_);
    return held_;
  }

  /// Answer `c` (a response, or an error with its text as header).
  lf_status_t respond(Call &c, lf_status_t status, const void *header, size_t header_len, const void *payload,
                      size_t payload_len) noexcept;

 private:
  void thread_loop() noexcept;
  /// Arm timer_ to fire after `ns` (0: disarm).
  void set_timer(int64_t ns) noexcept;
  /// The standby's wait: true when timer_ fired (false after 100 ms, so
  /// that a stop is seen whatever happened to the timer).
  bool wait_timer() noexcept;
  /// The timer fired: re-arm it for the call under it, or leave it to
  /// thread_loop to take the lead from a call that ran long.
  void on_timer() noexcept;
  /// Receive as the leader until a call should run on this thread (nullptr: stopping).
  Call *lead() noexcept;
  /// Admit a received message: a call to run, or nullptr when it was a
  /// cancel or was answered (unknown method, queue full) or dropped.
  Call *take(const std::shared_ptr<Served> &s, lf_buffer_t buf, const Message &msg) noexcept;
  void run(Call &c) noexcept;
  void finish(Call *c) noexcept;
  /// Answer a request that never became a Call (unknown method, queue full).
  void refuse(Served &s, uint64_t id, lf_status_t status, const std::string &why) noexcept;
  void drop(Served &s, lf_status_t why) noexcept;

  std::shared_mutex handlers_mu_;
  struct Handler {
    lf_rpc_handler_fn fn = nullptr;
    void *user = nullptr;
    bool inline_call = false;
  };
  std::unordered_map<std::string, Handler> handlers_;
  std::function<void(lf_channel_t)> on_drop_;
  std::mutex mu_;                    ///< guards what follows
  std::condition_variable work_cv_;  ///< followers wait here for leadership or queued calls
  std::deque<Call *> queue_;         ///< calls that came while no thread was idle
  bool has_leader_ = false;
  int idle_ = 0;     ///< threads waiting on work_cv_
  size_t held_ = 0;  ///< calls queued or running (LF_RPC_QUEUE_MAX)
  size_t max_held_;
  std::vector<std::shared_ptr<Served>> served_;
  std::atomic<uint64_t> served_gen_{0};  ///< bumped when served_ changes: the leader re-reads it
  bool stopped_ = false;                 ///< workers drain the queue and exit
  std::atomic<bool> stopping_{false};
  /// The take-over timer: armed while the leader runs a call, it wakes the
  /// standby (the one idle thread that waits on it rather than on work_cv_).
  Fd timer_;
  bool standby_ = false;                 ///< mu_: a thread waits on timer_
  std::atomic<bool> armed_{false};       ///< timer_ will fire
  std::atomic<int64_t> timed_since_{0};  ///< start of the call under the timer (ns), 0: none
  std::vector<std::thread> threads_;
};

}  // namespace lf::rpc
