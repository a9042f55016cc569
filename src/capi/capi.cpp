// C API: status, context, scope.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_set>

#include "capi/capi_internal.hpp"
#include "core/log.hpp"
#include "lavaflow_features.h"

namespace lf::capi {

ContextTable &contexts() noexcept {
  static ContextTable t;
  return t;
}
ChannelTable &channels() noexcept {
  static ChannelTable t;
  return t;
}
RequestTable &requests() noexcept {
  static RequestTable t;
  return t;
}

lf_status_t fail(lf_status_t code, const char *fmt, ...) noexcept {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  set_last_error(code, buf);
  return code;
}

const char *intern(const std::string &s) noexcept {
  static std::mutex mu;
  static std::unordered_set<std::string> *texts = new std::unordered_set<std::string>;  // never destroyed
  try {
    std::lock_guard g(mu);
    return texts->insert(s).first->c_str();
  } catch (const std::bad_alloc &) {
    return "(out of memory)";
  }
}

std::shared_ptr<Context> context_of(lf_context_t h) noexcept {
  if (!h) {
    fail(LF_ERR_INVALID_ARG, "context is NULL");
    return nullptr;
  }
  // Copied with the slot locked: a finalize on another thread then cannot
  // free the context while this call uses it.
  std::shared_ptr<Context> ctx;
  contexts().with_locked(h, [&](ContextSlot &s) { ctx = s.ctx; });
  if (!ctx) fail(LF_ERR_CLOSED, "context is not valid (finalized, never initialised, or not a context handle)");
  return ctx;
}

namespace {
lf_status_t copy_out(const std::string &s, char *buf, size_t len, size_t *needed) {
  if (needed) *needed = s.size() + 1;
  if (!buf || len == 0) return needed ? LF_OK : fail(LF_ERR_INVALID_ARG, "output buffer is NULL or empty");
  size_t n = std::min(len - 1, s.size());
  std::memcpy(buf, s.data(), n);
  buf[n] = '\0';
  return LF_OK;
}

Result<int> peer_of(const std::shared_ptr<Context> &ctx, int peer) {
  if (peer < 0 || peer >= ctx->size())
    return LF_FAIL(LF_ERR_INVALID_ARG, "rank %d is out of range (world of %d ranks)", peer, ctx->size());
  return peer;
}
}  // namespace

}  // namespace lf::capi

using namespace lf;
using namespace lf::capi;

LF_API const char *lf_status_string(lf_status_t status) { return status_string(status); }
LF_API const char *lf_last_error(void) { return last_error(); }
LF_API const char *lf_version(void) { return LF_VERSION_STRING; }

LF_API lf_status_t lf_init(lf_context_t *out) {
  return guard([&]() -> lf_status_t {
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_init: ctx is NULL");
    auto ctx = Context::create();
    if (!ctx) return fail(ctx.error());
    auto [h, slot] = contexts().acquire();
    if (!slot) return fail(LF_ERR_NO_MEMORY, "lf_init: no free context handle");
    slot->ctx = std::move(*ctx);
    contexts().publish(h);
    *out = ContextTable::to_handle<lf_context_t>(h);
    return LF_OK;
  });
}

LF_API lf_status_t lf_finalize(lf_context_t h) {
  return guard([&]() -> lf_status_t {
    if (!h) return fail(LF_ERR_INVALID_ARG, "lf_finalize: context is NULL");
    // Retire the handle first: from here on no call can start on this
    // context, and of two racing finalizes one wins.
    std::shared_ptr<Context> keep;
    if (!contexts().retire(h, [&](ContextSlot &s) { keep = std::move(s.ctx); }) || !keep)
      return fail(LF_ERR_CLOSED, "lf_finalize: context is not valid (finalized, or not a context handle)");
    // Calls that took their reference before the retire may still be
    // opening channels: refuse further opens, then close the channels the
    // application left open (their requests complete with LF_ERR_CLOSED),
    // and any whose open raced this call.
    keep->begin_close();
    std::vector<void *> mine;
    channels().for_each([&](void *ch_handle, ChannelSlot &s) {
      if (s.owner == h) mine.push_back(ch_handle);
    });
    for (void *c : mine) lf_channel_close(static_cast<lf_channel_t>(c));
    keep->close_channels();
    coll_forget(h);
    (void)keep->set_progress_thread(false);
    keep.reset();  // the context goes once the last request referencing it is freed
    return LF_OK;
  });
}

LF_API int lf_rank(lf_context_t h) {
  std::shared_ptr<Context> ctx = context_of(h);
  return ctx ? ctx->rank() : -1;
}

LF_API int lf_size(lf_context_t h) {
  std::shared_ptr<Context> ctx = context_of(h);
  return ctx ? ctx->size() : -1;
}

LF_API lf_status_t lf_barrier(lf_context_t h) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    // The context's channels keep answering their peers while it waits.
    if (auto st = ctx->bootstrap().barrier([&] { ctx->progress_all(); }); !st) return fail(st.error());
    return LF_OK;
  });
}

LF_API lf_scope_t lf_scope(lf_context_t h, int peer) {
  lf_scope_t out = LF_SCOPE_INVALID;
  guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return LF_ERR_INVALID_ARG;
    auto p = peer_of(ctx, peer);
    if (!p) return fail(p.error());
    out = static_cast<lf_scope_t>(ctx->scope(peer).scope);
    return LF_OK;
  });
  return out;
}

LF_API const char *lf_scope_string(lf_scope_t scope) {
  switch (scope) {
    case LF_SCOPE_SELF: return "self";
    case LF_SCOPE_LOCAL: return "local";
    case LF_SCOPE_REMOTE: return "remote";
    default: return "invalid";
  }
}

LF_API lf_status_t lf_scope_explain(lf_context_t h, int peer, char *buf, size_t len) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    auto p = peer_of(ctx, peer);
    if (!p) return fail(p.error());
    if (!buf || len == 0) return fail(LF_ERR_INVALID_ARG, "lf_scope_explain: buf is NULL or len is 0");
    return copy_out(ctx->scope(peer).reason, buf, len, nullptr);
  });
}

LF_API lf_status_t lf_location_json(lf_context_t h, int rank, char *buf, size_t len, size_t *needed) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    auto p = peer_of(ctx, rank);
    if (!p) return fail(p.error());
    return copy_out(ctx->location(rank).to_json(), buf, len, needed);
  });
}

LF_API lf_status_t lf_progress_thread(lf_context_t h, int enable) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(h);
    if (!ctx) return h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (auto st = ctx->set_progress_thread(enable != 0); !st) return fail(st.error());
    return LF_OK;
  });
}
