#include "transport/shm/shm_rings.hpp"

#include <fcntl.h>

#include <cinttypes>
#include <cstring>

#include "transport/shm/shm_protocol.hpp"

namespace lf::shm {

Result<std::shared_ptr<SharedSegment>> create_rings(const Tunables &t) {
  Layout l;
  if (!compute_layout(t.ring_slots, kMinCtl * 16, t.fifo_bytes, l))
    return LF_FAIL(LF_ERR_INVALID_ARG, "shm: LF_SHM_RING_SLOTS/LF_SHM_FIFO_BYTES out of bounds");
  auto seg = SharedSegment::create(l.total_bytes, "lf-shm-ring");
  if (!seg) return std::unexpected(seg.error());
  SegmentHeader hdr{
      kSegmentMagic, kVersion, t.ring_slots, kMinCtl * 16, 0, t.fifo_bytes, {l.dir_offset[0], l.dir_offset[1]},
      l.total_bytes};
  std::memcpy((*seg)->base(), &hdr, sizeof hdr);  // the rest of a new memfd reads as zero
  return seg;
}

Result<std::shared_ptr<SharedSegment>> map_rings(Fd fd, uint64_t bytes, const char *who) {
  int seals = fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK))
    return LF_FAIL(LF_ERR_PROTOCOL, "shm: %s sent a ring segment that is not sealed against shrinking", who);
  if (bytes < sizeof(SegmentHeader) || bytes > (uint64_t{1} << 40))
    return LF_FAIL(LF_ERR_PROTOCOL, "shm: %s announced a ring segment of %" PRIu64 " bytes", who, bytes);
  auto seg = SharedSegment::map(fd.release(), bytes, 0);
  if (!seg) return std::unexpected(seg.error());
  SegmentHeader hdr;
  std::memcpy(&hdr, (*seg)->base(), sizeof hdr);
  if (const char *err = check_header(hdr, (*seg)->size()))
    return LF_FAIL(LF_ERR_PROTOCOL, "shm: ring segment from %s: %s", who, err);
  return seg;
}

Result<std::unique_ptr<Endpoint>> endpoint_over_socket(Fd sock, bool acceptor, Deadline deadline) {
  auto cred = peer_credentials(sock.get());
  if (!cred) return std::unexpected(cred.error());
  const Tunables t = Tunables::from_config();
  Connection c;
  c.peer_pid = cred->pid;
  // The same message as the ranks' reply; only magic, version, status and
  // segment_bytes are used here.
  Reply r{};
  if (acceptor) {
    auto seg = create_rings(t);
    if (!seg) return std::unexpected(seg.error());
    r.magic = kSegmentMagic;
    r.version = kVersion;
    r.segment_bytes = (*seg)->size();
    if (auto st = send_fd(sock.get(), (*seg)->fd(), &r, sizeof r); !st) return std::unexpected(st.error());
    c.segment = std::move(*seg);
    c.role = 1;
  } else {
    auto fd = recv_fd(sock.get(), &r, sizeof r, deadline);
    if (!fd) return std::unexpected(fd.error());
    if (r.magic != kSegmentMagic || r.version != kVersion || r.status != LF_OK)
      return LF_FAIL(LF_ERR_PROTOCOL, "shm: malformed ring announcement from the listener");
    auto seg = map_rings(std::move(*fd), r.segment_bytes, "the listener");
    if (!seg) return std::unexpected(seg.error());
    c.segment = std::move(*seg);
    c.role = 0;
  }
  c.sock = std::move(sock);
  return make_endpoint(std::move(c), t);
}

}  // namespace lf::shm
