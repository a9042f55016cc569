// Handles for C API objects that are one shared object each (listeners,
// rpc servers, clients and requests): a typed HandleTable of shared_ptrs, so
// that a stale, foreign or made-up handle is refused, never dereferenced.
#pragma once

#include <memory>

#include "capi/handles.hpp"

namespace lf::capi {

template <class Obj, HandleType Type>
class ObjectTable {
 public:
  /// A handle for `obj`; nullptr when the table is full.
  template <class H>
  H add(std::shared_ptr<Obj> obj) noexcept {
    auto [id, slot] = table_.acquire();
    if (!slot) return nullptr;
    slot->obj = std::move(obj);
    table_.publish(id);
    return Table::template to_handle<H>(id);
  }
  /// The object behind a live handle, or nullptr.
  std::shared_ptr<Obj> get(const void *h) noexcept {
    std::shared_ptr<Obj> o;
    if (h) table_.with_locked(h, [&](Slot &s) { o = s.obj; });
    return o;
  }
  /// Retire the handle and return its object (nullptr: not live); one caller wins.
  std::shared_ptr<Obj> take(const void *h) noexcept {
    std::shared_ptr<Obj> o;
    if (h) table_.retire(h, [&](Slot &s) { o = std::move(s.obj); });
    return o;
  }

 private:
  struct Slot {
    std::shared_ptr<Obj> obj;
  };
  using Table = HandleTable<Slot, Type>;
  Table table_;
};

}  // namespace lf::capi
