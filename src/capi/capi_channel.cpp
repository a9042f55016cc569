// C API: channels and requests.
#include <cstring>

#include "capi/capi_internal.hpp"
#include "capi/capi_memory.hpp"

using namespace lf;
using namespace lf::capi;

namespace {

// Above this a size is certainly a caller's bug (a negative value cast to
// size_t), not a message: refuse it before any transport sees it.
constexpr size_t kMaxMessage = size_t(1) << 46;

// The live slot behind `h`: one table lookup per call, whose result the
// caller keeps (its `ch` is never null).
ChannelSlot *slot_of(lf_channel_t h, lf_status_t &code) noexcept {
  if (!h) {
    code = fail(LF_ERR_INVALID_ARG, "channel is NULL");
    return nullptr;
  }
  ChannelSlot *s = channels().get(h);
  if (!s || !s->ch) {
    code = fail(LF_ERR_CLOSED, "channel is not valid (closed or never opened)");
    return nullptr;
  }
  return s;
}

Channel *channel_of(lf_channel_t h, lf_status_t &code) noexcept {
  ChannelSlot *s = slot_of(h, code);
  return s ? s->ch.get() : nullptr;
}

// Argument checks shared by the non-blocking and blocking calls.
ChannelSlot *send_target(lf_channel_t h, const void *data, size_t bytes, uint64_t tag, lf_status_t &code) noexcept {
  ChannelSlot *cs = slot_of(h, code);
  if (!cs) return nullptr;
  if (!data && bytes)
    code = fail(LF_ERR_INVALID_ARG, "send: data is NULL for a %zu-byte message", bytes);
  else if (bytes > kMaxMessage)
    code = fail(LF_ERR_INVALID_ARG, "send: %zu bytes is not a plausible message size", bytes);
  else if (tag == LF_ANY_TAG)
    code = fail(LF_ERR_INVALID_ARG, "send: LF_ANY_TAG is for receives only");
  else
    return cs;
  return nullptr;
}

ChannelSlot *recv_target(lf_channel_t h, void *data, size_t capacity, lf_status_t &code) noexcept {
  ChannelSlot *cs = slot_of(h, code);
  if (!cs) return nullptr;
  if (!data && capacity)
    code = fail(LF_ERR_INVALID_ARG, "receive: data is NULL with capacity %zu", capacity);
  else if (capacity > kMaxMessage)
    code = fail(LF_ERR_INVALID_ARG, "receive: capacity %zu is not a plausible size", capacity);
  else
    return cs;
  return nullptr;
}

RequestSlot *request_of(lf_request_t h, lf_status_t &code) noexcept {
  if (!h) {
    code = fail(LF_ERR_INVALID_ARG, "request is NULL");
    return nullptr;
  }
  RequestSlot *r = requests().get(h);
  if (!r) code = fail(LF_ERR_CLOSED, "request is not valid (already completed by lf_wait, or never started)");
  return r;
}

// Take a request slot bound to `cs`'s channel.
lf_status_t new_request(const ChannelSlot &cs, bool is_send, RequestSlot *&slot, lf_request_t &handle) {
  auto [id, r] = requests().acquire();
  if (!r) return fail(LF_ERR_NO_MEMORY, "no free request handle");
  r->ch = cs.ch;
  r->is_send = is_send;
  // Only the op in use is read (status(), op_status()): reset just that one.
  if (is_send)
    r->send = SendOp{};
  else
    r->recv = RecvOp{};
  slot = r;
  handle = HandleTable<RequestSlot>::to_handle<lf_request_t>(id);
  return LF_OK;
}

void free_request(lf_request_t h, RequestSlot *r) noexcept {
  r->ch.reset();
  r->send.buffer.reset();
  r->recv.buffer.reset();
  requests().release(h);
}

lf_status_t op_status(RequestSlot *r) {
  lf_status_t st = r->status();
  const std::string &err = r->is_send ? r->send.error : r->recv.error;
  if (st < 0) set_last_error(st, err.c_str());
  return st;
}

}  // namespace

