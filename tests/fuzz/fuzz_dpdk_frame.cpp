// libFuzzer target for the dpdk transport's frame (src/transport/dpdk/
// dpdk_frame.hpp): the decoder the poller runs on every frame a port
// receives, and the sequence rule the receive window applies.
//
// Input: byte 0 picks the world size (1..256), byte 1 the receive window
// (1..64 frames); then two bytes give how many of the rest are one frame
// (any length, so short, exact and padded frames are tried); what follows
// the frame is read as a stream of 2-byte sequence offsets arriving at a
// receiver, with duplicates, gaps and reordering.
// Checked: a frame is accepted only with valid fixed fields, and then
// re-encodes to exactly the header bytes read (no field ignored) with its
// payload inside the frame; a refusal comes with a text and leaves the
// output untouched; a receiver that follows classify_seq (hold what is
// ahead, drop duplicates and what lies beyond the window) delivers every
// sequence number once, in order, and never holds more than its window.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_dpdk_frame && build-fuzz/tests/fuzz/fuzz_dpdk_frame -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "transport/dpdk/dpdk_frame.hpp"

using namespace lf::dpdk;

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) {    \
      std::abort();   \
    }                 \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4) return 0;
  const uint32_t world = 1u + data[0];
  const uint32_t window = 1u + data[1] % 64;
  size_t flen = static_cast<size_t>(data[2]) | static_cast<size_t>(data[3]) << 8;
  data += 4, size -= 4;
  if (flen > size) flen = size;

  // The decoder reads at least kFrameOverhead bytes: give it a copy that
  // long, so that a short frame is refused for its length, not read past.
  std::vector<uint8_t> frame(data, data + flen);
  frame.resize(std::max(flen, kFrameOverhead));
  FrameHeader h;
  h.seq = 0x5eed;
  Mac src;
  const char *why = decode_frame(frame.data(), flen, world, &h, &src);
  if (why) {
    REQUIRE(std::strlen(why) > 0);
    REQUIRE(h.seq == 0x5eed);
  } else {
    REQUIRE(flen >= kFrameOverhead);
    REQUIRE(kFrameOverhead + h.len <= flen);
    REQUIRE(h.src_rank < world && h.dst_rank < world && h.src_rank != h.dst_rank);
    REQUIRE(h.type == FrameType::data || h.type == FrameType::ack || h.type == FrameType::fin);
    if (h.type != FrameType::data) REQUIRE(h.len == 0 && h.tag == 0 && h.msg_len == 0);
    if (h.type == FrameType::data && (h.flags & kFirst)) REQUIRE(h.len <= h.msg_len && h.msg_len <= kMaxMessage);
    Mac dst;
    std::memcpy(dst.b, frame.data(), 6);
    uint8_t again[kFrameOverhead];
    encode_frame(again, dst, src, h);
    REQUIRE(std::memcmp(again, frame.data(), kFrameOverhead) == 0);
  }

  // A receiver's window: sequence numbers from near the wrap, as offsets.
  const uint32_t base = 0xffffff00u;
  uint32_t next = base;
  std::vector<bool> held(window, false);
  uint32_t nheld = 0;
  for (size_t i = flen; i + 2 <= size; i += 2) {
    const uint32_t seq = base + (static_cast<uint32_t>(data[i]) | static_cast<uint32_t>(data[i + 1] & 0x03) << 8);
    switch (classify_seq(seq, next, window)) {
      case SeqClass::in_order:
        REQUIRE(seq == next);
        ++next;
        while (held[next % window]) {
          held[next % window] = false;
          --nheld;
          ++next;
        }
        break;
      case SeqClass::ahead:
        REQUIRE(seq != next && seq - next < window);
        if (!held[seq % window]) {
          held[seq % window] = true;
          ++nheld;
        }
        break;
      case SeqClass::duplicate: REQUIRE(seq_before(seq, next)); break;
      case SeqClass::beyond: REQUIRE(seq - next >= window); break;
    }
    REQUIRE(nheld < window);
    REQUIRE(!held[next % window]);
  }
  return 0;
}
