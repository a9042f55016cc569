// The pure validation functions of the shm wire format (also fuzzed by
// tests/fuzz/fuzz_shm_header.cpp).
#include <gtest/gtest.h>

#include <cstring>

#include "transport/shm/shm_protocol.hpp"

namespace shm = lf::shm;

namespace {

shm::SlotImage slot(shm::Kind k, uint64_t tag, uint64_t size) {
  shm::SlotImage s;
  std::memset(&s, 0, sizeof s);
  s.kind = static_cast<uint8_t>(k);
  s.tag = tag;
  s.size = size;
  return s;
}

constexpr uint64_t kFifo = 1u << 20;

TEST(ShmProtocol, LayoutBounds) {
  shm::Layout l;
  EXPECT_TRUE(shm::compute_layout(1024, 256, kFifo, l));
  EXPECT_EQ(l.fifo_off % shm::kPage, 0u);
  EXPECT_GE(l.fifo_off, l.ctl_off + 256 * shm::kSlotSize);
  EXPECT_EQ(l.total_bytes, shm::kPage + 2 * l.dir_bytes);
  EXPECT_FALSE(shm::compute_layout(1000, 256, kFifo, l)) << "not a power of two";
  EXPECT_FALSE(shm::compute_layout(8, 256, kFifo, l)) << "too few slots";
  EXPECT_FALSE(shm::compute_layout(1024, 256, 4096, l)) << "fifo too small";
  EXPECT_FALSE(shm::compute_layout(1024, 256, uint64_t{1} << 40, l)) << "fifo too large";
}

TEST(ShmProtocol, HeaderChecks) {
  shm::Layout l;
  ASSERT_TRUE(shm::compute_layout(1024, 256, kFifo, l));
  shm::SegmentHeader h{shm::kSegmentMagic, shm::kVersion, 1024, 256, 0, kFifo, {l.dir_offset[0], l.dir_offset[1]},
                       l.total_bytes};
  EXPECT_EQ(shm::check_header(h, l.total_bytes), nullptr);
  EXPECT_NE(shm::check_header(h, l.total_bytes - 1), nullptr) << "file smaller than the layout";
  auto bad = h;
  bad.magic ^= 1;
  EXPECT_NE(shm::check_header(bad, l.total_bytes), nullptr);
  bad = h;
  bad.dir_offset[1] += 64;
  EXPECT_NE(shm::check_header(bad, l.total_bytes), nullptr);
  bad = h;
  bad.slot_count = 3;
  EXPECT_NE(shm::check_header(bad, l.total_bytes), nullptr);
}

TEST(ShmProtocol, FifoPlacementNeverWraps) {
  for (uint64_t pos : {uint64_t{0}, kFifo - 1, kFifo - 100, kFifo + 5, 3 * kFifo - 4096})
    for (uint64_t len : {uint64_t{1}, uint64_t{100}, uint64_t{4096}, kFifo / 2, kFifo}) {
      auto p = shm::fifo_place(pos, kFifo, len);
      EXPECT_LE(p.offset + len, kFifo) << pos << " " << len;
      EXPECT_GE(p.advance, len);
      EXPECT_LE(p.advance, kFifo + len);
    }
}

TEST(ShmProtocol, DecodeAcceptsWellFormed) {
  shm::RxState st{kFifo, false, 0};
  shm::Decoded d;
  EXPECT_EQ(shm::decode_data(slot(shm::Kind::inline_data, 7, 40), st, d), nullptr);
  EXPECT_EQ(d.tag, 7u);
  auto e = slot(shm::Kind::eager, 1, 1000);
  e.body.words[shm::kLen] = 1000;
  EXPECT_EQ(shm::decode_data(e, st, d), nullptr);
  auto p = slot(shm::Kind::pipe_first, 1, 10u << 20);
  p.body.words[shm::kLen] = 128u << 10;
  EXPECT_EQ(shm::decode_data(p, st, d), nullptr);
  auto z = slot(shm::Kind::zero_copy, 1, 4096);
  z.body.words[shm::kSegment] = 5;
  EXPECT_EQ(shm::decode_data(z, st, d), nullptr);
  EXPECT_EQ(d.segment, 5u);
  shm::RxState in{kFifo, true, 5000};
  auto n = slot(shm::Kind::pipe_next, 1, 0);
  n.body.words[shm::kLen] = 5000;
  EXPECT_EQ(shm::decode_data(n, in, d), nullptr);
}

TEST(ShmProtocol, DecodeRejectsMalformed) {
  shm::RxState st{kFifo, false, 0};
  shm::Decoded d;
  EXPECT_NE(shm::decode_data(slot(shm::Kind::inline_data, 1, 41), st, d), nullptr) << "inline beyond a slot";
  auto e = slot(shm::Kind::eager, 1, kFifo + 1);
  e.body.words[shm::kLen] = kFifo + 1;
  EXPECT_NE(shm::decode_data(e, st, d), nullptr) << "eager beyond the fifo";
  e = slot(shm::Kind::eager, 1, 100);
  e.body.words[shm::kLen] = 50;
  EXPECT_NE(shm::decode_data(e, st, d), nullptr) << "eager length != size";
  auto p = slot(shm::Kind::pipe_first, 1, 100);
  p.body.words[shm::kLen] = 200;
  EXPECT_NE(shm::decode_data(p, st, d), nullptr) << "chunk longer than its message";
  auto n = slot(shm::Kind::pipe_next, 1, 0);
  n.body.words[shm::kLen] = 10;
  EXPECT_NE(shm::decode_data(n, st, d), nullptr) << "continuation outside a stream";
  shm::RxState in{kFifo, true, 5000};
  n.body.words[shm::kLen] = 5001;
  EXPECT_NE(shm::decode_data(n, in, d), nullptr) << "continuation beyond the message";
  EXPECT_NE(shm::decode_data(slot(shm::Kind::inline_data, 1, 8), in, d), nullptr) << "message inside a stream";
  auto z = slot(shm::Kind::zero_copy, 1, 10);
  EXPECT_NE(shm::decode_data(z, st, d), nullptr) << "segment id 0";
  auto c = slot(shm::Kind::rts_cma, 1, 100);
  c.body.words[shm::kAddr] = ~uint64_t{0} - 10;
  EXPECT_NE(shm::decode_data(c, st, d), nullptr) << "CMA range wraps";
  auto resumed = slot(shm::Kind::pipe_first, 1, 10u << 20);
  resumed.body.words[shm::kLen] = 4096;
  resumed.flags = shm::kFlagResume;
  resumed.body.words[shm::kCookie] = 99;
  EXPECT_EQ(shm::decode_data(resumed, st, d), nullptr);
  EXPECT_TRUE(d.resume && d.cookie == 99);
  resumed.flags = 4;
  EXPECT_NE(shm::decode_data(resumed, st, d), nullptr) << "unknown flag on a stream";
  EXPECT_NE(shm::decode_data(slot(static_cast<shm::Kind>(77), 1, 1), st, d), nullptr) << "unknown kind";
  EXPECT_NE(shm::decode_data(slot(shm::Kind::ack, 1, 1), st, d), nullptr) << "control kind in the data ring";
  shm::RxState nofifo{0, false, 0};
  e = slot(shm::Kind::eager, 1, 100);
  e.body.words[shm::kLen] = 100;
  EXPECT_NE(shm::decode_data(e, nofifo, d), nullptr);
}

TEST(ShmProtocol, ControlAndRanges) {
  shm::Decoded d;
  auto a = slot(shm::Kind::ack, 0, 0);
  EXPECT_EQ(shm::decode_control(a, d), nullptr);
  a.body.words[shm::kStatus] = static_cast<uint64_t>(int64_t{-5});
  EXPECT_EQ(shm::decode_control(a, d), nullptr);
  EXPECT_EQ(d.status, -5);
  a.body.words[shm::kStatus] = 7;
  EXPECT_NE(shm::decode_control(a, d), nullptr) << "positive status";
  EXPECT_NE(shm::decode_control(slot(shm::Kind::eager, 0, 0), d), nullptr);
  // Parking a large unexpected message: park and resume name a ring
  // position, a cut also how many slots of the stream are in the ring.
  auto park = slot(shm::Kind::park, 0, 0);
  park.body.words[shm::kCookie] = 1234;
  EXPECT_EQ(shm::decode_control(park, d), nullptr);
  EXPECT_EQ(d.cookie, 1234u);
  EXPECT_EQ(shm::decode_control(slot(shm::Kind::resume, 0, 0), d), nullptr);
  auto cut = slot(shm::Kind::cut, 0, 0);
  EXPECT_NE(shm::decode_control(cut, d), nullptr) << "cut of no slot";
  cut.body.words[shm::kCount] = 17;
  EXPECT_EQ(shm::decode_control(cut, d), nullptr);
  EXPECT_EQ(d.len, 17u);
  cut.body.words[shm::kCount] = uint64_t{shm::kMaxSlots} + 1;
  EXPECT_NE(shm::decode_control(cut, d), nullptr) << "cut longer than any ring";
  EXPECT_EQ(shm::check_range(4096, 0, 4096), nullptr);
  EXPECT_EQ(shm::check_range(4096, 4096, 0), nullptr);
  EXPECT_NE(shm::check_range(4096, 1, 4096), nullptr);
  EXPECT_NE(shm::check_range(4096, 4097, 0), nullptr);
  EXPECT_NE(shm::check_range(4096, ~uint64_t{0}, 2), nullptr) << "overflowing offset";
  EXPECT_NE(shm::check_range(4096, 2, ~uint64_t{0}), nullptr) << "overflowing length";
  EXPECT_TRUE(shm::cookie_index_in_range(3, 4));
  EXPECT_FALSE(shm::cookie_index_in_range(uint64_t{7} << 32 | 4, 4));
}

}  // namespace
