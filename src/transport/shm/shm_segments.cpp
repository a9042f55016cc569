// The peer's segment and device announcements (shm_segments.hpp).
#include "transport/shm/shm_segments.hpp"

#include <fcntl.h>

#include "transport/gpu/gpu_ipc.hpp"
#include "transport/shm/device_lane.hpp"

namespace lf::shm {

std::shared_ptr<SharedSegment> PeerSegments::find(uint64_t id) noexcept {
  if (last_ && last_->id() == id) return last_;
  for (;;) {
    if (auto it = segments_.find(id); it != segments_.end()) return last_ = it->second;
    if (!read_one()) return nullptr;
  }
}

bool PeerSegments::read_one() noexcept {
  SegmentAnnounce a{};
  const int peer = link_.peer();
  auto fd = recv_fd(link_.conn.sock.get(), &a, sizeof a, Clock::now(), /*require_fd=*/false);
  if (!fd) {
    // A broken socket means the peer is gone.
    if (fd.error().code != LF_ERR_TIMEOUT) link_.fail(fd.error());
    return false;
  }
  if (a.magic == gpu_ipc::kDeviceMagic) {
    if (!lane_)
      return link_.fail(make_error(LF_ERR_PROTOCOL,
                                   "shm: rank %d announced a malformed device allocation: this connection does not "
                                   "carry device memory",
                                   peer)),
             false;
    return lane_->on_announcement(a, std::move(*fd));
  }
  if (a.magic != kSegmentMagic || a.segment_id == 0 || a.segment_bytes == 0 || a.segment_bytes > kMaxMessage)
    return link_.fail(make_error(LF_ERR_PROTOCOL, "shm: rank %d announced a malformed segment", peer)), false;
  if (!*fd)
    return link_.fail(make_error(LF_ERR_PROTOCOL, "shm: rank %d announced a segment without its fd", peer)), false;
  // The segment must be sealed against shrinking: a peer that truncated it
  // later would turn our reads into SIGBUS.
  int seals = fcntl(fd->get(), F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK))
    return link_.fail(
               make_error(LF_ERR_PROTOCOL, "shm: rank %d sent a segment that is not sealed against shrinking", peer)),
           false;
  auto seg = SharedSegment::map(fd->release(), a.segment_bytes, a.segment_id);
  if (!seg) return link_.fail(seg.error()), false;
  try {
    segments_[a.segment_id] = *seg;
  } catch (const std::bad_alloc &) {
    return link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory to cache a segment")), false;
  }
  return true;
}

}  // namespace lf::shm
