// lavaflow.Context: the process's membership of a job, and what hangs off it
// (channels, listeners, rpc servers and clients, ingests) so that finalize()
// closes them in order.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "buffer.hpp"
#include "channel.hpp"
#include "lfpy.hpp"

namespace lfpy {

// Something finalize() closes before the channels: rpc servers and clients,
// listeners, ingests. close_now() runs with the GIL held and must not raise.
struct Closable {
  virtual ~Closable() = default;
  virtual void close_now() noexcept = 0;
  // In a child after fork() the handle is the parent's (its threads are not
  // here): the child forgets it instead of closing it.
  bool inherited() const noexcept { return fork_gen != fork_generation(); }
  unsigned fork_gen = fork_generation();
};

class Context {
 public:
  explicit Context(lf_context_t ctx);
  ~Context();
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;

  // The live handle; raises Closed after finalize and RuntimeError in a forked child.
  lf_context_t handle(const char *call) const;

  int rank() const { return lf_rank(handle("Context.rank")); }
  int size() const { return lf_size(handle("Context.size")); }
  std::string scope(int peer) const;
  std::string scope_explain(int peer) const;
  std::string location(int rank) const;

  void barrier(const py::object &timeout);
  std::unique_ptr<Channel> open(py::object self, int peer, std::optional<std::string> transports, bool strict,
                                const std::string &memory_kind, size_t message_bytes);
  // lf_connect: a channel to a listener by address.
  std::unique_ptr<Channel> connect(py::object self, const std::string &address, const py::object &timeout);
  // Wraps a channel handle the library opened (accept, connect) for this context.
  std::unique_ptr<Channel> adopt_channel(py::object self, lf_channel_t ch);
  Buffer alloc(size_t nbytes, const std::string &kind, bool strict);
  void progress_thread(bool enable);
  void finalize();
  bool finalized() const noexcept { return !ctx_; }

  // finalize() closes `c` first (most recent first).
  void add_closable(const std::shared_ptr<Closable> &c);

  // Collectives: one thread at a time per context (lavaflow_coll.h); take
  // this with the GIL released. Their abandoned requests live in coll_state().
  std::mutex &coll_mutex() noexcept { return coll_mu_; }
  const std::shared_ptr<ChannelState> &coll_state() const noexcept { return coll_state_; }

 private:
  lf_context_t ctx_;
  unsigned fork_gen_;
  std::vector<std::weak_ptr<ChannelState>> channels_;
  std::vector<std::weak_ptr<Closable>> closables_;
  std::shared_ptr<ChannelState> coll_state_;
  std::mutex coll_mu_;
};

// lavaflow.Group: an lf_group_t of a context, whose collectives run over
// its members only. Holds the Python Context, so the context outlives it.
class Group {
 public:
  Group(py::object ctx, lf_group_t g, std::vector<int> ranks);
  ~Group();
  Group(const Group &) = delete;
  Group &operator=(const Group &) = delete;

  // The live handle; raises Closed once freed or after the context's
  // finalize, RuntimeError in a forked child.
  lf_group_t handle(const char *call) const;
  Context &context() const { return ctx_.cast<Context &>(); }
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  const std::vector<int> &ranks() const noexcept { return ranks_; }
  bool live() const noexcept { return g_ != nullptr; }
  void free();

  // One thread at a time in this group's collectives; other groups' and the
  // world's may run meanwhile (lavaflow_coll.h).
  std::mutex &coll_mutex() noexcept { return mu_; }
  const std::shared_ptr<ChannelState> &coll_state() const noexcept { return state_; }

 private:
  py::object ctx_;
  lf_group_t g_;
  std::vector<int> ranks_;
  int rank_ = -1, size_ = 0;
  unsigned fork_gen_;
  bool free_barrier_posted_ = false;
  std::shared_ptr<ChannelState> state_;
  std::mutex mu_;
};

// Bindings of the other files, each adding its classes and Context methods.
void bind_dial(py::module_ &m, py::class_<Context> &ctx);
void bind_rpc(py::module_ &m);
void bind_coll(py::module_ &m, py::class_<Context> &ctx);
void bind_ingest(py::module_ &m, py::class_<Context> &ctx);
void bind_exec(py::module_ &m, py::class_<Context> &ctx);

// Waits for a request whose end the C API reports through lf_wait_timeout
// (a non-blocking collective) with the GIL released; on Ctrl-C or timeout
// `owner` keeps the request and the memory, and this raises.
void wait_owned(const std::shared_ptr<ChannelState> &owner, lf_request_t req, Pinned &&mem, Pinned &&mem2,
                const py::object &timeout, const char *call);

}  // namespace lfpy
