// What a transport may know about the job it runs in. The channel layer's
// Context implements it; transports never see the Context itself, which
// keeps the layers pointing one way.
#pragma once

#include <string>

#include "core/bootstrap.hpp"
#include "core/location.hpp"
#include "core/scope.hpp"

namespace lf {

class Pool;

class World {
 public:
  virtual ~World() = default;
  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  virtual const ProcessLocation &location(int rank) const noexcept = 0;
  virtual ScopeDecision scope(int peer) const = 0;
  /// Address `transport` published for `rank` at startup ("" if none).
  virtual const std::string &address(int rank, const char *transport) const noexcept = 0;
  virtual Bootstrap &bootstrap() noexcept = 0;
  /// The context's pool of shared (memfd) memory, for zero-copy sends.
  virtual Pool &shared_pool() noexcept = 0;
};

}  // namespace lf
