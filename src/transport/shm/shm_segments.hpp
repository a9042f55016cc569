// The peer's announcements on the connection's socket, as the receive side
// meets their descriptors: memfd segments of shared-pool buffers (mapped and
// cached here) and device allocations (handed to the DeviceLane).
#pragma once

#include <memory>
#include <unordered_map>

#include "transport/shm/shm_link.hpp"

namespace lf::shm {

class DeviceLane;

class PeerSegments {
 public:
  PeerSegments(Link &link, DeviceLane *lane) : link_(link), lane_(lane) {}
  /// The mapping of peer segment `id`, reading announcements from the
  /// socket until it shows up. nullptr when the peer never sent it (the
  /// descriptor is bogus) or the connection failed (link.failed()).
  std::shared_ptr<SharedSegment> find(uint64_t id) noexcept;
  /// Read one announcement. Announcements precede their first descriptor,
  /// so what a descriptor needs is already queued: read without waiting.
  /// False when nothing is queued or the connection failed.
  bool read_one() noexcept;

 private:
  Link &link_;
  DeviceLane *lane_;
  std::unordered_map<uint64_t, std::shared_ptr<SharedSegment>> segments_;
  std::shared_ptr<SharedSegment> last_;
};

}  // namespace lf::shm
