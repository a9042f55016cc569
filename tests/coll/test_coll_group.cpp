// Collectives over groups of ranks (lf_group_t, the _g calls) across forked
// ranks: groups of every size in worlds of 2 to 4, overlapping groups
// running at once from different threads, a member killed mid-collective,
// groups the members disagree on, and bad input.
#include <lavaflow/lavaflow.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
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

// The groups every rank of a world of n creates, in this order: of every
// size, each in two rank orders (one that is not the world's).
std::vector<std::vector<int>> groups_of(int n) {
  std::vector<std::vector<int>> gs;
  for (int k = 1; k <= n; ++k) {
    std::vector<int> down, rot;
    for (int i = k - 1; i >= 0; --i) down.push_back(i);
    for (int i = 0; i < k; ++i) rot.push_back((n - 1 + 2 * i) % n);
    // (n - 1 + 2i) % n repeats ranks when n is even: fall back to a rotation.
    std::vector<char> seen(static_cast<size_t>(n), 0);
    bool distinct = true;
    for (int m : rot) distinct = distinct && !seen[static_cast<size_t>(m)]++;
    if (!distinct)
      for (int i = 0; i < k; ++i) rot[static_cast<size_t>(i)] = (n - 1 + i) % n;
    gs.push_back(down);
    gs.push_back(rot);
  }
  return gs;
}

uint8_t pattern(size_t i, int from, int to) {
  return static_cast<uint8_t>(i * 13 + static_cast<size_t>(from) * 71 + static_cast<size_t>(to) * 5 + 1);
}

// Every collective over `g` (whose world ranks are `members`), checked
// against what the members' inputs give.
void exercise(Rank &r, lf_group_t g, const std::vector<int> &members) {
  const int n = static_cast<int>(members.size()), me = lf_group_rank(g);
  REQUIRE(r, me >= 0 && members[static_cast<size_t>(me)] == r.rank && lf_group_size(g) == n);
  // Allreduce: small (recursive doubling), uneven and large (ring or single copy).
  for (size_t count : {size_t(0), size_t(3), size_t(1001), size_t(100003)}) {
    std::vector<int64_t> v(count), out(count);
    for (size_t i = 0; i < count; ++i) v[i] = static_cast<int64_t>(i) * (r.rank + 1);
    int64_t wsum = 0;
    for (int m : members) wsum += m + 1;
    REQUIRE_OK(r, lf_allreduce_g(g, v.data(), out.data(), count, LF_INT64, LF_SUM));
    for (size_t i = 0; i < count; ++i)
      REQUIRE(r, out[i] == static_cast<int64_t>(i) * wsum, "allreduce_g of %zu: element %zu", count, i);
    REQUIRE_OK(r, lf_allreduce_g(g, LF_IN_PLACE, v.data(), count, LF_INT64, LF_MAX));
    int64_t wmax = 0;
    for (int m : members) wmax = std::max<int64_t>(wmax, m + 1);
    for (size_t i = 0; i < count; ++i) REQUIRE(r, v[i] == static_cast<int64_t>(i) * wmax);
  }
  for (int root = 0; root < n; ++root) {
    // Roots are group ranks.
    int32_t mine = members[static_cast<size_t>(me)] * 10, got = -1;
    REQUIRE_OK(r, lf_reduce_g(g, &mine, me == root ? &got : nullptr, 1, LF_INT32, LF_SUM, root));
    int32_t want = 0;
    for (int m : members) want += m * 10;
    if (me == root) REQUIRE(r, got == want, "reduce_g to %d: %d, want %d", root, got, want);
    std::vector<uint8_t> buf(70001);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = me == root ? pattern(i, root, 1) : 0;
    REQUIRE_OK(r, lf_bcast_g(g, buf.data(), buf.size(), root));
    for (size_t i = 0; i < buf.size(); ++i) REQUIRE(r, buf[i] == pattern(i, root, 1), "bcast_g from %d", root);
  }
  const size_t bpr = 37;
  std::vector<uint8_t> mine(bpr), all(bpr * static_cast<size_t>(n));
  for (size_t i = 0; i < bpr; ++i) mine[i] = pattern(i, r.rank, 0);
  REQUIRE_OK(r, lf_allgather_g(g, mine.data(), bpr, all.data()));
  for (int k = 0; k < n; ++k)
    for (size_t i = 0; i < bpr; ++i)
      REQUIRE(r, all[static_cast<size_t>(k) * bpr + i] == pattern(i, members[static_cast<size_t>(k)], 0),
              "allgather_g block %d", k);
  std::vector<uint8_t> send(all.size()), recv(all.size());
  for (int to = 0; to < n; ++to)
    for (size_t i = 0; i < bpr; ++i) send[static_cast<size_t>(to) * bpr + i] = pattern(i, r.rank, to);
  REQUIRE_OK(r, lf_alltoall_g(g, send.data(), bpr, recv.data()));
  for (int from = 0; from < n; ++from)
    for (size_t i = 0; i < bpr; ++i)
      REQUIRE(r, recv[static_cast<size_t>(from) * bpr + i] == pattern(i, members[static_cast<size_t>(from)], me),
              "alltoall_g from %d", from);
  REQUIRE_OK(r, lf_barrier_g(g));
  // Non-blocking forms, waited in reverse order.
  lf_request_t reqs[3];
  std::vector<uint32_t> ones(1000, 1);
  std::vector<uint8_t> bc(5000, me == n - 1 ? 7 : 0);
  REQUIRE_OK(r, lf_ibarrier_g(g, &reqs[0]));
  REQUIRE_OK(r, lf_iallreduce_g(g, LF_IN_PLACE, ones.data(), ones.size(), LF_UINT32, LF_SUM, &reqs[1]));
  REQUIRE_OK(r, lf_ibcast_g(g, bc.data(), bc.size(), n - 1, &reqs[2]));
  for (int k = 2; k >= 0; --k) REQUIRE_OK(r, lf_wait(reqs[k], nullptr));
  for (uint32_t x : ones) REQUIRE(r, x == static_cast<uint32_t>(n));
  for (uint8_t x : bc) REQUIRE(r, x == 7);
}

