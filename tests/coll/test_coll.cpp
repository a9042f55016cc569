// Collectives across forked ranks. Every result is compared exactly with a
// serial reference computed here, independently of the library's kernels;
// the inputs are small integers, so that float sums and products are exact
// in any order and the comparison can be bit for bit.
#include <lavaflow/lavaflow.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "multiprocess.hpp"

using namespace lftest;

namespace {

lf_context_t init(Rank &r) {
  lf_context_t ctx = nullptr;
  REQUIRE_OK(r, lf_init(&ctx));
  REQUIRE(r, lf_size(ctx) == r.size);
  return ctx;
}

template <typename T>
T input(size_t i, int rank) {
  int v = static_cast<int>((i * 31 + static_cast<size_t>(rank) * 17 + i / 7) % 7);
  if constexpr (std::is_signed_v<T> || std::is_floating_point_v<T>) v -= 3;
  return static_cast<T>(v);
}

template <typename T>
T combine(T a, T b, lf_op_t op) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
  }
  using U = std::conditional_t<std::is_integral_v<T>,
                               std::make_unsigned_t<std::conditional_t<std::is_integral_v<T>, T, int>>, T>;
  switch (op) {
    case LF_SUM:
      if constexpr (std::is_integral_v<T>)
        return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
      else
        return a + b;
    case LF_PROD:
      if constexpr (std::is_integral_v<T>)
        return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
      else
        return a * b;
    case LF_MIN: return b < a ? b : a;
    case LF_MAX: return b > a ? b : a;
  }
  return a;
}

template <typename T>
bool same(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  }
  return a == b;
}

// Allreduce (and reduce to every root, for the small counts) of one type
// under every op, out of place and in place, NaN-seeded for the floats.
template <typename T>
void check_type(Rank &r, lf_context_t ctx, lf_dtype_t dt, const std::vector<size_t> &counts) {
  REQUIRE(r, lf_dtype_size(dt) == sizeof(T));
  const int n = r.size;
  for (size_t count : counts) {
    for (lf_op_t op : {LF_SUM, LF_PROD, LF_MIN, LF_MAX}) {
      std::vector<T> in(count), out(count), want(count);
      for (size_t i = 0; i < count; ++i) in[i] = input<T>(i, r.rank);
      // One NaN per 97 elements, on a rank that moves with the position.
      if constexpr (std::is_floating_point_v<T>)
        for (size_t i = 5; i < count; i += 97)
          if (static_cast<int>(i % static_cast<size_t>(n)) == r.rank) in[i] = std::numeric_limits<T>::quiet_NaN();
      for (size_t i = 0; i < count; ++i) {
        T acc = input<T>(i, 0);
        if constexpr (std::is_floating_point_v<T>)
          if (i >= 5 && (i - 5) % 97 == 0 && i % static_cast<size_t>(n) == 0) acc = std::numeric_limits<T>::quiet_NaN();
        for (int k = 1; k < n; ++k) {
          T v = input<T>(i, k);
          if constexpr (std::is_floating_point_v<T>)
            if (i >= 5 && (i - 5) % 97 == 0 && static_cast<int>(i % static_cast<size_t>(n)) == k)
              v = std::numeric_limits<T>::quiet_NaN();
          acc = combine(acc, v, op);
        }
        want[i] = acc;
      }
      REQUIRE_OK(r, lf_allreduce(ctx, in.data(), out.data(), count, dt, op));
      for (size_t i = 0; i < count; ++i)
        REQUIRE(r, same(out[i], want[i]), "allreduce dtype %d op %d count %zu: element %zu differs", dt, op, count, i);
      std::vector<T> inplace = in;
      REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, inplace.data(), count, dt, op));
      for (size_t i = 0; i < count; ++i)
        REQUIRE(r, same(inplace[i], want[i]), "in-place allreduce dtype %d op %d count %zu: element %zu", dt, op, count,
                i);
      if (count <= 1000) {
        for (int root = 0; root < n; ++root) {
          std::vector<T> red(count, T(9));
          REQUIRE_OK(r, lf_reduce(ctx, in.data(), r.rank == root ? red.data() : nullptr, count, dt, op, root));
          if (r.rank == root)
            for (size_t i = 0; i < count; ++i)
              REQUIRE(r, same(red[i], want[i]), "reduce to %d dtype %d op %d: element %zu", root, dt, op, i);
        }
      }
    }
  }
}

