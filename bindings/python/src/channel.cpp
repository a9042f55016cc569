// lavaflow.Channel and lavaflow.Request over lf_isend/lf_irecv and friends.
// Blocking calls post a request and wait for it with the GIL released, in
// slices that let Ctrl-C through; an interrupted request is cancelled and
// left with the channel together with the memory it uses.
#include "channel.hpp"

namespace lfpy {

namespace {
[[noreturn]] void raise_timeout(const char *call) { raise_status(LF_ERR_TIMEOUT, call, "the deadline passed"); }
[[noreturn]] void raise_closed(const char *call) { raise_status(LF_ERR_CLOSED, call, "the channel is closed"); }
}  // namespace

// ---- Request -------------------------------------------------------------------------

Request::Request(std::shared_ptr<ChannelState> chan, lf_request_t req, Pinned &&mem, bool buffer_recv)
    : chan_(std::move(chan)), req_(req), mem_(std::move(mem)), buffer_recv_(buffer_recv) {}

Request::~Request() {
  // Still in flight: the channel keeps it, and the memory, until it completes.
  if (req_) chan_->adopt(req_, std::move(mem_), buffer_recv_);
}

void Request::finish(lf_status_t st, size_t bytes) {
  finished_ = true;
  status_ = st;
  bytes_ = bytes;
  if (st != LF_OK) error_ = lf_last_error();
  mem_.release();
}

bool Request::test() {
  if (finished_) return true;
  if (busy_) return false;
  if (buffer_recv_) {
    int done = 0;
    lf_status_t st = lf_test(req_, &done);
    if (st >= 0 && !done) return false;
    collect_buffer();
    return true;
  }
  size_t bytes = 0;
  lf_status_t st = lf_wait_timeout(req_, 0, &bytes);
  if (st == LF_ERR_TIMEOUT) return false;
  req_ = nullptr;
  finish(st, bytes);
  return true;
}

void Request::collect_buffer() {
  lf_buffer_t b = nullptr;
  lf_completion_t info = LF_COMPLETION_INIT;
  lf_status_t st = lf_wait_buffer(req_, &b, &info);  // complete: does not block
  req_ = nullptr;
  if (st == LF_OK) buffer_ = py::cast(Buffer(b));
  finish(st, info.bytes);
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
  int64_t ms = timeout_ms(timeout);
  busy_ = true;
  bool interrupted = false;
  if (buffer_recv_) {
    lf_status_t st = wait_buffer_ready(req_, ms, &interrupted);
    busy_ = false;
    if (interrupted) throw py::error_already_set();
    if (st == LF_ERR_TIMEOUT) raise_timeout("Request.wait");
    collect_buffer();  // complete, or lf_test failed: lf_wait_buffer says how it ended
    return result();
  }
  size_t bytes = 0;
  lf_status_t st = wait_request(req_, ms, &bytes, &interrupted);
  busy_ = false;
  if (interrupted) throw py::error_already_set();  // the request stays valid
  if (req_ && st == LF_ERR_TIMEOUT) raise_timeout("Request.wait");
  finish(st, bytes);
  return result();
}

void Request::cancel() {
  if (finished_ || !req_) return;
  check(lf_cancel(req_), "Request.cancel");
}

// ---- Channel -------------------------------------------------------------------------

Channel::Channel(lf_channel_t ch, py::object ctx)
    : state_(std::make_shared<ChannelState>()), ctx_(std::move(ctx)), fork_gen_(fork_generation()) {
  state_->ch = ch;
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
  if (st != LF_OK && st != LF_ERR_CLOSED) raise_status(st, "Channel.close");
}

int Channel::status() const {
  if (!state_->ch) return LF_ERR_CLOSED;
  return lf_channel_status(state_->ch);
}

size_t Channel::finish_blocking(lf_request_t req, Pinned &&mem, const py::object &timeout, const char *call) {
  size_t bytes = 0;
  bool interrupted = false;
  lf_status_t st = wait_request(req, timeout_ms(timeout), &bytes, &interrupted);
  if (req) {  // interrupted, or the deadline passed
    state_->adopt(req, std::move(mem), false);
    if (interrupted) throw py::error_already_set();
    raise_timeout(call);
  }
  if (!state_->orphans.empty()) state_->reap(false);
  if (st != LF_OK) raise_status(st, call);
  return bytes;
}

void Channel::send(py::handle obj, uint64_t tag, const py::object &timeout) {
  lf_channel_t ch = handle("Channel.send");
  Pinned mem = Pinned::acquire(obj, false);
  lf_request_t req;
  check(lf_isend(ch, mem.data(), mem.size(), tag, &req), "Channel.send");
  finish_blocking(req, std::move(mem), timeout, "Channel.send");
}

size_t Channel::recv(py::handle out, uint64_t tag, const py::object &timeout) {
  lf_channel_t ch = handle("Channel.recv");
  Pinned mem = Pinned::acquire(out, true);
  lf_request_t req;
  check(lf_irecv(ch, mem.data(), mem.size(), tag, &req), "Channel.recv");
  return finish_blocking(req, std::move(mem), timeout, "Channel.recv");
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
  lf_request_t req;
  check(lf_irecv(ch, mem.data(), mem.size(), tag, &req), "Channel.irecv");
  if (!state_->orphans.empty()) state_->reap(false);
  return std::make_unique<Request>(state_, req, std::move(mem), false);
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
  auto r = irecv_buffer(tag);
  return r->wait(timeout);
}

std::unique_ptr<Request> Channel::irecv_buffer(uint64_t tag) {
  lf_channel_t ch = handle("Channel.irecv_buffer");
  lf_request_t req;
  check(lf_irecv_buffer(ch, tag, &req), "Channel.irecv_buffer");
  return std::make_unique<Request>(state_, req, Pinned(), true);
}

}  // namespace lfpy
