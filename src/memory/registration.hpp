// What transports registered for a piece of memory: a UCX ucp_mem_h, a DPDK
// external-memory registration, a verbs MR. Layer 1 only keeps them; the
// transport makes them (Transport::register_memory) and its handle's deleter
// undoes them.
//
// A registration is made once per *unit* of memory, not per buffer: a pool
// slab (a class-sized block that returns to the pool's free list with its
// registrations intact), a shared pool's memfd segment (every block carved
// from it shares one), or a plain allocation. Buffer::registered_range()
// names the unit a buffer lies in. The unit drops its registrations before
// it frees its memory, so a handle never outlives what it registered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "core/status.hpp"

namespace lf {

/// A transport's handle for registered memory; opaque outside the transport.
/// Empty (nullptr) means "nothing to register" and is cached like any other.
using RegistrationHandle = std::shared_ptr<void>;

/// The registrations of one unit of memory, by owner (a transport instance's
/// process-unique id). Thread-safe.
class Registrations {
 public:
  Registrations() = default;
  Registrations(const Registrations &) = delete;
  Registrations &operator=(const Registrations &) = delete;
  ~Registrations() { clear(); }

  /// The handle `owner` registered, making it with `make` the first time.
  /// A failed `make` is not cached (the next call tries again). `make` runs
  /// under this object's lock: two threads never register one unit twice.
  Result<RegistrationHandle> get(uint64_t owner, const std::function<Result<RegistrationHandle>()> &make);

  /// Whether `owner` holds a registration (tests, statistics).
  bool has(uint64_t owner) const noexcept;

  /// Drop every registration (their deleters deregister). The owner of the
  /// memory calls this before freeing it.
  void clear() noexcept;

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<uint64_t, RegistrationHandle>> handles_;
};

/// The unit a buffer lies in: what a transport registers, and where its
/// registrations are kept. `regs` is null for memory that cannot be
/// registered (a Vulkan allocation with no host mapping).
struct RegisteredRange {
  void *base = nullptr;
  size_t length = 0;
  Registrations *regs = nullptr;
};

}  // namespace lf
