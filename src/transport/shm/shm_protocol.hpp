// Wire format of the shared-memory transport, and the pure functions that
// validate what a peer wrote before anything is dereferenced.
//
// One memfd segment per connection, created by the accepting (higher) rank
// and passed to the connecting rank with SCM_RIGHTS:
//
//   page 0        SegmentHeader (layout parameters, written once)
//   direction 0   written by the connecting rank, read by the accepting one
//   direction 1   the reverse
//
// Each direction holds, in this order:
//   DirControl    the consumer's line (what it has consumed, credit waiter)
//                 and the doorbell line (futex word + "consumer sleeps" flag)
//   data ring     slot_count 64-byte slots: tag, size, seq, kind + 40 bytes
//                 (inline payload or a descriptor)
//   control ring  ctl_count slots for acks and zero-copy releases; always
//                 drained, so they never queue behind unexpected data
//   fifo          fifo_bytes of payload for eager messages and the chunks of
//                 pipelined large messages (the bounce buffers)
//
// A slot is full when its seq equals (position + 1) truncated to 32 bits;
// the producer writes the body, then stores seq with release, so one cache
// line carries both the "there is a message" signal and a small payload.
// Consumers copy the slot into private memory before looking at it: the peer
// could rewrite shared memory at any time, so only the private copy is
// validated and used.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace lf::shm {

inline constexpr uint64_t kSegmentMagic = 0x314d48535746464cull;  // "LFFWSHM1"
inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kSlotSize = 64;
inline constexpr size_t kInlineMax = 40;
inline constexpr size_t kPage = 4096;

/// Bounds a segment header must respect (both ends check them).
inline constexpr uint32_t kMinSlots = 16, kMaxSlots = 1u << 20;
inline constexpr uint32_t kMinCtl = 16, kMaxCtl = 1u << 16;
inline constexpr uint64_t kMinFifo = 64u << 10, kMaxFifo = 1ull << 30;
/// Largest message the transport accepts (the C API refuses beyond 2^46 too).
inline constexpr uint64_t kMaxMessage = 1ull << 46;

enum class Kind : uint8_t {
  none = 0,
  inline_data = 1,  ///< size <= 40, payload in the slot
  eager = 2,        ///< one fifo piece of `size` bytes
  pipe_first = 3,   ///< first chunk of a pipelined message: tag, total size, chunk length
  pipe_next = 4,    ///< following chunk: chunk length
  rts_cma = 5,      ///< receiver reads `size` bytes at `addr` with process_vm_readv, then acks `cookie`
  zero_copy = 6,    ///< descriptor: segment id, offset, length = size, cookie for the release
  ack = 16,         ///< control: CMA read of `cookie` done, `status` is the result
  release = 17,     ///< control: zero-copy view of `cookie` freed
  park = 18,        ///< control, receiver -> sender: stop the stream that began at ring position `cookie`
  cut = 19,         ///< control, sender -> receiver: that stream has `count` slots in the ring; skip them
  resume = 20,      ///< control, receiver -> sender: send the parked message `cookie` now
};

/// A ring slot's layout. `Seq` is the atomic sequence word in shared memory
/// (Slot) or a plain one in a private copy (SlotImage): one declaration, so
/// the two can never drift apart.
template <typename Seq>
struct alignas(kSlotSize) SlotLayout {
  Seq seq;
  uint8_t kind;
  uint8_t flags;
  uint16_t reserved;
  uint64_t tag;
  uint64_t size;
  union {
    unsigned char bytes[kInlineMax];
    uint64_t words[kInlineMax / 8];
  } body;
};
using Slot = SlotLayout<std::atomic<uint32_t>>;
static_assert(sizeof(Slot) == kSlotSize);
static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);

/// Slot::flags of a zero_copy descriptor: it names a device allocation the
/// peer announced (GPU IPC, transport/gpu/gpu_ipc.hpp) instead of a memfd
/// segment. No other flag exists.
inline constexpr uint8_t kFlagDevice = 1;
/// Slot::flags of a pipe_first: the stream carries a parked message (Kind::park)
/// whose receive is now posted; body word kCookie names it.
inline constexpr uint8_t kFlagResume = 2;

// Body words per kind.
inline constexpr int kLen = 0;      // eager / pipe_*: bytes in the fifo
inline constexpr int kAddr = 0;     // rts_cma: sender's address
inline constexpr int kCookie = 1;   // rts_cma, zero_copy, ack, release
inline constexpr int kSegment = 2;  // zero_copy: segment id
inline constexpr int kOffset = 3;   // zero_copy: offset in the segment
inline constexpr int kStatus = 2;   // ack: lf_status_t of the read (as int64)
inline constexpr int kCount = 2;    // cut: slots of the parked stream already in the ring

/// Private copy of a slot (no atomics: it is ours alone).
using SlotImage = SlotLayout<uint32_t>;
static_assert(sizeof(SlotImage) == kSlotSize);

/// Per-direction control block. The consumer owns the first line, the
/// doorbell is on its own line so that ringing it does not steal the
/// consumer's counters.
struct DirControl {
  alignas(64) std::atomic<uint64_t> slots_consumed;
  std::atomic<uint64_t> fifo_consumed;
  std::atomic<uint64_t> ctl_consumed;
  std::atomic<uint32_t> credit_waiter;     ///< producer is blocked on credits: wake it when consuming
  alignas(64) std::atomic<uint32_t> bell;  ///< futex word, bumped by whoever wakes the consumer
  std::atomic<uint32_t> sleeping;          ///< consumer is (about to be) in FUTEX_WAIT
};
static_assert(sizeof(DirControl) == 128);

