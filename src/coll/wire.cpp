#include "coll/wire.hpp"

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace lf::coll {

const char *kind_name(Kind k) noexcept {
  switch (k) {
    case Kind::barrier: return "barrier";
    case Kind::bcast: return "bcast";
    case Kind::reduce: return "reduce";
    case Kind::allreduce: return "allreduce";
    case Kind::allgather: return "allgather";
    case Kind::alltoall: return "alltoall";
    case Kind::group: return "group creation";
  }
  return "?";
}

namespace wire {

namespace {
constexpr uint64_t kFnvBasis = 1469598103934665603ull, kFnvPrime = 1099511628211ull;
void mix(uint64_t &h, uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= kFnvPrime;
  }
}
}  // namespace

uint64_t group_id(const int *members, size_t n) noexcept {
  uint64_t h = kFnvBasis;
  mix(h, n);
  for (size_t i = 0; i < n; ++i) mix(h, static_cast<uint64_t>(static_cast<uint32_t>(members[i])));
  return h;
}

uint32_t signature(Kind kind, uint64_t count, lf_dtype_t dt, lf_op_t op, int root, int size, uint64_t group) noexcept {
  uint64_t h = kFnvBasis;
  mix(h, static_cast<uint64_t>(kind));
  mix(h, count);
  mix(h, static_cast<uint64_t>(dt));
  mix(h, static_cast<uint64_t>(op));
  mix(h, static_cast<uint64_t>(root));
  mix(h, static_cast<uint64_t>(size));
  mix(h, group);
  return static_cast<uint32_t>(h ^ (h >> 32)) & 0x0fffffffu;
}

uint64_t make_tag(Kind kind, uint32_t signature, uint32_t seq) noexcept {
  return uint64_t(static_cast<uint8_t>(kind) & 0x7) << 60 | uint64_t(signature & 0x0fffffffu) << 32 | seq;
}

TagFields parse_tag(uint64_t tag) noexcept {
  return {static_cast<uint8_t>((tag >> 60) & 0x7), static_cast<uint32_t>((tag >> 32) & 0x0fffffffu),
          static_cast<uint32_t>(tag)};
}

Verdict classify(uint64_t expected, uint64_t tag, size_t want, size_t got) noexcept {
  if (tag == expected) return got == want ? Verdict::ok : Verdict::mismatch;
  // The sequence numbers wrap: the next collective follows #2^32-1 with #0.
  if (static_cast<uint32_t>(tag) == static_cast<uint32_t>(expected) + 1u) return Verdict::later;
  return Verdict::mismatch;
}

std::string describe_mismatch(int peer, uint64_t got_tag, size_t got_bytes, uint64_t want_tag, size_t want_bytes) {
  TagFields got = parse_tag(got_tag), want = parse_tag(want_tag);
  const bool group = got.kind == static_cast<uint8_t>(Kind::group) || want.kind == static_cast<uint8_t>(Kind::group);
  char buf[512];
  if (group)
    std::snprintf(
        buf, sizeof buf,
        "group mismatch: rank %d created this group with other members (or another order of them) than "
        "this rank, or created its groups in another order (sent %s #%" PRIu32 ", this rank expected %s #%" PRIu32
        "); every member must pass the same ranks in the same order to lf_group_create, and members must "
        "create the groups they share in the same order",
        peer, kind_name(static_cast<Kind>(got.kind)), got.seq, kind_name(static_cast<Kind>(want.kind)), want.seq);
  else
    std::snprintf(
        buf, sizeof buf,
        "collective mismatch: rank %d sent %zu bytes for %s #%" PRIu32 ", this rank expected %zu bytes for %s #%" PRIu32
        "%s",
        peer, got_bytes, kind_name(static_cast<Kind>(got.kind)), got.seq, want_bytes,
        kind_name(static_cast<Kind>(want.kind)), want.seq,
        got.kind == want.kind && got.seq == want.seq && got.signature != want.signature ? " with other arguments" : "");
  return buf;
}

void encode_hello(const Hello &h, unsigned char out[kHelloBytes]) noexcept {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(h.group >> (8 * i));
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<unsigned char>(h.size >> (8 * i));
  for (int i = 0; i < 4; ++i) out[12 + i] = static_cast<unsigned char>(h.rank >> (8 * i));
}

bool check_hello(const unsigned char *bytes, size_t len, uint64_t group, int size, int from, std::string &why) {
  if (len != kHelloBytes || !bytes) {
    why = "a group hello of " + std::to_string(len) + " bytes (expected " + std::to_string(kHelloBytes) + ")";
    return false;
  }
  Hello h;
  for (int i = 0; i < 8; ++i) h.group |= uint64_t(bytes[i]) << (8 * i);
  for (int i = 0; i < 4; ++i) h.size |= uint32_t(bytes[8 + i]) << (8 * i);
  for (int i = 0; i < 4; ++i) h.rank |= uint32_t(bytes[12 + i]) << (8 * i);
  if (h.group != group || size < 0 || h.size != static_cast<uint32_t>(size)) {
    why = "the member lists differ (" + std::to_string(h.size) + " members there, " + std::to_string(size) + " here)";
    return false;
  }
  if (from < 0 || h.rank != static_cast<uint32_t>(from)) {
    why = "the sender says it is group rank " + std::to_string(h.rank) + ", this rank's list says " +
          std::to_string(from);
    return false;
  }
  return true;
}

}  // namespace wire
}  // namespace lf::coll
