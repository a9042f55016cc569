// The device lane of a shm endpoint (device_lane.hpp).
#include "transport/shm/device_lane.hpp"

#include "core/log.hpp"
#include "transport/shm/shm_control.hpp"
#include "transport/shm/shm_segments.hpp"
#include "transport/shm/shm_sender.hpp"

namespace lf::shm {

const ExportHandle *DeviceLane::export_for(const SendOp &op) noexcept {
  if (gpu_ipc::api_of(op.buffer->kind()) != api_) return nullptr;
  const ExportHandle *h = op.buffer->export_handle();
  if (!h || h->segment_id == 0 || op.size > h->length) return nullptr;
  const int dev = op.buffer->device();
  auto it = device_ok_.find(dev);
  if (it == device_ok_.end()) {
    try {
      const bool ok = gpu_ipc::identity_listed(peer_devices_, gpu_ipc::identity_of(*h, dev));
      if (!ok)
        LF_LOG(info, "shm: rank %d cannot import memory of %s device %d: staged copies", link_.peer(),
               gpu_ipc::api_name(api_), dev);
      it = device_ok_.emplace(dev, ok).first;
    } catch (const std::bad_alloc &) {
      return nullptr;
    }
  }
  return it->second ? h : nullptr;
}

/// Announcements whose descriptors the peer has not consumed yet. Bounded,
/// so that the socket never fills up (a blocked sendmsg could deadlock two
/// ranks that both send); beyond it the send waits like one without credit.
bool DeviceLane::announce_credit(Sender &tx) noexcept {
  const uint64_t consumed = tx.peer_consumed();
  while (!announced_at_.empty() && announced_at_.front() < consumed) announced_at_.pop_front();
  if (announced_at_.size() < kMaxAnnouncementsInFlight) return true;
  tx.note_blocked_at(consumed);
  return false;
}

bool DeviceLane::send(SendOp &op, const ExportHandle &h, Sender &tx) noexcept {
  if (!tx.slot_credit()) return false;
  const uint64_t id = h.segment_id;
  const bool known = sent_.contains(id);
  if (!known && !announce_credit(tx)) return false;
  // Earlier GPU work on the buffer completes (Vulkan) or is ordered (CUDA
  // event) before the peer can see the descriptor.
  if (auto st = send_sync_.before_publish(*op.buffer); !st) return fail_op(op, st.error()), true;
  try {
    if (known) {
      sent_.touch(id);
    } else {
      // Written before the descriptor is published, so the peer finds it on
      // the socket when it meets the descriptor. The receiver's cache evicts
      // exactly when this mirror does (gpu_ipc::IdLru).
      struct {
        SegmentAnnounce a;
        gpu_ipc::Record r;
      } msg{{gpu_ipc::kDeviceMagic, id, sizeof(gpu_ipc::Record)},
            gpu_ipc::make_record(h, op.buffer->device(), send_sync_)};
      const int sock = link_.conn.sock.get();
      Status st = h.fd >= 0 ? send_fd(sock, h.fd, &msg, sizeof msg) : send_all(sock, &msg, sizeof msg, deadline_in(10));
      if (!st) return fail_op(op, st.error()), true;
      announced_at_.push_back(tx.head());
      sent_.insert(id, 0);
    }
  } catch (const std::bad_alloc &) {
    return fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a device allocation")), true;
  }
  const uint64_t offset = h.offset;
  const uint64_t cookie = tx.add_inflight(nullptr, op.buffer);
  if (cookie == UINT64_MAX) return fail_op(op, make_error(LF_ERR_NO_MEMORY, "shm: no memory to track a send")), true;
  Slot &s = tx.next_slot();
  write_body_header(s, Kind::zero_copy, op.tag, op.size);
  s.flags = kFlagDevice;
  s.body.words[kCookie] = cookie;
  s.body.words[kSegment] = id;
  s.body.words[kOffset] = offset;
  tx.publish(s);
  complete_status(op.status, LF_OK);  // the buffer belongs to the in-flight table until the release
  return true;
}

bool DeviceLane::on_announcement(const SegmentAnnounce &a, Fd fd) noexcept {
  auto bad = [&](const char *what) {
    link_.fail(
        make_error(LF_ERR_PROTOCOL, "shm: rank %d announced a malformed device allocation: %s", link_.peer(), what));
    return false;
  };
  if (a.segment_id == 0 || a.segment_bytes != sizeof(gpu_ipc::Record)) return bad("bad id or record size");
  gpu_ipc::Record rec{};
  // The record is part of the message just read from: already queued.
  if (auto st = recv_all(link_.conn.sock.get(), &rec, sizeof rec, deadline_in(1)); !st) {
    link_.fail(st.error().code == LF_ERR_TIMEOUT ? make_error(LF_ERR_PROTOCOL, "shm: truncated device announcement")
                                                 : st.error());
    return false;
  }
  if (const char *err = gpu_ipc::check_record(rec, api_)) return bad(err);
  // Nothing travels without a descriptor in the ring behind it; more
  // pending announcements than ring slots means a peer flooding us.
  if (pending_.size() >= slot_count_) return bad("more announcements than the ring has slots");
  if (auto st = recv_sync_.adopt(rec); !st) return link_.fail(st.error()), false;
  try {
    pending_[a.segment_id] = Pending{rec, std::move(fd)};
  } catch (const std::bad_alloc &) {
    link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory for a device announcement"));
    return false;
  }
  return true;
}

/// The peer's device allocation `id`, imported on its first descriptor.
/// nullptr when the peer never announced it (or the connection failed).
std::shared_ptr<gpu_ipc::Imported> DeviceLane::find(uint64_t id, PeerSegments &segments) noexcept {
  try {
    if (auto *m = imported_.touch(id)) return *m;
    for (;;) {
      if (auto it = pending_.find(id); it != pending_.end()) {
        gpu_ipc::Record rec = it->second.record;
        Fd fd = std::move(it->second.fd);
        pending_.erase(it);
        auto m = gpu_ipc::import(rec, std::move(fd));
        if (!m) {
          Error e = m.error();
          e.message = "shm: rank " + std::to_string(link_.peer()) + ": " + e.message;
          link_.fail(e);
          return nullptr;
        }
        LF_LOG(debug, "shm: imported rank %d's %s allocation %llx (%llu bytes)", link_.peer(),
               memory_kind_name((*m)->kind()), static_cast<unsigned long long>(id),
               static_cast<unsigned long long>((*m)->size()));
        imported_.insert(id, *m);
        return *m;
      }
      if (!segments.read_one()) return nullptr;
    }
  } catch (const std::bad_alloc &) {
    link_.fail(make_error(LF_ERR_NO_MEMORY, "shm: no memory to import a device allocation"));
    return nullptr;
  }
}

BufferPtr DeviceLane::view(const Decoded &d, PeerSegments &segments, const std::shared_ptr<ControlTx> &ctl,
                           const char *&err) noexcept {
  err = nullptr;
  if (d.size == 0) return err = "empty device descriptor", nullptr;
  std::shared_ptr<gpu_ipc::Imported> mem = find(d.segment, segments);
  if (!mem) {
    if (!link_.failed()) err = "descriptor names a device allocation the peer never announced";
    return nullptr;
  }
  if ((err = check_range(mem->size(), d.offset, d.size))) return nullptr;
  if (auto st = recv_sync_.before_deliver(*mem); !st) return link_.fail(st.error()), nullptr;
  try {
    return std::make_unique<gpu_ipc::View>(std::move(mem), d.offset, d.size, ctl, d.cookie);
  } catch (const std::bad_alloc &) {
    return nullptr;
  }
}

}  // namespace lf::shm
