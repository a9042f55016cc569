// The handshake of a channel made by address (dial.hpp), outside the
// bootstrap world. Three fixed-size messages on the new stream socket, then
// each side's location as a length-prefixed JSON string (net.hpp send_msg):
//
//   server -> client  hello   24 B: u32 "LFDS" | u16 version | u16 flags | nonce_s[16]
//   client -> server  hello   56 B: u32 "LFDC" | u16 version | u16 flags | nonce_c[16] | proof_c[32]
//   server -> client  verdict 40 B: u32 "LFDV" | i32 status | proof_s[32]
//
// proof_c = HMAC-SHA256(token, "lavaflow-dial client" | nonce_s | nonce_c)
// proof_s = HMAC-SHA256(token, "lavaflow-dial server" | nonce_c | nonce_s)
// so each side learns that the other holds the token, and the token never
// travels. Flags bit 0: the server requires a token. A verdict with a
// negative status refuses the client and says why no further.
//
// The decoders are pure functions over received bytes (fuzz_dial_wire).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace lf::dial {

// The same types as Nonce and Proof; spelled out so that
// this header needs nothing else (the fuzz target compiles it alone).
using Nonce = std::array<uint8_t, 16>;
using Proof = std::array<uint8_t, 32>;

inline constexpr uint16_t kVersion = 1;
inline constexpr uint16_t kFlagTokenRequired = 1;
inline constexpr size_t kServerHelloSize = 24;
inline constexpr size_t kClientHelloSize = 56;
inline constexpr size_t kVerdictSize = 40;
inline constexpr size_t kMaxLocation = 64 * 1024;

struct ServerHello {
  uint16_t flags = 0;
  Nonce nonce{};
};
struct ClientHello {
  uint16_t flags = 0;
  Nonce nonce{};
  Proof proof{};
};
struct Verdict {
  int32_t status = 0;
  Proof proof{};
};

void encode(const ServerHello &m, uint8_t out[kServerHelloSize]) noexcept;
void encode(const ClientHello &m, uint8_t out[kClientHelloSize]) noexcept;
void encode(const Verdict &m, uint8_t out[kVerdictSize]) noexcept;
/// nullptr, or why the bytes are not a valid message.
const char *decode(const uint8_t in[kServerHelloSize], ServerHello &m) noexcept;
const char *decode(const uint8_t in[kClientHelloSize], ClientHello &m) noexcept;
const char *decode(const uint8_t in[kVerdictSize], Verdict &m) noexcept;

/// The message each side signs: label | first nonce | second nonce.
std::array<uint8_t, 20 + 2 * 16> proof_message(bool client, const Nonce &a, const Nonce &b) noexcept;

}  // namespace lf::dial
