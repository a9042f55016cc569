// C API: channels and requests.
#include <cstring>

#include "capi/capi_internal.hpp"
#include "capi/capi_memory.hpp"
#include "core/config.hpp"

using namespace lf;
using namespace lf::capi;

namespace {

// Above this a size is certainly a caller's bug (a negative value cast to
// size_t), not a message: refuse it before any transport sees it.
constexpr size_t kMaxMessage = size_t(1) << 46;

// The channel behind `h`, kept alive by the returned reference even if
// another thread closes the handle meanwhile (the copy is made with the slot
// locked, so a close never frees it under us).
std::shared_ptr<Channel> channel_ref(lf_channel_t h, lf_status_t &code) noexcept {
  if (!h) {
    code = fail(LF_ERR_INVALID_ARG, "channel is NULL");
    return nullptr;
  }
  std::shared_ptr<Channel> ch;
  channels().with_locked(h, [&](ChannelSlot &s) { ch = s.ch; });
  if (!ch) code = fail(LF_ERR_CLOSED, "channel is not valid (closed, never opened, or not a channel handle)");
  return ch;
}

// Argument checks shared by the non-blocking and blocking calls.
std::shared_ptr<Channel> send_target(lf_channel_t h, const void *data, size_t bytes, uint64_t tag,
                                     lf_status_t &code) noexcept {
  if (!data && bytes)
    code = fail(LF_ERR_INVALID_ARG, "send: data is NULL for a %zu-byte message", bytes);
  else if (bytes > kMaxMessage)
    code = fail(LF_ERR_INVALID_ARG, "send: %zu bytes is not a plausible message size", bytes);
  else if (tag == LF_ANY_TAG)
    code = fail(LF_ERR_INVALID_ARG, "send: LF_ANY_TAG is for receives only");
  else
    return channel_ref(h, code);
  return nullptr;
}

std::shared_ptr<Channel> recv_target(lf_channel_t h, void *data, size_t capacity, lf_status_t &code) noexcept {
  if (!data && capacity)
    code = fail(LF_ERR_INVALID_ARG, "receive: data is NULL with capacity %zu", capacity);
  else if (capacity > kMaxMessage)
    code = fail(LF_ERR_INVALID_ARG, "receive: capacity %zu is not a plausible size", capacity);
  else
    return channel_ref(h, code);
  return nullptr;
}

// Claim a request for waiting or testing: one thread at a time.
RequestSlot *claim_request(lf_request_t h, const char *fn, lf_status_t &code) noexcept {
  if (!h) {
    code = fail(LF_ERR_INVALID_ARG, "%s: request is NULL", fn);
    return nullptr;
  }
  RequestSlot *r = nullptr;
  switch (requests().claim(h, r)) {
    case Lookup::ok: return r;
    case Lookup::busy:
      code = fail(LF_ERR_INVALID_ARG, "%s: request is being waited or tested by another thread", fn);
      return nullptr;
    case Lookup::stale: break;
  }
  code = fail(LF_ERR_CLOSED, "%s: request is not valid (already completed by a wait, never started, or not a request)",
              fn);
  return nullptr;
}

// Take a request slot bound to `ch`.
lf_status_t new_request(std::shared_ptr<Channel> ch, bool is_send, RequestSlot *&slot, lf_request_t &handle) {
  auto [id, r] = requests().acquire();
  if (!r) return fail(LF_ERR_NO_MEMORY, "no free request handle");
  r->ch = std::move(ch);
  r->is_send = is_send;
  // Only the op in use is read (status(), op_status()): reset just that one.
  if (is_send)
    r->send = SendOp{};
  else
    r->recv = RecvOp{};
  slot = r;
  handle = RequestTable::to_handle<lf_request_t>(id);
  // Live before the op is posted: the handle escapes only when the caller
  // returns, and a cancel that finds it live must find its channel set.
  requests().publish(id);
  return LF_OK;
}

// Free a claimed, completed request. What it referenced is dropped after
// the slot is unlocked: the last reference to a channel may close it (and
// its endpoint may wait briefly for the peer), which must not happen while
// a concurrent lf_cancel spins on the slot.
void free_request(lf_request_t h) noexcept {
  std::shared_ptr<Channel> ch;
  BufferPtr send_buffer, recv_buffer;
  requests().retire(h, [&](RequestSlot &r) {
    ch = std::move(r.ch);
    send_buffer = std::move(r.send.buffer);
    recv_buffer = std::move(r.recv.buffer);
  });
}

lf_status_t op_status(RequestSlot *r) {
  lf_status_t st = r->status();
  const std::string &err = r->is_send ? r->send.error : r->recv.error;
  if (st < 0) set_last_error(st, err.c_str());
  return st;
}

bool valid_completion(const lf_completion_t *c) noexcept {
  return !c || (c->size >= sizeof(size_t) && c->size <= 4096);
}

void write_completion(const RequestSlot *r, lf_completion_t *out) noexcept {
  if (!out) return;
  lf_completion_t c = LF_COMPLETION_INIT;
  c.bytes = r->is_send ? r->send.size : r->recv.bytes;
  c.message_bytes = r->is_send ? r->send.size : r->recv.message_bytes;
  c.tag = r->is_send ? r->send.tag : r->recv.matched_tag;
  std::memcpy(reinterpret_cast<char *>(out) + sizeof(size_t), reinterpret_cast<char *>(&c) + sizeof(size_t),
              std::min(out->size, sizeof c) - sizeof(size_t));
}

// Wait for a claimed request until `deadline`. Complete: writes `out`, frees
// the request and returns its status. Not complete: gives the claim back and
// returns LF_ERR_TIMEOUT.
lf_status_t finish_claimed(lf_request_t h, RequestSlot *r, Deadline deadline, lf_completion_t *out) {
  if (!r->ch->wait(r->status(), deadline)) {
    requests().unclaim(h);
    set_last_error(LF_ERR_TIMEOUT, "request did not complete before its deadline (it is still valid)", {});
    return LF_ERR_TIMEOUT;
  }
  lf_status_t st = op_status(r);
  write_completion(r, out);
  free_request(h);
  return st;
}

Deadline deadline_after_ms(int64_t ms) noexcept {
  if (ms < 0) return Deadline::max();
  Deadline now = Clock::now();
  // Far-off deadlines saturate instead of overflowing into the past.
  if (std::chrono::milliseconds(ms) >= std::chrono::duration_cast<std::chrono::milliseconds>(Deadline::max() - now))
    return Deadline::max();
  return now + std::chrono::milliseconds(ms);
}

// A buffer receive completes only through lf_wait_buffer: any other wait
// would free the request and the buffer it received with it.
lf_status_t refuse_buffer_request(lf_request_t h, const RequestSlot *r, const char *fn) noexcept {
  if (r->is_send || !r->recv.want_buffer) return LF_OK;
  requests().unclaim(h);
  return fail(LF_ERR_INVALID_ARG, "%s: request was started by lf_irecv_buffer; complete it with lf_wait_buffer", fn);
}

}  // namespace

