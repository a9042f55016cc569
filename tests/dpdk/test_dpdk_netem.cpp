// The dpdk transport between two namespace hosts (scripts/netns-hosts.sh)
// over net_af_packet on their veth (LF_DPDK_PORT=eth0), with tc netem on
// both hosts' eth0 losing, duplicating and reordering frames: both
// checksummed streams arrive whole, in order, intact. Then the same without
// netem, checking that the frames really crossed the veth, and with the
// transport's own fault injection where the kernel has no netem, and with
// an MTU that differs between the two ends of the wire.
//
// Needs root (network namespaces, tc, raw sockets); skipped with the reason
// otherwise.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>

#include "netns_hosts.hpp"

using namespace lftest;

namespace {

class DpdkNetem : public NamespaceHosts {
 protected:
  static void SetUpTestSuite() {
    make_hosts("lfd");
    if (!skip_reason().empty()) return;
    if (!sh_ok("which tc")) {
      skip_reason() = "iproute2's tc unavailable";
      return;
    }
    if (sh_on_host(1, "tc qdisc add dev eth0 root netem delay 0ms"))
      sh_on_host(1, "tc qdisc del dev eth0 root");
    else
      no_netem() = "tc netem unavailable in this kernel (qdisc sch_netem): " +
                   shell_output("ip netns exec " + prefix() + "-h1 tc qdisc add dev eth0 root netem delay 0ms 2>&1");
  }
  static std::string &no_netem() {
    static std::string r;
    return r;
  }
  void TearDown() override {
    NamespaceHosts::TearDown();
    for (int h : {1, 2}) {
      sh_on_host(h, "tc qdisc del dev eth0 root");
      set_mtu(h, 1500);
    }
  }

  /// Both ends of host h's veth (its eth0 and its port on the bridge).
  static bool set_mtu(int h, int mtu) {
    const std::string n = std::to_string(h), m = std::to_string(mtu);
    return sh_ok("ip -n " + prefix() + "-h" + n + " link set eth0 mtu " + m) &&
           sh_ok("ip -n " + prefix() + "-sw link set h" + n + " mtu " + m);
  }

  /// Frames host h's eth0 received.
  static uint64_t rx_packets(int host) {
    return std::strtoull(shell_output("ip netns exec " + prefix() + "-h" + std::to_string(host) +
                                      " cat /sys/class/net/eth0/statistics/rx_packets")
                             .c_str(),
                         nullptr, 10);
  }

  /// Two ranks, one per host; a second pair (`pair` 1) bootstraps on a
  /// port of its own.
  void start_pair(int count, Env extra = {}, int pair = 0, size_t size = 0) {
    const std::string boot = "tcp://10.77.0.1:" + std::to_string(4800 + 150 * pair + getpid() % 150);
    for (int rank = 0; rank < 2; ++rank) {
      std::vector<std::string> argv = on_host(rank + 1, {LF_DPDK_RANK, "stream", std::to_string(count)});
      if (size) argv.push_back(std::to_string(size));
      Env e = {{"LF_TRANSPORTS", "dpdk"}, {"LF_STRICT", "1"}, {"LF_DPDK_PORT", "eth0"}, {"LF_LOG_LEVEL", "error"}};
      for (auto &[k, v] : extra) e[k] = v;
      procs.spawn(argv, rank_env(rank, 2, boot, e));
    }
  }