void every_dtype_and_op_on(Rank &r, lf_context_t ctx) {
  // Zero, smaller than the world, not divisible by it, and past the ring
  // threshold with several segments per block (float64: 2.4 MiB).
  const std::vector<size_t> counts = {0, 1, 3, 1001, 300007};
  check_type<int8_t>(r, ctx, LF_INT8, counts);
  check_type<uint8_t>(r, ctx, LF_UINT8, counts);
  check_type<int32_t>(r, ctx, LF_INT32, counts);
  check_type<uint32_t>(r, ctx, LF_UINT32, counts);
  check_type<int64_t>(r, ctx, LF_INT64, counts);
  check_type<uint64_t>(r, ctx, LF_UINT64, counts);
  check_type<float>(r, ctx, LF_FLOAT32, counts);
  check_type<double>(r, ctx, LF_FLOAT64, counts);
}

void every_dtype_and_op(Rank &r) {
  lf_context_t ctx = init(r);
  every_dtype_and_op_on(r, ctx);
  REQUIRE_OK(r, lf_finalize(ctx));
}

uint8_t pattern(size_t i, int from, int to) {
  return static_cast<uint8_t>(i * 13 + static_cast<size_t>(from) * 71 + static_cast<size_t>(to) * 5 + 1);
}

void data_movement(Rank &r) {
  lf_context_t ctx = init(r);
  const int n = r.size;
  for (size_t bytes : {size_t(0), size_t(13), size_t(3u << 20) + 7}) {
    for (int root = 0; root < n; ++root) {
      std::vector<uint8_t> buf(bytes);
      for (size_t i = 0; i < bytes; ++i) buf[i] = r.rank == root ? pattern(i, root, 0) : 0;
      REQUIRE_OK(r, lf_bcast(ctx, buf.data(), bytes, root));
      for (size_t i = 0; i < bytes; ++i)
        REQUIRE(r, buf[i] == pattern(i, root, 0), "bcast from %d, %zu bytes: byte %zu", root, bytes, i);
    }
  }
  for (size_t bpr : {size_t(0), size_t(5), size_t(1u << 20) + 3}) {
    std::vector<uint8_t> mine(bpr), all(bpr * static_cast<size_t>(n));
    for (size_t i = 0; i < bpr; ++i) mine[i] = pattern(i, r.rank, 0);
    REQUIRE_OK(r, lf_allgather(ctx, mine.data(), bpr, all.data()));
    for (int k = 0; k < n; ++k)
      for (size_t i = 0; i < bpr; ++i)
        REQUIRE(r, all[static_cast<size_t>(k) * bpr + i] == pattern(i, k, 0), "allgather %zu: block %d byte %zu", bpr,
                k, i);
    std::vector<uint8_t> again(all.size(), 0);
    if (bpr) std::memcpy(again.data() + static_cast<size_t>(r.rank) * bpr, mine.data(), bpr);
    REQUIRE_OK(r, lf_allgather(ctx, LF_IN_PLACE, bpr, again.data()));
    REQUIRE(r, again == all, "in-place allgather %zu", bpr);
  }
  for (size_t bpr : {size_t(0), size_t(7), size_t(300001)}) {
    std::vector<uint8_t> send(bpr * static_cast<size_t>(n)), recv(send.size());
    for (int to = 0; to < n; ++to)
      for (size_t i = 0; i < bpr; ++i) send[static_cast<size_t>(to) * bpr + i] = pattern(i, r.rank, to);
    REQUIRE_OK(r, lf_alltoall(ctx, send.data(), bpr, recv.data()));
    for (int from = 0; from < n; ++from)
      for (size_t i = 0; i < bpr; ++i)
        REQUIRE(r, recv[static_cast<size_t>(from) * bpr + i] == pattern(i, from, r.rank),
                "alltoall %zu: from %d byte %zu", bpr, from, i);
    REQUIRE_OK(r, lf_alltoall(ctx, LF_IN_PLACE, bpr, send.data()));
    REQUIRE(r, send == recv, "in-place alltoall %zu", bpr);
  }
  REQUIRE_OK(r, lf_finalize(ctx));
}