LF_API lf_status_t lf_channel_open_ex(lf_context_t ctx_h, int peer, const lf_channel_params_t *params,
                                      lf_channel_t *out) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(ctx_h);
    if (!ctx) return ctx_h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_channel_open: out is NULL");
    ChannelOptions opts;
    if (params) {
      if (params->size < sizeof(size_t) || params->size > 4096)
        return fail(LF_ERR_INVALID_ARG, "lf_channel_params_t.size=%zu: initialise with LF_CHANNEL_PARAMS_INIT",
                    params->size);
      lf_channel_params_t p = LF_CHANNEL_PARAMS_INIT;
      std::memcpy(&p, params, std::min(params->size, sizeof p));
      if (p.transports) opts.transports = p.transports;
      if (p.strict) opts.strict = true;
      if (p.memory_kind < 0 || p.memory_kind >= LF_MEM_KIND_COUNT_)
        return fail(LF_ERR_INVALID_ARG, "unknown memory kind %d", static_cast<int>(p.memory_kind));
      opts.memory_kind = static_cast<MemoryKind>(p.memory_kind);
      if (p.message_bytes > kMaxMessage)
        return fail(LF_ERR_INVALID_ARG, "lf_channel_params_t.message_bytes=%zu is not a plausible size",
                    p.message_bytes);
      if (p.message_bytes) opts.message_bytes = p.message_bytes;
    }
    return new_channel_handle(
        ctx_h, [&] { return Channel::open(*ctx, peer, opts); }, out);
  });
}

