// The standalone bootstrap across real processes (issue 2): ranks started
// with LF_RANK/LF_SIZE/LF_BOOTSTRAP find each other over a Unix socket or
// TCP, agree on rank, size and scope, pass barriers, and time out with the
// missing rank named when one never arrives. Plus the C API's answers to bad
// input (NULL, out-of-range ranks, finalized contexts).
#include <gtest/gtest.h>
#include <lavaflow/lavaflow.h>

#include <chrono>

#include "multiprocess.hpp"

using namespace lftest;

namespace {

class Bootstrap : public ::testing::Test {
 protected:
  void TearDown() override { procs.kill_all(); }

  /// Start `size` workers running `scenario`; `skip` ranks are left out.
  void start(int size, const std::string &address, const std::string &scenario, int skip = -1, Env extra = {}) {
    for (int r = 0; r < size; ++r)
      if (r != skip) procs.spawn({LF_RANK_WORKER, scenario}, rank_env(r, size, address, extra));
  }

  void expect_world(int size) {
    ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
    for (size_t i = 0; i < procs.size(); ++i) {
      const Proc &c = procs[i];
      EXPECT_EQ(c.exit_code(), 0) << procs.dump();
      EXPECT_EQ(c.lines("init " + std::to_string(i) + " " + std::to_string(size)).size(), 1u) << procs.dump();
      EXPECT_EQ(c.lines("done " + std::to_string(i)).size(), 1u) << procs.dump();
      // Same host, same namespaces: every peer is local, the rank itself self.
      for (int p = 0; p < size; ++p) {
        std::string want = "scope " + std::to_string(i) + " " + std::to_string(p) + " " +
                           (static_cast<size_t>(p) == i ? "self" : "local");
        EXPECT_EQ(c.lines(want).size(), 1u) << "missing '" << want << "'\n" << procs.dump();
      }
    }
  }

  Procs procs;
};

TEST_F(Bootstrap, ThreeRanksOverAUnixSocket) {
  std::string path = "/tmp/lf-bootstrap-test-" + std::to_string(getpid()) + ".sock";
  start(3, "unix:" + path, "scope");
  expect_world(3);
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "rank 0 leaves its socket file behind";
}

TEST_F(Bootstrap, FourRanksOverTcpLoopback) {
  start(4, "tcp://127.0.0.1:" + std::to_string(free_port()), "scope");
  expect_world(4);
}

TEST_F(Bootstrap, MissingRankTimesOutAndIsNamed) {
  // Rank 2 of 3 never starts: rank 0 must give up after LF_BOOTSTRAP_TIMEOUT
  // with LF_ERR_TIMEOUT and say which rank is missing.
  auto t0 = std::chrono::steady_clock::now();
  start(3, "tcp://127.0.0.1:" + std::to_string(free_port()), "init", /*skip=*/2, {{"LF_BOOTSTRAP_TIMEOUT", "2"}});
  ASSERT_TRUE(procs.wait_all(30)) << "bootstrap hung instead of timing out\n" << procs.dump();
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Proc &root = procs[0];
  EXPECT_EQ(root.exit_code(), 2) << procs.dump();
  auto err = root.lines("error -1 lf_init: LF_ERR_TIMEOUT");
  ASSERT_EQ(err.size(), 1u) << procs.dump();
  EXPECT_NE(err[0].find("missing rank(s) 2"), std::string::npos) << err[0];
  EXPECT_GE(took, 1.9);
  EXPECT_LT(took, 20.0);
  // The rank that did arrive learns that the bootstrap failed; it must not hang.
  EXPECT_EQ(procs[1].exit_code(), 2) << procs.dump();
  EXPECT_EQ(procs[1].lines("error -1 lf_init:").size(), 1u) << procs.dump();
}

TEST_F(Bootstrap, RootThatNeverComesTimesOut) {
  // Only rank 1 starts: it cannot reach rank 0 and must time out too.
  start(2, "unix:/tmp/lf-bootstrap-absent-" + std::to_string(getpid()) + ".sock", "init", /*skip=*/0,
        {{"LF_BOOTSTRAP_TIMEOUT", "1"}});
  ASSERT_TRUE(procs.wait_all(30)) << procs.dump();
  EXPECT_EQ(procs[0].exit_code(), 2);
  auto err = procs[0].lines("error -1 lf_init: LF_ERR_TIMEOUT");
  ASSERT_EQ(err.size(), 1u) << procs.dump();
  EXPECT_NE(err[0].find("rank 1 could not reach rank 0"), std::string::npos) << err[0];
}

TEST_F(Bootstrap, BadEnvironmentIsAnError) {
  // Rank outside the world, and no rendezvous address: lf_init refuses.
  procs.spawn({LF_RANK_WORKER, "init"}, rank_env(5, 2, "tcp://127.0.0.1:1"));
  procs.spawn({LF_RANK_WORKER, "init"}, {{"LF_RANK", "0"}, {"LF_SIZE", "2"}});
  procs.spawn({LF_RANK_WORKER, "init"}, rank_env(0, 2, "carrier-pigeon://nowhere"));
  ASSERT_TRUE(procs.wait_all(30)) << procs.dump();
  EXPECT_EQ(procs[0].lines("error -1 lf_init: LF_ERR_INVALID_ARG").size(), 1u) << procs.dump();
  EXPECT_NE(procs[0].output.find("rank 5 is not in a world of 2"), std::string::npos) << procs.dump();
  EXPECT_EQ(procs[1].lines("error -1 lf_init: LF_ERR_INVALID_ARG").size(), 1u) << procs.dump();
  EXPECT_NE(procs[1].output.find("LF_BOOTSTRAP is not"), std::string::npos) << procs.dump();
  EXPECT_EQ(procs[2].lines("error -1 lf_init: LF_ERR_INVALID_ARG").size(), 1u) << procs.dump();
}

// ---- bad input on the core C API (this process, a world of one) ---------------

class CoreApiBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char *v : {"LF_RANK", "LF_SIZE", "LF_BOOTSTRAP", "LF_BOOTSTRAP_MODE"}) unsetenv(v);
  }
};

