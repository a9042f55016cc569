// The tcp endpoint's event fd: an epoll set that holds what the endpoint
// waits for, its socket for input and for room while sends are queued, or
// the listeners until its connection arrives. The context's epoll set holds
// this one, so that a progress thread sleeps on one fd for every channel
// instead of polling the tcp channels in turn.
#pragma once

#include <cstdint>
#include <vector>

#include "core/net.hpp"

namespace lf::tcp {

class Readiness {
 public:
  Readiness() noexcept;
  /// The epoll fd, or -1 when it could not be made (the channel is then
  /// polled without one, as before).
  int fd() const noexcept { return ep_.get(); }
  /// Wait for `events` (POLLIN, POLLOUT) on `sock` once it exists, and on
  /// `listeners` (when set) until then. No events, or a broken connection
  /// (events 0), removes the socket: a hung-up socket would otherwise be
  /// ready for ever. Called under the channel's lock; a sleeper on the
  /// epoll fd may run meanwhile.
  void watch(int sock, uint32_t events, const std::vector<int> *listeners) noexcept;

 private:
  Fd ep_;
  int sock_ = -1;  ///< registered socket, or -1
  uint32_t events_ = 0;
  bool listening_ = false;  ///< the listeners are registered
  std::vector<int> listeners_;
};

}  // namespace lf::tcp