LF_API lf_status_t lf_channel_open(lf_context_t ctx, int peer, lf_channel_t *out) {
  return lf_channel_open_ex(ctx, peer, nullptr, out);
}

LF_API lf_status_t lf_channel_close(lf_channel_t h) {
  return guard([&]() -> lf_status_t {
    if (!h) return fail(LF_ERR_INVALID_ARG, "lf_channel_close: channel is NULL");
    std::shared_ptr<Channel> keep;
    if (!channels().retire(h,
                           [&](ChannelSlot &s) {
                             keep = std::move(s.ch);
                             s.owner = nullptr;
                           }) ||
        !keep)
      return fail(LF_ERR_CLOSED, "lf_channel_close: channel is not valid (closed twice, or not a channel handle)");
    // Requests and blocked calls on other threads hold their own references:
    // they fail with LF_ERR_CLOSED, and the channel is freed after them.
    keep->close();
    return LF_OK;
  });
}

LF_API lf_status_t lf_channel_status(lf_channel_t h) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    std::shared_ptr<Channel> ch = channel_ref(h, code);
    if (!ch) return code;
    if (auto e = ch->health()) return fail(*e);
    return LF_OK;
  });
}

LF_API const char *lf_channel_transport(lf_channel_t h) {
  lf_status_t code;
  std::shared_ptr<Channel> ch = channel_ref(h, code);
  return ch ? ch->transport_name() : nullptr;
}

LF_API const char *lf_channel_reason(lf_channel_t h) {
  lf_status_t code;
  std::shared_ptr<Channel> ch = channel_ref(h, code);
  return ch ? intern(ch->reason()) : nullptr;
}

LF_API int lf_channel_peer(lf_channel_t h) {
  lf_status_t code;
  std::shared_ptr<Channel> ch = channel_ref(h, code);
  return ch ? ch->peer() : -1;
}

namespace {
// lf_isend and lf_isend_gather: a request for one (header +) payload message.
inline lf_status_t start_send(lf_channel_t h, const void *header, size_t header_bytes, const void *data, size_t bytes,
                              uint64_t tag, lf_request_t *req, const char *fn) noexcept {
  lf_status_t code = LF_OK;
  if (!req) return fail(LF_ERR_INVALID_ARG, "%s: req is NULL", fn);
  std::shared_ptr<Channel> ch = send_target(h, data, bytes, tag, code);
  if (!ch) return code;
  RequestSlot *r;
  lf_request_t handle;
  if ((code = new_request(std::move(ch), true, r, handle)) != LF_OK) return code;
  r->send.tag = tag;
  r->send.header = header;
  r->send.header_size = header_bytes;
  r->send.data = data;
  r->send.size = bytes;
  r->ch->post_send(r->send);
  *req = handle;
  return LF_OK;
}
}  // namespace

LF_API lf_status_t lf_isend(lf_channel_t h, const void *data, size_t bytes, uint64_t tag, lf_request_t *req) {
  return start_send(h, nullptr, 0, data, bytes, tag, req, "lf_isend");
}

LF_API lf_status_t lf_isend_gather(lf_channel_t h, const void *header, size_t header_bytes, const void *data,
                                   size_t bytes, uint64_t tag, lf_request_t *req) {
  if (!header && header_bytes)
    return fail(LF_ERR_INVALID_ARG, "lf_isend_gather: header is NULL for a %zu-byte header", header_bytes);
  if (header_bytes > kMaxMessage || bytes > kMaxMessage - header_bytes)
    return fail(LF_ERR_INVALID_ARG, "lf_isend_gather: %zu + %zu bytes is not a plausible message size", header_bytes,
                bytes);
  return start_send(h, header, header_bytes, data, bytes, tag, req, "lf_isend_gather");
}

