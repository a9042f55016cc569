// Shared by the C API translation units: handle tables and the guard that
// turns failures into a status plus lf_last_error().
#pragma once

#include <lavaflow/lavaflow.h>

#include <memory>
#include <new>

#include "capi/capi_error.hpp"
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
  /// The status, read with acquire: once it is final, the op's other fields
  /// (bytes, error, buffer) written before it by another thread are visible.
  lf_status_t status_now() const noexcept { return __atomic_load_n(&status(), __ATOMIC_ACQUIRE); }
};

using ContextTable = HandleTable<ContextSlot, HandleType::context>;
using ChannelTable = HandleTable<ChannelSlot, HandleType::channel>;
using RequestTable = HandleTable<RequestSlot, HandleType::request>;

ContextTable &contexts() noexcept;
ChannelTable &channels() noexcept;
RequestTable &requests() noexcept;

/// Look up a context handle; records the error and returns nullptr if bad.
/// The reference keeps the context alive through a racing lf_finalize.
std::shared_ptr<Context> context_of(lf_context_t h) noexcept;

/// Make a channel with `make()` (a Result<shared_ptr<Channel>>) under a new
/// handle owned by `owner`. The handle is taken first: running out of
/// handles must not leave a peer connected to a channel nobody can use.
template <class F>
lf_status_t new_channel_handle(lf_context_t owner, F &&make, lf_channel_t *out) {
  auto [id, slot] = channels().acquire();
  if (!slot) return fail(LF_ERR_NO_MEMORY, "no free channel handle");
  auto ch = make();
  if (!ch) {
    channels().abandon(id);
    return fail(ch.error());
  }
  slot->ch = std::move(*ch);
  slot->owner = owner;
  channels().publish(id);
  *out = ChannelTable::to_handle<lf_channel_t>(id);
  return LF_OK;
}

/// Drop the collectives' engine of a context being finalized (capi_coll.cpp):
/// its channels would otherwise keep the context alive.
void coll_forget(lf_context_t h) noexcept;

}  // namespace lf::capi
