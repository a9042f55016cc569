// The execution service (lavaflow_exec.h): request handlers on an rpc
// server, one per method of docs/exec.md.
//
//  - x.run runs a plan on a worker thread: it validates the plan, waits for
//    each op's uploaded inputs as the op comes up (so compute starts while
//    later inputs still arrive), runs the ops, keeps the outputs resident and
//    answers with their shapes. To a client on shared memory it first hands
//    each output over by descriptor, so the client's fetch is local.
//  - x.put (an upload batch), x.release and x.health are answered by the
//    rpc server's receiving thread the moment they arrive (inline): they
//    never queue behind busy workers, and a run waiting for its inputs can
//    never starve the puts it waits for.
//  - x.fetch pushes a result to a remote client as one message on a tag
//    the client posted a receive for, straight from the resident tensor.
//
// Per client: its uploads, its jobs' resident results, and a memory account.
// When the rpc server drops a client (it died, or sent garbage), its tokens
// flip, and on_drop frees everything it held; a job still running for it
// finds the client dead when it finishes and keeps nothing.
#pragma once

#include <lavaflow/lavaflow.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/status.hpp"
#include "exec/kernels/kernels.hpp"
#include "exec/plan.hpp"
#include "exec/tensor.hpp"
#include "rpc/server.hpp"

namespace lf::exec {

/// A tensor a job keeps, with its shape.
struct Resident {
  Shape shape;
  std::shared_ptr<Tensor> tensor;
};

/// One op invocation: what lf_exec_op_t points at inside a user op.
struct OpCall {
  std::vector<Resident> inputs;
  const std::string *attrs = nullptr;
  lf_pool_t pool = nullptr;
  std::shared_ptr<Account> account;
  const rpc::Call *call = nullptr;  ///< the job's rpc call: its token is the op's
  Resident output;
  /// The op running on this thread, when `op` is it (else nullptr).
  static OpCall *current(lf_exec_op_t op) noexcept;
};

class Service {
 public:
  /// lf_exec_server_start.
  static Result<std::unique_ptr<Service>> start(lf_context_t ctx, const char *listen_addr) noexcept;
  ~Service();
  Service(const Service &) = delete;
  Service &operator=(const Service &) = delete;

  const std::string &address() const noexcept { return address_; }
  const std::string &device() const noexcept { return kernels_->device(); }
  Status register_op(const std::string &name, lf_exec_op_fn fn, void *user) noexcept;
  /// Cancel what runs, drop every client, free every tensor, join the threads. Idempotent.
  void stop() noexcept;

 private:
  struct Upload {
    uint64_t job = 0;
    std::shared_ptr<Tensor> tensor;
  };
  struct Client {
    lf_channel_t ch = nullptr;
    bool by_descriptor = false;  ///< shared memory: results go over as descriptors
    std::shared_ptr<Account> account;
    std::mutex mu;                    ///< guards what follows
    std::condition_variable arrived;  ///< an upload completed, or the client died
    std::unordered_map<uint64_t, Upload> uploads;
    std::unordered_map<uint64_t, std::unordered_map<std::string, Resident>> jobs;
    bool dead = false;
  };

  Service() = default;
  Status add_client(lf_channel_t ch) noexcept;
  std::shared_ptr<Client> client_of(lf_rpc_call_t call) noexcept;
  void on_drop(lf_channel_t ch) noexcept;
  void accept_loop() noexcept;
  std::string health_json();

  static lf_status_t on_put(lf_rpc_call_t call, void *self);
  static lf_status_t on_run(lf_rpc_call_t call, void *self);
  static lf_status_t on_fetch(lf_rpc_call_t call, void *self);
  static lf_status_t on_release(lf_rpc_call_t call, void *self);
  static lf_status_t on_health(lf_rpc_call_t call, void *self);
  /// Run plan `p` of call `rc`; LF_OK, or a status and `why`.
  lf_status_t run(const rpc::Call &rc, Client &cl, const PlanWire &p, RunResult &result, std::string &why);
  /// Upload `id` once every byte of it arrived (or why not).
  Result<std::shared_ptr<Tensor>> wait_upload(Client &cl, uint64_t id, const rpc::Call &rc);
  /// The definitions of the ops plan `p` names (unknown ones left out).
  std::unordered_map<std::string, OpDef> ops_of(const PlanWire &p);

  lf_context_t ctx_ = nullptr;
  lf_pool_t pool_ = nullptr;
  lf_listener_t listener_ = nullptr;
  std::string address_;
  std::unique_ptr<Kernels> kernels_;
  uint64_t client_cap_ = 0;
  std::shared_ptr<std::atomic<uint64_t>> bytes_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::atomic<uint64_t> running_{0}, done_{0};
  int workers_ = 0;

  std::shared_mutex ops_mu_;
  std::unordered_map<std::string, OpDef> ops_;

  std::unique_ptr<rpc::Server> rpc_;
  std::mutex mu_;  ///< guards what follows
  std::unordered_map<lf_channel_t, std::shared_ptr<Client>> clients_;
  std::vector<lf_channel_t> to_close_;  ///< dropped: closed by the acceptor's next round
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
};

}  // namespace lf::exec
