#include "ingest/uring_reader.hpp"

#include <liburing.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <vector>

namespace lf::ingest {

namespace {

std::string human_bytes(uint64_t b) {
  char s[32];
  if (b >= (uint64_t(1) << 30) && b % (uint64_t(1) << 30) == 0)
    std::snprintf(s, sizeof s, "%llu GiB", static_cast<unsigned long long>(b >> 30));
  else if (b >= (uint64_t(1) << 20) && b % (uint64_t(1) << 20) == 0)
    std::snprintf(s, sizeof s, "%llu MiB", static_cast<unsigned long long>(b >> 20));
  else
    std::snprintf(s, sizeof s, "%llu KiB", static_cast<unsigned long long>((b + 1023) >> 10));
  return s;
}

class UringReader final : public Reader {
 public:
  explicit UringReader(Plan plan) : Reader(std::move(plan)) {}
  ~UringReader() override {
    drain();
    if (ready_) io_uring_queue_exit(&ring_);
  }

  Status init(bool register_buffers) {
    io_uring_params p{};
    const unsigned entries = static_cast<unsigned>(std::max(plan_.queue_depth, 1));
    if (int rc = io_uring_queue_init_params(entries, &ring_, &p); rc < 0)
      return LF_FAIL(LF_ERR_UNAVAILABLE, "io_uring_queue_init: %s", std::strerror(-rc));
    ready_ = true;
    if (register_buffers) register_blocks();
    return {};
  }

  std::string describe() const override {
    std::string s = "io_uring, ";
    s += registered_ ? "registered buffers" : "unregistered reads (" + unregistered_why_ + ")";
    return s;
  }

  int in_flight() const noexcept override { return static_cast<int>(window_.size()); }

  void cancel() noexcept override {
    cancelled_.store(true, std::memory_order_release);
    plan_.ring->wake();
  }

  Result<std::unique_ptr<Read>> next(Clock::time_point deadline) override {
    for (;;) {
      if (cancelled_.load(std::memory_order_acquire)) {
        drain();
        return LF_FAIL(LF_ERR_CANCELLED, "the ingest was cancelled");
      }
      if (!window_.empty() && window_.front()->done) {
        auto r = std::move(window_.front());
        window_.pop_front();
        return r;
      }
      if (window_.empty() && !more()) return std::unique_ptr<Read>();
      if (auto st = issue(); !st) return std::unexpected(st.error());
      if (submitted_ > 0) {
        if (auto st = reap(deadline); !st) return std::unexpected(st.error());
      } else if (window_.empty()) {
        // Every place is held by the consumer (or the channel): wait for one.
        if (!plan_.ring->wait_room(deadline, [&] { return cancelled_.load(std::memory_order_acquire); }) &&
            !cancelled_.load(std::memory_order_acquire))
          return LF_FAIL(LF_ERR_TIMEOUT,
                         "no chunk ready within the timeout: all %d ring chunks are held (lf_free them)",
                         plan_.ring->limit());
      }
    }
  }

  void drain() noexcept override {
    // Every submitted read completes before its block may go back: the
    // kernel may still write into it (no completion is dropped).
    while (submitted_ > 0) {
      io_uring_cqe *cqe = nullptr;
      int rc = io_uring_wait_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc < 0) break;  // the ring itself failed: nothing more will complete
      --submitted_;
      io_uring_cqe_seen(&ring_, cqe);
    }
    window_.clear();
  }

 private:
  // Register every block the ring can hold: acquire them all once (the pool
  // keeps them in its free list afterwards), note their pieces, give them
  // back. A later block at another address is simply read unregistered.
  void register_blocks() {
    std::vector<BufferPtr> blocks;
    for (int i = 0; i < plan_.ring->limit(); ++i) {
      auto b = plan_.pool->acquire(plan_.block);
      if (!b) {
        unregistered_why_ = "could not take the ring's blocks from the pool: " + b.error().message;
        return;
      }
      if (!(*b)->data()) {
        unregistered_why_ = "the chunk memory has no host address";
        return;
      }
      blocks.push_back(std::move(*b));
    }
    const size_t piece = std::min(plan_.max_io, size_t(1) << 30);  // liburing#768: a fixed buffer spans <= 1 GiB
    uint64_t total = 0;
    for (const BufferPtr &b : blocks) {
      const auto *pb = dynamic_cast<const PooledBuffer *>(b.get());
      auto *base = static_cast<char *>(b->data());
      const size_t cap = pb ? pb->capacity() : b->size();
      for (size_t off = 0; off < cap; off += piece) fixed_.push_back(iovec{base + off, std::min(piece, cap - off)});
      total += cap;
    }
    std::sort(fixed_.begin(), fixed_.end(), [](const iovec &a, const iovec &b) { return a.iov_base < b.iov_base; });
    int rc = io_uring_register_buffers(&ring_, fixed_.data(), static_cast<unsigned>(fixed_.size()));
    if (rc < 0) {
      fixed_.clear();
      rlimit rl{};
      getrlimit(RLIMIT_MEMLOCK, &rl);
      unregistered_why_ = "registering " + human_bytes(total) + " of chunk buffers failed: " + std::strerror(-rc);
      if (rc == -ENOMEM || rc == -EPERM)
        unregistered_why_ += rl.rlim_cur == RLIM_INFINITY ? " (RLIMIT_MEMLOCK unlimited)"
                                                          : "; RLIMIT_MEMLOCK is " + human_bytes(rl.rlim_cur);
      return;
    }
    registered_ = true;
  }

