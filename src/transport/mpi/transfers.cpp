// Large messages in flight on one mpi channel (transfers.hpp).
#include "transport/mpi/transfers.hpp"

#include <algorithm>

#include "core/bootstrap_mpi.hpp"
#include "transport/mpi/link.hpp"
#include "transport/mpi/send_queue.hpp"
#include "transport/mpi/wire.hpp"

namespace lf::mpi {

std::unique_ptr<Transfer> Transfers::take() noexcept {
  if (spare_.empty()) {
    std::unique_ptr<Transfer> x(new (std::nothrow) Transfer);
    if (x) try {
        x->direct.reserve(2);
      } catch (const std::bad_alloc &) {
        x.reset();
      }
    return x;
  }
  std::unique_ptr<Transfer> x = std::move(spare_.back());
  spare_.pop_back();
  return x;
}

void Transfers::recycle(std::unique_ptr<Transfer> x) noexcept {
  x->sop = nullptr;
  x->rop = nullptr;
  x->env_slot = -1;
  x->direct.clear();
  x->pipe = Pipeline();
  x->bounce.reset();
  x->dst = nullptr;
  x->keep = 0;
  x->dst_device = false;
  if (spare_.size() < 8) {
    try {
      spare_.push_back(std::move(x));
    } catch (const std::bad_alloc &) {
    }
  }
}

Status Transfers::post_chunks(Transfer &x, char *mem, uint64_t n, uint64_t chunk, bool send) noexcept {
  try {
    x.direct.reserve(x.direct.size() + static_cast<size_t>((n + chunk - 1) / chunk));
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for chunk requests");
  }
  for (uint64_t off = 0; off < n; off += chunk) {
    int len = static_cast<int>(std::min(chunk, n - off));
    MPI_Request req;
    int rc;
    if (!send)
      rc = MPI_Irecv(mem + off, len, MPI_BYTE, peer_, x.mpi_tag, comm_, &req);
    else if (x.sop && x.sop->header_size)  // a gather send: `mem` is its payload only
      rc = isend_message(*x.sop, off, static_cast<uint64_t>(len), peer_, x.mpi_tag, comm_, &req);
    else
      rc = MPI_Isend(mem + off, len, MPI_BYTE, peer_, x.mpi_tag, comm_, &req);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, send ? "MPI_Isend" : "MPI_Irecv"));
    x.direct.push_back(req);
  }
  return {};
}

Status Transfers::track(std::unique_ptr<Transfer> &x) noexcept {
  try {
    list_.push_back(std::move(x));
    return {};
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, x->sop ? "mpi: no memory to track a send" : "mpi: no memory to track a receive");
  }
}

Status Transfers::run_recv(std::unique_ptr<Transfer> x, Status st) noexcept {
  if (st) {
    // The payload's request usually reached MPI before its receive was
    // posted, and MPI moves it within MPI_Irecv/MPI_Imrecv (shared memory:
    // one copy by this process): complete now rather than on the next pass.
    auto finished = advance(*x);
    if (finished && *finished) {
      recycle(std::move(x));
      return {};
    }
    if (!finished) st = std::unexpected(finished.error());
  }
  if (st) st = track(x);
  if (st) return {};
  abandon(*x, st.error());
  return st;
}

Status Transfers::advance_all() noexcept {
  for (size_t i = 0; i < list_.size();) {
    auto st = advance(*list_[i]);
    if (!st) return std::unexpected(st.error());
    if (*st) {
      recycle(std::move(list_[i]));
      list_.erase(list_.begin() + static_cast<long>(i));
      continue;
    }
    ++i;
  }
  return {};
}

Result<bool> Transfers::advance(Transfer &x) noexcept {
  if (!x.direct.empty()) {
    int flag = 0;
    int rc = MPI_Testall(static_cast<int>(x.direct.size()), x.direct.data(), &flag, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Testall (payload)"));
    if (flag) {
      x.direct.clear();
      if (x.env_slot >= 0) sends_.free_slot(x.env_slot);
      x.env_slot = -1;
    }
  }
  if (x.pipe.active())
    if (auto st = x.pipe.step({peer_, x.mpi_tag, comm_}, copies_); !st) return std::unexpected(st.error());
  if (!x.direct.empty() || !x.pipe.done()) return false;
  x.pipe.release();
  if (x.sop) {
    complete(*x.sop, LF_OK);
    return true;
  }
  RecvOp &op = *x.rop;
  if (x.bounce) {
    auto st = copy_out(x.dst, x.dst_device, x.bounce->data(), x.keep);
    x.bounce.reset();
    if (!st) {
      fail_op(op, st.error());
      return true;
    }
  }
  if (!op.want_buffer && x.size > op.capacity) {
    set_truncated(op, x.size);
    complete(op, LF_ERR_TRUNCATED);
  } else {
    complete(op, LF_OK);
  }
  return true;
}

void Transfers::abandon(Transfer &x, const Error &e) noexcept {
  if (x.sop) {
    fail_op(*x.sop, e);
    for (size_t i = 0; i < x.direct.size(); ++i) {
      if (x.direct[i] == MPI_REQUEST_NULL) continue;
      if (i == 0 && x.env_slot >= 0)  // the envelope: its slot must outlive the request
        sends_.bury_slot(x.env_slot, x.direct[0]);
      else
        MPI_Request_free(&x.direct[i]);
    }
    x.direct.clear();
    x.env_slot = -1;
  }
  if (x.rop) {
    fail_op(*x.rop, e);
    for (MPI_Request &r : x.direct) cancel(r);
  }
  x.pipe.abandon(/*recv=*/x.rop != nullptr);
}

void Transfers::drop(const Error &e) noexcept {
  for (auto &x : list_) {
    // One last test (a pipeline is not stepped: that would start more).
    if (!x->pipe.active())
      if (auto done = advance(*x); done && *done) continue;
    abandon(*x, e);
  }
  list_.clear();
}

}  // namespace lf::mpi
