// Pieces every transport shares: placing eager data into a receive, failing
// operations, and unexpected messages held as host copies.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "memory/allocator.hpp"
#include "transport/transport.hpp"

namespace lf {

Cost staged(Cost c) noexcept {
  // A copy to host memory before the send and one back after the receive:
  // two device copies, each with its launch latency, at PCIe-class speed.
  c.latency_us += 20;
  c.bandwidth_gbs = std::min(c.bandwidth_gbs, 10.0);
  return c;
}

Transport::Transport() noexcept {
  static std::atomic<uint64_t> next{1};
  instance_id_ = next.fetch_add(1, std::memory_order_relaxed);
}

Result<RegistrationHandle> transport_registration(Transport &t, const Buffer &b, void **unit_base) {
  const RegisteredRange r = b.registered_range();
  if (unit_base) *unit_base = r.base;
  if (!r.regs) return RegistrationHandle{};
  return r.regs->get(t.instance_id(), [&] { return t.register_memory(r.base, r.length, b.kind()); });
}

void Endpoint::wait_for_activity(int timeout_ms) noexcept {
  (void)timeout_ms;
  sched_yield();
}

void fail_op(SendOp &op, const Error &e) noexcept {
  if (op.status != LF_IN_PROGRESS) return;
  try {
    op.error = e.message;
  } catch (...) {
  }
  op.buffer.reset();
  complete_status(op.status, e.code);
}

void fail_op(RecvOp &op, const Error &e) noexcept {
  if (op.status != LF_IN_PROGRESS) return;
  try {
    op.error = e.message;
  } catch (...) {
  }
  complete_status(op.status, e.code);
}

void complete_copy(RecvOp &op, uint64_t tag, const void *src, size_t n) noexcept {
  op.matched_tag = tag;
  op.message_bytes = n;
  if (op.want_buffer) {
    // Zero-byte messages still yield a buffer (allocate() refuses size 0).
    auto buf = allocate(n ? n : 1, MemoryKind::host);
    if (!buf) return fail_op(op, buf.error());
    (*buf)->set_size(n);
    if (n) std::memcpy((*buf)->data(), src, n);
    op.buffer = std::move(*buf);
    op.bytes = n;
    complete_status(op.status, LF_OK);
    return;
  }
  size_t len = n <= op.capacity ? n : op.capacity;
  if (len) std::memcpy(op.data, src, len);
  complete_length(op, n);
}

void complete_length(RecvOp &op, size_t n) noexcept {
  op.bytes = n <= op.capacity ? n : op.capacity;
  if (n > op.capacity) {
    try {
      op.error = "message of " + std::to_string(n) + " bytes truncated to the receive capacity of " +
                 std::to_string(op.capacity);
    } catch (...) {
    }
    complete_status(op.status, LF_ERR_TRUNCATED);
    return;
  }
  complete_status(op.status, LF_OK);
}

EagerIncoming::EagerIncoming(uint64_t tag, const void *data, size_t n) : Incoming(tag, n), copy_(new char[n ? n : 1]) {
  if (n) std::memcpy(copy_.get(), data, n);
}

EagerIncoming::EagerIncoming(const SendOp &op) : Incoming(op.tag, op.total()), copy_(new char[op.total() + 1]) {
  copy_message(op, 0, copy_.get(), op.total());
}

EagerIncoming::EagerIncoming(uint64_t tag, BufferPtr whole) : Incoming(tag, whole->size()), whole_(std::move(whole)) {}

void EagerIncoming::deliver(RecvOp &op) noexcept {
  if (whole_) {
    if (op.want_buffer) {
      // A buffer handed over whole (self transport): give it to the receiver as is.
      op.matched_tag = tag();
      op.message_bytes = op.bytes = whole_->size();
      op.buffer = std::move(whole_);
      complete_status(op.status, LF_OK);
      return;
    }
    if (!whole_->data()) {
      fail_op(op, make_error(LF_ERR_UNSUPPORTED, "a %s buffer cannot be received into host memory by this transport",
                             memory_kind_name(whole_->kind())));
      return;
    }
    complete_copy(op, tag(), whole_->data(), whole_->size());
    whole_.reset();
    return;
  }
  complete_copy(op, tag(), copy_.get(), size());
}

}  // namespace lf
