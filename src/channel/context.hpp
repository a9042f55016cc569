// A process's membership in a job: bootstrap, every rank's location, the
// transports that started here and the addresses peers published, and the
// open channels (for progress).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/bootstrap.hpp"
#include "transport/transport.hpp"
#include "transport/world.hpp"

namespace lf {

class Channel;
class Pool;

/// A transport as this process sees it after startup.
struct TransportState {
  std::unique_ptr<Transport> transport;
  bool started = false;
  std::string reason;  ///< Why it did not start ("" when it did).
};

class Context final : public World, public std::enable_shared_from_this<Context> {
 public:
  /// Bootstrap from the environment (mpirun, LF_* variables or single rank).
  static Result<std::shared_ptr<Context>> create();
  static Result<std::shared_ptr<Context>> create(std::unique_ptr<Bootstrap> bootstrap);
  ~Context() override;

  int rank() const noexcept override { return bootstrap_->rank(); }
  int size() const noexcept override { return bootstrap_->size(); }
  const ProcessLocation &location(int rank) const noexcept override { return locations_[static_cast<size_t>(rank)]; }
  ScopeDecision scope(int peer) const override;
  const std::string &address(int rank, const char *transport) const noexcept override;
  Bootstrap &bootstrap() noexcept override { return *bootstrap_; }
  Pool &shared_pool() noexcept override;

  /// Whether `transport` started on `rank` (known after the exchange).
  bool has_transport(int rank, const std::string &transport) const noexcept;
  std::vector<TransportState> &transports() noexcept { return transports_; }

  /// Channels register so that waits can drive every channel's progress.
  void add_channel(Channel *ch);
  void remove_channel(Channel *ch) noexcept;
  /// Progress every open channel except `skip`.
  void progress_all(Channel *skip = nullptr) noexcept;

  /// Start or stop the background progress thread.
  Status set_progress_thread(bool on);
  /// True while a progress thread runs: channels then lock around progress.
  bool threaded() const noexcept { return threaded_.load(std::memory_order_relaxed); }

 private:
  explicit Context(std::unique_ptr<Bootstrap> b) : bootstrap_(std::move(b)) {}
  Status exchange();

  std::unique_ptr<Bootstrap> bootstrap_;
  std::vector<ProcessLocation> locations_;
  std::vector<std::map<std::string, std::string>> addresses_;  // per rank: transport -> address
  std::vector<TransportState> transports_;
  std::shared_ptr<Pool> shared_pool_;
  std::once_flag shared_pool_once_;

  std::mutex channels_mu_;
  std::vector<Channel *> channels_;
  std::atomic<bool> threaded_{false};
  std::atomic<bool> stop_{false};
  std::thread progress_thread_;
};

}  // namespace lf
