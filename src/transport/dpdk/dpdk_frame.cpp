#include "transport/dpdk/dpdk_frame.hpp"

#include <cstring>

namespace lf::dpdk {

namespace {

void put16(uint8_t *p, uint16_t v) noexcept { p[0] = static_cast<uint8_t>(v), p[1] = static_cast<uint8_t>(v >> 8); }
void put32(uint8_t *p, uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t *p, uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t get16(const uint8_t *p) noexcept { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t get32(const uint8_t *p) noexcept {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
uint64_t get64(const uint8_t *p) noexcept {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

}  // namespace

void encode_frame(uint8_t *out, const Mac &dst, const Mac &src, const FrameHeader &h) noexcept {
  std::memcpy(out, dst.b, 6);
  std::memcpy(out + 6, src.b, 6);
  out[12] = kEtherType >> 8;
  out[13] = kEtherType & 0xff;
  uint8_t *p = out + kEthHeaderSize;
  put16(p, kMagic);
  p[2] = kVersion;
  p[3] = static_cast<uint8_t>(h.type);
  p[4] = h.flags;
  p[5] = 0;
  put16(p + 6, h.len);
  put32(p + 8, h.src_rank);
  put32(p + 12, h.dst_rank);
  put32(p + 16, h.src_epoch);
  put32(p + 20, h.dst_epoch);
  put32(p + 24, h.channel);
  put32(p + 28, h.seq);
  put32(p + 32, h.ack);
  put32(p + 36, h.window);
  put64(p + 40, h.sack);
  put64(p + 48, h.tag);
  put64(p + 56, h.msg_len);
}

const char *decode_frame(const uint8_t *f, size_t n, uint32_t world, FrameHeader *out, Mac *src) noexcept {
  if (!f || n < kFrameOverhead) return "frame shorter than the lavaflow header";
  if ((f[12] << 8 | f[13]) != kEtherType) return "not lavaflow's EtherType";
  const uint8_t *p = f + kEthHeaderSize;
  if (get16(p) != kMagic) return "bad magic";
  if (p[2] != kVersion) return "unknown frame version";
  if (p[5] != 0) return "reserved byte set";
  FrameHeader h;
  h.type = static_cast<FrameType>(p[3]);
  h.flags = p[4];
  h.len = get16(p + 6);
  h.src_rank = get32(p + 8);
  h.dst_rank = get32(p + 12);
  h.src_epoch = get32(p + 16);
  h.dst_epoch = get32(p + 20);
  h.channel = get32(p + 24);
  h.seq = get32(p + 28);
  h.ack = get32(p + 32);
  h.window = get32(p + 36);
  h.sack = get64(p + 40);
  h.tag = get64(p + 48);
  h.msg_len = get64(p + 56);
  if (h.src_rank >= world || h.dst_rank >= world) return "rank outside the world";
  if (h.src_rank == h.dst_rank) return "frame from a rank to itself";
  if (h.len > n - kFrameOverhead) return "payload length beyond the frame";
  switch (h.type) {
    case FrameType::data:
      if (h.flags & ~(kFirst | kLast | kAckReq)) return "unknown data flags";
      if (h.flags & kFirst) {
        if (h.msg_len > kMaxMessage) return "message length too large";
        if (h.len > h.msg_len) return "first fragment longer than its message";
        if ((h.flags & kLast) && h.len != h.msg_len) return "single fragment shorter than its message";
      } else if (h.tag || h.msg_len) {
        return "tag or length on a continuation fragment";
      }
      break;
    case FrameType::ack:
    case FrameType::fin:
      if (h.flags & ~kAckReq) return "flags on a control frame";
      if (h.len || h.tag || h.msg_len) return "payload on a control frame";
      break;
    default: return "unknown frame type";
  }
  *out = h;
  if (src) std::memcpy(src->b, f + 6, 6);
  return nullptr;
}

}  // namespace lf::dpdk