void every_group(Rank &r) {
  lf_context_t ctx = init(r);
  int64_t before = r.rank;
  REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, &before, 1, LF_INT64, LF_SUM));
  const auto list = groups_of(r.size);
  std::vector<lf_group_t> gs;
  for (const auto &members : list) {
    lf_group_t g = nullptr;
    REQUIRE_OK(r, lf_group_create(ctx, members.data(), static_cast<int>(members.size()), &g));
    gs.push_back(g);
  }
  for (size_t k = 0; k < list.size(); ++k) {
    const auto &members = list[k];
    bool member = false;
    for (int m : members) member = member || m == r.rank;
    if (member) {
      exercise(r, gs[k], members);
    } else {
      // Outside the group: refused with a reason, and nothing is sent.
      REQUIRE(r, lf_group_rank(gs[k]) == -1 && lf_group_size(gs[k]) == static_cast<int>(members.size()));
      int x = 1;
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allreduce_g(gs[k], &x, &x, 1, LF_INT32, LF_SUM));
      REQUIRE(r, std::strstr(lf_last_error(), "not a member") != nullptr, "%s", lf_last_error());
      lf_request_t req;
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_ibarrier_g(gs[k], &req));
    }
    // The world's collectives are undisturbed between the groups'.
    int64_t v = r.rank;
    REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, &v, 1, LF_INT64, LF_SUM));
    REQUIRE(r, v == before);
  }
  for (lf_group_t g : gs) REQUIRE_OK(r, lf_group_free(g));
  REQUIRE_OK(r, lf_finalize(ctx));
}