// Non-blocking collectives are ordinary requests, completed in call order
// with blocking ones in between.
void nonblocking(Rank &r) {
  lf_context_t ctx = init(r);
  const int n = r.size;
  std::vector<int64_t> a(10000), b(100);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int64_t>(i) + r.rank;
  std::vector<uint8_t> bc(70000, r.rank == 1 % n ? 42 : 0);
  lf_request_t reqs[3];
  REQUIRE_OK(r, lf_ibarrier(ctx, &reqs[0]));
  REQUIRE_OK(r, lf_iallreduce(ctx, LF_IN_PLACE, a.data(), a.size(), LF_INT64, LF_SUM, &reqs[1]));
  REQUIRE_OK(r, lf_ibcast(ctx, bc.data(), bc.size(), 1 % n, &reqs[2]));
  // A blocking collective after them runs after them.
  for (size_t i = 0; i < b.size(); ++i) b[i] = r.rank;
  REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, b.data(), b.size(), LF_INT64, LF_MAX));
  for (int64_t v : b) REQUIRE(r, v == n - 1);
  int done = 0;
  while (!done) REQUIRE_OK(r, lf_test(reqs[0], &done));
  REQUIRE_OK(r, lf_wait(reqs[0], nullptr));
  lf_status_t st;
  while ((st = lf_wait_timeout(reqs[1], 50, nullptr)) == LF_ERR_TIMEOUT) {
  }
  REQUIRE(r, st == LF_OK, "%s", lf_last_error());
  const int64_t ranks_sum = static_cast<int64_t>(n) * (n - 1) / 2;
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(r, a[i] == static_cast<int64_t>(i) * n + ranks_sum, "element %zu", i);
  REQUIRE_OK(r, lf_waitall(&reqs[2], 1));
  for (uint8_t v : bc) REQUIRE(r, v == 42);
  // A burst of them, then the waits in reverse order.
  std::vector<lf_request_t> burst(16);
  std::vector<std::vector<uint32_t>> vals(burst.size(), std::vector<uint32_t>(33, 1));
  for (size_t k = 0; k < burst.size(); ++k)
    REQUIRE_OK(r, lf_iallreduce(ctx, LF_IN_PLACE, vals[k].data(), vals[k].size(), LF_UINT32, LF_SUM, &burst[k]));
  for (size_t k = burst.size(); k-- > 0;) REQUIRE_OK(r, lf_wait(burst[k], nullptr));
  for (auto &v : vals)
    for (uint32_t x : v) REQUIRE(r, x == static_cast<uint32_t>(n));
  REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_ibarrier(ctx, nullptr));
  REQUIRE_OK(r, lf_finalize(ctx));
}

}  // namespace

class Coll : public MultiProcess {};

TEST_F(Coll, EveryDtypeAndOp1) { run(1, every_dtype_and_op); }
TEST_F(Coll, EveryDtypeAndOp2) { run(2, every_dtype_and_op); }
TEST_F(Coll, EveryDtypeAndOp3) { run(3, every_dtype_and_op); }
TEST_F(Coll, EveryDtypeAndOp4) { run(4, every_dtype_and_op); }
TEST_F(Coll, EveryDtypeAndOpRing3) {
  env = {{"LF_COLL_ALGO", "ring"}};
  run(3, every_dtype_and_op);
}
TEST_F(Coll, EveryDtypeAndOpRing4) {
  env = {{"LF_COLL_ALGO", "ring"}};
  run(4, every_dtype_and_op);
}
TEST_F(Coll, EveryDtypeAndOpSingleCopy3) {
  env = {{"LF_COLL_ALGO", "cma"}};
  run(3, every_dtype_and_op);
}
TEST_F(Coll, EveryDtypeAndOpRecursiveDoubling3) {
  env = {{"LF_COLL_ALGO", "rd"}};
  run(3, every_dtype_and_op);
}
TEST_F(Coll, DataMovement1) { run(1, data_movement); }
TEST_F(Coll, DataMovement2) { run(2, data_movement); }
TEST_F(Coll, DataMovement3) { run(3, data_movement); }
TEST_F(Coll, DataMovement4) { run(4, data_movement); }
TEST_F(Coll, NonBlocking1) { run(1, nonblocking); }
TEST_F(Coll, NonBlocking3) { run(3, nonblocking); }
TEST_F(Coll, NonBlocking4) { run(4, nonblocking); }

