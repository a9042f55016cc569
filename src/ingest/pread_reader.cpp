#include "ingest/pread_reader.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace lf::ingest {

PreadReader::PreadReader(Plan plan, std::string why) : Reader(std::move(plan)), why_(std::move(why)) {
  thread_ = std::thread([this] { run(); });
}

PreadReader::~PreadReader() { drain(); }

void PreadReader::run() noexcept {
  RingState &ring = *plan_.ring;
  std::unique_lock lk(ring.mutex());
  for (;;) {
    ring.cv().wait(lk, [&] { return stop_ || !more() || ring.held_locked() < ring.limit(); });
    if (stop_ || !more()) break;
    ring.reserve_locked();
    ++reading_;
    lk.unlock();
    // The place goes with the read; on failure it is given back at once.
    auto r = make_read(RingPlace(plan_.ring));
    if (r) read_one(**r);
    lk.lock();
    --reading_;
    if (!r) {
      // No block (the pool's cap): reported in order, as a failed read.
      auto failed = std::make_unique<Read>();
      failed->failed = failed->done = true;
      failed->error = r.error();
      done_.push_back(std::move(failed));
      break;
    }
    const bool last = (*r)->failed || (*r)->eof;
    done_.push_back(std::move(*r));
    ring.cv().notify_all();
    if (last) break;
  }
  finished_ = true;
  lk.unlock();
  ring.cv().notify_all();
}

void PreadReader::read_one(Read &r) noexcept {
  auto *base = static_cast<char *>(r.block->data());
  while (r.got < r.want) {
    const size_t len = piece_len(r);
    const int fd = piece_fd(r, len);
    plan_.counters->reads.fetch_add(1, std::memory_order_relaxed);
    if (r.got) plan_.counters->resubmits.fetch_add(1, std::memory_order_relaxed);
    if (fd != plan_.file->fd()) plan_.counters->buffered_pieces.fetch_add(1, std::memory_order_relaxed);
    const ssize_t n = ::pread(fd, base + r.got, len, static_cast<off_t>(r.offset + r.got));
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == EINVAL && fd != plan_.file->buffered_fd()) {
        r.buffered_only = true;  // O_DIRECT refused this piece after all
        continue;
      }
      r.failed = true;
      r.error = make_error(LF_ERR_IO, "pread at offset %llu: %s", static_cast<unsigned long long>(r.offset + r.got),
                           std::strerror(errno));
      break;
    }
    if (n == 0) {
      r.eof = true;
      break;
    }
    r.got += static_cast<size_t>(n);
  }
  if (r.got > r.want) r.got = r.want;
  r.done = true;
}

Result<std::unique_ptr<Read>> PreadReader::next(Clock::time_point deadline) {
  RingState &ring = *plan_.ring;
  std::unique_lock lk(ring.mutex());
  const auto ready = [&] { return !done_.empty() || finished_ || stop_; };
  if (!ready() && deadline > Clock::now()) ring.cv().wait_until(lk, deadline, ready);
  if (!done_.empty()) {
    auto r = std::move(done_.front());
    done_.pop_front();
    lk.unlock();
    ring.cv().notify_all();
    return r;
  }
  if (stop_) return LF_FAIL(LF_ERR_CANCELLED, "the ingest was cancelled");
  if (finished_) return std::unique_ptr<Read>();
  if (ring.held_locked() >= ring.limit())
    return LF_FAIL(LF_ERR_TIMEOUT, "no chunk ready within the timeout: all %d ring chunks are held (lf_free them)",
                   ring.limit());
  return LF_FAIL(LF_ERR_TIMEOUT, "no chunk ready within the timeout");
}

void PreadReader::cancel() noexcept {
  {
    std::lock_guard g(plan_.ring->mutex());
    stop_ = true;
  }
  plan_.ring->cv().notify_all();
}

void PreadReader::drain() noexcept {
  cancel();
  if (thread_.joinable()) thread_.join();
  std::deque<std::unique_ptr<Read>> dropped;
  {
    std::lock_guard g(plan_.ring->mutex());
    dropped.swap(done_);
  }
  // Destroyed outside the lock: each gives its place back, which locks.
}

int PreadReader::in_flight() const noexcept {
  // Reads the thread has done but next() has not handed out count too: a
  // caller that sees 0 here waits for a ring place, and must not while a
  // chunk is waiting for it (the place it holds may be the one it needs).
  std::lock_guard g(plan_.ring->mutex());
  return reading_ + static_cast<int>(done_.size());
}

}  // namespace lf::ingest
