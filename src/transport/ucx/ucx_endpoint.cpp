#include "transport/ucx/ucx_endpoint.hpp"

#include <poll.h>
#include <sched.h>

#include <cstring>

#include "core/log.hpp"
#include "memory/allocator.hpp"

namespace lf::ucx {

namespace {

void complete_send(SendOp &op, lf_status_t st) noexcept {
  op.buffer.reset();
  complete_status(op.status, st);
}

void finish_send(SendSlot *s, ucs_status_t st, void *request) noexcept {
  Conn &c = *s->conn;
  if (s->op) {
    if (st == UCS_OK)
      complete_send(*s->op, LF_OK);
    else
      fail_op(*s->op, c.broken() ? c.error : ucs_error(st, "send failed", c.peer));
  }
  unlink(c.sends, s);
  if (request) ucp_request_free(request);
  delete s;
}

void on_sent(void *request, ucs_status_t st, void *user) { finish_send(static_cast<SendSlot *>(user), st, request); }

void finish_fetch(RecvSlot *s, ucs_status_t st, void *request) noexcept {
  Conn &c = *s->conn;
  if (RecvOp *op = s->op) {
    if (st != UCS_OK) {
      fail_op(*op, c.broken() ? c.error : ucs_error(st, "receiving a rendezvous message failed", c.peer));
    } else if (s->buffer) {
      op->buffer = std::move(s->buffer);
      op->bytes = s->size;
      complete_status(op->status, LF_OK);
    } else {
      if (s->spill && op->capacity) std::memcpy(op->data, s->spill.get(), op->capacity);
      complete_length(*op, s->size);
    }
  }
  unlink(c.recvs, s);
  if (request) ucp_request_free(request);
  delete s;
}

void on_fetched(void *request, ucs_status_t st, size_t length, void *user) {
  (void)length;
  finish_fetch(static_cast<RecvSlot *>(user), st, request);
}

void on_ep_error(void *arg, ucp_ep_h ep, ucs_status_t st) {
  (void)ep;
  auto *c = static_cast<Conn *>(arg);
  c->fail(LF_ERR_PEER_GONE, "ucx: connection to rank %d failed: %s", c->peer, ucs_status_string(st));
}

/// Place arrival `a` into the matched receive `op`. Under the worker's mutex.
void place(const std::shared_ptr<Conn> &conn, RecvOp &op, Arrival &a) noexcept {
  Worker &w = *conn->worker;
  if (a.hold == Arrival::Hold::copy) {
    complete_copy(op, a.tag, a.copy.get(), a.size);
    a.copy.reset();
    return;
  }
  void *desc = a.desc;
  a.desc = nullptr;  // UCX's from here on (fetched or released)
  op.matched_tag = a.tag;
  op.message_bytes = a.size;
  if (conn->broken()) {
    ucp_am_data_release(w.worker, desc);
    return fail_op(op, conn->error);
  }
  auto *s = new (std::nothrow) RecvSlot;
  if (!s) {
    ucp_am_data_release(w.worker, desc);
    return fail_op(op, make_error(LF_ERR_NO_MEMORY, "ucx: no memory to receive a message"));
  }
  s->conn = conn;
  s->op = &op;
  s->tag = a.tag;
  s->size = a.size;
  void *dst = op.data;
  if (op.want_buffer) {
    auto b = allocate(a.size ? a.size : 1, MemoryKind::host);
    if (!b) {
      delete s;
      ucp_am_data_release(w.worker, desc);
      return fail_op(op, b.error());
    }
    (*b)->set_size(a.size);
    dst = (*b)->data();
    s->buffer = std::move(*b);
  } else if (a.size > op.capacity) {
    s->spill.reset(new (std::nothrow) char[a.size]);
    if (!s->spill) {
      delete s;
      ucp_am_data_release(w.worker, desc);
      return fail_op(op, make_error(LF_ERR_NO_MEMORY, "ucx: no memory to truncate a %zu-byte message", a.size));
    }
    dst = s->spill.get();
  }
  link(conn->recvs, s);
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  prm.cb.recv_am = &on_fetched;
  prm.user_data = s;
  ucs_status_ptr_t r = ucp_am_recv_data_nbx(w.worker, desc, dst, a.size, &prm);
  if (r == nullptr)
    finish_fetch(s, UCS_OK, nullptr);
  else if (UCS_PTR_IS_ERR(r))
    finish_fetch(s, UCS_PTR_STATUS(r), nullptr);
  else
    s->req = r;
}

/// A message that arrived before its receive was posted.
class UcxIncoming final : public Incoming {
 public:
  UcxIncoming(std::shared_ptr<Conn> c, Arrival &a) : Incoming(a.tag, a.size), conn_(std::move(c)) {
    a_.type = a.type;
    a_.hold = a.hold;
    a_.seq = a.seq;
    a_.tag = a.tag;
    a_.size = a.size;
    a_.copy = std::move(a.copy);
    a_.desc = a.desc;
    a.desc = nullptr;
  }
  ~UcxIncoming() override {
    std::lock_guard g(conn_->worker->mu);
    conn_->worker->release(a_);
  }
  void deliver(RecvOp &op) noexcept override {
    std::lock_guard g(conn_->worker->mu);
    place(conn_, op, a_);
  }