LF_API lf_status_t lf_irecv(lf_channel_t h, void *data, size_t capacity, uint64_t tag, lf_request_t *req) {
  lf_status_t code = LF_OK;
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_irecv: req is NULL");
  std::shared_ptr<Channel> ch = recv_target(h, data, capacity, code);
  if (!ch) return code;
  RequestSlot *r;
  lf_request_t handle;
  if ((code = new_request(std::move(ch), false, r, handle)) != LF_OK) return code;
  r->recv.tag = tag;
  r->recv.data = data;
  r->recv.capacity = capacity;
  r->ch->post_recv(r->recv);
  *req = handle;
  return LF_OK;
}

LF_API lf_status_t lf_isend_buffer(lf_channel_t h, lf_buffer_t buf, uint64_t tag, lf_request_t *req) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    if (!req) return fail(LF_ERR_INVALID_ARG, "lf_isend_buffer: req is NULL");
    if (tag == LF_ANY_TAG) return fail(LF_ERR_INVALID_ARG, "lf_isend_buffer: LF_ANY_TAG is for receives only");
    std::shared_ptr<Channel> ch = channel_ref(h, code);
    if (!ch) return code;
    if (!buf) return fail(LF_ERR_INVALID_ARG, "lf_isend_buffer: buf is NULL");
    RequestSlot *r;
    lf_request_t handle;
    if ((code = new_request(std::move(ch), true, r, handle)) != LF_OK) return code;
    BufferPtr b = unwrap_take(buf);
    if (!b) {
      // Not a live buffer (or freed by another thread meanwhile): taking it
      // decides, with the buffer's slot locked.
      free_request(handle);
      return fail(LF_ERR_INVALID_ARG, "lf_isend_buffer: buf is not a live buffer");
    }
    r->send.tag = tag;
    r->send.data = b->data();
    r->send.size = b->size();
    r->send.buffer = std::move(b);
    r->ch->post_send(r->send);
    *req = handle;
    return LF_OK;
  });
}

LF_API lf_status_t lf_irecv_buffer(lf_channel_t h, uint64_t tag, lf_request_t *req) {
  lf_status_t code = LF_OK;
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_irecv_buffer: req is NULL");
  std::shared_ptr<Channel> ch = channel_ref(h, code);
  if (!ch) return code;
  RequestSlot *r;
  lf_request_t handle;
  if ((code = new_request(std::move(ch), false, r, handle)) != LF_OK) return code;
  r->recv.tag = tag;
  r->recv.want_buffer = true;
  r->ch->post_recv(r->recv);
  *req = handle;
  return LF_OK;
}

LF_API lf_status_t lf_test(lf_request_t h, int *done) {
  lf_status_t code = LF_OK;
  if (!done) return fail(LF_ERR_INVALID_ARG, "lf_test: done is NULL");
  RequestSlot *r = claim_request(h, "lf_test", code);
  if (!r) return code;
  if (r->status_now() == LF_IN_PROGRESS) r->ch->progress();
  lf_status_t st = r->status_now();
  *done = st != LF_IN_PROGRESS;
  if (st < 0) op_status(r);
  requests().unclaim(h);
  return st < 0 ? st : LF_OK;
}

LF_API lf_status_t lf_cancel(lf_request_t h) {
  if (!h) return fail(LF_ERR_INVALID_ARG, "lf_cancel: request is NULL");
  // Locked briefly, not claimed: a cancel comes from another thread while
  // the owner waits. The channel's lock orders it against matching.
  bool live = requests().with_locked(h, [](RequestSlot &r) {
    if (!r.is_send && r.status_now() == LF_IN_PROGRESS) r.ch->cancel(r.recv);
  });
  if (!live)
    return fail(LF_ERR_CLOSED, "lf_cancel: request is not valid (already completed by a wait, or not a request)");
  return LF_OK;
}

LF_API lf_status_t lf_wait_completion(lf_request_t h, lf_completion_t *out) {
  lf_status_t code = LF_OK;
  if (!valid_completion(out))
    return fail(LF_ERR_INVALID_ARG, "lf_completion_t.size=%zu: initialise with LF_COMPLETION_INIT", out->size);
  RequestSlot *r = claim_request(h, "lf_wait", code);
  if (!r) return code;
  if ((code = refuse_buffer_request(h, r, "lf_wait")) != LF_OK) return code;
  return finish_claimed(h, r, Deadline::max(), out);
}

