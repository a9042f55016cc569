// libFuzzer target for what the collectives' messages carry
// (src/coll/wire.hpp): the tag (kind, signature, sequence number), the
// verdict on a message that arrives while a collective waits, the mismatch
// report built from a peer's tag, and the hello a new group's members
// exchange, over arbitrary bytes.
//
// Checked: tags round-trip and never set bit 63; a message is accepted only
// with exactly the expected tag and size, and "the next collective" only for
// the following sequence number; a mismatch report is never empty whatever
// the peer's tag holds; a hello is accepted only when it encodes exactly the
// group, size and sender expected, and a hello that does is accepted.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_coll_wire && build-fuzz/tests/fuzz/fuzz_coll_wire -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "coll/wire.hpp"

using namespace lf::coll;

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) {    \
      std::abort();   \
    }                 \
  } while (0)

namespace {

uint64_t take64(const uint8_t *&p, size_t &n) {
  uint64_t v = 0;
  for (int i = 0; i < 8 && n; ++i, ++p, --n) v |= uint64_t(*p) << (8 * i);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *p = data;
  size_t n = size;
  const uint64_t tag = take64(p, n), expected = take64(p, n), sizes = take64(p, n), group = take64(p, n);
  const size_t want = static_cast<size_t>(sizes & 0xffffffff), got = static_cast<size_t>(sizes >> 32);

  // Tags: fields round-trip, bit 63 stays clear.
  wire::TagFields f = wire::parse_tag(tag);
  REQUIRE(f.kind <= 7 && f.signature <= 0x0fffffffu);
  uint64_t again = wire::make_tag(static_cast<Kind>(f.kind), f.signature, f.seq);
  REQUIRE(again == (tag & ~(uint64_t(1) << 63)));

  // Verdicts.
  wire::Verdict v = wire::classify(expected, tag, want, got);
  if (v == wire::Verdict::ok) REQUIRE(tag == expected && want == got);
  if (tag == expected && want == got) REQUIRE(v == wire::Verdict::ok);
  if (v == wire::Verdict::later) REQUIRE(static_cast<uint32_t>(tag) == static_cast<uint32_t>(expected) + 1u);

  // Mismatch reports name something whatever the peer's tag holds.
  std::string m = wire::describe_mismatch(static_cast<int>(sizes & 0xff), tag, got, expected, want);
  REQUIRE(!m.empty() && m.size() < 1024);

  // Signatures fit their 28 bits.
  uint32_t sig = wire::signature(static_cast<Kind>(f.kind), expected, static_cast<lf_dtype_t>(sizes & 0x7),
                                 static_cast<lf_op_t>((sizes >> 8) & 0x3), static_cast<int>(sizes >> 16),
                                 static_cast<int>(want & 0xff), group);
  REQUIRE(sig <= 0x0fffffffu);

  // Hellos: the rest of the input is one, checked against the group, size
  // and sender the fuzzer picked.
  const int gsize = static_cast<int>(want & 0x3f), from = static_cast<int>(got & 0x3f);
  std::string why;
  bool ok = wire::check_hello(p, n, group, gsize, from, why);
  if (ok) {
    REQUIRE(n == wire::kHelloBytes);
    unsigned char enc[wire::kHelloBytes];
    wire::encode_hello(wire::Hello{group, static_cast<uint32_t>(gsize), static_cast<uint32_t>(from)}, enc);
    REQUIRE(std::memcmp(enc, p, wire::kHelloBytes) == 0);
  } else {
    REQUIRE(!why.empty());
  }
  unsigned char enc[wire::kHelloBytes];
  wire::encode_hello(wire::Hello{group, static_cast<uint32_t>(gsize), static_cast<uint32_t>(from)}, enc);
  why.clear();
  REQUIRE(wire::check_hello(enc, sizeof enc, group, gsize, from, why));
  return 0;
}
