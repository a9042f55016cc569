// The ucx transport's wire format: the header of each active message.
//
// Every message between two channels is one UCX active message (id kAmId)
// whose header is these 40 bytes (little-endian) and whose data is the
// payload:
//
//   0  u32 magic "LFU" + version      16  u64 sequence (per channel and direction, from 0)
//   4  u8  type (data, bye), 3 zeros  24  u64 tag (data; 0 for bye)
//   8  u32 sender's rank              32  u64 job token
//  12  u32 channel index (the n-th channel between the two ranks)
//
// The job token is derived from the job key (job_token()): a process that
// can reach a worker's address but does not hold the key cannot make up a
// message the worker takes. It is the same for the whole job and travels in
// clear, so it keeps out strangers, not someone who can read the traffic
// (UCX over tcp is not encrypted; see docs/threading-and-security.md).
//
// lavaflow's 64-bit tags do not fit in a UCX tag next to a source and a
// channel id, hence active messages; the sequence number restores the send
// order should UCX deliver two messages of a channel out of order, and
// makes a duplicate or a gap a protocol error. "bye" is the sender's orderly
// close: the receiver delivers what came before it, then reports the peer
// gone. Decoding is pure (no UCX, no allocation), so it is fuzzed alone
// (tests/fuzz/fuzz_ucx_header.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lf::ucx {

constexpr unsigned kAmId = 7;
constexpr size_t kHeaderSize = 40;
constexpr uint32_t kMagic = 0x55464c02;  // "\x02LFU" read little-endian: version 2
/// How far ahead of the next expected sequence number a message may be
/// before the gap is a protocol error rather than reordering.
constexpr uint64_t kMaxReorder = uint64_t{1} << 16;

enum class MsgType : uint8_t { data = 1, bye = 2 };

struct Header {
  MsgType type = MsgType::data;
  uint32_t rank = 0;
  uint32_t channel = 0;
  uint64_t seq = 0;
  uint64_t tag = 0;
  uint64_t token = 0;
};

/// Write `h` as kHeaderSize bytes at `out`.
void encode_header(const Header &h, unsigned char *out) noexcept;

/// Read a header of `n` bytes that came with `payload` bytes of data, from a
/// world of `world_size` ranks. Returns nullptr and fills `*h`, or a static
/// text saying what is wrong (then `*h` is untouched).
const char *decode_header(const void *p, size_t n, size_t payload, uint32_t world_size, Header *h) noexcept;

/// The sender's rank and channel of a header that failed decode_header,
/// when it is long enough to name them: the channel then fails with a
/// protocol error instead of the message vanishing. False otherwise.
bool peek_route(const void *p, size_t n, uint32_t *rank, uint32_t *channel) noexcept;

/// What to do with message `seq` when `next` is the next one due.
enum class SeqVerdict { deliver, hold, duplicate, too_far };
inline SeqVerdict check_sequence(uint64_t next, uint64_t seq) noexcept {
  if (seq == next) return SeqVerdict::deliver;
  if (seq < next) return SeqVerdict::duplicate;
  return seq - next > kMaxReorder ? SeqVerdict::too_far : SeqVerdict::hold;
}

}  // namespace lf::ucx
