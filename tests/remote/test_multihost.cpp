// Multi-host tests on one machine. scripts/netns-hosts.sh builds two test
// "hosts" (network + UTS + IPC namespaces on a private bridge, 10.77.0.x);
// ranks are started on them with the standalone bootstrap at
// tcp://10.77.0.1:<port>. Checked: scope (remote across hosts, local within),
// the transport each channel picks (shm within a host, tcp across), that the
// bytes really cross the virtual wire (eth0 counters of the receiving host),
// checksummed and ordered streams, and a peer that dies.
//
// Needs root and iproute2 (CI runs as root); skipped with the reason
// otherwise.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>

#include "netns_hosts.hpp"

using namespace lftest;

namespace {

class MultiHost : public NamespaceHosts {
 protected:
  static void SetUpTestSuite() { make_hosts("lfm"); }

  /// Start rank `rank` of `size` on host `host` (1 or 2).
  void start(int rank, int size, int host, std::vector<std::string> args, Env extra = {}) {
    args.insert(args.begin(), LF_RANK_WORKER);
    procs.spawn(on_host(host, std::move(args)), rank_env(rank, size, "tcp://10.77.0.1:4750", std::move(extra)));
  }

  /// Field `k` (0-based) of the one line of child `i` starting with `prefix`.
  std::string field(size_t i, const std::string &line_prefix, int k) {
    auto l = procs[i].lines(line_prefix);
    if (l.size() != 1) return "<" + std::to_string(l.size()) + " lines '" + line_prefix + "'>";
    std::istringstream in(l[0]);
    std::string w;
    for (int j = 0; j <= k; ++j) in >> w;
    return w;
  }

  /// Every rank finished; every stream it received matches what its peer
  /// says it sent (bytes and checksum). Returns bytes sent from `from` to `to`.
  uint64_t bytes_between(int from, int to) {
    std::string key = std::to_string(from) + " " + std::to_string(to) + " ";
    return std::stoull(field(static_cast<size_t>(from), "sent " + key, 4));
  }