// Collectives interleaved with the application's messages on the same
// peers: neither takes the other's, even with LF_ANY_TAG receives posted
// across a collective.
TEST_F(Coll, NeverTakesPointToPointMessages) {
  run(3, [](Rank &r) {
    lf_context_t ctx = init(r);
    const int n = r.size, right = (r.rank + 1) % n, left = (r.rank + n - 1) % n;
    // Channels in rank order on every rank, before the first collective.
    std::vector<lf_channel_t> ch(static_cast<size_t>(n), nullptr);
    for (int p = 0; p < n; ++p)
      if (p != r.rank) REQUIRE_OK(r, lf_channel_open(ctx, p, &ch[static_cast<size_t>(p)]));
    for (int round = 0; round < 20; ++round) {
      uint64_t got = 0;
      lf_request_t any;
      REQUIRE_OK(r, lf_irecv(ch[static_cast<size_t>(left)], &got, sizeof got, LF_ANY_TAG, &any));
      uint64_t mine = 1000u * static_cast<uint64_t>(r.rank) + static_cast<uint64_t>(round);
      std::vector<int32_t> v(round % 2 ? 100000 : 3, r.rank);
      REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, v.data(), v.size(), LF_INT32, LF_SUM));
      // No rank sends to the application's channels before this barrier.
      int done = 1;
      REQUIRE_OK(r, lf_test(any, &done));
      REQUIRE(r, !done, "round %d: a collective's message completed the application's LF_ANY_TAG receive", round);
      REQUIRE_OK(r, lf_barrier(ctx));
      REQUIRE_OK(r, lf_send(ch[static_cast<size_t>(right)], &mine, sizeof mine, 7 + static_cast<uint64_t>(round)));
      lf_completion_t c = LF_COMPLETION_INIT;
      REQUIRE_OK(r, lf_wait_completion(any, &c));
      REQUIRE(r,
              c.tag == 7 + static_cast<uint64_t>(round) &&
                  got == 1000u * static_cast<uint64_t>(left) + static_cast<uint64_t>(round),
              "round %d: got tag %llu value %llu", round, static_cast<unsigned long long>(c.tag),
              static_cast<unsigned long long>(got));
      for (int32_t x : v) REQUIRE(r, x == n * (n - 1) / 2);
      // Messages sent before a collective are still there after it.
      REQUIRE_OK(r, lf_send(ch[static_cast<size_t>(right)], &mine, sizeof mine, 99));
      REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, v.data(), 1, LF_INT32, LF_MAX));
      REQUIRE_OK(r, lf_recv(ch[static_cast<size_t>(left)], &got, sizeof got, LF_ANY_TAG, nullptr));
      REQUIRE(r, got == 1000u * static_cast<uint64_t>(left) + static_cast<uint64_t>(round));
    }
    for (lf_channel_t c : ch)
      if (c) REQUIRE_OK(r, lf_channel_close(c));
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

