// The TCP transport's framing role (see frame.hpp): encoders and checking
// decoders of the handshake and of frames; no I/O.
#include "transport/tcp/frame.hpp"

#include <cstring>

namespace lf::tcp {

namespace {
inline void put_le(uint8_t *p, uint64_t v, int bytes) noexcept {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint64_t get_le(const uint8_t *p, int bytes) noexcept {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}
}  // namespace

void encode_handshake(const Handshake &h, uint8_t out[kHandshakeSize]) noexcept {
  put_le(out + 0, kHandshakeMagic, 4);
  put_le(out + 4, kHandshakeVersion, 2);
  put_le(out + 6, static_cast<uint16_t>(h.kind), 2);
  put_le(out + 8, h.from, 4);
  put_le(out + 12, h.to, 4);
  put_le(out + 16, h.seq, 4);
  put_le(out + 20, 0, 4);
  std::memcpy(out + 24, h.nonce.data(), kNonceSize);
  std::memcpy(out + 40, h.proof.data(), kProofSize);
}

const char *decode_handshake(const uint8_t in[kHandshakeSize], Handshake *out) noexcept {
  if (get_le(in, 4) != kHandshakeMagic) return "bad magic (not a lavaflow tcp handshake)";
  if (get_le(in + 4, 2) != kHandshakeVersion) return "unsupported handshake version";
  uint64_t kind = get_le(in + 6, 2);
  if (kind != static_cast<uint16_t>(HandshakeKind::hello) && kind != static_cast<uint16_t>(HandshakeKind::ack))
    return "unknown handshake kind";
  if (get_le(in + 20, 4) != 0) return "reserved handshake field is not zero";
  Handshake h;
  h.kind = static_cast<HandshakeKind>(kind);
  h.from = static_cast<uint32_t>(get_le(in + 8, 4));
  h.to = static_cast<uint32_t>(get_le(in + 12, 4));
  h.seq = static_cast<uint32_t>(get_le(in + 16, 4));
  std::memcpy(h.nonce.data(), in + 24, kNonceSize);
  std::memcpy(h.proof.data(), in + 40, kProofSize);
  *out = h;
  return nullptr;
}

std::array<uint8_t, kProofMessageSize> proof_message(HandshakeKind kind, uint32_t connector, uint32_t acceptor,
                                                     uint32_t seq, const HandshakeNonce &acceptor_nonce,
                                                     const HandshakeNonce &connector_nonce) noexcept {
  std::array<uint8_t, kProofMessageSize> m{};
  std::memcpy(m.data(), kind == HandshakeKind::hello ? "LFTHhelo" : "LFTHack_", 8);
  put_le(m.data() + 8, connector, 4);
  put_le(m.data() + 12, acceptor, 4);
  put_le(m.data() + 16, seq, 4);
  std::memcpy(m.data() + 20, acceptor_nonce.data(), kNonceSize);
  std::memcpy(m.data() + 20 + kNonceSize, connector_nonce.data(), kNonceSize);
  return m;
}

void encode_frame_header(const FrameHeader &h, uint8_t out[kFrameHeaderSize]) noexcept {
  put_le(out + 0, kFrameMagic, 4);
  out[4] = kFrameVersion;
  out[5] = static_cast<uint8_t>(h.type);
  put_le(out + 6, 0, 2);
  put_le(out + 8, h.seq, 4);
  put_le(out + 12, 0, 4);
  put_le(out + 16, h.tag, 8);
  put_le(out + 24, h.length, 8);
}

DecodeResult decode_frame_header(const uint8_t *b, size_t n, uint32_t expected_seq, uint64_t max_length) noexcept {
  DecodeResult r;
  if (n < kFrameHeaderSize) return r;
  r.status = DecodeStatus::malformed;
  if (get_le(b, 4) != kFrameMagic) return r.error = "bad magic (not a lavaflow tcp stream)", r;
  if (b[4] != kFrameVersion) return r.error = "unsupported protocol version", r;
  if (get_le(b + 6, 2) != 0) return r.error = "unknown flags set", r;
  if (get_le(b + 12, 4) != 0) return r.error = "reserved field is not zero", r;
  if (get_le(b + 8, 4) != expected_seq) return r.error = "frame out of sequence (lost, repeated or spliced data)", r;
  FrameHeader h;
  h.seq = expected_seq;
  h.tag = get_le(b + 16, 8);
  h.length = get_le(b + 24, 8);
  switch (b[5]) {
    case static_cast<uint8_t>(FrameType::data):
      h.type = FrameType::data;
      if (h.length > max_length) return r.error = "message length above LF_TCP_MAX_MESSAGE", r;
      break;
    case static_cast<uint8_t>(FrameType::bye):
      h.type = FrameType::bye;
      if (h.length != 0 || h.tag != 0) return r.error = "bye frame with a payload", r;
      break;
    default: return r.error = "unknown frame type", r;
  }
  r.status = DecodeStatus::ok;
  r.header = h;
  return r;
}

DecodeResult FrameReader::next_header(const uint8_t *bytes, size_t n) noexcept {
  DecodeResult r;
  if (failed_ || left_ > 0) {
    r.status = DecodeStatus::malformed;
    r.error = failed_ ? "stream already failed" : "header requested inside a payload";
    failed_ = true;
    return r;
  }
  r = decode_frame_header(bytes, n, seq_, max_length_);
  if (r.status == DecodeStatus::malformed) failed_ = true;
  if (r.status != DecodeStatus::ok) return r;
  ++seq_;
  current_ = r.header;
  left_ = r.header.length;
  return r;
}

}  // namespace lf::tcp
