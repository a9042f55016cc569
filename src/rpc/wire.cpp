#include "rpc/wire.hpp"

#include <cstring>

namespace lf::rpc {

namespace {
template <class T>
void put(uint8_t *&p, T v) noexcept {
  std::memcpy(p, &v, sizeof v);
  p += sizeof v;
}
template <class T>
T get(const uint8_t *&p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  p += sizeof v;
  return v;
}
}  // namespace

void encode_prefix(const Prefix &x, uint8_t *out) noexcept {
  uint8_t *p = out;
  put(p, kMagic);
  put(p, kVersion);
  put(p, static_cast<uint8_t>(x.kind));
  put(p, x.method_len);
  put(p, x.header_len);
  put(p, x.status);
  put(p, x.id);
  put(p, x.remaining_ns);
  put(p, x.payload_len);
}

const char *decode(const uint8_t *data, size_t n, Message &out) noexcept {
  if (n < kPrefixSize) return "rpc message shorter than its prefix";
  const uint8_t *p = data;
  if (get<uint32_t>(p) != kMagic) return "rpc message with a bad magic";
  if (get<uint8_t>(p) != kVersion) return "rpc message of an unknown version";
  const uint8_t kind = get<uint8_t>(p);
  if (kind < 1 || kind > 3) return "rpc message of an unknown kind";
  Prefix &x = out.prefix;
  x.kind = static_cast<Kind>(kind);
  x.method_len = get<uint16_t>(p);
  x.header_len = get<uint32_t>(p);
  x.status = get<int32_t>(p);
  x.id = get<uint64_t>(p);
  x.remaining_ns = get<int64_t>(p);
  x.payload_len = get<uint64_t>(p);
  if (x.method_len > kMaxMethod) return "rpc method name too long";
  if (x.header_len > kMaxHeader) return "rpc header too long";
  if (x.remaining_ns < 0) return "rpc deadline with negative remaining time";
  if (x.kind == Kind::request && x.method_len == 0) return "rpc request without a method";
  if (x.kind != Kind::request && x.method_len != 0) return "rpc method name on a message that is not a request";
  if (x.kind == Kind::cancel && (x.header_len || x.payload_len)) return "rpc cancel with a body";
  if (x.kind != Kind::response && x.status != 0) return "rpc status on a message that is not a response";
  const size_t body = n - kPrefixSize;
  if (x.payload_len > body || body - x.payload_len != size_t{x.method_len} + x.header_len)
    return "rpc message whose lengths do not add up to its size";
  out.method = std::string_view(reinterpret_cast<const char *>(p), x.method_len);
  for (char c : out.method)
    if (c == '\0') return "rpc method name with a NUL";
  out.header = p + x.method_len;
  out.payload = out.header + x.header_len;
  return nullptr;
}

}  // namespace lf::rpc
