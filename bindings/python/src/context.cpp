// lavaflow.Context over lf_init/lf_finalize, lf_channel_open_ex, lf_connect and lf_alloc.
#include "context.hpp"

#include <algorithm>

namespace lfpy {

Context::Context(lf_context_t ctx)
    : ctx_(ctx), fork_gen_(fork_generation()), coll_state_(std::make_shared<ChannelState>()) {}

Context::~Context() {
  if (fork_gen_ != fork_generation()) return;  // the parent's, inherited over fork()
  try {
    finalize();
  } catch (py::error_already_set &e) {
    e.discard_as_unraisable(__func__);
  }
}

lf_context_t Context::handle(const char *call) const {
  if (!ctx_) raise_status(LF_ERR_CLOSED, call, "the context was finalized");
  if (fork_gen_ != fork_generation()) {
    PyErr_Format(PyExc_RuntimeError, "lavaflow: %s: this context belongs to the parent process (fork)", call);
    throw py::error_already_set();
  }
  return ctx_;
}

std::string Context::scope(int peer) const {
  lf_scope_t s = lf_scope(handle("Context.scope"), peer);
  if (s == LF_SCOPE_INVALID) raise_status(LF_ERR_INVALID_ARG, "Context.scope");
  return lf_scope_string(s);
}

std::string Context::scope_explain(int peer) const {
  char buf[512];
  check(lf_scope_explain(handle("Context.scope_explain"), peer, buf, sizeof buf), "Context.scope_explain");
  return buf;
}

std::string Context::location(int rank) const {
  lf_context_t c = handle("Context.location");
  size_t needed = 0;
  std::string s(4096, '\0');
  check(lf_location_json(c, rank, s.data(), s.size(), &needed), "Context.location");
  if (needed > s.size()) {
    s.assign(needed, '\0');
    check(lf_location_json(c, rank, s.data(), s.size(), &needed), "Context.location");
  }
  s.resize(needed ? needed - 1 : 0);
  return s;
}

void wait_owned(const std::shared_ptr<ChannelState> &owner, lf_request_t req, Pinned &&mem, Pinned &&mem2,
                const py::object &timeout, const char *call) {
  lf_status_t st = LF_OK;
  auto step = [&](int64_t t) {
    st = lf_wait_timeout(req, t, nullptr);
    return st != LF_ERR_TIMEOUT;
  };
  WaitEnd end = step(0) ? WaitEnd::done : wait_slices(nullptr, timeout_ms(timeout), step);
  if (end != WaitEnd::done) {
    std::unique_ptr<py::error_already_set> interrupt;
    if (end == WaitEnd::interrupted) interrupt = std::make_unique<py::error_already_set>();
    owner->adopt(req, std::move(mem), false, std::move(mem2));
    if (interrupt) throw *interrupt;
    raise_status(LF_ERR_TIMEOUT, call, "the deadline passed (the collective goes on in the background)");
  }
  if (!owner->orphans.empty()) owner->reap(false);
  if (st != LF_OK) raise_status(st, call);
}

std::unique_ptr<Channel> Context::adopt_channel(py::object self, lf_channel_t ch) {
  auto channel = std::make_unique<Channel>(ch, std::move(self), ctx_);
  channels_.erase(std::remove_if(channels_.begin(), channels_.end(), [](auto &w) { return w.expired(); }),
                  channels_.end());
  channels_.push_back(channel->state());
  return channel;
}

std::unique_ptr<Channel> Context::open(py::object self, int peer, std::optional<std::string> transports, bool strict,
                                       const std::string &memory_kind, size_t message_bytes) {
  lf_context_t c = handle("Context.open");
  lf_channel_params_t p = LF_CHANNEL_PARAMS_INIT;
  p.transports = transports ? transports->c_str() : nullptr;
  p.strict = strict ? 1 : 0;
  p.memory_kind = kind_from_name(memory_kind);
  p.message_bytes = message_bytes;
  lf_channel_t ch = nullptr;
  lf_status_t st;
  {
    py::gil_scoped_release nogil;
    st = lf_channel_open_ex(c, peer, &p, &ch);
  }
  check(st, "Context.open");
  return adopt_channel(std::move(self), ch);
}

std::unique_ptr<Channel> Context::connect(py::object self, const std::string &address, const py::object &timeout) {
  lf_context_t c = handle("Context.connect");
  lf_channel_t ch = nullptr;
  const int64_t ms = timeout_ms(timeout);
  lf_status_t st;
  {
    py::gil_scoped_release nogil;
    st = lf_connect(c, address.c_str(), ms, &ch);
  }
  check(st, "Context.connect");
  return adopt_channel(std::move(self), ch);
}

Buffer Context::alloc(size_t nbytes, const std::string &kind, bool strict) {
  lf_context_t c = handle("Context.alloc");
  lf_memory_kind_t k = kind_from_name(kind);
  lf_buffer_t b = nullptr;
  if (k == LF_MEM_HOST_SHARED) {
    // The shared pool's buffers go by descriptor over shm channels.
    lf_pool_t pool = nullptr;
    check(lf_shared_pool(c, &pool), "Context.alloc");
    // A pool hit costs less than releasing the GIL; a miss maps a segment
    // (tens of microseconds), which is not waiting on anyone.
    lf_status_t st = lf_pool_acquire(pool, nbytes, &b);
    if (st == LF_OK) return Buffer(b);
    if (st != LF_ERR_NO_MEMORY && st != LF_ERR_INVALID_ARG) raise_status(st, "Context.alloc");
    // Beyond the pool's largest class or cap: a buffer of its own.
  }
  lf_alloc_params_t p = LF_ALLOC_PARAMS_INIT;
  p.strict = strict ? 1 : 0;
  lf_status_t st;
  {
    py::gil_scoped_release nogil;
    st = lf_alloc_ex(c, nbytes, k, &p, &b);
  }
  check(st, "Context.alloc");
  return Buffer(b);
}

void Context::progress_thread(bool enable) {
  check(lf_progress_thread(handle("Context"), enable ? 1 : 0), "progress_thread");
}

void Context::add_closable(const std::shared_ptr<Closable> &c) {
  closables_.erase(std::remove_if(closables_.begin(), closables_.end(), [](auto &w) { return w.expired(); }),
                   closables_.end());
  closables_.push_back(c);
}

void Context::finalize() {
  if (!ctx_) return;
  handle("Context.finalize");
  // Servers, clients and listeners first (they use channels), newest first.
  for (auto it = closables_.rbegin(); it != closables_.rend(); ++it)
    if (auto c = it->lock()) c->close_now();
  closables_.clear();
  for (auto &w : channels_) {
    if (auto s = w.lock(); s && s->ch) {
      lf_channel_t ch = s->ch;
      s->ch = nullptr;
      {
        py::gil_scoped_release nogil;
        lf_channel_close(ch);
      }
      s->reap(true);
      s->free_stash();
    }
  }
  channels_.clear();
  lf_context_t c = ctx_;
  ctx_ = nullptr;
  lf_status_t st;
  {
    py::gil_scoped_release nogil;
    st = lf_finalize(c);
  }
  coll_state_->reap(true);  // collectives still pending ended with LF_ERR_CLOSED
  check(st, "Context.finalize");
}

}  // namespace lfpy
