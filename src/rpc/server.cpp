#include "rpc/server.hpp"

#include <poll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "capi/capi_error.hpp"
#include "core/config.hpp"
#include "core/log.hpp"

namespace lf::rpc {

using capi::fail;

namespace {
thread_local Call *t_running = nullptr;  // the call whose handler this thread runs
// How long a call runs before an idle thread takes the lead from the thread
// running it. Longer than most calls' handlers, and the period at which the
// standby wakes while short calls keep the leader busy; short against the
// cancel latency the services promise.
constexpr int64_t kTakeOverNs = 200'000;

int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
}  // namespace

Call *Server::current(lf_rpc_call_t c) noexcept {
  // Compared, never dereferenced: a stale or made-up handle is just unequal.
  return c && reinterpret_cast<Call *>(c) == t_running ? t_running : nullptr;
}

bool Call::cancelled_now() const noexcept {
  return cancelled.load(std::memory_order_relaxed) || server->stopping() ||
         from->broken.load(std::memory_order_relaxed) ||
         (deadline != Clock::time_point::max() && Clock::now() >= deadline);
}

Server::Server(int threads, size_t max_held) {
  const int64_t q = config::get_int("LF_RPC_QUEUE_MAX");
  max_held_ = max_held ? max_held : q > 0 ? static_cast<size_t>(q) : 1;
  // Without a timer every call wakes an idle thread to lead, as before.
  timer_ = Fd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  // One more thread than may run handlers: there is always one to lead.
  try {
    for (int i = 0; i <= threads; ++i) threads_.emplace_back([this] { thread_loop(); });
  } catch (...) {
    stop();
    throw;
  }
}

Server::~Server() { stop(); }

lf_status_t Server::add_handler(const char *method, lf_rpc_handler_fn fn, void *user, bool inline_call) noexcept {
  try {
    std::unique_lock g(handlers_mu_);
    handlers_[method] = Handler{fn, user, inline_call};
    return LF_OK;
  } catch (const std::bad_alloc &) {
    return fail(LF_ERR_NO_MEMORY, "rpc server: no memory to register a method");
  }
}

lf_status_t Server::serve(lf_channel_t ch) noexcept {
  try {
    auto s = std::make_shared<Served>(ch);
    std::lock_guard g(mu_);
    if (stopped_ || stopping()) return fail(LF_ERR_CLOSED, "rpc server is stopping");
    for (const auto &other : served_)
      if (other->ch == ch) return fail(LF_ERR_INVALID_ARG, "rpc server: this channel is already served");
    served_.push_back(std::move(s));
    served_gen_.fetch_add(1, std::memory_order_release);
    return LF_OK;
  } catch (const std::bad_alloc &) {
    return fail(LF_ERR_NO_MEMORY, "rpc server: no memory to serve a channel");
  }
}

void Server::stop() noexcept {
  if (stopping_.exchange(true)) return;
  {
    std::lock_guard g(mu_);
    stopped_ = true;
  }
  work_cv_.notify_all();
  set_timer(1);  // the standby
  for (auto &t : threads_) t.join();
  threads_.clear();
  std::lock_guard g(mu_);
  served_.clear();  // each inbox cancels its receive
}

void Server::thread_loop() noexcept {
  std::unique_lock l(mu_);
  for (;;) {
    if (!queue_.empty()) {  // calls that came while every thread was busy
      Call *c = queue_.front();
      queue_.pop_front();
      l.unlock();
      run(*c);
      finish(c);
      l.lock();
      continue;
    }
    if (stopped_) return;
    if (!has_leader_ && !stopping()) {
      has_leader_ = true;
      l.unlock();
      Call *c = lead();
      l.lock();
      has_leader_ = false;
      // The standby leads if the call runs long; without one, a follower
      // leads at once while this thread runs the call.
      const bool timed = c && standby_;
      if (!timed) work_cv_.notify_one();
      if (c) {
        l.unlock();
        int64_t since = 0;
        if (timed) {
          // The timer stays armed across calls (the standby re-arms it for
          // the running call when it fires), so a stream of short calls
          // costs no system call each.
          since = now_ns();
          timed_since_.store(since);
          if (!armed_.exchange(true)) set_timer(kTakeOverNs);
        }
        run(*c);
        if (timed) timed_since_.compare_exchange_strong(since, 0);  // unless the standby took over
        finish(c);
        l.lock();
      }
      continue;
    }
    ++idle_;
    if (!standby_ && timer_) {
      standby_ = true;
      l.unlock();
      if (wait_timer()) on_timer();
      l.lock();
      standby_ = false;
    } else {
      work_cv_.wait(l);
    }
    --idle_;
  }
}

void Server::set_timer(int64_t ns) noexcept {
  if (!timer_) return;
  itimerspec t{};
  t.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  t.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  (void)::timerfd_settime(timer_.get(), 0, &t, nullptr);
}

bool Server::wait_timer() noexcept {
  pollfd p{timer_.get(), POLLIN, 0};
  if (::poll(&p, 1, 100) <= 0) return false;
  uint64_t expirations;
  return ::read(timer_.get(), &expirations, sizeof expirations) == sizeof expirations;
}

void Server::on_timer() noexcept {
  // armed_ falls before timed_since_ is read, and the leader stores
  // timed_since_ before it tests armed_: one of the two always arms for a
  // call that starts now.
  armed_.store(false);
  int64_t since = timed_since_.load();
  if (!since) return;  // no call under the timer: it stays disarmed
  const int64_t left = since + kTakeOverNs - now_ns();
  if (left > 0) {
    if (!armed_.exchange(true)) set_timer(left);
    return;
  }
  // The call ran long: this thread leads (thread_loop) while it runs, and
  // the call is no longer the timer's.
  timed_since_.compare_exchange_strong(since, 0);
}

Call *Server::lead() noexcept {
  std::vector<std::shared_ptr<Served>> served;
  uint64_t seen = UINT64_MAX;
  int idle = 0;
  constexpr int kSpin = 2000;  // polls before the leader sleeps between rounds
  while (!stopping()) {
    if (served_gen_.load(std::memory_order_acquire) != seen) {
      std::lock_guard g(mu_);
      try {
        served = served_;
        seen = served_gen_.load(std::memory_order_relaxed);
      } catch (const std::bad_alloc &) {
      }
    }
    bool any = false;
    // One channel: sleep in its receive (a futex or a socket, not a timer).
    const int64_t slice = served.size() == 1 && idle >= kSpin ? 1 : 0;
    for (const auto &s : served) {
      if (s->broken.load(std::memory_order_relaxed)) continue;
      lf_buffer_t buf = nullptr;
      Message msg;
      lf_status_t st = s->inbox.next(slice, &buf, msg);
      if (st == LF_OK) {
        any = true;
        Call *c = take(s, buf, msg);
        if (!c) continue;
        // Run it on this thread, with no hand-off, when another thread is
        // idle to lead; otherwise queue it for the next free thread and
        // keep receiving (cancels must get through while all are busy).
        std::unique_lock g(mu_);
        if (idle_ > 0) return c;
        try {
          queue_.push_back(c);
        } catch (const std::bad_alloc &) {
          g.unlock();
          static constexpr char kWhy[] = "rpc server: no memory to queue the call";
          (void)respond(*c, LF_ERR_BUSY, kWhy, sizeof kWhy - 1, nullptr, 0);
          finish(c);
        }
      } else if (st != LF_ERR_TIMEOUT) {
        drop(*s, st);
      }
    }
    if (any) {
      idle = 0;
    } else if (++idle >= kSpin && served.size() != 1) {
      timespec ts{0, 50000};  // several channels, or none: a short nap per round
      nanosleep(&ts, nullptr);
    } else if ((idle & 31) == 0) {
      // The thread that just took a call may share this core (a pinned
      // process): let it run its handler now and then rather than after
      // our time slice, which costs milliseconds.
      std::this_thread::yield();
    }
  }
  return nullptr;
}

void Server::drop(Served &s, lf_status_t why) noexcept {
  if (s.broken.exchange(true)) return;  // every token of its calls flips
  LF_LOG(info, "rpc server: stops serving a channel: %s (%s)", status_string(why), s.inbox.why().c_str());
  // A client that sent garbage hears why (request id 0 names no call); one
  // that is gone hears nothing.
  if (why == LF_ERR_PROTOCOL) {
    try {
      refuse(s, 0, LF_ERR_PROTOCOL, "rpc server dropped this client: " + s.inbox.why());
    } catch (const std::bad_alloc &) {
    }
  }
  {
    std::lock_guard g(mu_);
    std::erase_if(served_, [&](const std::shared_ptr<Served> &p) { return p.get() == &s; });
    served_gen_.fetch_add(1, std::memory_order_release);
  }
  if (on_drop_) on_drop_(s.ch);
}

Call *Server::take(const std::shared_ptr<Served> &s, lf_buffer_t buf, const Message &msg) noexcept {
  const Prefix &p = msg.prefix;
  if (p.kind == Kind::cancel) {
    std::lock_guard g(s->mu);
    if (auto it = s->calls.find(p.id); it != s->calls.end()) it->second->cancelled.store(true);
    lf_free(buf);  // a cancel for a call already answered is late, not wrong
    return nullptr;
  }
  if (p.kind != Kind::request) {
    lf_free(buf);
    drop(*s, LF_ERR_PROTOCOL);
    return nullptr;
  }
  Handler h;
  std::unique_ptr<Call> c;
  try {
    c = std::make_unique<Call>();
    c->method.assign(msg.method);
    std::shared_lock g(handlers_mu_);
    if (auto it = handlers_.find(c->method); it != handlers_.end()) h = it->second;
  } catch (const std::bad_alloc &) {
    lf_free(buf);
    refuse(*s, p.id, LF_ERR_NO_MEMORY, "rpc server: no memory for the call");
    return nullptr;
  }
  if (!h.fn) {
    lf_free(buf);
    refuse(*s, p.id, LF_ERR_NOT_FOUND, "rpc server: no method '" + c->method + "'");
    return nullptr;
  }
  c->server = this;
  c->from = s;
  c->fn = h.fn;
  c->user = h.user;
  c->id = p.id;
  c->buf = buf;
  c->msg = msg;
  if (p.remaining_ns > 0) c->deadline = Clock::now() + std::chrono::nanoseconds(p.remaining_ns);
  if (h.inline_call) {
    // Not registered in s->calls: it is answered before any cancel of it
    // can be read, so a cancel finds nothing to flip.
    run(*c);
    lf_free(c->buf);
    return nullptr;
  }
  bool admitted = false;
  {
    std::lock_guard g(mu_);
    if (held_ < max_held_) {
      try {
        std::lock_guard sg(s->mu);
        s->calls.emplace(p.id, c.get());
        admitted = true;
        ++held_;
      } catch (const std::bad_alloc &) {
        // Answered as busy below.
      }
    }
  }
  if (admitted) return c.release();  // finish() deletes it
  lf_free(buf);
  refuse(*s, p.id, LF_ERR_BUSY, "rpc server: its queue is full (LF_RPC_QUEUE_MAX)");
  return nullptr;
}

void Server::run(Call &c) noexcept {
  if (c.from->broken.load(std::memory_order_relaxed)) return;  // nobody to answer
  lf_status_t st = LF_OK;
  const char *why = nullptr;
  if (stopping()) {
    st = LF_ERR_CLOSED, why = "rpc server stopped before the call ran";
  } else if (c.cancelled.load()) {
    st = LF_ERR_CANCELLED, why = "rpc call was cancelled before it ran";
  } else if (c.cancelled_now()) {
    st = LF_ERR_TIMEOUT, why = "rpc call's deadline passed before it ran";
  } else {
    t_running = &c;
    st = c.fn(reinterpret_cast<lf_rpc_call_t>(&c), c.user);
    t_running = nullptr;
    if (c.responded) return;
    if (st == LF_OK) {
      (void)respond(c, LF_OK, nullptr, 0, nullptr, 0);
      return;
    }
    // A handler that gave up on its token: say which side of it flipped.
    if (st == LF_ERR_CANCELLED && !c.cancelled.load() && c.deadline != Clock::time_point::max() &&
        Clock::now() >= c.deadline)
      st = LF_ERR_TIMEOUT;
    if (st > 0) st = LF_ERR_INTERNAL;
  }
  std::string text;
  try {
    text = why ? why : "rpc method '" + c.method + "' failed: " + status_string(st);
  } catch (...) {
  }
  (void)respond(c, st, text.data(), text.size(), nullptr, 0);
}

void Server::finish(Call *c) noexcept {
  {
    std::lock_guard g(c->from->mu);
    c->from->calls.erase(c->id);
  }
  lf_free(c->buf);
  delete c;
  std::lock_guard g(mu_);
  --held_;
}

lf_status_t Server::respond(Call &c, lf_status_t status, const void *header, size_t header_len, const void *payload,
                            size_t payload_len) noexcept {
  if (c.responded) return fail(LF_ERR_INVALID_ARG, "rpc: the call was already answered");
  c.responded = true;
  if (c.from->broken.load(std::memory_order_relaxed))
    return fail(LF_ERR_PEER_GONE, "rpc: the client's channel is gone");
  Outgoing m;
  try {
    Prefix p;
    p.kind = Kind::response;
    p.status = status;
    p.id = c.id;
    m = make_message(p, {}, header, header_len, payload, payload_len);
  } catch (const std::bad_alloc &) {
    return fail(LF_ERR_NO_MEMORY, "rpc: no memory for a response");
  }
  lf_request_t req;
  if (lf_status_t st = send_message(c.from->ch, m, &req); st != LF_OK) return st;
  // The payload is the handler's: wait until the transport is done with it.
  // A client that died breaks the channel and ends the send.
  for (;;) {
    lf_status_t st = lf_wait_timeout(req, 100, nullptr);
    if (st != LF_ERR_TIMEOUT) return st;
  }
}

void Server::refuse(Served &s, uint64_t id, lf_status_t status, const std::string &why) noexcept {
  uint8_t msg[kPrefixSize + 256];
  const size_t n = std::min(why.size(), sizeof msg - kPrefixSize);
  Prefix p;
  p.kind = Kind::response;
  p.status = status;
  p.id = id;
  p.header_len = static_cast<uint32_t>(n);
  encode_prefix(p, msg);
  std::memcpy(msg + kPrefixSize, why.data(), n);
  // Small and eager on every transport: it leaves within the call.
  if (lf_status_t st = lf_send(s.ch, msg, kPrefixSize + n, kRpcTag); st != LF_OK) drop(s, st);
}

}  // namespace lf::rpc
