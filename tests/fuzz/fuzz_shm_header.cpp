// libFuzzer target for the shm wire-format validation (shm_protocol.hpp):
// whatever bytes a peer writes into a slot, a segment header or a zero-copy
// descriptor, a result the validators accept must only lead to in-bounds
// accesses. Accepted results are exercised against real buffers of the
// claimed sizes, so AddressSanitizer reports any out-of-bounds use.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_shm_header && build-fuzz/tests/fuzz/fuzz_shm_header -max_total_time=60
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "transport/shm/shm_protocol.hpp"

namespace shm = lf::shm;

namespace {

struct Reader {
  const uint8_t *p;
  size_t n;
  template <typename T>
  T get() {
    T v{};
    size_t k = n < sizeof v ? n : sizeof v;
    std::memcpy(&v, p, k);
    p += k;
    n -= k;
    return v;
  }
};

#define CHECK(cond)            \
  do {                         \
    if (!(cond)) std::abort(); \
  } while (0)

// Fifo sizes the fuzzer picks from: small enough to allocate for real.
constexpr uint64_t kFifos[] = {0, 4096, shm::kMinFifo, 1u << 17, 3u << 16 /* not a power of two */};

void data_slot(Reader &r) {
  shm::SlotImage s = r.get<shm::SlotImage>();
  const uint8_t flags = r.get<uint8_t>();
  shm::RxState st;
  st.fifo_bytes = kFifos[flags % std::size(kFifos)];
  st.in_stream = flags & 0x80;
  st.stream_remaining = r.get<uint64_t>();
  const uint64_t pos = r.get<uint64_t>();
  shm::Decoded d;
  if (shm::decode_data(s, st, d)) return;
  switch (d.kind) {
    case shm::Kind::inline_data: {
      CHECK(d.size <= shm::kInlineMax);
      unsigned char out[shm::kInlineMax];
      std::memcpy(out, s.body.bytes, d.size);  // what the endpoint copies
      break;
    }
    case shm::Kind::eager:
    case shm::Kind::pipe_first:
    case shm::Kind::pipe_next: {
      CHECK(d.len >= 1 && d.len <= st.fifo_bytes);
      if (d.kind == shm::Kind::pipe_next) CHECK(st.in_stream && d.len <= st.stream_remaining);
      if (d.kind == shm::Kind::eager) CHECK(d.len == d.size);
      if (d.kind != shm::Kind::pipe_first) CHECK(!d.resume);
      auto p = shm::fifo_place(pos, st.fifo_bytes, d.len);
      CHECK(p.offset + d.len <= st.fifo_bytes && p.advance >= d.len);
      std::vector<unsigned char> fifo(st.fifo_bytes), dst(d.len);
      std::memcpy(dst.data(), fifo.data() + p.offset, d.len);  // ASan checks the bounds
      break;
    }
    case shm::Kind::rts_cma: CHECK(d.size <= shm::kMaxMessage); break;
    case shm::Kind::zero_copy: CHECK(d.segment != 0 && d.size <= shm::kMaxMessage); break;
    default: std::abort();  // decode_data accepted a kind it does not know
  }
}

void control_slot(Reader &r) {
  shm::SlotImage s = r.get<shm::SlotImage>();
  const uint32_t table = r.get<uint16_t>();
  shm::Decoded d;
  if (shm::decode_control(s, d)) return;
  CHECK(d.kind == shm::Kind::ack || d.kind == shm::Kind::release || d.kind == shm::Kind::park ||
        d.kind == shm::Kind::cut || d.kind == shm::Kind::resume);
  if (d.kind == shm::Kind::ack) CHECK(d.status <= 0 && d.status >= -64);
  if (d.kind == shm::Kind::cut) CHECK(d.len >= 1 && d.len <= shm::kMaxSlots);
  if (!shm::cookie_index_in_range(d.cookie, table)) return;
  std::vector<uint32_t> gens(table);
  (void)gens.at(d.cookie & 0xffffffffu);
}

void header(Reader &r) {
  shm::SegmentHeader h = r.get<shm::SegmentHeader>();
  const uint64_t file = r.get<uint64_t>();
  if (shm::check_header(h, file)) return;
  shm::Layout l;
  CHECK(shm::compute_layout(h.slot_count, h.ctl_count, h.fifo_bytes, l));
  CHECK(l.total_bytes <= file);
  for (int dir = 0; dir < 2; ++dir) {
    CHECK(l.dir_offset[dir] + l.dir_bytes <= l.total_bytes);
    CHECK(l.fifo_off + h.fifo_bytes <= l.dir_bytes);
    CHECK(l.ctl_off + uint64_t{h.ctl_count} * shm::kSlotSize <= l.fifo_off);
  }
}

void descriptor(Reader &r) {
  const uint64_t seg = r.get<uint32_t>() % (1u << 20);
  const uint64_t off = r.get<uint64_t>(), len = r.get<uint64_t>();
  if (shm::check_range(seg, off, len)) return;
  CHECK(off <= seg && len <= seg - off);
  std::vector<unsigned char> segment(seg);
  if (len) std::memset(segment.data() + off, 0, len);  // the view the receiver would hand out
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  Reader r{data + 1, size - 1};
  switch (data[0] % 4) {
    case 0: data_slot(r); break;
    case 1: control_slot(r); break;
    case 2: header(r); break;
    case 3: descriptor(r); break;
  }
  return 0;
}