TEST_F(CoreApiBadInput, NullContext) {
  EXPECT_EQ(lf_init(nullptr), LF_ERR_INVALID_ARG);
  EXPECT_NE(std::string(lf_last_error()).find("NULL"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_rank(nullptr), -1);
  EXPECT_NE(std::string(lf_last_error()).find("NULL"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_size(nullptr), -1);
  EXPECT_EQ(lf_barrier(nullptr), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_scope(nullptr, 0), LF_SCOPE_INVALID);
  EXPECT_EQ(lf_finalize(nullptr), LF_ERR_INVALID_ARG);
  char buf[64];
  EXPECT_EQ(lf_scope_explain(nullptr, 0, buf, sizeof buf), LF_ERR_INVALID_ARG);
  EXPECT_STREQ(lf_scope_string(LF_SCOPE_INVALID), "invalid");
}

TEST_F(CoreApiBadInput, RankOutOfRange) {
  lf_context_t ctx = nullptr;
  ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
  for (int peer : {-1, 1, 1 << 30}) {
    EXPECT_EQ(lf_scope(ctx, peer), LF_SCOPE_INVALID) << peer;
    EXPECT_NE(std::string(lf_last_error()).find("out of range"), std::string::npos) << lf_last_error();
    char buf[64];
    EXPECT_EQ(lf_scope_explain(ctx, peer, buf, sizeof buf), LF_ERR_INVALID_ARG);
    size_t needed = 0;
    EXPECT_EQ(lf_location_json(ctx, peer, buf, sizeof buf, &needed), LF_ERR_INVALID_ARG);
  }
  char small[4];
  EXPECT_EQ(lf_scope_explain(ctx, 0, nullptr, 10), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_scope_explain(ctx, 0, small, 0), LF_ERR_INVALID_ARG);
  EXPECT_EQ(lf_scope_explain(ctx, 0, small, sizeof small), LF_OK);  // truncated, NUL-terminated
  EXPECT_EQ(small[3], '\0');
  EXPECT_EQ(lf_finalize(ctx), LF_OK);
}

TEST_F(CoreApiBadInput, FinalizedContext) {
  lf_context_t ctx = nullptr;
  ASSERT_EQ(lf_init(&ctx), LF_OK) << lf_last_error();
  ASSERT_EQ(lf_finalize(ctx), LF_OK);
  EXPECT_EQ(lf_rank(ctx), -1);
  EXPECT_NE(std::string(lf_last_error()).find("finalized"), std::string::npos) << lf_last_error();
  EXPECT_EQ(lf_size(ctx), -1);
  EXPECT_EQ(lf_barrier(ctx), LF_ERR_CLOSED);
  EXPECT_EQ(lf_scope(ctx, 0), LF_SCOPE_INVALID);
  EXPECT_EQ(lf_finalize(ctx), LF_ERR_CLOSED);
  lf_channel_t ch = nullptr;
  EXPECT_LT(lf_channel_open(ctx, 0, &ch), 0);
  EXPECT_EQ(ch, nullptr);
}

}  // namespace