// Ranks that disagree get an error, never a hang.
TEST_F(Coll, MismatchedCountsFail2) {
  run(2, [](Rank &r) {
    lf_context_t ctx = init(r);
    std::vector<float> v(100, 1.0f);
    lf_status_t st = lf_allreduce(ctx, LF_IN_PLACE, v.data(), r.rank == 0 ? 10 : 12, LF_FLOAT32, LF_SUM);
    REQUIRE(r, st != LF_OK, "a mismatched allreduce succeeded");
    // The context's collectives stay failed, with a reason.
    lf_request_t req;
    lf_status_t again = lf_ibarrier(ctx, &req);
    if (again == LF_OK) again = lf_wait(req, nullptr);
    REQUIRE(r, again != LF_OK);
    REQUIRE(r, std::strlen(lf_last_error()) > 0);
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

TEST_F(Coll, MismatchedCallsFail4) {
  run(4, [](Rank &r) {
    lf_context_t ctx = init(r);
    std::vector<int32_t> v(200000, 1);
    REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, v.data(), v.size(), LF_INT32, LF_SUM));
    lf_status_t st;
    if (r.rank == 2)
      st = lf_bcast(ctx, v.data(), 64, 0);  // the others reduce
    else
      st = lf_allreduce(ctx, LF_IN_PLACE, v.data(), v.size(), LF_INT32, LF_SUM);
    REQUIRE(r, st != LF_OK, "a mismatched collective succeeded");
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

TEST_F(Coll, MismatchedRootFails3) {
  run(3, [](Rank &r) {
    lf_context_t ctx = init(r);
    char buf[100] = {};
    lf_status_t st = lf_bcast(ctx, buf, sizeof buf, r.rank == 0 ? 0 : 1);
    // Rank 2's parent differs between the two trees: it must not hang, and
    // somebody must see the error.
    int bad = st != LF_OK;
    int32_t any = bad;
    lf_status_t st2 = lf_allreduce(ctx, LF_IN_PLACE, &any, 1, LF_INT32, LF_MAX);
    REQUIRE(r, bad || st2 != LF_OK, "neither the mismatched bcast nor the next collective failed");
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

// A rank killed mid-allreduce: the survivors' collectives fail with
// LF_ERR_PEER_GONE within a second.
TEST_F(Coll, RankKilledMidAllreduce) {
  spawn(3, [](Rank &r) {
    lf_context_t ctx = init(r);
    std::vector<float> v(1u << 18, 1.0f);
    REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, v.data(), v.size(), LF_FLOAT32, LF_MAX));
    r.signal('k');
    if (r.rank == 2)
      for (;;) REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, v.data(), v.size(), LF_FLOAT32, LF_MAX));
    lf_status_t st;
    do {
      st = lf_allreduce(ctx, LF_IN_PLACE, v.data(), v.size(), LF_FLOAT32, LF_MAX);
    } while (st == LF_OK);
    int64_t failed_at = monotonic_ns();
    REQUIRE(r, st == LF_ERR_PEER_GONE || st == LF_ERR_CLOSED, "allreduce ended with %s (%s)", lf_status_string(st),
            lf_last_error());
    r.report(&failed_at, sizeof failed_at);
    REQUIRE(r, lf_allreduce(ctx, LF_IN_PLACE, v.data(), 1, LF_FLOAT32, LF_MAX) != LF_OK);
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  for (int k = 0; k < 3; ++k) ASSERT_EQ(await(k), 'k');
  int64_t killed_at = monotonic_ns();
  ASSERT_EQ(kill(pid_of(2), SIGKILL), 0);
  for (int k = 0; k < 2; ++k) {
    int64_t failed_at = 0;
    ASSERT_TRUE(read_report(k, &failed_at, sizeof failed_at, 10000)) << "rank " << k << " never saw the failure";
    const double latency_s = static_cast<double>(failed_at - killed_at) / 1e9;
    EXPECT_LT(latency_s, 1.0) << "rank " << k << ": the failure took " << latency_s << " s";
    std::printf("rank %d: allreduce failed %.1f ms after SIGKILL of rank 2\n", k, latency_s * 1e3);
  }
  reap(2);
  expect_all_ok(60, {2});
}

// Four ranks on two cores, many small collectives: the waits yield, so
// nothing livelocks.
TEST_F(Coll, OversubscribedSmallCollectives4) {
  run(4, [](Rank &r) {
    lf_context_t ctx = init(r);
    for (int i = 0; i < 500; ++i) {
      int64_t v = r.rank + i;
      REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, &v, 1, LF_INT64, LF_SUM));
      REQUIRE(r, v == 6 + 4 * i);
      lf_request_t req;
      REQUIRE_OK(r, lf_ibarrier(ctx, &req));
      REQUIRE_OK(r, lf_wait(req, nullptr));
    }
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

// Bad input is refused with a reason, before any rank communicates.
TEST_F(Coll, BadArguments) {
  run(1, [](Rank &r) {
    lf_context_t ctx = init(r);
    int x = 0;
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allreduce(nullptr, &x, &x, 1, LF_INT32, LF_SUM));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allreduce(ctx, &x, &x, 1, static_cast<lf_dtype_t>(42), LF_SUM));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allreduce(ctx, &x, &x, 1, LF_INT32, static_cast<lf_op_t>(-1)));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allreduce(ctx, nullptr, &x, 1, LF_INT32, LF_SUM));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allreduce(ctx, &x, &x, SIZE_MAX / 2, LF_INT32, LF_SUM));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_bcast(ctx, &x, 4, 1));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_bcast(ctx, &x, 4, -1));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_reduce(ctx, &x, nullptr, 1, LF_INT32, LF_SUM, 0));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allgather(ctx, nullptr, 4, &x));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_alltoall(ctx, &x, SIZE_MAX, &x));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_iallreduce(ctx, &x, &x, 1, LF_INT32, LF_SUM, nullptr));
    REQUIRE(r, std::strlen(lf_last_error()) > 0);
    REQUIRE(r, lf_dtype_size(static_cast<lf_dtype_t>(99)) == 0);
    // Zero-length calls with NULL buffers are valid.
    REQUIRE_OK(r, lf_allreduce(ctx, nullptr, nullptr, 0, LF_FLOAT64, LF_SUM));
    REQUIRE_OK(r, lf_bcast(ctx, nullptr, 0, 0));
    REQUIRE_OK(r, lf_finalize(ctx));
    REQUIRE_ST(r, LF_ERR_CLOSED, lf_allreduce(ctx, &x, &x, 1, LF_INT32, LF_SUM));
  });
}

