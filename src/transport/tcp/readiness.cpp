#include "transport/tcp/readiness.hpp"

#include <sys/epoll.h>

namespace lf::tcp {

Readiness::Readiness() noexcept : ep_(::epoll_create1(EPOLL_CLOEXEC)) {}

void Readiness::watch(int sock, uint32_t events, const std::vector<int> *listeners) noexcept {
  if (!ep_) return;
  if (sock < 0) {
    if (listening_ || !listeners) return;
    try {
      for (int l : *listeners) {
        epoll_event ev{EPOLLIN, {.fd = l}};
        if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, l, &ev) == 0) listeners_.push_back(l);
      }
    } catch (const std::bad_alloc &) {
      // A listener not recorded stays in the set: spurious wake-ups only.
    }
    listening_ = true;
    return;
  }
  for (int l : listeners_) (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, l, nullptr);
  listeners_.clear();
  if (sock_ >= 0 && (sock_ != sock || events == 0)) {
    (void)::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, sock_, nullptr);
    sock_ = -1;
  }
  if (events == 0 || (sock_ == sock && events_ == events)) return;
  epoll_event ev{events, {.fd = sock}};
  if (::epoll_ctl(ep_.get(), sock_ == sock ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, sock, &ev) == 0) {
    sock_ = sock;
    events_ = events;
  }
}

}  // namespace lf::tcp
