// The request channel's wire format (docs/rpc.md). Every rpc message is one
// channel message on the tag kRpcTag:
//
//   [ 40-byte prefix | method name | user header | payload ]
//
//   prefix: u32 magic "LFRP", u8 version, u8 kind, u16 method_len,
//           u32 header_len, i32 status, u64 id, i64 remaining_ns,
//           u64 payload_len (little-endian, as the host: both ends are
//           lavaflow on the same ABI; the magic catches a mismatch)
//
// A request carries the method, the caller's header and payload, and the
// deadline as remaining nanoseconds (0: none), so clocks need not agree. A
// cancel names a request id. A response carries the handler's status, its
// header (for an error: the error text) and payload. The prefix, method and
// header are copied into one small block; the payload travels as the second
// piece of a gather send, never copied by the rpc layer.
//
// decode() is a pure function over received bytes (the fuzz target drives
// it): every length is checked against what arrived before anything points
// into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lf::rpc {

/// Channel tag of every rpc message: one tag keeps a cancel behind its request.
inline constexpr uint64_t kRpcTag = 0x4c46525043000001ull;  // "LFRPC", 1
inline constexpr uint32_t kMagic = 0x5052464c;              // "LFRP"
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kPrefixSize = 40;
inline constexpr size_t kMaxMethod = 255;
inline constexpr size_t kMaxHeader = size_t{1} << 20;

enum class Kind : uint8_t { request = 1, cancel = 2, response = 3 };

struct Prefix {
  Kind kind = Kind::request;
  uint16_t method_len = 0;
  uint32_t header_len = 0;
  int32_t status = 0;
  uint64_t id = 0;
  int64_t remaining_ns = 0;
  uint64_t payload_len = 0;
};

/// Write `p` into out[0..kPrefixSize).
void encode_prefix(const Prefix &p, uint8_t *out) noexcept;

/// A decoded message: views into the received bytes.
struct Message {
  Prefix prefix;
  std::string_view method;
  const uint8_t *header = nullptr;
  const uint8_t *payload = nullptr;
};

/// Decode `n` received bytes. nullptr on success, else why the message is
/// malformed (the peer is then broken: LF_ERR_PROTOCOL).
const char *decode(const uint8_t *data, size_t n, Message &out) noexcept;

}  // namespace lf::rpc
