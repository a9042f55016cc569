// Channels by address (lf_listen, lf_accept, lf_connect): the C side of
// channel/dial.hpp. Listeners are typed handles (objects.hpp).
#include <cstring>

#include "capi/capi_internal.hpp"
#include "capi/objects.hpp"
#include "channel/dial.hpp"
#include "core/config.hpp"

using namespace lf;
using namespace lf::capi;

namespace {
struct Listener {
  lf_context_t owner = nullptr;
  std::unique_ptr<DialListener> l;
};
ObjectTable<Listener, HandleType::listener> &listeners() noexcept {
  static ObjectTable<Listener, HandleType::listener> t;
  return t;
}
std::shared_ptr<Listener> listener_of(lf_listener_t l, const char *fn) noexcept {
  auto o = listeners().get(l);
  if (!o) fail(LF_ERR_INVALID_ARG, "%s: not a live listener", fn);
  return o;
}
}  // namespace

LF_API lf_status_t lf_listen(lf_context_t ctx_h, const char *address, lf_listener_t *out) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(ctx_h);
    if (!ctx) return ctx_h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (!address || !out) return fail(LF_ERR_INVALID_ARG, "lf_listen: address and out must not be NULL");
    auto l = DialListener::listen(*ctx, address);
    if (!l) return fail(l.error());
    auto h = std::make_shared<Listener>();
    h->owner = ctx_h;
    h->l = std::move(*l);
    *out = listeners().add<lf_listener_t>(std::move(h));
    return *out ? LF_OK : fail(LF_ERR_NO_MEMORY, "lf_listen: no free listener handle");
  });
}

LF_API lf_status_t lf_listener_address(lf_listener_t l, char *buf, size_t len) {
  auto h = listener_of(l, "lf_listener_address");
  if (!h) return LF_ERR_INVALID_ARG;
  const std::string &a = h->l->address();
  if (!buf || len <= a.size())
    return fail(LF_ERR_INVALID_ARG, "lf_listener_address: the address needs %zu bytes", a.size() + 1);
  std::memcpy(buf, a.c_str(), a.size() + 1);
  return LF_OK;
}

LF_API lf_status_t lf_accept(lf_listener_t l, int64_t timeout_ms, lf_channel_t *out) {
  return guard([&]() -> lf_status_t {
    auto h = listener_of(l, "lf_accept");
    if (!h) return LF_ERR_INVALID_ARG;
    if (!out) return fail(LF_ERR_INVALID_ARG, "lf_accept: out is NULL");
    const Deadline d = timeout_ms < 0 ? Deadline::max() : Clock::now() + std::chrono::milliseconds(timeout_ms);
    return new_channel_handle(
        h->owner, [&] { return h->l->accept(d); }, out);
  });
}

LF_API lf_status_t lf_listener_close(lf_listener_t l) {
  if (!listeners().take(l)) return fail(LF_ERR_INVALID_ARG, "lf_listener_close: not a live listener");
  return LF_OK;  // an accept in progress keeps the listener until it returns; its channels live on
}

LF_API lf_status_t lf_connect(lf_context_t ctx_h, const char *address, int64_t timeout_ms, lf_channel_t *out) {
  return guard([&]() -> lf_status_t {
    std::shared_ptr<Context> ctx = context_of(ctx_h);
    if (!ctx) return ctx_h ? LF_ERR_CLOSED : LF_ERR_INVALID_ARG;
    if (!address || !out) return fail(LF_ERR_INVALID_ARG, "lf_connect: address and out must not be NULL");
    const Deadline d = timeout_ms < 0 ? deadline_in(config::get_seconds("LF_CONNECT_TIMEOUT"))
                                      : Clock::now() + std::chrono::milliseconds(timeout_ms);
    return new_channel_handle(
        ctx_h, [&] { return connect_by_address(*ctx, address, d); }, out);
  });
}
