// A peer that writes malformed messages into the ring: the receiver's channel
// fails with LF_ERR_PROTOCOL and a message, never reads out of bounds, never
// hangs. The "evil" rank uses the ordinary C API and then writes one bad slot
// straight into its own transmit ring, which it finds in /proc/self/maps.
#include <fstream>
#include <sstream>

#include "shm_test_util.hpp"
#include "transport/shm/shm_protocol.hpp"

using namespace lftest;
namespace shm = lf::shm;

namespace {

/// The ring segment this process maps (one channel open), or nullptr.
char *find_ring() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("memfd:lf-shm-ring") == std::string::npos) continue;
    unsigned long long start = std::strtoull(line.c_str(), nullptr, 16);
    return reinterpret_cast<char *>(static_cast<uintptr_t>(start));
  }
  return nullptr;
}

enum class Bad { eager_too_big, unknown_kind, stray_continuation, unknown_segment, range_outside_segment, bad_ack };

struct Case {
  const char *name;
  Bad bad;
};

class ShmMalformed : public MultiProcess, public ::testing::WithParamInterface<Case> {};

TEST_P(ShmMalformed, PeerGetsProtocolError) {
  const Bad bad = GetParam().bad;
  spawn(2, [bad](Rank &r) {
    Conn c = open_shm(r, 1 - r.rank);
    lf_pool_t pool;
    REQUIRE_OK(r, lf_shared_pool(c.ctx, &pool));
    if (r.rank == 0) {
      // Rank 0 is the connecting rank: it writes direction 0.
      uint64_t sent = 0;
      REQUIRE_OK(r, lf_send(c.ch, "good msg", 8, 1));
      ++sent;
      lf_buffer_t b;
      REQUIRE_OK(r, lf_pool_acquire(pool, 4096, &b));
      lf_request_t req;
      REQUIRE_OK(r, lf_isend_buffer(c.ch, b, 2, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
      ++sent;
      // Corrupt only after the victim took the good messages: a protocol
      // error breaks the channel at once, and nothing orders the control
      // ring (where a bad ack goes) against the data ring, so good messages
      // still in the ring when the error is seen may be lost with the
      // channel (transport.hpp, rule 3).
      REQUIRE(r, r.await() == 'c', "expected the go-ahead to corrupt");
      char *base = find_ring();
      REQUIRE(r, base != nullptr, "ring segment not found in /proc/self/maps");
      shm::SegmentHeader h;
      std::memcpy(&h, base, sizeof h);
      shm::Layout l;
      REQUIRE(r, shm::compute_layout(h.slot_count, h.ctl_count, h.fifo_bytes, l), "bad layout");
      char *dir = base + l.dir_offset[0];
      auto *slots = reinterpret_cast<shm::Slot *>(dir + l.slots_off);
      const shm::Slot &zc = slots[1];  // the descriptor of the buffer above
      const uint64_t segment = zc.body.words[shm::kSegment];
      shm::Slot *target = &slots[sent % h.slot_count];
      uint32_t seq = static_cast<uint32_t>(sent + 1);
      target->kind = static_cast<uint8_t>(shm::Kind::eager);
      target->tag = 3;
      switch (bad) {
        case Bad::eager_too_big:
          target->size = uint64_t{1} << 40;
          target->body.words[shm::kLen] = uint64_t{1} << 40;
          break;
        case Bad::unknown_kind:
          target->kind = 99;
          target->size = 8;
          break;
        case Bad::stray_continuation:
          target->kind = static_cast<uint8_t>(shm::Kind::pipe_next);
          target->size = 1u << 20;
          target->body.words[shm::kLen] = 4096;
          break;
        case Bad::unknown_segment:
          target->kind = static_cast<uint8_t>(shm::Kind::zero_copy);
          target->size = 64;
          target->body.words[shm::kSegment] = 0x5eed5eed;
          target->body.words[shm::kOffset] = 0;
          break;
        case Bad::range_outside_segment:
          target->kind = static_cast<uint8_t>(shm::Kind::zero_copy);
          target->size = 1u << 20;
          target->body.words[shm::kSegment] = segment;
          target->body.words[shm::kOffset] = ~uint64_t{0} - 100;  // offset + size wraps around
          break;
        case Bad::bad_ack: {
          // A control message naming a send that does not exist.
          auto *ctl = reinterpret_cast<shm::Slot *>(dir + l.ctl_off);
          target = &ctl[0];
          seq = 1;
          target->kind = static_cast<uint8_t>(shm::Kind::ack);
          target->body.words[shm::kCookie] = 12345;
          target->body.words[shm::kStatus] = 0;
          break;
        }
      }
      target->seq.store(seq, std::memory_order_release);
      r.await();  // the victim checked its error
      return;
    }
    // The victim: the good messages arrive, then the corruption breaks the channel.
    char buf[64];
    REQUIRE_OK(r, lf_recv(c.ch, buf, sizeof buf, 1, nullptr));
    lf_request_t req;
    REQUIRE_OK(r, lf_irecv_buffer(c.ch, 2, &req));
    lf_buffer_t view;
    REQUIRE_OK(r, lf_wait_buffer(req, &view, nullptr));
    r.signal('g');
    lf_status_t st = lf_recv(c.ch, buf, sizeof buf, 3, nullptr);
    REQUIRE(r, st == LF_ERR_PROTOCOL, "got %s (%s)", lf_status_string(st), lf_last_error());
    REQUIRE(r, std::strstr(lf_last_error(), "malformed") != nullptr, "error text: %s", lf_last_error());
    // The channel stays broken, with the same error, for new operations.
    REQUIRE_ST(r, LF_ERR_PROTOCOL, lf_send(c.ch, buf, 8, 1));
    // A view received before the failure stays valid.
    REQUIRE(r, lf_buffer_size(view) == 4096, "view size");
    REQUIRE_OK(r, lf_free(view));
    r.signal('d');
    close_all(r, c);
  });
  ASSERT_EQ(await(1), 'g') << "the victim did not receive the good messages";
  signal(0, 'c');
  ASSERT_EQ(await(1), 'd');
  signal(0, 'x');
  expect_all_ok();
}

INSTANTIATE_TEST_SUITE_P(
    Shm, ShmMalformed,
    ::testing::Values(Case{"EagerTooBig", Bad::eager_too_big}, Case{"UnknownKind", Bad::unknown_kind},
                      Case{"StrayContinuation", Bad::stray_continuation}, Case{"UnknownSegment", Bad::unknown_segment},
                      Case{"RangeOutsideSegment", Bad::range_outside_segment}, Case{"AckForNothing", Bad::bad_ack}),
    [](const auto &p) { return std::string(p.param.name); });

}  // namespace