struct SegmentHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t slot_count;
  uint32_t ctl_count;
  uint32_t reserved;
  uint64_t fifo_bytes;
  uint64_t dir_offset[2];
  uint64_t total_bytes;
};

/// Where everything lives; computed from the three counts on both sides.
struct Layout {
  uint64_t dir_offset[2];
  uint64_t slots_off;  ///< within a direction
  uint64_t ctl_off;
  uint64_t fifo_off;
  uint64_t dir_bytes;
  uint64_t total_bytes;
};

/// Layout for the given counts; false when a count is out of bounds or not a
/// power of two.
bool compute_layout(uint32_t slot_count, uint32_t ctl_count, uint64_t fifo_bytes, Layout &out) noexcept;

/// Check a header read from a segment of `file_bytes` bytes. Returns nullptr
/// when it is usable, else a static description of what is wrong.
const char *check_header(const SegmentHeader &h, uint64_t file_bytes) noexcept;

/// Placement of a `len`-byte piece in a fifo of `fifo_bytes` (a power of two)
/// whose producer/consumer position is `pos`: a piece never wraps, so when it
/// does not fit before the end it starts at offset 0 and the tail is skipped.
/// Both sides apply the same rule, so the offset is never transmitted.
struct FifoPlace {
  uint64_t offset;   ///< where the piece starts
  uint64_t advance;  ///< how far pos moves (padding + len)
};
inline FifoPlace fifo_place(uint64_t pos, uint64_t fifo_bytes, uint64_t len) noexcept {
  uint64_t at = pos & (fifo_bytes - 1);
  if (at + len <= fifo_bytes) return {at, len};
  return {0, (fifo_bytes - at) + len};
}

/// What the consumer knows when it decodes a data slot.
struct RxState {
  uint64_t fifo_bytes = 0;
  bool in_stream = false;         ///< a pipelined message is being received
  uint64_t stream_remaining = 0;  ///< its bytes still to come
};

/// A validated data-ring message.
struct Decoded {
  Kind kind = Kind::none;
  uint64_t tag = 0;
  uint64_t size = 0;     ///< message size (total for pipe_first)
  uint64_t len = 0;      ///< fifo piece length (eager, pipe_*)
  uint64_t addr = 0;     ///< rts_cma
  uint64_t cookie = 0;   ///< rts_cma, zero_copy, a resumed pipe_first; control: what it names
  uint64_t segment = 0;  ///< zero_copy: segment id, or allocation id when `device`
  uint64_t offset = 0;   ///< zero_copy
  bool device = false;   ///< zero_copy: kFlagDevice (a device allocation)
  bool resume = false;   ///< pipe_first: kFlagResume (a parked message, `cookie`)
  int64_t status = 0;    ///< ack: LF_OK or a negative lf_status_t
};

/// Validate a data slot against the consumer's state. nullptr when the slot
/// is well formed (then `out` is filled), else a static description.
/// Guarantees on success: inline size <= 40; eager/pipe len in [1, fifo]
/// (eager: len == size; pipe_next: len <= stream_remaining; pipe_first: len <=
/// size); sizes <= kMaxMessage; stream kinds only where the stream state allows.
const char *decode_data(const SlotImage &s, const RxState &st, Decoded &out) noexcept;

/// Validate a control slot (ack, release, park, cut, resume). Cookie ranges
/// are the table's business (check_cookie); a cut's count (`len`) is in
/// [1, kMaxSlots].
const char *decode_control(const SlotImage &s, Decoded &out) noexcept;

/// Cookie = generation << 32 | index into the sender's in-flight table. The
/// index is range-checked here before the table is touched; the generation
/// then tells a live entry from a stale or forged one.
inline bool cookie_index_in_range(uint64_t cookie, size_t table_size) noexcept {
  return (cookie & 0xffffffffu) < table_size;
}

/// A zero-copy descriptor's range within a segment of `segment_bytes`:
/// nullptr when [offset, offset + length) lies inside it (overflow-safe).
const char *check_range(uint64_t segment_bytes, uint64_t offset, uint64_t length) noexcept;

/// First message of the connection handshake (connecting -> accepting rank).
struct Hello {
  uint64_t magic;
  uint32_t version;
  int32_t from_rank;
  int32_t to_rank;
  uint32_t reserved;
  uint64_t probe_addr;  ///< where the accepting rank may test process_vm_readv
  uint64_t probe_value;
};

/// Reply with the segment fd (accepting -> connecting rank).
struct Reply {
  uint64_t magic;
  uint32_t version;
  int32_t from_rank;
  int32_t status;         ///< 0, or an lf_status_t refusing the connection
  uint32_t can_read_you;  ///< 1: the accepting rank read the probe with process_vm_readv
  uint64_t segment_bytes;
  uint64_t probe_addr;
  uint64_t probe_value;
};

/// Last handshake message (connecting -> accepting rank).
struct Final {
  uint64_t magic;
  uint32_t can_read_you;
  uint32_t reserved;
};

/// Accompanies each segment fd sent for zero copy. With magic
/// gpu_ipc::kDeviceMagic it announces a device allocation instead:
/// segment_id is the allocation id, segment_bytes the size of the
/// gpu_ipc::Record that follows in the same message, and the fd (Vulkan
/// OPAQUE_FD) is optional (CUDA IPC handles travel in the record).
struct SegmentAnnounce {
  uint64_t magic;
  uint64_t segment_id;
  uint64_t segment_bytes;
};

}  // namespace lf::shm