LF_API lf_status_t lf_channel_open_ex(lf_context_t ctx_h, int peer, const lf_channel_params_t *params,
                                      lf_channel_t *out) {
  return guard([&]() -> lf_status_t {
    Context *ctx = context_of(ctx_h);
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
    }
    auto ch = Channel::open(*ctx, peer, opts);
    if (!ch) return fail(ch.error());
    auto [id, slot] = channels().acquire();
    if (!slot) return fail(LF_ERR_NO_MEMORY, "no free channel handle");
    slot->ch = std::move(*ch);
    slot->owner = ctx_h;
    *out = HandleTable<ChannelSlot>::to_handle<lf_channel_t>(id);
    return LF_OK;
  });
}

LF_API lf_status_t lf_channel_open(lf_context_t ctx, int peer, lf_channel_t *out) {
  return lf_channel_open_ex(ctx, peer, nullptr, out);
}

LF_API lf_status_t lf_channel_close(lf_channel_t h) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    ChannelSlot *s = slot_of(h, code);
    if (!s) return code;
    std::shared_ptr<Channel> keep = std::move(s->ch);
    channels().release(h);
    keep->close();
    return LF_OK;
  });
}

LF_API const char *lf_channel_transport(lf_channel_t h) {
  lf_status_t code;
  Channel *ch = channel_of(h, code);
  return ch ? ch->transport_name() : nullptr;
}

LF_API const char *lf_channel_reason(lf_channel_t h) {
  lf_status_t code;
  Channel *ch = channel_of(h, code);
  return ch ? ch->reason().c_str() : nullptr;
}

LF_API int lf_channel_peer(lf_channel_t h) {
  lf_status_t code;
  Channel *ch = channel_of(h, code);
  return ch ? ch->peer() : -1;
}

LF_API lf_status_t lf_isend(lf_channel_t h, const void *data, size_t bytes, uint64_t tag, lf_request_t *req) {
  lf_status_t code = LF_OK;
  ChannelSlot *cs = send_target(h, data, bytes, tag, code);
  if (!cs) return code;
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_isend: req is NULL");
  RequestSlot *r;
  lf_request_t handle;
  if ((code = new_request(*cs, true, r, handle)) != LF_OK) return code;
  r->send.tag = tag;
  r->send.data = data;
  r->send.size = bytes;
  r->ch->post_send(r->send);
  *req = handle;
  return LF_OK;
}

LF_API lf_status_t lf_irecv(lf_channel_t h, void *data, size_t capacity, uint64_t tag, lf_request_t *req) {
  lf_status_t code = LF_OK;
  ChannelSlot *cs = recv_target(h, data, capacity, code);
  if (!cs) return code;
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_irecv: req is NULL");
  RequestSlot *r;
  lf_request_t handle;
  if ((code = new_request(*cs, false, r, handle)) != LF_OK) return code;
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
    ChannelSlot *cs = slot_of(h, code);
    if (!cs) return code;
    if (!req) return fail(LF_ERR_INVALID_ARG, "lf_isend_buffer: req is NULL");
    if (tag == LF_ANY_TAG) return fail(LF_ERR_INVALID_ARG, "lf_isend_buffer: LF_ANY_TAG is for receives only");
    if (!peek(buf)) return fail(LF_ERR_INVALID_ARG, "lf_isend_buffer: buf is not a live buffer");
    RequestSlot *r;
    lf_request_t handle;
    if ((code = new_request(*cs, true, r, handle)) != LF_OK) return code;
    BufferPtr b = unwrap_take(buf);
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
  ChannelSlot *cs = slot_of(h, code);
  if (!cs) return code;
  if (!req) return fail(LF_ERR_INVALID_ARG, "lf_irecv_buffer: req is NULL");
  RequestSlot *r;
  lf_request_t handle;
  if ((code = new_request(*cs, false, r, handle)) != LF_OK) return code;
  r->recv.tag = tag;
  r->recv.want_buffer = true;
  r->ch->post_recv(r->recv);
  *req = handle;
  return LF_OK;
}

LF_API lf_status_t lf_test(lf_request_t h, int *done) {
  lf_status_t code = LF_OK;
  RequestSlot *r = request_of(h, code);
  if (!r) return code;
  if (!done) return fail(LF_ERR_INVALID_ARG, "lf_test: done is NULL");
  if (r->status() == LF_IN_PROGRESS) r->ch->progress();
  lf_status_t st = r->status();
  *done = st != LF_IN_PROGRESS;
  if (st == LF_IN_PROGRESS) return LF_OK;
  return st < 0 ? op_status(r) : LF_OK;
}

