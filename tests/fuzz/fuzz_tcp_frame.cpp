// libFuzzer target for the tcp transport's wire format (frame.hpp): the
// same FrameReader the endpoint drives, fed an arbitrary byte stream in
// arbitrary pieces, the way recv() would deliver it; and the handshake
// decoder (hello/ack) that reads a connection's first bytes.
//
// Input: byte 0 picks the receiver's LF_TCP_MAX_MESSAGE (tiny to huge; with
// its top bit set, the handshake decoder instead), byte 1 seeds the sizes
// of the pieces; the rest is the stream.
// Handshake: a message is accepted only with valid fixed fields, and then
// re-encodes to exactly the bytes read (no field is ignored).
// Checked on every step: a header is only parsed between frames, an accepted
// header respects the limit and the sequence, payload accounting never goes
// negative or past the input, a failure is final, and the error text exists.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_tcp_frame && build-fuzz/tests/fuzz/fuzz_tcp_frame -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "transport/tcp/frame.hpp"

using namespace lf::tcp;

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) {    \
      std::abort();   \
    }                 \
  } while (0)

namespace {

void fuzz_handshake(const uint8_t *data, size_t size) {
  // A connection's first kHandshakeSize bytes, as the listener reads them.
  uint8_t in[kHandshakeSize] = {};
  std::memcpy(in, data, size < kHandshakeSize ? size : kHandshakeSize);
  Handshake h;
  const char *why = decode_handshake(in, &h);
  if (why) {
    REQUIRE(why[0] != '\0');
    return;
  }
  REQUIRE(h.kind == HandshakeKind::hello || h.kind == HandshakeKind::ack);
  uint8_t again[kHandshakeSize];
  encode_handshake(h, again);
  REQUIRE(std::memcmp(again, in, kHandshakeSize) == 0);
  // The proof covers direction, ranks, channel and both nonces: changing
  // any of them changes the message.
  auto m = proof_message(h.kind, h.from, h.to, h.seq, h.nonce, h.nonce);
  auto other = proof_message(h.kind == HandshakeKind::hello ? HandshakeKind::ack : HandshakeKind::hello, h.from, h.to,
                             h.seq, h.nonce, h.nonce);
  REQUIRE(m != other);
  auto seq = proof_message(h.kind, h.from, h.to, h.seq + 1, h.nonce, h.nonce);
  REQUIRE(m != seq);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  if (data[0] & 0x80) {
    fuzz_handshake(data + 2, size - 2);
    return 0;
  }
  static const uint64_t limits[] = {0, 1, 31, 4096, uint64_t{1} << 20, uint64_t{16} << 30, ~uint64_t{0}};
  const uint64_t max_len = limits[data[0] % (sizeof limits / sizeof limits[0])];
  uint32_t rng = data[1] * 2654435761u + 1;
  data += 2;
  size -= 2;

  // The endpoint keeps unparsed bytes in a staging buffer; model it.
  uint8_t stage[kFrameHeaderSize * 2];
  size_t staged = 0, pos = 0;
  uint64_t payload_total = 0, frames = 0;
  FrameReader rd(max_len);
  while (pos < size || staged >= kFrameHeaderSize) {
    // Next piece "arrives": 1..64 bytes, like short reads from a socket.
    rng = rng * 1103515245u + 12345u;
    size_t piece = 1 + (rng >> 16) % 64;
    if (rd.in_payload()) {
      // Payload bytes go straight to their destination.
      uint64_t take = staged ? staged : piece;
      if (take > rd.payload_left()) take = rd.payload_left();
      if (!staged && take > size - pos) take = size - pos;
      if (take == 0) break;
      uint64_t before = rd.payload_left();
      rd.consume_payload(take);
      REQUIRE(rd.payload_left() == before - take);
      payload_total += take;
      if (staged) {
        std::memmove(stage, stage + take, staged - take);
        staged -= static_cast<size_t>(take);
      } else {
        pos += static_cast<size_t>(take);
      }
      continue;
    }
    if (staged < kFrameHeaderSize) {
      size_t room = sizeof stage - staged;
      size_t n = piece < room ? piece : room;
      if (n > size - pos) n = size - pos;
      if (n == 0) break;
      std::memcpy(stage + staged, data + pos, n);
      staged += n;
      pos += n;
    }
    DecodeResult r = rd.next_header(stage, staged);
    if (r.status == DecodeStatus::need_more) {
      REQUIRE(staged < kFrameHeaderSize);
      continue;
    }
    if (r.status == DecodeStatus::malformed) {
      REQUIRE(r.error != nullptr && r.error[0] != '\0');
      REQUIRE(rd.failed());
      // Final: nothing parses after a failure.
      DecodeResult again = rd.next_header(stage, staged);
      REQUIRE(again.status == DecodeStatus::malformed);
      break;
    }
    REQUIRE(r.status == DecodeStatus::ok);
    REQUIRE(r.header.seq == frames);
    REQUIRE(r.header.type == FrameType::data || r.header.type == FrameType::bye);
    if (r.header.type == FrameType::data) REQUIRE(r.header.length <= max_len);
    if (r.header.type == FrameType::bye) REQUIRE(r.header.length == 0 && r.header.tag == 0);
    REQUIRE(rd.payload_left() == r.header.length);
    ++frames;
    // Every field was checked: re-encoding gives back exactly the bytes read.
    uint8_t again[kFrameHeaderSize];
    encode_frame_header(r.header, again);
    REQUIRE(std::memcmp(again, stage, kFrameHeaderSize) == 0);
    std::memmove(stage, stage + kFrameHeaderSize, staged - kFrameHeaderSize);
    staged -= kFrameHeaderSize;
  }
  REQUIRE(payload_total + frames * kFrameHeaderSize <= size);
  return 0;
}