 private:
  std::shared_ptr<Conn> conn_;
  Arrival a_;
};

class UcxEndpoint final : public Endpoint {
 public:
  UcxEndpoint(std::shared_ptr<Conn> c, Transport &t) : conn_(std::move(c)), w_(*conn_->worker), transport_(t) {}
  ~UcxEndpoint() override;

  void send(SendOp &op) noexcept override;
  Status progress(Matcher &m) noexcept override;
  void wait_for_activity(int timeout_ms) noexcept override;
  int event_fd() const noexcept override { return kTransportFd; }

 private:
  void send_bye() noexcept;

  std::shared_ptr<Conn> conn_;
  Worker &w_;
  Transport &transport_;
};

void UcxEndpoint::send(SendOp &op) noexcept {
  std::lock_guard g(w_.mu);
  Conn &c = *conn_;
  if (c.broken()) return fail_op(op, c.error);
  if (op.buffer && !(kHostKinds & kind_bit(op.buffer->kind())))
    return fail_op(op, make_error(LF_ERR_UNSUPPORTED, "ucx moves host memory only; this is a %s buffer",
                                  memory_kind_name(op.buffer->kind())));
  auto *s = new (std::nothrow) SendSlot;
  if (!s) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "ucx: no memory to send"));
  s->conn = conn_;
  s->op = &op;
  encode_header(Header{MsgType::data, static_cast<uint32_t>(w_.rank()), c.channel, c.send_seq++, op.tag, w_.token()},
                s->header);
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  prm.cb.send = &on_sent;
  prm.user_data = s;
  const void *buf = op.data;
  size_t count = op.size;
  if (op.header_size) {
    s->iov[0] = {const_cast<void *>(op.header), op.header_size};
    s->iov[1] = {const_cast<void *>(op.data), op.size};
    prm.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
    prm.datatype = ucp_dt_make_iov();
    buf = s->iov;
    count = op.size ? 2 : 1;
  } else if (op.buffer) {
    // The slab's registration, made once and kept with the memory: the
    // rendezvous then needs no registration of its own.
    try {
      auto reg = transport_registration(transport_, *op.buffer);
      if (reg && *reg) {
        s->reg = std::move(*reg);
        prm.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        prm.memh = static_cast<MemReg *>(s->reg.get())->memh;
      } else if (!reg) {
        LF_LOG(debug, "ucx: sending an unregistered buffer: %s", reg.error().message.c_str());
      }
    } catch (const std::exception &) {
      // Unregistered: UCX registers on its own, only slower.
    }
  }
  if (op.total() && op.total() >= w_.settings.rndv_thresh) {
    prm.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
    prm.flags = UCP_AM_SEND_FLAG_RNDV;
  }
  ucs_status_ptr_t r = ucp_am_send_nbx(c.ep, kAmId, s->header, kHeaderSize, buf, count, &prm);
  if (r == nullptr) {
    delete s;
    return complete_send(op, LF_OK);
  }
  if (UCS_PTR_IS_ERR(r)) {
    delete s;
    return fail_op(op, ucs_error(UCS_PTR_STATUS(r), "send failed", c.peer));
  }
  s->req = r;
  link(c.sends, s);
}

Status UcxEndpoint::progress(Matcher &m) noexcept {
  std::lock_guard g(w_.mu);
  w_.progress_locked();
  Conn &c = *conn_;
  size_t taken = 0;
  while (!c.ready.empty()) {
    Arrival &a = c.ready.front();
    if (a.type == MsgType::bye) {
      c.fail(LF_ERR_PEER_GONE, "ucx: rank %d closed the channel", c.peer);
    } else if (RecvOp *op = m.take_posted(a.tag)) {
      place(conn_, *op, a);
    } else {
      std::unique_ptr<Incoming> in(new (std::nothrow) UcxIncoming(conn_, a));
      if (!in) {
        c.fail(LF_ERR_NO_MEMORY, "ucx: no memory to keep an unexpected message");
        break;
      }
      m.add_unexpected(std::move(in));
    }
    w_.release(a);
    c.ready.pop_front();
    ++taken;
  }
  w_.took(taken);
  if (!c.broken()) return {};
  c.cancel_fetches();
  return std::unexpected(c.error);
}

