// A rank for multi-host collective tests (test_coll_multihost.cpp): started
// on a namespace host by scripts/netns-hosts.sh with the standalone
// bootstrap. Prints "scope R P local|remote" per peer, runs allreduce over
// the world and over groups across the hosts, checks every element against
// a serial reference, and prints "coll ok R". Exits 1 with a reason on the
// first difference or error.
#include <lavaflow/lavaflow.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

int rank_ = -1;

[[noreturn]] void die(const char *what, lf_status_t st) {
  std::printf("coll fail %d: %s: %s (%s)\n", rank_, what, lf_status_string(st), lf_last_error());
  std::fflush(stdout);
  std::exit(1);
}

int64_t input(size_t i, int rank) { return static_cast<int64_t>((i * 31 + static_cast<size_t>(rank) * 17) % 7) - 3; }

// Allreduce over `members` (world ranks; all of them with g == nullptr).
void check(lf_context_t ctx, lf_group_t g, const std::vector<int> &members, size_t count, lf_op_t op) {
  std::vector<int64_t> in(count), out(count);
  for (size_t i = 0; i < count; ++i) in[i] = input(i, rank_);
  lf_status_t st = g ? lf_allreduce_g(g, in.data(), out.data(), count, LF_INT64, op)
                     : lf_allreduce(ctx, in.data(), out.data(), count, LF_INT64, op);
  if (st != LF_OK) die("allreduce", st);
  for (size_t i = 0; i < count; ++i) {
    int64_t want = input(i, members[0]);
    for (size_t k = 1; k < members.size(); ++k) {
      int64_t v = input(i, members[k]);
      want = op == LF_SUM ? want + v : op == LF_MAX ? (v > want ? v : want) : (v < want ? v : want);
    }
    if (out[i] != want) {
      std::printf("coll fail %d: allreduce of %zu (op %d) over %zu ranks: element %zu is %lld, want %lld\n", rank_,
                  count, op, members.size(), i, static_cast<long long>(out[i]), static_cast<long long>(want));
      std::exit(1);
    }
  }
}

}  // namespace

int main() {
  lf_context_t ctx;
  if (lf_status_t st = lf_init(&ctx); st != LF_OK) die("lf_init", st);
  rank_ = lf_rank(ctx);
  const int n = lf_size(ctx);
  for (int p = 0; p < n; ++p)
    if (p != rank_) std::printf("scope %d %d %s\n", rank_, p, lf_scope(ctx, p) == LF_SCOPE_LOCAL ? "local" : "remote");
  std::vector<int> world(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) world[static_cast<size_t>(i)] = i;
  // Small (recursive doubling among the leaders), uneven, and large (ring
  // among the leaders, several segments).
  for (size_t count : {size_t(0), size_t(1), size_t(1001), size_t(300007)})
    for (lf_op_t op : {LF_SUM, LF_MAX, LF_MIN}) check(ctx, nullptr, world, count, op);
  // Groups across the hosts, in an order that is not the world's.
  std::vector<std::vector<int>> lists = {{n - 1, 0}, {}};
  for (int i = n - 1; i >= 0; --i) lists[1].push_back(i);
  for (const auto &members : lists) {
    lf_group_t g;
    if (lf_status_t st = lf_group_create(ctx, members.data(), static_cast<int>(members.size()), &g); st != LF_OK)
      die("lf_group_create", st);
    if (lf_group_rank(g) >= 0)
      for (size_t count : {size_t(3), size_t(200001)}) check(ctx, g, members, count, LF_SUM);
    if (lf_status_t st = lf_group_free(g); st != LF_OK) die("lf_group_free", st);
  }
  std::printf("coll ok %d\n", rank_);
  std::fflush(stdout);
  if (lf_status_t st = lf_finalize(ctx); st != LF_OK) die("lf_finalize", st);
  return 0;
}
