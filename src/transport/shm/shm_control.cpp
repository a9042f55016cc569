// Producer side of the control ring (shm_control.hpp).
#include "transport/shm/shm_control.hpp"

#include "core/log.hpp"

namespace lf::shm {

static_assert(kStatus == kCount, "an ack's status and a cut's count share a body word");

void ControlTx::push(Kind k, uint64_t cookie, int64_t word) noexcept {
  std::lock_guard g(mu_);
  if (!open_) return;  // the connection is gone: nobody to tell
  if (pending_.empty() && try_push_locked(k, cookie, word)) return wake_locked();
  try {
    pending_.push_back({k, cookie, word});
    has_pending_.store(true, std::memory_order_relaxed);
  } catch (const std::bad_alloc &) {
    // Dropping an ack would hang the peer's send; a release only delays a
    // pool return. Both are logged; neither can be recovered here.
    LF_LOG(error, "shm: no memory to queue a control message; the peer may wait for it");
  }
}

void ControlTx::flush() noexcept {
  std::lock_guard g(mu_);
  size_t i = 0;
  for (; i < pending_.size() && open_; ++i)
    if (!try_push_locked(pending_[i].kind, pending_[i].cookie, pending_[i].word)) break;
  if (i) {
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(i));
    wake_locked();
  }
  has_pending_.store(!pending_.empty() && open_, std::memory_order_relaxed);
}

bool ControlTx::try_push_locked(Kind k, uint64_t cookie, int64_t word) noexcept {
  if (head_ >= limit_) {
    limit_ = dir_->ctl_consumed.load(std::memory_order_acquire) + count_;
    if (head_ >= limit_) return false;
  }
  Slot &s = ring_[head_ & mask_];
  write_body_header(s, k, 0, 0);
  s.body.words[kCookie] = cookie;
  s.body.words[kStatus] = static_cast<uint64_t>(word);  // kStatus == kCount
  s.seq.store(static_cast<uint32_t>(head_ + 1), std::memory_order_release);
  ++head_;
  return true;
}

}  // namespace lf::shm
