// The device lane of a shm endpoint: what the GPU IPC variants (vulkan-ipc,
// cuda-ipc) add to a connection. Buffers of the variant's API whose device
// the peer published travel as device descriptors in the data ring, after a
// one-time announcement of the allocation on the socket; the receiver
// imports the allocation and hands out views (transport/gpu/gpu_ipc.hpp).
// A plain shm endpoint has no lane.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "transport/gpu/gpu_ipc.hpp"
#include "transport/shm/shm_link.hpp"

namespace lf::shm {

class Sender;
class PeerSegments;
class ControlTx;

class DeviceLane {
 public:
  DeviceLane(Link &link, gpu_ipc::Api api, std::string peer_identity, uint64_t slot_count)
      : link_(link), api_(api), peer_devices_(std::move(peer_identity)), slot_count_(slot_count) {}

  // Send side.
  /// The export handle through which `op`'s buffer goes as a device
  /// descriptor, or nullptr when it must be copied: not this variant's
  /// memory, not exportable, or on a device the peer did not publish.
  const ExportHandle *export_for(const SendOp &op) noexcept;
  /// Publish `op` as a descriptor (announcing the allocation first if the
  /// peer has not imported it). False: no credit yet, retry later.
  bool send(SendOp &op, const ExportHandle &h, Sender &tx) noexcept;

  // Receive side.
  /// A device announcement read from the socket (PeerSegments): kept until
  /// its first descriptor. False when the connection failed.
  bool on_announcement(const SegmentAnnounce &a, Fd fd) noexcept;
  /// A view of the descriptor `d`. nullptr with `err` set: the peer sent
  /// something malformed; nullptr without: the connection failed
  /// (link.failed()) or no memory for the view (retry later).
  BufferPtr view(const Decoded &d, PeerSegments &segments, const std::shared_ptr<ControlTx> &ctl,
                 const char *&err) noexcept;

 private:
  bool announce_credit(Sender &tx) noexcept;
  std::shared_ptr<gpu_ipc::Imported> find(uint64_t id, PeerSegments &segments) noexcept;

  static constexpr size_t kMaxAnnouncementsInFlight = 64;
  Link &link_;
  gpu_ipc::Api api_;
  // send side
  std::string peer_devices_;                 ///< what the peer published
  std::unordered_map<int, bool> device_ok_;  ///< device index -> the peer can import its memory
  gpu_ipc::IdLru<char> sent_;                ///< mirror of the peer's import cache
  std::deque<uint64_t> announced_at_;        ///< ring positions of announced descriptors not yet consumed
  gpu_ipc::SendSync send_sync_;
  // receive side
  struct Pending {
    gpu_ipc::Record record;
    Fd fd;
  };
  uint64_t slot_count_;
  gpu_ipc::IdLru<std::shared_ptr<gpu_ipc::Imported>> imported_;  ///< evicted as the sender's mirror says
  std::unordered_map<uint64_t, Pending> pending_;                ///< announced, no descriptor consumed yet
  gpu_ipc::RecvSync recv_sync_;
};

}  // namespace lf::shm
