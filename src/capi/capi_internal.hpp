// Shared by the C API translation units: handle tables and the guard that
// turns failures into a status plus lf_last_error().
#pragma once

#include <lavaflow/lavaflow.h>

#include <memory>
#include <new>

#include "capi/handles.hpp"
#include "channel/channel.hpp"
#include "channel/context.hpp"

#define LF_API extern "C" __attribute__((visibility("default")))

namespace lf::capi {

struct ContextSlot {
  std::shared_ptr<Context> ctx;
};

struct ChannelSlot {
  std::shared_ptr<Channel> ch;
  lf_context_t owner = nullptr;
};

struct RequestSlot {
  std::shared_ptr<Channel> ch;
  bool is_send = false;
  SendOp send;
  RecvOp recv;
  const lf_status_t &status() const noexcept { return is_send ? send.status : recv.status; }
};

HandleTable<ContextSlot> &contexts() noexcept;
HandleTable<ChannelSlot> &channels() noexcept;
HandleTable<RequestSlot> &requests() noexcept;

/// Record `e` as the thread's last error and return its code.
inline lf_status_t fail(const Error &e) noexcept {
  set_last_error(e);
  return e.code;
}
lf_status_t fail(lf_status_t code, const char *fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

/// Run `body` (returning lf_status_t), converting exceptions to statuses so
/// none crosses the C boundary.
template <typename F>
lf_status_t guard(F &&body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return fail(LF_ERR_NO_MEMORY, "out of memory");
  } catch (const std::exception &e) {
    return fail(LF_ERR_INTERNAL, "unexpected exception: %s", e.what());
  } catch (...) {
    return fail(LF_ERR_INTERNAL, "unexpected exception");
  }
}

/// Look up a context handle; records the error and returns nullptr if bad.
Context *context_of(lf_context_t h) noexcept;

}  // namespace lf::capi