  void expect_ok(size_t first = 0) {
    ASSERT_TRUE(procs.wait_all(120)) << procs.dump();
    for (size_t r = first; r < first + 2; ++r) {
      EXPECT_EQ(procs[r].exit_code(), 0) << procs.dump();
      ASSERT_EQ(procs[r].lines("channel ").size(), 1u) << procs.dump();
      EXPECT_NE(procs[r].lines("channel ")[0].find(" dpdk "), std::string::npos) << procs.dump();
      EXPECT_NE(procs[r].lines("channel ")[0].find("af_packet"), std::string::npos) << procs.dump();
      EXPECT_EQ(procs[r].lines("ok ").size(), 1u) << procs.dump();
    }
  }
};

TEST_F(DpdkNetem, StreamsCrossTheVeth) {
  const uint64_t rx2 = rx_bytes(2);
  start_pair(3000);
  expect_ok();
  std::istringstream in(procs[1].lines("ok ")[0]);
  std::string ok, rank;
  uint64_t bytes = 0;
  in >> ok >> rank >> bytes;
  EXPECT_GE(rx_bytes(2) - rx2, bytes) << "host 2 received less than rank 1 did: frames did not cross the veth";
}

TEST_F(DpdkNetem, LossDuplicationAndReorderingAreRepaired) {
  if (!no_netem().empty()) GTEST_SKIP() << no_netem();
  for (int h : {1, 2})
    ASSERT_TRUE(sh_on_host(h, "tc qdisc add dev eth0 root netem loss 1% duplicate 1% delay 1ms reorder 25% 50%"));
  start_pair(2000);
  expect_ok();
}

// A rank killed mid-stream, and a new pair on the same two hosts while the
// killed rank's partner still retransmits to it: every af_packet port of a
// host sees every frame on its interface, so the new rank 1 receives the
// old flow's frames (same ranks, same channel, same MAC) and must tell them
// from its own by their epochs. The new pair's checksummed streams must
// come through whole, and the old partner must give its peer up as gone.
TEST_F(DpdkNetem, ANewPairIgnoresTheFramesOfAKilledOne) {
  start_pair(1000000, {{"LF_DPDK_PEER_TIMEOUT", "3"}});
  ASSERT_TRUE(procs.wait_until(60, [&] {
    return procs[0].lines("channel ").size() + procs[1].lines("channel ").size() == 2;
  })) << procs.dump();
  kill(procs[1].pid, SIGKILL);
  start_pair(2000, {}, 1);
  expect_ok(2);
  EXPECT_EQ(procs[0].exit_code(), 1) << procs.dump();
  ASSERT_EQ(procs[0].lines("fail ").size(), 1u) << procs.dump();
  EXPECT_NE(procs[0].lines("fail ")[0].find("PEER_GONE"), std::string::npos) << procs.dump();
}

// Both hosts' links take 9000-byte frames: messages of 60,000 bytes go as
// jumbo frames (chains of mbufs on send), so host 2 receives frames of more
// than 1514 bytes on average, which 1500-byte frames cannot give.
TEST_F(DpdkNetem, JumboFramesOnANineThousandByteMtu) {
  ASSERT_TRUE(set_mtu(1, 9000));
  ASSERT_TRUE(set_mtu(2, 9000));
  const uint64_t b0 = rx_bytes(2), p0 = rx_packets(2);
  start_pair(1000, {}, 0, 60000);
  expect_ok();
  const uint64_t bytes = rx_bytes(2) - b0, packets = rx_packets(2) - p0;
  ASSERT_GT(packets, 0u);
  EXPECT_GT(bytes / packets, 1514u) << bytes << " bytes in " << packets << " frames";
}

// Host 2's link takes 1280-byte frames, host 1's 1500: the bridge drops
// host 1's larger frames to host 2 unseen, so both ends must cut frames to
// the smaller MTU (published in the address), not lose them silently.
TEST_F(DpdkNetem, MtuMismatchBetweenTheEndsIsNegotiated) {
  ASSERT_TRUE(set_mtu(2, 1280));
  start_pair(1000);
  expect_ok();
}

// The same faults from the transport itself (LF_DPDK_FAULTS), which runs
// where the kernel has no netem.
TEST_F(DpdkNetem, InjectedFaultsOnTheVethAreRepaired) {
  start_pair(2000, {{"LF_DPDK_FAULTS", "loss=1,dup=1,reorder=2"}});
  expect_ok();
}

}  // namespace
