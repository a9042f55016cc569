// What a collective's messages carry, as pure functions (no channels): the
// 64-bit tag every message of a collective bears, the signature of the
// arguments every member must agree on, the identity of a group, and the
// record a group's members exchange when it is created. Kept apart from the
// algorithms so that tests/fuzz/fuzz_coll_wire.cpp drives it alone.
//
// Tag layout: bits 60..62 the kind, 32..59 a 28-bit signature (FNV-1a over
// the kind, count, dtype, op, root, group size and group identity), 0..31
// the collective's sequence number in its group. Bit 63 is always clear.
#pragma once

#include <lavaflow/lavaflow.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace lf::coll {

enum class Kind : uint8_t { barrier = 1, bcast = 2, reduce = 3, allreduce = 4, allgather = 5, alltoall = 6, group = 7 };
/// A static name; "?" for a value that is not a Kind (a peer's bad tag).
const char *kind_name(Kind k) noexcept;

namespace wire {

/// Identity of a group: FNV-1a over its members' world ranks, in group order.
uint64_t group_id(const int *members, size_t n) noexcept;

/// Signature of a collective's arguments (28 bits).
uint32_t signature(Kind kind, uint64_t count, lf_dtype_t dt, lf_op_t op, int root, int size, uint64_t group) noexcept;

uint64_t make_tag(Kind kind, uint32_t signature, uint32_t seq) noexcept;

struct TagFields {
  uint8_t kind;  ///< 0..7; not necessarily a Kind.
  uint32_t signature;
  uint32_t seq;
};
TagFields parse_tag(uint64_t tag) noexcept;

/// What a message that arrived while collective `expected` waits means.
enum class Verdict {
  ok,        ///< The message it waits for.
  mismatch,  ///< Same collective number, other arguments (or size): an error.
  later,     ///< The next collective's first message: no sign of trouble yet.
};
/// `want`/`got`: the bytes the receive expects and the message's size.
Verdict classify(uint64_t expected, uint64_t tag, size_t want, size_t got) noexcept;

/// A readable account of a mismatch, for lf_last_error().
std::string describe_mismatch(int peer, uint64_t got_tag, size_t got_bytes, uint64_t want_tag, size_t want_bytes);

/// The record each member of a new group sends every other member.
struct Hello {
  uint64_t group = 0;  ///< group_id() of the sender's member list.
  uint32_t size = 0;   ///< Its number of members.
  uint32_t rank = 0;   ///< The sender's rank in it.
};
constexpr size_t kHelloBytes = 16;
void encode_hello(const Hello &h, unsigned char out[kHelloBytes]) noexcept;
/// Decode `bytes` received from the member at group rank `from` of a group
/// `group` of `size`: false, with `why` set, when it is not a valid hello
/// from that member of that group.
bool check_hello(const unsigned char *bytes, size_t len, uint64_t group, int size, int from, std::string &why);

}  // namespace wire
}  // namespace lf::coll
