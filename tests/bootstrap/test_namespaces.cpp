// Two ranks on one kernel, each in its own IPC and UTS namespace (unshare),
// must see each other as REMOTE: shared memory between them is impossible
// even though the kernel (boot id) is the same. Without unshare the same two
// ranks are LOCAL. Needs root (CI runs as root); skipped otherwise.
#include <gtest/gtest.h>

#include "multiprocess.hpp"

using namespace lftest;

namespace {

class Namespaces : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!is_root()) GTEST_SKIP() << "needs root to create IPC/UTS namespaces (unshare --ipc --uts)";
    if (!sh_ok("unshare --ipc --uts true"))
      GTEST_SKIP() << "unshare --ipc --uts does not work here (no CAP_SYS_ADMIN, or a seccomp profile forbids it)";
  }
  void TearDown() override { procs.kill_all(); }

  /// Rank `rank` of 2, in fresh IPC+UTS namespaces with hostname `host` when
  /// `host` is not empty.
  void start(int rank, const std::string &bootstrap, const std::string &host) {
    std::vector<std::string> argv;
    if (!host.empty())
      argv = {"unshare", "--ipc", "--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", host, LF_RANK_WORKER, "scope"};
    else
      argv = {LF_RANK_WORKER, "scope"};
    procs.spawn(argv, rank_env(rank, 2, bootstrap));
  }

  Procs procs;
};

TEST_F(Namespaces, SeparateIpcAndUtsNamespacesAreRemote) {
  std::string addr = "tcp://127.0.0.1:" + std::to_string(free_port());
  start(0, addr, "lf-ns-a");
  start(1, addr, "lf-ns-b");
  ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(procs[static_cast<size_t>(r)].exit_code(), 0) << procs.dump();
    auto s = procs[static_cast<size_t>(r)].lines("scope " + std::to_string(r) + " " + std::to_string(1 - r) + " ");
    ASSERT_EQ(s.size(), 1u) << procs.dump();
    EXPECT_NE(s[0].find(" remote "), std::string::npos) << s[0];
    EXPECT_NE(s[0].find("IPC namespace"), std::string::npos) << "the reason should name the IPC namespace: " << s[0];
  }
}

TEST_F(Namespaces, SameNamespacesAreLocal) {
  std::string addr = "tcp://127.0.0.1:" + std::to_string(free_port());
  start(0, addr, "");
  start(1, addr, "");
  ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(procs[static_cast<size_t>(r)].exit_code(), 0) << procs.dump();
    auto s = procs[static_cast<size_t>(r)].lines("scope " + std::to_string(r) + " " + std::to_string(1 - r) + " local");
    EXPECT_EQ(s.size(), 1u) << procs.dump();
  }
}

TEST_F(Namespaces, OnlyTheIpcNamespaceDiffersStillRemote) {
  // Same hostname (no UTS change), different IPC namespace: still remote.
  std::string addr = "tcp://127.0.0.1:" + std::to_string(free_port());
  for (int r = 0; r < 2; ++r) procs.spawn({"unshare", "--ipc", LF_RANK_WORKER, "scope"}, rank_env(r, 2, addr));
  ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
  for (int r = 0; r < 2; ++r) {
    auto s =
        procs[static_cast<size_t>(r)].lines("scope " + std::to_string(r) + " " + std::to_string(1 - r) + " remote");
    EXPECT_EQ(s.size(), 1u) << procs.dump();
  }
}

}  // namespace
