// The dpdk transport in one process: its frame format (encode, decode and
// every refusal), the sequence rule of its receive window, its published
// address, and the EAL's failure reason (in a forked child, since the EAL
// starts once per process).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "multiprocess.hpp"
#include "transport/dpdk/dpdk_eal.hpp"
#include "transport/dpdk/dpdk_frame.hpp"
#include "transport/dpdk/dpdk_net.hpp"
#include "transport/transport.hpp"

using namespace lf::dpdk;

namespace {

const Mac kA{{0x02, 0x4c, 0x46, 0, 0, 1}}, kB{{0x02, 0x4c, 0x46, 0, 0, 2}};

FrameHeader sample() {
  FrameHeader h;
  h.type = FrameType::data;
  h.flags = kFirst;
  h.len = 10;
  h.src_rank = 1;
  h.dst_rank = 0;
  h.src_epoch = 0xabcdef01;
  h.dst_epoch = 0x12345678;
  h.channel = 7;
  h.seq = 0xfffffffe;
  h.ack = 3;
  h.window = 256;
  h.sack = 0x8000000000000001ull;
  h.tag = 1ull << 63;
  h.msg_len = 9000;
  return h;
}

TEST(DpdkFrame, RoundTripsEveryField) {
  uint8_t f[kFrameOverhead + 10] = {};
  const FrameHeader h = sample();
  encode_frame(f, kB, kA, h);
  EXPECT_EQ(f[12], 0x88);
  EXPECT_EQ(f[13], 0xB5);
  FrameHeader d;
  Mac src;
  ASSERT_EQ(decode_frame(f, sizeof f, 2, &d, &src), nullptr);
  EXPECT_EQ(src, kA);
  EXPECT_EQ(d.type, h.type);
  EXPECT_EQ(d.flags, h.flags);
  EXPECT_EQ(d.len, h.len);
  EXPECT_EQ(d.src_rank, h.src_rank);
  EXPECT_EQ(d.dst_rank, h.dst_rank);
  EXPECT_EQ(d.src_epoch, h.src_epoch);
  EXPECT_EQ(d.dst_epoch, h.dst_epoch);
  EXPECT_EQ(d.channel, h.channel);
  EXPECT_EQ(d.seq, h.seq);
  EXPECT_EQ(d.ack, h.ack);
  EXPECT_EQ(d.window, h.window);
  EXPECT_EQ(d.sack, h.sack);
  EXPECT_EQ(d.tag, h.tag);
  EXPECT_EQ(d.msg_len, h.msg_len);
}

TEST(DpdkFrame, RefusesMalformedFramesWithAReason) {
  auto refused = [](FrameHeader h, size_t n, uint32_t world = 2, int poke = -1, uint8_t value = 0) {
    uint8_t f[kFrameOverhead + 64] = {};
    encode_frame(f, kB, kA, h);
    if (poke >= 0) f[poke] = value;
    FrameHeader d = sample();
    d.seq = 99;
    const char *why = decode_frame(f, n, world, &d);
    if (why) {
      EXPECT_EQ(d.seq, 99u) << "output written on refusal";
    }
    return why ? std::string(why) : std::string();
  };
  const FrameHeader h = sample();
  EXPECT_NE(refused(h, kFrameOverhead - 1), "");                // short
  EXPECT_NE(refused(h, kFrameOverhead + 9), "");                // payload beyond the frame
  EXPECT_NE(refused(h, kFrameOverhead + 10, 1), "");            // rank outside the world
  EXPECT_NE(refused(h, kFrameOverhead + 10, 2, 13, 0x00), "");  // EtherType
  EXPECT_NE(refused(h, kFrameOverhead + 10, 2, 14, 0x00), "");  // magic
  EXPECT_NE(refused(h, kFrameOverhead + 10, 2, 16, 2), "");     // version
  EXPECT_NE(refused(h, kFrameOverhead + 10, 2, 17, 9), "");     // type
  EXPECT_NE(refused(h, kFrameOverhead + 10, 2, 18, 0x80), "");  // flags
  EXPECT_NE(refused(h, kFrameOverhead + 10, 2, 19, 1), "");     // reserved
  FrameHeader self = h;
  self.dst_rank = 1;
  EXPECT_NE(refused(self, kFrameOverhead + 10), "");
  FrameHeader cont = h;
  cont.flags = 0;  // a continuation must not carry tag or length
  EXPECT_NE(refused(cont, kFrameOverhead + 10), "");
  FrameHeader single = h;
  single.flags = kFirst | kLast;  // 10 bytes of a 9000-byte message
  EXPECT_NE(refused(single, kFrameOverhead + 10), "");
  FrameHeader ack = h;
  ack.type = FrameType::ack;
  EXPECT_NE(refused(ack, kFrameOverhead + 10), "");  // payload on a control frame
  ack.flags = 0, ack.len = 0, ack.tag = 0, ack.msg_len = 0;
  EXPECT_EQ(refused(ack, kFrameOverhead), "");
  FrameHeader huge = h;
  huge.msg_len = kMaxMessage + 1;
  EXPECT_NE(refused(huge, kFrameOverhead + 10), "");
  // Ethernet padding after the payload is fine.
  EXPECT_EQ(refused(h, kFrameOverhead + 64), "");
}

TEST(DpdkFrame, SequenceRuleAcrossTheWrap) {
  EXPECT_TRUE(seq_before(0xffffffff, 0));
  EXPECT_FALSE(seq_before(0, 0xffffffff));
  EXPECT_EQ(classify_seq(5, 5, 4), SeqClass::in_order);
  EXPECT_EQ(classify_seq(5, 5, 0), SeqClass::beyond);  // window shut
  EXPECT_EQ(classify_seq(4, 5, 4), SeqClass::duplicate);
  EXPECT_EQ(classify_seq(8, 5, 4), SeqClass::ahead);
  EXPECT_EQ(classify_seq(9, 5, 4), SeqClass::beyond);
  EXPECT_EQ(classify_seq(1, 0xfffffffe, 4), SeqClass::ahead);
  EXPECT_EQ(classify_seq(0xfffffffd, 1, 4), SeqClass::duplicate);
}

TEST(DpdkAddress, ParsesWhatItPrints) {
  PeerAddress a;
  a.epoch = 0x1234abcd;
  a.host = "boot-id:4026531840";
  a.has_mac = true;
  a.mac = kA;
  PeerAddress b;
  ASSERT_TRUE(PeerAddress::parse(a.text(), &b)) << a.text();
  EXPECT_EQ(b.epoch, a.epoch);
  EXPECT_EQ(b.host, a.host);
  EXPECT_TRUE(b.has_mac);
  EXPECT_EQ(b.mac, a.mac);
  EXPECT_FALSE(PeerAddress::parse("", &b));
  EXPECT_FALSE(PeerAddress::parse("epoch=0;host=x", &b));
  EXPECT_FALSE(PeerAddress::parse("epoch=12;host=x;mac=zz", &b));
  EXPECT_FALSE(PeerAddress::parse("epoch=12;host=x;bogus=1", &b));
  EXPECT_FALSE(PeerAddress::parse("epoch=12", &b));
}

/// Run `body` in a forked child (the EAL starts once per process); the
/// child's text comes back, "" for success.
std::string in_child(const std::function<std::string()> &body) { return lftest::probe_in_child(body); }

TEST(DpdkEal, BadOptionsGiveAClearReasonEveryTime) {
  std::string r = in_child([] {
    setenv("LF_DPDK_EAL", "--no-huge --no-such-eal-option", 1);
    setenv("LF_TRANSPORTS", "dpdk", 1);
    // DPDK prints its usage for bad options: keep the test's output short.
    if (!freopen("/dev/null", "w", stderr) || !freopen("/dev/null", "w", stdout)) return std::string("freopen");
    auto st = ensure_eal();
    if (st) return std::string("the EAL started with a bad option");
    if (st.error().code != LF_ERR_UNAVAILABLE) return "code " + std::to_string(st.error().code);
    const std::string why = st.error().message;
    if (why.find("rte_eal_init") == std::string::npos || why.find("--no-such-eal-option") == std::string::npos)
      return "reason does not name the call and the options: " + why;
    auto again = ensure_eal();  // remembered: rte_eal_init cannot run twice
    if (again || again.error().message != why) return std::string("a second call gave another answer");
    for (auto &t : lf::make_transports())
      if (std::string(t->name()) == "dpdk") {
        auto u = t->unavailable_reason();
        if (!u || *u != why) return "unavailable_reason: " + (u ? *u : std::string("none"));
        return std::string();
      }
    return std::string("no dpdk transport in the registry");
  });
  EXPECT_EQ(r, "");
}

TEST(DpdkEal, NotConfiguredMeansNotStarted) {
  std::string r = in_child([] {
    unsetenv("LF_TRANSPORTS");
    unsetenv("LF_DPDK_PORT");
    for (auto &t : lf::make_transports())
      if (std::string(t->name()) == "dpdk") {
        auto u = t->unavailable_reason();
        if (!u || u->find("not configured") == std::string::npos) return "reason: " + (u ? *u : std::string("none"));
        if (!eal_command_line().empty()) return std::string("the EAL was started without being asked for");
        return std::string();
      }
    return std::string("no dpdk transport in the registry");
  });
  EXPECT_EQ(r, "");
}

TEST(DpdkEal, StartsWithTheDefaultsAndLeavesNoRuntimeDirectory) {
  std::string r = in_child([] {
    unsetenv("LF_DPDK_EAL");
    if (auto st = ensure_eal(); !st) return st.error().message;
    const std::string cmd = eal_command_line();
    const auto at = cmd.find("--file-prefix=");
    if (at == std::string::npos) return "no file prefix in " + cmd;
    const std::string prefix = cmd.substr(at + 14, cmd.find(' ', at) - at - 14);
    for (const char *dir : {"/var/run/dpdk/", "/run/dpdk/"})
      if (access((dir + prefix).c_str(), F_OK) == 0) return std::string("left ") + dir + prefix;
    return std::string();
  });
  EXPECT_EQ(r, "");
}

}  // namespace
