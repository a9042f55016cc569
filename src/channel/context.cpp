#include "channel/context.hpp"

#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "channel/channel.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "memory/pool.hpp"

namespace lf {

using json = nlohmann::json;

Result<std::shared_ptr<Context>> Context::create() {
  auto b = Bootstrap::from_environment();
  if (!b) return std::unexpected(b.error());
  return create(std::move(*b));
}

Result<std::shared_ptr<Context>> Context::create(std::unique_ptr<Bootstrap> bootstrap) {
  std::shared_ptr<Context> ctx(new Context(std::move(bootstrap)));
  ctx->epoll_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
  if (!ctx->epoll_) return LF_FAIL(LF_ERR_IO, "epoll_create1: %s", std::strerror(errno));
  for (auto &t : make_transports()) ctx->transports_.push_back(TransportState{std::move(t), false, {}});
  if (auto st = ctx->exchange(); !st) return std::unexpected(st.error());
  for (TransportState &ts : ctx->transports_)
    if (int fd = ts.started ? ts.transport->event_fd() : -1; fd >= 0) {
      std::lock_guard g(ctx->channels_mu_);
      ctx->watch_locked(fd, nullptr);
    }
  if (config::get_bool("LF_PROGRESS_THREAD"))
    if (auto st = ctx->set_progress_thread(true); !st) return std::unexpected(st.error());
  return ctx;
}

Status Context::exchange() {
  auto me = ProcessLocation::detect();
  if (!me) return std::unexpected(me.error());
  json mine;
  mine["location"] = json::parse(me->to_json());
  json addrs = json::object();
  for (TransportState &ts : transports_) {
    if (auto why = ts.transport->unavailable_reason()) {
      ts.reason = *why;
      continue;
    }
    auto addr = ts.transport->start(*this);
    if (!addr) {
      ts.reason = addr.error().message;
      LF_LOG(info, "transport %s did not start: %s", ts.transport->name(), ts.reason.c_str());
      continue;
    }
    ts.started = true;
    addrs[ts.transport->name()] = *addr;
  }
  mine["transports"] = addrs;
  auto all = bootstrap_->allgather(mine.dump());
  if (!all) return std::unexpected(all.error());
  locations_.resize(all->size());
  addresses_.resize(all->size());
  for (size_t r = 0; r < all->size(); ++r) {
    json j = json::parse((*all)[r], nullptr, false);
    if (j.is_discarded() || !j.contains("location") || !j.contains("transports"))
      return LF_FAIL(LF_ERR_PROTOCOL, "bootstrap: rank %zu sent an unreadable location record", r);
    auto loc = ProcessLocation::from_json(j["location"].dump());
    if (!loc) return std::unexpected(loc.error());
    locations_[r] = std::move(*loc);
    for (auto &[name, addr] : j["transports"].items())
      addresses_[r][name] = addr.is_string() ? addr.get<std::string>() : std::string();
  }
  return {};
}

Context::~Context() {
  (void)set_progress_thread(false);
  // Channels still registered belong to handles the user did not close; the
  // C API closes them before destroying the context.
}

ScopeDecision Context::scope(int peer) const {
  if (peer == rank()) return {Scope::self, "same rank: self"};
  return decide_scope(location(rank()), location(peer));
}

const std::string &Context::address(int r, const char *transport) const noexcept {
  static const std::string none;
  if (r < 0 || static_cast<size_t>(r) >= addresses_.size()) return none;
  auto it = addresses_[static_cast<size_t>(r)].find(transport);
  return it == addresses_[static_cast<size_t>(r)].end() ? none : it->second;
}

bool Context::has_transport(int r, const std::string &transport) const noexcept {
  if (r < 0 || static_cast<size_t>(r) >= addresses_.size()) return false;
  return addresses_[static_cast<size_t>(r)].count(transport) != 0;
}

Pool &Context::shared_pool() noexcept {
  std::call_once(shared_pool_once_, [this] { shared_pool_ = make_shared_memory_pool(); });
  return *shared_pool_;
}

void Context::watch_locked(int fd, Channel *ch) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = ch;
  if (fd == Endpoint::kTransportFd) return;  // its transport's fd covers it
  if (fd < 0 || ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) ++without_fd_;
}

Status Context::add_channel(Channel *ch) {
  // One critical section: a finalize's begin_close() either comes first
  // (refused here) or finds the channel in channels_ (close_channels).
  std::lock_guard g(channels_mu_);
  if (closing_) return LF_FAIL(LF_ERR_CLOSED, "the context is being finalized");
  watch_locked(ch->event_fd(), ch);
  channels_.push_back(ch);
  return {};
}

void Context::begin_close() noexcept {
  std::lock_guard g(channels_mu_);
  closing_ = true;
}

void Context::close_channels() noexcept {
  std::vector<std::shared_ptr<Channel>> open;
  try {
    std::lock_guard g(channels_mu_);
    for (Channel *ch : channels_)
      // A channel whose last reference is going closes itself.
      if (auto sp = ch->weak_from_this().lock()) open.push_back(std::move(sp));
  } catch (const std::bad_alloc &) {
    // The ones collected are closed; the rest close with their handles.
  }
  for (auto &ch : open) ch->close();  // its handle's next call gets LF_ERR_CLOSED
}

void Context::remove_channel(Channel *ch) noexcept {
  int fd = ch->event_fd();
  std::lock_guard g(channels_mu_);
  if (std::erase(channels_, ch) == 0) return;  // removed before (closed twice)
  if (fd == Endpoint::kTransportFd) return;
  // Still open: the endpoint is destroyed after this.
  if (fd < 0 || ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0) --without_fd_;
}

void Context::progress_all(Channel *skip) noexcept {
  std::unique_lock g(channels_mu_, std::try_to_lock);
  if (!g.owns_lock()) return;  // another thread is already sweeping
  for (TransportState &ts : transports_)
    if (ts.started)
      if (auto st = ts.transport->progress(); !st)
        LF_LOG(warn, "transport %s: progress failed: %s", ts.transport->name(), st.error().message.c_str());
  for (Channel *ch : channels_)
    if (ch != skip) ch->try_progress();
}

void Context::wait_for_activity(int timeout_ms) noexcept {
  size_t blind;
  {
    std::lock_guard g(channels_mu_);
    blind = without_fd_;
  }
  if (blind) {
    std::this_thread::yield();
    return;
  }
  for (TransportState &ts : transports_)
    if (ts.started && ts.transport->event_fd() >= 0 && !ts.transport->arm()) return;  // work is pending
  epoll_event ev[16];
  (void)::epoll_wait(epoll_.get(), ev, 16, timeout_ms);
}

Status Context::set_progress_thread(bool on) {
  std::lock_guard g(progress_mu_);
  if (on == progress_thread_.joinable()) return {};
  if (!on) {
    stop_ = true;
    progress_thread_.join();
    threaded_ = false;
    stop_ = false;
    return {};
  }
  threaded_ = true;
  try {
    progress_thread_ = std::thread([this] {
      while (!stop_.load(std::memory_order_relaxed)) {
        progress_all();
        // Sleep on the event fds when every channel has one; otherwise
        // yield rather than spin flat out: the application's own threads
        // share these cores.
        wait_for_activity(1);
      }
    });
  } catch (const std::system_error &e) {
    threaded_ = false;
    return LF_FAIL(LF_ERR_IO, "cannot start the progress thread: %s", e.what());
  }
  return {};
}

}  // namespace lf