// Overlapping groups, each driven by a thread of its own on every member,
// while the main thread runs whole-world collectives.
void concurrent(Rank &r, const std::vector<std::vector<int>> &list, int rounds) {
  lf_context_t ctx = init(r);
  std::vector<lf_group_t> gs;
  for (const auto &members : list) {
    lf_group_t g = nullptr;
    REQUIRE_OK(r, lf_group_create(ctx, members.data(), static_cast<int>(members.size()), &g));
    gs.push_back(g);
  }
  std::vector<std::string> errors(list.size());
  std::vector<std::thread> threads;
  for (size_t k = 0; k < list.size(); ++k) {
    if (lf_group_rank(gs[k]) < 0) continue;
    threads.emplace_back([&, k] {
      const auto &members = list[k];
      int64_t wsum = 0;
      for (int m : members) wsum += m + 1;
      char why[256];
      for (int i = 0; i < rounds && errors[k].empty(); ++i) {
        // Sizes that differ between the groups, so that a message taken by
        // the wrong group would be noticed by its size or its values.
        size_t count = 1 + (static_cast<size_t>(i) * 7 + k * 1000) % 3000;
        std::vector<int64_t> v(count, (r.rank + 1) * (i + 1));
        lf_status_t st = lf_allreduce_g(gs[k], LF_IN_PLACE, v.data(), count, LF_INT64, LF_SUM);
        if (st != LF_OK) {
          std::snprintf(why, sizeof why, "group %zu round %d: %s", k, i, lf_last_error());
          errors[k] = why;
          break;
        }
        for (int64_t x : v)
          if (x != wsum * (i + 1)) {
            std::snprintf(why, sizeof why, "group %zu round %d: %lld, want %lld", k, i, static_cast<long long>(x),
                          static_cast<long long>(wsum * (i + 1)));
            errors[k] = why;
            break;
          }
        lf_request_t req;
        if ((st = lf_ibarrier_g(gs[k], &req)) == LF_OK) st = lf_wait(req, nullptr);
        if (st != LF_OK) errors[k] = std::string("ibarrier_g: ") + lf_last_error();
      }
    });
  }
  for (int i = 0; i < rounds; ++i) {
    int64_t v = r.rank + i;
    REQUIRE_OK(r, lf_allreduce(ctx, LF_IN_PLACE, &v, 1, LF_INT64, LF_SUM));
    REQUIRE(r, v == static_cast<int64_t>(r.size) * (r.size - 1) / 2 + static_cast<int64_t>(r.size) * i);
  }
  for (auto &t : threads) t.join();
  for (const auto &e : errors) REQUIRE(r, e.empty(), "%s", e.c_str());
  for (lf_group_t g : gs) REQUIRE_OK(r, lf_group_free(g));
  REQUIRE_OK(r, lf_finalize(ctx));
}

}  // namespace

class CollGroup : public MultiProcess {};

TEST_F(CollGroup, EveryGroupSizeWorld2) { run(2, every_group); }
TEST_F(CollGroup, EveryGroupSizeWorld3) { run(3, every_group); }
TEST_F(CollGroup, EveryGroupSizeWorld4) { run(4, every_group); }

TEST_F(CollGroup, OverlappingGroupsConcurrently3) {
  run(3, [](Rank &r) { concurrent(r, {{0, 1}, {1, 2}, {2, 0}, {2, 1, 0}}, 60); });
}
TEST_F(CollGroup, OverlappingGroupsConcurrently4) {
  run(4, [](Rank &r) { concurrent(r, {{0, 1, 2}, {3, 2, 1}, {0, 3}, {1, 3}, {2}}, 40); });
}

