// libFuzzer target for the execution service's wire format
// (src/exec/wire.hpp) and the plan validator (src/exec/plan.hpp).
//
// Checked for every input: a rejection has a reason; an accepted plan
// re-encodes to the same bytes; validation of an accepted plan either names
// a reason or orders every op exactly once, producers first; the other
// headers round-trip too.
//
//   cmake -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DLAVAFLOW_FUZZ=ON
//   ninja -C build-fuzz fuzz_exec_wire && build-fuzz/tests/fuzz/fuzz_exec_wire -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>

#include "exec/plan.hpp"
#include "exec/wire.hpp"

using namespace lf::exec;

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) {    \
      std::abort();   \
    }                 \
  } while (0)

namespace {

template <class T>
void round_trip(const uint8_t *data, size_t size) {
  T v;
  const char *why = decode(data, size, v);
  if (why) {
    REQUIRE(*why);
    return;
  }
  const auto again = encode(v);
  REQUIRE(again.size() == size && std::memcmp(again.data(), data, size) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  PlanWire p;
  const char *why = decode(data, size, p);
  if (why) {
    REQUIRE(*why);
  } else {
    const auto again = encode(p);
    REQUIRE(again.size() == size && std::memcmp(again.data(), data, size) == 0);
    static const OpDef builtin_add{Builtin::add}, builtin_sum{Builtin::sum}, user{};
    auto lookup = [](const std::string &n) -> const OpDef * {
      if (n == "add") return &builtin_add;
      if (n == "sum") return &builtin_sum;
      if (n == "u") return &user;
      return nullptr;
    };
    auto resident = [](const PlanInput &in) -> std::optional<Shape> {
      if (in.job % 2) return Shape{{3}};
      return std::nullopt;
    };
    Validated v;
    const std::string bad = validate(p, lookup, resident, v);
    if (bad.empty()) {
      REQUIRE(v.order.size() == p.ops.size());
      std::set<std::string> defined;
      for (const auto &in : p.inputs) defined.insert(in.name);
      for (size_t i : v.order) {
        REQUIRE(i < p.ops.size());
        for (const auto &n : p.ops[i].inputs) REQUIRE(defined.count(n));
        defined.insert(p.ops[i].output);
      }
    }
  }
  round_trip<RunResult>(data, size);
  round_trip<FetchHeader>(data, size);
  round_trip<PutHeader>(data, size);
  uint64_t job;
  if (const char *w = decode_job_id(data, size, job)) REQUIRE(*w);
  return 0;
}
