// The TCP transport's published address and the choice of where to dial
// (see tcp_address.hpp); pure functions.
#include "transport/tcp/tcp_address.hpp"

#include <arpa/inet.h>

#include <cstdlib>

namespace lf::tcp {

namespace {
bool is_loopback(uint32_t a) { return a >> 24 == 127; }
uint32_t mask_of(int prefix) { return prefix <= 0 ? 0 : prefix >= 32 ? ~0u : ~0u << (32 - prefix); }

bool parse_uint(const std::string &s, long max, long *out) {
  if (s.empty() || s.size() > 10) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  long v = std::strtol(s.c_str(), nullptr, 10);
  if (v > max) return false;
  *out = v;
  return true;
}
}  // namespace

std::string format_address(const PublishedAddress &a) {
  std::string s = "tcp://";
  for (size_t i = 0; i < a.nets.size(); ++i) {
    char ip[INET_ADDRSTRLEN];
    in_addr ia{htonl(a.nets[i].addr)};
    inet_ntop(AF_INET, &ia, ip, sizeof ip);
    if (i) s += ',';
    s += std::string(ip) + "/" + std::to_string(a.nets[i].prefix);
  }
  s += ":" + std::to_string(a.port) + ";netns=" + a.netns + ";nonce=";
  static const char hex[] = "0123456789abcdef";
  for (uint8_t b : a.nonce) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s;
}

Result<PublishedAddress> parse_address(const std::string &text) {
  PublishedAddress a;
  if (text.rfind("tcp://", 0) != 0) return LF_FAIL(LF_ERR_PROTOCOL, "'%s' does not start with tcp://", text.c_str());
  auto semi = text.find(";netns=");
  if (semi == std::string::npos) return LF_FAIL(LF_ERR_PROTOCOL, "'%s' has no ;netns=", text.c_str());
  auto nonce_at = text.find(";nonce=", semi);
  if (nonce_at == std::string::npos) return LF_FAIL(LF_ERR_PROTOCOL, "'%s' has no ;nonce=", text.c_str());
  a.netns = text.substr(semi + 7, nonce_at - semi - 7);
  std::string hex = text.substr(nonce_at + 7);
  if (hex.size() != 2 * a.nonce.size())
    return LF_FAIL(LF_ERR_PROTOCOL, "'%s' has a nonce that is not %zu hex digits", text.c_str(), 2 * a.nonce.size());
  for (size_t i = 0; i < hex.size(); ++i) {
    char c = hex[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return LF_FAIL(LF_ERR_PROTOCOL, "'%s' has a nonce that is not lower-case hex", text.c_str());
    a.nonce[i / 2] = static_cast<uint8_t>(a.nonce[i / 2] << 4 | v);
  }
  std::string body = text.substr(6, semi - 6);
  auto colon = body.rfind(':');
  long port = 0;
  if (colon == std::string::npos || !parse_uint(body.substr(colon + 1), 65535, &port) || port == 0)
    return LF_FAIL(LF_ERR_PROTOCOL, "'%s' has no valid port", text.c_str());
  a.port = static_cast<int>(port);
  std::string list = body.substr(0, colon);
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    auto slash = item.find('/');
    in_addr ia{};
    long prefix = 0;
    if (slash == std::string::npos || inet_pton(AF_INET, item.substr(0, slash).c_str(), &ia) != 1 ||
        !parse_uint(item.substr(slash + 1), 32, &prefix))
      return LF_FAIL(LF_ERR_PROTOCOL, "'%s' lists a bad address '%s'", text.c_str(), item.c_str());
    a.nets.push_back({ntohl(ia.s_addr), static_cast<int>(prefix)});
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return a;
}

std::vector<uint32_t> choose_addresses(const std::vector<Ipv4Net> &mine, const std::string &my_netns,
                                       const PublishedAddress &peer) {
  std::vector<uint32_t> out;
  auto add = [&](uint32_t a) {
    for (uint32_t x : out)
      if (x == a) return;
    out.push_back(a);
  };
  if (!my_netns.empty() && peer.netns == my_netns) add(0x7f000001u);
  for (const Ipv4Net &p : peer.nets) {
    if (is_loopback(p.addr)) continue;
    for (const Ipv4Net &m : mine) {
      if (is_loopback(m.addr)) continue;
      uint32_t mask = mask_of(m.prefix);
      if ((p.addr & mask) == (m.addr & mask)) add(p.addr);
    }
  }
  for (const Ipv4Net &p : peer.nets)
    if (!is_loopback(p.addr)) add(p.addr);
  return out;
}

}  // namespace lf::tcp
