#include "transport/shm/shm_protocol.hpp"

#include <bit>

namespace lf::shm {

namespace {
uint64_t round_up(uint64_t v, uint64_t a) noexcept { return (v + a - 1) / a * a; }
}  // namespace

bool compute_layout(uint32_t slot_count, uint32_t ctl_count, uint64_t fifo_bytes, Layout &out) noexcept {
  if (slot_count < kMinSlots || slot_count > kMaxSlots || !std::has_single_bit(slot_count)) return false;
  if (ctl_count < kMinCtl || ctl_count > kMaxCtl || !std::has_single_bit(ctl_count)) return false;
  if (fifo_bytes < kMinFifo || fifo_bytes > kMaxFifo || !std::has_single_bit(fifo_bytes)) return false;
  Layout l{};
  l.slots_off = sizeof(DirControl);
  l.ctl_off = l.slots_off + uint64_t{slot_count} * kSlotSize;
  // The fifo starts on a page so that chunk copies are page aligned.
  l.fifo_off = round_up(l.ctl_off + uint64_t{ctl_count} * kSlotSize, kPage);
  l.dir_bytes = round_up(l.fifo_off + fifo_bytes, kPage);
  l.dir_offset[0] = kPage;
  l.dir_offset[1] = kPage + l.dir_bytes;
  l.total_bytes = kPage + 2 * l.dir_bytes;
  out = l;
  return true;
}

const char *check_header(const SegmentHeader &h, uint64_t file_bytes) noexcept {
  if (h.magic != kSegmentMagic) return "segment header has a bad magic number";
  if (h.version != kVersion) return "segment header has an unknown version";
  Layout l;
  if (!compute_layout(h.slot_count, h.ctl_count, h.fifo_bytes, l))
    return "segment header has ring sizes out of bounds or not powers of two";
  if (h.dir_offset[0] != l.dir_offset[0] || h.dir_offset[1] != l.dir_offset[1] || h.total_bytes != l.total_bytes)
    return "segment header layout does not match its ring sizes";
  if (h.total_bytes > file_bytes) return "segment is smaller than its header says";
  return nullptr;
}

const char *decode_data(const SlotImage &s, const RxState &st, Decoded &out) noexcept {
  Decoded d;
  d.kind = static_cast<Kind>(s.kind);
  d.tag = s.tag;
  d.size = s.size;
  const bool fifo_ok = st.fifo_bytes >= kMinFifo && std::has_single_bit(st.fifo_bytes);
  switch (d.kind) {
    case Kind::inline_data:
      if (st.in_stream) return "a new message arrived in the middle of a pipelined one";
      if (d.size > kInlineMax) return "inline message larger than a slot";
      break;
    case Kind::eager:
      if (st.in_stream) return "a new message arrived in the middle of a pipelined one";
      d.len = s.body.words[kLen];
      if (!fifo_ok) return "no fifo";
      if (d.len != d.size) return "eager message whose fifo length differs from its size";
      if (d.len == 0 || d.len > st.fifo_bytes) return "eager message larger than the fifo";
      break;
    case Kind::pipe_first:
      if (st.in_stream) return "a new message arrived in the middle of a pipelined one";
      d.len = s.body.words[kLen];
      if (!fifo_ok) return "no fifo";
      if (d.size > kMaxMessage) return "pipelined message of an absurd size";
      if (d.len == 0 || d.len > st.fifo_bytes || d.len > d.size) return "pipelined chunk of a bad length";
      if (s.flags & ~kFlagResume) return "pipelined message with unknown flags";
      d.resume = (s.flags & kFlagResume) != 0;
      if (d.resume) d.cookie = s.body.words[kCookie];
      break;
    case Kind::pipe_next:
      if (!st.in_stream) return "a continuation chunk arrived outside a pipelined message";
      d.len = s.body.words[kLen];
      if (!fifo_ok) return "no fifo";
      if (d.len == 0 || d.len > st.fifo_bytes || d.len > st.stream_remaining)
        return "continuation chunk of a bad length";
      break;
    case Kind::rts_cma:
      if (st.in_stream) return "a new message arrived in the middle of a pipelined one";
      if (d.size > kMaxMessage) return "CMA message of an absurd size";
      d.addr = s.body.words[kAddr];
      d.cookie = s.body.words[kCookie];
      if (d.size && d.addr == 0) return "CMA message without an address";
      if (d.size && d.addr + d.size < d.addr) return "CMA message whose range wraps around";
      break;
    case Kind::zero_copy:
      if (st.in_stream) return "a new message arrived in the middle of a pipelined one";
      if (d.size > kMaxMessage) return "zero-copy descriptor of an absurd size";
      d.cookie = s.body.words[kCookie];
      d.segment = s.body.words[kSegment];
      d.offset = s.body.words[kOffset];
      if (d.segment == 0) return "zero-copy descriptor without a segment id";
      if (s.flags & ~kFlagDevice) return "zero-copy descriptor with unknown flags";
      d.device = (s.flags & kFlagDevice) != 0;
      break;
    default: return "unknown message kind";
  }
  out = d;
  return nullptr;
}

const char *decode_control(const SlotImage &s, Decoded &out) noexcept {
  Decoded d;
  d.kind = static_cast<Kind>(s.kind);
  switch (d.kind) {
    case Kind::ack:
    case Kind::release:
    case Kind::park:
    case Kind::resume: break;
    case Kind::cut:
      d.len = s.body.words[kCount];
      if (d.len == 0 || d.len > kMaxSlots) return "cut of a bad slot count";
      break;
    default: return "unknown control message kind";
  }
  d.cookie = s.body.words[kCookie];
  if (d.kind == Kind::ack) d.status = static_cast<int64_t>(s.body.words[kStatus]);
  // An ack reports LF_OK or one of the public error codes, nothing else.
  if (d.kind == Kind::ack && (d.status > 0 || d.status < -64)) return "ack with an impossible status";
  out = d;
  return nullptr;
}

const char *check_range(uint64_t segment_bytes, uint64_t offset, uint64_t length) noexcept {
  if (offset > segment_bytes) return "zero-copy offset beyond the segment";
  if (length > segment_bytes - offset) return "zero-copy range beyond the segment";
  return nullptr;
}

}  // namespace lf::shm
