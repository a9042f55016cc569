// The TCP transport's wire format (framing role), as pure functions with no
// I/O so that the decoders can be unit-tested and fuzzed
// (tests/fuzz/fuzz_tcp_frame.cpp): the handshake that opens a connection and
// the frames that follow it.
//
// Handshake. The dialler's first bytes are a hello, and the acceptor's first
// bytes (sent lazily, just before its first frame) are an ack; both are
// kHandshakeSize bytes, little-endian:
//
//   offset size field
//        0    4 magic     "LFTH" (0x4854464c)
//        4    2 version   kHandshakeVersion
//        6    2 kind      HandshakeKind (hello or ack)
//        8    4 from      rank of the sender of this message
//       12    4 to        rank it is meant for
//       16    4 seq       the channel's number between the pair
//       20    4 reserved  must be 0
//       24   16 nonce     hello: the connector's fresh nonce; ack: the
//                         acceptor's nonce (published with its address)
//       40   32 proof     HMAC-SHA256 under the job key of proof_message()
//

// A connection carries a sequence of frames. Every frame starts with a
// 32-byte header, all fields little-endian:
//
//   offset size field
//        0    4 magic     "LFTF" (0x4654464c)
//        4    1 version   kFrameVersion
//        5    1 type      FrameType (data or bye)
//        6    2 flags     must be 0 (no flags are defined yet)
//        8    4 seq       frame number on this connection, from 0, +1 per frame
//       12    4 reserved  must be 0
//       16    8 tag       the lavaflow tag of a data frame (0 for bye)
//       24    8 length    payload bytes that follow (0 for bye)
//
// Every field is checked before the receiver acts on the header, and in
// particular before it allocates anything: a length above the receiver's
// limit (LF_TCP_MAX_MESSAGE), an unknown type, a flag, a wrong sequence
// number or a non-zero reserved word makes the stream malformed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace lf::tcp {

inline constexpr uint32_t kFrameMagic = 0x4654464c;  // "LFTF" read as little-endian bytes
inline constexpr uint8_t kFrameVersion = 1;
inline constexpr size_t kFrameHeaderSize = 32;

inline constexpr uint32_t kHandshakeMagic = 0x4854464c;  // "LFTH"
inline constexpr uint16_t kHandshakeVersion = 2;
inline constexpr size_t kHandshakeSize = 72;
inline constexpr size_t kNonceSize = 16;
inline constexpr size_t kProofSize = 32;
using HandshakeNonce = std::array<uint8_t, kNonceSize>;

enum class HandshakeKind : uint16_t {
  hello = 1,  ///< connector -> acceptor, the connection's first bytes.
  ack = 2,    ///< acceptor -> connector, before the acceptor's first frame.
};

struct Handshake {
  HandshakeKind kind = HandshakeKind::hello;
  uint32_t from = 0, to = 0, seq = 0;
  HandshakeNonce nonce{};
  std::array<uint8_t, kProofSize> proof{};
};

void encode_handshake(const Handshake &h, uint8_t out[kHandshakeSize]) noexcept;
/// Check the fixed fields of a handshake message (magic, version, kind,
/// reserved); nullptr when they are valid (the proof is checked by the
/// caller, who holds the key), else a static reason.
const char *decode_handshake(const uint8_t in[kHandshakeSize], Handshake *out) noexcept;

inline constexpr size_t kProofMessageSize = 8 + 12 + 2 * kNonceSize;
/// What a proof covers: a label for its direction, the connector's and the
/// acceptor's ranks, the channel number, the acceptor's nonce and the
/// connector's nonce. A hello's proof cannot be replayed as an ack.
std::array<uint8_t, kProofMessageSize> proof_message(HandshakeKind kind, uint32_t connector, uint32_t acceptor,
                                                     uint32_t seq, const HandshakeNonce &acceptor_nonce,
                                                     const HandshakeNonce &connector_nonce) noexcept;

enum class FrameType : uint8_t {
  data = 1,  ///< A message: `length` payload bytes follow.
  bye = 2,   ///< The sender closed its channel in an orderly way; nothing follows.
};

struct FrameHeader {
  FrameType type = FrameType::data;
  uint32_t seq = 0;
  uint64_t tag = 0;
  uint64_t length = 0;
};

/// Write `h` (with magic, version, zero flags) into `out`.
void encode_frame_header(const FrameHeader &h, uint8_t out[kFrameHeaderSize]) noexcept;

enum class DecodeStatus {
  need_more,  ///< Fewer than kFrameHeaderSize bytes available.
  ok,         ///< `header` is valid.
  malformed,  ///< `error` says why; the stream cannot be trusted any more.
};

struct DecodeResult {
  DecodeStatus status = DecodeStatus::need_more;
  FrameHeader header;
  const char *error = nullptr;  ///< Static text when malformed.
};

/// Check and decode the header at the start of `bytes` (`n` available).
/// `expected_seq` is the number the next frame must carry; `max_length` the
/// largest payload this receiver accepts.
DecodeResult decode_frame_header(const uint8_t *bytes, size_t n, uint32_t expected_seq, uint64_t max_length) noexcept;

/// The receive side's framing state: between frames (expecting a header) or
/// inside a payload with some bytes still to come. The endpoint owns where
/// payload bytes go; this only tracks how many belong to the current frame,
/// so the same code is driven by the endpoint and by the fuzzer.
class FrameReader {
 public:
  explicit FrameReader(uint64_t max_length) noexcept : max_length_(max_length) {}

  /// True while payload bytes of the current frame are still to come.
  bool in_payload() const noexcept { return left_ > 0; }
  /// Payload bytes of the current frame not yet consumed.
  uint64_t payload_left() const noexcept { return left_; }
  /// The header of the current (or last) frame.
  const FrameHeader &current() const noexcept { return current_; }
  /// True once a malformed header was seen; nothing more may be parsed.
  bool failed() const noexcept { return failed_; }

  /// Between frames: parse the next header from [bytes, bytes + n). On ok,
  /// the caller has consumed kFrameHeaderSize bytes and the reader is inside
  /// the frame's payload (unless it is empty). Must not be called in_payload().
  DecodeResult next_header(const uint8_t *bytes, size_t n) noexcept;

  /// Record that `n` payload bytes (n <= payload_left()) were consumed.
  void consume_payload(uint64_t n) noexcept { left_ -= n <= left_ ? n : left_; }

 private:
  uint64_t max_length_;
  uint64_t left_ = 0;
  uint32_t seq_ = 0;
  bool failed_ = false;
  FrameHeader current_;
};

}  // namespace lf::tcp