void UcxEndpoint::wait_for_activity(int timeout_ms) noexcept {
  {
    std::unique_lock g(w_.mu, std::try_to_lock);
    if (!g.owns_lock()) {
      // Another thread drives the worker (or lingers over a close): what it
      // brings in is ours to take on the next progress.
      sched_yield();
      return;
    }
    if (!conn_->ready.empty() || conn_->broken()) return;  // something to hand over
    if (ucp_worker_arm(w_.worker) == UCS_ERR_BUSY) return;
  }
  pollfd p{w_.efd, POLLIN, 0};
  (void)::poll(&p, 1, timeout_ms);
}

void UcxEndpoint::send_bye() noexcept {
  Conn &c = *conn_;
  // UCX 1.13 reads the header until the send completes (it has no
  // UCP_AM_SEND_FLAG_COPY_HEADER), so it lives in a slot like a data send's.
  auto *s = new (std::nothrow) SendSlot;
  if (!s) return;  // the peer sees the close as its keepalive's error instead
  s->conn = conn_;
  encode_header(Header{MsgType::bye, static_cast<uint32_t>(w_.rank()), c.channel, c.send_seq++, 0, w_.token()},
                s->header);
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  prm.cb.send = &on_sent;
  prm.user_data = s;
  ucs_status_ptr_t r = ucp_am_send_nbx(c.ep, kAmId, s->header, kHeaderSize, nullptr, 0, &prm);
  if (r == nullptr || UCS_PTR_IS_ERR(r)) {
    delete s;
    return;
  }
  s->req = r;
  link(c.sends, s);
}

UcxEndpoint::~UcxEndpoint() {
  std::lock_guard g(w_.mu);
  Conn &c = *conn_;
  w_.detach(c);
  // What the channel never took is dropped with it.
  w_.took(c.ready.size());
  for (Arrival &a : c.ready) w_.release(a);
  c.ready.clear();
  for (auto &[seq, a] : c.ahead) w_.release(a);
  c.ahead.clear();
  if (c.ep) {
    if (!c.broken()) send_bye();
    // Flush: sends already completed locally (eager) reach the peer before
    // the endpoint goes; a broken one is closed at once.
    ucp_request_param_t prm{};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    prm.flags = c.broken() ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    ucs_status_ptr_t req = ucp_ep_close_nbx(c.ep, &prm);
    c.ep = nullptr;
    if (req && !UCS_PTR_IS_ERR(req)) {
      const Deadline end = deadline_in(w_.settings.linger_s);
      while (ucp_request_check_status(req) == UCS_INPROGRESS && Clock::now() < end) w_.progress_locked();
      if (ucp_request_check_status(req) == UCS_INPROGRESS) {
        LF_LOG(info, "ucx: channel to rank %d still flushing after %.1f s; closing in the background", c.peer,
               w_.settings.linger_s);
        try {
          w_.keep_closing(conn_, req);
        } catch (const std::bad_alloc &) {
          ucp_request_free(req);  // UCX finishes it on its own
        }
      } else {
        ucp_request_free(req);
      }
    }
  }
  // Ops UCX still holds complete as closed; their slots stay until UCX
  // completes or cancels the requests.
  const Error closed = make_error(LF_ERR_CLOSED, "the channel was closed");
  for (SendSlot *s = c.sends; s; s = s->next)
    if (s->op) {
      fail_op(*s->op, closed);
      s->op = nullptr;
    }
  for (RecvSlot *s = c.recvs, *n; s; s = n) {
    n = s->next;
    if (s->op) {
      fail_op(*s->op, closed);
      s->op = nullptr;
    }
    if (s->req) ucp_request_cancel(w_.worker, s->req);
  }
}

}  // namespace

Result<std::shared_ptr<Conn>> open_conn(const std::shared_ptr<Worker> &w, int peer, const std::string &address) {
  const uint32_t channel = w->next_channel(peer);
  auto conn = std::make_shared<Conn>(w, peer, channel);
  std::lock_guard g(w->mu);
  ucp_ep_params_t p{};
  p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  p.address = reinterpret_cast<const ucp_address_t *>(address.data());
  p.err_mode = w->settings.peer_errors ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  if (w->settings.peer_errors) {
    p.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.err_handler.cb = &on_ep_error;
    p.err_handler.arg = conn.get();
  }
  if (ucs_status_t st = ucp_ep_create(w->worker, &p, &conn->ep); st != UCS_OK) {
    conn->ep = nullptr;
    return LF_FAIL(LF_ERR_UNAVAILABLE, "ucx: cannot create an endpoint to rank %d: %s", peer, ucs_status_string(st));
  }
  w->attach(*conn);
  return conn;
}

std::unique_ptr<Endpoint> make_endpoint(std::shared_ptr<Conn> conn, Transport &t) {
  return std::make_unique<UcxEndpoint>(std::move(conn), t);
}

}  // namespace lf::ucx
