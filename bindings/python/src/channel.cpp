// lavaflow.Channel and lavaflow.Request over lf_isend/lf_irecv and friends.
// Blocking calls post a request and wait for it with the GIL released, in
// slices that let Ctrl-C through. An interrupted send is cancelled where the
// transport still can and left with the channel together with its memory;
// an interrupted receive is cancelled and its end awaited, and a message it
// took after all is kept for the next receive.
#include "channel.hpp"

#include <cstring>

namespace lfpy {

namespace {
[[noreturn]] void raise_timeout(const char *call) { raise_status(LF_ERR_TIMEOUT, call, "the deadline passed"); }
[[noreturn]] void raise_closed(const char *call) { raise_status(LF_ERR_CLOSED, call, "the channel is closed"); }

// Waits, after lf_cancel, for a request's end; false when another Ctrl-C
// came first (the request is then still live).
template <class Step>
bool settle(Step &&step) {
  if (step(0)) return true;
  return wait_slices(nullptr, -1, step) == WaitEnd::done;
}

// Copies `n` bytes into a buffer of the stash (NULL for none).
lf_buffer_t stash_copy(lf_context_t ctx, const void *data, size_t n) {
  if (n == 0) return nullptr;
  lf_buffer_t b = nullptr;
  if (lf_alloc(ctx, n, LF_MEM_HOST, &b) != LF_OK) return nullptr;
  std::memcpy(lf_buffer_data(b), data, n);
  return b;
}
}  // namespace

// ---- Request -------------------------------------------------------------------------

Request::Request(std::shared_ptr<ChannelState> chan, lf_request_t req, Pinned &&mem, bool buffer_recv, Pinned &&mem2)
    : chan_(std::move(chan)), req_(req), mem_(std::move(mem)), mem2_(std::move(mem2)), buffer_recv_(buffer_recv) {}

Request::~Request() {
  // Still in flight: the channel keeps it, and the memory, until it completes.
  if (req_) chan_->adopt(req_, std::move(mem_), buffer_recv_, std::move(mem2_));
}

std::unique_ptr<Request> Request::completed(std::shared_ptr<ChannelState> chan, lf_status_t st, size_t bytes,
                                            const std::string &detail, py::object buffer) {
  auto r = std::make_unique<Request>(std::move(chan), nullptr, Pinned(), !buffer.is_none());
  r->finished_ = true;
  r->status_ = st;
  r->bytes_ = bytes;
  r->error_ = detail;
  r->buffer_ = std::move(buffer);
  return r;
}

void Request::finish(lf_status_t st, size_t bytes) {
  req_ = nullptr;
  finished_ = true;
  status_ = st;
  bytes_ = bytes;
  if (st != LF_OK) error_ = lf_last_error();
  mem_.release();
  mem2_.release();
}

bool Request::test() {
  if (finished_) return true;
  if (busy_) return false;
  if (buffer_recv_) {
    lf_buffer_t b = nullptr;
    lf_completion_t info = LF_COMPLETION_INIT;
    lf_status_t st = lf_wait_buffer_timeout(req_, 0, &b, &info);
    if (st == LF_ERR_TIMEOUT) return false;
    if (st == LF_OK) buffer_ = py::cast(Buffer(b));
    finish(st, info.bytes);
    return true;
  }
  size_t bytes = 0;
  lf_status_t st = lf_wait_timeout(req_, 0, &bytes);
  if (st == LF_ERR_TIMEOUT) return false;
  finish(st, bytes);
  return true;
}

py::object Request::result() {
  if (status_ != LF_OK) raise_status(status_, "Request.wait", error_, static_cast<long long>(bytes_));
  if (buffer_recv_) return buffer_;
  return py::int_(bytes_);
}

py::object Request::wait(const py::object &timeout) {
  if (finished_) return result();
  if (busy_) {
    PyErr_SetString(PyExc_RuntimeError, "lavaflow: Request.wait: another thread is waiting for this request");
    throw py::error_already_set();
  }
  const int64_t ms = timeout_ms(timeout);
  lf_status_t st = LF_OK;
  size_t bytes = 0;
  lf_buffer_t b = nullptr;
  lf_completion_t info = LF_COMPLETION_INIT;
  auto step = [&](int64_t t) {
    if (buffer_recv_) {
      st = lf_wait_buffer_timeout(req_, t, &b, &info);
      bytes = info.bytes;
    } else {
      st = lf_wait_timeout(req_, t, &bytes);
    }
    return st != LF_ERR_TIMEOUT;
  };
  busy_ = true;
  WaitEnd end = step(0) ? WaitEnd::done : wait_slices(chan_.get(), ms, step);
  busy_ = false;
  if (end == WaitEnd::interrupted) throw py::error_already_set();  // the request stays valid
  if (end == WaitEnd::timeout) raise_timeout("Request.wait");
  if (st == LF_OK && buffer_recv_) buffer_ = py::cast(Buffer(b));
  finish(st, bytes);
  return result();
}

void Request::cancel() {
  if (finished_ || !req_) return;
  check(lf_cancel(req_), "Request.cancel");
}

// ---- Channel -------------------------------------------------------------------------

Channel::Channel(lf_channel_t ch, py::object ctx, lf_context_t ctx_handle)
    : state_(std::make_shared<ChannelState>()), ctx_(std::move(ctx)), fork_gen_(fork_generation()) {
  state_->ch = ch;
  state_->ctx = ctx_handle;
  transport_ = lf_channel_transport(ch);
  reason_ = lf_channel_reason(ch);
  peer_ = lf_channel_peer(ch);
}

Channel::~Channel() {
  if (fork_gen_ != fork_generation()) return;  // the parent's, inherited over fork()
  try {
    close();
  } catch (py::error_already_set &e) {
    e.discard_as_unraisable(__func__);
  }
}

lf_channel_t Channel::handle(const char *call) const {
  if (!state_->ch) raise_closed(call);
  if (fork_gen_ != fork_generation()) {
    PyErr_Format(PyExc_RuntimeError, "lavaflow: %s: this channel belongs to the parent process (fork)", call);
    throw py::error_already_set();
  }
  state_->note_call();
  return state_->ch;
}

void Channel::close() {
  if (!state_->ch) return;
  lf_channel_t ch = state_->ch;
  state_->ch = nullptr;
  lf_status_t st;
  {
    py::gil_scoped_release nogil;
    st = lf_channel_close(ch);
  }
  state_->reap(true);  // pending requests completed with LF_ERR_CLOSED
  state_->free_stash();
  if (st != LF_OK && st != LF_ERR_CLOSED) raise_status(st, "Channel.close");
}

int Channel::status() const {
  if (!state_->ch) return LF_ERR_CLOSED;
  return lf_channel_status(state_->ch);
}

void Channel::finish_send(lf_request_t req, Pinned &&mem, Pinned &&mem2, const py::object &timeout, const char *call) {
  size_t bytes = 0;
  lf_status_t st = LF_OK;
  auto step = [&](int64_t t) {
    st = lf_wait_timeout(req, t, &bytes);
    return st != LF_ERR_TIMEOUT;
  };
  WaitEnd end = step(0) ? WaitEnd::done : wait_slices(state_.get(), timeout_ms(timeout), step);
  if (end != WaitEnd::done) {
    py::error_already_set interrupt_or_none =
        end == WaitEnd::interrupted ? py::error_already_set() : py::error_already_set();
    state_->adopt(req, std::move(mem), false, std::move(mem2));
    if (end == WaitEnd::interrupted) throw interrupt_or_none;
    raise_timeout(call);
  }
  if (!state_->orphans.empty()) state_->reap(false);
  if (st != LF_OK) raise_status(st, call);
}

size_t Channel::finish_recv(lf_request_t req, Pinned &&mem, const py::object &timeout, const char *call) {
  size_t bytes = 0;
  lf_status_t st = LF_OK;
  auto step = [&](int64_t t) {
    st = lf_wait_timeout(req, t, &bytes);
    return st != LF_ERR_TIMEOUT;
  };
  WaitEnd end = step(0) ? WaitEnd::done : wait_slices(state_.get(), timeout_ms(timeout), step);
  if (end == WaitEnd::done) {
    if (!state_->orphans.empty()) state_->reap(false);
    if (st != LF_OK) raise_status(st, call, lf_last_error(), static_cast<long long>(bytes));
    return bytes;
  }
  // Cancel, then wait for the receive's one terminal status: cancelled (it
  // never matched, and the message it would have taken stays queued), or
  // done after all.
  std::unique_ptr<py::error_already_set> interrupt;
  if (end == WaitEnd::interrupted) interrupt = std::make_unique<py::error_already_set>();
  lf_cancel(req);
  int done = 0;
  bool settled = settle([&](int64_t t) {
    lf_test(req, &done);
    if (!done && t > 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    return done != 0;
  });
  if (!settled) {  // Ctrl-C again: leave it to the channel
    PyErr_Clear();
    state_->adopt(req, std::move(mem), false);
    throw *interrupt;
  }
  lf_completion_t info = LF_COMPLETION_INIT;
  st = lf_wait_completion(req, &info);  // complete: does not block
  const bool took = st == LF_OK || st == LF_ERR_TRUNCATED;
  if (!interrupt) {
    if (!took) raise_timeout(call);
    if (st != LF_OK) raise_status(st, call, lf_last_error(), static_cast<long long>(info.bytes));
    return info.bytes;
  }
  if (took)
    state_->stash.push_back(
        Stashed{info.tag, stash_copy(state_->ctx, mem.data(), info.bytes), info.bytes, info.message_bytes});
  throw *interrupt;
}

size_t Channel::deliver(const Stashed &s, const Pinned &mem, const char *call) {
  const size_t n = std::min(mem.size(), s.bytes);
  if (n) std::memcpy(mem.data(), lf_buffer_data(s.buf), n);
  if (s.buf) lf_free(s.buf);
  if (s.message_bytes > mem.size())
    raise_status(
        LF_ERR_TRUNCATED, call,
        "the message is " + std::to_string(s.message_bytes) + " bytes, the buffer " + std::to_string(mem.size()),
        static_cast<long long>(n));
  return n;
}

void Channel::send(py::handle obj, uint64_t tag, const py::object &timeout) {
  lf_channel_t ch = handle("Channel.send");
  Pinned mem = Pinned::acquire(obj, false);
  lf_request_t req;
  check(lf_isend(ch, mem.data(), mem.size(), tag, &req), "Channel.send");
  finish_send(req, std::move(mem), Pinned(), timeout, "Channel.send");
}

size_t Channel::recv(py::handle out, uint64_t tag, const py::object &timeout) {
  lf_channel_t ch = handle("Channel.recv");
  Pinned mem = Pinned::acquire(out, true);
  if (!state_->stash.empty()) {
    Stashed s;
    if (state_->take_stashed(tag, &s)) return deliver(s, mem, "Channel.recv");
  }
  lf_request_t req;
  check(lf_irecv(ch, mem.data(), mem.size(), tag, &req), "Channel.recv");
  return finish_recv(req, std::move(mem), timeout, "Channel.recv");
}

std::unique_ptr<Request> Channel::isend(py::handle obj, uint64_t tag) {
  lf_channel_t ch = handle("Channel.isend");
  Pinned mem = Pinned::acquire(obj, false);
  lf_request_t req;
  check(lf_isend(ch, mem.data(), mem.size(), tag, &req), "Channel.isend");
  if (!state_->orphans.empty()) state_->reap(false);
  return std::make_unique<Request>(state_, req, std::move(mem), false);
}

std::unique_ptr<Request> Channel::irecv(py::handle out, uint64_t tag) {
  lf_channel_t ch = handle("Channel.irecv");
  Pinned mem = Pinned::acquire(out, true);
  if (!state_->stash.empty()) {
    Stashed s;
    if (state_->take_stashed(tag, &s)) {
      try {
        size_t n = deliver(s, mem, "Channel.irecv");
        return Request::completed(state_, LF_OK, n, "", py::none());
      } catch (py::error_already_set &e) {
        std::string what = py::str(e.value());
        return Request::completed(state_, LF_ERR_TRUNCATED, std::min(mem.size(), s.bytes), what, py::none());
      }
    }
  }
  lf_request_t req;
  check(lf_irecv(ch, mem.data(), mem.size(), tag, &req), "Channel.irecv");
  if (!state_->orphans.empty()) state_->reap(false);
  return std::make_unique<Request>(state_, req, std::move(mem), false);
}

void Channel::send_gather(py::handle header, py::handle payload, uint64_t tag, const py::object &timeout) {
  lf_channel_t ch = handle("Channel.send_gather");
  Pinned h = Pinned::acquire(header, false);
  Pinned p = Pinned::acquire(payload, false);
  lf_request_t req;
  check(lf_isend_gather(ch, h.data(), h.size(), p.data(), p.size(), tag, &req), "Channel.send_gather");
  finish_send(req, std::move(h), std::move(p), timeout, "Channel.send_gather");
}

std::unique_ptr<Request> Channel::isend_gather(py::handle header, py::handle payload, uint64_t tag) {
  lf_channel_t ch = handle("Channel.isend_gather");
  Pinned h = Pinned::acquire(header, false);
  Pinned p = Pinned::acquire(payload, false);
  lf_request_t req;
  check(lf_isend_gather(ch, h.data(), h.size(), p.data(), p.size(), tag, &req), "Channel.isend_gather");
  if (!state_->orphans.empty()) state_->reap(false);
  return std::make_unique<Request>(state_, req, std::move(h), false, std::move(p));
}

void Channel::send_buffer(Buffer &buf, uint64_t tag, const py::object &timeout) {
  auto r = isend_buffer(buf, tag);
  r->wait(timeout);
}

std::unique_ptr<Request> Channel::isend_buffer(Buffer &buf, uint64_t tag) {
  lf_channel_t ch = handle("Channel.isend_buffer");
  if (tag == LF_ANY_TAG) {
    PyErr_SetString(PyExc_ValueError, "lavaflow: ANY_TAG is for receives only");
    throw py::error_already_set();
  }
  lf_buffer_t b = buf.take();  // the buffer belongs to lavaflow from here on
  lf_request_t req;
  lf_status_t st = lf_isend_buffer(ch, b, tag, &req);
  if (st != LF_OK) {
    // A send refused before it took the buffer leaves it live: it stays the caller's.
    std::string detail = lf_last_error();
    if (lf_buffer_size(b) != 0) buf.restore(b);
    raise_status(st, "Channel.isend_buffer", detail);
  }
  return std::make_unique<Request>(state_, req, Pinned(), false);
}

py::object Channel::recv_buffer(uint64_t tag, const py::object &timeout) {
  const char *call = "Channel.recv_buffer";
  lf_channel_t ch = handle(call);
  if (!state_->stash.empty()) {
    Stashed s;
    if (state_->take_stashed(tag, &s)) {
      if (!s.buf) s.buf = stash_copy(state_->ctx, "", 1);  // an empty message: a buffer all the same
      return py::cast(Buffer(s.buf));
    }
  }
  lf_request_t req;
  check(lf_irecv_buffer(ch, tag, &req), call);
  lf_status_t st = LF_OK;
  lf_buffer_t b = nullptr;
  lf_completion_t info = LF_COMPLETION_INIT;
  auto step = [&](int64_t t) {
    st = lf_wait_buffer_timeout(req, t, &b, &info);
    return st != LF_ERR_TIMEOUT;
  };
  WaitEnd end = step(0) ? WaitEnd::done : wait_slices(state_.get(), timeout_ms(timeout), step);
  if (end != WaitEnd::done) {
    std::unique_ptr<py::error_already_set> interrupt;
    if (end == WaitEnd::interrupted) interrupt = std::make_unique<py::error_already_set>();
    lf_cancel(req);
    if (!settle(step)) {  // Ctrl-C again: leave it to the channel
      PyErr_Clear();
      state_->adopt(req, Pinned(), true);
      throw *interrupt;
    }
    if (interrupt) {
      if (st == LF_OK) state_->stash.push_back(Stashed{info.tag, b, info.bytes, info.message_bytes});
      throw *interrupt;
    }
    if (st == LF_ERR_CANCELLED) raise_timeout(call);
  }
  if (st != LF_OK) raise_status(st, call);
  return py::cast(Buffer(b));
}

std::unique_ptr<Request> Channel::irecv_buffer(uint64_t tag) {
  lf_channel_t ch = handle("Channel.irecv_buffer");
  if (!state_->stash.empty()) {
    Stashed s;
    if (state_->take_stashed(tag, &s)) {
      if (!s.buf) s.buf = stash_copy(state_->ctx, "", 1);
      return Request::completed(state_, LF_OK, s.bytes, "", py::cast(Buffer(s.buf)));
    }
  }
  lf_request_t req;
  check(lf_irecv_buffer(ch, tag, &req), "Channel.irecv_buffer");
  return std::make_unique<Request>(state_, req, Pinned(), true);
}

}  // namespace lfpy