// A member killed mid-collective: the group's other members fail with
// LF_ERR_PEER_GONE (or LF_ERR_CLOSED) instead of hanging, and a group that
// does not contain the dead rank keeps working.
TEST_F(CollGroup, MemberKilledMidAllreduce) {
  spawn(4, [](Rank &r) {
    lf_context_t ctx = init(r);
    const int gm[] = {1, 2, 3}, hm[] = {0, 1};
    lf_group_t g, h;
    REQUIRE_OK(r, lf_group_create(ctx, gm, 3, &g));
    REQUIRE_OK(r, lf_group_create(ctx, hm, 2, &h));
    std::vector<float> v(1u << 17, 1.0f);
    if (r.rank != 0) REQUIRE_OK(r, lf_allreduce_g(g, LF_IN_PLACE, v.data(), v.size(), LF_FLOAT32, LF_MAX));
    r.signal('k');
    if (r.rank == 3)
      for (;;) REQUIRE_OK(r, lf_allreduce_g(g, LF_IN_PLACE, v.data(), v.size(), LF_FLOAT32, LF_MAX));
    if (r.rank != 0) {
      lf_status_t st;
      do {
        st = lf_allreduce_g(g, LF_IN_PLACE, v.data(), v.size(), LF_FLOAT32, LF_MAX);
      } while (st == LF_OK);
      int64_t failed_at = monotonic_ns();
      REQUIRE(r, st == LF_ERR_PEER_GONE || st == LF_ERR_CLOSED, "allreduce_g ended with %s (%s)", lf_status_string(st),
              lf_last_error());
      r.report(&failed_at, sizeof failed_at);
      REQUIRE(r, lf_barrier_g(g) != LF_OK);
    }
    if (r.rank <= 1) {
      int32_t x = r.rank + 1;
      REQUIRE_OK(r, lf_allreduce_g(h, LF_IN_PLACE, &x, 1, LF_INT32, LF_SUM));
      REQUIRE(r, x == 3);
      REQUIRE_OK(r, lf_group_free(h));
    } else {
      REQUIRE_OK(r, lf_group_free(h));  // not a member: nothing to synchronise
    }
    REQUIRE_OK(r, lf_group_free(g));  // failed already: no barrier
    REQUIRE_OK(r, lf_finalize(ctx));
  });
  for (int k = 0; k < 4; ++k) ASSERT_EQ(await(k), 'k');
  int64_t killed_at = monotonic_ns();
  ASSERT_EQ(kill(pid_of(3), SIGKILL), 0);
  for (int k = 1; k < 3; ++k) {
    int64_t failed_at = 0;
    ASSERT_TRUE(read_report(k, &failed_at, sizeof failed_at, 20000)) << "rank " << k << " never saw the failure";
    std::printf("rank %d: allreduce_g failed %.1f ms after SIGKILL of rank 3\n", k,
                static_cast<double>(failed_at - killed_at) / 1e6);
  }
  reap(3);
  expect_all_ok(60, {3});
}

// Members that disagree on a group get errors, never a hang. Each rank
// reports its lf_group_create status; at least one names the mismatch.
class CollGroupMismatch : public MultiProcess {
 protected:
  void check(int n, std::vector<std::vector<int>> lists) {
    spawn(n, [lists](Rank &r) {
      lf_context_t ctx = init(r);
      const auto &mine = lists[static_cast<size_t>(r.rank)];
      lf_group_t g = nullptr;
      int32_t st = lf_group_create(ctx, mine.data(), static_cast<int>(mine.size()), &g);
      if (st == LF_ERR_INVALID_ARG)
        REQUIRE(r, std::strstr(lf_last_error(), "group mismatch") != nullptr, "%s", lf_last_error());
      REQUIRE(r, st != LF_OK || g != nullptr);
      if (st != LF_OK) std::printf("rank %d: lf_group_create: %s\n", r.rank, lf_last_error());
      std::fflush(stdout);
      r.report(&st, sizeof st);
      if (g) REQUIRE_OK(r, lf_group_free(g));
      REQUIRE_OK(r, lf_finalize(ctx));
    });
    bool named = false;
    for (int k = 0; k < n; ++k) {
      int32_t st = 0;
      ASSERT_TRUE(read_report(k, &st, sizeof st, 60000)) << "rank " << k << " hung in lf_group_create";
      EXPECT_NE(st, LF_OK) << "rank " << k << " created a group its peers disagree on";
      named = named || st == LF_ERR_INVALID_ARG;
    }
    EXPECT_TRUE(named) << "no rank reported the mismatch";
    expect_all_ok(60);
  }
};

