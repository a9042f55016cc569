#include "channel/dial_wire.hpp"

#include <cstring>

namespace lf::dial {

namespace {
constexpr uint32_t kServerMagic = 0x5344464c;   // "LFDS"
constexpr uint32_t kClientMagic = 0x4344464c;   // "LFDC"
constexpr uint32_t kVerdictMagic = 0x5644464c;  // "LFDV"

template <class T>
void put(uint8_t *&p, const T &v) noexcept {
  std::memcpy(p, &v, sizeof v);
  p += sizeof v;
}
template <class T>
void get(const uint8_t *&p, T &v) noexcept {
  std::memcpy(&v, p, sizeof v);
  p += sizeof v;
}
}  // namespace

void encode(const ServerHello &m, uint8_t out[kServerHelloSize]) noexcept {
  uint8_t *p = out;
  put(p, kServerMagic);
  put(p, kVersion);
  put(p, m.flags);
  put(p, m.nonce);
}

void encode(const ClientHello &m, uint8_t out[kClientHelloSize]) noexcept {
  uint8_t *p = out;
  put(p, kClientMagic);
  put(p, kVersion);
  put(p, m.flags);
  put(p, m.nonce);
  put(p, m.proof);
}

void encode(const Verdict &m, uint8_t out[kVerdictSize]) noexcept {
  uint8_t *p = out;
  put(p, kVerdictMagic);
  put(p, m.status);
  put(p, m.proof);
}

const char *decode(const uint8_t in[kServerHelloSize], ServerHello &m) noexcept {
  const uint8_t *p = in;
  uint32_t magic;
  uint16_t version;
  get(p, magic);
  get(p, version);
  get(p, m.flags);
  get(p, m.nonce);
  if (magic != kServerMagic) return "the address does not answer as a lavaflow listener";
  if (version != kVersion) return "the listener speaks another version of the handshake";
  if (m.flags & ~kFlagTokenRequired) return "the listener's hello has unknown flags";
  return nullptr;
}

const char *decode(const uint8_t in[kClientHelloSize], ClientHello &m) noexcept {
  const uint8_t *p = in;
  uint32_t magic;
  uint16_t version;
  get(p, magic);
  get(p, version);
  get(p, m.flags);
  get(p, m.nonce);
  get(p, m.proof);
  if (magic != kClientMagic) return "the client did not send a lavaflow hello";
  if (version != kVersion) return "the client speaks another version of the handshake";
  if (m.flags != 0) return "the client's hello has unknown flags";
  return nullptr;
}

const char *decode(const uint8_t in[kVerdictSize], Verdict &m) noexcept {
  const uint8_t *p = in;
  uint32_t magic;
  get(p, magic);
  get(p, m.status);
  get(p, m.proof);
  if (magic != kVerdictMagic) return "the listener's verdict is malformed";
  if (m.status > 0) return "the listener's verdict has a positive status";
  return nullptr;
}

std::array<uint8_t, 20 + 2 * 16> proof_message(bool client, const Nonce &a, const Nonce &b) noexcept {
  std::array<uint8_t, 20 + 2 * 16> m{};
  std::memcpy(m.data(), client ? "lavaflow-dial client" : "lavaflow-dial server", 20);
  std::memcpy(m.data() + 20, a.data(), a.size());
  std::memcpy(m.data() + 20 + a.size(), b.data(), b.size());
  return m;
}

}  // namespace lf::dial