LF_API lf_status_t lf_wait_completion(lf_request_t h, lf_completion_t *out) {
  lf_status_t code = LF_OK;
  RequestSlot *r = request_of(h, code);
  if (!r) return code;
  if (out && (out->size < sizeof(size_t) || out->size > 4096))
    return fail(LF_ERR_INVALID_ARG, "lf_completion_t.size=%zu: initialise with LF_COMPLETION_INIT", out->size);
  r->ch->wait(r->is_send ? r->send.status : r->recv.status);
  lf_status_t st = op_status(r);
  if (out) {
    lf_completion_t c = LF_COMPLETION_INIT;
    c.bytes = r->is_send ? r->send.size : r->recv.bytes;
    c.message_bytes = r->is_send ? r->send.size : r->recv.message_bytes;
    c.tag = r->is_send ? r->send.tag : r->recv.matched_tag;
    std::memcpy(reinterpret_cast<char *>(out) + sizeof(size_t), reinterpret_cast<char *>(&c) + sizeof(size_t),
                std::min(out->size, sizeof c) - sizeof(size_t));
  }
  free_request(h, r);
  return st;
}

LF_API lf_status_t lf_wait(lf_request_t h, size_t *bytes) {
  lf_completion_t c = LF_COMPLETION_INIT;
  lf_status_t st = lf_wait_completion(h, &c);
  if (bytes && (st == LF_OK || st == LF_ERR_TRUNCATED)) *bytes = c.bytes;
  return st;
}

LF_API lf_status_t lf_wait_buffer(lf_request_t h, lf_buffer_t *out, lf_completion_t *info) {
  return guard([&]() -> lf_status_t {
    lf_status_t code = LF_OK;
    RequestSlot *r = request_of(h, code);
    if (!r) return code;
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_wait_buffer: out is NULL");
    if (r->is_send || !r->recv.want_buffer)
      return fail(LF_ERR_INVALID_ARG, "lf_wait_buffer: request was not started by lf_irecv_buffer");
    BufferPtr got;
    r->ch->wait(r->recv.status);
    lf_status_t st = op_status(r);
    if (st == LF_OK) got = std::move(r->recv.buffer);
    if (info) {
      if (info->size < sizeof(size_t) || info->size > 4096)
        return fail(LF_ERR_INVALID_ARG, "lf_completion_t.size=%zu: initialise with LF_COMPLETION_INIT", info->size);
      lf_completion_t c = LF_COMPLETION_INIT;
      c.bytes = r->recv.bytes;
      c.message_bytes = r->recv.message_bytes;
      c.tag = r->recv.matched_tag;
      std::memcpy(reinterpret_cast<char *>(info) + sizeof(size_t), reinterpret_cast<char *>(&c) + sizeof(size_t),
                  std::min(info->size, sizeof c) - sizeof(size_t));
    }
    free_request(h, r);
    if (st == LF_OK) *out = wrap(std::move(got));
    return st;
  });
}

// The blocking calls' operation never escapes the call, so it lives on the
// stack: no request handle, no handle-table lock. This is a third of the
// small-message latency through the C API (docs/performance.md).
LF_API lf_status_t lf_send(lf_channel_t h, const void *data, size_t bytes, uint64_t tag) {
  lf_status_t code = LF_OK;
  ChannelSlot *cs = send_target(h, data, bytes, tag, code);
  if (!cs) return code;
  std::shared_ptr<Channel> ch = cs->ch;  // stays alive if another thread closes it
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
  ChannelSlot *cs = recv_target(h, data, capacity, code);
  if (!cs) return code;
  std::shared_ptr<Channel> ch = cs->ch;
  RecvOp op;
  op.tag = tag;
  op.data = data;
  op.capacity = capacity;
  ch->post_recv(op);
  ch->wait(op.status);
  if (op.status < 0) set_last_error(op.status, op.error.c_str());
  if (bytes && (op.status == LF_OK || op.status == LF_ERR_TRUNCATED)) *bytes = op.bytes;
  return op.status;
}

LF_API lf_status_t lf_shared_pool(lf_context_t ctx_h, lf_pool_t *out) {
  return guard([&]() -> lf_status_t {
    Context *ctx = context_of(ctx_h);
    if (!ctx) return ctx_h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_shared_pool: out is NULL");
    *out = wrap_pool(ctx->shared_pool());
    return LF_OK;
  });
}
