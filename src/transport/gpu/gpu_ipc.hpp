// GPU IPC: what the "vulkan-ipc" and "cuda-ipc" transports add to the
// shared-memory transport.
//
// They are variants of shm (shm_transport.cpp): same handshake, rings, socket
// and endpoint. A buffer whose memory is exportable (Buffer::export_handle())
// travels as:
//   1. once per allocation and connection: an announcement on the
//      connection's Unix socket -- shm::SegmentAnnounce with kDeviceMagic
//      followed by a Record, and the OPAQUE_FD (Vulkan) with SCM_RIGHTS; the
//      receiver imports the allocation and caches it by the allocation's id;
//   2. per message: a zero-copy descriptor in the data ring (allocation id,
//      offset, length, release cookie), costing about what a shm message
//      costs. The receiver gets a View; freeing it sends the release.
//
// Everything a peer sends is validated here before it is used: records
// (kind, sizes, device identity), the fd (a memfd must be as large as the
// allocation it claims to be), and descriptor ranges (shm::check_range).
//
// Synchronisation (docs/transports.md, "GPU IPC"): before a descriptor is
// published the sender completes earlier GPU work on the buffer's device --
// Vulkan: an empty submit with a fence on lavaflow's queue (host-side
// completion; lavapipe has no VK_KHR_external_semaphore_fd to do it on the
// GPU); CUDA: an interprocess event recorded on the legacy default stream,
// which the receiver waits for before it hands the view out.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/net.hpp"
#include "core/status.hpp"
#include "lavaflow_features.h"
#include "memory/buffer.hpp"
#include "memory/vulkan_compute.hpp"
#include "transport/transport.hpp"

namespace lf::gpu_ipc {

/// Which GPU API a variant serves.
enum class Api : uint8_t { vulkan = 1, cuda = 2 };

const char *api_name(Api a) noexcept;
/// The API whose memory `k` is, or nullopt for host kinds.
std::optional<Api> api_of(MemoryKind k) noexcept;

// ---- device identity ---------------------------------------------------------------

/// The devices this process could import memory on, as a string for the
/// transport address: Vulkan "<deviceUUID>/<driverUUID>" per qualifying
/// physical device (from a short-lived instance: no logical device, no
/// driver threads), CUDA the PCI bus id of each NVIDIA GPU (from sysfs: CUDA
/// is not initialised at lf_init). Comma-separated. Fails with the reason
/// when the API cannot run here.
Result<std::string> local_identity(Api a);

/// Why two ranks with published identities `a` and `b` cannot share device
/// memory (no device in common), or nullopt. Symmetric.
std::optional<std::string> identity_mismatch(Api api, const std::string &a, const std::string &b);

/// Identity string of the device an exported allocation lives on (one
/// element of local_identity()'s list), "" when unknown.
std::string identity_of(const ExportHandle &h, int device);

/// True when `list` (a local_identity() string) names `id`.
bool identity_listed(const std::string &list, const std::string &id);

// ---- wire record -------------------------------------------------------------------

/// SegmentAnnounce::magic of a device-memory announcement ("LFGPUMEM").
inline constexpr uint64_t kDeviceMagic = 0x4d454d555047464cull;
inline constexpr uint32_t kRecordVersion = 1;

/// Follows the SegmentAnnounce (whose segment_id is the allocation id and
/// segment_bytes is sizeof(Record)) on the socket. Plain bytes, no pointers.
struct Record {
  uint32_t version;
  int32_t kind;  ///< MemoryKind
  uint64_t allocation_size;
  uint32_t memory_type_index;
  uint32_t dedicated;
  uint8_t device_uuid[16];  ///< Vulkan
  uint8_t driver_uuid[16];  ///< Vulkan
  char bus_id[32];          ///< CUDA: PCI bus id of the device, NUL-terminated
  uint8_t cuda_mem[64];     ///< cudaIpcMemHandle_t
  uint8_t cuda_event[64];   ///< cudaIpcEventHandle_t of the sender's ordering event
  uint32_t has_event;
  uint32_t reserved;
};
static_assert(sizeof(Record) == 224);  // the same on both ends: no padding surprises

/// Largest allocation a record may announce.
inline constexpr uint64_t kMaxAllocation = uint64_t{1} << 46;

class SendSync;

/// The record announcing the allocation behind `h` (of a buffer on `device`).
/// Carries `sync`'s event handle when it has one.
Record make_record(const ExportHandle &h, int device, const SendSync &sync) noexcept;

/// nullptr when `r` is well formed for `api`, else a static description.
const char *check_record(const Record &r, Api api) noexcept;

// ---- import cache ------------------------------------------------------------------

/// Allocations a receiver keeps imported per connection. Both ends keep an
/// IdLru of this capacity and touch it in the same order -- the sender when
/// it publishes a descriptor, the receiver when it consumes it -- so the
/// sender knows, without being told, which allocations the receiver has
/// evicted, and announces them again before their next descriptor. That
/// bounds what a receiver pins (allocations the sender freed age out) with no
/// extra message. A protocol constant: both ends must agree on it.
inline constexpr size_t kCacheEntries = 256;

/// A least-recently-used map from allocation id to V with a fixed capacity.
template <typename V>
class IdLru {
 public:
  explicit IdLru(size_t capacity = kCacheEntries) : cap_(capacity) {}
  /// The entry for `id`, now most recent; nullptr when absent.
  V *touch(uint64_t id) {
    auto it = map_.find(id);
    if (it == map_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second.first);
    return &it->second.second;
  }
  /// Add `id` (absent) as most recent, evicting the least recent at capacity.
  void insert(uint64_t id, V v) {
    if (map_.size() >= cap_) {
      map_.erase(order_.back());
      order_.pop_back();
    }
    order_.push_front(id);
    map_.emplace(id, std::make_pair(order_.begin(), std::move(v)));
  }
  bool contains(uint64_t id) const { return map_.count(id) != 0; }
  size_t size() const noexcept { return map_.size(); }

