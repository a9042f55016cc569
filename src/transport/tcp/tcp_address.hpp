// The address a rank publishes for the TCP transport, and how the dialling
// side picks which of the peer's addresses to use. Pure functions (unit
// tested in tests/remote/test_tcp_unit.cpp).
//
//   tcp://10.77.0.1/24,192.168.5.7/16,127.0.0.1/8:41234;netns=<boot id>:<inode>;nonce=<32 hex>
//
// lists every IPv4 address of the rank's network namespace with its prefix
// length, loopback last, the listening port (bound on each of those
// addresses), the kernel's identity of the network namespace (boot id and
// /proc/self/ns/net inode), and the acceptor's handshake nonce: fresh random
// bytes drawn at start that every connector's proof must cover (frame.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.hpp"

namespace lf::tcp {

struct Ipv4Net {
  uint32_t addr = 0;  ///< Host byte order.
  int prefix = 32;    ///< Prefix length, 0..32.
  bool operator==(const Ipv4Net &) const = default;
};

struct PublishedAddress {
  std::vector<Ipv4Net> nets;
  int port = 0;
  std::string netns;
  std::array<uint8_t, 16> nonce{};
};

std::string format_address(const PublishedAddress &a);
/// Parse what a peer published; anything malformed is LF_ERR_PROTOCOL.
Result<PublishedAddress> parse_address(const std::string &text);

/// Addresses to try, best first (host byte order):
///  - the same network namespace: 127.0.0.1 first;
///  - then the peer's non-loopback addresses inside the subnet of one of
///    `mine` (on-link: reachable without a router);
///  - then its other non-loopback addresses in the order published.
/// Loopback is never tried across namespaces: it would reach this namespace.
std::vector<uint32_t> choose_addresses(const std::vector<Ipv4Net> &mine, const std::string &my_netns,
                                       const PublishedAddress &peer);

}  // namespace lf::tcp
