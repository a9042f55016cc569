#include "channel/channel.hpp"

#include <thread>

#include "channel/context.hpp"
#include "core/config.hpp"
#include "core/log.hpp"

namespace lf {

Result<std::shared_ptr<Channel>> Channel::open(Context &ctx, int peer, const ChannelOptions &opts) {
  if (peer < 0 || peer >= ctx.size())
    return LF_FAIL(LF_ERR_INVALID_ARG, "peer rank %d is not in a world of %d", peer, ctx.size());
  auto sel = select_transport(ctx, peer, opts);
  if (!sel) return std::unexpected(sel.error());
  LF_LOG(info, "channel %d->%d: %s", ctx.rank(), peer, sel->reason.c_str());
  auto ep = sel->transport->connect(ctx, peer, deadline_in(config::get_seconds("LF_CONNECT_TIMEOUT")));
  if (!ep) {
    Error e = ep.error();
    e.message = std::string("connecting to rank ") + std::to_string(peer) + " over " + sel->transport->name() + ": " +
                e.message;
    return std::unexpected(e);
  }
  return adopt(ctx, peer, std::move(*ep), sel->transport->name(), std::move(sel->reason));
}

Result<std::shared_ptr<Channel>> Channel::adopt(Context &ctx, int peer, std::unique_ptr<Endpoint> ep,
                                                const char *transport, std::string reason) {
  std::shared_ptr<Channel> ch(new Channel(ctx, peer));
  ch->transport_name_ = transport;
  ch->reason_ = std::move(reason);
  ch->endpoint_ = std::shared_ptr<Endpoint>(std::move(ep));
  ch->spin_count_ = config::get_int("LF_SPIN_COUNT");
  ch->event_fd_ = ch->endpoint_->event_fd();
  if (auto st = ctx.add_channel(ch.get()); !st) {
    ch->close();
    return std::unexpected(st.error());
  }
  return ch;
}

Channel::~Channel() { close(); }

void Channel::post_send(SendOp &op) noexcept {
  std::lock_guard lock(mu_);
  if (broken_) return fail_op(op, *broken_);
  if (!endpoint_) return fail_op(op, make_error(LF_ERR_CLOSED, "channel is closed"));
  if (op.header_size && op.buffer)
    return fail_op(op, make_error(LF_ERR_INVALID_ARG, "a gather send's payload is plain memory, not a buffer"));
  endpoint_->send(op);
}

void Channel::post_recv(RecvOp &op, bool drive) noexcept {
  std::lock_guard lock(mu_);
  // A message already waiting goes first: the earliest match in arrival order.
  for (auto it = unexpected_.begin(); it != unexpected_.end(); ++it) {
    if (op.tag == LF_ANY_TAG || (*it)->tag() == op.tag) {
      std::unique_ptr<Incoming> msg = std::move(*it);
      unexpected_.erase(it);
      msg->deliver(op);
      return;
    }
  }
  if (broken_) return fail_op(op, *broken_);
  if (!endpoint_) return fail_op(op, make_error(LF_ERR_CLOSED, "channel is closed"));
  // Posting does not drive the endpoint (nor does MPI_Irecv): a window of
  // receives costs only its bookkeeping, and the test or wait that follows
  // finds what has arrived. Driving it here made every post a poll, between
  // the copies of the messages already arriving (shm windowed bandwidth at
  // 4 KiB: 26 GB/s with it, 34 GB/s without).
  try {
    posted_.push_back(&op);
  } catch (const std::bad_alloc &) {
    return fail_op(op, make_error(LF_ERR_NO_MEMORY, "no memory to post a receive"));
  }
  if (drive) progress_locked();
}

RecvOp *Channel::take_posted(uint64_t tag) noexcept {
  for (auto it = posted_.begin(); it != posted_.end(); ++it) {
    if ((*it)->tag == LF_ANY_TAG || (*it)->tag == tag) {
      RecvOp *op = *it;
      posted_.erase(it);
      return op;
    }
  }
  return nullptr;
}

void Channel::add_unexpected(std::unique_ptr<Incoming> msg) noexcept {
  try {
    unexpected_.push_back(std::move(msg));
  } catch (const std::bad_alloc &) {
    // Losing a message silently is not an option: break the channel.
    fail_all(make_error(LF_ERR_NO_MEMORY, "no memory to queue an unexpected message; channel broken"));
  }
}

void Channel::progress() noexcept {
  std::lock_guard lock(mu_);
  progress_locked();
}

bool Channel::try_progress() noexcept {
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  progress_locked();
  return true;
}

void Channel::progress_locked() noexcept {
  if (!endpoint_ || broken_) return;
  if (auto st = endpoint_->progress(*this); !st) {
    // A peer that closed or exited is part of a job's life, not a fault.
    if (st.error().code == LF_ERR_PEER_GONE)
      LF_LOG(info, "channel to rank %d (%s) ended: %s", peer_, transport_name_, st.error().message.c_str());
    else
      LF_LOG(warn, "channel to rank %d (%s) broke: %s", peer_, transport_name_, st.error().message.c_str());
    fail_all(st.error());
  }
}

void Channel::fail_all(const Error &e) noexcept {
  if (!broken_) broken_ = e;
  ended_.store(true, std::memory_order_release);
  while (!posted_.empty()) {
    fail_op(*posted_.front(), e);
    posted_.pop_front();
  }
}

bool Channel::wait(const lf_status_t &status, Deadline deadline) noexcept {
  // Volatile read: another thread (the progress thread) may complete it.
  auto done = [&] { return __atomic_load_n(&status, __ATOMIC_ACQUIRE) != LF_IN_PROGRESS; };
  for (int64_t i = 0; !done(); ++i) {
    // If another thread holds the channel it is driving it: give it the
    // core rather than spin against it, then look again.
    if (!try_progress()) std::this_thread::yield();
    if (done()) break;
    // Other channels may need this rank's progress to finish what the peer
    // is waiting for (rendezvous, bounce buffers): sweep them now and then.
    // The sweep skips channels another thread is driving.
    if ((i & 15) == 15) {
      ctx_.progress_all(this);
      if (deadline != Deadline::max() && Clock::now() >= deadline) return done();
    }
    if (i >= spin_count_) wait_for_activity(1);
  }
  return true;
}

void Channel::wait_for_activity(int timeout_ms) noexcept {
  std::shared_ptr<Endpoint> ep;
  {
    std::lock_guard lock(mu_);
    if (!endpoint_ || broken_) return;
    ep = endpoint_;
  }
  // Unlocked, so that other threads can send and receive meanwhile; `ep`
  // keeps the endpoint alive if another thread closes the channel.
  ep->wait_for_activity(timeout_ms);
}

bool Channel::cancel(RecvOp &op) noexcept {
  std::lock_guard lock(mu_);
  for (auto it = posted_.begin(); it != posted_.end(); ++it) {
    if (*it == &op) {
      posted_.erase(it);
      fail_op(op, make_error(LF_ERR_CANCELLED, "receive was cancelled"));
      return true;
    }
  }
  return false;
}

std::optional<Error> Channel::health() noexcept {
  try_progress();  // notice a peer that died since the last call
  if (!ended_.load(std::memory_order_acquire)) return std::nullopt;
  // Ended: broken_ is written once, before ended_ (fail_all), and never
  // again, so it may be read without waiting for a thread that holds the
  // mutex.
  if (broken_) return broken_;
  return make_error(LF_ERR_CLOSED, "channel is closed");
}

void Channel::close() noexcept {
  ctx_.remove_channel(this);
  std::shared_ptr<Endpoint> ep;
  {
    std::lock_guard lock(mu_);
    Error closed = make_error(LF_ERR_CLOSED, "channel was closed");
    fail_all(closed);
    unexpected_.clear();
    ep = std::move(endpoint_);
  }
  // Dropped unlocked: its destructor fails the ops it still held, and may
  // wait briefly for the peer. A waiter still holding it destroys it last.
  ep.reset();
}

}  // namespace lf