 private:
  size_t cap_;
  std::list<uint64_t> order_;
  std::unordered_map<uint64_t, std::pair<std::list<uint64_t>::iterator, V>> map_;
};

// ---- import ------------------------------------------------------------------------

/// An allocation imported from the peer. Shared by the receiver's cache and
/// every view of it, so that a view outlives the channel and the cache entry.
class Imported {
 public:
  ~Imported();
  MemoryKind kind() const noexcept { return kind_; }
  uint64_t size() const noexcept { return size_; }
  /// Host mapping of byte 0 of the allocation, or nullptr.
  void *host() const noexcept { return whole_ ? whole_->data() : nullptr; }
  /// CUDA: device address of byte 0; Vulkan: the VkDeviceMemory.
  uint64_t device_handle() const noexcept { return whole_ ? whole_->device_handle() : 0; }
  int device() const noexcept { return whole_ ? whole_->device() : -1; }
#if LAVAFLOW_HAVE_VULKAN
  /// The region [offset, offset + length) of the allocation.
  Result<vk::Region> region(uint64_t offset, uint64_t length) const noexcept;
#endif

 private:
  friend Result<std::shared_ptr<Imported>> import(const Record &, Fd) noexcept;
  MemoryKind kind_ = MemoryKind::host;
  uint64_t size_ = 0;
  uint32_t memory_type_ = 0;
  BufferPtr whole_;  ///< import_buffer() of the whole allocation
};

/// Import the allocation `r` announces (fd: the OPAQUE_FD, or none for CUDA).
/// The fd is consumed. Errors are the peer's fault: LF_ERR_PROTOCOL, with
/// the import's detail.
Result<std::shared_ptr<Imported>> import(const Record &r, Fd fd) noexcept;

// ---- ordering ----------------------------------------------------------------------

/// Sender side: make earlier GPU work on `b` complete (Vulkan) or ordered
/// (CUDA: records the endpoint's interprocess event, created on first use
/// and returned in `event_handle` for the announcement).
class SendSync {
 public:
  SendSync() = default;
  ~SendSync();
  SendSync(const SendSync &) = delete;
  SendSync &operator=(const SendSync &) = delete;
  Status before_publish(const Buffer &b) noexcept;
  /// The event's IPC handle (CUDA), valid after a successful before_publish.
  bool event_handle(uint8_t out[64]) const noexcept;

 private:
  void *event_ = nullptr;  // cudaEvent_t
  int device_ = -1;
  uint8_t handle_[64] = {};
};

/// Receiver side: waits for the peer's ordering event before a view of CUDA
/// memory is handed out. Opens the event handle once per connection.
class RecvSync {
 public:
  RecvSync() = default;
  ~RecvSync();
  RecvSync(const RecvSync &) = delete;
  RecvSync &operator=(const RecvSync &) = delete;
  /// Remember the event a record announced (first one wins).
  Status adopt(const Record &r) noexcept;
  Status before_deliver(const Imported &m) noexcept;

 private:
  void *event_ = nullptr;  // cudaEvent_t
};

// ---- view --------------------------------------------------------------------------

/// Where a view's release goes (the shm endpoint's control ring).
class ReleaseSink {
 public:
  virtual ~ReleaseSink() = default;
  virtual void release(uint64_t cookie) noexcept = 0;
};

/// What a receiver gets: [offset, offset + length) of an imported allocation.
/// Destroying it sends the release that returns the memory to the sender.
class View final : public Buffer
#if LAVAFLOW_HAVE_VULKAN
    ,
                   public vk::RegionSource
#endif
{
 public:
  View(std::shared_ptr<Imported> m, uint64_t offset, uint64_t length, std::shared_ptr<ReleaseSink> sink,
       uint64_t cookie);
  ~View() override;
#if LAVAFLOW_HAVE_VULKAN
  Result<vk::Region> vulkan_region() const noexcept override;
#endif

 private:
  std::shared_ptr<Imported> mem_;
  uint64_t offset_;
  std::shared_ptr<ReleaseSink> sink_;
  uint64_t cookie_;
};

/// Place a received view into `op`: a buffer receive gets the view itself
/// (zero copy); a plain receive copies out of it -- through the mapping or a
/// staged device copy, as lf::buffer_read does -- and releases it at once.
void deliver_view(RecvOp &op, uint64_t tag, BufferPtr view) noexcept;

/// A view that arrived before its receive was posted.
class ViewIncoming final : public Incoming {
 public:
  ViewIncoming(uint64_t tag, BufferPtr view) : Incoming(tag, view->size()), view_(std::move(view)) {}
  void deliver(RecvOp &op) noexcept override { deliver_view(op, tag(), std::move(view_)); }

 private:
  BufferPtr view_;
};

}  // namespace lf::gpu_ipc
