// The client side of remote execution (lavaflow_exec.h).
//
// lf_exec_run sends the plan first, then the uploads in batches of
// LF_EXEC_CHUNK with two in flight: the service runs each op as soon as its
// inputs are complete, so compute overlaps the rest of the upload. On a
// shared-memory connection the service hands every output over by
// descriptor before it answers; the client posted those receives with the
// plan, and a fetch is then a local, read-only view. Otherwise a fetch asks
// the service to push the result into fresh pages, sealed read-only.
//
// A job released while it still runs is cancelled and parked: the client
// settles it (tells the service to drop what it kept) on its next call or at
// disconnect, so nothing stays resident on the service.
#pragma once

#include <lavaflow/lavaflow.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.hpp"
#include "exec/views.hpp"
#include "exec/wire.hpp"

namespace lf::exec {

class ExecClient;

struct Job;

/// What lf_plan_t points at.
struct ClientPlan {
  struct Input {
    std::string name;
    Shape shape;
    lf_buffer_t data = nullptr;
    std::shared_ptr<Job> job;  ///< resident: its output `output`
    std::string output;
  };
  std::mutex mu;
  std::vector<Input> inputs;
  std::vector<PlanOp> ops;
  std::vector<std::string> outputs;
};

/// What lf_job_t points at.
struct Job {
  std::shared_ptr<ExecClient> client;
  uint64_t id = 0;
  std::vector<uint8_t> plan;  ///< the run request's header, borrowed until it is out
  bool uploads = false;       ///< it sent inputs (the service may hold some until released)
  std::mutex mu;              ///< guards what follows
  lf_rpc_request_t run = nullptr;
  std::vector<lf_request_t> handover;  ///< posted receives of the outputs (shared memory)
  lf_status_t status = LF_IN_PROGRESS;
  std::string error;
  RunResult result;
  std::vector<std::shared_ptr<Buffer>> outputs;  ///< handed-over views, by output index
  bool released = false;
};

class ExecClient : public std::enable_shared_from_this<ExecClient> {
 public:
  /// Connected over `ch`, which it owns from here on (also on failure).
  static Result<std::shared_ptr<ExecClient>> over(lf_channel_t ch) noexcept;
  ~ExecClient();

  Status disconnect() noexcept;
  const char *transport() const noexcept { return transport_; }
  Result<std::string> health() noexcept;
  Result<std::shared_ptr<Job>> run(ClientPlan &p, int64_t deadline_ms) noexcept;
  lf_status_t wait(Job &j, int64_t timeout_ms) noexcept;
  Result<BufferPtr> fetch(Job &j, const std::string &output) noexcept;
  lf_status_t cancel(Job &j) noexcept;
  void release(const std::shared_ptr<Job> &j) noexcept;

 private:
  ExecClient() = default;
  /// Take a terminal status into `j` (j.mu held): the outputs' views, or the
  /// receives withdrawn.
  void settle_locked(Job &j, lf_status_t st) noexcept;
  /// Tell the service to drop what job `j` may have left there (results,
  /// uploads); nothing when it can have left nothing. Answered inline; not waited for.
  void send_release(const Job &j) noexcept;
  /// Settle jobs released while they ran, once they ended.
  void reap(bool block) noexcept;
  Status check_open() noexcept;

  /// Closes the channel when the last of the client and its fetched views
  /// goes: the service keeps the memory behind a view while the connection
  /// is open, so a view stays readable after lf_exec_disconnect.
  struct ChannelHold {
    explicit ChannelHold(lf_channel_t c) noexcept : ch(c) {}
    ~ChannelHold() { lf_channel_close(ch); }
    ChannelHold(const ChannelHold &) = delete;
    ChannelHold &operator=(const ChannelHold &) = delete;
    lf_channel_t ch;
  };
  lf_channel_t ch_ = nullptr;
  std::shared_ptr<ChannelHold> hold_;
  lf_rpc_client_t rpc_ = nullptr;
  bool by_descriptor_ = false;
  const char *transport_ = "";
  uint64_t chunk_ = 1 << 20;
  ReadOnlySegments segments_;
  std::mutex mu_;  ///< guards what follows
  uint64_t next_job_ = 1, next_tensor_ = 1, next_fetch_ = 1;
  std::vector<std::shared_ptr<Job>> parked_;
  bool closed_ = false;
};

}  // namespace lf::exec
