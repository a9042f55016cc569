// libFuzzer target for the ucx transport's active-message header
// (src/transport/ucx/ucx_wire.hpp): the decoder the worker's handler runs on
// every message a peer sends, and the sequence rule that orders them.
//
// Input: byte 0 picks the world size (1..256), byte 1 the payload length the
// message claims to carry (0 or not), bytes 2..3 how many of the rest are
// the header (any length, so short and long headers are tried); what follows
// the header is read as a stream of 8-byte sequence numbers for one channel.
// Checked: a header is accepted only with valid fixed fields, and then
// re-encodes to exactly the bytes read (no field ignored); a refusal comes
// with a text and leaves the output untouched; the sequence rule delivers
// each number once, in order, and never holds one too far ahead.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_ucx_header && build-fuzz/tests/fuzz/fuzz_ucx_header -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>

#include "transport/ucx/ucx_wire.hpp"

using namespace lf::ucx;

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) {    \
      std::abort();   \
    }                 \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4) return 0;
  const uint32_t world = 1u + data[0];
  const size_t payload = data[1] & 1 ? data[1] : 0;
  size_t hlen = static_cast<size_t>(data[2]) | static_cast<size_t>(data[3] & 0x3f) << 8;
  data += 4, size -= 4;
  if (hlen > size) hlen = size;

  Header h{MsgType::data, 0xdead, 0xbeef, 0x1234, 0x5678};
  const Header sentinel = h;
  const char *why = decode_header(hlen ? data : nullptr, hlen, payload, world, &h);
  if (why) {
    REQUIRE(std::strlen(why) > 0);
    REQUIRE(h.rank == sentinel.rank && h.channel == sentinel.channel && h.seq == sentinel.seq && h.tag == sentinel.tag);
  } else {
    REQUIRE(hlen == kHeaderSize);
    REQUIRE(h.rank < world);
    REQUIRE(h.type == MsgType::data || (h.type == MsgType::bye && payload == 0 && h.tag == 0));
    unsigned char again[kHeaderSize];
    encode_header(h, again);
    REQUIRE(std::memcmp(again, data, kHeaderSize) == 0);
  }

  // The rest: sequence numbers of one channel, as arrivals in any order.
  data += hlen, size -= hlen;
  uint64_t next = 0;
  std::set<uint64_t> held;
  for (; size >= 8; data += 8, size -= 8) {
    uint64_t seq;
    std::memcpy(&seq, data, 8);
    seq %= 4 * kMaxReorder;  // near enough to exercise every verdict
    switch (check_sequence(next, seq)) {
      case SeqVerdict::deliver:
        REQUIRE(seq == next);
        ++next;
        while (!held.empty() && *held.begin() == next) {
          held.erase(held.begin());
          ++next;
        }
        break;
      case SeqVerdict::hold:
        REQUIRE(seq > next && seq - next <= kMaxReorder);
        held.insert(seq);  // a second copy is the endpoint's protocol error
        break;
      case SeqVerdict::duplicate: REQUIRE(seq < next); break;
      case SeqVerdict::too_far: REQUIRE(seq > next + kMaxReorder); break;
    }
    REQUIRE(held.empty() || *held.begin() > next);
  }
  return 0;
}