LF_API lf_status_t lf_wait(lf_request_t h, size_t *bytes) {
  lf_completion_t c = LF_COMPLETION_INIT;
  lf_status_t st = lf_wait_completion(h, &c);
  if (bytes && (st == LF_OK || st == LF_ERR_TRUNCATED)) *bytes = c.bytes;
  return st;
}

LF_API lf_status_t lf_wait_timeout(lf_request_t h, int64_t timeout_ms, size_t *bytes) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    RequestSlot *r = claim_request(h, "lf_wait_timeout", code);
    if (!r) return code;
    if ((code = refuse_buffer_request(h, r, "lf_wait_timeout")) != LF_OK) return code;
    lf_completion_t c = LF_COMPLETION_INIT;
    lf_status_t st = finish_claimed(h, r, deadline_after_ms(timeout_ms), &c);
    if (bytes && (st == LF_OK || st == LF_ERR_TRUNCATED)) *bytes = c.bytes;
    return st;
  });
}

LF_API lf_status_t lf_waitany(lf_request_t *reqs, size_t n, size_t *index, size_t *bytes) {
  return guard([&]() -> lf_status_t {
    if (!reqs && n) return fail(LF_ERR_INVALID_ARG, "lf_waitany: reqs is NULL");
    if (!index) return fail(LF_ERR_INVALID_ARG, "lf_waitany: index is NULL");
    *index = SIZE_MAX;  // no request completed (a call error)
    // Claim every request first, so that none is completed twice.
    std::vector<RequestSlot *> claimed(n, nullptr);
    lf_status_t code = LF_OK;
    size_t live = 0;
    auto unclaim_all = [&] {
      for (size_t i = 0; i < n; ++i)
        if (claimed[i]) requests().unclaim(reqs[i]);
    };
    for (size_t i = 0; i < n; ++i) {
      if (!reqs[i]) continue;
      if (!(claimed[i] = claim_request(reqs[i], "lf_waitany", code)) ||
          (code = refuse_buffer_request(reqs[i], claimed[i], "lf_waitany")) != LF_OK) {
        claimed[i] = nullptr;  // refuse_buffer_request gave its claim back
        unclaim_all();
        return code;
      }
      ++live;
    }
    if (live == 0) return fail(LF_ERR_INVALID_ARG, "lf_waitany: no request given (all %zu entries are NULL)", n);
    // Poll them all; every 16 rounds also sweep the context's other channels
    // (the peer may need this rank's progress there, as in Channel::wait);
    // after LF_SPIN_COUNT rounds, sleep briefly on one endpoint at a time.
    int64_t spins = config::get_int("LF_SPIN_COUNT");
    for (int64_t round = 0;; ++round) {
      for (size_t i = 0; i < n; ++i) {
        if (!claimed[i]) continue;
        if (claimed[i]->status_now() == LF_IN_PROGRESS) claimed[i]->ch->try_progress();
        if (claimed[i]->status_now() != LF_IN_PROGRESS) {
          RequestSlot *r = claimed[i];
          claimed[i] = nullptr;
          unclaim_all();
          lf_request_t done = reqs[i];
          lf_status_t st = op_status(r);
          if (bytes && (st == LF_OK || st == LF_ERR_TRUNCATED)) *bytes = r->is_send ? r->send.size : r->recv.bytes;
          free_request(done);
          *index = i;
          return st;
        }
      }
      size_t k = static_cast<size_t>(round) % n;
      if ((round & 15) == 15 && claimed[k]) claimed[k]->ch->context().progress_all();
      if (round >= spins && claimed[k]) claimed[k]->ch->wait_for_activity(1);
    }
  });
}

LF_API lf_status_t lf_waitall(lf_request_t *reqs, size_t n) {
  return guard([&]() -> lf_status_t {
    if (!reqs && n) return fail(LF_ERR_INVALID_ARG, "lf_waitall: reqs is NULL");
    lf_status_t first = LF_OK;
    std::string why;
    for (size_t i = 0; i < n; ++i) {
      if (!reqs[i]) continue;
      lf_status_t code = LF_OK, st;
      RequestSlot *r = claim_request(reqs[i], "lf_waitall", code);
      if (r && (code = refuse_buffer_request(reqs[i], r, "lf_waitall")) != LF_OK) r = nullptr;
      if (!r) {
        st = code;  // busy, stale or a buffer request: left as it is
      } else {
        st = finish_claimed(reqs[i], r, Deadline::max(), nullptr);
        reqs[i] = nullptr;  // freed, whatever its status
      }
      if (st < 0 && first == LF_OK) {
        first = st;
        why = lf_last_error();
      }
    }
    if (first < 0) set_last_error(first, why.c_str());
    return first;
  });
}

