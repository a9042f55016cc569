// How the ranks of a job find each other. A Bootstrap provides the rank, the
// size and two collectives (allgather of byte strings, barrier) that the
// context uses to exchange locations and transport addresses.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.hpp"

namespace lf {

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  /// "single", "tcp", "unix" or "mpi".
  virtual const char *name() const noexcept = 0;
  /// Every rank contributes `mine`; returns every rank's contribution by rank.
  virtual Result<std::vector<std::string>> allgather(const std::string &mine) = 0;
  virtual Status barrier() = 0;

  /// Build the bootstrap the environment describes (see lf_init in lavaflow.h).
  static Result<std::unique_ptr<Bootstrap>> from_environment();
  /// A world of one rank.
  static std::unique_ptr<Bootstrap> single();
  /// Rendezvous at `address` (tcp://host:port or unix:/path) served by rank 0.
  static Result<std::unique_ptr<Bootstrap>> rendezvous(int rank, int size, const std::string &address,
                                                       double timeout_s);
  /// True when the process was started by an MPI launcher (Open MPI, PMIx, Hydra).
  static bool launched_by_mpi() noexcept;
};

}  // namespace lf
