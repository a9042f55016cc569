// How the ranks of a job find each other. A Bootstrap provides the rank, the
// size and two collectives (allgather of byte strings, barrier) that the
// context uses to exchange locations and transport addresses.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/job_key.hpp"
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
  /// Called every millisecond or so while a barrier waits for the slowest
  /// rank (may be empty), so that the caller keeps its channels answering
  /// their peers meanwhile: a transport that acknowledges only when polled
  /// (dpdk) would otherwise leave a peer, whose last acknowledgement was
  /// lost, retransmitting to a rank that sits in the barrier until it gives
  /// the rank up for gone.
  using Idle = std::function<void()>;
  virtual Status barrier(const Idle &idle) = 0;
  /// The job's key (unset when the job is unauthenticated). Every
  /// connection a transport accepts or makes proves it (core/job_key.hpp).
  const JobKey &job_key() const noexcept { return key_; }
  void set_job_key(JobKey key) noexcept { key_ = std::move(key); }

  /// Build the bootstrap the environment describes (see lf_init in lavaflow.h).
  static Result<std::unique_ptr<Bootstrap>> from_environment();
  /// A world of one rank.
  static std::unique_ptr<Bootstrap> single();
  /// Rendezvous at `address` (tcp://host:port or unix:/path) served by rank 0.
  /// Every rank proves `key` to rank 0 and rank 0 proves it back (an unset
  /// key on every rank: unauthenticated); the result carries `key`.
  static Result<std::unique_ptr<Bootstrap>> rendezvous(int rank, int size, const std::string &address, double timeout_s,
                                                       JobKey key = {});
  /// True when the process was started by an MPI launcher (Open MPI, PMIx, Hydra).
  static bool launched_by_mpi() noexcept;

 private:
  JobKey key_;
};

}  // namespace lf