TEST_F(CollGroupMismatch, OtherOrder2) { check(2, {{0, 1}, {1, 0}}); }
TEST_F(CollGroupMismatch, OtherMembers3) { check(3, {{0, 1, 2}, {0, 1}, {0, 2}}); }
// Rank 2 never connects to rank 1, which waits LF_CONNECT_TIMEOUT for it.
TEST_F(CollGroupMismatch, MemberNeverComes3) {
  env = {{"LF_CONNECT_TIMEOUT", "2"}};
  check(3, {{0, 1, 2}, {0, 1, 2}, {0, 2}});
}

// Bad input is refused with a reason.
TEST_F(CollGroup, BadArguments) {
  run(2, [](Rank &r) {
    lf_context_t ctx = init(r);
    lf_group_t g = nullptr;
    const int both[] = {0, 1}, twice[] = {1, 1}, far[] = {0, 2}, neg[] = {-1};
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(ctx, both, 2, nullptr));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(ctx, nullptr, 2, &g));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(ctx, both, 0, &g));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(ctx, both, 3, &g));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(ctx, twice, 2, &g));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(ctx, far, 2, &g));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(ctx, neg, 1, &g));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_create(nullptr, both, 2, &g));
    REQUIRE(r, g == nullptr && std::strlen(lf_last_error()) > 0);
    // A group of rank 1 alone: rank 0 is outside it.
    const int one[] = {1};
    REQUIRE_OK(r, lf_group_create(ctx, one, 1, &g));
    int x = 5, y = 0;
    if (r.rank == 0) {
      REQUIRE(r, lf_group_rank(g) == -1);
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_bcast_g(g, &x, sizeof x, 0));
      REQUIRE(r, std::strstr(lf_last_error(), "not a member") != nullptr, "%s", lf_last_error());
    } else {
      REQUIRE(r, lf_group_rank(g) == 0 && lf_group_size(g) == 1);
      REQUIRE_OK(r, lf_allreduce_g(g, &x, &y, 1, LF_INT32, LF_PROD));
      REQUIRE(r, y == 5);
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_bcast_g(g, &x, sizeof x, 1));  // group roots: 0 only
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_reduce_g(g, &x, nullptr, 1, LF_INT32, LF_SUM, 0));
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_allreduce_g(g, &x, &y, 1, static_cast<lf_dtype_t>(77), LF_SUM));
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_iallreduce_g(g, &x, &y, 1, LF_INT32, LF_SUM, nullptr));
      REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_alltoall_g(g, nullptr, 4, &y));
    }
    REQUIRE_OK(r, lf_group_free(g));
    // Freed, foreign and made-up handles.
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_barrier_g(g));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_group_free(g));
    REQUIRE(r, lf_group_rank(g) == -1 && lf_group_size(g) == -1);
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_barrier_g(reinterpret_cast<lf_group_t>(ctx)));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_barrier_g(reinterpret_cast<lf_group_t>(uintptr_t(0x0f000001))));
    REQUIRE_ST(r, LF_ERR_INVALID_ARG, lf_barrier_g(nullptr));
    REQUIRE_OK(r, lf_group_free(nullptr));
    // A group outlives its context's finalize as a handle that refuses calls.
    REQUIRE_OK(r, lf_group_create(ctx, both, 2, &g));
    REQUIRE_OK(r, lf_barrier_g(g));
    REQUIRE_OK(r, lf_finalize(ctx));
    REQUIRE_ST(r, LF_ERR_CLOSED, lf_allreduce_g(g, &x, &y, 1, LF_INT32, LF_SUM));
    REQUIRE_OK(r, lf_group_free(g));
  });
}
