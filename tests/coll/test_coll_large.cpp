// A count above 2^31: 64-bit counts end to end (2 ranks, 2 GiB each, in
// place). Minutes of memory bandwidth on a loaded machine: label coll_large.
#include <lavaflow/lavaflow.h>

#include <cstring>
#include <memory>

#include "multiprocess.hpp"

using namespace lftest;

class CollLarge : public MultiProcess {};

TEST_F(CollLarge, CountAbove2To31) {
  run(
      2,
      [](Rank &r) {
        lf_context_t ctx = nullptr;
        REQUIRE_OK(r, lf_init(&ctx));
        const size_t count = (size_t(1) << 31) + 77;
        std::unique_ptr<uint8_t[]> v(new uint8_t[count]);
        for (size_t i = 0; i < count; ++i) v[i] = static_cast<uint8_t>(i * 7 + static_cast<size_t>(r.rank) * 100);
        REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, v.get(), count, LF_UINT8, LF_MAX));
        for (size_t i = 0; i < count; ++i) {
          uint8_t a = static_cast<uint8_t>(i * 7), b = static_cast<uint8_t>(i * 7 + 100);
          REQUIRE(r, v[i] == (a > b ? a : b), "element %zu", i);
        }
        REQUIRE_OK(r, lf_finalize(ctx));
      },
      280);
}
