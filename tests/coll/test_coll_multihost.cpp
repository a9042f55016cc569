// Collectives across two namespace hosts (scripts/netns-hosts.sh: network,
// UTS and IPC namespaces on a private bridge), 2 ranks per host: shared
// memory within a host, tcp across. Allreduce over the world (hierarchical,
// forced and by default, and the flat ring for comparison) and over groups
// that span the hosts, checked element by element by lf_coll_worker.
//
// Needs root and iproute2; skipped with the reason otherwise.
#include <gtest/gtest.h>

#include "netns_hosts.hpp"

using namespace lftest;

namespace {

class CollMultiHost : public NamespaceHosts {
 protected:
  static void SetUpTestSuite() { make_hosts("lfc"); }

  // Ranks 0 and 1 on host 1, 2 and 3 on host 2.
  // `uses`: what the allreduce's choice, logged at info, must name.
  void run_world(const std::string &algo, const std::string &uses) {
    for (int r = 0; r < 4; ++r) {
      Env env = rank_env(r, 4, "tcp://10.77.0.1:4751", {{"LF_LOG_LEVEL", "info"}});
      if (!algo.empty()) env["LF_COLL_ALGO"] = algo;
      procs.spawn(on_host(r < 2 ? 1 : 2, {LF_COLL_WORKER}), env);
    }
    ASSERT_TRUE(procs.wait_all(240)) << procs.dump();
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(procs[static_cast<size_t>(r)].exit_code(), 0) << procs.dump();
      EXPECT_EQ(procs[static_cast<size_t>(r)].lines("coll ok ").size(), 1u) << procs.dump();
      EXPECT_NE(procs[static_cast<size_t>(r)].output.find("allreduce over 4 ranks uses " + uses), std::string::npos)
          << procs.dump();
      for (int p = 0; p < 4; ++p) {
        if (p == r) continue;
        auto l = procs[static_cast<size_t>(r)].lines("scope " + std::to_string(r) + " " + std::to_string(p) + " ");
        ASSERT_EQ(l.size(), 1u) << procs.dump();
        EXPECT_NE(l[0].find((r < 2) == (p < 2) ? "local" : "remote"), std::string::npos) << l[0];
      }
    }
  }
};

TEST_F(CollMultiHost, HierarchicalTwoRanksPerHost) { run_world("hier", "hierarchical"); }
TEST_F(CollMultiHost, DefaultChoiceIsHierarchical) { run_world("", "hierarchical"); }
TEST_F(CollMultiHost, FlatRingTwoRanksPerHost) { run_world("ring", "ring"); }

}  // namespace
