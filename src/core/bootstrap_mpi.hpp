// The MPI bootstrap, also used by the MPI transport for its communicator.
#pragma once

#include <mpi.h>

#include "core/bootstrap.hpp"

namespace lf {

class MpiBootstrap final : public Bootstrap {
 public:
  /// Initialise MPI if the application has not (lavaflow then owns
  /// finalisation), else cooperate with the application's MPI.
  static Result<std::unique_ptr<MpiBootstrap>> create();
  ~MpiBootstrap() override;
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char *name() const noexcept override { return "mpi"; }
  Result<std::vector<std::string>> allgather(const std::string &mine) override;
  Status barrier(const Idle &idle) override;

  /// lavaflow's own duplicate of MPI_COMM_WORLD: its tags never collide with
  /// the application's.
  MPI_Comm comm() const noexcept { return comm_; }
  /// Thread level MPI provided.
  int thread_level() const noexcept { return thread_level_; }
  bool owns_mpi() const noexcept { return owns_mpi_; }

 private:
  MpiBootstrap() = default;
  /// Rank 0 draws a random job key and broadcasts it on comm_.
  Status share_job_key();
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, thread_level_ = MPI_THREAD_SINGLE;
  bool owns_mpi_ = false;
};

/// "MPI_Xxx failed: <MPI error string>" as an lf::Error.
Error mpi_error(int rc, const char *call);

}  // namespace lf
