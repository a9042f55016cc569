// Staged chunks of one large message through two host bounce buffers
// (pipeline.hpp).
#include "transport/mpi/pipeline.hpp"

#include <algorithm>
#include <cstring>

#include "core/bootstrap_mpi.hpp"
#include "memory/allocator.hpp"
#include "transport/mpi/wire.hpp"

namespace lf::mpi {

Status Pipeline::start(bool send, bool device, char *mem, uint64_t cap, uint64_t from, uint64_t end, uint64_t chunk,
                       CopyStream &copies) noexcept {
  active_ = true;
  send_ = send;
  device_ = device;
  mem_ = mem;
  cap_ = cap;
  next_ = from;
  end_ = end;
  chunk_ = chunk;
  // Pinned memory when device copies are involved (DMA); plain host memory
  // for a truncation's bounce buffer.
  MemoryKind kind = device ? MemoryKind::host_pinned : MemoryKind::host;
  int need = end - from > chunk ? 2 : 1;
  for (int i = 0; i < need; ++i) {
    auto buf = allocate(chunk, kind);
    if (!buf) return std::unexpected(buf.error());
    b_[i].host = std::move(*buf);
  }
  if (device)
    for (int i = 0; i < need; ++i)
      if (auto st = copies.make_event(b_[i].ev); !st) return st;
  return {};
}

Status Pipeline::step(const Wire &w, CopyStream &copies) noexcept {
  for (int guard = 0; guard < 8; ++guard) {
    bool moved = false;
    // Start the next chunk on a free buffer.
    for (auto &b : b_) {
      if (!b.host || b.state != Bounce::idle || next_ >= end_) continue;
      b.index = next_index_++;
      b.off = next_;
      b.len = std::min(chunk_, end_ - next_);
      next_ += b.len;
      moved = true;
      if (send_) {  // device -> bounce
        if (auto st = copies.to_host(b.host->data(), mem_ + b.off, b.len, b.ev); !st) return st;
        b.state = Bounce::copying;
      } else {  // MPI -> bounce
        int rc = MPI_Irecv(b.host->data(), static_cast<int>(b.len), MPI_BYTE, w.peer, w.tag, w.comm, &b.req);
        if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Irecv"));
        b.state = Bounce::moving;
      }
    }
    // Advance buffers, oldest chunk first.
    int order[2] = {0, 1};
    if (b_[1].host && b_[1].state != Bounce::idle && (b_[0].state == Bounce::idle || b_[1].index < b_[0].index))
      order[0] = 1, order[1] = 0;
    for (int k : order) {
      auto &b = b_[k];
      if (b.state == Bounce::moving) {
        int flag = 0;
        int rc = MPI_Test(&b.req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Test (chunk)"));
        if (!flag) continue;
        moved = true;
        if (send_) {
          b.state = Bounce::idle;
          continue;
        }
        // Received: keep what fits the receive.
        uint64_t keep = b.off >= cap_ ? 0 : std::min(b.len, cap_ - b.off);
        if (keep && !device_) std::memcpy(mem_ + b.off, b.host->data(), keep);
        if (keep && device_) {
          if (auto st = copies.to_device(mem_ + b.off, b.host->data(), keep, b.ev); !st) return st;
          b.state = Bounce::copying;
          continue;
        }
        b.state = Bounce::idle;
      } else if (b.state == Bounce::copying) {
        auto copied = CopyStream::done(b.ev);
        if (!copied) return std::unexpected(copied.error());
        // One stream: a younger copy cannot be done before this one, and
        // its chunk must not reach MPI first.
        if (!*copied) break;
        moved = true;
        if (send_) {  // bounce -> MPI
          int rc = MPI_Isend(b.host->data(), static_cast<int>(b.len), MPI_BYTE, w.peer, w.tag, w.comm, &b.req);
          if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Isend"));
          b.state = Bounce::moving;
        } else {
          b.state = Bounce::idle;
        }
      }
    }
    if (!moved) break;
  }
  return {};
}

void Pipeline::release() noexcept {
  for (auto &b : b_) CopyStream::destroy(b.ev, /*wait=*/false);
  for (auto &b : b_) b.host.reset();
  active_ = false;
}

void Pipeline::abandon(bool recv) noexcept {
  for (auto &b : b_) {
    if (b.req == MPI_REQUEST_NULL) continue;
    if (recv) {
      cancel(b.req);
    } else {
      // A send from a bounce buffer: MPI may still read it.
      MPI_Request_free(&b.req);
      (void)b.host.release();
    }
  }
  for (auto &b : b_) CopyStream::destroy(b.ev, /*wait=*/true);
}

}  // namespace lf::mpi