  void expect_streams(int size) {
    for (int r = 0; r < size; ++r) {
      EXPECT_EQ(procs[static_cast<size_t>(r)].exit_code(), 0) << procs.dump();
      for (int p = 0; p < size; ++p) {
        if (p == r) continue;
        std::string sent = "sent " + std::to_string(p) + " " + std::to_string(r) + " ";
        std::string got = "stream " + std::to_string(r) + " " + std::to_string(p) + " ";
        EXPECT_EQ(field(static_cast<size_t>(r), got, 4), field(static_cast<size_t>(p), sent, 4)) << "bytes";
        EXPECT_EQ(field(static_cast<size_t>(r), got, 5), field(static_cast<size_t>(p), sent, 5)) << "checksum";
      }
    }
  }
};

TEST_F(MultiHost, TwoRanksOnTwoHostsUseTcpOverTheWire) {
  uint64_t rx1 = rx_bytes(1), rx2 = rx_bytes(2);
  start(0, 2, 1, {"stream", "44"});
  start(1, 2, 2, {"stream", "44"});
  ASSERT_TRUE(procs.wait_all(120)) << procs.dump();
  // Different hosts: remote, and the reason says why.
  EXPECT_EQ(field(0, "scope 0 1 ", 3), "remote") << procs.dump();
  EXPECT_NE(procs[0].lines("scope 0 1 ")[0].find("hostnames differ"), std::string::npos) << procs.dump();
  EXPECT_EQ(field(1, "scope 1 0 ", 3), "remote");
  EXPECT_EQ(field(0, "channel 0 1 ", 3), "tcp") << procs.dump();
  EXPECT_EQ(field(1, "channel 1 0 ", 3), "tcp");
  expect_streams(2);
  // What rank 0 sent arrived through host 2's eth0 and vice versa.
  uint64_t d1 = rx_bytes(1) - rx1, d2 = rx_bytes(2) - rx2;
  EXPECT_GE(d2, bytes_between(0, 1)) << "host 2 received less than rank 0 sent it: traffic did not cross the veth";
  EXPECT_GE(d1, bytes_between(1, 0));
  EXPECT_GT(bytes_between(0, 1), 10u << 20);
}

#ifdef LF_HAVE_UCX
// The ucx transport between the hosts, on UCX's tcp lane over the veth (no
// RDMA device here): the same streams and the same proof that the bytes
// crossed the wire.
TEST_F(MultiHost, TwoRanksOnTwoHostsOverUcx) {
  const Env ucx = {{"LF_TRANSPORTS", "ucx"}, {"LF_STRICT", "1"}, {"LF_UCX_START_ALWAYS", "1"}, {"UCX_TLS", "tcp,self"}};
  uint64_t rx1 = rx_bytes(1), rx2 = rx_bytes(2);
  start(0, 2, 1, {"stream", "44"}, ucx);
  start(1, 2, 2, {"stream", "44"}, ucx);
  ASSERT_TRUE(procs.wait_all(120)) << procs.dump();
  EXPECT_EQ(field(0, "channel 0 1 ", 3), "ucx") << procs.dump();
  EXPECT_EQ(field(1, "channel 1 0 ", 3), "ucx") << procs.dump();
  expect_streams(2);
  EXPECT_GE(rx_bytes(2) - rx2, bytes_between(0, 1)) << "host 2 received less than rank 0 sent it";
  EXPECT_GE(rx_bytes(1) - rx1, bytes_between(1, 0));
}
#endif

TEST_F(MultiHost, FourRanksOnTwoHostsPickShmWithinAndTcpAcross) {
  uint64_t rx2 = rx_bytes(2);
  // Ranks 0,1 on host 1; ranks 2,3 on host 2. Each rank opens its channels
  // in its own order (the worker rotates), across transports.
  for (int r = 0; r < 4; ++r) start(r, 4, r < 2 ? 1 : 2, {"stream", "22"});
  ASSERT_TRUE(procs.wait_all(180)) << procs.dump();
  for (int r = 0; r < 4; ++r)
    for (int p = 0; p < 4; ++p) {
      if (p == r) continue;
      bool same_host = (r < 2) == (p < 2);
      std::string key = std::to_string(r) + " " + std::to_string(p) + " ";
      EXPECT_EQ(field(static_cast<size_t>(r), "scope " + key, 3), same_host ? "local" : "remote") << key;
      EXPECT_EQ(field(static_cast<size_t>(r), "channel " + key, 3), same_host ? "shm" : "tcp") << key << procs.dump();
    }
  expect_streams(4);
  uint64_t cross = 0;
  for (int from : {0, 1})
    for (int to : {2, 3}) cross += bytes_between(from, to);
  EXPECT_GE(rx_bytes(2) - rx2, cross) << "host 2 must have received every byte ranks 0 and 1 sent to ranks 2 and 3";
}

TEST_F(MultiHost, PeerOnTheOtherHostDiesAndIsReportedPromptly) {
  start(0, 2, 1, {"die"});
  start(1, 2, 2, {"die"});
  ASSERT_TRUE(procs.wait_all(60)) << procs.dump();
  EXPECT_EQ(field(1, "dying ", 1), "1") << procs.dump();
  EXPECT_EQ(field(0, "gone 0 1 ", 3), "LF_ERR_PEER_GONE") << procs.dump();
  std::string ms = field(0, "gone 0 1 ", 4);
  ASSERT_FALSE(ms.empty());
  EXPECT_LT(std::stol(ms), 2000) << "the death of rank 1 took " << ms << " ms to notice";
  EXPECT_EQ(procs[0].exit_code(), 0) << procs.dump();
}

#ifdef LF_MPIEXEC
TEST_F(MultiHost, MpirunAcrossHostsUsesMpiAcrossAndShmWithin) {
  // mpirun runs on host 1 and starts host 2's daemon through the script's
  // ssh stand-in; 2 ranks per host.
  uint64_t rx2 = rx_bytes(2);
  std::string h1 = prefix() + "-host1:2", h2 = prefix() + "-host2:2";
  procs.spawn(
      on_host(1, {LF_MPIEXEC, "--allow-run-as-root", "--oversubscribe", "--mca", "plm_rsh_agent", script() + " rsh",
                  "--host", h1 + "," + h2, "-np", "4", LF_RANK_WORKER, "stream", "22", "mpi"}));
  ASSERT_TRUE(procs.wait_all(240)) << procs.dump();
  ASSERT_EQ(procs[0].exit_code(), 0) << procs.dump();
  const Proc &out = procs[0];  // every rank's lines, through mpirun
  auto one = [&](const std::string &line_prefix, int k) {
    auto l = out.lines(line_prefix);
    if (l.size() != 1) return "<" + std::to_string(l.size()) + " lines '" + line_prefix + "'>";
    std::istringstream in(l[0]);
    std::string w;
    for (int j = 0; j <= k; ++j) in >> w;
    return w;
  };
  uint64_t cross = 0;
  for (int r = 0; r < 4; ++r)
    for (int p = 0; p < 4; ++p) {
      if (p == r) continue;
      bool same_host = (r < 2) == (p < 2);  // mpirun fills host 1 first
      std::string key = std::to_string(r) + " " + std::to_string(p) + " ";
      EXPECT_EQ(one("scope " + key, 3), same_host ? "local" : "remote") << key << procs.dump();
      EXPECT_EQ(one("channel " + key, 3), same_host ? "shm" : "mpi") << key;
      std::string back = std::to_string(p) + " " + std::to_string(r) + " ";
      EXPECT_EQ(one("stream " + key, 5), one("sent " + back, 5)) << "checksum of " << back;
      if (!same_host && r < 2) cross += std::stoull(one("sent " + key, 4));
    }
  EXPECT_GE(rx_bytes(2) - rx2, cross) << "MPI traffic between the hosts must cross the veth";
}
#endif

}  // namespace