namespace {
lf_status_t wait_buffer(lf_request_t h, Deadline deadline, lf_buffer_t *out, lf_completion_t *info,
                        const char *fn) noexcept {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    // Every argument is checked before the wait: afterwards the received
    // buffer would have nowhere to go.
    if (!out) return fail(LF_ERR_INVALID_ARG, "%s: out is NULL", fn);
    if (!valid_completion(info))
      return fail(LF_ERR_INVALID_ARG, "lf_completion_t.size=%zu: initialise with LF_COMPLETION_INIT", info->size);
    RequestSlot *r = claim_request(h, fn, code);
    if (!r) return code;
    if (r->is_send || !r->recv.want_buffer) {
      requests().unclaim(h);
      return fail(LF_ERR_INVALID_ARG, "%s: request was not started by lf_irecv_buffer", fn);
    }
    if (!r->ch->wait(r->recv.status, deadline)) {
      requests().unclaim(h);  // still valid: wait again or cancel
      set_last_error(LF_ERR_TIMEOUT, fn, ": the receive did not complete in time");
      return LF_ERR_TIMEOUT;
    }
    BufferPtr got;
    lf_status_t st = op_status(r);
    if (st == LF_OK) got = std::move(r->recv.buffer);
    write_completion(r, info);
    free_request(h);
    if (st != LF_OK) return st;
    lf_buffer_t b = wrap(std::move(got));
    if (!b) return LF_ERR_NO_MEMORY;
    *out = b;
    return LF_OK;
  });
}
}  // namespace

LF_API lf_status_t lf_wait_buffer(lf_request_t h, lf_buffer_t *out, lf_completion_t *info) {
  return wait_buffer(h, Deadline::max(), out, info, "lf_wait_buffer");
}

LF_API lf_status_t lf_wait_buffer_timeout(lf_request_t h, int64_t timeout_ms, lf_buffer_t *out, lf_completion_t *info) {
  return wait_buffer(h, deadline_after_ms(timeout_ms), out, info, "lf_wait_buffer_timeout");
}

// The blocking calls' operation never escapes the call, so it lives on the
// stack: no request handle, no handle-table lock. This is a third of the
// small-message latency through the C API (docs/performance.md).
LF_API lf_status_t lf_send(lf_channel_t h, const void *data, size_t bytes, uint64_t tag) {
  lf_status_t code = LF_OK;
  std::shared_ptr<Channel> ch = send_target(h, data, bytes, tag, code);  // alive if another thread closes it
  if (!ch) return code;
  SendOp op;
  op.tag = tag;
  op.data = data;
  op.size = bytes;
  ch->post_send(op);
  ch->wait(op.status);
  if (op.status < 0) set_last_error(op.status, op.error.c_str());
  return op.status;
}

LF_API lf_status_t lf_recv(lf_channel_t h, void *data, size_t capacity, uint64_t tag, size_t *bytes) {
  lf_status_t code = LF_OK;
  std::shared_ptr<Channel> ch = recv_target(h, data, capacity, code);
  if (!ch) return code;
  RecvOp op;
  op.tag = tag;
  op.data = data;
  op.capacity = capacity;
  ch->post_recv(op, /*drive=*/true);
  ch->wait(op.status);
  if (op.status < 0) set_last_error(op.status, op.error.c_str());
  if (bytes && (op.status == LF_OK || op.status == LF_ERR_TRUNCATED)) *bytes = op.bytes;
  return op.status;
}

LF_API lf_status_t lf_shared_pool(lf_context_t ctx_h, lf_pool_t *out) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(ctx_h);
    if (!ctx) return ctx_h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_shared_pool: out is NULL");
    *out = wrap_pool(ctx->shared_pool());
    return LF_OK;
  });
}
