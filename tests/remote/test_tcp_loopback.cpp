// The tcp transport end to end between real processes on one host (no root
// needed): ranks started with the standalone bootstrap and LF_TRANSPORTS=tcp
// exchange checksummed, ordered streams of many sizes; four ranks open their
// channels in four different orders; a peer that dies is reported promptly.
#include <gtest/gtest.h>

#include <sstream>

#include "procs.hpp"

using namespace lftest;

namespace {

class TcpLoopback : public ::testing::Test {
 protected:
  void TearDown() override { procs.kill_all(); }
  void start(int size, const std::vector<std::string> &args) {
    std::string addr = "tcp://127.0.0.1:" + std::to_string(free_port());
    for (int r = 0; r < size; ++r) {
      std::vector<std::string> argv = {LF_RANK_WORKER};
      argv.insert(argv.end(), args.begin(), args.end());
      procs.spawn(argv, rank_env(r, size, addr, {{"LF_TRANSPORTS", "tcp"}}));
    }
  }
  std::string word(size_t child, const std::string &prefix, int k) {
    auto l = procs[child].lines(prefix);
    if (l.size() != 1) return "<" + std::to_string(l.size()) + " lines '" + prefix + "'>";
    std::istringstream in(l[0]);
    std::string w;
    for (int j = 0; j <= k; ++j) in >> w;
    return w;
  }
  void expect_streams(int size) {
    for (int r = 0; r < size; ++r) {
      EXPECT_EQ(procs[static_cast<size_t>(r)].exit_code(), 0) << procs.dump();
      for (int p = 0; p < size; ++p) {
        if (p == r) continue;
        std::string got = "stream " + std::to_string(r) + " " + std::to_string(p) + " ";
        std::string sent = "sent " + std::to_string(p) + " " + std::to_string(r) + " ";
        EXPECT_EQ(word(static_cast<size_t>(r), "channel " + std::to_string(r) + " " + std::to_string(p) + " ", 3),
                  "tcp");
        EXPECT_EQ(word(static_cast<size_t>(r), got, 5), word(static_cast<size_t>(p), sent, 5)) << got;
        EXPECT_EQ(word(static_cast<size_t>(r), got, 4), word(static_cast<size_t>(p), sent, 4)) << got;
      }
    }
  }
  Procs procs;
};

TEST_F(TcpLoopback, TwoRanksStream) {
  start(2, {"stream", "66"});
  ASSERT_TRUE(procs.wait_all(120)) << procs.dump();
  expect_streams(2);
}

TEST_F(TcpLoopback, FourRanksOpeningChannelsInDifferentOrders) {
  start(4, {"stream", "22"});
  ASSERT_TRUE(procs.wait_all(180)) << procs.dump();
  expect_streams(4);
}

TEST_F(TcpLoopback, PeerDeathIsReportedPromptly) {
  start(2, {"die"});
  ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
  EXPECT_EQ(word(0, "gone 0 1 ", 3), "LF_ERR_PEER_GONE") << procs.dump();
  std::string ms = word(0, "gone 0 1 ", 4);
  EXPECT_LT(std::atol(ms.c_str()), 2000) << ms;
  EXPECT_EQ(procs[0].exit_code(), 0) << procs.dump();
}

}  // namespace
