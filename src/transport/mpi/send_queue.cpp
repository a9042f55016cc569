// Send slots and the sends in flight of one mpi channel (send_queue.hpp).
#include "transport/mpi/send_queue.hpp"

#include <algorithm>

#include "core/bootstrap_mpi.hpp"
#include "transport/mpi/mpi_transport.hpp"
#include "transport/mpi/wire.hpp"

namespace lf::mpi {

Result<int> SendQueue::take_slot() noexcept {
  if (!free_slots_.empty()) {
    int s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  try {
    send_slots_.emplace_back(new char[slot_size_]);
    free_slots_.reserve(send_slots_.size());
  } catch (const std::bad_alloc &) {
    return LF_FAIL(LF_ERR_NO_MEMORY, "mpi: no memory for a send slot");
  }
  return static_cast<int>(send_slots_.size() - 1);
}

void SendQueue::bury_slot(int s, MPI_Request req) noexcept {
  t_.bury(req, std::move(send_slots_[static_cast<size_t>(s)]));
}

Status SendQueue::keep(SendOp *op, MPI_Request req, int slot) noexcept {
  int flag = 0;
  if (int rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE); rc != MPI_SUCCESS) {
    Error err = mpi_error(rc, "MPI_Test (send)");
    if (slot >= 0) free_slot(slot);
    if (op) fail_op(*op, err);
    return std::unexpected(err);
  }
  if (!flag) {
    try {
      // Room first, so that neither the pushes nor test()'s resize can
      // throw; grown geometrically.
      size_t n = out_.size() + 1;
      auto room = [n](auto &v) {
        if (v.capacity() < n) v.reserve(std::max<size_t>(n, 2 * v.capacity()));
      };
      room(out_);
      room(out_reqs_);
      room(out_done_);
      out_.push_back(Out{op, slot});
      out_reqs_.push_back(req);
      return {};
    } catch (const std::bad_alloc &) {
      // The data is MPI's now (a slot, kept until MPI is done): the send
      // completes regardless. The caller's memory cannot be kept: wait.
      if (slot >= 0)
        bury_slot(slot, req);
      else
        MPI_Wait(&req, MPI_STATUS_IGNORE);
    }
  } else if (slot >= 0) {
    free_slot(slot);
  }
  if (op) complete(*op, LF_OK);
  return {};
}

Status SendQueue::test_some() noexcept {
  // One MPI_Testsome for all of them: an MPI_Test each would run MPI's
  // progress engine once per send still in flight.
  int done = 0;
  out_done_.resize(out_.size());  // within the capacity keep() reserved
  int rc = MPI_Testsome(static_cast<int>(out_.size()), out_reqs_.data(), &done, out_done_.data(), MPI_STATUSES_IGNORE);
  if (rc != MPI_SUCCESS) return std::unexpected(mpi_error(rc, "MPI_Testsome (sends)"));
  if (done > 0) {
    for (int k = 0; k < done; ++k) {
      Out &o = out_[static_cast<size_t>(out_done_[static_cast<size_t>(k)])];
      if (o.slot >= 0) free_slot(o.slot);
      if (o.op) complete(*o.op, LF_OK);
    }
    // Completed requests are MPI_REQUEST_NULL now: close the gaps.
    size_t j = 0;
    for (size_t i = 0; i < out_.size(); ++i)
      if (out_reqs_[i] != MPI_REQUEST_NULL) {
        out_[j] = out_[i];
        out_reqs_[j++] = out_reqs_[i];
      }
    out_.resize(j);
    out_reqs_.resize(j);
  }
  return {};
}

void SendQueue::drop(const Error &e) noexcept {
  for (size_t i = 0; i < out_.size(); ++i) {
    int flag = 0;
    if (MPI_Test(&out_reqs_[i], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
      if (out_[i].slot >= 0) free_slot(out_[i].slot);
      if (out_[i].op) complete(*out_[i].op, LF_OK);
      continue;
    }
    if (out_[i].op) fail_op(*out_[i].op, e);
    if (out_[i].slot >= 0)
      bury_slot(out_[i].slot, out_reqs_[i]);
    else
      MPI_Request_free(&out_reqs_[i]);
  }
  out_.clear();
  out_reqs_.clear();
}

}  // namespace lf::mpi
