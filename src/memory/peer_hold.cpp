// Blocks held for a peer process (peer_hold.hpp).
#include "memory/peer_hold.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <vector>

#include "core/log.hpp"

namespace lf {

namespace {

struct Held {
  BufferPtr buf;
  pid_t pid = 0;
  int pidfd = -1;  ///< readable once the process has exited; -1: use kill(pid, 0)
};

struct Registry {
  std::mutex mu;
  std::vector<Held> held;
  std::atomic<size_t> count{0};
};

// Never destroyed: the blocks must not go back to their pools when this
// process exits either (the peer's mapping keeps the pages after that).
Registry &registry() {
  static Registry *r = new Registry;
  return *r;
}

bool exited(const Held &h) noexcept {
  if (h.pidfd >= 0) {
    pollfd p{h.pidfd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }
  return ::kill(h.pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

void hold_until_exit(BufferPtr buf, pid_t pid) noexcept {
  if (!buf || pid <= 0) return;
  Held h;
  h.pid = pid;
  h.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (h.pidfd < 0 && errno == ESRCH) return;  // already gone: the block goes back now
  const size_t bytes = buf->size();
  h.buf = std::move(buf);
  Registry &r = registry();
  try {
    std::lock_guard g(r.mu);
    r.held.push_back(std::move(h));
    r.count.store(r.held.size(), std::memory_order_relaxed);
  } catch (const std::bad_alloc &) {
    // Without the record the block is never returned: a leak, not a hole
    // under the peer's view.
    (void)h.buf.release();
    if (h.pidfd >= 0) ::close(h.pidfd);
    return;
  }
  LF_LOG(debug, "holding a lent block of %zu bytes until process %d exits", bytes, static_cast<int>(pid));
  (void)sweep_held_blocks();
}

size_t sweep_held_blocks() noexcept {
  Registry &r = registry();
  if (r.count.load(std::memory_order_relaxed) == 0) return 0;
  std::vector<Held> done;
  size_t left;
  {
    std::lock_guard g(r.mu);
    for (size_t i = 0; i < r.held.size();) {
      if (exited(r.held[i])) {
        try {
          done.push_back(std::move(r.held[i]));
        } catch (const std::bad_alloc &) {
          ++i;  // kept for the next sweep
          continue;
        }
        r.held[i] = std::move(r.held.back());
        r.held.pop_back();
      } else {
        ++i;
      }
    }
    left = r.held.size();
    r.count.store(left, std::memory_order_relaxed);
  }
  // Outside the lock: a block's return takes its pool's and arena's locks.
  for (Held &h : done) {
    if (h.pidfd >= 0) ::close(h.pidfd);
    h.buf.reset();
  }
  return left;
}

}  // namespace lf