  // Index of the registered piece holding [p, p + len), clamping len to its end; -1 if none.
  int fixed_index(const char *p, size_t &len) const noexcept {
    auto it = std::upper_bound(fixed_.begin(), fixed_.end(), p,
                               [](const char *x, const iovec &v) { return x < static_cast<const char *>(v.iov_base); });
    if (it == fixed_.begin()) return -1;
    --it;
    const char *base = static_cast<const char *>(it->iov_base);
    if (p >= base + it->iov_len) return -1;
    len = std::min(len, static_cast<size_t>(base + it->iov_len - p));
    return static_cast<int>(it - fixed_.begin());
  }

  void prep(Read &r) noexcept {
    io_uring_sqe *sqe = io_uring_get_sqe(&ring_);  // never null: submitted_ < queue depth <= entries
    size_t len = piece_len(r);
    char *dst = static_cast<char *>(r.block->data()) + r.got;
    const int idx = registered_ ? fixed_index(dst, len) : -1;
    const int fd = piece_fd(r, len);
    const uint64_t off = r.offset + r.got;
    if (idx >= 0) {
      io_uring_prep_read_fixed(sqe, fd, dst, static_cast<unsigned>(len), off, idx);
      plan_.counters->fixed_reads.fetch_add(1, std::memory_order_relaxed);
    } else {
      io_uring_prep_read(sqe, fd, dst, static_cast<unsigned>(len), off);
    }
    if (fd != plan_.file->fd()) plan_.counters->buffered_pieces.fetch_add(1, std::memory_order_relaxed);
    plan_.counters->reads.fetch_add(1, std::memory_order_relaxed);
    io_uring_sqe_set_data(sqe, &r);
    r.pending = 1;
    ++submitted_;
    ++unsubmitted_;
  }

  Status issue() {
    while (submitted_ < plan_.queue_depth && more() && !stopped_) {
      if (!plan_.ring->try_reserve()) break;
      auto r = make_read(RingPlace(plan_.ring));
      if (!r) {
        stopped_ = true;
        auto failed = std::make_unique<Read>();
        failed->failed = failed->done = true;
        failed->error = r.error();
        window_.push_back(std::move(failed));
        break;
      }
      prep(**r);
      window_.push_back(std::move(*r));
    }
    return submit();
  }

  Status submit() {
    while (unsubmitted_ > 0) {
      int rc = io_uring_submit(&ring_);
      if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) continue;
      if (rc < 0) return LF_FAIL(LF_ERR_IO, "io_uring_submit: %s", std::strerror(-rc));
      unsubmitted_ -= std::min(unsubmitted_, rc);
    }
    return {};
  }

  Status reap(Clock::time_point deadline) {
    io_uring_cqe *cqe = nullptr;
    int rc;
    const auto left = deadline - Clock::now();
    if (deadline == Clock::time_point::max()) {
      rc = io_uring_wait_cqe(&ring_, &cqe);
    } else if (left <= Clock::duration::zero()) {
      rc = io_uring_peek_cqe(&ring_, &cqe);
      if (rc == -EAGAIN) return LF_FAIL(LF_ERR_TIMEOUT, "no chunk ready within the timeout");
    } else {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      __kernel_timespec ts{ns / 1000000000, ns % 1000000000};
      rc = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
      if (rc == -ETIME) return LF_FAIL(LF_ERR_TIMEOUT, "no chunk ready within the timeout");
    }
    if (rc == -EINTR) return {};
    if (rc < 0) return LF_FAIL(LF_ERR_IO, "io_uring_wait_cqe: %s", std::strerror(-rc));
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      --submitted_;
      complete(*static_cast<Read *>(io_uring_cqe_get_data(cqe)), cqe->res);
    }
    io_uring_cq_advance(&ring_, seen);
    return submit();
  }

  void complete(Read &r, int res) noexcept {
    r.pending = 0;
    if (res == -EINTR || res == -EAGAIN) {
      resubmit(r);
    } else if (res == -EINVAL && plan_.file->direct() && !r.buffered_only) {
      // O_DIRECT refused this piece (alignment the device wants larger,
      // liburing#994): the rest of the chunk goes through the page cache.
      r.buffered_only = true;
      resubmit(r);
    } else if (res < 0) {
      r.failed = r.done = true;
      r.error = make_error(LF_ERR_IO, "read at offset %llu: %s", static_cast<unsigned long long>(r.offset + r.got),
                           std::strerror(-res));
      stopped_ = true;
    } else if (res == 0) {
      r.eof = r.done = true;  // the file ended early: it shrank while being read
      stopped_ = true;
    } else {
      r.got += static_cast<size_t>(res);
      if (r.got >= r.want) {
        r.got = r.want;
        r.done = true;
      } else {
        resubmit(r);  // a short read: read the rest (rocksdb#6441)
      }
    }
  }

  void resubmit(Read &r) noexcept {
    plan_.counters->resubmits.fetch_add(1, std::memory_order_relaxed);
    if (cancelled_.load(std::memory_order_acquire)) {
      r.done = true;
      return;
    }
    prep(r);
  }

  io_uring ring_{};
  bool ready_ = false;
  bool registered_ = false;
  bool stopped_ = false;  ///< A read failed or hit end of file: issue nothing more.
  std::string unregistered_why_ = "LF_INGEST_REGISTER=0";
  std::vector<iovec> fixed_;
  std::deque<std::unique_ptr<Read>> window_;  ///< Issued reads in file order.
  int submitted_ = 0;                         ///< Submissions whose completion has not been reaped.
  int unsubmitted_ = 0;                       ///< Prepared, not yet submitted.
  std::atomic<bool> cancelled_{false};
};

}  // namespace

Result<std::unique_ptr<Reader>> make_uring_reader(Plan plan, bool register_buffers) {
  auto r = std::make_unique<UringReader>(std::move(plan));
  if (auto st = r->init(register_buffers); !st) return std::unexpected(st.error());
  return std::unique_ptr<Reader>(std::move(r));
}

}  // namespace lf::ingest
