// libFuzzer target for the handshake of channels by address
// (src/channel/dial_wire.hpp): the three fixed-size decoders over arbitrary
// bytes. Byte 0 picks the message; the rest is the message (zero-padded).
//
// Checked: an accepted message re-encodes to exactly the bytes read (no
// field ignored), flags and statuses are within what the protocol allows,
// and a rejection always has a reason.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_dial_wire && build-fuzz/tests/fuzz/fuzz_dial_wire -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "channel/dial_wire.hpp"

using namespace lf::dial;

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) {    \
      std::abort();   \
    }                 \
  } while (0)

template <class M, size_t N>
void check(const uint8_t *data, size_t size) {
  uint8_t in[N] = {};
  std::memcpy(in, data, size < N ? size : N);
  M m;
  if (const char *why = decode(in, m)) {
    REQUIRE(std::strlen(why) > 0);
    return;
  }
  uint8_t again[N];
  encode(m, again);
  REQUIRE(std::memcmp(in, again, N) == 0);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  switch (data[0] % 3) {
    case 0: check<ServerHello, kServerHelloSize>(data + 1, size - 1); break;
    case 1: check<ClientHello, kClientHelloSize>(data + 1, size - 1); break;
    default: check<Verdict, kVerdictSize>(data + 1, size - 1); break;
  }
  ServerHello sh;
  uint8_t in[kServerHelloSize] = {};
  std::memcpy(in, data, size < sizeof in ? size : sizeof in);
  if (!decode(in, sh)) REQUIRE((sh.flags & ~kFlagTokenRequired) == 0);
  Verdict v;
  uint8_t vin[kVerdictSize] = {};
  std::memcpy(vin, data, size < sizeof vin ? size : sizeof vin);
  if (!decode(vin, v)) REQUIRE(v.status <= 0);
  return 0;
}
