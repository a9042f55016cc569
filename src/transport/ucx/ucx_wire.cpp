#include "transport/ucx/ucx_wire.hpp"

#include <cstring>

namespace lf::ucx {

namespace {

void put32(unsigned char *p, uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put64(unsigned char *p, uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get32(const unsigned char *p) noexcept {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get64(const unsigned char *p) noexcept {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

void encode_header(const Header &h, unsigned char *out) noexcept {
  std::memset(out, 0, kHeaderSize);
  put32(out, kMagic);
  out[4] = static_cast<unsigned char>(h.type);
  put32(out + 8, h.rank);
  put32(out + 12, h.channel);
  put64(out + 16, h.seq);
  put64(out + 24, h.tag);
  put64(out + 32, h.token);
}

const char *decode_header(const void *p, size_t n, size_t payload, uint32_t world_size, Header *h) noexcept {
  if (!p || n != kHeaderSize) return "active message header of the wrong size";
  const auto *b = static_cast<const unsigned char *>(p);
  if (get32(b) != kMagic) return "active message header with a bad magic or version";
  if (b[5] || b[6] || b[7]) return "active message header with nonzero reserved bytes";
  Header out;
  switch (b[4]) {
    case static_cast<unsigned char>(MsgType::data): out.type = MsgType::data; break;
    case static_cast<unsigned char>(MsgType::bye): out.type = MsgType::bye; break;
    default: return "active message of an unknown type";
  }
  out.rank = get32(b + 8);
  if (out.rank >= world_size) return "active message from a rank outside the world";
  out.channel = get32(b + 12);
  out.seq = get64(b + 16);
  out.tag = get64(b + 24);
  out.token = get64(b + 32);
  if (out.type == MsgType::bye && (payload != 0 || out.tag != 0)) return "close message with data or a tag";
  *h = out;
  return nullptr;
}

bool peek_route(const void *p, size_t n, uint32_t *rank, uint32_t *channel) noexcept {
  if (!p || n < 16) return false;
  const auto *b = static_cast<const unsigned char *>(p);
  *rank = get32(b + 8);
  *channel = get32(b + 12);
  return true;
}

}  // namespace lf::ucx
