// The mpi transport itself: start-up (the bootstrap's communicator, the tag
// layout MPI_TAG_UB allows, the tunables, the channels' direct-stream
// communicators, device support), the lock that serialises MPI below
// MPI_THREAD_MULTIPLE, the graveyard of requests that outlive their
// endpoint, and connect(), which numbers a pair's channels and makes their
// endpoints (endpoint.hpp). The protocol is described in wire.hpp.
//
// Threads. With MPI_THREAD_MULTIPLE the channel's own lock is enough; with
// less, every MPI call of this transport is made under one mutex (the
// application must then not call MPI concurrently itself).
#pragma once

#include <mpi.h>

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "transport/mpi/device.hpp"
#include "transport/transport.hpp"

namespace lf::mpi {

/// Requests that must finish after their endpoint is gone, with the memory
/// they use (MPI may still read or write it).
class Graveyard {
 public:
  void bury(MPI_Request req, std::unique_ptr<char[]> mem) noexcept;
  /// Test what is buried and free what MPI is done with; `final` (at
  /// shutdown) waits a while, then leaves the rest to MPI and keeps its
  /// memory. The caller holds the MPI lock (lock order: MPI, then graveyard).
  void drain(bool final) noexcept;

 private:
  struct Grave {
    MPI_Request req;
    std::unique_ptr<char[]> mem;
  };
  std::mutex mu_;
  std::vector<Grave> graves_;
};

class MpiTransport final : public Transport {
 public:
  ~MpiTransport() override;

  const char *name() const noexcept override { return "mpi"; }
  TransportCaps caps() const noexcept override;
  std::optional<Cost> estimate(const CostQuery &q) const noexcept override;
  std::optional<std::string> unavailable_reason() const override;
  Result<std::string> start(World &world) override;
  Result<std::unique_ptr<Endpoint>> connect(World &world, int peer, Deadline) override;

  // For endpoints.
  std::unique_lock<std::mutex> mpi_lock() noexcept {
    return serialize_ ? std::unique_lock(mpi_mu_) : std::unique_lock<std::mutex>();
  }
  MPI_Comm comm() const noexcept { return comm_; }
  uint64_t chunk() const noexcept { return chunk_; }
  uint64_t eager_limit() const noexcept { return eager_limit_; }
  int slots() const noexcept { return slots_; }
  int seq_bits() const noexcept { return seq_bits_; }
  const DeviceSupport &device() const noexcept { return dev_; }
  /// The direct stream of the k-th channel between two ranks, if it has one.
  MPI_Comm stream(uint32_t k) const noexcept { return k < streams_.size() ? streams_[k] : MPI_COMM_NULL; }
  uint64_t direct_tag_max() const noexcept { return direct_tag_max_; }

  /// Hand over a request that may outlive its endpoint, with its memory.
  void bury(MPI_Request req, std::unique_ptr<char[]> mem) noexcept { graveyard_.bury(req, std::move(mem)); }
  void drain_graveyard(bool final) noexcept {
    auto lock = mpi_lock();
    graveyard_.drain(final);
  }

 private:
  Status make_streams();

  MPI_Comm comm_ = MPI_COMM_NULL;
  bool serialize_ = false;
  int seq_bits_ = 20, chan_bits_ = 11, slots_ = 16;
  uint64_t eager_limit_ = 1024, chunk_ = 8u << 20, direct_tag_max_ = 0;
  std::vector<MPI_Comm> streams_;
  DeviceSupport dev_;
  std::mutex mpi_mu_;
  Graveyard graveyard_;
  std::mutex connect_mu_;
  std::map<int, uint32_t> next_channel_;
};

}  // namespace lf::mpi
