#include "coll/engine.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/config.hpp"
#include "core/log.hpp"

namespace lf::coll {

Result<std::shared_ptr<Engine>> Engine::create(Context &ctx, std::vector<int> members, bool check_members) {
  auto me = std::find(members.begin(), members.end(), ctx.rank());
  if (me == members.end()) return LF_FAIL(LF_ERR_INTERNAL, "collectives: rank %d is not a member", ctx.rank());
  const int rank = static_cast<int>(me - members.begin());
  std::shared_ptr<Engine> e(new Engine(ctx, std::move(members), rank));
  const char *algo = std::getenv("LF_COLL_ALGO");
  std::string a = algo ? algo : "";
  if (a.empty() || a == "auto")
    e->algo_ = Algo::automatic;
  else if (a == "ring")
    e->algo_ = Algo::ring;
  else if (a == "rd" || a == "recursive-doubling")
    e->algo_ = Algo::recursive_doubling;
  else if (a == "cma")
    e->algo_ = Algo::cma;
  else if (a == "hier" || a == "hierarchical")
    e->algo_ = Algo::hierarchical;
  else
    return LF_FAIL(LF_ERR_INVALID_ARG, "LF_COLL_ALGO=%s: expected auto, ring, rd, cma or hier", a.c_str());
  e->spin_ = config::get_int("LF_SPIN_COUNT");
  // Channels of their own, in group rank order on every member: each pair's
  // collective traffic of this group is ordered and never meets the
  // application's or another group's. Default options, so both sides of
  // every pair select alike.
  ChannelOptions opts;
  e->peers_.resize(static_cast<size_t>(e->size_));
  e->watch_.resize(static_cast<size_t>(e->size_));
  for (int p = 0; p < e->size_; ++p) {
    if (p == e->rank_) continue;
    auto ch = Channel::open(ctx, e->world_rank(p), opts);
    if (!ch) {
      Error err = ch.error();
      err.message = "collectives: " + err.message;
      e->shutdown();
      return std::unexpected(err);
    }
    e->peers_[static_cast<size_t>(p)] = std::move(*ch);
  }
  if (e->size_ == 1) {
    auto self = Channel::open(ctx, ctx.rank(), opts);
    if (!self) return std::unexpected(self.error());
    e->anchor_ = std::move(*self);
  } else {
    e->anchor_ = e->peers_[static_cast<size_t>((e->rank_ + 1) % e->size_)];
  }
  if (check_members && e->size_ > 1) {
    std::lock_guard g(e->exec_mu_);
    Args hello;
    hello.kind = Kind::group;
    if (auto st = e->execute(hello); !st) {
      e->shutdown();
      return std::unexpected(st.error());
    }
  }
  LF_LOG(debug, "collectives: rank %d of a group of %d connected", e->rank_, e->size_);
  return e;
}

Engine::~Engine() {
  shutdown();
  // The channels are closed, which fails the watch receives still posted;
  // one that a closing endpoint still holds is left to it rather than freed.
  for (auto &q : watch_)
    for (auto &op : q) {
      for (int i = 0; i < 100000 && __atomic_load_n(&op->status, __ATOMIC_ACQUIRE) == LF_IN_PROGRESS; ++i)
        std::this_thread::yield();
      if (__atomic_load_n(&op->status, __ATOMIC_ACQUIRE) == LF_IN_PROGRESS) (void)op.release();
    }
}

void Engine::shutdown() noexcept {
  {
    std::lock_guard q(queue_mu_);
    stop_ = true;
  }
  queue_cv_.notify_all();
  // Closing first makes a collective the helper is running fail at once.
  for (auto &ch : peers_)
    if (ch) ch->close();
  if (anchor_) anchor_->close();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
  std::deque<Pending> left;
  {
    std::lock_guard q(queue_mu_);
    left.swap(queue_);
  }
  for (Pending &p : left) fail_op(*p.done, make_error(LF_ERR_CLOSED, "collective: the context was finalized"));
}

Status Engine::run(const Args &a) {
  std::lock_guard g(exec_mu_);
  drain_locked();
  return execute(a);
}

Status Engine::start(const Args &a, RecvOp *done) {
  {
    std::lock_guard q(queue_mu_);
    if (stop_) return LF_FAIL(LF_ERR_CLOSED, "collective: the context was finalized");
    queue_.push_back(Pending{a, done});
    if (!worker_.joinable()) {
      try {
        worker_ = std::thread([this] {
          for (;;) {
            {
              std::unique_lock lock(queue_mu_);
              queue_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
              if (stop_) return;
            }
            std::lock_guard g(exec_mu_);
            drain_locked();
          }
        });
      } catch (const std::system_error &e) {
        queue_.pop_back();
        return LF_FAIL(LF_ERR_IO, "collective: cannot start the helper thread: %s", e.what());
      }
    }
  }
  queue_cv_.notify_one();
  return {};
}

void Engine::drain_locked() {
  for (;;) {
    Pending p;
    {
      std::lock_guard q(queue_mu_);
      if (queue_.empty()) return;
      p = queue_.front();
      queue_.pop_front();
    }
    Status st = execute(p.args);
    if (st) {
      p.done->bytes = 0;
      complete_status(p.done->status, LF_OK);
    } else {
      fail_op(*p.done, st.error());
    }
  }
}

void Engine::poison(const Error &e) noexcept {
  if (!failed_) {
    failed_ = e;
    broken_.store(true, std::memory_order_release);
    LF_LOG(info, "collectives on rank %d (a group of %d) stopped: %s", ctx_.rank(), size_, e.message.c_str());
  }
  for (auto &ch : peers_)
    if (ch) ch->close();
}

void *Engine::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    scratch_.reset(new std::byte[bytes]);  // uninitialised: it is always written before read
    scratch_bytes_ = bytes;
  }
  return scratch_.get();
}

}  // namespace lf::coll
