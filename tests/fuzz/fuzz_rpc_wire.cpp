// libFuzzer target for the request channel's wire format (src/rpc/wire.hpp):
// decode() over arbitrary received bytes.
//
// Checked for every input: an accepted message's views lie inside the input
// and add up to its size exactly; a request has a method, a cancel has no
// body, only a response carries a status; re-encoding the accepted prefix
// gives back the bytes read; a rejection always has a reason.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_rpc_wire && build-fuzz/tests/fuzz/fuzz_rpc_wire -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "rpc/wire.hpp"

using namespace lf::rpc;

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) {    \
      std::abort();   \
    }                 \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Message m;
  const char *why = decode(data, size, m);
  if (why) {
    REQUIRE(std::strlen(why) > 0);
    return 0;
  }
  const Prefix &p = m.prefix;
  const uint8_t *end = data + size;
  REQUIRE(size >= kPrefixSize);
  REQUIRE(reinterpret_cast<const uint8_t *>(m.method.data()) == data + kPrefixSize);
  REQUIRE(m.method.size() == p.method_len && p.method_len <= kMaxMethod);
  REQUIRE(m.header == data + kPrefixSize + p.method_len && p.header_len <= kMaxHeader);
  REQUIRE(m.payload == m.header + p.header_len);
  REQUIRE(m.payload + p.payload_len == end);
  REQUIRE(p.kind != Kind::request || p.method_len > 0);
  REQUIRE(p.kind != Kind::cancel || (p.header_len == 0 && p.payload_len == 0));
  REQUIRE(p.kind == Kind::response || p.status == 0);
  REQUIRE(p.remaining_ns >= 0);
  REQUIRE(std::memchr(m.method.data(), 0, m.method.size()) == nullptr);
  uint8_t again[kPrefixSize];
  encode_prefix(p, again);
  REQUIRE(std::memcmp(again, data, kPrefixSize) == 0);
  return 0;
}
