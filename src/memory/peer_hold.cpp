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

/// The blocks held for one process: one pidfd however many there are, so
/// that a peer holding many views costs one descriptor and one poll a sweep.
struct Peer {
  pid_t pid = 0;
  int pidfd = -1;  ///< readable once the process has exited; -1: use kill(pid, 0)
  std::vector<BufferPtr> blocks;
};

struct Registry {
  std::mutex mu;
  std::vector<Peer> peers;
  std::atomic<size_t> count{0};  ///< blocks held
};

// Never destroyed: the blocks must not go back to their pools when this
// process exits either (the peer's mapping keeps the pages after that).
Registry &registry() {
  static Registry *r = new Registry;
  return *r;
}

bool exited(const Peer &p) noexcept {
  if (p.pidfd >= 0) {
    pollfd q{p.pidfd, POLLIN, 0};
    return ::poll(&q, 1, 0) == 1;
  }
  return ::kill(p.pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

void hold_until_exit(BufferPtr buf, pid_t pid) noexcept {
  if (!buf || pid <= 0) return;
  const size_t bytes = buf->size();
  Registry &r = registry();
  {
    std::lock_guard g(r.mu);
    try {
      Peer *peer = nullptr;
      for (Peer &p : r.peers)
        if (p.pid == pid && !exited(p)) peer = &p;
      if (!peer) {
        const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (fd < 0 && errno == ESRCH) return;  // already gone: the block goes back now
        r.peers.push_back(Peer{pid, fd, {}});
        peer = &r.peers.back();
      }
      peer->blocks.push_back(std::move(buf));
      r.count.fetch_add(1, std::memory_order_relaxed);
    } catch (const std::bad_alloc &) {
      // Without the record the block is never returned: a leak, not a hole
      // under the peer's view.
      (void)buf.release();
      return;
    }
  }
  LF_LOG(debug, "holding a lent block of %zu bytes until process %d exits", bytes, static_cast<int>(pid));
  (void)sweep_held_blocks();
}

size_t sweep_held_blocks() noexcept {
  Registry &r = registry();
  if (r.count.load(std::memory_order_relaxed) == 0) return 0;
  std::vector<Peer> done;
  size_t left = 0;
  {
    std::lock_guard g(r.mu);
    for (size_t i = 0; i < r.peers.size();) {
      if (exited(r.peers[i])) {
        try {
          done.push_back(std::move(r.peers[i]));
        } catch (const std::bad_alloc &) {
          left += r.peers[i++].blocks.size();  // kept for the next sweep
          continue;
        }
        r.peers[i] = std::move(r.peers.back());
        r.peers.pop_back();
      } else {
        left += r.peers[i++].blocks.size();
      }
    }
    r.count.store(left, std::memory_order_relaxed);
  }
  // Outside the lock: a block's return takes its pool's and arena's locks.
  for (Peer &p : done) {
    if (p.pidfd >= 0) ::close(p.pidfd);
    p.blocks.clear();
  }
  return left;
}

}  // namespace lf
