// The dpdk transport's frame: an Ethernet frame under lavaflow's own
// EtherType, a fixed 64-byte header, then up to one MTU of one message.
//
//   Ethernet  dst mac (6) | src mac (6) | EtherType 0x88B5 (2, big-endian)
//   header    magic "LF" | version | type | flags | 0 | payload length (2)
//             src rank | dst rank | src epoch | dst epoch | channel
//             seq | ack | window (4 each) | sack (8) | tag (8) | message length (8)
//   payload   `payload length` bytes of the message (trailing padding ignored)
//
// Header fields are little-endian. Every frame carries the sender's receive
// state (ack: the next sequence number it expects; window: how many frames
// from ack it accepts; sack: bit i set when ack + 1 + i has arrived), so
// data frames piggyback acknowledgements. A message is one run of data
// frames, the first flagged kFirst (carrying tag and message length), the
// last kLast. Epochs are drawn per context: a frame from an earlier context
// of the same ranks, or meant for one, is not this context's.
//
// Pure code (no DPDK), so that the fuzzer (tests/fuzz/fuzz_dpdk_frame.cpp)
// drives exactly what the receive path runs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lf::dpdk {

/// IEEE Std 802 "local experimental EtherType 1": never routed, never
/// claimed by a protocol a host stack would parse.
constexpr uint16_t kEtherType = 0x88B5;
constexpr size_t kEthHeaderSize = 14;
constexpr size_t kHeaderSize = 64;
constexpr size_t kFrameOverhead = kEthHeaderSize + kHeaderSize;
constexpr uint16_t kMagic = 0x464c;  // "LF" read little-endian
constexpr uint8_t kVersion = 1;
/// Largest message a header may announce (the C API refuses larger sends).
constexpr uint64_t kMaxMessage = uint64_t{1} << 46;

enum class FrameType : uint8_t {
  data = 1,  ///< a fragment of a message
  ack = 2,   ///< receive state only (kAckReq: the peer must answer)
  fin = 3,   ///< the sender closed the channel; seq = its next unsent seq
};

enum FrameFlags : uint8_t {
  kFirst = 1,   ///< first fragment of a message: tag and msg_len are valid
  kLast = 2,    ///< last fragment of a message
  kAckReq = 4,  ///< answer with an ack now (a probe of a shut window)
};

struct Mac {
  uint8_t b[6] = {};
  bool operator==(const Mac &) const = default;
};

struct FrameHeader {
  FrameType type = FrameType::data;
  uint8_t flags = 0;
  uint16_t len = 0;  ///< payload bytes in this frame
  uint32_t src_rank = 0, dst_rank = 0;
  uint32_t src_epoch = 0, dst_epoch = 0;
  uint32_t channel = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint32_t window = 0;
  uint64_t sack = 0;
  uint64_t tag = 0;      ///< kFirst only
  uint64_t msg_len = 0;  ///< kFirst only
};

/// Write the Ethernet header and `h` to `out` (kFrameOverhead bytes).
void encode_frame(uint8_t *out, const Mac &dst, const Mac &src, const FrameHeader &h) noexcept;

/// Decode a frame of `n` bytes in all (Ethernet header included) whose
/// first kFrameOverhead bytes (at least; the header only is read) are at
/// `p`, from a world of `world` ranks. Returns nullptr and fills `out` when the frame is
/// well formed, else a reason (and leaves `out` untouched). The payload is
/// p[kFrameOverhead, kFrameOverhead + out->len).
const char *decode_frame(const uint8_t *p, size_t n, uint32_t world, FrameHeader *out, Mac *src = nullptr) noexcept;

/// Sequence numbers wrap: a before b when b - a, as signed 32 bits, is positive.
constexpr bool seq_before(uint32_t a, uint32_t b) noexcept { return static_cast<int32_t>(a - b) < 0; }

/// Where a data frame's seq falls for a receiver that expects `next` and
/// accepts `window` frames from it.
enum class SeqClass { in_order, ahead, duplicate, beyond };
constexpr SeqClass classify_seq(uint32_t seq, uint32_t next, uint32_t window) noexcept {
  if (seq == next) return window ? SeqClass::in_order : SeqClass::beyond;
  if (seq_before(seq, next)) return SeqClass::duplicate;
  return seq - next < window ? SeqClass::ahead : SeqClass::beyond;
}

}  // namespace lf::dpdk