// Ranks declared on two "hosts" (LF_LOCATION_FILE overrides hostname and
// boot id, as tests/remote/declared_remote.sh does): shared memory within a
// host, the network between. Allreduce then goes hierarchical: reduce to
// each host's leader, allreduce among the leaders, bcast within each host.
class CollHosts : public MultiProcess {
 protected:
  void TearDown() override {
    MultiProcess::TearDown();
    for (auto &f : files_) std::remove(f.c_str());
  }
  void declare(const std::vector<int> &host_of) {
    for (size_t r = 0; r < host_of.size(); ++r) {
      std::string f = "/tmp/lf-coll-host-" + std::to_string(getpid()) + "-" + std::to_string(r) + ".json";
      std::ofstream(f) << "{\"hostname\": \"declared-node-" << host_of[r]
                       << "\", \"boot_id\": \"00000000-0000-4000-8000-" << std::string(11, '0') << host_of[r]
                       << "\"}\n";
      files_.push_back(f);
      env_rank[static_cast<int>(r)].push_back({"LF_LOCATION_FILE", f});
    }
  }
  std::vector<std::string> files_;
};

void hosts_are_declared(Rank &r, lf_context_t ctx, const std::vector<int> &host_of) {
  for (int p = 0; p < r.size; ++p)
    if (p != r.rank)
      REQUIRE(r,
              lf_scope(ctx, p) == (host_of[static_cast<size_t>(p)] == host_of[static_cast<size_t>(r.rank)]
                                       ? LF_SCOPE_LOCAL
                                       : LF_SCOPE_REMOTE),
              "scope of %d", p);
}

TEST_F(CollHosts, HierarchicalTwoRanksPerHost4) {
  const std::vector<int> host_of = {0, 0, 1, 1};
  declare(host_of);
  env = {{"LF_COLL_ALGO", "hier"}};
  run(4, [host_of](Rank &r) {
    lf_context_t ctx = init(r);
    hosts_are_declared(r, ctx, host_of);
    every_dtype_and_op_on(r, ctx);
    REQUIRE_OK(r, lf_finalize(ctx));
  });
}

// The automatic choice, hosts that interleave the ranks, and a host of one.
TEST_F(CollHosts, HierarchicalByDefaultInterleaved4) {
  const std::vector<int> host_of = {0, 1, 0, 1};
  declare(host_of);
  run(4, every_dtype_and_op);
}
TEST_F(CollHosts, HierarchicalUnevenHosts3) {
  declare({1, 0, 1});
  env = {{"LF_COLL_ALGO", "hier"}};
  run(3, every_dtype_and_op);
}
