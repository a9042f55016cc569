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
  /// Fails with LF_ERR_CLOSED once begin_close() ran.
  Status add_channel(Channel *ch);
  /// Refuse new channels (lf_finalize, before it closes the open ones).
  void begin_close() noexcept;
  /// Close every channel still registered (those whose open raced a finalize).
  void close_channels() noexcept;
  void remove_channel(Channel *ch) noexcept;
  /// Progress every started transport and every open channel except `skip`
  /// (channels another thread is driving are skipped too).
  void progress_all(Channel *skip = nullptr) noexcept;
  /// Sleep up to `timeout_ms` until some channel or transport may have
  /// work: on the context's one epoll fd when every member has an event fd,
  /// else a yield (shm's doorbell is a futex, not an fd).
  void wait_for_activity(int timeout_ms) noexcept;

  /// Start or stop the background progress thread.
  Status set_progress_thread(bool on);
  /// True while a progress thread runs: channels then lock around progress.
  bool threaded() const noexcept { return threaded_.load(std::memory_order_relaxed); }

 private:
  explicit Context(std::unique_ptr<Bootstrap> b) : bootstrap_(std::move(b)) {}
  Status exchange();
  /// Add `fd` (-1: none) of `ch` (nullptr: a transport) to the epoll set;
  /// channels_mu_ held.
  void watch_locked(int fd, Channel *ch);

  std::unique_ptr<Bootstrap> bootstrap_;
  std::vector<ProcessLocation> locations_;
  std::vector<std::map<std::string, std::string>> addresses_;  // per rank: transport -> address
  std::vector<TransportState> transports_;
  std::shared_ptr<Pool> shared_pool_;
  std::once_flag shared_pool_once_;

  std::mutex channels_mu_;
  std::vector<Channel *> channels_;
  Fd epoll_;                ///< Every event fd of the channels and transports.
  size_t without_fd_ = 0;   ///< Members that have no event fd (channels_mu_).
  bool closing_ = false;    ///< channels_mu_
  std::mutex progress_mu_;  ///< Serialises starting and stopping the progress thread.
  std::atomic<bool> threaded_{false};
  std::atomic<bool> stop_{false};
  std::thread progress_thread_;
};

}  // namespace lf
